"""Indexing modes: how the stages are scheduled, and :func:`index`, the run from start to end.

Three modes, one set of stage functions (:mod:`rcm_dask.stages`), the same index:

``sequential``
    One process, file by file (read, chunk, embed that file's chunks, write): the
    baseline and the debugging mode; no cluster (:func:`run_sequential`).
``parallel``
    Stage after stage on a Dask cluster: every file read and chunked in worker
    processes, then every cross-file batch embedded, then every batch written.
    Simple to reason about; holds all chunks and vectors in cluster memory at once.
``pipeline``
    The stages overlap on a Dask cluster: while later files are read and chunked,
    earlier batches are embedded and earlier vectors written. Work in flight is
    bounded at every stage, so memory stays flat however large the codebase.

The cluster modes run :class:`rcm_dask.dataflow.DaskRun` (the only builder of Dask
graphs) on the client of :func:`rcm_dask.cluster.dask_client`. A run is planned by
:mod:`rcm_dask.planning` (the dry run makes the same plan), holds the index folder's
lock, repairs what :mod:`rcm_dask.integrity` finds, and ends one way whatever the
mode: the writer's report booked, deleted BM25 chunks purged when due, the run's
stats saved as the index's ``last_run``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cluster import dask_client
from .config import IndexConfig
from .dataflow import DaskRun
from .embedding import Embedder
from .errors import ConfigError, IndexInterrupted
from .identity import check_identity, dimensions_repair, run_identity
from .integrity import (
    StoreRepair,
    check_stores,
    complete_file_records,
    index_damage,
    plan_bm25_purge,
    purge_bm25_deletes,
)
from .planning import RunPlan, choose_mode, plan_run, read_known, request_run
from .records import EmbeddedBatch, IndexStats, ProgressCallback
from .sources import SourceRoot
from .stages import IN_PROCESS, embed_segments, keyword_batch, read_chunk_partition
from .stores.lock import HOLDER_FILE, LOCK_FILE, IndexLock
from .stores.manifest import MANIFEST_FILE, Manifest, read_identity, write_identity
from .stores.space import disk_full_errors, require_run_space
from .stores.swap import clear_leftovers, exchange_dirs, rebuild_dir, remove_tree
from .writer import IndexWriter, writer_options

if TYPE_CHECKING:
    from distributed import Client


def run_sequential(
    plan: RunPlan,
    config: IndexConfig,
    embedder: Embedder,
    writer: IndexWriter,
    progress: ProgressCallback | None = None,
) -> IndexStats:
    """The sequential mode: read, chunk, embed and write each file in turn (keyword-only:
    read, chunk and write), then remove what left the codebase and commit."""
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
        stats.add_partition(part)
        writer.touch_files(plan.refreshed(part.unchanged))
        withheld = plan.withheld(part.skipped)
        writer.remove_files(withheld)
        stats.files_removed += len(withheld)
        for f in part.files:
            if part.chunks and keyword_only:
                batch = keyword_batch(part.chunks)
                stats.add_batch(batch)
            elif part.chunks:
                res = embed_segments(embedder, [(part, 0, len(part.chunks))])
                stats.add_embedded(res)
                batch = res.batch
            else:
                batch = EmbeddedBatch((), None if keyword_only else _no_vectors(embedder))
            stats.chunks += writer.write_file(f, batch)
            stats.files_indexed += 1
        if progress is not None:
            progress(stats, ref.path)
    writer.remove_files(plan.removed)
    writer.commit()
    stats.add_writes(writer.report())
    return stats


def _no_vectors(embedder: Embedder) -> Any:
    """An empty vector array of the embedder's width."""
    import numpy as np

    return np.zeros((0, embedder.dimension), dtype=np.float32)


def index(
    path: str | SourceRoot,
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

    A damaged index is repaired (see :func:`~rcm_dask.integrity.check_stores`): files a
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
        Folder of the codebase: ``./crate``, ``file:///abs``, ``memory://x``, ``s3://b/p``,
        or a :class:`~rcm_dask.sources.SourceRoot` already opened (the MCP server's runs:
        :func:`~rcm_dask.sources.open_local_root`, a local folder taken as it is).
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
        address, or none answers there within :data:`~rcm_dask.cluster.SCHEDULER_TIMEOUT`).

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
    started = time.perf_counter()
    request = request_run(path, config, mode=mode, **overrides)
    config, root, index_dir = request.config, request.root, request.index_dir
    embedder = embedder or Embedder(
        config.model,
        device=config.device,
        batch_size=config.batch_size,
        cpu_batch_size=config.cpu_batch_size,
        max_tokens=config.max_tokens,
        torch_threads=config.torch_threads,
        precision=config.precision,
    )
    identity = run_identity(root, embedder, config.vectors)
    forced: list[bool] = []  # True once a forced run builds beside the index
    existed = index_dir.exists()
    # One run per index: taken before anything is read from or written to the folder
    with (
        _reporting_interrupt(index_dir, forced),
        disk_full_errors(index_dir, "write the index"),
        IndexLock(index_dir, wait=config.wait, on_wait=on_wait) as live_lock,
        _no_empty_folder(index_dir, existed),
        ExitStack() as rebuilding,
    ):
        # what a forced run killed before its swap left (none can be running: we hold
        # the live lock)
        clear_leftovers(index_dir, read_identity(index_dir), config.qdrant_api_key)
        # an unusable identity.json or manifest leaves nothing to trust: rebuild
        damage = "" if force else index_damage(index_dir)
        force = force or bool(damage)
        _, stored = check_identity(index_dir, identity, config.qdrant_url, force)
        fixed = ""
        if stored is not None and not force:
            fixed = dimensions_repair(stored, identity)
            if fixed:
                stored = {**stored, "dimensions": identity["dimensions"]}
                write_identity(index_dir, stored)
        # a forced run over an index builds beside it (stores/swap.py): searches answer
        # from the old index until the new one replaces it in one step
        target = index_dir
        if force and stored is not None:
            target = rebuild_dir(index_dir)
            rebuilding.enter_context(_rebuild(index_dir, target, live_lock, config))
            forced.append(True)
        if isinstance(embedder, Embedder):
            # a broken model folder fails here, before an index records it as its identity
            # (after the identity check: a run the index refuses anyway says why first)
            embedder.check_files(weights=config.vectors != "none")
        known, pending = ({}, set()) if force else read_known(index_dir)
        repair = StoreRepair()
        # (stores without a manifest are unaccounted for: the writer clears them)
        if stored is not None and not force and (index_dir / MANIFEST_FILE).exists():
            repair = check_stores(index_dir, stored, known, pending, config.qdrant_api_key)
        plan = plan_run(root, config, target, known, request.discovery, pending, repair.paths)
        plan.stats.index_dir = str(index_dir)
        plan.stats.repairs = [f"{damage}: rebuilt from scratch"] if damage else []
        plan.stats.repairs += [fixed] if fixed else []
        plan.stats.repairs += repair.notes
        plan.stats.files_repaired += repair.restored
        plan.stats.add_time("discover", request.discover_seconds)
        if plan.todo:  # refuse now, not half-way through: a full disk kills the shard
            keeps = identity.get("vectors") != "none" and not config.qdrant_url
            dims = int(identity["dimensions"]) if keeps else None
            require_run_space(
                target, plan.todo_bytes, dims, len(plan.todo), beside=target != index_dir
            )
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
        elif chosen == "sequential" or not plan.todo:
            if performance_report:
                raise ConfigError(
                    "--performance-report needs a cluster mode (parallel or pipeline)"
                )
            with IndexWriter(target, identity, **writer_options(config, force)) as writer:
                stats = run_sequential(plan, config, embedder, writer, progress)
        else:
            with ExitStack() as stack:
                client_, label = stack.enter_context(
                    dask_client(config, client, dashboard=dashboard)
                )
                plan.stats.cluster = label
                plan.stats.dashboard_link = _dashboard_link(client_) if dashboard else ""
                if performance_report:
                    from distributed import performance_report as perf

                    stack.enter_context(perf(filename=str(performance_report)))
                owns = client is None and not config.scheduler
                run = DaskRun(
                    plan, config, embedder, client_, identity, force, progress, owns_cluster=owns
                )
                stats = run.run(pipelined=chosen == "pipeline")
        # one way to finish, whatever the mode
        with _timed(stats, "write"):
            purge_bm25_deletes(target, rewrite_bm25)
            complete_file_records(target)
        stats.seconds = time.perf_counter() - started
        _save_last_run(target, stats)
    return stats


@contextmanager
def _no_empty_folder(index_dir: Path, existed: bool) -> Iterator[None]:
    """A first run that fails before it wrote anything leaves no index folder behind
    (only the lock made it): removed while the lock is still held, so no other run
    can have started writing there (one waiting on the old lock file sees it gone and
    takes a new one)."""
    try:
        yield
    except BaseException:
        if not existed:
            try:
                if set(os.listdir(index_dir)) <= {LOCK_FILE, HOLDER_FILE}:
                    for name in (HOLDER_FILE, LOCK_FILE):
                        (index_dir / name).unlink(missing_ok=True)
                    index_dir.rmdir()
            except OSError:
                pass  # a folder that cannot be tidied stays: the error raised says why
        raise


@contextmanager
def _rebuild(
    index_dir: Path, target: Path, live_lock: IndexLock, config: IndexConfig
) -> Iterator[None]:
    """Hold a forced rebuild's folder ``target`` for the block; when the block ends well,
    swap it in for ``index_dir`` and delete the old tree, else delete the rebuild."""
    # its own lock: after the swap it is the live folder's, and we must hold it
    lock = IndexLock(target).acquire()
    try:
        yield
        exchange_dirs(index_dir, target)
        live_lock.exchange(lock)  # each object now holds the file in its own folder
    finally:
        # ``target`` is now the old tree (swapped) or the rebuild (failed): either goes,
        # and the collection it names unless the live index uses it
        try:
            remove_tree(target, read_identity(index_dir), config.qdrant_api_key)
        finally:
            lock.release()


@contextmanager
def _reporting_interrupt(index_dir: Path, forced: list[bool]) -> Iterator[None]:
    """Turn Ctrl-C into :class:`IndexInterrupted`, saying what the index kept (``forced``
    holds True once the run builds beside the index: the live one was not touched)."""
    try:
        yield
    except KeyboardInterrupt as e:
        if isinstance(e, IndexInterrupted):
            raise
        raise _interrupted(index_dir, rebuild=bool(forced)) from e


def _interrupted(index_dir: Path, rebuild: bool = False) -> IndexInterrupted:
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
    then = (
        "Run the same command again to finish: only what is missing is read."
        if not rebuild
        else "The forced rebuild was dropped and the index is as it was: run it again to "
        "rebuild from scratch, or without --force to bring the index up to date."
    )
    return IndexInterrupted(
        f"Interrupted. The index at {index_dir} keeps {files} files ({chunks} chunks) "
        f"committed{rest}. {then}",
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
