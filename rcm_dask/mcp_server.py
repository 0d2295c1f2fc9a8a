"""The MCP server: rcm_dask's index, search and code-intelligence tools for AI coding agents.

``rcm-dask mcp`` serves these tools over stdio (what MCP clients such as Claude Desktop
start); ``rcm-dask mcp --http --port N`` serves them over streamable HTTP on 127.0.0.1.
Each tool is a thin call into the library with a typed input schema, a structured
result (its JSON schema is the tool's output schema) and a readable text rendering:

=====================  ====================================================================
index_codebase         index a folder (incremental); long runs go on in the background
index_status           not_indexed / indexing (progress) / ready / failed (why), counts
search                 hybrid, BM25 or vector search, kind and path filters
get_similar_code       code that means the same as a fragment, or as a named symbol
find_definition        where a symbol is defined (file, lines, signature)
find_references        where a symbol is used
get_call_graph         callers and callees of a function, to a depth
get_dependencies       a file's ``use`` imports and the files that import it
analyze_complexity     lines, items by kind, cyclomatic complexity per function
read_file_content      lines of an indexed file, a Cargo.toml or a README (nothing else)
health_check           both stores of each index, the model, the Dask cluster, versions
=====================  ====================================================================

Index runs go to a child process (``python -c`` calling :func:`run_index_child`), not
to a thread of the server: a run's reading, chunking and embedding would hold the GIL
and the cores the server needs to answer, a run may start a LocalCluster whose worker
processes write to the standard streams (in stdio mode the server's stdout is the
protocol), and a child can be interrupted like ``rcm-dask index`` (SIGINT: it commits
what it wrote and stops) and can die without taking the server with it. The child
reports its progress as JSON lines on its own stdout pipe, everything else it or its
workers print goes to stderr, and the server keeps a registry of its runs.

What ``index_status`` says is derived from the index folder itself (the committed
manifest, the run lock, which also shows runs started by ``rcm-dask index`` in another
process) and from the registry (a failed run and its reason), and every tool that
reads an index goes through the same derivation, so the status never says ``ready``
while a search would refuse.

A keyword-only index (``index_codebase(directory, vectors="none")``: nothing embedded,
for huge codebases) serves ``search`` from BM25 (hybrid says so in its notices), every
code-intelligence tool and ``read_file_content``; ``search`` in vector mode and
``get_similar_code`` refuse, naming the rebuild that would give them vectors.

The user, not the agent, decides where the tools may go (:mod:`rcm_dask.roots`): every
``directory`` and absolute ``file`` argument must lie inside the allowed roots
(``rcm-dask mcp --root DIR``, ``RCM_MCP_ROOTS``, else the working directory; narrowed by
the client's roots when it offers them), symlinks resolved. A folder becomes readable
only once it has a committed index inside them (a failed or unfinished first run makes
nothing readable), and ``read_file_content`` returns only what that index covers: its
``.rs`` files, ``Cargo.toml`` files and the README files of the root and of crate folders,
never a file whose name or content looks like a secret.

Errors come back as MCP tool errors (``is_error``) with the library's message; an
unexpected exception is logged with its traceback to stderr and reported as its type
and message. Nothing is ever printed to stdout.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import posixpath
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar

import anyio
import anyio.to_thread
import pathspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    CallToolResult,
    ListRootsRequest,
    ListRootsResult,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field, PrivateAttr

from . import __version__
from .config import IndexConfig
from .embedding import Embedder
from .errors import IndexNotFoundError, RcmError, RootNotAllowedError, SourceError
from .records import (
    CHUNK_KINDS,
    CallGraph,
    Definition,
    FileComplexity,
    FileDependencies,
    Hit,
    IndexStats,
    Reference,
)
from .roots import HOW_TO_ALLOW, AllowedRoots
from .search import SearchIndex, list_indexes, resolve_index_dir, snippet_of
from .sources import SENSITIVE_CONTENT_PATTERNS, SENSITIVE_NAME_PATTERNS, open_root
from .stores.lock import describe_holder, is_locked, read_holder
from .stores.manifest import Manifest, read_identity
from .writer import vectors_setting

if TYPE_CHECKING:
    from .intel import CodeIntel

logger = logging.getLogger("rcm_dask.mcp")

SERVER_NAME = "rcm-dask"
DEFAULT_PORT = 8765
"""Port of ``rcm-dask mcp --http`` unless ``--port`` says otherwise."""

QUICK_RUN_SECONDS = 5.0
"""``index_codebase`` waits this long for a run to finish before answering with its run
id; a re-run that finds nothing changed answers with its final stats well within it."""

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress reports of an index child process."""

READ_MAX_LINES = 2000
"""Lines ``read_file_content`` returns at most per call."""

READ_MAX_CHARS = 200_000
"""Characters ``read_file_content`` returns at most per call."""

CLIENT_ROOTS_TIMEOUT = 10.0
"""Seconds a client that offers the roots capability has to list its roots."""

CLUSTER_PROBE_TTL = 600.0
"""Seconds a LocalCluster probe of ``health_check`` stays valid (starting one costs seconds)."""

CLUSTER_PROBE_TIMEOUT = 120.0
"""Seconds the LocalCluster probe may take before it counts as failed."""

STOP_SECONDS = 5.0
"""How long the server waits, when it stops, for its interrupted index runs to commit."""

RunState = Literal["indexing", "ready", "failed"]
IndexState = Literal["not_indexed", "indexing", "ready", "failed"]
SearchMode = Literal["hybrid", "bm25", "vector"]
SearchGroup = Literal["item", "file"]
IndexMode = Literal["auto", "sequential", "parallel", "pipeline"]
VectorsSetting = Literal["qdrant", "none"]

_SENSITIVE_NAMES = pathspec.GitIgnoreSpec.from_lines(SENSITIVE_NAME_PATTERNS)
_SYMBOL = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)*!?$")
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


# --------------------------------------------------------------------------- results


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
        what = f"similar to {self.source.qualname}" if self.source else f"for {self.query!r}"
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
            lines.append(_stats_line(self.stats))
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
            lines.append("last run: " + _stats_line(self.last_run))
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


def _stats_line(stats: dict[str, Any]) -> str:
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


def _summary(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a run's stats worth showing an agent (see :data:`_SUMMARY_KEYS`)."""
    if not stats:
        return None
    return {k: stats[k] for k in _SUMMARY_KEYS if k in stats}


# --------------------------------------------------------------------------- index runs


@dataclass
class IndexRun:
    """One index run in a child process, as the server tracks it."""

    run_id: str
    directory: str
    index_dir: Path
    mode: str
    force: bool
    vectors: str
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)
    state: RunState = "indexing"
    progress: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] | None = None
    error: str = ""
    finished: float | None = None
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=20)
    )
    done: threading.Event = field(default_factory=threading.Event)

    def out(self) -> RunOut:
        """The run as a result record."""
        p = self.progress
        return RunOut(
            run_id=self.run_id,
            state=self.state,
            directory=self.directory,
            index_dir=str(self.index_dir),
            mode=self.mode,
            force=self.force,
            vectors=self.vectors,
            started=self.started,
            finished=self.finished,
            files_todo=int(p.get("files_todo", 0)),
            files_done=int(p.get("files_done", 0)),
            chunks_embedded=int(p.get("chunks_embedded", 0)),
            chunks_written=int(p.get("chunks", 0)),
            error=self.error,
            stats=_summary(self.stats),
        )


def _progress_of(stats: IndexStats) -> dict[str, Any]:
    """The running counts an index child reports."""
    return {
        "files_todo": stats.files_todo,
        "files_done": stats.files_done,
        "files_read": stats.files_read,
        "chunks_made": stats.chunks_made,
        "chunks_embedded": stats.chunks_embedded,
        "chunks": stats.chunks,
        "mode": stats.mode,
    }


def run_index_child(spec_json: str) -> int:
    """Body of an index child process: run :func:`rcm_dask.index` and report on stdout.

    Writes JSON lines to the stdout the server reads: ``{"event": "progress", ...}``
    as work completes, then one ``{"event": "done", "stats": ...}`` or
    ``{"event": "failed", "error": ...}``. Everything else written to stdout, by
    libraries or by Dask worker processes, lands on stderr.

    Parameters
    ----------
    spec_json
        ``{"directory", "index_dir", "mode", "force", "vectors"}`` as JSON.

    Returns
    -------
    int
        The exit status: 0 done, 1 failed, 130 interrupted.
    """
    spec = json.loads(spec_json)
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    # fd 1 (and so the stdout of every process started from here) becomes stderr
    os.dup2(2, 1)
    # a server started with SIGINT ignored must still be able to interrupt its runs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # the lock note names this run for `rcm-dask status` and for a blocked `rcm-dask index`
    sys.argv = ["rcm-dask mcp", "index_codebase", str(spec["directory"])]

    def emit(event: dict[str, Any]) -> None:
        channel.write(json.dumps(event, default=str) + "\n")
        channel.flush()

    last = [0.0]

    def progress(stats: IndexStats, path: str) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            emit({"event": "progress", "progress": _progress_of(stats)})

    from .modes import index

    try:
        stats = index(
            str(spec["directory"]),
            mode=str(spec["mode"]),
            force=bool(spec["force"]),
            index_dir=str(spec["index_dir"]),
            vectors=spec.get("vectors"),
            progress=progress,
        )
    except RcmError as e:
        emit({"event": "failed", "error": str(e)})
        return 1
    except KeyboardInterrupt as e:
        emit({"event": "failed", "error": str(e) or "interrupted"})
        return 130
    except Exception as e:
        traceback.print_exc()
        emit({"event": "failed", "error": f"{type(e).__name__}: {e}"})
        return 1
    emit({"event": "progress", "progress": _progress_of(stats)})
    emit({"event": "done", "stats": stats.to_dict()})
    return 0


_CHILD_CODE = (
    "import sys\n"
    "from rcm_dask.mcp_server import run_index_child\n"
    "sys.exit(run_index_child(sys.argv[1]))\n"
)


def _start_run(
    directory: str, index_dir: Path, mode: str, force: bool, vectors: str = "qdrant"
) -> IndexRun:
    """Start an index child process and the threads that follow it."""
    spec = {
        "directory": directory,
        "index_dir": str(index_dir),
        "mode": mode,
        "force": force,
        "vectors": vectors,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE, json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # same process group as the server: a client that kills the server's group,
        # or Ctrl-C in the server's terminal, reaches the run too
    )
    run = IndexRun(
        run_id=uuid.uuid4().hex[:12],
        directory=directory,
        index_dir=index_dir,
        mode=mode,
        force=force,
        vectors=vectors,
        process=process,
    )
    threading.Thread(target=_follow_stderr, args=(run,), daemon=True).start()
    threading.Thread(target=_follow_stdout, args=(run,), daemon=True).start()
    return run


def _follow_stderr(run: IndexRun) -> None:
    """Pass a child's stderr on to the server's, keeping its last lines for errors."""
    assert run.process.stderr is not None
    for raw in run.process.stderr:
        line = raw.decode("utf-8", errors="replace")
        run.stderr_tail.append(line.rstrip())
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(line)
            sys.stderr.flush()
    # at EOF: closed here, not whenever the run record is collected (a ResourceWarning)
    run.process.stderr.close()


def _follow_stdout(run: IndexRun) -> None:
    """Read a child's events until it exits, then settle the run's final state."""
    assert run.process.stdout is not None
    final: dict[str, Any] | None = None
    for raw in run.process.stdout:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "progress":
            run.progress = dict(event.get("progress") or {})
        elif event.get("event") in ("done", "failed"):
            final = event
    run.process.stdout.close()
    code = run.process.wait()
    if final is not None and final["event"] == "done":
        run.stats = dict(final.get("stats") or {})
    else:
        run.error = (
            str(final.get("error"))
            if final is not None
            else (
                f"the index process exited with status {code} without a result"
                + (f" (last output: {run.stderr_tail[-1]})" if run.stderr_tail else "")
            )
        )
    run.finished = time.time()
    # state last: readers that see "ready" or "failed" find the rest already set
    run.state = "ready" if run.stats is not None else "failed"
    run.done.set()


# --------------------------------------------------------------------------- searchers


class _ServerIndex(SearchIndex):
    """A long-lived :class:`SearchIndex` that lets go of the vector store between queries."""

    def release_vectors(self) -> None:
        """Close the vector store (reopened by the next vector query).

        The embedded Qdrant engine admits one process at a time: held between
        queries, it would make every ``rcm-dask index`` run of this index wait."""
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None

    def loaded_embedder(self) -> Embedder | None:
        """The query embedder if one was built (its model stays loaded for the next searcher)."""
        return self._embedder


@dataclass
class _Searcher:
    """The cached read side of one index, and the lock that serialises its queries."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    index: _ServerIndex | None = None
    updated: object = None


def _manifest_updated(index_dir: Path) -> object:
    """The manifest's ``updated`` mark (None before the first commit)."""
    try:
        manifest = Manifest(index_dir, readonly=True)
    except sqlite3.Error:
        return None
    try:
        return manifest.get_meta("updated")
    except sqlite3.Error:
        return None
    finally:
        manifest.close()


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class _Located:
    """A file resolved inside an indexed root."""

    root: str
    """The indexed root (real path)."""
    index_dir: Path
    """Its index folder."""
    rel: str
    """Root-relative posix path."""
    real: Path
    """The file's real path (symlinks resolved), inside the root."""


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _inside_hint(root: str, indexed: list[tuple[str, Path]]) -> str:
    """`` (it lies inside the indexed codebase X: pass that folder)``, or ''."""
    outer = [r for r, _ in indexed if _inside(root, r) and r != root]
    return f" (it lies inside the indexed codebase {outer[0]}: pass that folder)" if outer else ""


def _is_crate_file(root: str, rel: str) -> bool:
    """Whether a root-relative path is a ``Cargo.toml``, or a ``README*`` of the root or of a
    crate folder (one holding a ``Cargo.toml``)."""
    folder, name = posixpath.split(rel)
    if name == "Cargo.toml":
        return True
    if not name.lower().startswith("readme"):
        return False
    return not folder or os.path.isfile(os.path.join(root, folder, "Cargo.toml"))


def _in_manifest(index_dir: Path, rel: str) -> bool:
    """Whether the committed manifest of an index records the file."""
    try:
        manifest = Manifest(index_dir, readonly=True)
    except sqlite3.Error:
        return False
    try:
        return manifest.get(rel) is not None
    except sqlite3.Error:
        return False
    finally:
        manifest.close()


def _is_sensitive_name(rel: str) -> str:
    """Why a root-relative path must not be read ('' when it may be)."""
    parts = rel.split("/")
    if ".git" in parts[:-1]:
        return "it is inside a .git folder (which can hold credentials)"
    if _SENSITIVE_NAMES.match_file(parts[-1]) or _SENSITIVE_NAMES.match_file(rel):
        return "its name looks like a secret"
    return ""


# --------------------------------------------------------------------------- the tools


_Out = TypeVar("_Out", bound=BaseModel)


class CodeTools:
    """The tools as plain methods: state (runs, cached searchers) and the work of each.

    The MCP layer (:func:`build_server`) only renders what these return; tests and
    other front ends can call them directly.

    Every folder a tool touches must lie inside the allowed roots: :attr:`roots`, or the
    narrower ``roots`` a call passes (the user's narrowed by the MCP client's, see
    :mod:`rcm_dask.roots`). Files are read only from indexed roots (a committed index)
    inside them.

    Parameters
    ----------
    config
        Search settings and model (default: from ``RCM_*`` variables).
    roots
        The folders the user allows (default: :meth:`AllowedRoots.from_settings`:
        ``RCM_MCP_ROOTS``, else the working directory).
    """

    def __init__(
        self, config: IndexConfig | None = None, roots: AllowedRoots | None = None
    ) -> None:
        self.config = config or IndexConfig.from_env()
        self.roots = roots if roots is not None else AllowedRoots.from_settings()
        self._lock = threading.Lock()
        self._runs: dict[Path, IndexRun] = {}
        self._searchers: dict[Path, _Searcher] = {}
        self._model_health: ComponentHealth | None = None
        self._cluster_health: tuple[float, ComponentHealth] | None = None
        self._health_lock = threading.Lock()

    # ----------------------------------------------------------------- resolving

    def _allowed(self, roots: AllowedRoots | None) -> AllowedRoots:
        """The roots a call may use: its own (narrowed by the client), else the user's."""
        return self.roots if roots is None else roots

    def _resolve(self, directory: str, roots: AllowedRoots | None = None) -> tuple[str, Path]:
        """(root, index folder) of a codebase folder inside the allowed roots.

        Refuses a folder outside them (RootNotAllowedError, before looking whether it
        exists: no probing outside) and a folder that does not exist (SourceError)."""
        allowed = self._allowed(roots)
        text = (directory or "").strip()
        if not text:
            raise SourceError("directory is empty: give the folder of the codebase")
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif "://" in text:
            raise SourceError(
                f"{directory} is not a local folder: this server indexes and reads local "
                f"folders only, inside {allowed.describe()}"
            )
        real = allowed.check(text, what=directory.strip())
        root = open_root(real)
        return root.url, resolve_index_dir(path=root.url)

    def _indexed(
        self, roots: AllowedRoots | None = None, *, committed: bool = True
    ) -> list[tuple[str, Path]]:
        """Indexed local roots inside the allowed roots and their index folders, most
        recently updated first; only those with a commit unless ``committed`` is False.

        Only a commit makes a folder readable: a run that is starting, still writing its
        first batch, or failed registers nothing."""
        allowed = self._allowed(roots)
        seen: dict[str, Path] = {}
        for entry in list_indexes():
            root = str(entry.get("root") or "")
            if not root.startswith("/") or root in seen or not allowed.contains(root):
                continue
            index_dir = Path(str(entry["index_dir"]))
            if committed and _manifest_updated(index_dir) is None:
                continue
            seen[root] = index_dir
        return list(seen.items())

    def _locate(
        self, file: str, directory: str | None, roots: AllowedRoots | None = None
    ) -> _Located:
        """Resolve a file argument to a path inside an indexed root, refusing escapes.

        Accepts a path relative to the root, or an absolute path inside it. Refuses
        ``..`` components, absolute paths outside the allowed roots or outside every
        indexed root, and paths whose real location (symlinks resolved) leaves the root.
        """
        allowed = self._allowed(roots)
        text = file.strip()
        if not text:
            raise SourceError("file is empty: give a path relative to the indexed root")
        if "\x00" in text:
            raise SourceError("file contains a NUL byte")
        parts = text.replace("\\", "/").split("/")
        if ".." in parts:
            raise SourceError(
                f"refused {file!r}: '..' is not allowed; give a path inside the indexed root"
            )
        if os.path.isabs(text):
            allowed.check(text, what=repr(file))
        indexed = self._indexed(allowed)
        if directory is not None and directory.strip():
            root_url, index_dir = self._resolve(directory, allowed)
            if root_url not in dict(indexed):
                raise IndexNotFoundError(
                    f"{root_url} is not an indexed codebase: files are read only from a "
                    f"folder with a committed index; call index_codebase({root_url!r}) first"
                    + _inside_hint(root_url, indexed)
                )
            candidates = [(root_url, index_dir)]
        else:
            candidates = indexed
            if not allowed.paths:
                raise RootNotAllowedError(f"refused {file!r}: {allowed.note}")
            if not candidates:
                raise IndexNotFoundError(
                    "no codebase is indexed yet inside the allowed roots "
                    f"({allowed.describe()}): call index_codebase(directory) first"
                )
        if os.path.isabs(text):
            path = os.path.normpath(text)
            inside = [(r, d) for r, d in candidates if _inside(path, r)]
            if not inside:
                # the same place spelled through a symlinked ancestor of the root
                # (/tmp -> /private/tmp): judged by where it really is
                path = os.path.realpath(path)
                inside = [(r, d) for r, d in candidates if _inside(path, os.path.realpath(r))]
            if not inside:
                listed = ", ".join(r for r, _ in candidates)
                raise SourceError(
                    f"refused {file!r}: it is outside the indexed root(s) ({listed}); only "
                    "files inside an indexed codebase can be read"
                )
            root, index_dir = max(inside, key=lambda c: len(c[0]))
            rel = os.path.relpath(path, root if _inside(path, root) else os.path.realpath(root))
        else:
            rel = posixpath.normpath(text.replace("\\", "/"))
            found = [(r, d) for r, d in candidates if os.path.lexists(os.path.join(r, rel))]
            if not found:
                listed = ", ".join(r for r, _ in candidates)
                raise SourceError(
                    f"{file!r} is not in any indexed root ({listed}): give a path relative to "
                    "the root, or pass directory"
                )
            if len(found) > 1:
                listed = ", ".join(r for r, _ in found)
                raise SourceError(
                    f"{file!r} exists in several indexed roots ({listed}): pass directory, or "
                    "give an absolute path"
                )
            root, index_dir = found[0]
        rel = rel.replace(os.sep, "/")
        real = os.path.realpath(os.path.join(root, rel))
        real_root = os.path.realpath(root)
        if not _inside(real, real_root) or not allowed.contains(real):
            raise SourceError(
                f"refused {file!r}: it is a symlink (or under one) that resolves to {real}, "
                f"outside the indexed root {root}"
            )
        return _Located(root=root, index_dir=index_dir, rel=rel, real=Path(real))

    # ----------------------------------------------------------------- state

    def _latest_run(self, index_dir: Path) -> IndexRun | None:
        """This server's latest run of an index, if any."""
        with self._lock:
            return self._runs.get(index_dir)

    def status(self, directory: str, *, roots: AllowedRoots | None = None) -> IndexStatusOut:
        """The state of a codebase's index (see :meth:`_state`)."""
        root, index_dir = self._resolve(directory, roots)
        return self._state(root, index_dir)

    def _state(self, root: str, index_dir: Path) -> IndexStatusOut:
        """Derive the state from the folder's committed state, its lock and our runs.

        Everything that reads an index asks this first, so that ``index_status`` and
        the other tools always agree.
        """
        run = self._latest_run(index_dir)
        running = run is not None and run.state == "indexing"
        locked = is_locked(index_dir)
        info: dict[str, Any] | None = None
        try:
            with SearchIndex(index_dir, self.config) as idx:
                info = idx.status()
        except IndexNotFoundError:
            info = None
        except (sqlite3.Error, OSError, ValueError) as e:
            # the first run of a folder creates the stores before its first commit
            if not (running or locked):
                raise RcmError(f"cannot read the index at {index_dir}: {e}") from e
            info = None
        updated = info.get("updated") if info else None
        committed = bool(info) and updated is not None
        common: dict[str, Any] = {
            "directory": root,
            "index_dir": str(index_dir),
            "run": run.out() if run is not None else None,
        }
        if info:
            common.update(
                files=int(info.get("files") or 0),
                chunks=int(info.get("chunks") or 0),
                pending=int(info.get("pending") or 0),
                updated=float(updated) if updated is not None else None,
                identity=dict(info.get("identity") or {}),
                vectors=str(info.get("vectors") or ""),
                last_run=_summary(info.get("last_run")),
            )
        if running or locked:
            who = (
                f"run {run.run_id} of this server"
                if running and run is not None
                else describe_holder(read_holder(index_dir))
            )
            common["writer"] = who
            then = (
                "search answers from the last commit meanwhile"
                if committed
                else "nothing is committed yet, so search waits for it"
            )
            return IndexStatusOut(
                state="indexing",
                searchable=committed,
                message=f"Being indexed by {who}; {then}. Poll index_status until ready.",
                **common,
            )
        if (
            run is not None
            and run.state == "failed"
            and (not committed or float(str(updated)) <= (run.finished or 0.0))
        ):
            then = (
                "search answers from the last commit"
                if committed
                else "nothing is committed, so search refuses"
            )
            return IndexStatusOut(
                state="failed",
                searchable=committed,
                error=run.error,
                message=f"The last index run failed: {run.error} ({then}; call "
                "index_codebase again once the cause is fixed).",
                **common,
            )
        if committed:
            assert info is not None
            pending = int(info.get("pending") or 0)
            note = (
                f" {pending} files were left half-written by an interrupted run; "
                "index_codebase finishes them."
                if pending
                else ""
            )
            return IndexStatusOut(
                state="ready",
                searchable=True,
                message=f"Indexed: {common['files']:,} files, {common['chunks']:,} chunks.{note}",
                **common,
            )
        return IndexStatusOut(
            state="not_indexed",
            searchable=False,
            message=f"Not indexed yet: call index_codebase({root!r}).",
            **common,
        )

    def _require_searchable(
        self, root: str, index_dir: Path, roots: AllowedRoots | None = None
    ) -> list[str]:
        """Refuse unless the index has a commit; notices to pass on otherwise."""
        state = self._state(root, index_dir)
        if state.searchable:
            if state.state == "indexing":
                return [
                    (
                        f"an index run is writing this index ({state.writer}): results come "
                        f"from its last commit ({state.files:,} files)"
                    )
                ]
            if state.state == "failed":
                return [
                    f"the last index run failed ({state.error}): results come from the last commit"
                ]
            return []
        if state.state == "indexing":
            raise IndexNotFoundError(
                f"{root} is being indexed and nothing is committed yet (busy: "
                f"{state.writer}); poll index_status({root!r}) until it is ready"
            )
        if state.state == "failed":
            raise IndexNotFoundError(f"{root} is not indexed: the index run failed ({state.error})")
        hint = _inside_hint(root, self._indexed(roots))
        raise IndexNotFoundError(
            f"{root} is not indexed yet{hint}: call index_codebase({root!r}) first"
        )

    @contextlib.contextmanager
    def _searching(self, index_dir: Path) -> Iterator[_ServerIndex]:
        """The cached searcher of an index, reopened when a commit changed it."""
        with self._lock:
            entry = self._searchers.setdefault(index_dir, _Searcher())
        with entry.lock:
            updated = _manifest_updated(index_dir)
            if entry.index is None or updated != entry.updated:
                old = entry.index
                fresh = _ServerIndex(index_dir, self.config)
                if old is not None:
                    if old.identity.get("model_fingerprint") == fresh.identity.get(
                        "model_fingerprint"
                    ):
                        # same model: keep the loaded one (the check is redone on first use)
                        fresh.close()
                        fresh = _ServerIndex(index_dir, self.config, embedder=old.loaded_embedder())
                    old.close()
                entry.index, entry.updated = fresh, updated
            try:
                yield entry.index
            finally:
                entry.index.release_vectors()

    # ----------------------------------------------------------------- tools

    def index_codebase(
        self,
        directory: str,
        mode: str = "pipeline",
        force: bool = False,
        wait_seconds: float = QUICK_RUN_SECONDS,
        vectors: str | None = None,
        *,
        roots: AllowedRoots | None = None,
    ) -> IndexRunOut:
        """Start (or join) an index run; answer with its outcome, or with its run id when
        it is still going after ``wait_seconds``.

        ``vectors`` None keeps what the index was built with (a plain re-run of a
        keyword-only index stays keyword-only), and for a new index (or with ``force``)
        takes the server's setting (``RCM_VECTORS``, else ``qdrant``). The folder must lie
        inside the allowed roots; it becomes readable once the run has committed."""
        root, index_dir = self._resolve(directory, roots)
        index_dir = index_dir.absolute()
        if vectors is None:
            stored = None if force else read_identity(index_dir)
            vectors = vectors_setting(stored) if stored is not None else self.config.vectors
        with self._lock:
            run = self._runs.get(index_dir)
            if run is not None and run.state == "indexing":
                return IndexRunOut(
                    run_id=run.run_id,
                    state="indexing",
                    directory=root,
                    index_dir=str(index_dir),
                    message=f"Already indexing {root} (run {run.run_id}): poll index_status.",
                    run=run.out(),
                )
            if is_locked(index_dir):
                who = describe_holder(read_holder(index_dir))
                return IndexRunOut(
                    run_id="",
                    state="indexing",
                    directory=root,
                    index_dir=str(index_dir),
                    message=f"{root} is being indexed by {who}; poll index_status until it is "
                    "ready, then call index_codebase again if files changed meanwhile.",
                )
            run = _start_run(root, index_dir, mode, force, vectors)
            self._runs[index_dir] = run
        run.done.wait(max(0.0, wait_seconds))
        if run.state == "failed":
            raise RcmError(f"indexing {root} failed: {run.error}")
        if run.state == "ready":
            return IndexRunOut(
                run_id=run.run_id,
                state="ready",
                directory=root,
                index_dir=str(index_dir),
                message=f"Indexed {root} (run {run.run_id}).",
                run=run.out(),
                stats=_summary(run.stats),
            )
        return IndexRunOut(
            run_id=run.run_id,
            state="indexing",
            directory=root,
            index_dir=str(index_dir),
            message=f"Indexing {root} in the background (run {run.run_id}): poll "
            "index_status until its state is ready.",
            run=run.out(),
        )

    def search(
        self,
        query: str,
        directory: str,
        limit: int = 10,
        kind: str | None = None,
        path_glob: str | None = None,
        mode: str = "hybrid",
        group: str = "item",
        *,
        roots: AllowedRoots | None = None,
    ) -> SearchOut:
        """Search one index (``group="file"``: one entry per file)."""
        root, index_dir = self._resolve(directory, roots)
        notices = self._require_searchable(root, index_dir, roots)
        kinds = _kinds(kind)
        files: list[FileOut] | None = None
        with self._searching(index_dir) as idx:
            if group == "file":
                found = idx.search_files(
                    query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob
                )
                files = [
                    FileOut(path=f.path, score=f.score, hits=[HitOut.of(h) for h in f.hits])
                    for f in found
                ]
                hits = [h for f in found for h in f.hits]
            else:
                hits = idx.search(query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob)
            notices += idx.notices
        used = "bm25" if mode == "hybrid" and any("BM25 only" in n for n in notices) else mode
        return SearchOut(
            query=query,
            directory=root,
            index_dir=str(index_dir),
            mode=used,
            hits=[HitOut.of(h) for h in hits],
            notices=notices,
            files=files,
        )

    def get_similar_code(
        self,
        code_or_symbol: str,
        directory: str,
        limit: int = 10,
        *,
        roots: AllowedRoots | None = None,
    ) -> SearchOut:
        """Vector search from a code fragment, or from a named symbol's own code."""
        root, index_dir = self._resolve(directory, roots)
        notices = self._require_searchable(root, index_dir, roots)
        text = code_or_symbol.strip()
        if not text:
            raise RcmError("code_or_symbol is empty: give a code fragment or a symbol name")
        with self._searching(index_dir) as idx:
            if idx.keyword_only:
                raise RcmError(
                    f"get_similar_code compares meanings, and the index of {root} is "
                    "keyword-only (built with vectors='none'): it has no vectors. Use search "
                    f"(BM25), or rebuild it with index_codebase({root!r}, vectors='qdrant', "
                    "force=True)."
                )
            source: dict[str, Any] | None = None
            if _SYMBOL.match(text):
                source, others = _find_symbol(idx, text)
                if source is not None and others:
                    notices.append(
                        f"{others + 1} items are named {text}; using {source['qualname']} "
                        f"({source['path']}:{source['start_line']}): pass a qualified name "
                        "(Type::method) to pick another"
                    )
            query = str(source["code"]) if source is not None else text
            # the symbol's own item comes back first: ask for enough to leave it out
            # nearest in meaning, as the vectors have it: no question-answering steps
            hits = idx.search(query, limit=limit + 5, mode="vector", ranking="none")
            notices += idx.notices
        src = _payload_hit(source) if source is not None else None
        if src is not None:
            hits = [
                h
                for h in hits
                if h.id != src.id
                and not (h.path == src.path and h.qualname == src.qualname and h.kind == src.kind)
            ]
        return SearchOut(
            query=text,
            directory=root,
            index_dir=str(index_dir),
            mode="vector",
            hits=[HitOut.of(h) for h in hits[:limit]],
            notices=notices,
            source=HitOut.of(src) if src is not None else None,
        )

    @contextlib.contextmanager
    def _intel(
        self, directory: str, roots: AllowedRoots | None = None
    ) -> Iterator[tuple[str, CodeIntel]]:
        """(root, CodeIntel) of a searchable index."""
        root, index_dir = self._resolve(directory, roots)
        self._require_searchable(root, index_dir, roots)
        from .intel import CodeIntel

        with CodeIntel(index_dir) as intel:
            yield root, intel

    def find_definition(
        self,
        symbol: str,
        directory: str,
        kind: str | None = None,
        limit: int = 20,
        *,
        roots: AllowedRoots | None = None,
    ) -> DefinitionsOut:
        """Where a symbol is defined."""
        kinds = _kinds(kind)
        with self._intel(directory, roots) as (root, intel):
            found = intel.find_definition(
                _symbol_arg(symbol), kind=kinds[0] if kinds else None, limit=limit
            )
        head = (
            f"{len(found)} definitions of {symbol} in {root}:"
            if found
            else f"No definition of {symbol} in {root}."
        )
        text = "\n".join([head, *(f"  {d}" for d in found)])
        return DefinitionsOut(symbol=symbol, directory=root, definitions=list(found)).with_text(
            text
        )

    def find_references(
        self,
        symbol: str,
        directory: str,
        limit: int = 100,
        *,
        roots: AllowedRoots | None = None,
    ) -> ReferencesOut:
        """Where a symbol is used."""
        with self._intel(directory, roots) as (root, intel):
            found = intel.find_references(_symbol_arg(symbol), limit=limit)
        head = (
            f"{len(found)} references to {symbol} in {root}:"
            if found
            else f"No references to {symbol} in {root}."
        )
        text = "\n".join([head, *(f"  {r}" for r in found)])
        return ReferencesOut(symbol=symbol, directory=root, references=list(found)).with_text(text)

    def get_call_graph(
        self,
        symbol: str,
        directory: str,
        depth: int = 1,
        limit: int = 50,
        *,
        roots: AllowedRoots | None = None,
    ) -> CallGraphOut:
        """Callers and callees of a symbol."""
        with self._intel(directory, roots) as (root, intel):
            graph = intel.call_graph(_symbol_arg(symbol), depth=depth, limit=limit)
        text = str(graph) if graph.roots else f"No definition of {symbol} in {root}.\n{graph}"
        return CallGraphOut(directory=root, graph=graph).with_text(text)

    def get_dependencies(
        self, file: str, directory: str | None = None, *, roots: AllowedRoots | None = None
    ) -> DependenciesOut:
        """A file's imports and importers."""
        where = self._locate(file, directory, roots)
        with self._intel(where.root, roots) as (root, intel):
            deps = intel.dependencies(where.rel)
        return DependenciesOut(directory=root, dependencies=deps).with_text(str(deps))

    def analyze_complexity(
        self, file: str, directory: str | None = None, *, roots: AllowedRoots | None = None
    ) -> ComplexityOut:
        """Lines, items by kind and cyclomatic complexity of a file."""
        where = self._locate(file, directory, roots)
        with self._intel(where.root, roots) as (root, intel):
            report = intel.complexity(where.rel)
        return ComplexityOut(directory=root, complexity=report).with_text(str(report))

    def read_file_content(
        self,
        file: str,
        start_line: int | None = None,
        end_line: int | None = None,
        directory: str | None = None,
        *,
        roots: AllowedRoots | None = None,
    ) -> FileContentOut:
        """Lines of a file the index covers: its ``.rs`` files (as the committed manifest
        lists them), ``Cargo.toml`` files, and the README files of the root and of crate
        folders; never one whose name or content looks like a secret."""
        where = self._locate(file, directory, roots)
        why = _is_sensitive_name(where.rel)
        if why:
            raise SourceError(f"refused {file!r}: {why}; such files are never read")
        if not (_is_crate_file(where.root, where.rel) or _in_manifest(where.index_dir, where.rel)):
            raise SourceError(
                f"refused {file!r}: read_file_content returns only files the index of "
                f"{where.root} covers (its .rs files), Cargo.toml files and the README "
                f"files of the root and of crate folders, and {where.rel} is none of these "
                "(a .rs file added since the last run becomes readable once index_codebase "
                "has indexed it)"
            )
        if not where.real.is_file():
            raise SourceError(f"{where.rel} is not a file under {where.root}")
        size = where.real.stat().st_size
        if size > self.config.max_file_size:
            raise SourceError(
                f"{where.rel} is {size:,} bytes, over the {self.config.max_file_size:,}-byte "
                "limit for reading files"
            )
        data = where.real.read_bytes()
        for label, pattern in SENSITIVE_CONTENT_PATTERNS:
            if pattern.search(data):
                raise SourceError(f"refused {file!r}: its content holds a {label}")
        if b"\x00" in data:
            raise SourceError(f"{where.rel} is a binary file")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise SourceError(f"{where.rel} is not UTF-8 text (byte {e.start})") from e
        lines = text.splitlines(keepends=True)
        total = len(lines)
        first = 1 if start_line is None else start_line
        last = total if end_line is None else min(end_line, total)
        if first < 1:
            raise SourceError(f"start_line must be at least 1, got {first}")
        if end_line is not None and end_line < first:
            raise SourceError(f"end_line ({end_line}) is before start_line ({first})")
        if first > max(total, 1):
            raise SourceError(f"{where.rel} has {total} lines; start_line {first} is past the end")
        picked: list[str] = []
        chars = 0
        truncated = False
        for n in range(first, last + 1):
            row = lines[n - 1]
            if len(picked) >= READ_MAX_LINES or (picked and chars + len(row) > READ_MAX_CHARS):
                truncated = True
                break
            picked.append(row)
            chars += len(row)
        shown_last = first + len(picked) - 1 if picked else (0 if total == 0 else first - 1)
        return FileContentOut(
            path=where.rel,
            directory=where.root,
            start_line=first,
            end_line=shown_last,
            total_lines=total,
            truncated=truncated,
            next_start_line=shown_last + 1 if truncated else None,
            content="".join(picked),
        )

    def health_check(self, *, roots: AllowedRoots | None = None) -> HealthOut:
        """Model, cluster, stores of every index inside the allowed roots, versions."""
        with self._health_lock:
            probe = self._start_cluster_probe()
            model = self._check_model()
            cluster = self._finish_cluster_probe(probe)
        indexes = [
            self._check_index(root, index_dir)
            for root, index_dir in self._indexed(roots, committed=False)
        ]
        broken = any(not (ix.bm25.ok and ix.vectors.ok) for ix in indexes)
        return HealthOut(
            ok=model.ok and cluster.ok and not broken,
            model=model,
            cluster=cluster,
            indexes=indexes,
            versions=_versions(),
        )

    # ----------------------------------------------------------------- health parts

    def _check_model(self) -> ComponentHealth:
        """Load the configured model once (cached after the first success)."""
        if self._model_health is not None:
            return self._model_health
        from .embedding import Embedder

        started = time.perf_counter()
        try:
            emb = Embedder(
                self.config.model,
                device=self.config.device,
                torch_threads=self.config.torch_threads,
            )
            emb.load()
            vec = emb.embed_batch(["fn health_check() {}"])
        except RcmError as e:
            return ComponentHealth(ok=False, detail=str(e))
        except Exception as e:  # a broken model folder can fail in many ways
            logger.exception("the model check failed")
            return ComponentHealth(ok=False, detail=f"{type(e).__name__}: {e}")
        info = {
            "name": emb.name,
            "model_dir": str(emb.model_dir),
            "dimensions": emb.dimension,
            "max_tokens": emb.max_tokens,
            "device": emb.device,
            "load_seconds": round(time.perf_counter() - started, 2),
        }
        ok = int(vec.shape[-1]) == emb.dimension
        self._model_health = ComponentHealth(
            ok=ok,
            detail=f"{emb.name} loads from {emb.model_dir} ({emb.dimension} dims, "
            f"max {emb.max_tokens} tokens, on {emb.device})",
            info=info,
        )
        return self._model_health

    def _start_cluster_probe(self) -> subprocess.Popen[str] | None:
        """Start the cluster probe in a child process, unless a recent result is cached."""
        cached = self._cluster_health
        if cached is not None and time.monotonic() - cached[0] < CLUSTER_PROBE_TTL:
            return None
        return subprocess.Popen(
            [sys.executable, "-c", _PROBE_CODE, self.config.scheduler or ""],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _finish_cluster_probe(self, probe: subprocess.Popen[str] | None) -> ComponentHealth:
        """The probe's verdict (or the cached one)."""
        if probe is None:
            assert self._cluster_health is not None
            return self._cluster_health[1]
        try:
            out, err = probe.communicate(timeout=CLUSTER_PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.communicate()
            health = ComponentHealth(
                ok=False, detail=f"no cluster answered within {CLUSTER_PROBE_TIMEOUT:.0f} s"
            )
        else:
            try:
                info = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                tail = err.strip().splitlines()[-1:] or [f"exit status {probe.returncode}"]
                health = ComponentHealth(ok=False, detail=f"the cluster probe failed: {tail[0]}")
            else:
                ok = bool(info.get("ok"))
                detail = (
                    f"{info.get('cluster')} ran a task in {info.get('seconds')} s "
                    f"(dask {info.get('dask')}, distributed {info.get('distributed')})"
                    if ok
                    else f"cannot run a Dask cluster: {info.get('error')}"
                )
                health = ComponentHealth(ok=ok, detail=detail, info=info)
        self._cluster_health = (time.monotonic(), health)
        return health

    def _check_index(self, root: str, index_dir: Path) -> IndexHealth:
        """Open one index's stores read-only (or report them busy)."""
        try:
            state = self._state(root, index_dir).state
        except RcmError:
            state = "failed"
        bm25 = ComponentHealth(ok=False, detail="missing")
        vectors = ComponentHealth(ok=False, detail="missing")
        try:
            idx = SearchIndex(index_dir, self.config)
        except IndexNotFoundError as e:
            return IndexHealth(
                directory=root,
                index_dir=str(index_dir),
                state=state,
                bm25=bm25,
                vectors=vectors.model_copy(update={"detail": str(e)}),
            )
        except Exception as e:
            detail = f"{type(e).__name__}: {e}"
            return IndexHealth(
                directory=root,
                index_dir=str(index_dir),
                state=state,
                bm25=ComponentHealth(ok=False, detail=detail),
                vectors=vectors,
            )
        with idx:
            try:
                n = idx.bm25.count()
                bm25 = ComponentHealth(
                    ok=True, detail=f"opens, {n:,} documents", info={"documents": n}
                )
            except Exception as e:
                bm25 = ComponentHealth(ok=False, detail=f"{type(e).__name__}: {e}")
            if idx.keyword_only:
                vectors = ComponentHealth(
                    ok=True,
                    detail="none: a keyword-only index (search uses BM25)",
                    info={"keyword_only": True},
                )
            elif is_locked(index_dir) and not idx.identity.get("qdrant_url"):
                vectors = ComponentHealth(
                    ok=True,
                    detail="busy: an index run holds the embedded vector store "
                    f"({describe_holder(read_holder(index_dir))})",
                    info={"busy": True},
                )
            else:
                try:
                    n = idx.vectors.count()
                    vectors = ComponentHealth(
                        ok=True, detail=f"opens, {n:,} points", info={"points": n}
                    )
                except RcmError as e:
                    busy = "in use" in str(e) or "busy" in str(e).lower()
                    vectors = ComponentHealth(ok=busy, detail=str(e), info={"busy": busy})
                except Exception as e:
                    vectors = ComponentHealth(ok=False, detail=f"{type(e).__name__}: {e}")
        return IndexHealth(
            directory=root, index_dir=str(index_dir), state=state, bm25=bm25, vectors=vectors
        )

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop: interrupt running index runs (they commit what they wrote) and release stores."""
        with self._lock:
            runs = [r for r in self._runs.values() if r.state == "indexing"]
            searchers = list(self._searchers.values())
            self._searchers.clear()
        for run in runs:
            with contextlib.suppress(OSError):
                run.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_SECONDS
        for run in runs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for entry in searchers:
            with entry.lock:
                if entry.index is not None:
                    entry.index.close()
                    entry.index = None


_PROBE_CODE = """
import json, logging, sys, time
out = {"ok": False}
try:
    import dask, distributed
    from distributed import Client, LocalCluster
    out.update(dask=dask.__version__, distributed=distributed.__version__)
    t = time.perf_counter()
    address = sys.argv[1] if len(sys.argv) > 1 else ""
    if address:
        client = Client(address, timeout=20)
        out["cluster"] = "scheduler " + address
        cluster = None
    else:
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
        out["cluster"] = "a LocalCluster (1 worker process)"
    assert client.submit(sum, [1, 2]).result(timeout=60) == 3
    out["workers"] = len(client.scheduler_info().get("workers", {}))
    out["seconds"] = round(time.perf_counter() - t, 2)
    client.close()
    if cluster is not None:
        cluster.close()
    out["ok"] = True
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
sys.stdout.write(json.dumps(out) + "\\n")
"""


def _find_symbol(idx: SearchIndex, symbol: str) -> tuple[dict[str, Any] | None, int]:
    """The chunk payload of the item a symbol names (its first part), and how many other
    items share the name; (None, 0) when no item has that name.

    ``push`` matches any item named ``push``; ``BinaryHeap::push`` only those whose
    qualified name ends with it. Among several, definitions of code (functions, methods,
    types) come before summaries (impl, mod), then the best BM25 score."""
    path = symbol.rstrip("!").split("::")
    name = path[-1] + ("!" if symbol.endswith("!") else "")
    suffix = "::".join(path)
    candidates: dict[str, tuple[int, float, dict[str, Any]]] = {}
    for h in idx.bm25.search(" ".join(path), limit=200):
        p = h.payload
        if str(p.get("name", "")) != name:
            continue
        qualname = str(p.get("qualname", ""))
        if len(path) > 1 and not (qualname == suffix or qualname.endswith("::" + suffix)):
            continue
        key = str(p.get("symbol_id") or h.id)
        rank = 1 if p.get("kind") in ("impl", "mod") else 0
        best = candidates.get(key)
        # keep each item's first part: its signature and the start of its body
        if best is None or int(p.get("part", 1)) < int(best[2].get("part", 1)):
            candidates[key] = (rank, -h.score, p)
    if not candidates:
        return None, 0
    ordered = sorted(candidates.values(), key=lambda c: (c[0], c[1], str(c[2].get("path"))))
    return ordered[0][2], len(ordered) - 1


def _payload_hit(payload: dict[str, Any]) -> Hit:
    """A stored chunk payload as a hit (score 1: it is the query itself)."""
    return Hit(
        id=str(payload.get("id", "")),
        path=str(payload.get("path", "")),
        start_line=int(payload.get("start_line", 0)),
        end_line=int(payload.get("end_line", 0)),
        name=str(payload.get("name", "")),
        qualname=str(payload.get("qualname", "")),
        kind=str(payload.get("kind", "")),
        score=1.0,
        snippet=snippet_of(str(payload.get("code", "")), str(payload.get("signature", ""))),
        signature=str(payload.get("signature", "")),
        parent=str(payload.get("parent", "")),
    )


def _symbol_arg(symbol: str) -> str:
    """A symbol argument, trimmed; refuses an empty one."""
    text = symbol.strip()
    if not text:
        raise RcmError("symbol is empty: give a name (push) or a path (BinaryHeap::push)")
    return text


def _kinds(kind: str | None) -> list[str] | None:
    """Parse the ``kind`` argument (one kind, or several separated by commas)."""
    if not kind or not kind.strip():
        return None
    kinds = [k.strip() for k in kind.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in CHUNK_KINDS]
    if unknown:
        raise RcmError(f"unknown kind {', '.join(unknown)}: choose from {', '.join(CHUNK_KINDS)}")
    return kinds


def _versions() -> dict[str, str]:
    """Versions of Python and of the packages the tools depend on."""
    out = {"rcm-dask": __version__, "python": platform.python_version()}
    for dist in (
        "mcp",
        "dask",
        "distributed",
        "torch",
        "transformers",
        "tantivy",
        "qdrant-edge-py",
        "tree-sitter",
        "tree-sitter-rust",
        "fsspec",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# --------------------------------------------------------------------------- MCP layer


def _answer(tool: str, produce: Callable[[], _Out]) -> CallToolResult:
    """Run a tool body: its result as text plus structured content, its errors as tool errors."""
    try:
        out = produce()
    except ToolError:
        raise
    except RcmError as e:
        raise ToolError(str(e)) from e
    except Exception as e:
        logger.exception("tool %s failed unexpectedly", tool)
        raise ToolError(f"{type(e).__name__}: {e}") from e
    return CallToolResult(
        content=[TextContent(type="text", text=str(out))],
        structured_content=out.model_dump(mode="json"),
    )


async def _call_roots(ctx: Context, user: AllowedRoots) -> AllowedRoots:
    """The user's roots, narrowed by the client's when the client offers the roots capability.

    Asked on every call, so a client that changes its workspace folders is followed at
    once. A client that offers roots and fails to list them is refused rather than
    trusted to be as wide as the user allowed."""
    session = ctx.session
    caps = session.client_capabilities
    if caps is None or caps.roots is None:
        return user
    try:
        with anyio.fail_after(CLIENT_ROOTS_TIMEOUT):
            # the request ServerSession.list_roots sends (deprecated with the roots
            # capability in the 2026-07-28 protocol; clients that still offer roots are
            # the ones to honour), tied to this call so that it also reaches an HTTP client
            listed = await session.send_request(
                ListRootsRequest(),
                ListRootsResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
    except NoBackChannelError:
        logger.warning("the client offers roots but this connection cannot ask for them")
        return user
    except (MCPError, TimeoutError, ValueError) as e:
        raise RcmError(
            f"the MCP client offers roots but did not list them ({type(e).__name__}: {e}); "
            "nothing is done until it does"
        ) from e
    return user.narrowed([str(r.uri) for r in listed.roots])


async def _answer_within(
    tool: str, ctx: Context, tools: CodeTools, produce: Callable[[AllowedRoots], _Out]
) -> CallToolResult:
    """:func:`_answer` within the roots of this call, run in a worker thread."""
    try:
        roots = await _call_roots(ctx, tools.roots)
    except RcmError as e:
        raise ToolError(str(e)) from e
    return await anyio.to_thread.run_sync(lambda: _answer(tool, lambda: produce(roots)))


_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

Directory = Annotated[
    str,
    Field(
        description="The codebase folder, as given to index_codebase (an absolute path is best)."
    ),
]


Symbol = Annotated[
    str,
    Field(
        description="A name (push), or a path ending a qualified name (BinaryHeap::push, "
        "collections::binary_heap::BinaryHeap::push)."
    ),
]

FileArg = Annotated[
    str,
    Field(description="The file: a path relative to the indexed root, or absolute inside it."),
]

RootArg = Annotated[
    str | None,
    Field(description="The indexed root (default: the indexed codebase that holds the file)."),
]


def build_server(tools: CodeTools | None = None) -> MCPServer:
    """The MCP server with every tool registered.

    Parameters
    ----------
    tools
        The tools' state and work (default: a :class:`CodeTools` configured from
        ``RCM_*`` variables). Each call works within ``tools.roots``, narrowed by the
        client's roots when the client offers them.

    Returns
    -------
    mcp.server.mcpserver.MCPServer
        Run it with ``.run("stdio")`` or serve ``.streamable_http_app()``.
    """
    tools = tools or CodeTools()
    server: MCPServer = MCPServer(
        SERVER_NAME,
        version=__version__,
        instructions=(
            "Search and navigate Rust codebases. Call index_codebase(directory) once per "
            "codebase (re-runs are incremental), poll index_status(directory) until its state "
            "is ready, then use search, get_similar_code, find_definition, find_references, "
            "get_call_graph, get_dependencies, analyze_complexity and read_file_content. For a "
            "huge codebase, index_codebase(directory, vectors='none') skips embedding: search "
            "then uses BM25 and the code-navigation tools work as usual. Every tool works only "
            "inside the folders the user allowed ("
            + (", ".join(tools.roots.paths) or "none yet")
            + f"); only the user can allow more, with {HOW_TO_ALLOW}."
        ),
        log_level="WARNING",
    )

    @server.tool(
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        )
    )
    async def index_codebase(
        ctx: Context,
        directory: Directory,
        mode: Annotated[
            IndexMode,
            Field(
                description="pipeline (Dask, overlapping stages), parallel, sequential (one "
                "process) or auto (sequential for small work)."
            ),
        ] = "pipeline",
        force: Annotated[
            bool, Field(description="Rebuild from scratch instead of indexing what changed.")
        ] = False,
        wait_seconds: Annotated[
            float,
            Field(
                ge=0,
                le=600,
                description="How long to wait for the run to finish before answering with "
                "its run_id (it goes on in the background either way).",
            ),
        ] = QUICK_RUN_SECONDS,
        vectors: Annotated[
            VectorsSetting | None,
            Field(
                description="qdrant: embed every chunk (hybrid and vector search, "
                "get_similar_code); none: keyword-only, nothing embedded (BM25 search and "
                "code navigation; far faster on huge codebases or without a GPU). Default: "
                "what the existing index was built with, else qdrant. Changing an existing "
                "index's setting needs force=true."
            ),
        ] = None,
    ) -> Annotated[CallToolResult, IndexRunOut]:
        """Index (or re-index) the Rust codebase in a folder, for search and code navigation.

        Incremental: only new and changed files are read and embedded. A run that
        takes longer than wait_seconds goes on in the background: the answer then
        holds its run_id and state "indexing"; poll index_status until "ready".
        Calling it again while a run is going returns that run. Only folders inside
        the roots the user allowed (rcm-dask mcp --root, RCM_MCP_ROOTS) can be indexed.
        """
        return await _answer_within(
            "index_codebase",
            ctx,
            tools,
            lambda roots: tools.index_codebase(
                directory, mode, force, wait_seconds, vectors, roots=roots
            ),
        )

    @server.tool(annotations=_READ_ONLY)
    async def index_status(
        ctx: Context, directory: Directory
    ) -> Annotated[CallToolResult, IndexStatusOut]:
        """The state of a codebase's index: not_indexed, indexing (with files and chunks
        done so far), ready, or failed (with the reason); counts, model, last run's metrics."""
        return await _answer_within(
            "index_status", ctx, tools, lambda roots: tools.status(directory, roots=roots)
        )

    @server.tool(annotations=_READ_ONLY)
    async def search(
        ctx: Context,
        query: Annotated[
            str,
            Field(description="Words, identifiers, a question or a code fragment."),
        ],
        directory: Directory,
        limit: Annotated[int, Field(ge=1, le=100, description="Hits to return.")] = 10,
        kind: Annotated[
            str | None,
            Field(
                description="Only items of this kind (function, method, struct, enum, union, "
                "trait, impl, mod, const, static, type, macro); several separated by commas."
            ),
        ] = None,
        path_glob: Annotated[
            str | None,
            Field(description="Only files matching this gitignore-style glob (src/io/**)."),
        ] = None,
        mode: Annotated[
            SearchMode,
            Field(
                description="hybrid (keywords and meaning, fused), bm25 or vector. A "
                "keyword-only index answers hybrid with BM25 (a notice says so) and refuses "
                "vector."
            ),
        ] = "hybrid",
        group: Annotated[
            SearchGroup,
            Field(
                description="item (one hit per item) or file (one entry per file with its "
                "best items: which files to read)."
            ),
        ] = "item",
    ) -> Annotated[CallToolResult, SearchOut]:
        """Search an indexed codebase; each hit has its file, line range, symbol and a snippet.
        A bare name (BinaryHeap, fmt::Display) finds its definition first; a question is
        answered by keywords and meaning together."""
        return await _answer_within(
            "search",
            ctx,
            tools,
            lambda roots: tools.search(
                query, directory, limit, kind, path_glob, mode, group, roots=roots
            ),
        )

    @server.tool(annotations=_READ_ONLY)
    async def get_similar_code(
        ctx: Context,
        code_or_symbol: Annotated[
            str,
            Field(
                description="A code fragment, or the name of a symbol in the index (push, "
                "BinaryHeap::push): then code similar to that item, the item itself left out."
            ),
        ],
        directory: Directory,
        limit: Annotated[int, Field(ge=1, le=100, description="Hits to return.")] = 10,
    ) -> Annotated[CallToolResult, SearchOut]:
        """Find code that means the same as a fragment or as a named symbol (vector search;
        not on a keyword-only index)."""
        return await _answer_within(
            "get_similar_code",
            ctx,
            tools,
            lambda roots: tools.get_similar_code(code_or_symbol, directory, limit, roots=roots),
        )

    @server.tool(annotations=_READ_ONLY)
    async def find_definition(
        ctx: Context,
        symbol: Symbol,
        directory: Directory,
        kind: Annotated[
            str | None, Field(description="Only definitions of this kind (struct, method...).")
        ] = None,
    ) -> Annotated[CallToolResult, DefinitionsOut]:
        """Where a symbol is defined: file, line range, kind, signature, docs."""
        return await _answer_within(
            "find_definition",
            ctx,
            tools,
            lambda roots: tools.find_definition(symbol, directory, kind, roots=roots),
        )

    @server.tool(annotations=_READ_ONLY)
    async def find_references(
        ctx: Context,
        symbol: Symbol,
        directory: Directory,
        limit: Annotated[int, Field(ge=1, le=1000, description="References to return.")] = 100,
    ) -> Annotated[CallToolResult, ReferencesOut]:
        """Where a symbol is used (calls, type mentions, impls), with file and line; uses
        tied to the definition come first, same-name uses after."""
        return await _answer_within(
            "find_references",
            ctx,
            tools,
            lambda roots: tools.find_references(symbol, directory, limit, roots=roots),
        )

    @server.tool(annotations=_READ_ONLY)
    async def get_call_graph(
        ctx: Context,
        symbol: Symbol,
        directory: Directory,
        depth: Annotated[int, Field(ge=1, le=5, description="How many calls away to go.")] = 1,
    ) -> Annotated[CallToolResult, CallGraphOut]:
        """Callers and callees of a function or method, to a depth."""
        return await _answer_within(
            "get_call_graph",
            ctx,
            tools,
            lambda roots: tools.get_call_graph(symbol, directory, depth, roots=roots),
        )

    @server.tool(annotations=_READ_ONLY)
    async def get_dependencies(
        ctx: Context,
        file: FileArg,
        directory: RootArg = None,
    ) -> Annotated[CallToolResult, DependenciesOut]:
        """A file's `use` imports (and the indexed files they lead to) and the files that
        import it."""
        return await _answer_within(
            "get_dependencies",
            ctx,
            tools,
            lambda roots: tools.get_dependencies(file, directory, roots=roots),
        )

    @server.tool(annotations=_READ_ONLY)
    async def analyze_complexity(
        ctx: Context,
        file: FileArg,
        directory: RootArg = None,
    ) -> Annotated[CallToolResult, ComplexityOut]:
        """A file's lines (code, comment, blank), items by kind, and the cyclomatic
        complexity of each function."""
        return await _answer_within(
            "analyze_complexity",
            ctx,
            tools,
            lambda roots: tools.analyze_complexity(file, directory, roots=roots),
        )

    @server.tool(annotations=_READ_ONLY)
    async def read_file_content(
        ctx: Context,
        file: Annotated[
            str,
            Field(description="Path relative to the indexed root, or absolute inside it."),
        ],
        start_line: Annotated[int | None, Field(ge=1, description="First line (1-based).")] = None,
        end_line: Annotated[int | None, Field(ge=1, description="Last line (inclusive).")] = None,
        directory: Annotated[
            str | None,
            Field(description="The indexed root (default: the one that holds the file)."),
        ] = None,
    ) -> Annotated[CallToolResult, FileContentOut]:
        """Read lines of a file of an indexed codebase, with line numbers.

        Only the files the index covers (its .rs files), Cargo.toml files and README
        files of the root and of crate folders; no '..', no absolute path or symlink that
        leads out of the root, no files that look like secrets (.env, keys...).
        """
        return await _answer_within(
            "read_file_content",
            ctx,
            tools,
            lambda roots: tools.read_file_content(
                file, start_line, end_line, directory, roots=roots
            ),
        )

    @server.tool(annotations=_READ_ONLY)
    async def health_check(ctx: Context) -> Annotated[CallToolResult, HealthOut]:
        """Check the embedding model, the Dask cluster and both stores of every index."""
        return await _answer_within(
            "health_check", ctx, tools, lambda roots: tools.health_check(roots=roots)
        )

    return server


def serve(
    transport: Literal["stdio", "http"] = "stdio",
    *,
    port: int = DEFAULT_PORT,
    roots: Sequence[str] = (),
) -> None:
    """Run the MCP server until its client goes away (stdio) or it is stopped (HTTP).

    Parameters
    ----------
    transport
        ``stdio`` (the client starts this process and talks over its stdin/stdout) or
        ``http`` (streamable HTTP at ``http://127.0.0.1:PORT/mcp``).
    port
        The HTTP port; 0 picks a free one. The address is printed on stderr.
    roots
        The folders the tools may index and read (``--root``); none: ``RCM_MCP_ROOTS``,
        else the working directory (see :mod:`rcm_dask.roots`).

    Raises
    ------
    ConfigError
        A root does not exist or is not a folder.
    """
    # plain lines on stderr (configured before the SDK's own logging setup, which then
    # keeps them): stdout belongs to the protocol
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s rcm-dask mcp %(levelname)s %(name)s: %(message)s",
    )
    tools = CodeTools(roots=AllowedRoots.from_settings(roots))
    if not tools.roots.paths:
        logger.warning("no folder is allowed: %s", tools.roots.note)
    server = build_server(tools)
    try:
        if transport == "stdio":
            server.run("stdio")
        else:
            _serve_http(server, port)
    finally:
        tools.close()


def _serve_http(server: MCPServer, port: int) -> None:
    """Serve streamable HTTP on 127.0.0.1 only (the tools read local files)."""
    import anyio
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        raise RcmError(f"cannot listen on 127.0.0.1:{port}: {e}; pick another --port") from e
    # listening before the address is printed: a client that reads it and connects at
    # once waits in the backlog until uvicorn accepts, instead of being refused
    sock.listen(2048)
    actual = sock.getsockname()[1]
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    print(f"rcm-dask MCP server: http://127.0.0.1:{actual}/mcp", file=sys.stderr, flush=True)
    anyio.run(uvicorn.Server(config).serve, [sock])


__all__ = [
    "CodeTools",
    "build_server",
    "run_index_child",
    "serve",
]
