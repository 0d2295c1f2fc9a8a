"""The Dask dataflow of the cluster modes: the only module that builds Dask graphs.

The dataflow of ``parallel`` and ``pipeline``::

    fsspec listing (driver) -> groups of file references, by size
      -> read_chunk_groups (any worker: fsspec read, tree-sitter parse, split,
         tokenize)
      -> exact cross-file batches of batch_size chunks (BATCHES_PER_TASK times that
         when batches are fast: a GPU, no model), planned by
         the driver from per-partition chunk counts (no barrier: a batch starts as soon
         as its chunks exist)
      -> embed_segments (workers with the ``GPU`` resource when the cluster has any):
         the forward pass only, on token ids made by the read+chunk tasks
      -> write_on_writer: a small task pinned to the worker of the index writer, one
         Dask actor holding Tantivy, Qdrant and the manifest (:class:`WriterActor`)

The driver never sees file contents, nor chunks, nor vectors: it sees per-partition
summaries (files and their chunk ids) and, per batch, a
:class:`~rcm_dask.records.BatchReceipt` (counts and times). Each embedded batch
(~0.5 MB for 128 chunks) goes from its embedding worker to the writer's worker as the
input of the write task (Dask moves it worker to worker), and the write task hands it
to the writer on the actor's own thread, so that writes stay serial with the calls the
driver makes (expect the files of a partition, commit, report). Only the writer's
worker blocks a thread while a write runs, never an embedding worker.

A keyword-only run (``vectors="none"``) has no embedding stage: each cross-file
batch is gathered by a small :func:`~rcm_dask.stages.gather_segments` task on any
worker and goes to the writer's write task without vectors, under the same bounds on work in
flight. Chunking still splits long items with the model's tokenizer (so chunk ids
match a run with vectors), but no weights are loaded anywhere.

The tasks run the plain stage functions of :mod:`rcm_dask.stages`; where they run is
decided by :class:`~rcm_dask.cluster.ClusterLayout`.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cluster import ClusterLayout
from .config import IndexConfig
from .embedding import Embedder
from .errors import ClusterError, IndexWriteError, RcmError
from .planning import RunPlan
from .records import (
    BatchReceipt,
    EmbeddedBatch,
    EmbedResult,
    IndexedFile,
    IndexStats,
    ParsedPartition,
    ProgressCallback,
)
from .stages import (
    embed_segments,
    gather_segments,
    group_files,
    partition_summary,
    read_chunk_groups,
    write_embedded,
)
from .writer import IndexWriter, writer_options

if TYPE_CHECKING:
    from distributed import Client, Future


class DaskRun:
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
    BATCHES_PER_TASK = 8
    """Model batches (``batch_size`` chunks: a GPU's forward pass) per embedding task and
    write task, when batches are fast (a GPU, no model, a keyword-only run). Each task
    costs the scheduler and the driver about the same whatever its size: with the null
    embedder over rust-src ``library/`` (118k chunks), one batch per task meant ~2,000
    tasks and 12 CPU seconds of the driver process (its scheduler included). A model on
    a CPU takes seconds a batch, so there a task is one batch: the per-task cost is
    under 1 %, and progress and the pipeline's tail stay fine-grained."""

    def __init__(
        self,
        plan: RunPlan,
        config: IndexConfig,
        embedder: Embedder,
        client: Client,
        identity: dict[str, Any],
        force: bool,
        progress: ProgressCallback | None,
        *,
        owns_cluster: bool = False,
    ) -> None:
        self.plan = plan
        self.owns_cluster = owns_cluster
        """The run started its own LocalCluster and stops it when it ends."""
        self.config = config
        self.embedder = embedder
        self.client = client
        self.identity = identity
        self.force = force
        self.progress = progress
        self.stats = plan.stats
        self.cluster = ClusterLayout.inspect(client, config.torch_threads)
        self.keyword_only = config.vectors == "none"
        slow = not self.keyword_only and getattr(embedder, "slow_batches", False)
        self.batch_size = config.batch_size * (1 if slow else self.BATCHES_PER_TASK)
        """Chunks per embedding (and write) task."""
        self.max_batches = config.max_inflight_batches or max(4, 2 * self.cluster.slots)
        # read+chunk tasks use the threads that embedding leaves free (all of them when
        # nothing is embedded)
        threads = sum(int(w.get("nthreads") or 1) for w in self.cluster.workers.values())
        self.max_parse = max(1, threads - (0 if self.keyword_only else self.cluster.slots))
        self.futures: set[Future] = set()
        # every future of the run that is still referenced anywhere (a traceback's
        # frames included): what an error must cancel so that no task is orphaned
        self.alive: weakref.WeakSet[Future] = weakref.WeakSet()
        self.writer: WriterActor | None = None
        self.inputs: dict[Future, Future] = {}
        """The embedding (keyword-only: gathering) future of each write task."""
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
        if not self.client.run_on_scheduler(DaskRun._has_span, span_id):
            return
        name = ("execute", span_id, "IndexWriter", "write", "seconds")
        self.client.run(DaskRun._digest_metric, name, seconds, workers=[self.stats.writer_worker])

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
        """The read+chunk stage's inputs: one group of files (with the content hashes the
        index holds for them) per task.

        Plain groups submitted one by one rather than a Dask bag's delayed partitions:
        each of those carried the whole bag's graph, so that every submission pickled the
        entire listing again (92k records pickled by the driver over ``library/``)."""
        groups = group_files(self.plan.todo, self.config.partition_bytes)
        known = self.plan.known
        return [[(g, {r.path: known[r.path].sha256 for r in g if r.path in known})] for g in groups]

    def submit_parse(self, part: Any) -> tuple[Future, Future]:
        """Start one read+chunk partition; returns (partition, summary) futures."""
        with self.in_span("read-chunk"):
            fut = self.client.submit(
                read_chunk_groups,
                part,
                self.plan.root.fs,
                self.embedder,
                self.config.max_file_size,
                self.config.include_sensitive,
                pure=False,
            )
            # keyed by stage, as the dashboard and performance report show it
            summary = self.client.submit(partition_summary, fut, key=f"summary-{uuid.uuid4().hex}")
        self.futures.update((fut, summary))
        self.alive.update((fut, summary))
        return fut, summary

    def submit_batch(self, segments: list[tuple[Future, int, int]]) -> Future:
        """Start one batch: its embedding task, then its write task; returns the write
        task's future (its result: a :class:`~rcm_dask.records.BatchReceipt`)."""
        return self.submit_write(self.submit_embed(segments))

    def submit_embed(self, segments: list[tuple[Future, int, int]]) -> Future:
        """Start one batch's embedding task, annotated at submission so that the GPU
        restriction survives (graph optimisation drops ``dask.annotate``, dask#7036);
        in a keyword-only run a :func:`gather_segments` task (any worker: no model, no
        resource)."""
        fut: Future
        with self.in_span("embed"):
            if self.keyword_only:
                fut = self.client.submit(gather_segments, segments, pure=False, priority=1)
            else:
                fut = self.client.submit(
                    embed_segments,
                    self.embedder,
                    segments,
                    self.cluster.threads_by_host,
                    resources=self.cluster.resources,
                    pure=False,
                    priority=1,
                )
        self.futures.add(fut)
        self.alive.add(fut)
        return fut

    def submit_write(self, embedded: Future) -> Future:
        """Start the write task of an embedded batch, on the writer's worker: the batch
        travels there from its embedding worker, never through the driver."""
        assert self.writer is not None
        with self.in_span("write"):
            fut = self.writer.submit_write(embedded)
        self.inputs[fut] = embedded
        self.futures.add(fut)
        self.alive.add(fut)
        return fut

    # -- the writer actor ------------------------------------------------------------
    def start_writer(self) -> WriterActor:
        """Start the one index writer, as an actor on :meth:`ClusterLayout.writer_worker`."""
        address = self.cluster.writer_worker()
        with self.in_span("write"):
            self.writer = WriterActor.start(
                self.client, address, self.plan.index_dir, self.identity, self.config, self.force
            )
        self.stats.writer_worker = address
        return self.writer

    def wait_writer(self, call: Callable[..., Any], *args: Any) -> Any:
        """Call one of the writer's methods (a :class:`WriterActor` method) and wait for
        its future; the writer's worker's death is an :class:`IndexWriteError`.

        The driver's waiting time is kept as the ``writer-calls`` stage: what feeding the
        writer costs the driver loop, round trips included (the embedding workers go on
        meanwhile).
        """
        start = time.perf_counter()
        try:
            return call(*args).result()
        except RcmError:
            raise
        except Exception as e:
            if "Actor" in str(e) or type(e).__name__ in ("CommClosedError", "KilledWorker"):
                raise self._writer_lost(str(e)) from e
            raise
        finally:
            self.stats.add_time("writer-calls", time.perf_counter() - start)

    def _writer_lost(self, why: str) -> IndexWriteError:
        """The error of a run whose writer's worker is gone."""
        return IndexWriteError(
            f"the index writer on {self.stats.writer_worker} was lost ({why}); the "
            f"index at {self.plan.stats.index_dir} stays at its last commit - re-run to finish"
        )

    # -- driving -----------------------------------------------------------------------
    def run(self, pipelined: bool) -> IndexStats:
        """Run the whole dataflow; on any error cancel everything in flight and re-raise.

        The driver's CPU seconds meanwhile (all its threads) are kept as
        :attr:`~rcm_dask.records.IndexStats.driver_seconds`.
        """
        cpu = time.process_time()
        with self.open_spans():
            try:
                writer = self.start_writer()
                parts = self.build_partitions()
                self._report("")  # the run has started: totals are known
                if pipelined:
                    self._pipeline(parts)
                else:
                    self._stage_by_stage(parts)
                self.wait_writer(writer.remove_files, self.plan.removed)
                self.wait_writer(writer.commit)
                report = self.wait_writer(writer.report)
                self.stats.add_writes(report)
                self.wait_writer(writer.close, False)
                self.writer = None
                writer.release()
                self.book_write_seconds(report["write_seconds"])
            finally:
                self._cancel()
                self.stats.driver_seconds += time.process_time() - cpu
        return self.stats

    def _report(self, path: str) -> None:
        """Tell the progress callback, if any, how the run stands."""
        if self.progress is not None:
            self.progress(self.stats, path)

    def _cancel(self) -> None:
        """Cancel every task of the run still referenced; the writer commits what it
        wrote whole (safe at any point: see :mod:`rcm_dask.writer`) and closes."""
        # A run's own LocalCluster is stopped right after this, which stops every task: no
        # cancel is sent. (A forced cancel reaching a dependent whose future a Ctrl-C
        # already released, its frame unwound, trips the scheduler's ``assert
        # ts.who_wants``, which logs a traceback in the driver.)
        leftover = [] if self.owns_cluster else list(self.alive)
        # one call per task, dependents before what they depend on (write tasks; then
        # embedding and summary tasks; then read+chunk tasks): a forced cancel also
        # cancels and releases a key's dependents, and the scheduler then fails an
        # ``assert ts.who_wants`` on such a dependent named again
        writes = set(self.inputs)
        middle = set(self.inputs.values())
        middle.update(f for f in leftover if str(f.key).startswith("summary-"))
        order = {**{f: 2 for f in leftover}, **{f: 1 for f in middle}, **{f: 0 for f in writes}}
        for fut in sorted(leftover, key=order.__getitem__):
            if fut.status in ("pending", "finished", "error"):
                self.client.cancel([fut], force=True)
        self.futures.clear()
        self.inputs.clear()
        if self.writer is not None:
            try:
                self.writer.close(True).result(timeout=60)
            except Exception:  # the writer may be what failed; its last commit stands
                pass
            self.writer.release()
            self.writer = None

    def _on_summary(self, summary: ParsedPartition) -> None:
        """A partition is chunked: tell the writer which files to expect, count it."""
        assert self.writer is not None
        self.stats.add_partition(summary)
        if summary.unchanged:
            self.wait_writer(self.writer.touch_files, self.plan.refreshed(summary.unchanged))
        withheld = self.plan.withheld(summary.skipped)
        if withheld:  # they came to hold a secret: their old chunks go
            self.wait_writer(self.writer.remove_files, withheld)
            self.stats.files_removed += len(withheld)
        if summary.files:
            self.wait_writer(self.writer.expect_files, list(summary.files))
        self.stats.files_indexed += len(summary.files)
        last = (summary.files or summary.unchanged or summary.skipped or (None,))[-1]
        self._report(getattr(last, "path", ""))

    def _on_batch(self, fut: Future) -> None:
        """A batch is written (by its write task): count it from its receipt."""
        receipt: BatchReceipt = self._result(fut)
        self.futures.discard(fut)
        self.futures.discard(self.inputs.pop(fut, fut))
        self.stats.add_receipt(receipt)
        self.stats.chunks += receipt.written
        self._report("")

    def _result(self, fut: Future) -> Any:
        """A finished future's result; a write task that died with the writer's worker is
        an :class:`IndexWriteError`."""
        try:
            return fut.result()
        except RcmError:
            raise
        except Exception as e:
            if fut in self.inputs and not self._writer_alive():
                raise self._writer_lost(str(e)) from e
            raise

    def _writer_alive(self) -> bool:
        """Whether the writer's worker is still in the cluster."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return not self.stats.writer_worker or self.stats.writer_worker in workers

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

    def _wait_all(self, futures: Iterable[Future]) -> None:
        """Wait until all of ``futures`` finish, raising the first error as it comes."""
        waiting = set(futures)
        while waiting:
            done = self._wait(waiting)
            for fut in done:
                if fut.status == "error":
                    self._result(fut)
            waiting -= done

    def _check_cluster(self) -> None:
        """Fail, rather than wait for ever, when no worker can run embedding any more."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        # a keyword-only run's batch tasks run on any worker
        needed = None if self.keyword_only else next(iter(self.cluster.resources or {}), None)
        if needed and not any((w.get("resources") or {}).get(needed) for w in workers.values()):
            raise ClusterError(
                f"no worker offers the {needed} resource any more; embedding cannot go "
                f"on. The index at {self.plan.stats.index_dir} stays at its last commit."
            )
        if not workers:
            raise ClusterError("the Dask cluster lost all its workers")
        # write tasks wait for ever for their pinned worker
        if self.writer is not None and self.stats.writer_worker not in workers:
            raise self._writer_lost("its worker left the cluster")

    def _pipeline(self, parts: list[Any]) -> None:
        """Overlapping stages with bounded work in flight at each."""
        todo = deque(parts)
        parsing: dict[Future, Future] = {}  # summary future -> partition future
        embedding: set[Future] = set()
        pending: deque[list[Any]] = deque()  # [partition future, next chunk, chunks]
        max_pending = self.batch_size * self.max_batches
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
        started = [self.submit_parse(p) for p in parts]
        self._wait_all(s for _, s in started)
        pending: deque[list[Any]] = deque()
        for part, summary_fut in started:
            summary = summary_fut.result()
            self._on_summary(summary)
            if summary.n_chunks:
                pending.append([part, 0, summary.n_chunks])
        embedded = []
        while (segments := self._take_batch(pending, final=True)) is not None:
            embedded.append(self.submit_embed(segments))
        self._wait_all(embedded)
        for part, summary_fut in started:
            self.futures.discard(part)
            self.futures.discard(summary_fut)
        started.clear()
        writes = [self.submit_write(fut) for fut in embedded]
        embedded.clear()
        self._wait_all(writes)
        for fut in writes:
            self._on_batch(fut)


class WriterActor:
    """The one index writer (:class:`~rcm_dask.writer.IndexWriter`) as a Dask actor on
    one worker, behind the small interface the driver feeds: each call returns a future.

    Only this class knows that the writer is an actor: a second writer, or a writer fed
    by the embedding workers themselves, is a change here, not in :class:`DaskRun`.
    """

    def __init__(self, client: Client, future: Future, actor: Any, address: str) -> None:
        self.client = client
        self.future = future
        self.actor = actor
        self.address = address

    @classmethod
    def start(
        cls,
        client: Client,
        address: str,
        index_dir: Path,
        identity: dict[str, Any],
        config: IndexConfig,
        force: bool,
    ) -> WriterActor:
        """Create the writer on the worker at ``address`` and wait until it holds the index."""
        future = client.submit(
            IndexWriter,
            str(index_dir),
            identity,
            **writer_options(config, force),
            actor=True,
            workers=[address],
            allow_other_workers=False,
            pure=False,
        )
        try:
            return cls(client, future, future.result(), address)
        except BaseException:
            client.cancel([future], force=True)
            raise

    def expect_files(self, files: Sequence[IndexedFile]) -> Any:
        """:meth:`IndexWriter.expect_files`: these files' chunks are coming."""
        return self.actor.expect_files(files)

    def touch_files(self, files: Sequence[IndexedFile]) -> Any:
        """:meth:`IndexWriter.touch_files`: new size and mtime, same content."""
        return self.actor.touch_files(files)

    def write_batch(self, batch: EmbeddedBatch) -> Any:
        """:meth:`IndexWriter.write_batch`; the future's result is the chunks written."""
        return self.actor.write_batch(batch)

    def submit_write(self, embedded: Future) -> Future:
        """A task on the writer's worker that writes ``embedded``'s batch (an
        :class:`EmbedResult` or, keyword-only, an :class:`EmbeddedBatch`) and returns a
        :class:`BatchReceipt`. Runs before read+chunk tasks waiting on that worker, so
        that embedded batches do not pile up in memory."""
        fut: Future = self.client.submit(
            write_on_writer,
            self.future.key,
            embedded,
            workers=[self.address],
            allow_other_workers=False,
            pure=False,
            priority=2,
            key=f"write_batch-{uuid.uuid4().hex}",
        )
        return fut

    def remove_files(self, paths: Sequence[str]) -> Any:
        """:meth:`IndexWriter.remove_files`."""
        return self.actor.remove_files(paths)

    def commit(self) -> Any:
        """:meth:`IndexWriter.commit`."""
        return self.actor.commit()

    def report(self) -> Any:
        """:meth:`IndexWriter.report`."""
        return self.actor.report()

    def close(self, commit: bool) -> Any:
        """:meth:`IndexWriter.close`."""
        return self.actor.close(commit)

    def release(self) -> None:
        """Let the actor go. Cancel, not just release: the Actor object keeps a Future
        of its own for the same key, which would keep the actor alive until garbage
        collection."""
        self.client.cancel([self.future], force=True)


def write_on_writer(actor_key: str, result: EmbedResult | EmbeddedBatch) -> BatchReceipt:
    """Task: write one batch with the writer actor held by this worker (see
    :meth:`WriterActor.submit_write`).

    The write runs on the actor's own thread (the worker's one ``actor`` executor), as
    the driver's calls to the actor do, so that the writer never runs two calls at once.
    """
    from distributed import get_worker

    worker = get_worker()
    writer = worker.state.actors.get(actor_key)
    if writer is None:
        raise IndexWriteError(f"no index writer on worker {worker.address}: it was lost")
    return worker.executors["actor"].submit(write_embedded, writer, result).result()
