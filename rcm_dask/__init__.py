"""rcm_dask: index Rust codebases and search them by keyword and by meaning.

>>> import rcm_dask
>>> print(rcm_dask.plan_dry_run("path/to/crate"))                  # doctest: +SKIP
>>> stats = rcm_dask.index("path/to/crate", progress=True)         # doctest: +SKIP
>>> for hit in rcm_dask.search("push onto a binary heap", path="path/to/crate"):  # doctest: +SKIP
...     print(hit)                                    # path:line  kind qualname  score
>>> with rcm_dask.open_index("path/to/crate") as idx:              # doctest: +SKIP
...     idx.find_definition("BinaryHeap::push")
>>> stats = rcm_dask.index("path/to/huge/repo", vectors="none")  # doctest: +SKIP

Heavy modules (torch, tantivy, qdrant) load on first use, so ``import rcm_dask``
and ``rcm-dask --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "CallGraph": "records",
    "Chunk": "records",
    "ClusterError": "errors",
    "ConfigError": "errors",
    "DiskFullError": "errors",
    "Definition": "records",
    "DryRun": "dryrun",
    "Embedder": "embedding",
    "FileComplexity": "records",
    "FileDependencies": "records",
    "FileHit": "records",
    "Hit": "records",
    "Index": "reader",
    "IndexConfig": "config",
    "IndexDamagedError": "errors",
    "IndexIdentityError": "errors",
    "IndexInfo": "status",
    "IndexInterrupted": "errors",
    "IndexLockedError": "errors",
    "IndexNotFoundError": "errors",
    "IndexStats": "records",
    "IndexWriteError": "errors",
    "ModelError": "errors",
    "RcmError": "errors",
    "Reference": "records",
    "RootNotAllowedError": "errors",
    "SearchIndex": "search",
    "Skipped": "records",
    "SourceError": "errors",
    "SourceFile": "records",
    "StoreBusyError": "errors",
    "index": "modes",
    "open_index": "reader",
    "plan_dry_run": "dryrun",
}

__all__ = [
    "CallGraph",
    "Chunk",
    "ClusterError",
    "ConfigError",
    "Definition",
    "DiskFullError",
    "DryRun",
    "Embedder",
    "FileComplexity",
    "FileDependencies",
    "FileHit",
    "Hit",
    "Index",
    "IndexConfig",
    "IndexDamagedError",
    "IndexIdentityError",
    "IndexInfo",
    "IndexInterrupted",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexStats",
    "IndexWriteError",
    "ModelError",
    "RcmError",
    "Reference",
    "RootNotAllowedError",
    "SearchIndex",
    "Skipped",
    "SourceError",
    "SourceFile",
    "StoreBusyError",
    "__version__",
    "index",
    "open_index",
    "plan_dry_run",
    "search",
]

# The submodule ``rcm_dask.search`` shares its name with the function: importing the
# module here, once, before binding the function means no later import can rebind
# ``rcm_dask.search`` to the module.
from . import search as _search_module  # noqa: F401
from .reader import search

if TYPE_CHECKING:  # pragma: no cover
    from .config import IndexConfig
    from .dryrun import DryRun, plan_dry_run
    from .embedding import Embedder
    from .errors import (
        ClusterError,
        ConfigError,
        DiskFullError,
        IndexDamagedError,
        IndexIdentityError,
        IndexInterrupted,
        IndexLockedError,
        IndexNotFoundError,
        IndexWriteError,
        ModelError,
        RcmError,
        RootNotAllowedError,
        SourceError,
        StoreBusyError,
    )
    from .modes import index
    from .reader import Index, open_index
    from .records import (
        CallGraph,
        Chunk,
        Definition,
        FileComplexity,
        FileDependencies,
        Hit,
        IndexStats,
        Reference,
        Skipped,
        SourceFile,
    )
    from .search import SearchIndex
    from .status import IndexInfo


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rcm_dask' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
