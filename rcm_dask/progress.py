"""Live progress of an index run, for people: a rich bar, a Jupyter line, or log lines.

:class:`ProgressDisplay` is a context manager that yields the ``progress`` callback
:func:`rcm_dask.index` calls as work completes. What it draws depends on where it runs:

- on a terminal: a rich progress bar (files, chunks, chunks/s, per-stage throughput);
- in Jupyter: the same bar through ipywidgets when installed, else one line of text
  updated in place (``IPython.display`` handles need no widgets);
- elsewhere (a log file, a pipe, CI): with ``lines=True`` a plain line every
  ``interval`` seconds and one at the end, else nothing.

``rcm_dask.index(path, progress=True)`` and ``rcm-dask index`` both use it.
"""

from __future__ import annotations

import importlib.util
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .records import IndexStats, ProgressCallback

_UNITS = {"read": "files/s"}


def describe_progress(stats: IndexStats, elapsed: float) -> str:
    """One line of a run's progress: chunks, chunks/s and each stage's throughput.

    Parameters
    ----------
    stats
        The running stats the run hands its progress callback.
    elapsed
        Wall-clock seconds since the run started.

    Returns
    -------
    str
        ``"1,024 chunks written, 51.2 chunks/s | read 96 files/s, chunk 1,930/s, ..."``;
        rates are per busy second of each stage, summed over workers.

    Examples
    --------
    >>> st = IndexStats(chunks=100, chunks_embedded=128, stage_seconds={"embed": 2.0})
    >>> describe_progress(st, 4.0)
    '100 chunks written, 25.0 chunks/s | embed 64/s'
    """
    rate = stats.chunks / elapsed if elapsed > 0 else 0.0
    text = f"{stats.chunks:,} chunks written, {rate:.1f} chunks/s"
    rates = stats.stage_rates
    if rates:
        text += " | " + ", ".join(
            f"{k} {v:,.0f}" + (" files/s" if k in _UNITS else "/s") for k, v in rates.items()
        )
    return text


def _has_ipywidgets() -> bool:
    """Whether rich can draw its live bar in Jupyter (it needs ipywidgets there)."""
    return importlib.util.find_spec("ipywidgets") is not None


class ProgressDisplay:
    """Show an index run's progress; use as ``with ProgressDisplay() as callback``.

    Parameters
    ----------
    console
        Where to draw; default: a rich console on stderr.
    lines
        When the console is neither a terminal nor Jupyter, print a plain progress line
        every ``interval`` seconds and one when the run ends (else stay silent).
    interval
        Seconds between plain lines.
    dashboard
        Print the run's Dask dashboard link once, when the run reports it.

    Examples
    --------
    >>> import rcm_dask
    >>> with ProgressDisplay() as on_progress:                              # doctest: +SKIP
    ...     stats = rcm_dask.index("path/to/crate", progress=on_progress)
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        lines: bool = True,
        interval: float = 10.0,
        dashboard: bool = False,
    ) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.dashboard = dashboard
        self.interval = interval
        self.style = self._style(lines)
        """``bar``, ``jupyter``, ``lines`` or ``off``: what this display draws."""
        self.bar: Progress | None = None
        self.task: Any = None
        self.handle: Any = None
        self.started = time.perf_counter()
        self.last_line = 0.0
        self.stats: IndexStats | None = None

    def _style(self, lines: bool) -> str:
        """What to draw on this console."""
        if self.console.is_jupyter:
            return "bar" if _has_ipywidgets() else "jupyter"
        if self.console.is_terminal and not self.console.is_dumb_terminal:
            return "bar"
        return "lines" if lines else "off"

    def __enter__(self) -> ProgressCallback:
        self.started = time.perf_counter()
        if self.style == "bar":
            self.bar = Progress(
                TextColumn("[bold]indexing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files  {task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=not self.console.is_jupyter,
            )
            self.bar.start()
        return self.update

    def update(self, stats: IndexStats, path: str = "") -> None:
        """The progress callback: redraw with the run's latest stats."""
        self.stats = stats
        if self.dashboard and stats.dashboard_link:
            # printed once, above the bar, so that it stays on screen
            self.console.print(f"Dask dashboard: {stats.dashboard_link}")
            self.dashboard = False
        now = time.perf_counter()
        detail = describe_progress(stats, now - self.started)
        total = max(stats.files_todo, stats.files_done, 1)
        if self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task("index", total=total, detail="")
            self.bar.update(self.task, completed=stats.files_done, total=total, detail=detail)
        elif self.style == "jupyter":
            self._show_in_notebook(f"indexing: {stats.files_done}/{total} files, {detail}")
        elif self.style == "lines" and (
            self.last_line == 0.0 or now - self.last_line >= self.interval
        ):
            self.last_line = now
            self._line(f"indexing: {stats.files_done}/{total} files, {detail}")

    def _line(self, text: str) -> None:
        """One plain log line, never wrapped (logs are read by tools too)."""
        self.console.print(text, soft_wrap=True, markup=False, highlight=False)

    def _show_in_notebook(self, text: str) -> None:
        """Replace the notebook's progress line (a display handle, no widgets needed)."""
        from IPython.display import display

        if self.handle is None:
            self.handle = display(text, display_id=True)
        else:
            self.handle.update(text)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.style == "lines" and self.stats is not None and exc_type is None:
            stats = self.stats
            total = max(stats.files_todo, stats.files_done, 1)
            elapsed = time.perf_counter() - self.started
            self._line(
                f"indexed: {stats.files_done}/{total} files, {describe_progress(stats, elapsed)}"
            )
