"""Indexing modes: how the stages are scheduled. The only module that will build Dask graphs.

``sequential``: one process, file by file (read, chunk, embed that file's chunks,
write): the baseline the other modes are measured against, and the debugging mode.

Every mode shares :func:`plan_run` (discover, open the writer, decide what changed)
and the stage functions, so they produce the same chunks, ids and index.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chunking import CHUNKER_VERSION, chunk_source, format_for_embedding, split_chunks
from .config import IndexConfig, default_index_dir
from .embedding import Embedder
from .errors import SourceError
from .records import (
    Chunk,
    EmbeddedBatch,
    FileRef,
    IndexedFile,
    IndexStats,
    Skipped,
    SourceFile,
)
from .sources import Discovery, SourceRoot, discover_sources, open_root, read_source
from .stores.manifest import INDEX_FORMAT
from .writer import IndexWriter

ProgressCallback = Callable[[IndexStats, str], None]
"""Called once when the run starts (path ``""``), then after each file with the running
stats and the file's path."""


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


def chunk_file(source: SourceFile, embedder: Embedder) -> list[Chunk]:
    """Chunk one file and split chunks longer than the model's budget (no weights needed)."""
    return split_chunks(chunk_source(source), embedder.count_tokens, embedder.max_tokens)


def embed_chunks(chunks: list[Chunk], embedder: Embedder) -> EmbeddedBatch:
    """Embed chunks (their :func:`format_for_embedding` texts) into a writer batch."""
    vectors = embedder.embed_batch([format_for_embedding(c) for c in chunks])
    return EmbeddedBatch(chunks=tuple(chunks), vectors=vectors)


def indexed_file(source: SourceFile, chunks: list[Chunk]) -> IndexedFile:
    """The manifest record of a file and its chunks."""
    return IndexedFile(
        path=source.path,
        size=source.size,
        mtime=source.mtime,
        sha256=source.sha256,
        chunk_ids=tuple(c.id for c in chunks),
    )


def run_identity(root: SourceRoot, embedder: Embedder) -> dict[str, Any]:
    """The identity an index built by this run must have."""
    return {
        "format": INDEX_FORMAT,
        "chunker_version": CHUNKER_VERSION,
        "root": root.url,
        "model_dir": str(embedder.model_dir),
        **embedder.identity,
    }


def plan_run(
    root: SourceRoot, config: IndexConfig, writer: IndexWriter, discovery: Discovery
) -> RunPlan:
    """Compare the listing with the manifest: what to read, what to drop."""
    known = {f.path: f for f in writer.manifest.files()}
    listed = {f.path for f in discovery.files}
    todo = []
    unchanged = 0
    for ref in discovery.files:
        old = known.get(ref.path)
        if old is not None and old.size == ref.size and old.mtime == ref.mtime:
            unchanged += 1
            continue
        todo.append(ref)
    removed = sorted(set(known) - listed)
    stats = IndexStats(
        mode=config.mode,
        root=root.url,
        index_dir=str(writer.index_dir),
        files_seen=len(discovery.files),
        files_unchanged=unchanged,
        files_removed=len(removed),
    )
    for skip in discovery.skipped:
        stats.add_skip(skip)
    return RunPlan(root, writer.index_dir, todo, known, removed, discovery, stats)


@contextmanager
def _timed(stats: IndexStats, stage: str) -> Iterator[None]:
    """Add the block's wall time to a stage's busy seconds."""
    start = time.perf_counter()
    try:
        yield
    finally:
        stats.add_time(stage, time.perf_counter() - start)


def run_sequential(
    plan: RunPlan,
    config: IndexConfig,
    embedder: Embedder,
    writer: IndexWriter,
    progress: ProgressCallback | None = None,
) -> IndexStats:
    """The sequential mode: read, chunk, embed and write each file in turn."""
    stats = plan.stats
    fs = plan.root.fs
    if progress is not None:
        progress(stats, "")  # the run has started: totals are known
    for ref in plan.todo:
        with _timed(stats, "read"):
            source = read_source(
                fs,
                ref,
                max_file_size=config.max_file_size,
                include_sensitive=config.include_sensitive,
            )
        if isinstance(source, Skipped):
            # a file we cannot read now keeps whatever the index held for it
            stats.add_skip(source)
        else:
            old = plan.known.get(source.path)
            if old is not None and old.sha256 == source.sha256:
                writer.touch_files([_same(old, source)])
                stats.files_unchanged += 1
            else:
                with _timed(stats, "chunk"):
                    chunks = chunk_file(source, embedder)
                with _timed(stats, "embed"):
                    batch = embed_chunks(chunks, embedder)
                stats.batches += 1 if chunks else 0
                with _timed(stats, "write"):
                    writer.write_file(indexed_file(source, chunks), batch)
                stats.files_indexed += 1
                stats.chunks += len(chunks)
                stats.chunks_with_errors += sum(c.has_error for c in chunks)
        if progress is not None:
            progress(stats, ref.path)
    with _timed(stats, "write"):
        writer.remove_files(plan.removed)
    return stats


def _same(old: IndexedFile, source: SourceFile) -> IndexedFile:
    """The manifest record of a file whose content did not change (new size/mtime)."""
    return IndexedFile(source.path, source.size, source.mtime, source.sha256, old.chunk_ids)


def index(
    path: str,
    config: IndexConfig | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    embedder: Embedder | None = None,
) -> IndexStats:
    """Index a Rust codebase (local path or fsspec URL) and return what the run did.

    A re-run reads only files whose size or modification time changed, re-indexes
    those whose content changed, and removes files that left the codebase. Files
    that cannot be read keep what the index already held for them.

    Parameters
    ----------
    path
        Folder of the codebase: ``./crate``, ``file:///abs``, ``memory://x``, ``s3://b/p``.
    config
        Settings; default from ``RCM_*`` variables.
    force
        Rebuild the index from scratch (also when built with another model).
    progress
        Called after each file with the running stats and the file's path.
    embedder
        A ready :class:`~rcm_dask.embedding.Embedder` (or any object with its
        interface); default: one built from ``config``.

    Returns
    -------
    IndexStats
        Files indexed / unchanged / removed / skipped by reason, chunks, seconds.

    Raises
    ------
    SourceError
        The path is missing, not a folder, or holds no ``.rs`` files.
    IndexIdentityError
        The index was built with another model or chunker; use ``force=True``.

    Examples
    --------
    >>> import rcm_dask
    >>> stats = rcm_dask.index("library/alloc")            # doctest: +SKIP
    >>> stats.files_indexed, stats.chunks                   # doctest: +SKIP
    (106, 2319)
    """
    config = config or IndexConfig.from_env()
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
        max_tokens=config.max_tokens,
        torch_threads=config.torch_threads,
    )
    index_dir = (
        Path(config.index_dir).expanduser() if config.index_dir else default_index_dir(root.url)
    )
    with IndexWriter(
        index_dir,
        run_identity(root, embedder),
        qdrant_url=config.qdrant_url,
        qdrant_api_key=config.qdrant_api_key,
        force=force,
        commit_every=config.commit_every,
    ) as writer:
        plan = plan_run(root, config, writer, discovery)
        plan.stats.add_time("discover", discover_seconds)
        stats = run_sequential(plan, config, embedder, writer, progress)
        stats.seconds = time.perf_counter() - started
        writer.commit()
        writer.manifest.set_meta("last_run", stats.to_dict())
    stats.seconds = time.perf_counter() - started
    return stats
