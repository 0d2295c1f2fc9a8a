"""Indexing modes: how the stages are scheduled. The only module that builds Dask graphs.

Three modes, one set of stage functions, the same index:

``sequential``
    One process, file by file (read, chunk, embed that file's chunks, write): the
    baseline and the debugging mode; no cluster.
``parallel``
    Stage after stage on a Dask cluster: every file read and chunked in worker
    processes, then every cross-file batch embedded, then every batch written.
    Simple to reason about; holds all chunks and vectors in cluster memory at once.
``pipeline``
    The stages overlap on a Dask cluster: while later files are read and chunked,
    earlier batches are embedded and earlier vectors written. Work in flight is
    bounded at every stage, so memory stays flat however large the codebase.

The dataflow of the cluster modes::

    fsspec listing (driver) -> Dask bag of file references, grouped by size
      -> read_chunk_partition (any worker: fsspec read, tree-sitter parse, split)
      -> exact batch_size-chunk cross-file batches, planned by the driver from
         per-partition chunk counts (no barrier: a batch starts as soon as its
         chunks exist)
      -> embed_segments (workers with the ``GPU`` resource when the cluster has any)
      -> the index writer: one Dask actor holding Tantivy, Qdrant and the manifest,
         fed from the driver

The driver never sees file contents; it sees chunk counts and ids, and it hands
each embedded batch (~0.5 MB for 128 chunks) to the writer actor. Feeding the actor
from the driver keeps writes off the embedding workers' threads (an actor called
from inside a task blocks that task's thread).

A keyword-only run (``vectors="none"``) has no embedding stage: each cross-file
batch is gathered by a small :func:`gather_segments` task on any worker and goes to
the writer without vectors, under the same bounds on work in flight. Chunking still
splits long items with the model's tokenizer (so chunk ids match a run with
vectors), but no weights are loaded anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .chunking import CHUNKER_VERSION, chunk_source, format_for_embedding, split_chunks
from .config import IndexConfig, default_index_dir
from .embedding import Embedder
from .errors import (
    ClusterError,
    ConfigError,
    IndexInterrupted,
    IndexWriteError,
    RcmError,
    SourceError,
)
from .records import (
    Chunk,
    EmbeddedBatch,
    EmbedResult,
    FileRef,
    IndexedFile,
    IndexStats,
    ParsedPartition,
    Skipped,
    SourceFile,
)
from .sources import Discovery, SourceRoot, discover_sources, open_root, read_source
from .stores.lock import IndexLock
from .stores.manifest import INDEX_FORMAT, MANIFEST_FILE, Manifest, read_manifest
from .stores.space import disk_full_errors, require_run_space
from .writer import (
    IndexWriter,
    StoreRepair,
    check_identity,
    check_stores,
    index_damage,
    plan_bm25_purge,
    purge_bm25_deletes,
)

if TYPE_CHECKING:
    from distributed import Client, Future

ProgressCallback = Callable[[IndexStats, str], None]
"""Called once when the run starts (path ``""``), then as work completes with the
running stats and the last file's path (``""`` when a batch was written)."""

IN_PROCESS = "in-process"
GPU_RESOURCE = "GPU"
"""The worker resource that marks embedding workers (``dask worker --resources GPU=1``)."""
EMBED_RESOURCE = "EMBED"
"""The resource of the run's own LocalCluster workers: one embedding task at a time each."""


@dataclass
class RunPlan:
    """What a run has to do, worked out before any file is read."""

    root: SourceRoot
    """The codebase."""
    index_dir: Path
    """The index folder."""
    todo: list[FileRef]
    """Files to read (new, or changed by size or mtime)."""
    known: dict[str, IndexedFile]
    """What the index held before the run, by path."""
    removed: list[str]
    """Indexed files that are no longer in the codebase."""
    discovery: Discovery
    """The listing."""
    stats: IndexStats = field(default_factory=IndexStats)
    """Stats being filled in."""

    @property
    def todo_bytes(self) -> int:
        """Bytes of the files to read."""
        return sum(ref.size for ref in self.todo)


# --------------------------------------------------------------------------- stage functions
# Plain functions over records: they run the same in a loop, in a bag partition or a task.


def chunk_file(source: SourceFile, embedder: Embedder) -> list[Chunk]:
    """Chunk one file and split chunks longer than the model's budget (no weights needed)."""
    return split_chunks(chunk_source(source), embedder.count_tokens, embedder.max_tokens)


def embed_chunks(chunks: Sequence[Chunk], embedder: Embedder) -> EmbeddedBatch:
    """Embed chunks (their :func:`format_for_embedding` texts) into a writer batch."""
    vectors = embedder.embed_batch([format_for_embedding(c) for c in chunks])
    return EmbeddedBatch(chunks=tuple(chunks), vectors=vectors)


def keyword_batch(chunks: Sequence[Chunk]) -> EmbeddedBatch:
    """Chunks as a writer batch without vectors: what a keyword-only run writes."""
    return EmbeddedBatch(chunks=tuple(chunks), vectors=None)


def indexed_file(source: SourceFile, chunks: Sequence[Chunk]) -> IndexedFile:
    """The manifest record of a file and its chunks."""
    return IndexedFile(
        path=source.path,
        size=source.size,
        mtime=source.mtime,
        sha256=source.sha256,
        chunk_ids=tuple(c.id for c in chunks),
    )


def read_chunk_partition(
    refs: Sequence[FileRef],
    fs: Any,
    embedder: Embedder,
    known_sha: dict[str, str] | None = None,
    *,
    max_file_size: int = 8 * 1024 * 1024,
    include_sensitive: bool = False,
) -> ParsedPartition:
    """Read and chunk some files: the read+parse stage, run inside a worker process.

    Parameters
    ----------
    refs
        Files to read.
    fs
        The root's fsspec filesystem (pickled to the worker, opened there).
    embedder
        Gives the token counter and budget for splitting long chunks (no weights).
    known_sha
        Content hashes the index holds, by path: a file whose hash matches is
        reported as unchanged, not chunked.
    max_file_size, include_sensitive
        As for :func:`rcm_dask.sources.read_source`.

    Returns
    -------
    ParsedPartition
        New or changed files with their chunks, unchanged files, skipped files.
    """
    started = time.time()
    known_sha = known_sha or {}
    files: list[IndexedFile] = []
    chunks: list[Chunk] = []
    unchanged: list[IndexedFile] = []
    skipped: list[Skipped] = []
    read_s = chunk_s = 0.0
    for ref in refs:
        t0 = time.perf_counter()
        source = read_source(
            fs, ref, max_file_size=max_file_size, include_sensitive=include_sensitive
        )
        t1 = time.perf_counter()
        read_s += t1 - t0
        if isinstance(source, Skipped):
            skipped.append(source)
            continue
        if known_sha.get(source.path) == source.sha256:
            unchanged.append(indexed_file(source, ()))
            continue
        file_chunks = chunk_file(source, embedder)
        chunk_s += time.perf_counter() - t1
        files.append(indexed_file(source, file_chunks))
        chunks.extend(file_chunks)
    return ParsedPartition(
        files=tuple(files),
        chunks=tuple(chunks),
        unchanged=tuple(unchanged),
        skipped=tuple(skipped),
        read_seconds=read_s,
        chunk_seconds=chunk_s,
        started=started,
        finished=time.time(),
    )


def embed_segments(
    embedder: Embedder,
    segments: Sequence[tuple[ParsedPartition, int, int]],
    threads_by_host: dict[str, int] | None = None,
) -> EmbedResult:
    """Embed one cross-file batch: ``chunks[start:stop]`` of each partition, in order.

    Run as a task, it sets torch's thread count inside the task's own thread (the
    setting is per thread under OpenMP, and the nanny starts workers with
    ``OMP_NUM_THREADS=1``): the host's cores shared among the embedding slots that
    ``threads_by_host`` counts on this worker's host.
    """
    started = time.time()
    chunks = [c for part, start, stop in segments for c in part.chunks[start:stop]]
    worker = _worker_address()
    # any object with the Embedder interface works; only a real one has threads
    threads = getattr(embedder, "torch_threads", None) or 0
    if threads_by_host is not None and not threads and hasattr(embedder, "torch_threads"):
        threads = threads_by_host.get(_host_of(worker)) or threads_by_host.get("*") or 1
        embedder.torch_threads = threads
    if worker == IN_PROCESS:
        batch = embed_chunks(chunks, embedder)
    else:
        batch = _EMBED_THREADS.run(embed_chunks, chunks, embedder)
    if not str(getattr(embedder, "device", "cpu")).startswith("cpu"):
        threads = 0
    return EmbedResult(batch, worker, started, time.time(), threads)


def gather_segments(segments: Sequence[tuple[ParsedPartition, int, int]]) -> EmbeddedBatch:
    """One cross-file batch of a keyword-only run: ``chunks[start:stop]`` of each
    partition, in order, without vectors (the stand-in for :func:`embed_segments`)."""
    return keyword_batch([c for part, start, stop in segments for c in part.chunks[start:stop]])


class _ThreadAffinity:
    """Long-lived threads that embedding tasks hand their forward passes to.

    A Dask worker runs each task on whichever of its executor threads is free, and
    torch's OpenMP thread team belongs to the thread that calls it: when consecutive
    batches ran on different executor threads, each switch paid for a second team (its
    threads kept spinning on the cores after the batch that used them ended).
    Measured on 2 cores (one worker, 2 executor threads, bf16, 3,171 chunks of
    ``alloc/src/collections``): embedding busy time in the pipeline went from 35.8 s
    to 32.8 s, the run from 41.4-42.3 s to 38.1 s. With one task at a time every batch
    runs on the same thread; concurrent tasks (a cluster without the embedding
    resource) each get one of their own.
    """

    def __init__(self) -> None:
        self._free: list[Any] = []
        self._lock = threading.Lock()
        self._started = 0

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the most recently used free thread."""
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._free:
                pool = self._free.pop()
            else:
                self._started += 1
                pool = ThreadPoolExecutor(1, thread_name_prefix=f"rcm-embed-{self._started}")
        try:
            return pool.submit(fn, *args).result()
        finally:
            with self._lock:
                self._free.append(pool)


_EMBED_THREADS = _ThreadAffinity()


def _worker_address() -> str:
    """This task's worker address, or ``in-process`` outside a Dask worker."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return IN_PROCESS


def _host_of(address: str) -> str:
    """``tcp://10.0.0.5:40000`` -> ``10.0.0.5``."""
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def _read_chunk_groups(
    groups: Sequence[tuple[Sequence[FileRef], dict[str, str]]],
    fs: Any,
    embedder: Embedder,
    max_file_size: int,
    include_sensitive: bool,
) -> ParsedPartition:
    """Bag partition function: one group of files -> one :class:`ParsedPartition`."""
    refs = [ref for group, _ in groups for ref in group]
    known: dict[str, str] = {}
    for _, shas in groups:
        known.update(shas)
    return read_chunk_partition(
        refs,
        fs,
        embedder,
        known,
        max_file_size=max_file_size,
        include_sensitive=include_sensitive,
    )


def _summary(part: ParsedPartition) -> ParsedPartition:
    """Task: the partition without its chunks (runs where the partition is)."""
    return part.summary()


def group_files(
    refs: Sequence[FileRef], target_bytes: int, max_files: int = 64
) -> list[list[FileRef]]:
    """Cut a listing into groups of about ``target_bytes`` (a big file is a group alone).

    Examples
    --------
    >>> refs = [FileRef(f"{i}.rs", f"/r/{i}.rs", size, None) for i, size in enumerate([5, 5, 20, 1])]
    >>> [[r.path for r in g] for g in group_files(refs, 10)]
    [['0.rs', '1.rs'], ['2.rs'], ['3.rs']]
    """
    groups: list[list[FileRef]] = []
    size = 0
    for ref in refs:
        if not groups or size + ref.size > target_bytes or len(groups[-1]) >= max_files:
            if groups and not groups[-1]:
                groups.pop()
            groups.append([])
            size = 0
        groups[-1].append(ref)
        size += ref.size
    return [g for g in groups if g]


# --------------------------------------------------------------------------- planning


def run_identity(root: SourceRoot, embedder: Embedder, vectors: str = "qdrant") -> dict[str, Any]:
    """The identity an index built by this run must have.

    With vectors it names the model's weights, width and precision
    (:attr:`~rcm_dask.embedding.Embedder.identity`). A keyword-only index
    (``vectors="none"``) names only what its chunk ids depend on, the tokenizer and
    the token budget (:attr:`~rcm_dask.embedding.Embedder.tokenizer_identity`): its
    identity does not change with the weights, and working it out loads neither them
    nor a device.
    """
    if vectors == "none":
        model = _tokenizer_identity(embedder)
    else:
        model = dict(embedder.identity)
    return {
        "format": INDEX_FORMAT,
        "vectors": vectors,
        "chunker_version": CHUNKER_VERSION,
        "root": root.url,
        "model_dir": str(embedder.model_dir),
        **model,
    }


def _tokenizer_identity(embedder: Embedder) -> dict[str, Any]:
    """The embedder's tokenizer identity; for stand-ins without one (tests), its name,
    fingerprint and token budget."""
    found = getattr(embedder, "tokenizer_identity", None)
    if isinstance(found, dict):
        return dict(found)
    return {
        "model": embedder.name,
        "tokenizer_fingerprint": embedder.fingerprint,
        "max_tokens": embedder.max_tokens,
    }


RACY_SECONDS = 2.0
"""A file modified this close to when it was recorded may have changed again within the
filesystem's timestamp resolution (2 s on FAT, 1 s on ext3/HFS+): its hash decides."""


def read_known(index_dir: Path) -> tuple[dict[str, IndexedFile], set[str]]:
    """What an index folder's manifest holds, by path, and its pending paths (paths a
    crashed run had begun to change); both empty for a new index.

    Raises
    ------
    IndexDamagedError
        The manifest cannot be read (:func:`~rcm_dask.stores.manifest.read_manifest`).
    """
    if not (index_dir / MANIFEST_FILE).exists():
        return {}, set()
    files, pending = read_manifest(index_dir)
    return files, set(pending)


def is_unchanged(old: IndexedFile, ref: FileRef) -> bool:
    """Whether a listed file can be skipped on its size and mtime alone.

    Not when the filesystem gives no mtime, nor when the recorded mtime is within
    :data:`RACY_SECONDS` of the moment it was recorded: such files are re-read and
    their hash decides (an unchanged hash costs a read, not an embedding).
    """
    if old.size != ref.size or ref.mtime is None or old.mtime != ref.mtime:
        return False
    return old.indexed_at is None or ref.mtime < old.indexed_at - RACY_SECONDS


def plan_run(
    root: SourceRoot,
    config: IndexConfig,
    index_dir: Path,
    known: dict[str, IndexedFile],
    discovery: Discovery,
    pending: set[str] | frozenset[str] = frozenset(),
    repair: set[str] | frozenset[str] = frozenset(),
) -> RunPlan:
    """Compare the listing with what the index holds: what to read, what to drop.

    ``pending`` paths were being changed by a run that did not finish: whatever the
    stores hold for them is not what the manifest says, so they are read and
    re-indexed in full (or removed, if they are gone) whatever their size and mtime.
    ``repair`` paths are files whose chunks a store lacks or holds wrongly
    (:func:`~rcm_dask.writer.check_stores`): they are redone the same way.
    """
    redo = set(pending) | set(repair)
    trusted = {p: f for p, f in known.items() if p not in redo}
    listed = {f.path for f in discovery.files}
    todo = []
    unchanged = 0
    for ref in discovery.files:
        old = trusted.get(ref.path)
        if old is not None and is_unchanged(old, ref):
            unchanged += 1
            continue
        todo.append(ref)
    removed = sorted((set(known) | redo) - listed)
    stats = IndexStats(
        mode=config.mode,
        root=root.url,
        index_dir=str(index_dir),
        files_seen=len(discovery.files),
        files_todo=len(todo),
        files_unchanged=unchanged,
        files_removed=len(removed),
        files_recovered=len(pending),
        files_repaired=len(set(repair) - set(pending)),
        vectors=config.vectors,
    )
    for skip in discovery.skipped:
        stats.add_skip(skip)
    return RunPlan(root, index_dir, todo, trusted, removed, discovery, stats)


def choose_mode(config: IndexConfig, plan: RunPlan, has_client: bool) -> str:
    """The mode a run uses: ``config.mode``, or for ``auto`` the one that fits the work.

    Raises
    ------
    ConfigError
        A cluster mode was asked for on an in-memory filesystem, whose files exist
        only in this process.
    """
    in_memory = "memory" in _protocols(plan.root.fs)
    mode = config.mode
    if mode == "auto":
        if in_memory:
            return "sequential"
        big = plan.todo_bytes >= config.small_codebase_bytes
        return "pipeline" if big or has_client or config.scheduler else "sequential"
    if mode != "sequential" and in_memory:
        raise ConfigError(
            f"mode {mode!r} reads files in worker processes, but {plan.root.url} is an "
            "in-memory filesystem that only this process sees; use mode='sequential'"
        )
    return mode


def _protocols(fs: Any) -> tuple[str, ...]:
    """An fsspec filesystem's protocol names."""
    proto = getattr(fs, "protocol", ())
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _account_partition(stats: IndexStats, part: ParsedPartition) -> None:
    """Add one partition's outcome to the run's stats."""
    stats.files_read += len(part.files) + len(part.unchanged)
    stats.files_done += len(part.files) + len(part.unchanged) + len(part.skipped)
    stats.files_unchanged += len(part.unchanged)
    for skip in part.skipped:
        stats.add_skip(skip)
    stats.chunks_made += part.n_chunks
    stats.add_time("read", part.read_seconds)
    stats.add_time("chunk", part.chunk_seconds)
    if part.finished > part.started:
        stats.add_span("parse", part.started, part.finished)


def _account_embed(stats: IndexStats, res: EmbedResult) -> None:
    """Add one embedded batch to the run's stats."""
    n = len(res.batch.chunks)
    stats.batches += 1
    stats.chunks_embedded += n
    stats.chunks_with_errors += sum(c.has_error for c in res.batch.chunks)
    stats.add_time("embed", res.finished - res.started)
    stats.add_span("embed", res.started, res.finished)
    stats.embed_workers[res.worker] = stats.embed_workers.get(res.worker, 0) + 1


def _account_batch(stats: IndexStats, batch: EmbeddedBatch) -> None:
    """Add one batch of a keyword-only run (written without embedding) to the run's stats."""
    stats.batches += 1
    stats.chunks_with_errors += sum(c.has_error for c in batch.chunks)


def _same(old: IndexedFile, new: IndexedFile) -> IndexedFile:
    """The manifest record of a file whose content did not change (new size/mtime)."""
    return IndexedFile(new.path, new.size, new.mtime, new.sha256, old.chunk_ids)


# --------------------------------------------------------------------------- sequential


def run_sequential(
    plan: RunPlan,
    config: IndexConfig,
    embedder: Embedder,
    writer: IndexWriter,
    progress: ProgressCallback | None = None,
) -> IndexStats:
    """The sequential mode: read, chunk, embed and write each file in turn (keyword-only:
    read, chunk and write)."""
    keyword_only = config.vectors == "none"
    stats = plan.stats
    stats.cluster = IN_PROCESS
    stats.writer_worker = IN_PROCESS
    fs = plan.root.fs
    if progress is not None:
        progress(stats, "")  # the run has started: totals are known
    for ref in plan.todo:
        old = plan.known.get(ref.path)
        part = read_chunk_partition(
            [ref],
            fs,
            embedder,
            {old.path: old.sha256} if old else None,
            max_file_size=config.max_file_size,
            include_sensitive=config.include_sensitive,
        )
        _account_partition(stats, part)
        writer.touch_files([_same(plan.known[f.path], f) for f in part.unchanged])
        for f in part.files:
            if part.chunks and keyword_only:
                batch = keyword_batch(part.chunks)
                _account_batch(stats, batch)
            elif part.chunks:
                res = embed_segments(embedder, [(part, 0, len(part.chunks))])
                _account_embed(stats, res)
                batch = res.batch
            else:
                batch = EmbeddedBatch((), None if keyword_only else _no_vectors(embedder))
            start = time.time()
            with _timed(stats, "write"):
                stats.chunks += writer.write_file(f, batch)
            stats.add_span("write", start, time.time())
            stats.files_indexed += 1
        if progress is not None:
            progress(stats, ref.path)
    with _timed(stats, "write"):
        writer.remove_files(plan.removed)
    return stats


def _no_vectors(embedder: Embedder) -> Any:
    """An empty vector array of the embedder's width."""
    import numpy as np

    return np.zeros((0, embedder.dimension), dtype=np.float32)


# --------------------------------------------------------------------------- clusters


@contextmanager
def dask_client(
    config: IndexConfig, client: Client | None = None, *, dashboard: bool = False
) -> Iterator[tuple[Client, str]]:
    """The client a cluster run uses, and a label saying which cluster it is.

    ``client`` (a user's own) is used as it is and left open; ``config.scheduler``
    connects to a running scheduler; otherwise a LocalCluster of worker processes is
    started on 127.0.0.1 and stopped afterwards (its dashboard only with
    ``dashboard``, bound to 127.0.0.1).

    Raises
    ------
    ClusterError
        The scheduler cannot be reached or the cluster cannot start.
    """
    if client is not None:
        yield client, f"client of {client.scheduler.address}"
        return
    from distributed import Client, LocalCluster

    if config.scheduler:
        _check_scheduler(config.scheduler, SCHEDULER_TIMEOUT)
        try:
            own = Client(config.scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterError(f"cannot reach the Dask scheduler at {config.scheduler}: {e}") from e
        try:
            yield own, f"scheduler {own.scheduler.address}"
        finally:
            own.close()
        return
    cores = _usable_cores()
    n_workers = config.n_workers or local_workers(cores)
    try:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=max(2, cores // n_workers),
            processes=True,
            # one embedding task at a time per worker, using the worker's share of the
            # cores; the worker's other threads read and chunk meanwhile
            resources={EMBED_RESOURCE: 1},
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if dashboard else None,
            # the scheduler's HTTP server (health, metrics) runs even without the
            # dashboard, on :8787 by default: a random loopback port never collides
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
            preload=[__name__],  # runs dask_setup() below in each worker process
        )
    except Exception as e:
        hint = ""
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) and "__main__" not in str(getattr(main, "__spec__", "")):
            hint = (
                ". Worker processes import your script again: call rcm_dask.index() under "
                '`if __name__ == "__main__":`'
            )
        raise ClusterError(f"cannot start a local Dask cluster: {e}{hint}") from e
    try:
        own = Client(cluster)
        try:
            yield own, f"LocalCluster({n_workers} worker processes)"
        finally:
            own.close()
    finally:
        cluster.close()


SCHEDULER_TIMEOUT = 10.0
"""Seconds a run waits for a Dask scheduler to answer before it gives up."""


def _check_scheduler(address: str, timeout: float) -> None:
    """Raise :class:`ClusterError` unless a Dask scheduler answers at ``address`` in time.

    ``Client(address, timeout=...)`` waits for ever on a port that accepts connections
    but does not speak Dask (an HTTP server, the dashboard's port): its timeout covers
    the connection, not the handshake. This speaks the handshake under a hard deadline,
    in a thread of its own so that it works under a running event loop (Jupyter).
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect
    from distributed.comm.addressing import get_address_host_port, parse_address
    from distributed.security import Security

    usage = "give the scheduler's address as tcp://HOST:PORT (its port is 8786 by default)"
    try:
        if parse_address(address)[0] != "inproc":  # in-process schedulers have no port
            get_address_host_port(address)
    except (ValueError, TypeError) as e:
        raise ClusterError(f"{address!r} is not a Dask scheduler address ({e}): {usage}") from e

    # past distributed's own timeout (refused, no route: it says why), the handshake hangs
    deadline = timeout + 2

    # the TLS settings a Client would use (dask's config), for tls:// schedulers
    args = Security().get_connection_args("client")

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout, **args), deadline)
        await comm.close()

    pool = ThreadPoolExecutor(1, thread_name_prefix="rcm-scheduler-check")
    try:
        pool.submit(asyncio.run, handshake()).result()
    except (asyncio.TimeoutError, TimeoutError) as e:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address}: nothing answered as a Dask "
            f"scheduler within {deadline:.0f} s. Is that the scheduler's port (8786 by "
            "default), not its dashboard or another service?"
        ) from e
    except Exception as e:  # refused, unknown host, TLS without certificates...
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address}: {e}. Is it running, and is that "
            "its address?"
        ) from e
    finally:
        pool.shutdown(wait=False)


def dask_setup(worker: Any) -> None:
    """Preload of the run's own LocalCluster workers: they ignore Ctrl-C.

    A terminal sends SIGINT to the whole process group; the driver handles it (cancels
    the tasks, lets the writer commit, stops the cluster), and workers that died of it
    first would lose the writer's last commit and print tracebacks.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def local_workers(cores: int) -> int:
    """Worker processes of the run's LocalCluster on a machine with ``cores`` cores.

    One process per 4 cores, at least one. Each embeds one batch at a time with its
    share of the cores as torch threads while its other threads read and chunk.
    Measured on 2 cores (all-MiniLM-L6-v2, fp32, passes of 16): one process with 2
    torch threads and two processes with 1 each embed at the same rate in a plain loop
    (59 chunks/s), and the pipeline ran at about the same speed both ways, but two
    processes each holding a model peaked at 1,464 MB against 788 MB for one.
    """
    return max(1, cores // 4)


def _usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class _Cluster:
    """What the run needs to know about the cluster's workers."""

    workers: dict[str, dict[str, Any]]
    """Scheduler's worker info by address."""
    embed_workers: list[str]
    """Addresses that run embedding (those with the GPU resource, if any has it)."""
    resources: dict[str, float] | None
    """Resource restriction of embedding tasks."""
    threads_by_host: dict[str, int]
    """Torch threads per embedding task, by host."""
    slots: int
    """Embedding tasks that can run at once."""

    @classmethod
    def inspect(cls, client: Client, torch_threads: int | None) -> _Cluster:
        """Look at the cluster's workers and decide where embedding runs."""
        workers = dict(client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise ClusterError(f"the Dask cluster at {client.scheduler.address} has no workers")
        resource = None
        for name in (GPU_RESOURCE, EMBED_RESOURCE):
            if any((w.get("resources") or {}).get(name) for w in workers.values()):
                resource = name
                break

        def slots_of(w: dict[str, Any]) -> int:
            if resource is None:
                return int(w.get("nthreads") or 1)
            return int((w.get("resources") or {}).get(resource) or 0)

        embed = [a for a, w in workers.items() if slots_of(w) > 0]
        per_host: dict[str, int] = {}
        for addr in embed:
            per_host[_host_of(addr)] = per_host.get(_host_of(addr), 0) + slots_of(workers[addr])
        cores = _usable_cores()
        threads = {
            host: torch_threads or max(1, cores // slots) for host, slots in per_host.items()
        }
        # a remote host's cores are unknown here: one thread per slot there is safe
        threads["*"] = torch_threads or 1
        return cls(
            workers=workers,
            embed_workers=embed,
            resources={resource: 1} if resource else None,
            threads_by_host=threads,
            slots=sum(per_host.values()),
        )

    def writer_worker(self) -> str:
        """Where the writer actor lives: a worker on this host (the index folder is
        here), preferably one that does not embed."""
        here = {"127.0.0.1", "localhost", socket.gethostname()}
        try:
            here.add(socket.gethostbyname(socket.gethostname()))
        except OSError:
            pass
        local = [a for a in self.workers if _host_of(a) in here]
        pool = local or list(self.workers)
        plain = [a for a in pool if a not in self.embed_workers]
        return min(plain or pool)


# --------------------------------------------------------------------------- cluster modes


class _DaskRun:
    """One run of the ``parallel`` or ``pipeline`` mode on a Dask client.

    Its tasks are grouped in Dask spans (:func:`distributed.span`), so that the
    dashboard's Fine Performance Metrics page and the performance report split the run's
    time by stage: one run span :attr:`RUN_SPAN` holding one child span per stage of
    :attr:`STAGE_SPANS`.
    """

    RUN_SPAN = ("rcm-dask", "index")
    """Tags of the span that holds a whole run (a ``rcm-dask`` span, its ``index`` child)."""
    STAGE_SPANS = ("read-chunk", "embed", "write")
    """Child spans of the run span: the read+chunk tasks, the embedding (keyword-only:
    gathering) tasks, and the writer actor with its busy seconds."""

    def __init__(
        self,
        plan: RunPlan,
        config: IndexConfig,
        embedder: Embedder,
        client: Client,
        identity: dict[str, Any],
        force: bool,
        progress: ProgressCallback | None,
    ) -> None:
        self.plan = plan
        self.config = config
        self.embedder = embedder
        self.client = client
        self.identity = identity
        self.force = force
        self.progress = progress
        self.stats = plan.stats
        self.cluster = _Cluster.inspect(client, config.torch_threads)
        self.keyword_only = config.vectors == "none"
        self.batch_size = config.batch_size
        self.max_batches = config.max_inflight_batches or max(4, 2 * self.cluster.slots)
        # read+chunk tasks use the threads that embedding leaves free (all of them when
        # nothing is embedded)
        threads = sum(int(w.get("nthreads") or 1) for w in self.cluster.workers.values())
        self.max_parse = max(1, threads - (0 if self.keyword_only else self.cluster.slots))
        self.futures: set[Future] = set()
        # every future of the run that is still referenced anywhere (a traceback's
        # frames included): what an error must cancel so that no task is orphaned
        self.alive: weakref.WeakSet[Future] = weakref.WeakSet()
        self.writer: Any = None
        self.writer_future: Future | None = None
        self.spans: dict[str, dict[str, Any]] = {}
        """The ``span`` annotation of each stage, by stage name (set while :meth:`run` runs)."""

    # -- spans -------------------------------------------------------------------------
    @contextmanager
    def open_spans(self) -> Iterator[None]:
        """Open the run span and, once each, the stage spans inside it.

        Each stage span is opened once and its annotation kept, so that every task of a
        stage, whenever it is submitted, lands in the same span (closing and reopening
        ``span("embed")`` would make a new span each time).
        """
        import dask
        from distributed import span

        with span(*self.RUN_SPAN):
            for stage in self.STAGE_SPANS:
                with span(stage):
                    self.spans[stage] = dask.get_annotations()["span"]
            try:
                yield
            finally:
                self.spans.clear()

    def in_span(self, stage: str) -> Any:
        """A context in which submitted tasks belong to ``stage``'s span."""
        import dask

        return dask.annotate(span=self.spans[stage]) if stage in self.spans else ExitStack()

    def book_write_seconds(self, seconds: float) -> None:
        """Book the writer's busy seconds in the ``write`` span, on the writer's worker.

        Calls to an actor are not tasks, so Dask meters none of the writer's work; the
        writer times it itself, and this adds that time to the worker's metrics as
        activity ``write`` of task prefix ``IndexWriter``, which the worker's next
        heartbeat carries to the span.
        """
        if "write" not in self.spans or not self.stats.writer_worker:
            return
        span_id = self.spans["write"]["ids"][-1]
        # the scheduler fails a heartbeat that names a span it does not know (one without
        # spans, or whose IndexWriter task group, still held by another run, kept its span)
        if not self.client.run_on_scheduler(_DaskRun._has_span, span_id):
            return
        name = ("execute", span_id, "IndexWriter", "write", "seconds")
        self.client.run(
            _DaskRun._digest_metric, name, seconds, workers=[self.stats.writer_worker]
        )

    @staticmethod
    def _has_span(span_id: str, dask_scheduler: Any = None) -> bool:
        """Whether the scheduler knows span ``span_id`` (run there by ``run_on_scheduler``)."""
        spans = dask_scheduler.extensions.get("spans")
        return spans is not None and span_id in spans.spans

    @staticmethod
    def _digest_metric(name: tuple[str, ...], value: float, dask_worker: Any = None) -> None:
        """Add ``value`` to a worker's metric ``name`` (run on the worker by ``client.run``)."""
        dask_worker.digest_metric(name, value)

    # -- building the graph ----------------------------------------------------------
    def build_partitions(self) -> list[Any]:
        """The read+chunk stage as a Dask bag over the listing: one delayed per group."""
        import dask.bag as db

        groups = group_files(self.plan.todo, self.config.partition_bytes)
        known = self.plan.known
        elements = [
            (g, {r.path: known[r.path].sha256 for r in g if r.path in known}) for g in groups
        ]
        # a collection's tasks take the span that is open when its graph is built
        with self.in_span("read-chunk"):
            bag = db.from_sequence(elements, partition_size=1).map_partitions(
                _read_chunk_groups,
                self.plan.root.fs,
                self.embedder,
                self.config.max_file_size,
                self.config.include_sensitive,
            )
            return list(bag.to_delayed())

    def submit_parse(self, part: Any) -> tuple[Future, Future]:
        """Start one read+chunk partition; returns (partition, summary) futures."""
        with self.in_span("read-chunk"):
            fut = self.client.compute(part)
            summary = self.client.submit(_summary, fut, pure=False)
        self.futures.update((fut, summary))
        self.alive.update((fut, summary))
        return fut, summary

    def submit_batch(self, segments: list[tuple[Future, int, int]]) -> Future:
        """Start one batch: an embedding task, annotated at submission so that the GPU
        restriction survives (graph optimisation drops ``dask.annotate``, dask#7036);
        in a keyword-only run a :func:`gather_segments` task (any worker: no model, no
        resource)."""
        fut: Future
        with self.in_span("embed"):
            if self.keyword_only:
                fut = self.client.submit(gather_segments, segments, pure=False)
            else:
                fut = self.client.submit(
                    embed_segments,
                    self.embedder,
                    segments,
                    self.cluster.threads_by_host,
                    resources=self.cluster.resources,
                    pure=False,
                )
        self.futures.add(fut)
        self.alive.add(fut)
        return fut

    # -- the writer actor ------------------------------------------------------------
    def start_writer(self) -> None:
        """Create the one index writer, as an actor on :meth:`_Cluster.writer_worker`."""
        address = self.cluster.writer_worker()
        with self.in_span("write"):
            self.writer_future = self.client.submit(
                IndexWriter,
                str(self.plan.index_dir),
                self.identity,
                qdrant_url=self.config.qdrant_url,
                qdrant_api_key=self.config.qdrant_api_key,
                force=self.force,
                commit_every=self.config.commit_every,
                commit_seconds=self.config.commit_seconds,
                actor=True,
                workers=[address],
                allow_other_workers=False,
                pure=False,
            )
        self.writer = self.writer_future.result()
        self.stats.writer_worker = address

    def call_writer(self, method: str, *args: Any) -> Any:
        """Call the writer actor and wait; its worker's death is an :class:`IndexWriteError`.

        The driver's waiting time is kept as the ``writer-calls`` stage: what feeding the
        writer costs the driver loop, round trips included (the embedding workers go on
        meanwhile).
        """
        start = time.perf_counter()
        try:
            return getattr(self.writer, method)(*args).result()
        except RcmError:
            raise
        except Exception as e:
            if "Actor" in str(e) or type(e).__name__ in ("CommClosedError", "KilledWorker"):
                raise IndexWriteError(
                    f"the index writer on {self.stats.writer_worker} was lost ({e}); the "
                    f"index at {self.plan.index_dir} stays at its last commit - re-run to "
                    "finish"
                ) from e
            raise
        finally:
            self.stats.add_time("writer-calls", time.perf_counter() - start)

    # -- driving -----------------------------------------------------------------------
    def run(self, pipelined: bool) -> IndexStats:
        """Run the whole dataflow; on any error cancel everything in flight and re-raise."""
        with self.open_spans():
            try:
                self.start_writer()
                parts = self.build_partitions()
                if pipelined:
                    self._pipeline(parts)
                else:
                    self._stage_by_stage(parts)
                self.call_writer("remove_files", self.plan.removed)
                self.call_writer("commit")
                report = self.call_writer("report")
                self.stats.chunks_written = report["chunks_written"]
                self.stats.commits = report["commits"]
                self.stats.add_time("write", report["write_seconds"])
                for start, end in report["spans"]:
                    self.stats.add_span("write", start, end)
                self.call_writer("close", False)
                self.writer = None
                self.book_write_seconds(report["write_seconds"])
            finally:
                self._cancel()
        return self.stats

    def _cancel(self) -> None:
        """Cancel every task of the run still referenced; the writer commits what it
        wrote whole (safe at any point: see :mod:`rcm_dask.writer`) and closes."""
        leftover = list(self.alive)
        if leftover:
            self.client.cancel(leftover, force=True)
        self.futures.clear()
        if self.writer is not None:
            try:
                self.writer.close(True).result(timeout=60)
            except Exception:  # the writer may be what failed; its last commit stands
                pass
            self.writer = None
        if self.writer_future is not None:
            # cancel, not just release: the Actor object keeps a Future of its own for
            # the same key, which would keep the actor alive until garbage collection
            self.client.cancel([self.writer_future], force=True)
            self.writer_future = None

    def _on_summary(self, summary: ParsedPartition) -> None:
        """A partition is chunked: tell the writer which files to expect, count it."""
        _account_partition(self.stats, summary)
        touched = [_same(self.plan.known[f.path], f) for f in summary.unchanged]
        if touched:
            self.call_writer("touch_files", touched)
        if summary.files:
            self.call_writer("expect_files", list(summary.files))
        self.stats.files_indexed += len(summary.files)
        if self.progress is not None:
            last = (summary.files or summary.unchanged or summary.skipped or (None,))[-1]
            self.progress(self.stats, getattr(last, "path", ""))

    def _on_batch(self, fut: Future) -> None:
        """A batch is embedded (keyword-only: gathered): hand it to the writer."""
        res: EmbedResult | EmbeddedBatch = fut.result()
        self.futures.discard(fut)
        if isinstance(res, EmbedResult):
            _account_embed(self.stats, res)
            batch = res.batch
        else:
            _account_batch(self.stats, res)
            batch = res
        written = self.call_writer("write_batch", batch)
        self.stats.chunks += written
        if self.progress is not None:
            self.progress(self.stats, "")

    def _take_batch(
        self, pending: deque[list[Any]], final: bool
    ) -> list[tuple[Future, int, int]] | None:
        """Cut the next batch from partitions with unassigned chunks (``[future, next, n]``)."""
        available = sum(n - start for _, start, n in pending)
        if available == 0 or (available < self.batch_size and not final):
            return None
        want = self.batch_size
        segments: list[tuple[Future, int, int]] = []
        while want and pending:
            entry = pending[0]
            fut, start, n = entry
            take = min(want, n - start)
            segments.append((fut, start, start + take))
            want -= take
            entry[1] = start + take
            if entry[1] == n:
                pending.popleft()
        return segments

    def _wait(self, futures: set[Future]) -> set[Future]:
        """Wait until one of ``futures`` finishes; check the cluster every few seconds."""
        from distributed import wait

        while True:
            try:
                done, _ = wait(list(futures), timeout=5, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            if done:
                return set(done)
            self._check_cluster()

    def _check_cluster(self) -> None:
        """Fail, rather than wait for ever, when no worker can run embedding any more."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        # a keyword-only run's batch tasks run on any worker
        needed = None if self.keyword_only else next(iter(self.cluster.resources or {}), None)
        if needed and not any((w.get("resources") or {}).get(needed) for w in workers.values()):
            raise ClusterError(
                f"no worker offers the {needed} resource any more; embedding cannot go "
                f"on. The index at {self.plan.index_dir} stays at its last commit."
            )
        if not workers:
            raise ClusterError("the Dask cluster lost all its workers")

    def _pipeline(self, parts: list[Any]) -> None:
        """Overlapping stages with bounded work in flight at each."""
        todo = deque(parts)
        parsing: dict[Future, Future] = {}  # summary future -> partition future
        embedding: set[Future] = set()
        pending: deque[list[Any]] = deque()  # [partition future, next chunk, chunks]
        max_pending = self.batch_size * self.max_batches
        if self.progress is not None:
            self.progress(self.stats, "")
        while True:
            unassigned = sum(n - start for _, start, n in pending)
            while todo and len(parsing) < self.max_parse and unassigned < max_pending:
                fut, summary = self.submit_parse(todo.popleft())
                parsing[summary] = fut
            while len(embedding) < self.max_batches:
                segments = self._take_batch(pending, final=not todo and not parsing)
                if segments is None:
                    break
                embedding.add(self.submit_batch(segments))
            if not parsing and not embedding:
                if todo:
                    continue
                break
            for fut in self._wait(set(parsing) | embedding):
                if fut in parsing:
                    part = parsing.pop(fut)
                    summary = fut.result()
                    self.futures.discard(fut)
                    self._on_summary(summary)
                    if summary.n_chunks:
                        pending.append([part, 0, summary.n_chunks])
                    self.futures.discard(part)  # embedding tasks hold it from here
                else:
                    embedding.discard(fut)
                    self._on_batch(fut)

    def _stage_by_stage(self, parts: list[Any]) -> None:
        """Read+chunk everything, then embed everything, then write everything."""
        if self.progress is not None:
            self.progress(self.stats, "")
        started = [self.submit_parse(p) for p in parts]
        waiting = {s for _, s in started}
        while waiting:
            done = self._wait(waiting)
            for fut in done:
                if fut.status == "error":
                    fut.result()
            waiting -= done
        pending: deque[list[Any]] = deque()
        for part, summary_fut in started:
            summary = summary_fut.result()
            self._on_summary(summary)
            if summary.n_chunks:
                pending.append([part, 0, summary.n_chunks])
        batches = []
        while (segments := self._take_batch(pending, final=True)) is not None:
            batches.append(self.submit_batch(segments))
        waiting = set(batches)
        while waiting:  # all of them, failing on the first error
            done = self._wait(waiting)
            for fut in done:
                if fut.status == "error":
                    fut.result()
            waiting -= done
        for part, summary_fut in started:
            self.futures.discard(part)
            self.futures.discard(summary_fut)
        started.clear()
        for fut in batches:
            self._on_batch(fut)


# --------------------------------------------------------------------------- entry point


def index(
    path: str,
    config: IndexConfig | None = None,
    *,
    mode: str | None = None,
    client: Client | None = None,
    force: bool = False,
    progress: ProgressCallback | bool | None = None,
    embedder: Embedder | None = None,
    dashboard: bool = False,
    performance_report: str | os.PathLike[str] | None = None,
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
    **overrides: Any,
) -> IndexStats:
    """Index a Rust codebase (local path or fsspec URL) and return what the run did.

    A re-run reads only files whose size or modification time changed, re-indexes
    those whose content changed, and removes files that left the codebase. Files
    that cannot be read keep what the index already held for them. When nothing
    changed, no cluster is started and no model is loaded.

    A damaged index is repaired (see :func:`~rcm_dask.writer.check_stores`): files a
    store lacks are re-added, an unreadable manifest or ``identity.json`` means a
    rebuild; ``stats.repairs`` says what was done.

    The run holds the index folder's lock throughout, commits both stores every
    ``commit_every`` chunks or ``commit_seconds``, and on an error or Ctrl-C commits
    what it wrote whole before re-raising: a run stopped at any point (even killed)
    leaves an index that searches, and the next run converges to what a clean run
    would have built.

    Parameters
    ----------
    path
        Folder of the codebase: ``./crate``, ``file:///abs``, ``memory://x``, ``s3://b/p``.
    config
        Settings; default from ``RCM_*`` variables.
    mode
        ``sequential``, ``parallel``, ``pipeline`` or ``auto`` (default: ``config.mode``).
    client
        A ``dask.distributed.Client`` to run on; default: ``config.scheduler``, else a
        LocalCluster started and stopped by the run.
    force
        Rebuild the index from scratch (also when built with another model).
    progress
        ``True``: show the run's progress (a rich bar on a terminal, a live line in
        Jupyter, a line every 10 s in a log; see :mod:`rcm_dask.progress`). A
        callable: called as work completes with the running stats and a file path.
    embedder
        A ready :class:`~rcm_dask.embedding.Embedder` (or any picklable object with
        its interface); default: one built from ``config``.
    dashboard
        Serve the run's LocalCluster dashboard on 127.0.0.1 (its link is in
        ``stats.dashboard_link`` from the first progress call on).
    performance_report
        Write Dask's performance report of the run to this HTML file.
    on_wait
        Called once, with the holder's note (pid, host, since, command), when another
        run holds the index and ``wait`` (a config field) lets this one queue.
    **overrides
        Any :class:`~rcm_dask.config.IndexConfig` field (``index_dir="idx"``,
        ``batch_size=64``, ``n_workers=2``, ``vectors="none"`` for a keyword-only
        index...); ``None`` values are ignored.

    Returns
    -------
    IndexStats
        Files indexed / unchanged / removed / skipped by reason, chunks, per-stage
        busy seconds, spans and overlaps, where embedding and writing ran.

    Raises
    ------
    SourceError
        The path is missing, not a folder, or holds no ``.rs`` files.
    IndexIdentityError
        The index was built with another model or chunker, or with the other
        ``vectors`` setting; use ``force=True``.
    IndexLockedError
        Another run is writing this index (and ``wait`` ran out).
    IndexDamagedError
        The embedded vector shard cannot be opened: it is never thrown away without
        ``force=True``.
    ModelError
        The model folder lacks a tokenizer or weights, or a weight file is damaged:
        checked before the index records the model, so the index is left as it was.
    ClusterError
        The Dask cluster cannot run the work (or ``scheduler`` is no Dask scheduler's
        address, or none answers there within :data:`SCHEDULER_TIMEOUT`).

    Examples
    --------
    >>> import rcm_dask
    >>> stats = rcm_dask.index("library/alloc", mode="pipeline")   # doctest: +SKIP
    >>> stats.files_indexed, stats.chunks                          # doctest: +SKIP
    (106, 6791)
    >>> stats = rcm_dask.index("library/alloc", index_dir="idx", progress=True)  # doctest: +SKIP
    >>> print(stats)                                               # doctest: +SKIP
    Indexed /usr/src/rustc-1.63.0/library/alloc -> idx (pipeline mode)
    ...
    >>> stats = rcm_dask.index("huge-repo", vectors="none")       # doctest: +SKIP
    >>> stats.vectors, stats.chunks_embedded                       # doctest: +SKIP
    ('none', 0)
    """
    if isinstance(progress, bool):
        if progress:
            from .progress import ProgressDisplay

            with ProgressDisplay(dashboard=dashboard) as show:
                return index(
                    path,
                    config,
                    mode=mode,
                    client=client,
                    force=force,
                    progress=show,
                    embedder=embedder,
                    dashboard=dashboard,
                    performance_report=performance_report,
                    on_wait=on_wait,
                    **overrides,
                )
        progress = None
    config = config or IndexConfig.from_env()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if mode is not None:
        changes["mode"] = mode
    if changes:
        try:
            config = config.replace(**changes)
        except TypeError as e:
            raise ConfigError(str(e)) from e
    started = time.perf_counter()
    root = open_root(path)
    discover_start = time.perf_counter()
    discovery = discover_sources(
        root,
        respect_gitignore=config.respect_gitignore,
        include_hidden=config.include_hidden,
        include_sensitive=config.include_sensitive,
        exclude=config.exclude,
    )
    discover_seconds = time.perf_counter() - discover_start
    if not discovery.files:
        why = ""
        if discovery.skipped:
            counts: dict[str, int] = {}
            for s in discovery.skipped:
                counts[s.reason] = counts.get(s.reason, 0) + 1
            why = " (skipped: " + ", ".join(f"{n} {r}" for r, n in sorted(counts.items())) + ")"
        raise SourceError(f"No .rs files found under {path}{why}")
    embedder = embedder or Embedder(
        config.model,
        device=config.device,
        batch_size=config.batch_size,
        cpu_batch_size=config.cpu_batch_size,
        max_tokens=config.max_tokens,
        torch_threads=config.torch_threads,
        precision=config.precision,
    )
    index_dir = (
        Path(config.index_dir).expanduser() if config.index_dir else default_index_dir(root.url)
    ).absolute()
    identity = run_identity(root, embedder, config.vectors)
    # One run per index: taken before anything is read from or written to the folder
    with (
        _reporting_interrupt(index_dir),
        disk_full_errors(index_dir, "write the index"),
        IndexLock(index_dir, wait=config.wait, on_wait=on_wait),
    ):
        # an unusable identity.json or manifest leaves nothing to trust: rebuild
        damage = "" if force else index_damage(index_dir)
        force = force or bool(damage)
        _, stored = check_identity(index_dir, identity, config.qdrant_url, force)
        if isinstance(embedder, Embedder):
            # a broken model folder fails here, before an index records it as its identity
            # (after the identity check: a run the index refuses anyway says why first)
            embedder.check_files(weights=config.vectors != "none")
        known, pending = ({}, set()) if force else read_known(index_dir)
        repair = StoreRepair()
        # (stores without a manifest are unaccounted for: the writer clears them)
        if stored is not None and not force and (index_dir / MANIFEST_FILE).exists():
            repair = check_stores(index_dir, stored, known, pending, config.qdrant_api_key)
        plan = plan_run(root, config, index_dir, known, discovery, pending, repair.paths)
        plan.stats.repairs = [f"{damage}: rebuilt from scratch"] if damage else []
        plan.stats.repairs += repair.notes
        plan.stats.files_repaired += repair.restored
        plan.stats.add_time("discover", discover_seconds)
        if plan.todo:  # refuse now, not half-way through: a full disk kills the shard
            keeps = identity.get("vectors") != "none" and not config.qdrant_url
            dims = int(identity["dimensions"]) if keeps else None
            require_run_space(index_dir, sum(r.size for r in plan.todo), dims, len(plan.todo))
        # deleted chunks go on counting in BM25's statistics: purged after a crash or a
        # repair (scores equal a clean build's), after edits once they add up; a forced
        # run starts from empty stores
        rewrite_bm25 = not force and plan_bm25_purge(
            index_dir,
            known,
            [r.path for r in plan.todo] + list(plan.removed),
            redone=bool(pending or repair.paths or repair.restored),
        )
        chosen = choose_mode(config, plan, client is not None)
        plan.stats.mode = chosen
        if not (plan.todo or plan.removed or force):
            # Nothing changed: no writer, no cluster, no model.
            stats = plan.stats
            stats.cluster = IN_PROCESS
            stats.seconds = time.perf_counter() - started
            _save_last_run(index_dir, stats)
        elif chosen == "sequential" or not plan.todo:
            if performance_report:
                raise ConfigError(
                    "--performance-report needs a cluster mode (parallel or pipeline)"
                )
            with IndexWriter(
                index_dir,
                identity,
                qdrant_url=config.qdrant_url,
                qdrant_api_key=config.qdrant_api_key,
                force=force,
                commit_every=config.commit_every,
                commit_seconds=config.commit_seconds,
            ) as writer:
                stats = run_sequential(plan, config, embedder, writer, progress)
                with _timed(stats, "write"):
                    writer.commit()
                stats.chunks_written = writer.chunks_written
                stats.commits = writer.commits
                stats.seconds = time.perf_counter() - started
                writer.manifest.set_meta("last_run", stats.to_dict())
        else:
            with ExitStack() as stack:
                dask_client_, label = stack.enter_context(
                    dask_client(config, client, dashboard=dashboard)
                )
                plan.stats.cluster = label
                plan.stats.dashboard_link = _dashboard_link(dask_client_) if dashboard else ""
                if performance_report:
                    from distributed import performance_report as perf

                    stack.enter_context(perf(filename=str(performance_report)))
                run = _DaskRun(plan, config, embedder, dask_client_, identity, force, progress)
                stats = run.run(pipelined=chosen == "pipeline")
            stats.seconds = time.perf_counter() - started
            _save_last_run(index_dir, stats)
        with _timed(stats, "write"):
            purge_bm25_deletes(index_dir, rewrite_bm25)
    stats.seconds = time.perf_counter() - started
    return stats


@contextmanager
def _reporting_interrupt(index_dir: Path) -> Iterator[None]:
    """Turn Ctrl-C into :class:`IndexInterrupted`, saying what the index kept."""
    try:
        yield
    except KeyboardInterrupt as e:
        if isinstance(e, IndexInterrupted):
            raise
        raise _interrupted(index_dir) from e


def _interrupted(index_dir: Path) -> IndexInterrupted:
    """What Ctrl-C left: the committed counts, read back from the manifest."""
    files = chunks = pending = 0
    if (index_dir / MANIFEST_FILE).exists():
        try:
            manifest = Manifest(index_dir, readonly=True)
            try:
                files, chunks = manifest.counts()
                pending = len(manifest.pending())
            finally:
                manifest.close()
        except Exception:  # the counts are a courtesy; the interrupt is what matters
            pass
    rest = f"; {pending} files were half-written and will be redone" if pending else ""
    return IndexInterrupted(
        f"Interrupted. The index at {index_dir} keeps {files} files ({chunks} chunks) "
        f"committed{rest}. Run the same command again to finish: only what is missing "
        "is read.",
        files,
        chunks,
        pending,
    )


def _dashboard_link(client: Client) -> str:
    """The client's dashboard link, or "" when its cluster serves none."""
    try:
        return str(client.dashboard_link or "")
    except Exception:  # no dashboard (bokeh missing or disabled)
        return ""


def _save_last_run(index_dir: Path, stats: IndexStats) -> None:
    """Keep the run's stats in the manifest, for ``status``."""
    manifest = Manifest(index_dir)
    try:
        manifest.set_meta("last_run", stats.to_dict())
    finally:
        manifest.close()


@contextmanager
def _timed(stats: IndexStats, stage: str) -> Iterator[None]:
    """Add the block's wall time to a stage's busy seconds."""
    start = time.perf_counter()
    try:
        yield
    finally:
        stats.add_time(stage, time.perf_counter() - start)
