"""Small frozen records that flow between the stages.

Every stage function takes and returns these, so a stage runs the same in a plain
loop, inside ``map_partitions`` or inside the index writer. They are plain data
(str, int, float, tuples): they pickle cheaply and cross process boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SkipReason = Literal[
    "unreadable",
    "not-utf8",
    "too-large",
    "binary",
    "ignored",
    "hidden",
    "target-dir",
    "sensitive",
    "vanished",
]
"""Closed set of reasons a file is not indexed (see :class:`Skipped`)."""

SKIP_REASONS: tuple[str, ...] = SkipReason.__args__  # type: ignore[attr-defined]

ChunkKind = Literal[
    "function",
    "method",
    "struct",
    "enum",
    "union",
    "trait",
    "impl",
    "mod",
    "const",
    "static",
    "type",
    "macro",
]
"""Kinds of Rust items that become chunks."""

CHUNK_KINDS: tuple[str, ...] = ChunkKind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file found by discovery, before it is read."""

    path: str
    """Path relative to the root, with ``/`` separators (``src/lib.rs``)."""
    url: str
    """Full fsspec path of the file, as the filesystem names it."""
    size: int
    """Size in bytes, as listed."""
    mtime: float | None
    """Modification time (seconds since the epoch) when the filesystem gives one."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A Rust file read and decoded."""

    path: str
    """Path relative to the root, with ``/`` separators."""
    size: int
    """Size in bytes of what was read."""
    mtime: float | None
    """Modification time (seconds since the epoch), when known."""
    sha256: str
    """Hex SHA-256 of the raw bytes: the file's content hash."""
    text: str
    """Decoded UTF-8 text (a leading BOM removed, line endings kept)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file that was not indexed, and why."""

    path: str
    """Path relative to the root (or the URL when outside any root)."""
    reason: SkipReason
    """One of :data:`SKIP_REASONS`."""
    detail: str = ""
    """Human-readable detail (the pattern that matched, the decode error, …)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One Rust item (or one part of a long one), the unit that is indexed."""

    id: str
    """Deterministic id (a UUID string) from path, kind, qualified name,
    occurrence and part: the same input gives the same id in every mode and run."""
    path: str
    """File path relative to the root."""
    module: str
    """Crate-relative module path (``collections::binary_heap``), from the file
    path and inline ``mod`` nesting; empty for the crate root."""
    name: str
    """Symbol name (``push``; for an impl block ``impl Trait for Type``)."""
    qualname: str
    """Qualified name within the crate (``collections::binary_heap::BinaryHeap::push``)."""
    kind: ChunkKind
    """Item kind, one of :data:`CHUNK_KINDS`."""
    parent: str
    """Enclosing type or trait for methods and associated items, else ``""``."""
    visibility: str
    """Visibility as written (``pub``, ``pub(crate)``) or ``""`` for private."""
    signature: str
    """The item's header up to its body (``pub fn push(&mut self, item: T)``)."""
    docs: str
    """Doc comments (``///``, ``//!``, ``#[doc = ...]``) with markers stripped."""
    attributes: tuple[str, ...]
    """Outer attributes other than docs (``#[test]``, ``#[derive(Debug)]``, ``#[cfg(..)]``)."""
    imports: tuple[str, ...]
    """The file's ``use`` declarations (paths as written)."""
    calls: tuple[str, ...]
    """Names of functions, methods and macros the item calls, in first-seen order."""
    type_refs: tuple[str, ...]
    """Names of types the item refers to, in first-seen order."""
    start_line: int
    """First line (1-based) of this chunk's code, including docs and attributes."""
    end_line: int
    """Last line (1-based, inclusive)."""
    start_byte: int
    """Byte offset of the start in the UTF-8 file."""
    end_byte: int
    """Byte offset one past the end."""
    has_error: bool
    """True when the item's syntax tree holds ERROR or MISSING nodes."""
    code: str
    """Source text of this chunk (for an impl block: the summary)."""
    part: int = 1
    """Part number when a long item was split (1-based)."""
    parts: int = 1
    """Number of parts the item was split into (1 when whole)."""
    symbol_id: str = ""
    """Id shared by all parts of one item (equal to ``id`` when whole)."""
    occurrence: int = 0
    """How many earlier chunks of the same file share this kind and qualified name
    (``#[cfg]`` twins, several ``impl`` blocks of one type): part of the id."""

    @property
    def location(self) -> str:
        """``path:start-end`` for messages."""
        return f"{self.path}:{self.start_line}-{self.end_line}"


@dataclass(frozen=True, slots=True, eq=False)
class EmbeddedBatch:
    """Chunks with their vectors, in the same order: what the writer applies."""

    chunks: tuple[Chunk, ...]
    """The chunks of this batch (possibly from several files)."""
    vectors: np.ndarray
    """float32 array of shape ``(len(chunks), dimension)``, rows L2-normalised."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    id: str
    """Chunk id."""
    path: str
    """File path relative to the indexed root."""
    start_line: int
    """First line of the chunk (1-based)."""
    end_line: int
    """Last line of the chunk (1-based, inclusive)."""
    name: str
    """Symbol name."""
    qualname: str
    """Qualified name."""
    kind: str
    """Item kind."""
    score: float
    """Fused score (RRF) in hybrid mode, else the store's own score."""
    snippet: str
    """A few lines of the chunk, starting at its signature."""
    signature: str = ""
    """The item's signature."""
    parent: str = ""
    """Enclosing type or trait, if any."""
    bm25_rank: int | None = None
    """1-based rank among BM25 candidates, or None when not among them."""
    vector_rank: int | None = None
    """1-based rank among vector candidates, or None when not among them."""

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class IndexStats:
    """What one indexing run did. Mutable while the run goes, returned at its end."""

    mode: str = "sequential"
    """Mode that ran."""
    root: str = ""
    """Root that was indexed."""
    index_dir: str = ""
    """Index directory written."""
    files_seen: int = 0
    """Files found by discovery (``.rs`` and not pruned with their folder)."""
    files_indexed: int = 0
    """Files read, chunked and written."""
    files_unchanged: int = 0
    """Files skipped because the index already holds them unchanged."""
    files_removed: int = 0
    """Files that left the codebase and whose chunks were removed."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped files counted by reason."""
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    """Up to a few example paths (with detail) per skip reason."""
    chunks: int = 0
    """Chunks written (parts counted separately)."""
    chunks_with_errors: int = 0
    """Chunks whose syntax tree holds errors (indexed, but flagged)."""
    batches: int = 0
    """Embedding batches run."""
    seconds: float = 0.0
    """Wall-clock seconds of the run."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Busy seconds per stage (read, chunk, embed, write)."""

    def add_skip(self, skip: Skipped, keep: int = 5) -> None:
        """Count one skipped file."""
        self.skipped[skip.reason] = self.skipped.get(skip.reason, 0) + 1
        examples = self.skipped_examples.setdefault(skip.reason, [])
        if len(examples) < keep:
            examples.append(f"{skip.path}: {skip.detail}" if skip.detail else skip.path)

    def add_time(self, stage: str, seconds: float) -> None:
        """Add busy seconds to a stage."""
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    @property
    def files_skipped(self) -> int:
        """Total files skipped, all reasons together."""
        return sum(self.skipped.values())

    @property
    def chunks_per_second(self) -> float:
        """Chunks written per wall-clock second."""
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output."""
        out: dict[str, object] = {n: getattr(self, n) for n in self.__dataclass_fields__}
        out["files_skipped"] = self.files_skipped
        out["chunks_per_second"] = round(self.chunks_per_second, 2)
        return out


@dataclass(frozen=True, slots=True)
class IndexedFile:
    """What the manifest keeps about one indexed file."""

    path: str
    """Path relative to the root."""
    size: int
    """Size in bytes when indexed."""
    mtime: float | None
    """Modification time when indexed, if the filesystem gives one."""
    sha256: str
    """Content hash when indexed."""
    chunk_ids: tuple[str, ...]
    """Ids of every chunk (and part) the file produced, in order."""
