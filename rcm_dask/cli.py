"""The ``rcm-dask`` command line: a thin layer over the library (click + rich).

Every option that maps to an :class:`~rcm_dask.config.IndexConfig` field can also be
set with its ``RCM_*`` variable; the option wins. Usage mistakes exit 2; an
:class:`~rcm_dask.errors.RcmError` prints its message and exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from . import __version__
from .config import MODES, IndexConfig, env_name
from .errors import IndexInterrupted, RcmError
from .records import IndexStats

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


def _env(field: str) -> str:
    """Help suffix naming the variable that mirrors an option."""
    return f" [env: {env_name(field)}]"


def index_dir_option(f: F) -> F:
    """--index-dir, shared by every command."""
    return click.option(
        "--index-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Index folder (default: one per codebase under ~/.local/share/rcm_dask/indexes)."
        + _env("index_dir"),
    )(f)


def model_options(f: F) -> F:
    """--model, --device, --qdrant-url."""
    f = click.option(
        "--qdrant-url",
        default=None,
        help="Keep vectors in this Qdrant server instead of the embedded engine."
        + _env("qdrant_url"),
    )(f)
    f = click.option(
        "--device",
        default=None,
        help="Torch device: cpu, cuda, cuda:1 (default: CUDA when present)." + _env("device"),
    )(f)
    f = click.option(
        "--model",
        type=click.Path(exists=True, file_okay=False),
        default=None,
        help="Local Hugging Face model folder (default: bundled all-MiniLM-L6-v2)." + _env("model"),
    )(f)
    return f


def _config(**options: Any) -> IndexConfig:
    """Config from RCM_* variables with the given options on top."""
    return IndexConfig.from_env(**options)


def _run(action: Callable[[], None]) -> None:
    """Run a command body, turning our errors into exit codes without tracebacks."""
    try:
        action()
    except RcmError as e:
        err.print(f"[bold red]Error:[/] {e}")
        sys.exit(1)
    except KeyboardInterrupt as e:
        message = (
            str(e)
            if isinstance(e, IndexInterrupted)
            else (
                "Interrupted. What was committed before stays in the index; "
                "run the same command again to finish."
            )
        )
        err.print(f"[yellow]{message}[/]")
        sys.exit(130)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rcm-dask")
def main() -> None:
    """Index Rust codebases and search them by keyword and by meaning."""


@main.command("index")
@click.argument("path")
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=None,
    help="How stages are scheduled: sequential (one process, file by file), parallel "
    "(stage after stage on a Dask cluster), pipeline (overlapping stages, bounded memory); "
    "default auto: sequential for small work, else pipeline." + _env("mode"),
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Run on this Dask scheduler (tcp://host:8786) instead of a LocalCluster."
    + _env("scheduler"),
)
@click.option(
    "--workers",
    "n_workers",
    type=click.IntRange(1),
    default=None,
    help="Worker processes of the LocalCluster (default: one per core)." + _env("n_workers"),
)
@click.option(
    "--dashboard", is_flag=True, help="Serve the Dask dashboard on 127.0.0.1 and print its link."
)
@click.option(
    "--performance-report",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write Dask's performance report of the run to this HTML file.",
)
@index_dir_option
@click.option("--force", is_flag=True, help="Rebuild the index from scratch.")
@click.option(
    "--wait",
    type=float,
    is_flag=False,
    flag_value=-1.0,
    default=None,
    metavar="[SECONDS]",
    help="If another run is writing this index, wait for it (as long as it takes, or up to "
    "SECONDS) instead of failing at once." + _env("wait"),
)
@model_options
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="Chunks per embedding batch (default 128)." + _env("batch_size"),
)
@click.option(
    "--cpu-batch-size",
    type=click.IntRange(1),
    default=None,
    help="Rows per forward pass when embedding on a CPU (default 16)." + _env("cpu_batch_size"),
)
@click.option(
    "--max-file-size",
    type=click.IntRange(1),
    default=None,
    help="Skip files larger than this many bytes (default 8 MiB)." + _env("max_file_size"),
)
@click.option(
    "--exclude",
    multiple=True,
    help="Extra gitignore-style pattern to skip (repeatable)." + _env("exclude"),
)
@click.option("--no-gitignore", is_flag=True, default=False, help="Do not apply .gitignore files.")
@click.option(
    "--include-hidden", is_flag=True, default=False, help="Also index hidden folders and files."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run's stats as JSON.")
def index_cmd(
    path: str,
    mode: str | None,
    scheduler: str | None,
    n_workers: int | None,
    dashboard: bool,
    performance_report: str | None,
    index_dir: str | None,
    force: bool,
    wait: float | None,
    model: str | None,
    device: str | None,
    qdrant_url: str | None,
    batch_size: int | None,
    cpu_batch_size: int | None,
    max_file_size: int | None,
    exclude: tuple[str, ...],
    no_gitignore: bool,
    include_hidden: bool,
    as_json: bool,
) -> None:
    """Index the Rust codebase at PATH (a folder or an fsspec URL such as s3://bucket/repo).

    Re-runs are incremental: only new and changed files are read and embedded.
    """

    def body() -> None:
        from .modes import index

        config = _config(
            mode=mode,
            scheduler=scheduler,
            n_workers=n_workers,
            index_dir=index_dir,
            model=model,
            device=device,
            qdrant_url=qdrant_url,
            batch_size=batch_size,
            cpu_batch_size=cpu_batch_size,
            max_file_size=max_file_size,
            exclude=exclude or None,
            respect_gitignore=False if no_gitignore else None,
            include_hidden=True if include_hidden else None,
            wait=wait,
        )

        def on_wait(holder: dict[str, Any] | None) -> None:
            from .stores.lock import describe_holder

            err.print(f"Waiting: this index is being written by {describe_holder(holder)}...")

        with _progress(enabled=not as_json, dashboard=dashboard) as on_file:
            stats = index(
                path,
                config,
                force=force,
                progress=on_file,
                dashboard=dashboard,
                performance_report=performance_report,
                on_wait=on_wait,
            )
        if as_json:
            out.print_json(json.dumps(stats.to_dict()))
        else:
            _print_summary(stats)

    _run(body)


class _progress:
    """A rich progress bar over files when stderr is a terminal; silent otherwise."""

    def __init__(self, enabled: bool, dashboard: bool = False) -> None:
        self.enabled = enabled and err.is_terminal
        self.dashboard = dashboard
        self.bar: Progress | None = None
        self.task: Any = None
        self.started = time.perf_counter()

    def __enter__(self) -> Callable[[IndexStats, str], None]:
        if self.enabled:
            self.bar = Progress(
                TextColumn("[bold]indexing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "files  {task.fields[chunks]} chunks written  {task.fields[rate]} chunks/s"
                    "  {task.fields[stages]}"
                ),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            self.bar.start()
        return self.update

    def update(self, stats: IndexStats, path: str) -> None:
        if self.dashboard and stats.dashboard_link:
            # printed once, before the bar, so that it stays on screen
            err.print(f"Dask dashboard: {stats.dashboard_link}")
            self.dashboard = False
        if self.bar is None:
            return
        if self.task is None:
            self.task = self.bar.add_task(
                "index", total=max(stats.files_todo, 1), chunks=0, rate="0", stages=""
            )
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        self.bar.update(
            self.task,
            completed=stats.files_done,
            total=max(stats.files_todo, stats.files_done, 1),
            chunks=stats.chunks,
            rate=f"{stats.chunks / elapsed:.1f}",
            stages=f"(chunked {stats.chunks_made}, embedded {stats.chunks_embedded})",
        )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print_summary(stats: IndexStats) -> None:
    """The end-of-run summary on stdout."""
    out.print(f"Indexed {stats.root} -> {stats.index_dir} ({stats.mode} mode)")
    out.print(
        f"  files: {stats.files_indexed} indexed, {stats.files_unchanged} unchanged, "
        f"{stats.files_removed} removed, {stats.files_skipped} skipped "
        f"(of {stats.files_seen} .rs files found)"
    )
    if stats.files_recovered:
        out.print(
            f"  recovered: {stats.files_recovered} files left half-written by an interrupted "
            "run were redone"
        )
    for reason, n in sorted(stats.skipped.items()):
        examples = "; ".join(stats.skipped_examples.get(reason, [])[:3])
        out.print(f"    skipped {reason}: {n}" + (f"  e.g. {examples}" if examples else ""))
    out.print(
        f"  chunks: {stats.chunks} written"
        + (
            f" ({stats.chunks_with_errors} from code with syntax errors)"
            if stats.chunks_with_errors
            else ""
        )
        + f", {stats.batches} embedding batches"
    )
    out.print(f"  time: {stats.seconds:.1f}s, {stats.chunks_per_second:.1f} chunks/s")
    if stats.stage_seconds:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in stats.stage_seconds.items())
        out.print(f"  busy seconds by stage (all workers): {stages}")
    overlaps = {k: v for k, v in stats.overlaps.items() if v > 0}
    if overlaps:
        out.print("  stages overlapped: " + ", ".join(f"{k} {v:.1f}s" for k, v in overlaps.items()))
    out.print(
        f"  ran on: {stats.cluster}"
        + (
            f"; writer on {stats.writer_worker}"
            if stats.writer_worker not in ("", stats.cluster)
            else ""
        )
    )
    if len(stats.embed_workers) > 1 or (
        stats.embed_workers and next(iter(stats.embed_workers)) != "in-process"
    ):
        out.print(
            "  embedding batches by worker: "
            + ", ".join(f"{w} {n}" for w, n in sorted(stats.embed_workers.items()))
        )


@main.command("search")
@click.argument("query")
@click.option("--limit", "-n", type=click.IntRange(1), default=10, show_default=True)
@click.option("--bm25", "lexical", is_flag=True, help="Keyword (BM25) ranking only.")
@click.option("--vector", "semantic", is_flag=True, help="Vector (meaning) ranking only.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    help="Only this kind: function, method, struct, enum, trait, impl, macro... (repeatable).",
)
@click.option("--path-glob", default=None, help="Only files matching this glob (src/io/**).")
@click.option("--path", "codebase", default=None, help="Search the default index of this codebase.")
@index_dir_option
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
def search_cmd(
    query: str,
    limit: int,
    lexical: bool,
    semantic: bool,
    kinds: tuple[str, ...],
    path_glob: str | None,
    codebase: str | None,
    index_dir: str | None,
    model: str | None,
    device: str | None,
    qdrant_url: str | None,
    as_json: bool,
) -> None:
    """Search an index for QUERY: words, identifiers, a question or a code fragment.

    Without --index-dir or --path, searches the most recently updated index.
    """
    if lexical and semantic:
        raise click.UsageError("--bm25 and --vector exclude each other")
    mode = "bm25" if lexical else "vector" if semantic else "hybrid"

    def body() -> None:
        from .search import open_index

        config = _config(index_dir=index_dir, model=model, device=device, qdrant_url=qdrant_url)
        with open_index(path=codebase, config=config) as idx:
            hits = idx.search(query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob)
            for notice in idx.notices:
                err.print(f"[yellow]Note:[/] {notice}")
            if as_json:
                out.print_json(json.dumps([h.to_dict() for h in hits]))
                return
            if not hits:
                err.print(f"No hits in {idx.index_dir}.")
                return
            for i, h in enumerate(hits, 1):
                where = f"{h.path}:{h.start_line}-{h.end_line}"
                out.print(
                    f"[bold]{i:>2}. {h.qualname or h.name}[/]  [cyan]{h.kind}[/]  {where}  "
                    f"[dim]score {h.score:.4f}[/]"
                )
                for line in h.snippet.splitlines():
                    out.print("      " + line, markup=False)

    _run(body)


@main.command("status")
@click.option("--path", "codebase", default=None, help="Status of this codebase's default index.")
@index_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status_cmd(codebase: str | None, index_dir: str | None, as_json: bool) -> None:
    """Show what an index holds (or list every index under the default location)."""

    def body() -> None:
        from .search import list_indexes, open_index

        config = _config(index_dir=index_dir)
        if not codebase and not config.index_dir:
            known = list_indexes()
            if as_json:
                out.print_json(json.dumps(known))
                return
            if not known:
                err.print("No indexes yet: run `rcm-dask index PATH`.")
                return
            for entry in known:
                out.print(f"{entry['root']}  ->  {entry['index_dir']}")
            return
        with open_index(path=codebase, config=config) as idx:
            st = idx.status()
        if as_json:
            out.print_json(json.dumps(st, default=str))
            return
        ident = st["identity"]
        out.print(f"index:   {st['index_dir']}")
        out.print(f"root:    {st['root']}")
        out.print(f"files:   {st['files']}    chunks: {st['chunks']}")
        out.print(
            f"model:   {ident.get('model')} ({ident.get('dimensions')} dims, "
            f"max {ident.get('max_tokens')} tokens), chunker v{ident.get('chunker_version')}"
        )
        out.print(f"vectors: {ident.get('qdrant_url') or 'embedded Qdrant (qdrant-edge)'}")
        if st["updated"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(st["updated"])))
            out.print(f"updated: {when}")
        if st.get("writer"):
            out.print(f"writing: an index run is writing it now ({st['writer']})")
        if st.get("pending"):
            out.print(
                f"pending: {st['pending']} files half-written by an interrupted run "
                "(the next index run redoes them)"
            )

    _run(body)


@main.command("mcp")
@click.option(
    "--http",
    is_flag=True,
    help="Serve streamable HTTP on 127.0.0.1 (at /mcp) instead of stdio.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    envvar="RCM_MCP_PORT",
    help="Port for --http; 0 picks a free one (printed on stderr). [env: RCM_MCP_PORT]",
)
def mcp_cmd(http: bool, port: int) -> None:
    """Serve the index, search and code-navigation tools to AI coding agents over MCP.

    By default speaks MCP on stdin/stdout, as MCP clients expect of a server they start.
    """

    def body() -> None:
        from .mcp_server import serve

        serve("http" if http else "stdio", port=port)

    _run(body)


if __name__ == "__main__":  # pragma: no cover
    main()
