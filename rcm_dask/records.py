"""Small frozen records that flow between the stages.

Every stage function takes and returns these, so a stage runs the same in a plain
loop, inside ``map_partitions`` or inside the index writer. They are plain data
(str, int, float, tuples): they pickle cheaply and cross process boundaries.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

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
    "not-regular",
    "hard-link",
    "not-utf8-name",
]
"""Closed set of reasons a file is not indexed (see :class:`Skipped`).

``not-regular``: a FIFO, socket or device named ``*.rs`` (never opened: reading one
can block for ever); ``hard-link``: a regular file with more than one hard link (its
other names may lie outside the root); ``not-utf8-name``: a file or folder name that is not valid UTF-8
(no ``mod`` declaration can name it, and no tokenizer, store or terminal takes it)."""

SKIP_REASONS: tuple[str, ...] = SkipReason.__args__  # type: ignore[attr-defined]

_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _needs_quoting(ch: str) -> bool:
    """Whether a character of a path cannot be shown as it is."""
    if ch in _C_ESCAPES:
        return True
    # Cc: control characters (newline, escape...); Cf: format characters such as the
    # bidi overrides that make text read differently from what it is; Cs: the lone
    # surrogates Python uses for bytes of a name that are not UTF-8
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def display_path(path: str) -> str:
    r"""A path as shown to a person: as it is when it is plain, else quoted with C escapes.

    Git's rule for ``core.quotePath``: a name holding a control character (a newline
    would break ``path:line`` output and anything that reads it line by line), a
    format character (bidi overrides), a byte that is not UTF-8 (kept by Python as a
    lone surrogate), a backslash or a double quote is shown in double quotes, those
    characters escaped (``\n``, ``\xff``, ``\u202e``). Printable non-ASCII
    letters are kept. The quoted form is unambiguous: no plain name starts with ``"``.

    Examples
    --------
    >>> display_path("src/lib.rs")
    'src/lib.rs'
    >>> print(display_path("src/two\nlines.rs"))
    "src/two\nlines.rs"
    >>> print(display_path("bad\udcffname.rs"))
    "bad\xffname.rs"
    >>> print(display_path("ünï cödé.rs"))
    ünï cödé.rs
    """
    if not any(_needs_quoting(ch) for ch in path):
        return path
    out = []
    for ch in path:
        if ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif not _needs_quoting(ch):
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # surrogateescape of one raw byte
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return '"' + "".join(out) + '"'


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
    vectors: np.ndarray | None
    """float32 array of shape ``(len(chunks), dimension)``, rows L2-normalised; None in a
    keyword-only run (``vectors="none"``), where nothing is embedded."""


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
    """The ranking score: in hybrid mode the fused score (:func:`~rcm_dask.search.fuse_scores`
    or RRF, on the scale of a two-ranking RRF score), with one method ``1 / (k + rank)``;
    then adjusted by the ranking steps. Comparable within one result list only."""
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

    def __str__(self) -> str:
        """``path:line  kind qualname  score``, one line (``repr`` keeps every field)."""
        where = f"{display_path(self.path)}:{self.start_line}"
        return f"{where}  {self.kind} {self.qualname or self.name}  {self.score:.4f}"

    @property
    def location(self) -> str:
        """``path:start_line``, the form editors and terminals open."""
        return f"{self.path}:{self.start_line}"

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output.

        Examples
        --------
        >>> Hit("id", "src/a.rs", 3, 9, "f", "a::f", "function", 0.5, "fn f()").to_dict()["path"]
        'src/a.rs'
        """
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def to_json(self, **kwargs: Any) -> str:
        """The :meth:`to_dict` form as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)


@dataclass(frozen=True, slots=True)
class FileHit:
    """One file of a file-level search (``group="file"``, ``rcm-dask search --files``)."""

    path: str
    """File path relative to the indexed root."""
    score: float
    """The score of its best item."""
    hits: tuple[Hit, ...]
    """Its best items, best first (at most three)."""

    def __str__(self) -> str:
        """``path  score  (best items' names)``, one line."""
        names = ", ".join(h.qualname or h.name for h in self.hits)
        return f"{display_path(self.path)}  {self.score:.4f}  ({names})"

    @property
    def location(self) -> str:
        """``path:line`` of its best item."""
        return f"{self.path}:{self.hits[0].start_line}" if self.hits else self.path

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output (items as :meth:`Hit.to_dict`)."""
        return {
            "path": self.path,
            "score": self.score,
            "hits": [h.to_dict() for h in self.hits],
        }

    def to_json(self, **kwargs: Any) -> str:
        """The :meth:`to_dict` form as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)


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
    files_recovered: int = 0
    """Files an earlier run left half-written (it crashed or was stopped), redone now."""
    files_repaired: int = 0
    """Files whose chunks a store lacked or held wrongly (a store deleted or cut short),
    re-added now: re-indexed, or their BM25 chunks rebuilt from the vector store."""
    repairs: list[str] = field(default_factory=list)
    """What the run found damaged in the index and what it did about it, one line each."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped files counted by reason."""
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    """Up to a few example paths (with detail) per skip reason."""
    chunks: int = 0
    """Chunks written (parts counted separately)."""
    chunks_with_errors: int = 0
    """Chunks whose syntax tree holds errors (indexed, but flagged)."""
    batches: int = 0
    """Batches written: embedded ones, or in a keyword-only run the same cross-file
    batches, straight from chunking. In the cluster modes one batch is one embedding
    task's (``batch_size`` chunks for a model on a CPU, else
    :attr:`rcm_dask.dataflow.DaskRun.BATCHES_PER_TASK` times that); in the sequential
    mode, one file's chunks."""
    vectors: str = "qdrant"
    """What the run kept besides BM25: ``qdrant`` (vectors), or ``none`` (keyword-only:
    nothing embedded, :attr:`chunks_embedded` stays 0)."""
    seconds: float = 0.0
    """Wall-clock seconds of the run."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Busy seconds per stage (discover, read, chunk, embed, write), summed over workers."""
    files_todo: int = 0
    """Files this run has to read (new, or changed by size or mtime)."""
    files_done: int = 0
    """Files of :attr:`files_todo` dealt with so far: read, found unchanged, or skipped."""
    files_read: int = 0
    """Files read and decoded (changed or new; unchanged content included)."""
    chunks_made: int = 0
    """Chunks the chunker produced (parts counted separately)."""
    chunks_embedded: int = 0
    """Chunks embedded."""
    chunks_written: int = 0
    """Chunks applied to both stores."""
    stage_spans: dict[str, list[list[float]]] = field(default_factory=dict)
    """Per stage, the wall-clock intervals ``[start, end]`` (epoch seconds) in which at
    least one task of the stage was running, merged."""
    cluster: str = ""
    """Where the run ran: ``in-process``, ``LocalCluster(2 workers)`` or a scheduler address."""
    dashboard_link: str = ""
    """The Dask dashboard of the run's cluster, when it has one."""
    embed_workers: dict[str, int] = field(default_factory=dict)
    """Embedding batches run per worker address (``in-process`` for sequential)."""
    writer_worker: str = ""
    """Worker that held the index writer (``in-process`` when the driver held it)."""
    commits: int = 0
    """Commits of both stores and the manifest during the run."""
    driver_seconds: float = 0.0
    """CPU seconds the driver process spent while the cluster modes' dataflow ran (all its
    threads: a LocalCluster's scheduler included); 0 in the sequential mode."""

    def add_skip(self, skip: Skipped, keep: int = 5) -> None:
        """Count one skipped file."""
        self.skipped[skip.reason] = self.skipped.get(skip.reason, 0) + 1
        examples = self.skipped_examples.setdefault(skip.reason, [])
        if len(examples) < keep:
            shown = display_path(skip.path)
            examples.append(f"{shown}: {skip.detail}" if skip.detail else shown)

    def add_partition(self, part: ParsedPartition) -> None:
        """Count one read+chunk partition's outcome (files read, unchanged, skipped; chunks)."""
        self.files_read += len(part.files) + len(part.unchanged)
        self.files_done += len(part.files) + len(part.unchanged) + len(part.skipped)
        self.files_unchanged += len(part.unchanged)
        for skip in part.skipped:
            self.add_skip(skip)
        self.chunks_made += part.n_chunks
        self.add_time("read", part.read_seconds)
        self.add_time("chunk", part.chunk_seconds)
        if part.finished > part.started:
            self.add_span("parse", part.started, part.finished)

    def add_embedded(self, res: EmbedResult) -> None:
        """Count one embedded batch (its time, where it ran)."""
        self.add_batch(res.batch)
        self.chunks_embedded += len(res.batch.chunks)
        self.add_time("embed", res.finished - res.started)
        self.add_span("embed", res.started, res.finished)
        self.embed_workers[res.worker] = self.embed_workers.get(res.worker, 0) + 1

    def add_receipt(self, receipt: BatchReceipt) -> None:
        """Count one batch written by a write task (cluster modes)."""
        self.batches += 1
        self.chunks_with_errors += receipt.chunks_with_errors
        if receipt.embedded:
            self.chunks_embedded += receipt.chunks
            self.add_time("embed", receipt.finished - receipt.started)
            self.add_span("embed", receipt.started, receipt.finished)
            self.embed_workers[receipt.worker] = self.embed_workers.get(receipt.worker, 0) + 1

    def add_batch(self, batch: EmbeddedBatch) -> None:
        """Count one batch for the writer (a keyword-only run's, unembedded, counts only here)."""
        self.batches += 1
        self.chunks_with_errors += sum(c.has_error for c in batch.chunks)

    def add_writes(self, report: Mapping[str, Any]) -> None:
        """Take the index writer's :meth:`~rcm_dask.writer.IndexWriter.report` at the end
        of a run: chunks written, commits, its busy seconds and spans."""
        self.chunks_written = int(report["chunks_written"])
        self.commits = int(report["commits"])
        self.add_time("write", float(report["write_seconds"]))
        for start, end in report["spans"]:
            self.add_span("write", start, end)

    def add_time(self, stage: str, seconds: float) -> None:
        """Add busy seconds to a stage."""
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def add_span(self, stage: str, start: float, end: float) -> None:
        """Record that a stage was busy from ``start`` to ``end`` (epoch seconds)."""
        spans = self.stage_spans.setdefault(stage, [])
        spans.append([start, end])
        n = len(spans)
        if n >= 128 and n & (n - 1) == 0:  # merge at 128, 256, 512...: amortised O(n log n)
            merged = merge_spans(spans)
            if len(merged) > MAX_SPANS:
                merged = coarsen_spans(merged, MAX_SPANS // 2)
            self.stage_spans[stage] = merged

    def busy_span(self, stage: str) -> float:
        """Wall-clock seconds in which the stage had at least one task running."""
        return sum(e - s for s, e in merge_spans(self.stage_spans.get(stage, [])))

    def overlap(self, a: str, b: str) -> float:
        """Wall-clock seconds in which stages ``a`` and ``b`` both ran."""
        return overlap_seconds(
            merge_spans(self.stage_spans.get(a, [])), merge_spans(self.stage_spans.get(b, []))
        )

    @property
    def overlaps(self) -> dict[str, float]:
        """Seconds in which two stages ran at once: ``parse+embed`` (read and chunk
        tasks with embedding tasks), ``embed+write`` and ``parse+write``."""
        pairs = (("parse", "embed"), ("embed", "write"), ("parse", "write"))
        return {f"{a}+{b}": round(self.overlap(a, b), 3) for a, b in pairs}

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
        out["stage_spans"] = {k: merge_spans(v) for k, v in self.stage_spans.items()}
        out["stage_wall_seconds"] = {
            k: round(self.busy_span(k), 3) for k in sorted(self.stage_spans)
        }
        out["stage_overlap_seconds"] = self.overlaps
        out["files_skipped"] = self.files_skipped
        out["chunks_per_second"] = round(self.chunks_per_second, 2)
        out["stage_rates"] = {k: round(v, 2) for k, v in self.stage_rates.items()}
        return out

    def to_json(self, **kwargs: Any) -> str:
        """The :meth:`to_dict` form as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @property
    def stage_rates(self) -> dict[str, float]:
        """Throughput of each stage per busy second (summed over workers): ``read`` in
        files/s, ``chunk``, ``embed`` and ``write`` in chunks/s; stages not yet timed
        are left out."""
        secs = self.stage_seconds
        # in the cluster modes the writer reports its own time at the end; until then
        # the driver's time spent calling it is the best measure of the write stage
        write = secs.get("write") or secs.get("writer-calls", 0.0)
        done = {
            "read": (self.files_read, secs.get("read", 0.0)),
            "chunk": (self.chunks_made, secs.get("chunk", 0.0)),
            "embed": (self.chunks_embedded, secs.get("embed", 0.0)),
            "write": (self.chunks_written or self.chunks, write),
        }
        return {k: n / s for k, (n, s) in done.items() if n and s > 0}

    def summary_lines(self) -> list[str]:
        """The run's summary as plain lines: what ``rcm-dask index`` prints."""
        lines = [
            f"Indexed {self.root} -> {self.index_dir} ({self.mode} mode)",
            (
                f"  files: {self.files_indexed} indexed, {self.files_unchanged} unchanged, "
                f"{self.files_removed} removed, {self.files_skipped} skipped "
                f"(of {self.files_seen} .rs files found)"
            ),
        ]
        if self.files_recovered:
            lines.append(
                f"  recovered: {self.files_recovered} files left half-written by an "
                "interrupted run were redone"
            )
        for note in self.repairs:
            lines.append(f"  repaired: {note}")
        for reason, n in sorted(self.skipped.items()):
            examples = "; ".join(self.skipped_examples.get(reason, [])[:3])
            lines.append(f"    skipped {reason}: {n}" + (f"  e.g. {examples}" if examples else ""))
        errors = (
            f" ({self.chunks_with_errors} from code with syntax errors)"
            if self.chunks_with_errors
            else ""
        )
        if self.vectors == "none":
            lines.append(
                f"  chunks: {self.chunks} written{errors}, {self.batches} batches, "
                "keyword-only (nothing embedded)"
            )
        else:
            lines.append(
                f"  chunks: {self.chunks} written{errors}, {self.batches} embedding batches"
            )
        lines.append(f"  time: {self.seconds:.1f}s, {self.chunks_per_second:.1f} chunks/s")
        if self.stage_seconds:
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())
            lines.append(f"  busy seconds by stage (all workers): {stages}")
        rates = self.stage_rates
        if rates:
            units = {"read": "files/s"}
            lines.append(
                "  throughput per busy second: "
                + ", ".join(f"{k} {v:,.0f} {units.get(k, 'chunks/s')}" for k, v in rates.items())
            )
        overlaps = {k: v for k, v in self.overlaps.items() if v > 0}
        if overlaps:
            lines.append(
                "  stages overlapped: " + ", ".join(f"{k} {v:.1f}s" for k, v in overlaps.items())
            )
        writer = (
            f"; writer on {self.writer_worker}"
            if self.writer_worker not in ("", self.cluster)
            else ""
        )
        lines.append(f"  ran on: {self.cluster}{writer}")
        workers = self.embed_workers
        if len(workers) > 1 or (workers and next(iter(workers)) != "in-process"):
            lines.append(
                "  embedding batches by worker: "
                + ", ".join(f"{w} {n}" for w, n in sorted(workers.items()))
            )
        return lines

    def __str__(self) -> str:
        """The multi-line run summary (``repr`` keeps every field)."""
        return "\n".join(self.summary_lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter show the summary rather than the long field dump."""
        printer.text(str(self))


MAX_SPANS = 1024
"""Spans kept per stage: beyond this, the shortest gaps between spans are closed (a
run over 50,000 files would otherwise carry 50,000 spans per stage)."""


def coarsen_spans(spans: list[list[float]], target: int) -> list[list[float]]:
    """Close the shortest gaps of sorted, disjoint spans until ``target`` remain.

    Examples
    --------
    >>> coarsen_spans([[0, 1], [1.1, 2], [5, 6]], 2)
    [[0, 2], [5, 6]]
    """
    if len(spans) <= target:
        return [list(s) for s in spans]
    gaps = sorted(range(len(spans) - 1), key=lambda i: spans[i + 1][0] - spans[i][1])
    closed = set(gaps[: len(spans) - target])
    out = [list(spans[0])]
    for i in range(1, len(spans)):
        if i - 1 in closed:
            out[-1][1] = spans[i][1]
        else:
            out.append(list(spans[i]))
    return out


def merge_spans(spans: list[list[float]]) -> list[list[float]]:
    """Sorted union of ``[start, end]`` intervals.

    Examples
    --------
    >>> merge_spans([[3, 4], [0, 1], [0.5, 2]])
    [[0, 2], [3, 4]]
    """
    out: list[list[float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def overlap_seconds(a: list[list[float]], b: list[list[float]]) -> float:
    """Length of the intersection of two merged interval lists.

    Examples
    --------
    >>> overlap_seconds([[0, 2], [3, 4]], [[1, 3.5]])
    1.5
    """
    total = 0.0
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


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
    indexed_at: float | None = field(default=None, compare=False)
    """Epoch seconds when the manifest recorded it (None before it is recorded).

    A file whose mtime is this close to ``indexed_at`` may have changed again within
    the filesystem's timestamp resolution, so a re-run checks its hash."""


ProgressCallback = Callable[[IndexStats, str], None]
"""A run's progress callback: called once when the run starts (path ``""``), then as work
completes with the running stats and the last file's path (``""`` when a batch was
written)."""


@dataclass(frozen=True, slots=True, eq=False)
class ParsedPartition:
    """What reading and chunking one partition of files produced (in a worker process)."""

    files: tuple[IndexedFile, ...]
    """Files read whose content is new or changed, with the ids of all their chunks."""
    chunks: tuple[Chunk, ...]
    """Their chunks, file after file, in chunk order."""
    unchanged: tuple[IndexedFile, ...] = ()
    """Files whose size or mtime moved but whose content hash did not."""
    skipped: tuple[Skipped, ...] = ()
    """Files that could not be indexed now, with their reason."""
    read_seconds: float = 0.0
    """Busy seconds reading."""
    chunk_seconds: float = 0.0
    """Busy seconds parsing, chunking and splitting."""
    started: float = 0.0
    """Epoch seconds when the task started."""
    finished: float = 0.0
    """Epoch seconds when the task finished."""
    token_ids: np.ndarray | None = None
    """The token ids the model sees for every chunk, one flat int32 array (chunk ``i``'s
    are ``token_ids[token_offsets[i]:token_offsets[i + 1]]``): tokenized here, on a CPU
    worker, so that embedding runs the forward pass only. None when the embedder has no
    :meth:`~rcm_dask.embedding.Embedder.encode` (test fakes embed texts)."""
    token_offsets: np.ndarray | None = None
    """Where each chunk's ids start in :attr:`token_ids` (``len(chunks) + 1`` int64)."""

    def summary(self) -> ParsedPartition:
        """The same record without its chunks: what the driver needs to plan batches."""
        return ParsedPartition(
            self.files,
            (),
            self.unchanged,
            self.skipped,
            self.read_seconds,
            self.chunk_seconds,
            self.started,
            self.finished,
        )

    def chunk_tokens(self, start: int, stop: int) -> list[np.ndarray] | None:
        """The token ids of ``chunks[start:stop]`` (views), or None when not tokenized."""
        if self.token_ids is None or self.token_offsets is None:
            return None
        ids, offsets = self.token_ids, self.token_offsets
        return [ids[offsets[i] : offsets[i + 1]] for i in range(start, stop)]

    @property
    def n_chunks(self) -> int:
        """Chunks of the partition (also right on a :meth:`summary`)."""
        return sum(len(f.chunk_ids) for f in self.files)


@dataclass(frozen=True, slots=True, eq=False)
class EmbedResult:
    """One embedded batch with where and when it ran."""

    batch: EmbeddedBatch
    """The chunks and their vectors."""
    worker: str
    """Address of the worker that embedded it (``in-process`` outside Dask)."""
    started: float
    """Epoch seconds when embedding started."""
    finished: float
    """Epoch seconds when embedding finished."""
    threads: int
    """Torch threads the task used (0 on a GPU)."""

    def receipt(self, written: int) -> BatchReceipt:
        """What the driver learns once the batch is written: counts and times only."""
        chunks = self.batch.chunks
        return BatchReceipt(
            chunks=len(chunks),
            chunks_with_errors=sum(c.has_error for c in chunks),
            written=written,
            embedded=self.batch.vectors is not None,
            worker=self.worker,
            started=self.started,
            finished=self.finished,
            threads=self.threads,
        )


@dataclass(frozen=True, slots=True)
class BatchReceipt:
    """One batch written by a write task on the writer's worker: what the driver sees of
    it (the chunks and vectors go from the embedding worker to the writer, not through
    the driver)."""

    chunks: int
    """Chunks in the batch."""
    chunks_with_errors: int
    """Of which from code with syntax errors."""
    written: int
    """Chunks the writer applied."""
    embedded: bool
    """Whether the batch carried vectors (False in a keyword-only run)."""
    worker: str
    """Address of the worker that embedded (keyword-only: gathered) it."""
    started: float
    """Epoch seconds when embedding started."""
    finished: float
    """Epoch seconds when embedding finished."""
    threads: int
    """Torch threads the embedding task used (0 on a GPU or when nothing was embedded)."""


# --------------------------------------------------------------------------- code intelligence


def _plain_value(value: object) -> object:
    """A record field as JSON-ready data (records become dicts, tuples lists)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain_value(v) for v in value]
    return value


class _PlainRecord:
    """Base of the code-intelligence records: ``to_dict()`` gives plain JSON-ready values."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output."""
        return {n: _plain_value(getattr(self, n)) for n in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class Definition(_PlainRecord):
    """Where a symbol is defined (:meth:`rcm_dask.intel.CodeIntel.find_definition`)."""

    name: str
    """Symbol name (``push``)."""
    qualname: str
    """Qualified name within its crate (``collections::binary_heap::BinaryHeap::push``)."""
    kind: str
    """Item kind (``method``, ``struct``...; see :data:`CHUNK_KINDS`)."""
    path: str
    """File path relative to the indexed root."""
    start_line: int
    """First line of the item, docs and attributes included (1-based)."""
    end_line: int
    """Last line of the item (1-based, inclusive)."""
    signature: str = ""
    """The item's header up to its body."""
    visibility: str = ""
    """``pub``, ``pub(crate)``... or ``""`` for private."""
    parent: str = ""
    """Enclosing type or trait of a method or associated item."""
    module: str = ""
    """Module path of the item."""
    doc: str = ""
    """First line of its docs."""
    id: str = ""
    """Chunk id of the item (of its first part when it was split)."""
    parts: int = 1
    """Chunks the item was split into."""
    match: str = "exact"
    """Which rule matched the query: ``exact`` (the qualified name, possibly with its crate
    or ``crate::`` in front), ``suffix`` (the query ends the qualified name:
    ``BinaryHeap::push``) or ``name`` (a bare name, possibly ambiguous)."""

    def __str__(self) -> str:
        """``path:line  kind qualname  [match]``."""
        rule = "" if self.match == "exact" else f"  [{self.match}]"
        return f"{self.path}:{self.start_line}  {self.kind} {self.qualname}{rule}"


@dataclass(frozen=True, slots=True)
class Reference(_PlainRecord):
    """One place a symbol is used (:meth:`rcm_dask.intel.CodeIntel.find_references`)."""

    path: str
    """File of the referring item."""
    line: int
    """Line of the first such use in the referring item (1-based)."""
    name: str
    """The name used (``push``)."""
    kind: str
    """``call``, ``macro`` (an invocation ``name!``), ``type`` (the type is named),
    ``value`` (a const, static, unit struct or variant used as a value), ``impl`` (an
    ``impl`` block for the type) or ``trait-impl`` (an ``impl`` of the trait)."""
    written: str
    """How it is written: ``BinaryHeap::push(``, ``Self::push(``, ``self.push(``,
    ``.push(`` (a method of some other receiver), ``push(``, ``vec!``, a type name..."""
    in_qualname: str
    """Qualified name of the referring item."""
    in_kind: str
    """Kind of the referring item."""
    in_id: str = ""
    """Chunk id of the referring item."""
    target: str = ""
    """Qualified name of the definition the use resolves to; ``""`` when unresolved."""
    resolved: bool = False
    """Whether the use is tied to the definition (``confidence`` ``exact`` or ``scope``)."""
    confidence: str = "name"
    """``exact`` (the path or ``Self``/``self`` names the owner), ``scope`` (same module or
    file, or the file imports the name) or ``name`` (same name only: ambiguous)."""

    def __str__(self) -> str:
        """``path:line  written  in qualname  [confidence]``."""
        return (
            f"{self.path}:{self.line}  {self.written}  in {self.in_qualname}  [{self.confidence}]"
        )


@dataclass(frozen=True, slots=True)
class CallEdge(_PlainRecord):
    """One call from ``caller`` to ``callee`` at ``path:line``."""

    caller: str
    """Qualified name of the calling item."""
    callee: str
    """Qualified name of the called item, or the bare name (``push``) when unresolved."""
    path: str
    """File of the call site (the caller's file)."""
    line: int
    """Line of the call site (the first such call in the caller)."""
    depth: int
    """Distance from the queried symbol (1: a direct caller or callee)."""
    resolved: bool
    """Whether ``callee`` (for callees) or the call (for callers) is tied to a definition."""
    confidence: str
    """``exact``, ``scope`` or ``name``, as for :class:`Reference`."""
    callee_path: str = ""
    """File that defines the callee, ``""`` when unresolved or outside the index."""
    callee_line: int = 0
    """First line of the callee's definition, 0 when unknown."""

    def __str__(self) -> str:
        """``path:line  caller -> callee`` (``?`` marks an unresolved callee)."""
        mark = "" if self.resolved else "  [?]"
        return f"{self.path}:{self.line}  {self.caller} -> {self.callee}{mark}"


@dataclass(frozen=True, slots=True)
class CallGraph(_PlainRecord):
    """Callers and callees of a symbol, to a depth (:meth:`rcm_dask.intel.CodeIntel.call_graph`)."""

    symbol: str
    """The query."""
    roots: tuple[Definition, ...]
    """The definitions the query matched (the graph starts from all of them)."""
    callers: tuple[CallEdge, ...]
    """Edges into the roots and, further out, into their callers (breadth first)."""
    callees: tuple[CallEdge, ...]
    """Edges out of the roots and, further out, out of their resolved callees."""
    depth: int
    """Depth asked for."""
    truncated: bool = False
    """True when ``limit`` cut either list."""

    def __str__(self) -> str:
        """The roots, then callers and callees, one edge a line, indented by depth."""
        lines = [f"call graph of {self.symbol} (depth {self.depth})"]
        lines += [f"  {d}" for d in self.roots]
        lines.append("callers:")
        lines += [f"{'  ' * e.depth}{e}" for e in self.callers]
        lines.append("callees:")
        lines += [f"{'  ' * e.depth}{e}" for e in self.callees]
        if self.truncated:
            lines.append("(truncated: raise the limit for more)")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ImportEdge(_PlainRecord):
    """One ``use`` path of a file, and where it leads."""

    path: str
    """The importing file."""
    use_path: str
    """The path as imported (braces expanded, alias dropped: ``crate::vec::Vec``)."""
    target: str
    """The path resolved to its crate (``alloc::vec::Vec``; ``crate``/``self``/``super``
    replaced)."""
    target_path: str = ""
    """The indexed file that defines the target, ``""`` when it is not in the index."""
    how: str = ""
    """``item`` (an item defined in ``target_path``), ``module`` (the file's module or an
    item under it), ``re-export`` (an item of ``target_path`` imported through an
    ancestor module) or ``external`` (not in the index)."""

    def __str__(self) -> str:
        """``path: use use_path  -> target_path``."""
        where = f"  -> {self.target_path}" if self.target_path else ""
        return f"{self.path}: use {self.use_path}{where}"


@dataclass(frozen=True, slots=True)
class FileDependencies(_PlainRecord):
    """What a file imports and which indexed files import it."""

    path: str
    """The file."""
    module: str
    """Its module path."""
    crate: str
    """Its crate (the folder above ``src``; ``""`` when there is none)."""
    imports: tuple[ImportEdge, ...]
    """Its ``use`` paths, in source order."""
    imported_by: tuple[ImportEdge, ...]
    """``use`` paths of other indexed files that lead into this file."""

    def __str__(self) -> str:
        """The file, its imports, then its importers, one a line."""
        lines = [f"{self.path} (module {self.module or '<crate root>'})", "imports:"]
        lines += [
            f"  {e.use_path}" + (f"  -> {e.target_path}" if e.target_path else "")
            for e in self.imports
        ]
        lines.append("imported by:")
        lines += [f"  {e.path}: use {e.use_path}" for e in self.imported_by]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class FunctionComplexity(_PlainRecord):
    """Cyclomatic complexity of one function or method."""

    name: str
    """Function name."""
    qualname: str
    """Qualified name (from the index; the name when the index has no such item)."""
    kind: str
    """``function`` or ``method``."""
    path: str
    """File."""
    start_line: int
    """Line of ``fn`` (1-based)."""
    end_line: int
    """Last line (1-based, inclusive)."""
    complexity: int
    """1 + branches (see :meth:`rcm_dask.intel.CodeIntel.complexity` for the rule)."""

    def __str__(self) -> str:
        """``path:line  qualname  complexity N``."""
        return f"{self.path}:{self.start_line}  {self.qualname}  complexity {self.complexity}"


@dataclass(frozen=True, slots=True)
class FileComplexity:
    """Size and complexity of one file (:meth:`rcm_dask.intel.CodeIntel.complexity`)."""

    path: str
    """The file."""
    lines_total: int
    """Lines in the file."""
    lines_code: int
    """Lines holding code (any token that is not a comment)."""
    lines_comment: int
    """Lines holding comments only (doc comments included)."""
    lines_blank: int
    """Lines holding whitespace only (outside comments)."""
    items: tuple[tuple[str, int], ...]
    """Indexed items by kind, ``(kind, count)`` sorted by kind."""
    functions: tuple[FunctionComplexity, ...]
    """Every function and method with a body, in source order."""
    stale: bool = False
    """True when the file changed since it was indexed (lines and complexity are of the
    file as it is now, ``items`` of the index)."""

    def __str__(self) -> str:
        """Line counts, items, then the functions, most complex first."""
        items = ", ".join(f"{k} {n}" for k, n in self.items)
        lines = [
            f"{self.path}: {self.lines_total} lines ({self.lines_code} code, "
            f"{self.lines_comment} comment, {self.lines_blank} blank)"
            + ("  [changed since indexed]" if self.stale else ""),
            f"items: {items}",
        ]
        ranked = sorted(self.functions, key=lambda f: (-f.complexity, f.start_line))
        lines += [f"  {f}" for f in ranked]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output (``items`` as a ``{kind: count}`` dict)."""
        out = {n: _plain_value(getattr(self, n)) for n in self.__dataclass_fields__}
        out["items"] = dict(self.items)
        return out
