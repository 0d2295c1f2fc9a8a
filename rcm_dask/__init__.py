"""rcm_dask: index Rust codebases and search them by keyword and by meaning.

>>> import rcm_dask
>>> stats = rcm_dask.index("path/to/crate")                        # doctest: +SKIP
>>> for hit in rcm_dask.search("push onto a binary heap", path="path/to/crate"):  # doctest: +SKIP
...     print(hit.path, hit.start_line, hit.qualname)

Heavy modules (torch, tantivy, qdrant) load on first use, so ``import rcm_dask``
and ``rcm-dask --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Chunk": "records",
    "ClusterError": "errors",
    "ConfigError": "errors",
    "Embedder": "embedding",
    "Hit": "records",
    "IndexConfig": "config",
    "IndexIdentityError": "errors",
    "IndexInterrupted": "errors",
    "IndexLockedError": "errors",
    "IndexNotFoundError": "errors",
    "IndexStats": "records",
    "IndexWriteError": "errors",
    "ModelError": "errors",
    "RcmError": "errors",
    "SearchIndex": "search",
    "Skipped": "records",
    "SourceError": "errors",
    "SourceFile": "records",
    "StoreBusyError": "errors",
    "index": "modes",
    "open_index": "search",
}

__all__ = [
    "Chunk",
    "ClusterError",
    "ConfigError",
    "Embedder",
    "Hit",
    "IndexConfig",
    "IndexIdentityError",
    "IndexInterrupted",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexStats",
    "IndexWriteError",
    "ModelError",
    "RcmError",
    "SearchIndex",
    "Skipped",
    "SourceError",
    "SourceFile",
    "StoreBusyError",
    "__version__",
    "index",
    "open_index",
    "search",
]

# The submodule ``rcm_dask.search`` shares its name with the function: importing the
# module here, once, before binding the function means no later import can rebind
# ``rcm_dask.search`` to the module.
from . import search as _search_module

search = _search_module.search

if TYPE_CHECKING:  # pragma: no cover
    from .config import IndexConfig
    from .embedding import Embedder
    from .errors import (
        ClusterError,
        ConfigError,
        IndexIdentityError,
        IndexInterrupted,
        IndexLockedError,
        IndexNotFoundError,
        IndexWriteError,
        ModelError,
        RcmError,
        SourceError,
        StoreBusyError,
    )
    from .modes import index
    from .records import Chunk, Hit, IndexStats, Skipped, SourceFile
    from .search import SearchIndex, open_index


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rcm_dask' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
