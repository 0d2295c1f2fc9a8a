"""What the tools answer: pydantic records whose JSON schemas are the tools' output schemas.

Each record also renders itself as the text an agent reads (``__str__``); the
code-intelligence results (:class:`_Rendered`) carry a text built from the library
records' own renderings.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, PrivateAttr

from ..records import CallGraph, Definition, FileComplexity, FileDependencies, Hit, Reference

READ_MAX_LINES = 2000
"""Lines ``read_file_content`` returns at most per call."""

READ_MAX_CHARS = 200_000
"""Characters ``read_file_content`` returns at most per call."""

QUOTED_QUERY_CHARS = 200
"""Characters of the query a search's text repeats (its structured ``query`` has all)."""

RunState = Literal["indexing", "ready", "failed"]
IndexState = Literal["not_indexed", "indexing", "ready", "failed"]

_SUMMARY_KEYS = (
    "mode",
    "seconds",
    "files_seen",
    "files_indexed",
    "files_unchanged",
    "files_removed",
    "files_recovered",
    "files_repaired",
    "repairs",
    "files_skipped",
    "skipped",
    "chunks",
    "chunks_with_errors",
    "chunks_per_second",
    "vectors",
    "batches",
    "commits",
    "stage_seconds",
    "stage_wall_seconds",
    "stage_overlap_seconds",
    "stage_rates",
    "cluster",
    "writer_worker",
    "embed_workers",
)
"""The keys of a run's stats that ``index_status`` and ``index_codebase`` show (spans,
examples and per-file detail stay in the manifest)."""


class HitOut(BaseModel):
    """One search hit."""

    path: str = Field(description="File path relative to the indexed root.")
    start_line: int = Field(description="First line of the item (1-based).")
    end_line: int = Field(description="Last line of the item (inclusive).")
    name: str
    qualname: str = Field(description="Qualified name, e.g. collections::binary_heap::push.")
    kind: str = Field(description="function, method, struct, enum, trait, impl, macro...")
    score: float
    signature: str = ""
    parent: str = Field(default="", description="Enclosing type or trait, if any.")
    snippet: str = Field(description="A few lines of the item from its signature on.")
    bm25_rank: int | None = None
    vector_rank: int | None = None
    id: str = Field(description="Chunk id.")

    @classmethod
    def of(cls, hit: Hit) -> HitOut:
        """From a library :class:`~rcm_dask.records.Hit`."""
        return cls(
            path=hit.path,
            start_line=hit.start_line,
            end_line=hit.end_line,
            name=hit.name,
            qualname=hit.qualname,
            kind=hit.kind,
            score=hit.score,
            signature=hit.signature,
            parent=hit.parent,
            snippet=hit.snippet,
            bm25_rank=hit.bm25_rank,
            vector_rank=hit.vector_rank,
            id=hit.id,
        )

    def render(self, rank: int) -> str:
        """The hit as a numbered heading and its indented snippet."""
        head = (
            f"{rank:>2}. {self.path}:{self.start_line}-{self.end_line}  "
            f"{self.kind} {self.qualname or self.name}  (score {self.score:.4f})"
        )
        body = "\n".join("      " + line for line in self.snippet.splitlines())
        return head + ("\n" + body if body else "")


class FileOut(BaseModel):
    """One file of a file-level search (``group="file"``)."""

    path: str = Field(description="File path relative to the indexed root.")
    score: float = Field(description="The score of its best item.")
    hits: list[HitOut] = Field(description="Its best items, best first.")

    def render(self, rank: int) -> str:
        """The file as a numbered line and one line per best item."""
        lines = [f"{rank:>2}. {self.path}  (score {self.score:.4f})"]
        lines += [
            f"      {h.start_line}-{h.end_line}  {h.kind} {h.qualname or h.name}"
            for h in self.hits
        ]
        return "\n".join(lines)


def _quoted(query: str) -> str:
    """The query as a search's text quotes it: a long one cut, with its length."""
    if len(query) <= QUOTED_QUERY_CHARS:
        return repr(query)
    return f"{query[:QUOTED_QUERY_CHARS]!r}... ({len(query):,} characters)"


class SearchOut(BaseModel):
    """What ``search`` and ``get_similar_code`` answer."""

    query: str
    directory: str = Field(description="The indexed root the hits' paths are relative to.")
    index_dir: str
    mode: str = Field(description="How the hits were ranked: hybrid, bm25 or vector.")
    hits: list[HitOut]
    notices: list[str] = Field(
        default_factory=list,
        description="What could not be done as asked (e.g. vectors busy: BM25 only).",
    )
    source: HitOut | None = Field(
        default=None, description="get_similar_code: the symbol's own item (left out of the hits)."
    )
    files: list[FileOut] | None = Field(
        default=None,
        description='search with group="file": one entry per file with its best items '
        "(hits then holds those items in file order).",
    )

    def __str__(self) -> str:
        what = f"similar to {self.source.qualname}" if self.source else f"for {_quoted(self.query)}"
        if self.files is not None:
            lines = [f"{len(self.files)} files {what} in {self.directory} ({self.mode}):"]
            lines += [f.render(i) for i, f in enumerate(self.files, 1)]
            lines += [f"Note: {n}" for n in self.notices]
            return "\n".join(lines)
        lines = [f"{len(self.hits)} hits {what} in {self.directory} ({self.mode}):"]
        if self.source is not None:
            lines[0] = (
                f"{len(self.hits)} items similar to {self.source.kind} {self.source.qualname} "
                f"({self.source.path}:{self.source.start_line}) in {self.directory}:"
            )
        lines += [h.render(i) for i, h in enumerate(self.hits, 1)]
        lines += [f"Note: {n}" for n in self.notices]
        return "\n".join(lines)


class RunOut(BaseModel):
    """An index run started by this server."""

    run_id: str
    state: RunState
    directory: str
    index_dir: str
    mode: str
    force: bool
    vectors: str = Field(
        default="qdrant", description="qdrant (embedded: hybrid and vector search) or none."
    )
    started: float = Field(description="Epoch seconds.")
    finished: float | None = None
    files_todo: int = Field(
        default=0, description="Files the run has to read (known once it started)."
    )
    files_done: int = Field(default=0, description="Files read and chunked so far.")
    chunks_embedded: int = 0
    chunks_written: int = Field(default=0, description="Chunks written to both stores so far.")
    error: str = Field(default="", description="Why the run failed.")
    stats: dict[str, Any] | None = Field(default=None, description="The finished run's stats.")

    def progress_line(self) -> str:
        """``12/40 files, 1,200 chunks written`` (or the outcome once finished)."""
        if self.state == "failed":
            return f"failed: {self.error}"
        done = f"{self.files_done}/{self.files_todo} files, {self.chunks_written:,} chunks written"
        if self.state == "ready":
            took = (self.finished or self.started) - self.started
            return f"finished in {took:.1f} s: {done}"
        return f"{done} ({time.time() - self.started:.0f} s so far)"


class IndexRunOut(BaseModel):
    """What ``index_codebase`` answers."""

    run_id: str = Field(description="Id of the run ('' when another process is indexing).")
    state: RunState
    directory: str
    index_dir: str
    message: str
    run: RunOut | None = None
    stats: dict[str, Any] | None = Field(
        default=None, description="The run's stats, once finished."
    )

    def __str__(self) -> str:
        lines = [self.message]
        if self.stats:
            lines.append(stats_line(self.stats))
        elif self.run is not None:
            lines.append(f"progress: {self.run.progress_line()}")
        return "\n".join(lines)


class IndexStatusOut(BaseModel):
    """What ``index_status`` answers."""

    state: IndexState = Field(
        description="not_indexed, indexing (a run is writing it), ready, or failed (the "
        "last run failed; see error)."
    )
    searchable: bool = Field(description="Whether search answers (from the last commit).")
    directory: str
    index_dir: str
    files: int = Field(default=0, description="Files committed to the index.")
    chunks: int = Field(default=0, description="Chunks committed to the index.")
    pending: int = Field(default=0, description="Files an interrupted run left half-written.")
    updated: float | None = Field(default=None, description="Epoch seconds of the last commit.")
    writer: str = Field(default="", description="Who is writing the index now, if anyone.")
    identity: dict[str, Any] = Field(
        default_factory=dict, description="Model, dimensions, chunker version, root."
    )
    vectors: str = Field(
        default="",
        description="What the index keeps besides BM25: qdrant (hybrid and vector search) or "
        "none (keyword-only: BM25 search and code navigation, no vector search); '' when "
        "nothing is committed.",
    )
    last_run: dict[str, Any] | None = Field(
        default=None, description="The last finished run's stats, stage metrics included."
    )
    run: RunOut | None = Field(
        default=None, description="This server's latest run of the directory."
    )
    error: str = ""
    message: str

    def __str__(self) -> str:
        lines = [f"{self.directory}: {self.state}. {self.message}"]
        if self.state != "not_indexed":
            lines.append(f"index: {self.index_dir}")
            lines.append(f"committed: {self.files:,} files, {self.chunks:,} chunks")
        if self.updated:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.updated))
            lines.append(f"updated: {when}")
        if self.identity and self.vectors == "none":
            lines.append(
                "vectors: none (keyword-only: search uses BM25, code navigation works, "
                f"no vector search), chunker v{self.identity.get('chunker_version')}"
            )
        elif self.identity:
            ident = self.identity
            lines.append(
                f"model: {ident.get('model')} ({ident.get('dimensions')} dims), "
                f"chunker v{ident.get('chunker_version')}"
            )
        if self.run is not None and self.run.state == "indexing":
            lines.append(f"run {self.run.run_id}: {self.run.progress_line()}")
        if self.last_run:
            lines.append("last run: " + stats_line(self.last_run))
        return "\n".join(lines)


class FileContentOut(BaseModel):
    """What ``read_file_content`` answers."""

    path: str = Field(description="Path relative to the indexed root.")
    directory: str = Field(description="The indexed root.")
    start_line: int
    end_line: int = Field(description="Last line returned (inclusive; 0 for an empty file).")
    total_lines: int
    truncated: bool = Field(description="Whether the range was cut at the size limit.")
    next_start_line: int | None = Field(
        default=None, description="Where to continue when truncated."
    )
    content: str = Field(description="The lines, without line numbers.")

    def __str__(self) -> str:
        width = len(str(max(self.end_line, 1)))
        rows = self.content.split("\n") if self.content else []
        if rows and rows[-1] == "" and self.content.endswith("\n"):
            rows.pop()
        numbered = [f"{n:>{width}} | {row}" for n, row in enumerate(rows, self.start_line)]
        head = (
            f"{self.path} (lines {self.start_line}-{self.end_line} of {self.total_lines}, "
            f"root {self.directory})"
        )
        tail = []
        if self.truncated:
            tail = [
                (
                    f"[truncated at the {READ_MAX_LINES}-line / {READ_MAX_CHARS:,}-character "
                    f"limit: call again with start_line={self.next_start_line}]"
                )
            ]
        return "\n".join([head, *numbered, *tail])


class _Rendered(BaseModel):
    """A result whose text rendering is built with it (from the records' own ``__str__``)."""

    _text: str = PrivateAttr(default="")

    def with_text(self, text: str) -> Self:
        """Set the text rendering; returns self."""
        self._text = text
        return self

    def __str__(self) -> str:
        return self._text


class DefinitionsOut(_Rendered):
    """What ``find_definition`` answers."""

    symbol: str
    directory: str
    definitions: list[Definition] = Field(
        description="Best match first: exact qualified name, then suffix, then bare name."
    )


class ReferencesOut(_Rendered):
    """What ``find_references`` answers."""

    symbol: str
    directory: str
    references: list[Reference] = Field(
        description="Resolved uses first (confidence exact, scope), then same-name uses."
    )


class CallGraphOut(_Rendered):
    """What ``get_call_graph`` answers."""

    directory: str
    graph: CallGraph


class DependenciesOut(_Rendered):
    """What ``get_dependencies`` answers."""

    directory: str
    dependencies: FileDependencies


class ComplexityOut(_Rendered):
    """What ``analyze_complexity`` answers."""

    directory: str
    complexity: FileComplexity


class ComponentHealth(BaseModel):
    """One component of ``health_check``."""

    ok: bool
    detail: str
    info: dict[str, Any] = Field(default_factory=dict)


class IndexHealth(BaseModel):
    """The stores of one index, for ``health_check``."""

    directory: str
    index_dir: str
    state: IndexState
    bm25: ComponentHealth
    vectors: ComponentHealth


class HealthOut(BaseModel):
    """What ``health_check`` answers."""

    ok: bool = Field(description="Model and cluster work, and no index store is broken.")
    model: ComponentHealth
    cluster: ComponentHealth
    indexes: list[IndexHealth]
    versions: dict[str, str]

    def __str__(self) -> str:
        def mark(ok: bool) -> str:
            return "ok  " if ok else "FAIL"

        lines = [f"rcm-dask health: {'ok' if self.ok else 'PROBLEMS FOUND'}"]
        lines.append(f"  [{mark(self.model.ok)}] model: {self.model.detail}")
        lines.append(f"  [{mark(self.cluster.ok)}] cluster: {self.cluster.detail}")
        if not self.indexes:
            lines.append("  no indexes yet")
        for ix in self.indexes:
            lines.append(f"  index of {ix.directory} ({ix.state}):")
            lines.append(f"    [{mark(ix.bm25.ok)}] bm25: {ix.bm25.detail}")
            lines.append(f"    [{mark(ix.vectors.ok)}] vectors: {ix.vectors.detail}")
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        return "\n".join(lines)


def stats_line(stats: dict[str, Any]) -> str:
    """One line of a run's stats: files, chunks, time, stage busy seconds."""
    line = (
        f"{stats.get('mode', '?')} mode: {stats.get('files_indexed', 0)} files indexed, "
        f"{stats.get('files_unchanged', 0)} unchanged, {stats.get('files_removed', 0)} removed, "
        f"{stats.get('files_skipped', 0)} skipped; {int(stats.get('chunks') or 0):,} chunks in "
        f"{float(stats.get('seconds') or 0.0):.1f} s"
    )
    stages = stats.get("stage_seconds") or {}
    if stages:
        line += " (busy s: " + ", ".join(f"{k} {float(v):.1f}" for k, v in stages.items()) + ")"
    return line


def run_summary(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a run's stats worth showing an agent (see :data:`_SUMMARY_KEYS`)."""
    if not stats:
        return None
    return {k: stats[k] for k in _SUMMARY_KEYS if k in stats}
