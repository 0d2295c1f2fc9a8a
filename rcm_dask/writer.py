"""The single index writer: applies embedded batches to both stores and commits them together.

Index folder layout::

    <index_dir>/
      identity.json      model, fingerprint, dimensions, max_tokens, chunker version, root
      bm25/              Tantivy index
      vectors/           embedded Qdrant shard (absent with --qdrant-url: a server collection,
                         and with --vectors none: a keyword-only index keeps no vectors)
      manifest.sqlite    per file: size, mtime, sha256, chunk ids; symbols, references,
                         imports (rcm_dask.symbols), in the same transaction as the file's row

Order of a commit: Tantivy, then Qdrant, then the manifest (one SQLite transaction).
A file enters the manifest only once all of its chunks are in both stores, so the
manifest never claims what the stores lack. A keyword-only index (identity
``vectors: none``) has one store, Tantivy, and the same protocol otherwise. Before a
file's chunks change in either store, its path is committed to the manifest's
``pending`` table; the next run
re-indexes every pending path, so a crash at any point converges (see
:mod:`rcm_dask.stores.manifest`). Stores without a manifest beside them are
unaccounted for (a crash during ``--force`` or before the first commit) and are
cleared before writing.

Damage that no crash explains (a store deleted or cut short, a manifest or
``identity.json`` overwritten) is found by comparing each store's chunk count with
the manifest's (:func:`count_problem`): readers refuse with
:class:`~rcm_dask.errors.IndexDamagedError`, and the next index run repairs it
(:func:`check_stores`: the files a store lacks are re-added; an unreadable manifest or
identity means a rebuild). Deleted chunks are purged from Tantivy at the end of a run
that recovered or repaired files, and once edits have deleted a set share of the chunks
(:func:`plan_bm25_purge`, :func:`purge_bm25_deletes`): BM25 scores after a crash equal
a clean build's, and edits move them by a bounded amount without a rewrite on every edit.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import (
    DiskFullError,
    IndexDamagedError,
    IndexIdentityError,
    IndexNotFoundError,
    IndexWriteError,
    StoreBusyError,
)
from .records import EmbeddedBatch, IndexedFile
from .stores.bm25 import Bm25Store
from .stores.manifest import (
    IDENTITY_FILE,
    MANIFEST_FILE,
    FileSymbols,
    Manifest,
    identity_mismatch,
    read_identity,
    read_manifest,
    write_identity,
)
from .stores.space import (
    RESERVE_BYTES,
    estimate_index_bytes,
    on_disk_full,
    require_space,
)
from .stores.vectors import EdgeVectorStore, VectorStore, edge_shard_exists, open_vector_store
from .symbols import SymbolCollector

BM25_DIR = "bm25"
VECTORS_DIR = "vectors"


def keeps_vectors(identity: Mapping[str, Any]) -> bool:
    """Whether an index identity has a vector store (false for ``vectors: none``; indexes
    from before the setting existed all have one)."""
    return identity.get("vectors", "qdrant") != "none"


def vectors_setting(identity: Mapping[str, Any]) -> str:
    """An identity's ``vectors`` setting: ``qdrant`` or ``none`` (keyword-only)."""
    return "qdrant" if keeps_vectors(identity) else "none"


def collection_name(index_dir: str | Path) -> str:
    """Qdrant collection used for an index folder on a Qdrant server."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(index_dir).resolve().name)
    return f"rcm_{name}"


def check_identity(
    index_dir: Path, identity: dict[str, Any], qdrant_url: str | None, force: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Complete a run's identity with its vector backend and check it against the folder's.

    Returns
    -------
    (identity, stored)
        The completed identity, and the one the folder holds (None for a new index).

    Raises
    ------
    IndexIdentityError
        The folder holds an index built differently and ``force`` is false.
    """
    identity = dict(identity)
    if not keeps_vectors(identity):
        qdrant_url = None
        identity["vector_backend"] = "none"
    else:
        identity["vector_backend"] = "qdrant-server" if qdrant_url else "qdrant-edge"
    identity["qdrant_url"] = qdrant_url or ""
    identity["collection"] = collection_name(index_dir) if qdrant_url else ""
    stored = read_identity(index_dir)
    if stored is not None and not force:
        diffs = identity_mismatch(stored, identity)
        old, new = vectors_setting(stored), vectors_setting(identity)
        if old != new:
            # the one difference a plain re-run most often has: say it in words
            what = {"none": "keyword-only, no vectors", "qdrant": "BM25 and vectors"}
            rest = [d for d in diffs if not d.startswith("vectors:")]
            also = f" It also differs in: {'; '.join(rest)}." if rest else ""
            raise IndexIdentityError(
                f"the index at {index_dir} was built with --vectors {old} ({what[old]}), "
                f"but this run uses --vectors {new}: one index never mixes the two.{also} "
                f"Re-run with --vectors {old} to update it as it was built, or with --force "
                f"--vectors {new} to rebuild it, or use another --index-dir."
            )
        if diffs:
            raise IndexIdentityError(
                f"the index at {index_dir} was built differently ("
                + "; ".join(diffs)
                + "). Re-run with --force to rebuild it, or use another --index-dir."
            )
        if stored.get("qdrant_url", "") != identity["qdrant_url"]:
            raise IndexIdentityError(
                f"the index at {index_dir} keeps its vectors in "
                f"{stored.get('qdrant_url') or 'the embedded Qdrant shard'}, not "
                f"{qdrant_url or 'the embedded Qdrant shard'}. Re-run with --force to "
                "rebuild it there."
            )
    return identity, stored


def open_vectors_for(
    index_dir: Path,
    identity: dict[str, Any],
    qdrant_api_key: str | None = None,
    *,
    create: bool = True,
) -> VectorStore:
    """The vector store an identity names (embedded shard or server collection);
    ``create=False`` (readers) raises IndexNotFoundError instead of making a missing one."""
    url = identity.get("qdrant_url") or None
    return open_vector_store(
        index_dir,
        int(identity["dimensions"]),
        qdrant_url=str(url) if url else None,
        collection=str(identity.get("collection") or collection_name(index_dir)),
        api_key=qdrant_api_key,
        create=create,
    )


# -- damage: found by readers, repaired by the next run ------------------------------


def identity_problem(identity: Mapping[str, Any]) -> str:
    """Why an identity read from ``identity.json`` cannot be used (``""`` when it can).

    Examples
    --------
    >>> identity_problem({"format": "unreadable"})
    'identity.json is not a JSON object'
    >>> identity_problem({"model": "m", "root": "/r", "chunker_version": "3"})
    'identity.json lacks dimensions'
    """
    if identity.get("format") == "unreadable":
        return f"{IDENTITY_FILE} is not a JSON object"
    need = ["model", "root", "chunker_version"]
    if keeps_vectors(identity):
        need.append("dimensions")
    missing = [key for key in need if key not in identity]
    if missing:
        return f"{IDENTITY_FILE} lacks {', '.join(missing)}"
    if keeps_vectors(identity):
        try:
            ok = int(identity["dimensions"]) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return f"{IDENTITY_FILE} has no usable dimensions ({identity['dimensions']!r})"
    return ""


def repair_command(index_dir: Path, identity: Mapping[str, Any] | None) -> str:
    """The plain index run that repairs an index folder (its root, its Qdrant server)."""
    root = (identity or {}).get("root") or "PATH"
    url = (identity or {}).get("qdrant_url")
    server = f" --qdrant-url {url}" if url else ""
    return f"rcm-dask index {root} --index-dir {index_dir}{server}"


def damaged_error(
    index_dir: Path,
    identity: Mapping[str, Any] | None,
    what: str,
    rebuild: bool = False,
    force: bool = False,
) -> IndexDamagedError:
    """The error for a damaged index: what is wrong, and the run that repairs it (with
    ``--force`` where a plain run cannot tell damage from a passing failure)."""
    does = (
        "rebuilds it from scratch"
        if rebuild or force
        else "re-adds only what the stores lack, without re-embedding what they hold"
    )
    command = repair_command(index_dir, identity) + (" --force" if force else "")
    return IndexDamagedError(
        f"the index at {index_dir} is damaged: {what}. Run `{command}` to repair it "
        f"(it {does})."
    )


def settled_chunks(files: Mapping[str, IndexedFile], pending: Collection[str]) -> int:
    """Chunks the manifest records for files no run left half-written."""
    return sum(len(f.chunk_ids) for path, f in files.items() if path not in pending)


def count_problem(store: str, total: int, in_pending: int, expected: int) -> str:
    """What is wrong when a store's chunk count disagrees with the manifest (``""``: it
    agrees). Chunks of pending files are left out: a crashed run may have left any number.

    Examples
    --------
    >>> count_problem("BM25", 10, 2, 8)
    ''
    >>> count_problem("BM25", 0, 0, 39)
    'the BM25 store holds 0 chunks of the 39 the manifest records'
    """
    held = total - in_pending
    if held == expected:
        return ""
    return f"the {store} store holds {held:,} chunks of the {expected:,} the manifest records"


def damaged_paths(
    held: Iterable[tuple[str, str]], files: Mapping[str, IndexedFile], pending: Collection[str]
) -> set[str]:
    """Paths whose chunks in a store are not what the manifest says.

    Parameters
    ----------
    held
        ``(path, chunk id)`` of every chunk the store holds.
    files, pending
        The manifest's records and pending paths (pending files are redone anyway).

    Returns
    -------
    set of str
        Recorded files with missing, extra or duplicate chunks, and paths the store
        holds that the manifest does not know (orphans).
    """
    by_path: dict[str, list[str]] = {}
    for path, chunk_id in held:
        by_path.setdefault(path, []).append(chunk_id)
    bad = {
        path
        for path, f in files.items()
        if path not in pending and sorted(by_path.get(path, ())) != sorted(f.chunk_ids)
    }
    return bad | {path for path in by_path if path not in files and path not in pending}


@dataclass
class StoreRepair:
    """What :func:`check_stores` found and did before a run."""

    paths: set[str] = field(default_factory=set)
    """Files to re-index (or remove, when gone): a store lacks or misholds their chunks."""
    restored: int = 0
    """Files whose BM25 chunks were rebuilt from the vector store's payloads."""
    notes: list[str] = field(default_factory=list)
    """What was found damaged and what is done about it, one line each."""


def check_stores(
    index_dir: Path,
    identity: Mapping[str, Any],
    files: Mapping[str, IndexedFile],
    pending: Collection[str],
    qdrant_api_key: str | None = None,
    busy_wait: float = 30.0,
) -> StoreRepair:
    """Check both stores against the manifest and repair what needs no file read.

    Run by an index run holding the index lock, before it plans. Each store's count is
    compared with the manifest's (cheap); only a store that disagrees is read chunk by
    chunk to find the files it lacks. A missing or unreadable store is cleared and
    counts as lacking every file. BM25 chunks the vector store holds are rebuilt from
    its payloads at once (no file read, no embedding); every other damaged file is
    returned, for the run to re-index in both stores.

    Parameters
    ----------
    index_dir
        The index folder.
    identity
        Its stored identity.
    files, pending
        The manifest's records and pending paths.
    qdrant_api_key
        For an index whose vectors are on a Qdrant server.
    busy_wait
        Seconds to wait for a searcher to release the embedded vector shard.

    Returns
    -------
    StoreRepair

    Raises
    ------
    IndexDamagedError
        The embedded vector shard cannot be opened (see :func:`damaged_error`).
    StoreBusyError
        A searcher held the shard for all of ``busy_wait``.
    """
    repair = StoreRepair()
    expected = settled_chunks(files, pending)
    pend = sorted(pending)
    bm25_path = index_dir / BM25_DIR
    bm25_bad: set[str] = set()
    try:
        bm25 = Bm25Store.open(bm25_path)
    except (IndexNotFoundError, IndexWriteError) as e:
        if isinstance(e, DiskFullError):
            raise
        # BM25 is derived data (from the vector payloads, or the files): rebuilt whole
        state = "missing" if isinstance(e, IndexNotFoundError) else f"unreadable ({e})"
        shutil.rmtree(bm25_path, ignore_errors=True)
        bm25_bad = _with_chunks(files, pending)
        repair.notes.append(f"the BM25 store was {state}")
    else:
        with bm25:
            problem = count_problem("BM25", bm25.count(), bm25.count(pend), expected)
            if problem:
                held = ((str(p["path"]), str(p["id"])) for p in bm25.iter_payloads())
                bm25_bad = damaged_paths(held, files, pending)
                repair.notes.append(problem)
    vectors: VectorStore | None = None
    vec_bad: set[str] = set()
    if keeps_vectors(identity):
        server = bool(identity.get("qdrant_url"))
        if not server and not edge_shard_exists(index_dir / VECTORS_DIR):
            shutil.rmtree(index_dir / VECTORS_DIR, ignore_errors=True)
            vec_bad = _with_chunks(files, pending)
            repair.notes.append("the vector store was missing")
        else:
            deadline = time.monotonic() + busy_wait
            while True:
                try:
                    vectors = open_vectors_for(index_dir, dict(identity), qdrant_api_key)
                    break
                except StoreBusyError:
                    # a searcher holds it for a query: the writer would wait as long
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.2)
                except IndexWriteError as e:
                    if server or isinstance(e, DiskFullError):
                        raise
                    # the costly store, and no telling a damaged shard from a passing
                    # failure: never thrown away without being asked
                    raise damaged_error(
                        index_dir, identity, f"the vector store cannot be opened ({e})", force=True
                    ) from e
    try:
        if vectors is not None:
            problem = count_problem("vector", vectors.count(), vectors.count(pend), expected)
            if problem:
                held = ((str(pl.get("path")), pid) for pid, _, pl in vectors.iter_points())
                vec_bad = damaged_paths(held, files, pending)
                repair.notes.append(problem)
        restore = {p for p in bm25_bad - vec_bad if p in files}
        if restore and vectors is not None:
            with Bm25Store.open(bm25_path, writable=True) as bm25:
                bm25.delete_paths(sorted(restore))
                added = bm25.add_payloads(
                    pl for _, _, pl in vectors.iter_points() if pl.get("path") in restore
                )
                bm25.commit()
            bm25_bad -= restore
            repair.restored = len(restore)
            repair.notes.append(
                f"BM25: {len(restore)} files ({added:,} chunks) rebuilt from the vector "
                "store, nothing re-embedded"
            )
    finally:
        if vectors is not None:
            vectors.close()
    repair.paths = bm25_bad | vec_bad
    if repair.paths:
        repair.notes.append(f"{len(repair.paths)} files re-indexed to repair the stores")
    return repair


def _with_chunks(files: Mapping[str, IndexedFile], pending: Collection[str]) -> set[str]:
    """Settled files that have chunks: what a store that was lost held."""
    return {path for path, f in files.items() if f.chunk_ids and path not in pending}


def index_damage(index_dir: Path) -> str:
    """What makes an index folder unrepairable in place (``""`` when nothing does): an
    unusable ``identity.json`` or an unreadable manifest. The next run rebuilds it."""
    stored = read_identity(index_dir)
    ours = (index_dir / MANIFEST_FILE).exists() or (index_dir / BM25_DIR).exists()
    if stored is not None and ours:
        problem = identity_problem(stored)
        if problem:
            return problem
    if (index_dir / MANIFEST_FILE).exists():
        try:
            read_manifest(index_dir)
        except IndexDamagedError as e:
            return str(e)
    return ""


BM25_CHURN_LIMIT = 0.05
"""Share of the BM25 store's chunks that ordinary edits may delete before the store is
rewritten: below it, scores drift by at most what that share of deleted chunks can move
the term statistics, and an edit run does not pay a whole rewrite (seconds on a large
index) for one changed file."""

BM25_CHURN_KEY = "bm25_churn"
"""Manifest meta key: chunks that edits have deleted (or were about to delete) from BM25
since its last rewrite."""

BM25_REWRITE_KEY = "bm25_rewrite_due"
"""Manifest meta key: true from the start of a run that must end with a BM25 rewrite until
that rewrite is done, so that a run killed before it leaves the rewrite to the next."""


def plan_bm25_purge(
    index_dir: Path,
    known: Mapping[str, IndexedFile],
    changing: Iterable[str],
    redone: bool = False,
) -> bool:
    """Before a run deletes anything: decide, durably, whether it must end by rewriting
    the BM25 store (:func:`purge_bm25_deletes`).

    A delete skews BM25 statistics even once Tantivy has merged it away (the merged
    segment still counts the deleted chunks' tokens). A run that redoes files
    (``redone``: a crash's pending files, a repair) always rewrites, so that a recovered
    index scores exactly as a clean build does. Ordinary edits add the chunks they may
    delete (those of ``known`` files among ``changing``: to re-read or to remove) to a
    count kept in the manifest, and the store is rewritten once that count passes
    :data:`BM25_CHURN_LIMIT` of its chunks: a one-file edit of a large index stays cheap,
    and scores never drift far. Both are recorded before the run starts, so a run killed
    before its rewrite leaves it due for the next run.

    Returns
    -------
    bool
        Whether the run must end with a rewrite.
    """
    churned = sum(len(known[p].chunk_ids) for p in set(changing) if p in known)
    if not (index_dir / MANIFEST_FILE).exists():
        return False
    manifest = Manifest(index_dir)
    try:
        due = bool(manifest.get_meta(BM25_REWRITE_KEY, False)) or redone
        if not (due or churned):
            return False
        churn = int(str(manifest.get_meta(BM25_CHURN_KEY, 0))) + churned
        live = sum(len(f.chunk_ids) for f in known.values())
        due = due or churn > BM25_CHURN_LIMIT * max(live, 1)
        manifest.set_meta(BM25_CHURN_KEY, churn)
        manifest.set_meta(BM25_REWRITE_KEY, due)
        return due
    finally:
        manifest.close()


def purge_bm25_deletes(index_dir: Path, due: bool) -> int:
    """After a run that :func:`plan_bm25_purge` found due: rewrite the BM25 store from its
    stored payloads (:meth:`Bm25Store.rewrite`), then clear the count and the mark.

    Returns
    -------
    int
        Chunks rewritten (0: nothing to do).
    """
    if not due:
        return 0
    try:
        bm25 = Bm25Store.open(index_dir / BM25_DIR, writable=True)
    except IndexNotFoundError:
        return 0
    with bm25:
        rewritten = bm25.rewrite()
    manifest = Manifest(index_dir)
    try:
        manifest.set_meta(BM25_CHURN_KEY, 0)
        manifest.set_meta(BM25_REWRITE_KEY, False)
    finally:
        manifest.close()
    return rewritten


class IndexWriter:
    """Owns both stores and the manifest of one index folder for the length of a run.

    Parameters
    ----------
    index_dir
        The index folder (created if missing).
    identity
        What this run produces (see :data:`rcm_dask.stores.manifest.IDENTITY_KEYS`).
    qdrant_url, qdrant_api_key
        Use a Qdrant server instead of the embedded shard.
    force
        Throw away whatever the folder holds and start afresh.
    commit_every
        Commit once this many chunks have been written since the last commit.
    commit_seconds
        Also commit when this many seconds have passed since the last commit and
        something was written (0: never by time).
    busy_wait
        Seconds to wait for a searcher to release the embedded vector shard.

    Raises
    ------
    IndexIdentityError
        The folder holds an index built with another model, chunker or root.
    IndexWriteError
        A store cannot be opened for writing (another writer holds it...).
    """

    @on_disk_full("open the index for writing")
    def __init__(
        self,
        index_dir: str | Path,
        identity: dict[str, Any],
        *,
        qdrant_url: str | None = None,
        qdrant_api_key: str | None = None,
        force: bool = False,
        commit_every: int = 4096,
        commit_seconds: float = 0.0,
        busy_wait: float = 30.0,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self._last_commit = time.monotonic()
        self.index_dir.mkdir(parents=True, exist_ok=True)
        require_space(self.index_dir, RESERVE_BYTES, "open the index for writing")
        identity, stored = check_identity(self.index_dir, identity, qdrant_url, force)
        self._qdrant_api_key = qdrant_api_key
        if force or (stored is not None and not (self.index_dir / MANIFEST_FILE).exists()):
            self._wipe(stored)
        identity["created"] = (
            stored.get("created") if stored and not force else None
        ) or time.time()
        write_identity(self.index_dir, identity)
        self.identity = identity
        self.manifest = Manifest(self.index_dir)
        try:
            self.bm25 = Bm25Store.open(self.index_dir / BM25_DIR, writable=True)
        except Exception:
            self.manifest.close()
            raise
        self.vectors: VectorStore | None = None
        if keeps_vectors(identity):
            try:
                self.vectors = self._open_vectors(busy_wait)
            except Exception:
                self.bm25.close()
                self.manifest.close()
                raise
        self._expected: dict[str, IndexedFile] = {}
        self._remaining: dict[str, int] = {}
        self._replaced: set[str] = set()
        self._complete: list[IndexedFile] = []
        self._removals: list[str] = []
        # Symbol rows go into the manifest with their file's row (same transaction), so
        # they are collected while a file's chunks arrive and handed over at commit.
        self._collector = SymbolCollector()
        self._symbols: dict[str, FileSymbols] = {}
        self._since_commit = 0
        self.chunks_written = 0
        self.commits = 0
        self.write_seconds = 0.0
        self.spans: list[list[float]] = []

    def _open_vectors(self, busy_wait: float) -> VectorStore:
        """Open the vector store, waiting up to ``busy_wait`` s for a searcher to let go."""
        deadline = time.monotonic() + busy_wait
        while True:
            try:
                return open_vectors_for(self.index_dir, self.identity, self._qdrant_api_key)
            except StoreBusyError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _wipe(self, stored: dict[str, Any] | None) -> None:
        """Delete every store of the folder (``--force``, or stores nothing accounts for).

        The manifest goes first: once it is gone nothing claims the stores' content,
        so a crash half-way through leaves stores that the next run clears again.
        """
        for suffix in ("", "-wal", "-shm"):
            (self.index_dir / (MANIFEST_FILE + suffix)).unlink(missing_ok=True)
        for name in (BM25_DIR, VECTORS_DIR):
            shutil.rmtree(self.index_dir / name, ignore_errors=True)
        if stored and stored.get("qdrant_url"):
            from qdrant_client import QdrantClient

            client = QdrantClient(url=str(stored["qdrant_url"]), api_key=self._qdrant_api_key)
            try:
                name = str(stored.get("collection") or collection_name(self.index_dir))
                if client.collection_exists(name):
                    client.delete_collection(name)
            finally:
                client.close()

    # -- the writer's protocol -----------------------------------------------------
    def expect_files(self, files: Sequence[IndexedFile]) -> None:
        """Announce files whose chunks will arrive in later batches (any order, any split).

        A file with no chunks is complete at once: its old chunks are removed.
        """
        empty: list[str] = []
        for f in files:
            self._expected[f.path] = f
            self._remaining[f.path] = len(f.chunk_ids)
            if not f.chunk_ids:
                empty.append(f.path)
        if empty:
            self._replace(empty)
            for path in empty:
                self._finish(path)

    @on_disk_full("write to the index")
    def write_batch(self, batch: EmbeddedBatch) -> int:
        """Apply one batch to both stores; returns the chunks written.

        The first time a run writes a chunk of some file, that file's old chunks are
        removed from both stores first. A keyword-only index takes batches without
        vectors (``batch.vectors`` None) and writes BM25 only.

        Raises
        ------
        IndexWriteError
            A store refused the write (what was committed before is intact), or a batch
            without vectors came to an index that keeps them.
        """
        if not batch.chunks:
            return 0
        if self.vectors is not None and batch.vectors is None:
            raise IndexWriteError(
                f"a batch without vectors reached the index at {self.index_dir}, which keeps "
                "vectors: re-run with --vectors qdrant, or rebuild it with --force --vectors none"
            )
        self._require_space(batch)
        start = time.perf_counter()
        fresh = sorted({c.path for c in batch.chunks} - self._replaced)
        try:
            if fresh:
                self._replace(fresh)
            self.bm25.add_batch(batch.chunks)
            # vectors sent to a keyword-only index are dropped: it keeps none by design
            if self.vectors is not None and batch.vectors is not None:
                self.vectors.upsert_batch(batch.chunks, batch.vectors)
        except IndexWriteError:
            raise
        except Exception as e:
            raise IndexWriteError(f"writing to the index at {self.index_dir} failed: {e}") from e
        for c in batch.chunks:
            self._collector.add(c)
        for c in batch.chunks:
            left = self._remaining.get(c.path)
            if left is not None:
                self._remaining[c.path] = left - 1
                if left == 1:
                    self._finish(c.path)
        n = len(batch.chunks)
        self.chunks_written += n
        self._since_commit += n
        if self._since_commit >= self.commit_every or (
            self.commit_seconds > 0 and time.monotonic() - self._last_commit >= self.commit_seconds
        ):
            self.commit()
        self._record(start)
        return n

    def _require_space(self, batch: EmbeddedBatch) -> None:
        """Refuse a batch the disk cannot take: on a full disk the embedded Qdrant dies
        of SIGBUS (it writes through memory maps) instead of failing the write."""
        dims = self.vectors.dim if isinstance(self.vectors, EdgeVectorStore) else None
        text = sum(len(c.code) + len(c.docs) + len(c.signature) for c in batch.chunks)
        needed = estimate_index_bytes(len(batch.chunks), text, dims)
        require_space(self.index_dir, needed, f"write {len(batch.chunks)} chunks")

    def _record(self, start: float) -> None:
        """Count busy time since ``start`` (perf_counter) and keep its wall-clock span."""
        now = time.perf_counter()
        self.write_seconds += now - start
        wall = time.time()
        if self.spans and wall - (now - start) <= self.spans[-1][1] + 0.001:
            self.spans[-1][1] = wall
        else:
            self.spans.append([wall - (now - start), wall])

    def report(self) -> dict[str, Any]:
        """What the writer did so far: chunks written, commits, busy seconds, busy spans."""
        return {
            "chunks_written": self.chunks_written,
            "commits": self.commits,
            "write_seconds": self.write_seconds,
            "spans": [list(s) for s in self.spans],
            "pid": os.getpid(),
        }

    def write_file(self, file: IndexedFile, batch: EmbeddedBatch) -> int:
        """Replace one file's chunks with ``batch`` (the sequential mode's call)."""
        self.expect_files([file])
        return self.write_batch(batch)

    def touch_files(self, files: Sequence[IndexedFile]) -> None:
        """Record files whose content is unchanged but whose size or mtime moved."""
        self._complete.extend(files)

    def remove_files(self, paths: Sequence[str]) -> None:
        """Remove files that left the codebase from both stores and, at commit, the manifest."""
        if not paths:
            return
        self._replace(list(paths))
        self._removals.extend(paths)
        self._since_commit += 1

    @on_disk_full("remove old chunks from the index")
    def _replace(self, paths: list[str]) -> None:
        """Delete the old chunks of files about to be (re)written, noting them as pending
        first (durably), so that a crash from here on makes the next run redo them."""
        try:
            self.manifest.mark_pending(paths)
            self.bm25.delete_paths(paths)
            if self.vectors is not None:
                self.vectors.delete_paths(paths)
        except Exception as e:
            raise IndexWriteError(f"removing old chunks from {self.index_dir} failed: {e}") from e
        self._replaced.update(paths)

    def _finish(self, path: str) -> None:
        """All chunks of a file are written: it goes into the manifest at the next commit."""
        self._complete.append(self._expected.pop(path))
        del self._remaining[path]
        self._symbols[path] = self._collector.finish(path)

    @on_disk_full("commit the index")
    def commit(self) -> None:
        """Make everything written so far durable: Tantivy, Qdrant, then the manifest."""
        start = time.perf_counter()
        try:
            self.bm25.commit()
            if self.vectors is not None:
                self.vectors.commit()
        except Exception as e:
            raise IndexWriteError(f"committing the index at {self.index_dir} failed: {e}") from e
        self.manifest.apply(self._complete, self._removals, self._symbols)
        self.manifest.set_meta("updated", time.time())
        self._complete = []
        self._removals = []
        self._symbols = {}
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self.commits += 1
        self._record(start)

    def close(self, commit: bool = True) -> None:
        """Commit (unless told not to) and release both stores."""
        try:
            if commit:
                self.commit()
        finally:
            try:
                if self.vectors is not None:
                    self.vectors.close()
            finally:
                self.bm25.close()
                self.manifest.close()

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # An error or Ctrl-C: keep every file written whole so far (a commit is safe at
        # any point: files half-written stay pending and the next run redoes them). A
        # failure here must not hide the error that got us here.
        try:
            self.commit()
        except Exception:
            pass
        try:
            self.close(commit=False)
        except Exception:
            pass
