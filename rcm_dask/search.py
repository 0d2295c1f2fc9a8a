"""Search an index: BM25, vectors, or both fused by score or by reciprocal rank fusion.

:func:`fuse_scores` (the default: min-max normalised scores, weighted) and
:func:`fuse_rrf` are pure functions over rankings. :class:`SearchIndex` opens the
read side of an index folder (Tantivy reader, Qdrant store, the model the index
was built with) and answers queries with :class:`~rcm_dask.records.Hit` records.
A keyword-only index (built with ``vectors="none"``) answers from BM25 alone: hybrid
search says so in :attr:`SearchIndex.notices`, vector search refuses, and no model
is loaded.
A damaged index (a store missing or cut short, an unreadable manifest or identity) is
refused with :class:`~rcm_dask.errors.IndexDamagedError`, naming the ``rcm-dask index``
run that repairs it: no search silently answers with one method less.
:class:`~rcm_dask.reader.Index`, what :func:`~rcm_dask.reader.open_index` returns, adds
the code-intelligence questions to it.
"""

from __future__ import annotations

import re
import sqlite3
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload


from .closing import Closing
from .config import SEARCH_GROUPS, SEARCH_MODES, IndexConfig, check_globs
from .embedding import Embedder
from .errors import (
    ConfigError,
    DiskFullError,
    IndexDamagedError,
    IndexIdentityError,
    IndexNotFoundError,
    IndexWriteError,
    RcmError,
    StoreBusyError,
)
from .identity import BM25_DIR, VECTORS_DIR, identity_problem, open_vectors_for, vectors_setting
from .integrity import count_problem, damaged_error, settled_chunks
from .ranking import (
    WHOLE_FILE_POOL,
    Candidate,
    FileGroup,
    RankingConfig,
    classify_query,
    group_by_file,
    min_max_shares,
    named_identifiers,
    rank_candidates,
    symbol_of,
)
from .records import CHUNK_KINDS, FileHit, Hit
from .status import IndexInfo
from .stores import StoreHit
from .stores.bm25 import Bm25Store
from .stores.lock import describe_holder, is_locked, read_holder
from .stores.manifest import MANIFEST_FILE, Manifest, read_identity, read_manifest
from .stores.swap import leftovers
from .stores.vectors import VectorStore, edge_shard_exists

if TYPE_CHECKING:
    from .intel import CodeIntel

_T = TypeVar("_T")

SNIPPET_LINES = 8
SNIPPET_WIDTH = 160

KEYWORD_ONLY_NOTICE = (
    "keyword-only index: hybrid search used BM25 only (rebuild it with --vectors qdrant "
    "for search by meaning)"
)
"""What a hybrid search of a keyword-only index adds to :attr:`SearchIndex.notices`."""


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


def fuse_scores(
    rankings: Sequence[Sequence[tuple[str, float]]],
    weights: Sequence[float],
    k: int = 60,
) -> list[tuple[str, float]]:
    """Score-aware fusion: the weighted sum of each ranking's scores, min-max normalised.

    Where reciprocal rank fusion sees only ranks, this keeps how far apart the scores
    are: a BM25 hit far ahead of the rest, or a vector hit barely ahead, counts as such.
    Each ranking's scores are mapped to 0..1 (its best 1, its worst 0; all equal: 1),
    an id missing from a ranking gets 0 there, and the sum is scaled by ``2 / (k + 1)``
    (the best two-ranking RRF score) so the ranking steps that add shares of a score
    weigh the same after either fusion.

    Parameters
    ----------
    rankings
        Each a list of ``(id, score)``, best first (duplicates after the first ignored).
    weights
        One weight per ranking.
    k
        The RRF constant whose scale the scores take.

    Returns
    -------
    list of (id, score)
        Best first; ties broken by the best single rank, then by id.

    Examples
    --------
    >>> fused = fuse_scores([[("a", 9.0), ("b", 1.0)], [("b", 0.8), ("a", 0.7)]], [0.5, 0.5])
    >>> [doc for doc, _ in fused]
    ['a', 'b']
    """
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scale = 2.0 / (k + 1)
    scores: dict[str, float] = {}
    best: dict[str, int] = {}
    for ranking, weight in zip(rankings, weights):
        firsts: dict[str, float] = {}
        for rank, (doc, score) in enumerate(ranking, start=1):
            if doc not in firsts:
                firsts[doc] = score
                best[doc] = min(best.get(doc, rank), rank)
        for doc, share in min_max_shares(firsts).items():
            scores[doc] = scores.get(doc, 0.0) + weight * share * scale
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


def _key(h: StoreHit) -> str:
    """The symbol a store hit belongs to (parts of a long item share it)."""
    return str(h.payload.get("symbol_id") or h.id)


def _candidate(
    h: StoreHit, score: float, bm25_rank: int | None, vector_rank: int | None
) -> Candidate:
    """A store hit as a ranking candidate."""
    return Candidate(_key(h), h.payload, score, bm25_rank, vector_rank)


def _hit(c: Candidate) -> Hit:
    """A ranked candidate as a search result."""
    return payload_hit(c.payload, c.score, c.key, c.bm25_rank, c.vector_rank)


def payload_hit(
    payload: Mapping[str, Any],
    score: float,
    key: str = "",
    bm25_rank: int | None = None,
    vector_rank: int | None = None,
) -> Hit:
    """A stored chunk payload (:func:`~rcm_dask.stores.chunk_payload`) as a search result."""
    p = payload
    return Hit(
        id=str(p.get("id", key)),
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


def _pub_use(name: str, modules: Sequence[str] = ()) -> re.Pattern[str]:
    """A ``pub use`` line of a file record's outline (``mod m: pub use ...`` for one in a
    ``pub mod`` block) that names ``name``'s last segment, or glob-imports one of
    ``modules`` (``pub use self::internal::*``)."""
    last = re.escape(name.rsplit("::", 1)[-1].rstrip("!"))
    targets = [last] + [re.escape(m.rsplit("::", 1)[-1]) + r"::\*" for m in modules if m]
    alternatives = "|".join(rf"\b{t}" for t in targets)
    return re.compile(
        rf"^(?:mod \w+: )?\s*pub(\([^)]*\))?\s+use\b[^;\n]*(?:{alternatives})(?![\w])",
        re.MULTILINE,
    )


def check_kinds(kinds: Sequence[str] | None) -> list[str] | None:
    """The kinds a search keeps (None: every kind), refusing one no chunk can have.

    Raises
    ------
    ConfigError
        Names the unknown kinds and the known ones.

    Examples
    --------
    >>> check_kinds(["struct", "enum"])
    ['struct', 'enum']
    >>> check_kinds(["nonsense"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rcm_dask.errors.ConfigError: unknown kind nonsense: choose from function, ...
    """
    if not kinds:
        return None
    unknown = [k for k in kinds if k not in CHUNK_KINDS]
    if unknown:
        raise ConfigError(
            f"unknown kind {', '.join(unknown)}: choose from {', '.join(CHUNK_KINDS)}"
        )
    return list(kinds)


def _file_hit(group: FileGroup) -> FileHit:
    """A file group of ranked candidates as a ``--files`` result."""
    return FileHit(
        path=group.path,
        score=group.score,
        hits=tuple(_hit(c) for c in group.items),
    )


def _folder_id(folder: Path) -> tuple[int, int]:
    """(device, inode) of a folder: another one after a forced rebuild's swap."""
    try:
        st = folder.stat()
    except OSError:
        return (0, 0)
    return (st.st_dev, st.st_ino)


class SearchIndex(Closing):
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
    IndexDamagedError
        A store is missing or holds other chunks than the manifest records, or the
        manifest or ``identity.json`` cannot be read (never while an index run holds
        the index: its stores are between commits). The vector store is checked when
        first opened.
    IndexIdentityError
        ``config.model`` is not the model the index was built with.

    Examples
    --------
    >>> with SearchIndex("/path/to/index") as idx:          # doctest: +SKIP
    ...     hits = idx.search("push onto a binary heap", limit=5)
    """

    keyword_only: bool
    """Whether the index was built with ``vectors="none"`` (BM25 only, no model)."""

    def __init__(
        self,
        index_dir: str | Path,
        config: IndexConfig | None = None,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        self.index_dir = Path(index_dir).expanduser()
        self.config = config or IndexConfig()
        try:
            self._open(embedder)
        except RcmError:
            if _folder_id(self.index_dir) == self._folder:
                raise
            # a forced rebuild's swap between two of the reads: open the new folder
            self._open(embedder)

    def _open(self, embedder: Embedder | None) -> None:
        """Open the folder's stores (the work of ``__init__``)."""
        self._folder = _folder_id(self.index_dir)
        identity = read_identity(self.index_dir)
        locked = is_locked(self.index_dir)
        # a run in progress may be between the commits of its stores: trust it
        if identity is None or (locked and not (self.index_dir / BM25_DIR).exists()):
            raise IndexNotFoundError(
                f"no index at {self.index_dir}: run `rcm-dask index PATH` first"
            )
        self.identity: dict[str, Any] = identity
        if not locked:
            problem = identity_problem(identity)
            if problem:
                raise damaged_error(self.index_dir, None, problem, rebuild=True)
        self.keyword_only = vectors_setting(identity) == "none"
        self._vectors: VectorStore | None = None
        self._vectors_checked = locked
        self._embedder: Embedder | None = embedder
        self._embedder_checked = False
        try:
            self.bm25 = Bm25Store.open(self.index_dir / BM25_DIR, writable=False)
        except (IndexNotFoundError, IndexWriteError) as e:
            if locked:
                # the run made the folder and has not yet written the store's first
                # metadata (or is rebuilding an unreadable one): nothing to read yet
                raise IndexNotFoundError(
                    f"the index at {self.index_dir} has no readable commit yet: "
                    f"{describe_holder(read_holder(self.index_dir))} is writing it"
                ) from e
            raise self._damaged("the BM25 store is missing or unreadable") from e
        try:
            if not locked:
                self._check_stores()
        except BaseException:
            self.bm25.close()
            raise
        self.notices: list[str] = []
        """What the last search could not do as asked (e.g. vectors busy: BM25 only)."""
        self._symbols: CodeIntel | None = None
        self._reader: Manifest | None = None

    def _follow_swap(self) -> None:
        """Reopen on the folder's stores when a forced rebuild has replaced the folder
        since they were opened (:mod:`~rcm_dask.stores.swap`); the model stays loaded
        when the rebuild kept it."""
        if _folder_id(self.index_dir) == self._folder:
            return
        embedder = self._embedder
        self.close()
        SearchIndex.__init__(self, self.index_dir, self.config)
        if embedder is not None and getattr(embedder, "fingerprint", None) == self.identity.get(
            "model_fingerprint"
        ):
            self._embedder = embedder

    def _retry_on_swap(self, call: Callable[[], _T]) -> _T:
        """``call()``, and once more when it failed because a forced rebuild swapped the
        folder under it (:mod:`~rcm_dask.stores.swap`): the old tree is moved aside and
        deleted while its stores are open, so a read in that moment finds files missing
        (a damaged-looking shard, an engine error). The second call's own
        :meth:`_follow_swap` reopens on the new folder; its failure is a real one."""
        try:
            return call()
        except Exception:
            if _folder_id(self.index_dir) == self._folder:
                raise
        return call()

    def _damaged(self, what: str, rebuild: bool = False) -> IndexDamagedError:
        """The error for a damaged index, naming the run that repairs it."""
        return damaged_error(self.index_dir, self.identity, what, rebuild)

    def _settled(self) -> tuple[int, list[str]]:
        """(chunks the manifest records for settled files, pending paths)."""
        if not (self.index_dir / MANIFEST_FILE).exists():
            raise self._damaged(f"{MANIFEST_FILE} is missing", rebuild=True)
        try:
            files, pending = read_manifest(self.index_dir)
        except IndexDamagedError as e:
            raise self._damaged(str(e), rebuild=True) from e
        return settled_chunks(files, pending), pending

    def unsettled(self) -> list[str]:
        """Paths whose chunks no answer shows: files a run began to rewrite (or add) that
        no commit has recorded since, read afresh from the manifest's ``pending`` table.

        Search answers from the last commit, and the stores cannot tell a pending file's
        committed chunks from the new ones a run wrote (or half wrote) before it stopped: a
        chunk id names an item (path, kind, name, occurrence), not its content. So every
        chunk of a pending file is left out, inside each store's query (the top-k stays
        full), until a run settles the file. Nothing is pending between runs that finished,
        and then nothing is left out."""
        try:
            return self._manifest().pending()
        except sqlite3.Error:
            # unreadable now: the open-time check is what refuses damage
            return []

    def _manifest(self) -> Manifest:
        """The manifest, read-only, opened once: asked before every query, and opening a
        connection costs more than the query."""
        if self._reader is None:
            self._reader = Manifest(self.index_dir, readonly=True)
        return self._reader

    def _check_stores(self) -> None:
        """Refuse an index whose manifest is unreadable, or whose BM25 store disagrees
        with it, or whose embedded vector shard is gone (cheap: counts, no reads)."""
        expected, pending = self._settled()
        problem = count_problem("BM25", self.bm25.count(), self.bm25.count(pending), expected)
        if problem and not is_locked(self.index_dir):  # a run may have started since
            raise self._damaged(problem)
        if (
            not self.keyword_only
            and not self.identity.get("qdrant_url")
            and not edge_shard_exists(self.index_dir / VECTORS_DIR)
        ):
            raise self._damaged("the vector store is missing")

    def _check_vectors(self, store: VectorStore) -> None:
        """Refuse a vector store that disagrees with the manifest (once per open index)."""
        if self._vectors_checked or is_locked(self.index_dir):
            return
        expected, pending = self._settled()
        problem = store.damage()  # files cut short, points that do not read back
        if problem and not is_locked(self.index_dir):
            what = f"the vector store is damaged ({problem})"
            raise damaged_error(self.index_dir, self.identity, what, reembed=True)
        problem = count_problem("vector", store.count(), store.count(pending), expected)
        if problem and not is_locked(self.index_dir):
            raise self._damaged(problem)
        self._vectors_checked = True

    @property
    def vectors(self) -> VectorStore:
        """The vector store (opened on first vector query, never created).

        The embedded Qdrant engine admits one process at a time: while an index run
        holds the index it is not opened at all (:class:`StoreBusyError`), so that a
        busy searcher never starves the run of it. It is opened read-only, sharing the
        shard with this process's other readers (other searchers, status checks).

        Raises
        ------
        ConfigError
            The index is keyword-only: it has no vector store.
        IndexDamagedError
            The vector store is missing, unreadable, or holds other chunks than the
            manifest records."""
        if self.keyword_only:
            raise self._no_vectors_error()
        if self._vectors is None:
            # a forced rebuild (building beside: stores/swap.py) leaves the live shard free
            if (
                not self.identity.get("qdrant_url")
                and is_locked(self.index_dir)
                and not leftovers(self.index_dir)
            ):
                raise StoreBusyError(
                    f"the vector store of {self.index_dir} is in use by an index run "
                    f"({describe_holder(read_holder(self.index_dir))})"
                )
            try:
                store = open_vectors_for(
                    self.index_dir,
                    self.identity,
                    self.config.qdrant_api_key,
                    create=False,
                    readonly=True,
                )
            except IndexNotFoundError as e:
                raise self._damaged(f"the vector store is missing ({e})") from e
            except StoreBusyError:
                raise
            except IndexWriteError as e:
                if self.identity.get("qdrant_url") or isinstance(e, DiskFullError):
                    raise  # a server that cannot be reached is not a damaged index
                raise damaged_error(
                    self.index_dir,
                    self.identity,
                    f"the vector store cannot be opened ({e})",
                    reembed=True,
                ) from e
            try:
                self._check_vectors(store)
            except BaseException:
                store.close()
                raise
            self._vectors = store
        return self._vectors

    def _no_vectors_error(self) -> ConfigError:
        """What asking a keyword-only index for vectors raises."""
        return ConfigError(
            f"the index at {self.index_dir} is keyword-only (built with --vectors none): it "
            "has no vectors, so vector search cannot answer. Use hybrid or bm25 search, or "
            f"rebuild it with vectors: rcm-dask index {self.identity.get('root') or 'PATH'} "
            f"--index-dir {self.index_dir} --force --vectors qdrant"
        )

    @property
    def embedder(self) -> Embedder:
        """The model the index was built with (its weights load on first query).

        Raises
        ------
        ConfigError
            The index is keyword-only: queries are never embedded."""
        if self.keyword_only:
            raise self._no_vectors_error()
        if self._embedder is None:
            model = self.config.model or self.identity.get("model_dir") or None
            if model and not Path(str(model)).is_dir():
                model = None
            self._embedder = Embedder(
                str(model) if model else None,
                device=self.config.device,
                max_tokens=int(self.identity.get("max_tokens") or 0) or None,
                torch_threads=self.config.torch_threads,
                # queries of an int8 index in int8 (its vectors differ from fp32's);
                # otherwise the fastest precision here (fp32/bf16/fp16 agree)
                precision="int8"
                if self.identity.get("precision") == "int8"
                else self.config.precision,
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
        if path_glob.strip().startswith("!"):
            raise ConfigError(
                f"path_glob {path_glob!r} is negated: one glob selects files, it cannot "
                "exclude them (a search keeps only the files it matches)"
            )
        spec = check_globs([path_glob], "path_glob")
        return [p for p in self._manifest().paths() if spec.match_file(p)]

    @overload
    def search(
        self,
        query: str,
        *,
        limit: int = 10,
        mode: str = "hybrid",
        kinds: Sequence[str] | None = None,
        path_glob: str | None = None,
        group: Literal["item"] = "item",
        ranking: str | RankingConfig | None = None,
    ) -> list[Hit]: ...

    @overload
    def search(
        self,
        query: str,
        *,
        limit: int = 10,
        mode: str = "hybrid",
        kinds: Sequence[str] | None = None,
        path_glob: str | None = None,
        group: Literal["file"],
        ranking: str | RankingConfig | None = None,
    ) -> list[FileHit]: ...

    def search(
        self,
        query: str,
        *,
        limit: int = 10,
        mode: str = "hybrid",
        kinds: Sequence[str] | None = None,
        path_glob: str | None = None,
        group: str = "item",
        ranking: str | RankingConfig | None = None,
    ) -> list[Hit] | list[FileHit]:
        """Answer a query.

        A bare identifier or path (``BinaryHeap``, ``fmt::Display``, ``vec!``) is a symbol
        lookup: the items the symbol table says define it come first (or, for a name the
        crate re-exports, the file whose ``pub use`` does), then what BM25 and the vectors
        find. Anything else is a question: BM25 and the vectors fused, then the ranking
        steps of :mod:`rcm_dask.ranking` (identifiers named in it, file and folder names,
        tests ranked below the code they test, several files in the top).

        Parameters
        ----------
        query
            Free text: words, identifiers, a question, a code fragment.
        limit
            Hits to return.
        mode
            ``hybrid`` (BM25 + vectors, RRF), ``bm25`` or ``vector``. A keyword-only
            index answers ``hybrid`` with BM25 alone (and says so in :attr:`notices`).
        kinds
            Keep only these chunk kinds (``function``, ``method``, ``struct``...).
        path_glob
            Keep only files matching this gitignore-style glob (``src/collections/**``).
        group
            ``item`` (one result per item) or ``file`` (one :class:`FileHit` per file,
            with its best items: "which files should I read").
        ranking
            The ranking steps (:class:`~rcm_dask.ranking.RankingConfig`, or a spec such as
            ``"none"`` or ``"all,-diversity"``); default: the config's ``ranking``.

        Returns
        -------
        list of Hit, or of FileHit with ``group="file"``
            Best first, at most ``limit``, one per symbol (or per file).

        Raises
        ------
        ConfigError
            Unknown ``mode`` or ``group``, ``limit`` < 1, or ``vector`` on a keyword-only
            index.
        """
        if mode not in SEARCH_MODES:
            raise ConfigError(f"unknown search mode {mode!r}; choose one of {SEARCH_MODES}")
        if group not in SEARCH_GROUPS:
            raise ConfigError(f"unknown grouping {group!r}; choose one of {SEARCH_GROUPS}")
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        ranking = self._ranking(ranking)
        # a file-level answer draws on more items than it shows
        pool = max(self.config.candidates, limit * (5 if group == "file" else 1))
        cands = self.candidates(
            query, mode=mode, kinds=kinds, path_glob=path_glob, ranking=ranking, pool=pool
        )
        ranked = rank_candidates(cands, query, ranking)
        if group == "file":
            return [_file_hit(g) for g in group_by_file(ranked, limit)]
        return [_hit(c) for c in ranked[:limit]]

    def _ranking(self, ranking: str | RankingConfig | None) -> RankingConfig:
        """The ranking settings asked for, or the config's."""
        if ranking is None:
            ranking = self.config.ranking
        if isinstance(ranking, str):
            try:
                return RankingConfig.from_spec(ranking)
            except ValueError as e:
                raise ConfigError(str(e)) from e
        return ranking

    def candidates(
        self,
        query: str,
        *,
        mode: str = "hybrid",
        kinds: Sequence[str] | None = None,
        path_glob: str | None = None,
        ranking: str | RankingConfig | None = None,
        pool: int | None = None,
    ) -> list[Candidate]:
        """What competes for a query's results, before the ranking steps: fused candidates
        (RRF scores), plus the symbol table's definitions of the names the query holds
        (when ``ranking`` has ``definitions`` on), each with its file's whole-file BM25
        share (:attr:`~rcm_dask.ranking.Candidate.file_match`, when ``ranking`` has
        ``whole_file`` on and the search uses BM25), unranked.

        :meth:`search` is this, then :func:`~rcm_dask.ranking.rank_candidates`; the
        benchmark calls the two apart to try ranking settings on the same candidates.
        ``pool`` is how many hits each store gives (default ``config.candidates``).
        A search that fails because a forced rebuild swapped the folder under it is
        asked again, once, of the new folder.
        """
        return self._retry_on_swap(
            lambda: self._candidates(
                query, mode=mode, kinds=kinds, path_glob=path_glob, ranking=ranking, pool=pool
            )
        )

    def _candidates(
        self,
        query: str,
        *,
        mode: str,
        kinds: Sequence[str] | None,
        path_glob: str | None,
        ranking: str | RankingConfig | None,
        pool: int | None,
    ) -> list[Candidate]:
        """:meth:`candidates`, on the folder as it is now."""
        if mode not in SEARCH_MODES:
            raise ConfigError(f"unknown search mode {mode!r}; choose one of {SEARCH_MODES}")
        kinds = check_kinds(kinds)
        self._follow_swap()
        self.notices = []
        ranking = self._ranking(ranking)
        if self.keyword_only and mode != "bm25":
            if mode == "vector":
                raise self._no_vectors_error()
            # nothing to fuse, and no query to embed: no model is loaded
            self.notices.append(KEYWORD_ONLY_NOTICE)
            mode = "bm25"
        query = query.strip()
        if not query:
            return []
        paths = self._paths_for(path_glob)
        if paths is not None and not paths:
            return []
        query_kind = classify_query(query)
        n = pool or self.config.candidates
        hidden = self.unsettled() or None
        lexical: list[StoreHit] = []
        semantic: list[StoreHit] = []
        if mode in ("hybrid", "bm25"):
            lexical = _collapse(
                self.bm25.search(query, limit=n, kinds=kinds, paths=paths, exclude_paths=hidden)
            )
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
                    vectors.search(
                        vec.tolist(), limit=n, kinds=kinds, paths=paths, exclude_paths=hidden
                    )
                )
        k = self.config.rrf_k
        # one method alone is scored as its own rank fusion (1 / (k + rank)), so that the
        # ranking steps weigh the same in every mode (a cosine or a BM25 score has its own
        # scale, and a file's many hits would add up to more than the gaps between them)
        if mode == "bm25":
            cands = [_candidate(h, 1.0 / (k + i), i, None) for i, h in enumerate(lexical, 1)]
        elif mode == "vector":
            cands = [_candidate(h, 1.0 / (k + i), None, i) for i, h in enumerate(semantic, 1)]
        else:
            by_key = {_key(h): h for h in semantic}
            by_key.update({_key(h): h for h in lexical})
            rank_l = {_key(h): i for i, h in enumerate(lexical, 1)}
            rank_v = {_key(h): i for i, h in enumerate(semantic, 1)}
            symbol = query_kind == "symbol" and ranking.definitions
            if self.config.fusion == "score":
                # a symbol lookup leans on the words: its vector share halves
                share = self.config.vector_share / (2.0 if symbol else 1.0)
                fused = fuse_scores(
                    [[(_key(h), h.score) for h in lexical], [(_key(h), h.score) for h in semantic]],
                    [self.config.bm25_weight * (1 - share), self.config.vector_weight * share],
                    k=k,
                )
            else:
                bm25_weight = self.config.bm25_weight
                if symbol:
                    bm25_weight *= ranking.symbol_bm25_weight
                fused = fuse_rrf(
                    [[_key(h) for h in lexical], [_key(h) for h in semantic]],
                    [bm25_weight, self.config.vector_weight],
                    k=k,
                )
            cands = [
                _candidate(by_key[sid], score, rank_l.get(sid), rank_v.get(sid))
                for sid, score in fused
            ]
        if ranking.definitions:
            self._add_definitions(cands, query, query_kind, ranking, kinds, paths, hidden)
        if ranking.whole_file and mode != "vector" and cands:
            files = self.bm25.search_files(
                query, WHOLE_FILE_POOL, paths=paths, exclude_paths=hidden
            )
            shares = min_max_shares(dict(files))
            for c in cands:
                c.file_match = shares.get(c.path, 0.0)
        return cands

    def search_files(
        self,
        query: str,
        *,
        limit: int = 10,
        mode: str = "hybrid",
        kinds: Sequence[str] | None = None,
        path_glob: str | None = None,
        ranking: str | RankingConfig | None = None,
    ) -> list[FileHit]:
        """Which files answer a query: :meth:`search` with ``group="file"``.

        Examples
        --------
        >>> with open_index("path/to/crate") as idx:              # doctest: +SKIP
        ...     for f in idx.search_files("how does the channel wake a blocked receiver"):
        ...         print(f.path, [h.qualname for h in f.hits])
        """
        return self.search(
            query,
            limit=limit,
            mode=mode,
            kinds=kinds,
            path_glob=path_glob,
            group="file",
            ranking=ranking,
        )

    def _add_definitions(
        self,
        cands: list[Candidate],
        query: str,
        query_kind: str,
        ranking: RankingConfig,
        kinds: list[str] | None,
        paths: list[str] | None,
        hidden: Sequence[str] | None = None,
    ) -> None:
        """Mark (and add, when fusion missed them) the symbol table's definitions of the
        names a query holds: the name a symbol lookup asks for, or the identifiers a
        question names; for a symbol lookup, also the file records of the module roots
        whose ``pub use`` re-exports it. Chunks of ``hidden`` files (:meth:`unsettled`)
        are never added."""
        names = [symbol_of(query)] if query_kind == "symbol" else named_identifiers(query)[:3]
        if not names:
            return
        limit = ranking.definition_limit + 1
        found: dict[str, str] = {}
        modules: dict[str, None] = {}
        try:
            intel = self._symbol_table()
            for name in names:
                for d in intel.find_definition(name, limit=limit):
                    if d.id and d.id not in found:
                        found[d.id] = d.match
                        modules.setdefault(d.module, None)
        except (sqlite3.Error, IndexDamagedError):
            return  # a table that cannot be read: ranking goes on without it
        if query_kind == "symbol" and (not kinds or "mod" in kinds):
            try:
                roots = self._symbol_table().module_roots_importing(names[0], list(modules))
            except (sqlite3.Error, IndexDamagedError):
                roots = []
            for sid in roots:
                found.setdefault(sid, "reexport")
        if not found:
            return
        by_key = {c.key: c for c in cands}
        missing = [sid for sid in found if sid not in by_key]
        unsettled = set(hidden or ())
        for h in self.bm25.get(missing):
            if unsettled and str(h.payload.get("path")) in unsettled:
                continue
            added = _candidate(h, 0.0, None, None)
            by_key[added.key] = added
            cands.append(added)
        allowed = set(paths) if paths is not None else None
        reexport = _pub_use(names[0], list(modules))
        roots = [
            by_key[sid].path for sid, rule in found.items() if rule == "reexport" and sid in by_key
        ]
        outline: dict[str, str] = {}  # a long record is split: its re-exports may be in part 2
        for h in self.bm25.get(paths=roots, kinds=["mod"]) if roots else []:
            if _key(h) in found:
                outline[_key(h)] = outline.get(_key(h), "") + "\n" + str(h.payload.get("code", ""))
        for sid, rule in found.items():
            cand = by_key.get(sid)
            if cand is None:
                continue
            if rule == "reexport" and not reexport.search(outline.get(sid, "")):
                continue  # the module root only uses the name
            if kinds and str(cand.payload.get("kind")) not in kinds:
                continue
            if allowed is not None and cand.path not in allowed:
                continue
            cand.definition = rule
        # a definition filtered out by kind or path never entered the candidates
        cands[:] = [c for c in cands if c.bm25_rank or c.vector_rank or c.definition]

    def _symbol_table(self) -> CodeIntel:
        """The index's symbol table (opened on first use)."""
        if self._symbols is None:
            from .intel import CodeIntel

            self._symbols = CodeIntel(self.index_dir)
        return self._symbols

    def stats(self) -> IndexInfo:
        """What the index holds, read from its committed state.

        Examples
        --------
        >>> with open_index("path/to/crate") as idx:              # doctest: +SKIP
        ...     print(idx.stats())
        index:    /home/me/.local/share/rcm_dask/indexes/crate-1a2b3c4d
        ...
        """
        return self._retry_on_swap(self._stats)

    def _stats(self) -> IndexInfo:
        """:meth:`stats`, on the folder as it is now."""
        self._follow_swap()
        try:
            manifest = Manifest(self.index_dir, readonly=True)
            try:
                files, chunks = manifest.counts()
                updated = manifest.get_meta("updated")
                last_run = manifest.get_meta("last_run")
                pending = len(manifest.pending())
            finally:
                manifest.close()
        except (sqlite3.DatabaseError, ValueError) as e:
            if is_locked(self.index_dir):
                raise  # a first run between creating the manifest and its first commit
            raise self._damaged(f"{MANIFEST_FILE} cannot be read ({e})", rebuild=True) from e
        writer = describe_holder(read_holder(self.index_dir)) if is_locked(self.index_dir) else ""
        if not (writer or self.keyword_only or self._vectors_checked):
            try:
                _ = self.vectors  # opening it checks it against the manifest
            except StoreBusyError:
                pass  # a search holds the embedded shard: checked by the next status
        return IndexInfo(
            index_dir=str(self.index_dir),
            root=str(self.identity.get("root") or ""),
            files=files,
            chunks=chunks,
            bm25_documents=self.bm25.count(),
            updated=float(str(updated)) if updated else None,
            identity=self.identity,
            vectors=vectors_setting(self.identity),
            last_run=last_run if isinstance(last_run, dict) else None,
            pending=pending,
            writer=writer,
        )

    def status(self) -> dict[str, Any]:
        """Counts and identity of the index as a dict: :meth:`stats` ``.to_dict()``."""
        return self.stats().to_dict()

    def close(self) -> None:
        """Release the stores."""
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None
        if self._symbols is not None:
            self._symbols.close()
            self._symbols = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.bm25.close()



__all__ = [
    "KEYWORD_ONLY_NOTICE",
    "SearchIndex",
    "check_kinds",
    "fuse_rrf",
    "fuse_scores",
    "snippet_of",
]
