"""The read side's front door: :func:`open_index`, :class:`Index` and :func:`search`.

:class:`Index` is a :class:`~rcm_dask.search.SearchIndex` (hybrid search, file
grouping, stats) that also answers the code-intelligence questions (definitions,
references, call graphs, dependencies, complexity) through
:class:`rcm_dask.intel.CodeIntel`, opened on the first such question. The index folder
is found as a run finds it (:func:`rcm_dask.planning.resolve_index_dir`). It mirrors
:mod:`rcm_dask.writer`: one writer per run, any number of readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import SEARCH_GROUPS, IndexConfig, configure
from .embedding import Embedder
from .errors import ConfigError
from .planning import resolve_index_dir
from .records import FileHit, Hit
from .search import SearchIndex
from .stores.manifest import read_identity

if TYPE_CHECKING:
    from .intel import CodeIntel
    from .records import CallGraph, Definition, FileComplexity, FileDependencies, Reference


class Index(SearchIndex):
    """An open index: search, code intelligence and stats (what :func:`open_index` returns).

    Search is :meth:`SearchIndex.search`. The code-intelligence questions are answered
    from the chunk metadata (qualified names, calls, type references, ``use`` imports)
    by :class:`rcm_dask.intel.CodeIntel`, opened on the first such question. Use it as a
    context manager, or call :meth:`close`.

    Parameters
    ----------
    index_dir
        The index folder.
    config
        Search settings (candidates, RRF ``k`` and weights, model, device...).
    embedder
        The embedder to use for queries; default: the model the index names.

    Examples
    --------
    >>> import rcm_dask
    >>> with rcm_dask.open_index("path/to/crate") as idx:              # doctest: +SKIP
    ...     for hit in idx.search("push onto a binary heap", limit=3):
    ...         print(hit)
    ...     idx.find_definition("BinaryHeap::push")
    ...     idx.call_graph("BinaryHeap::push", depth=2)
    """

    def __init__(
        self,
        index_dir: str | Path,
        config: IndexConfig | None = None,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        super().__init__(index_dir, config, embedder=embedder)

    @property
    def intel(self) -> CodeIntel:
        """The code-intelligence reader of this index (opened on first use)."""
        return self._symbol_table()

    def find_definition(
        self, symbol: str, *, kind: str | None = None, limit: int = 20
    ) -> list[Definition]:
        """Where a symbol is defined.

        Parameters
        ----------
        symbol
            A name (``push``), a path tail (``BinaryHeap::push``) or a qualified name.
        kind
            Keep only this item kind (``struct``, ``method``...).
        limit
            Definitions to return.

        Returns
        -------
        list of Definition
            With file, lines, kind and signature; best match first.
        """
        return self.intel.find_definition(symbol, kind=kind, limit=limit)

    def find_references(self, symbol: str, *, limit: int = 100) -> list[Reference]:
        """Items that call or name a symbol (calls, type references, imports).

        Returns
        -------
        list of Reference
            With the referring item's file and lines.
        """
        return self.intel.find_references(symbol, limit=limit)

    def call_graph(self, symbol: str, *, depth: int = 1, limit: int = 50) -> CallGraph:
        """Callers and callees of a symbol, ``depth`` levels out.

        Returns
        -------
        CallGraph
            The symbol, its callers and its callees.
        """
        return self.intel.call_graph(symbol, depth=depth, limit=limit)

    def dependencies(self, file: str) -> FileDependencies:
        """A file's ``use`` imports and the indexed files that import it.

        Parameters
        ----------
        file
            Path relative to the indexed root (``src/collections/binary_heap.rs``).
        """
        return self.intel.dependencies(file)

    def complexity(self, file: str) -> FileComplexity:
        """A file's lines, items by kind and cyclomatic complexity per function.

        Parameters
        ----------
        file
            Path relative to the indexed root.
        """
        return self.intel.complexity(file)


def open_index(
    path: str | Path | None = None,
    *,
    index_dir: str | Path | None = None,
    config: IndexConfig | None = None,
    embedder: Embedder | None = None,
    **overrides: Any,
) -> Index:
    """Open an index for searching and code-intelligence questions.

    Parameters
    ----------
    path
        The codebase whose index to open (its default index folder, or
        ``config.index_dir``); a folder that itself holds an index (``identity.json``)
        is opened as the index folder.
    index_dir
        The index folder; None: ``config.index_dir``, else the default folder of
        ``path``, else the most recently updated index under the default location.
    config
        Search settings; default from ``RCM_*`` variables.
    embedder
        The embedder for queries; default: the model the index was built with.
    **overrides
        Any :class:`~rcm_dask.config.IndexConfig` field (``model=``, ``device=``,
        ``candidates=``...); None values are ignored.

    Returns
    -------
    Index
        Close it (or use ``with``) to release the stores.

    Raises
    ------
    IndexNotFoundError
        No index where one was looked for.
    ConfigError
        An unknown setting.

    Examples
    --------
    >>> import rcm_dask
    >>> with rcm_dask.open_index("path/to/crate") as idx:              # doctest: +SKIP
    ...     print(idx.stats())
    ...     hits = idx.search("BinaryHeap::push", mode="bm25", kinds=["method"])
    """
    config = configure(config, **overrides)
    codebase = str(path) if path is not None else None
    if codebase and not index_dir and read_identity(Path(codebase).expanduser()) is not None:
        index_dir, codebase = codebase, None
    return Index(
        resolve_index_dir(index_dir or config.index_dir, codebase), config, embedder=embedder
    )


def search(
    query: str,
    index_dir: str | Path | None = None,
    *,
    path: str | None = None,
    limit: int = 10,
    mode: str = "hybrid",
    kinds: Sequence[str] | None = None,
    path_glob: str | None = None,
    group: str = "item",
    config: IndexConfig | None = None,
) -> list[Hit] | list[FileHit]:
    """One-shot search: open the index, answer, close. See :meth:`SearchIndex.search`
    (``group="file"``: one :class:`~rcm_dask.records.FileHit` per file).

    Examples
    --------
    >>> import rcm_dask
    >>> rcm_dask.search("binary heap push", path="library/alloc")   # doctest: +SKIP
    """
    with open_index(path, index_dir=index_dir, config=config) as idx:
        if group == "file":
            return idx.search_files(query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob)
        if group != "item":
            raise ConfigError(f"unknown grouping {group!r}; choose one of {SEARCH_GROUPS}")
        return idx.search(query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob)


__all__ = ["Index", "open_index", "search"]
