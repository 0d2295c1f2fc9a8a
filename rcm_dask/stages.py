"""Stage functions: plain functions over small records, the same in a loop or a Dask task.

Read+chunk (:func:`read_chunk_partition`), embed (:func:`embed_segments`, or
:func:`gather_segments` for a keyword-only run) and the records the writer takes
(:func:`indexed_file`, :class:`~rcm_dask.records.EmbeddedBatch`). The sequential mode
calls them in a loop (:mod:`rcm_dask.modes`); the cluster modes submit them as tasks
(:mod:`rcm_dask.dataflow`, the only module that builds Dask graphs). None of them needs
Dask: each runs and is tested alone, like the per-partition functions that
``dask.bag``'s graph builders map.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from .chunking import chunk_source
from .embed_text import format_for_embedding
from .embedding import CHARS_PER_TOKEN_BOUND, Embedder
from .records import (
    BatchReceipt,
    Chunk,
    EmbeddedBatch,
    EmbedResult,
    FileRef,
    IndexedFile,
    ParsedPartition,
    Skipped,
    SourceFile,
)
from .sources import read_source
from .splitting import split_chunks

IN_PROCESS = "in-process"
"""Where work runs outside a Dask worker (the sequential mode): a worker address stand-in."""


def chunk_file(source: SourceFile, embedder: Embedder) -> list[Chunk]:
    """Chunk one file and split chunks longer than the model's budget (no weights needed)."""
    return tokenize_file(source, embedder)[0]


def tokenize_file(
    source: SourceFile, embedder: Embedder
) -> tuple[list[Chunk], list[np.ndarray] | None]:
    """Chunk one file, split chunks longer than the model's budget, and give each chunk the
    token ids the model will see (None when the embedder has no ``encode``: a fake that
    embeds texts).

    Each text is tokenized once: the untruncated ids of a chunk within budget are what
    the model sees, and their lengths decide which chunks to split; only the parts of
    split chunks (and the rare chunk left over budget) are tokenized again.
    """
    chunks = chunk_source(source)
    encode = getattr(embedder, "encode", None)
    if encode is None or not chunks:
        return split_chunks(chunks, embedder.count_tokens, embedder.max_tokens), None
    max_tokens = embedder.max_tokens
    limit = max_tokens * CHARS_PER_TOKEN_BOUND
    texts = [format_for_embedding(c) for c in chunks]
    # a text too long to possibly fit is over budget without tokenizing megabytes
    short = [i for i, t in enumerate(texts) if len(t) <= limit]
    sizes = [max_tokens + 1] * len(chunks)
    kept: dict[int, np.ndarray] = {}
    for i, ids in zip(short, encode([texts[i] for i in short], truncate=False)):
        sizes[i] = len(ids)
        if len(ids) <= max_tokens:
            kept[id(chunks[i])] = ids
    out = split_chunks(chunks, embedder.count_tokens, max_tokens, sizes)
    tokens: list[np.ndarray | None] = [kept.get(id(c)) for c in out]
    again = [i for i, ids in enumerate(tokens) if ids is None]
    if again:
        for i, ids in zip(again, encode([format_for_embedding(out[i]) for i in again])):
            tokens[i] = ids
    return out, cast("list[np.ndarray]", tokens)


def embed_chunks(
    chunks: Sequence[Chunk], embedder: Embedder, tokens: Sequence[np.ndarray] | None = None
) -> EmbeddedBatch:
    """Embed chunks into a writer batch: from their token ids when the chunk stage made
    them (the forward pass only), else from their :func:`format_for_embedding` texts."""
    if tokens is not None:
        vectors = embedder.embed_tokens(tokens)
    else:
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
    tokens: list[np.ndarray] | None = [] if hasattr(embedder, "encode") else None
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
        file_chunks, file_tokens = tokenize_file(source, embedder)
        chunk_s += time.perf_counter() - t1
        files.append(indexed_file(source, file_chunks))
        chunks.extend(file_chunks)
        if tokens is not None and file_tokens is not None:
            tokens.extend(file_tokens)
    flat = offsets = None
    if tokens is not None:
        offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in tokens], out=offsets[1:])
        flat = np.concatenate(tokens).astype(np.int32, copy=False) if tokens else None
        flat = flat if flat is not None else np.zeros(0, dtype=np.int32)
    return ParsedPartition(
        files=tuple(files),
        chunks=tuple(chunks),
        unchanged=tuple(unchanged),
        skipped=tuple(skipped),
        read_seconds=read_s,
        chunk_seconds=chunk_s,
        started=started,
        finished=time.time(),
        token_ids=flat,
        token_offsets=offsets,
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
    tokens: list[np.ndarray] | None = None
    if hasattr(embedder, "embed_tokens"):
        tokens = []
        for part, start, stop in segments:
            ids = part.chunk_tokens(start, stop)
            if ids is None:
                tokens = None
                break
            tokens.extend(ids)
    worker = _worker_address()
    # any object with the Embedder interface works; only a real one has threads
    threads = getattr(embedder, "torch_threads", None) or 0
    if threads_by_host is not None and not threads and hasattr(embedder, "torch_threads"):
        threads = threads_by_host.get(host_of(worker)) or threads_by_host.get("*") or 1
        embedder.torch_threads = threads
    if worker == IN_PROCESS:
        batch = embed_chunks(chunks, embedder, tokens)
    else:
        batch = _EMBED_THREADS.run(embed_chunks, chunks, embedder, tokens)
    if not str(getattr(embedder, "device", "cpu")).startswith("cpu"):
        threads = 0
    return EmbedResult(batch, worker, started, time.time(), threads)


def write_embedded(writer: Any, result: EmbedResult | EmbeddedBatch) -> BatchReceipt:
    """Write one embedded (keyword-only: gathered) batch with ``writer`` (an
    :class:`~rcm_dask.writer.IndexWriter`, or what calls one) and say what was written:
    the write task, run where the writer is."""
    if isinstance(result, EmbedResult):
        return result.receipt(writer.write_batch(result.batch))
    written = writer.write_batch(result)
    errors = sum(c.has_error for c in result.chunks)
    embedded = result.vectors is not None
    return BatchReceipt(len(result.chunks), errors, written, embedded, "", 0.0, 0.0, 0)


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


def host_of(address: str) -> str:
    """``tcp://10.0.0.5:40000`` -> ``10.0.0.5``."""
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def read_chunk_groups(
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


def partition_summary(part: ParsedPartition) -> ParsedPartition:
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
