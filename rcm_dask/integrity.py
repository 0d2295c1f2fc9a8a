"""Index integrity: is an index folder whole, and what does a run repair before it plans.

Damage that no crash explains (a store deleted or cut short, a manifest or
``identity.json`` overwritten) is found by comparing each store's chunk count with
the manifest's (:func:`count_problem`), and for the embedded vector shard by checking
its files' sizes and reading a few points back
(:meth:`~rcm_dask.stores.vectors.EdgeVectorStore.damage`): readers refuse with
:class:`~rcm_dask.errors.IndexDamagedError` (:func:`damaged_error`), and the next index
run repairs it (:func:`check_stores`: the files a store lacks are re-added, a damaged
vector shard is moved aside and every file re-embedded; an unreadable manifest or
identity means a rebuild, :func:`index_damage`). Deleted chunks
are purged from Tantivy at the end of a run that recovered or repaired files, and once
edits have deleted a set share of the chunks (:func:`plan_bm25_purge`,
:func:`purge_bm25_deletes`): BM25 scores after a crash equal a clean build's, and edits
move them by a bounded amount without a rewrite on every edit. An index from before the
whole-file records (:mod:`~rcm_dask.stores.file_records`) gets them at the end of its next
run, from its stored chunks (:func:`complete_file_records`).
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    DiskFullError,
    IndexDamagedError,
    IndexNotFoundError,
    IndexWriteError,
    StoreBusyError,
)
from .identity import (
    BM25_DIR,
    VECTORS_DIR,
    identity_problem,
    keeps_vectors,
    open_vectors_waiting,
)
from .records import IndexedFile
from .stores.bm25 import Bm25Store
from .stores.file_records import FILES_SUBDIR
from .stores.manifest import MANIFEST_FILE, Manifest, read_identity, read_manifest
from .stores.vectors import VectorStore, edge_shard_exists


def repair_command(index_dir: Path, identity: Mapping[str, Any] | None) -> str:
    """The plain index run that repairs an index folder (its root, its model when it is
    not the bundled one, its Qdrant server)."""
    from .embedding import DEFAULT_MODEL_NAME

    identity = identity or {}
    root = identity.get("root") or "PATH"
    url = identity.get("qdrant_url")
    server = f" --qdrant-url {url}" if url else ""
    model_dir = identity.get("model_dir")
    own_model = model_dir and identity.get("model") != DEFAULT_MODEL_NAME
    model = f" --model {model_dir}" if own_model else ""
    return f"rcm-dask index {root} --index-dir {index_dir}{model}{server}"


def damaged_error(
    index_dir: Path,
    identity: Mapping[str, Any] | None,
    what: str,
    rebuild: bool = False,
    force: bool = False,
    reembed: bool = False,
) -> IndexDamagedError:
    """The error for a damaged index: what is wrong, and the run that repairs it (with
    ``--force`` where a plain run cannot repair it).

    Parameters
    ----------
    index_dir, identity
        The index folder and its identity (None when unreadable): they name the run.
    what
        What is wrong, for the message.
    rebuild, force
        The run rebuilds the whole index (``force``: and needs ``--force`` to).
    reembed
        The embedded vector store is unreadable: the run moves it aside
        (:data:`DAMAGED_VECTORS_DIR`) and re-embeds every file into a new one.

    Returns
    -------
    IndexDamagedError

    Examples
    --------
    >>> str(damaged_error(Path("/i"), {"root": "/src"}, "the BM25 store is missing"))
    ... # doctest: +NORMALIZE_WHITESPACE
    'the index at /i is damaged: the BM25 store is missing. Run `rcm-dask index /src
    --index-dir /i` to repair it (it re-adds only what the stores lack, without
    re-embedding what they hold).'
    """
    if rebuild or force:
        does = "rebuilds it from scratch"
    elif reembed:
        does = (
            f"moves the damaged vector store aside to {index_dir / DAMAGED_VECTORS_DIR} and "
            "re-embeds every file into a new one, keeping the BM25 store and the manifest"
        )
    else:
        does = "re-adds only what the stores lack, without re-embedding what they hold"
    command = repair_command(index_dir, identity) + (" --force" if force else "")
    return IndexDamagedError(
        f"the index at {index_dir} is damaged: {what}. Run `{command}` to repair it (it {does})."
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
    chunk to find the files it lacks. A missing or unreadable BM25 store is cleared and
    counts as lacking every file; so does an embedded vector shard that cannot be
    opened or read back (its files cut short, say), moved aside to
    :data:`DAMAGED_VECTORS_DIR` rather than deleted. BM25 chunks the vector store
    holds are rebuilt from its payloads at once (no file read, no embedding); every
    other damaged file is returned, for the run to re-index in both stores.

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
    IndexWriteError
        A damaged embedded vector shard cannot be moved aside.
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
        damage = ""
        if not server and not edge_shard_exists(index_dir / VECTORS_DIR):
            shutil.rmtree(index_dir / VECTORS_DIR, ignore_errors=True)
            vec_bad = _with_chunks(files, pending)
            repair.notes.append("the vector store was missing")
        else:
            vectors, damage = _open_vectors(index_dir, identity, qdrant_api_key, busy_wait)
        if damage:
            aside = set_aside_vectors(index_dir)
            vec_bad = _with_chunks(files, pending)
            repair.notes.append(
                f"the vector store was damaged ({damage}): moved aside to {aside} (delete it "
                "once searches work), every file re-embedded into a new one"
            )
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


def _open_vectors(
    index_dir: Path, identity: Mapping[str, Any], api_key: str | None, busy_wait: float
) -> tuple[VectorStore | None, str]:
    """Open an index's vector store for a run: ``(store, "")``, or ``(None, what is
    damaged)`` when the embedded shard cannot be opened or read back
    (:meth:`~rcm_dask.stores.vectors.EdgeVectorStore.damage`); a server that cannot be
    reached, a full disk and a searcher that holds the shard past ``busy_wait`` raise."""
    server = bool(identity.get("qdrant_url"))
    try:
        # a searcher holding it for a query is waited for, as long as the writer would
        vectors = open_vectors_waiting(index_dir, dict(identity), api_key, busy_wait)
    except StoreBusyError:
        raise
    except IndexWriteError as e:
        if server or isinstance(e, DiskFullError):
            raise
        # moved aside, not deleted: a failure that was only passing loses nothing
        return None, str(e)
    damage = vectors.damage()
    if damage:
        try:
            vectors.close()
        except IndexWriteError:
            pass  # the shard is set aside whatever its last flush did
        return None, damage
    return vectors, ""


DAMAGED_VECTORS_DIR = "vectors.damaged"
"""Where a run moves an embedded vector shard it found damaged (in the index folder),
before it re-embeds every file into a new one; one such folder, the latest."""


def set_aside_vectors(index_dir: Path) -> Path:
    """Move a damaged embedded vector shard out of the way, replacing an older one.

    Returns
    -------
    Path
        Where it now is (:data:`DAMAGED_VECTORS_DIR`).

    Raises
    ------
    IndexWriteError
        The shard cannot be moved (the folder is not writable).
    """
    aside = index_dir / DAMAGED_VECTORS_DIR
    shutil.rmtree(aside, ignore_errors=True)
    try:
        (index_dir / VECTORS_DIR).rename(aside)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise IndexWriteError(f"cannot move the damaged vector store aside to {aside}: {e}") from e
    return aside


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


def complete_file_records(index_dir: Path) -> bool:
    """Give an index built before the whole-file records its records, made from the
    stored chunks (nothing is read or embedded again): the end of every run, also one that
    changed nothing. Returns whether they were made. A store that cannot be written now
    (a read-only folder) is left as it is: searches go on without the records."""
    bm25_dir = index_dir / BM25_DIR
    if not (bm25_dir / "meta.json").exists() or (bm25_dir / FILES_SUBDIR).is_dir():
        return False
    try:
        # a writable open makes them (Bm25Store), in one commit of their own
        with Bm25Store.open(bm25_dir, writable=True):
            pass
    except IndexWriteError:
        return False
    return True
