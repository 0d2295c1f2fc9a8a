"""Index runs in child processes, and the JSON-lines protocol they report on.

Index runs go to a child process (``python -c`` calling :func:`run_index_child`), not
to a thread of the server: a run's reading, chunking and embedding would hold the GIL
and the cores the server needs to answer, a run may start a LocalCluster whose worker
processes write to the standard streams (in stdio mode the server's stdout is the
protocol), and a child can be interrupted like ``rcm-dask index`` (SIGINT: it commits
what it wrote and stops) and can die without taking the server with it. The child
reports its progress as JSON lines on its own stdout pipe, everything else it or its
workers print goes to stderr; :func:`start_run` follows both with a thread each.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RcmError, RootNotAllowedError
from ..records import IndexStats
from ..sources import SourceRoot, open_local_root
from .models import RunOut, RunState, run_summary

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress reports of an index child process."""

STOP_SECONDS = 5.0
"""How long the server waits, when it stops, for its interrupted index runs to commit."""


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
            stats=run_summary(self.stats),
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
        ``{"directory", "index_dir", "mode", "force", "vectors", "roots"}`` as JSON:
        ``directory`` is the real path the server checked, ``roots`` the allowed roots
        of the call. The child checks both again (the folder may have been swapped for
        a symlink since) and indexes exactly that place (:func:`_confined_root`).

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

    from ..modes import index

    try:
        stats = index(
            _confined_root(str(spec["directory"]), spec.get("roots")),
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


def _confined_root(directory: str, roots: Sequence[str] | None) -> SourceRoot:
    """The folder a child indexes: ``directory`` opened as a local folder with no symlink
    in its path (:func:`~rcm_dask.sources.open_local_root`), inside ``roots``.

    The server checked the folder before starting the child; seconds may have passed,
    and a folder swapped for a symlink meanwhile is refused here, not followed. From
    here on nothing can redirect the run: discovery lists each folder, and every file
    is read, from descriptors opened without following symlinks, through this real
    path."""
    root = open_local_root(directory)
    if roots is not None and not any(
        root.path == r or root.path.startswith(r.rstrip(os.sep) + os.sep) for r in roots
    ):
        raise RootNotAllowedError(
            f"refused {directory}: it is outside the folders this server may use "
            f"({', '.join(roots) or 'none'})"
        )
    return root


_CHILD_CODE = (
    "import sys\n"
    "from rcm_dask.mcp_server.runs import run_index_child\n"
    "sys.exit(run_index_child(sys.argv[1]))\n"
)


def start_run(
    directory: str,
    index_dir: Path,
    mode: str,
    force: bool,
    vectors: str = "qdrant",
    roots: Sequence[str] | None = None,
) -> IndexRun:
    """Start an index child process and the threads that follow it.

    ``directory`` is the real path of a folder checked inside ``roots`` (the allowed
    roots of the call), which the child checks again (:func:`_confined_root`)."""
    spec = {
        "directory": directory,
        "index_dir": str(index_dir),
        "mode": mode,
        "force": force,
        "vectors": vectors,
        "roots": list(roots) if roots is not None else None,
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


def stop_runs(runs: Sequence[IndexRun]) -> None:
    """Interrupt index runs (SIGINT: each commits what it wrote) and wait for them,
    :data:`STOP_SECONDS` in all."""
    for run in runs:
        with contextlib.suppress(OSError):
            run.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_SECONDS
    for run in runs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.process.wait(timeout=max(0.0, deadline - time.monotonic()))
