"""Search an index: BM25, vectors, or both fused by reciprocal rank fusion.

:func:`fuse_rrf` is a pure function over rankings. :class:`SearchIndex` opens the
read side of an index folder (Tantivy reader, Qdrant store, the model the index
was built with) and answers queries with :class:`~rcm_dask.records.Hit` records.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pathspec

from .config import SEARCH_MODES, IndexConfig, data_home, default_index_dir
from .embedding import Embedder
from .errors import ConfigError, IndexIdentityError, IndexNotFoundError, StoreBusyError
from .records import Hit
from .stores import StoreHit
from .stores.bm25 import Bm25Store
from .stores.lock import describe_holder, is_locked, read_holder
from .stores.manifest import Manifest, read_identity
from .stores.vectors import VectorStore
from .writer import BM25_DIR, open_vectors_for

SNIPPET_LINES = 8
SNIPPET_WIDTH = 160


def fuse_rrf(
    rankings: Sequence[Sequence[str]],
    weights: Sequence[float] | None = None,
    k: int = 60,
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.

    Parameters
    ----------
    rankings
        Each a list of ids, best first (duplicates after the first are ignored).
    weights
        One weight per ranking (default all 1.0).
    k
        Damping constant; larger flattens the advantage of top ranks.

    Returns
    -------
    list of (id, score)
        Best first; ties broken by the best single rank, then by id, so the order
        is deterministic.

    Examples
    --------
    >>> fuse_rrf([["a", "b"], ["b", "c"]], k=60)[0][0]
    'b'
    """
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scores: dict[str, float] = {}
    best: dict[str, int] = {}
    for ranking, weight in zip(rankings, weights):
        seen: set[str] = set()
        for rank, doc in enumerate(ranking, start=1):
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
            best[doc] = min(best.get(doc, rank), rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))


def snippet_of(code: str, signature: str = "", lines: int = SNIPPET_LINES) -> str:
    """A few dedented lines of a chunk from its signature on (docs and attributes skipped).

    A part of a long item may hold only doc comments; then the signature leads,
    followed by the first of those lines.
    """
    rows = code.splitlines()
    if len(rows) > 1:
        # the chunk starts at the item, mid-line: its first row lost its indentation
        rest = [r for r in rows[1:] if r.strip()]
        indent = min((len(r) - len(r.lstrip()) for r in rest), default=0)
        first_indent = len(rows[0]) - len(rows[0].lstrip())
        if first_indent == 0 and indent:
            rows = [rows[0]] + [
                r[indent:] if r[:indent].isspace() else r.lstrip() for r in rows[1:]
            ]
    start = None
    for i, row in enumerate(rows):
        s = row.lstrip()
        if s and not s.startswith(("///", "//!", "#[", "#!", "/**", "*", "*/", "//")):
            start = i
            break
    if start is None:
        picked = ([signature] if signature else []) + [r.strip() for r in rows if r.strip()]
    else:
        picked = textwrap.dedent("\n".join(rows[start:])).splitlines()
    out = [r if len(r) <= SNIPPET_WIDTH else r[: SNIPPET_WIDTH - 1] + "…" for r in picked]
    return "\n".join(out[:lines])


def _collapse(hits: Sequence[StoreHit]) -> list[StoreHit]:
    """Keep the best part of each symbol (parts of a long item share a symbol_id).

    Equal scores are ordered by id, so that results do not depend on the order in
    which chunks were written (which differs between indexing modes).
    """
    seen: set[str] = set()
    out = []
    for h in sorted(hits, key=lambda h: (-round(h.score, 5), h.id)):
        key = str(h.payload.get("symbol_id") or h.id)
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


def _hit(h: StoreHit, score: float, bm25_rank: int | None, vector_rank: int | None) -> Hit:
    """A store hit as a search result."""
    p = h.payload
    return Hit(
        id=h.id,
        path=str(p.get("path", "")),
        start_line=int(p.get("start_line", 0)),
        end_line=int(p.get("end_line", 0)),
        name=str(p.get("name", "")),
        qualname=str(p.get("qualname", "")),
        kind=str(p.get("kind", "")),
        score=score,
        snippet=snippet_of(str(p.get("code", "")), str(p.get("signature", ""))),
        signature=str(p.get("signature", "")),
        parent=str(p.get("parent", "")),
        bm25_rank=bm25_rank,
        vector_rank=vector_rank,
    )


def resolve_index_dir(index_dir: str | Path | None = None, path: str | None = None) -> Path:
    """Which index folder to use: explicit, else the codebase's default, else the latest built.

    Raises
    ------
    IndexNotFoundError
        None is given and no index exists under :func:`~rcm_dask.config.data_home`.
    """
    if index_dir:
        return Path(index_dir).expanduser()
    if path:
        from .sources import open_root

        return default_index_dir(open_root(path).url)
    known = list_indexes()
    if not known:
        raise IndexNotFoundError(
            f"no index found under {data_home() / 'indexes'}: run `rcm-dask index PATH` first, "
            "or pass --index-dir"
        )
    return Path(str(known[0]["index_dir"]))


def list_indexes() -> list[dict[str, Any]]:
    """Indexes under the default location, most recently updated first."""
    base = data_home() / "indexes"
    found = []
    for ident_path in base.glob("*/identity.json"):
        ident = read_identity(ident_path.parent) or {}
        found.append(
            {
                "index_dir": str(ident_path.parent),
                "root": ident.get("root", ""),
                "mtime": ident_path.parent.joinpath("manifest.sqlite").stat().st_mtime
                if ident_path.parent.joinpath("manifest.sqlite").exists()
                else ident_path.stat().st_mtime,
            }
        )
    return sorted(found, key=lambda d: -float(d["mtime"]))


class SearchIndex:
    """The read side of an index folder.

    Parameters
    ----------
    index_dir
        The index folder.
    config
        Search settings (candidates, RRF ``k`` and weights, model, device...).
    embedder
        The embedder to use for queries; default: the model the index names.

    Raises
    ------
    IndexNotFoundError
        The folder holds no index.
    IndexIdentityError
        ``config.model`` is not the model the index was built with.

    Examples
    --------
    >>> with SearchIndex("/path/to/index") as idx:          # doctest: +SKIP
    ...     hits = idx.search("push onto a binary heap", limit=5)
    """

    def __init__(
        self,
        index_dir: str | Path,
        config: IndexConfig | None = None,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        self.index_dir = Path(index_dir).expanduser()
        self.config = config or IndexConfig()
        identity = read_identity(self.index_dir)
        if identity is None or not (self.index_dir / BM25_DIR).exists():
            raise IndexNotFoundError(
                f"no index at {self.index_dir}: run `rcm-dask index PATH` first"
            )
        self.identity: dict[str, Any] = identity
        self.bm25 = Bm25Store.open(self.index_dir / BM25_DIR, writable=False)
        self._vectors: VectorStore | None = None
        self._embedder: Embedder | None = embedder
        self._embedder_checked = False
        self.notices: list[str] = []
        """What the last search could not do as asked (e.g. vectors busy: BM25 only)."""

    @property
    def vectors(self) -> VectorStore:
        """The vector store (opened on first vector query).

        The embedded Qdrant engine admits one process at a time: while an index run
        holds the index it is not opened at all (:class:`StoreBusyError`), so that a
        busy searcher never starves the run of it."""
        if self._vectors is None:
            if not self.identity.get("qdrant_url") and is_locked(self.index_dir):
                raise StoreBusyError(
                    f"the vector store of {self.index_dir} is in use by an index run "
                    f"({describe_holder(read_holder(self.index_dir))})"
                )
            self._vectors = open_vectors_for(
                self.index_dir, self.identity, self.config.qdrant_api_key
            )
        return self._vectors

    @property
    def embedder(self) -> Embedder:
        """The model the index was built with (its weights load on first query)."""
        if self._embedder is None:
            model = self.config.model or self.identity.get("model_dir") or None
            if model and not Path(str(model)).is_dir():
                model = None
            self._embedder = Embedder(
                str(model) if model else None,
                device=self.config.device,
                max_tokens=int(self.identity.get("max_tokens") or 0) or None,
                torch_threads=self.config.torch_threads,
            )
        if not self._embedder_checked:
            if self._embedder.fingerprint != self.identity.get("model_fingerprint"):
                raise IndexIdentityError(
                    f"the index at {self.index_dir} was built with model "
                    f"{self.identity.get('model')!r} ({self.identity.get('model_dir')}), "
                    f"but {self._embedder.model_dir} is another model: pass --model with the "
                    "original, or rebuild the index with --force"
                )
            self._embedder_checked = True
        return self._embedder

    def _paths_for(self, path_glob: str | None) -> list[str] | None:
        """Indexed paths matching a glob (gitignore-style), or None for no filter."""
        if not path_glob:
            return None
        spec = pathspec.GitIgnoreSpec.from_lines([path_glob])
        manifest = Manifest(self.index_dir, readonly=True)
        try:
            return [p for p in manifest.paths() if spec.match_file(p)]
        finally:
            manifest.close()

    def search(
        self,
        query: str,
        *,
        limit: int = 10,
        mode: str = "hybrid",
        kinds: Sequence[str] | None = None,
        path_glob: str | None = None,
    ) -> list[Hit]:
        """Answer a query.

        Parameters
        ----------
        query
            Free text: words, identifiers, a question, a code fragment.
        limit
            Hits to return.
        mode
            ``hybrid`` (BM25 + vectors, RRF), ``bm25`` or ``vector``.
        kinds
            Keep only these chunk kinds (``function``, ``method``, ``struct``...).
        path_glob
            Keep only files matching this gitignore-style glob (``src/collections/**``).

        Returns
        -------
        list of Hit
            Best first, at most ``limit``, one per symbol.

        Raises
        ------
        ConfigError
            Unknown ``mode`` or ``limit`` < 1.
        """
        if mode not in SEARCH_MODES:
            raise ConfigError(f"unknown search mode {mode!r}; choose one of {SEARCH_MODES}")
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        self.notices = []
        query = query.strip()
        if not query:
            return []
        paths = self._paths_for(path_glob)
        if paths is not None and not paths:
            return []
        kinds = list(kinds) if kinds else None
        n = max(self.config.candidates, limit)
        lexical: list[StoreHit] = []
        semantic: list[StoreHit] = []
        if mode in ("hybrid", "bm25"):
            lexical = _collapse(self.bm25.search(query, limit=n, kinds=kinds, paths=paths))
        if mode in ("hybrid", "vector"):
            try:
                vectors = self.vectors
            except StoreBusyError as e:
                if mode == "vector":
                    raise
                # an index run holds the embedded vector store: keyword results still help
                self.notices.append(f"{e}; answering with BM25 only")
                mode = "bm25"
            else:
                vec = self.embedder.embed_batch([query])[0]
                semantic = _collapse(
                    vectors.search(vec.tolist(), limit=n, kinds=kinds, paths=paths)
                )
        if mode == "bm25":
            return [_hit(h, h.score, i, None) for i, h in enumerate(lexical[:limit], 1)]
        if mode == "vector":
            return [_hit(h, h.score, None, i) for i, h in enumerate(semantic[:limit], 1)]

        def key(h: StoreHit) -> str:
            return str(h.payload.get("symbol_id") or h.id)

        by_key = {key(h): h for h in semantic}
        by_key.update({key(h): h for h in lexical})
        rank_l = {key(h): i for i, h in enumerate(lexical, 1)}
        rank_v = {key(h): i for i, h in enumerate(semantic, 1)}
        fused = fuse_rrf(
            [[key(h) for h in lexical], [key(h) for h in semantic]],
            [self.config.bm25_weight, self.config.vector_weight],
            k=self.config.rrf_k,
        )
        return [
            _hit(by_key[sid], score, rank_l.get(sid), rank_v.get(sid))
            for sid, score in fused[:limit]
        ]

    def status(self) -> dict[str, Any]:
        """Counts and identity of the index, read from its committed state."""
        manifest = Manifest(self.index_dir, readonly=True)
        try:
            files, chunks = manifest.counts()
            updated = manifest.get_meta("updated")
            last_run = manifest.get_meta("last_run")
            pending = len(manifest.pending())
        finally:
            manifest.close()
        writer = describe_holder(read_holder(self.index_dir)) if is_locked(self.index_dir) else ""
        return {
            "index_dir": str(self.index_dir),
            "root": self.identity.get("root"),
            "files": files,
            "chunks": chunks,
            "bm25_documents": self.bm25.count(),
            "updated": updated,
            "updated_ago_s": round(time.time() - float(str(updated)), 1) if updated else None,
            "identity": self.identity,
            "last_run": last_run,
            "pending": pending,
            "writer": writer,
        }

    def close(self) -> None:
        """Release the stores."""
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None
        self.bm25.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_index(
    index_dir: str | Path | None = None,
    *,
    path: str | None = None,
    config: IndexConfig | None = None,
) -> SearchIndex:
    """Open an index for searching.

    Parameters
    ----------
    index_dir
        The index folder; None: ``config.index_dir``, else the default folder of
        ``path``, else the most recently updated index under the default location.
    path
        The codebase whose default index to open.
    config
        Search settings; default from ``RCM_*`` variables.

    Raises
    ------
    IndexNotFoundError
        No index where one was looked for.
    """
    config = config or IndexConfig.from_env()
    return SearchIndex(resolve_index_dir(index_dir or config.index_dir, path), config)


def search(
    query: str,
    index_dir: str | Path | None = None,
    *,
    path: str | None = None,
    limit: int = 10,
    mode: str = "hybrid",
    kinds: Sequence[str] | None = None,
    path_glob: str | None = None,
    config: IndexConfig | None = None,
) -> list[Hit]:
    """One-shot search: open the index, answer, close. See :meth:`SearchIndex.search`.

    Examples
    --------
    >>> import rcm_dask
    >>> rcm_dask.search("binary heap push", path="library/alloc")   # doctest: +SKIP
    """
    with open_index(index_dir, path=path, config=config) as idx:
        return idx.search(query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob)


__all__ = [
    "SearchIndex",
    "fuse_rrf",
    "list_indexes",
    "open_index",
    "resolve_index_dir",
    "search",
    "snippet_of",
]
