"""The ``rcm-dask`` command line: a thin layer over the library (click + rich).

Every option that maps to an :class:`~rcm_dask.config.IndexConfig` field can also be
set with its ``RCM_*`` variable; the option wins. Usage mistakes exit 2; an
:class:`~rcm_dask.errors.RcmError` prints its message and exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.padding import Padding
from rich.syntax import Syntax
from rich.text import Text

from . import __version__
from .config import FUSIONS, MODES, VECTORS, IndexConfig, env_name
from .errors import IndexInterrupted, RcmError
from .progress import ProgressDisplay
from .records import CHUNK_KINDS, FileHit, Hit, IndexStats, display_path

if TYPE_CHECKING:
    from .dryrun import DryRun

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


def _stored_vectors(path: str, config: IndexConfig) -> str | None:
    """The ``vectors`` setting of the index a run on ``path`` would add to, if it exists."""
    from .planning import index_folder, kept_vectors
    from .sources import open_root

    try:
        folder = index_folder(config, open_root(path))
    except RcmError:
        return None  # the run itself reports a bad path
    return kept_vectors(folder)


def _run(action: Callable[[], None], interrupted: str | None = None) -> None:
    """Run a command body, turning our errors into exit codes without tracebacks;
    ``interrupted``: what Ctrl-C says (default: an index run's words)."""
    try:
        action()
    except RcmError as e:
        # one line whatever the terminal's width, and the message is not markup (a path
        # may hold brackets)
        err.print(Text.assemble(("Error:", "bold red"), f" {e}"), soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt as e:
        message = (
            str(e)
            if isinstance(e, IndexInterrupted)
            else interrupted
            or (
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
    help="Worker processes of the LocalCluster (default: one per 4 cores)." + _env("n_workers"),
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
@click.option(
    "--force",
    is_flag=True,
    help="Rebuild the index from scratch, beside the live one: searches answer from the old "
    "index until the new one replaces it.",
)
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
    "--vectors",
    type=click.Choice(VECTORS),
    default=None,
    help="What to keep besides BM25: qdrant (default: embed every chunk, for hybrid and vector "
    "search) or none (keyword-only: nothing embedded, no model weights loaded; BM25 search and "
    "code intelligence, for huge codebases or machines without a GPU). An index keeps the "
    "setting it was built with: a re-run without --vectors keeps it; changing it needs --force."
    + _env("vectors"),
)
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
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]),
    default=None,
    help="Forward-pass precision (default auto: fp16 on a GPU, bf16 on a CPU with native "
    "bfloat16, else fp32); int8 is CPU dynamic quantisation." + _env("precision"),
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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what a run would index (files by folder, skipped files by reason, new / "
    "changed / removed files, estimated chunks and time, folders that look like build output "
    "or vendored code) without embedding or writing anything.",
)
@click.option(
    "--quiet", "-q", is_flag=True, help="No progress bar; print a one-line summary at the end."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run's stats (or the --dry-run plan) as JSON on stdout, and nothing else.",
)
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
    vectors: str | None,
    batch_size: int | None,
    cpu_batch_size: int | None,
    precision: str | None,
    max_file_size: int | None,
    exclude: tuple[str, ...],
    no_gitignore: bool,
    include_hidden: bool,
    dry_run: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Index the Rust codebase at PATH (a folder or an fsspec URL such as s3://bucket/repo).

    Re-runs are incremental: only new and changed files are read and embedded. Try
    --dry-run first on an unfamiliar codebase: it shows what would be indexed.
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
            vectors=vectors,
            batch_size=batch_size,
            cpu_batch_size=cpu_batch_size,
            precision=precision,
            max_file_size=max_file_size,
            exclude=exclude or None,
            respect_gitignore=False if no_gitignore else None,
            include_hidden=True if include_hidden else None,
            wait=wait,
        )
        if vectors is None and not force and env_name("vectors") not in os.environ:
            # a plain re-run keeps what the index was built with (as the MCP tool does)
            kept = _stored_vectors(path, config)
            if kept is not None and kept != config.vectors:
                config = config.replace(vectors=kept)

        def on_wait(holder: dict[str, Any] | None) -> None:
            from .stores.lock import describe_holder

            err.print(f"Waiting: this index is being written by {describe_holder(holder)}...")

        if dry_run:
            from .dryrun import plan_dry_run

            plan = plan_dry_run(path, config, force=force)
            if as_json:
                out.print_json(plan.to_json())
            else:
                _print_dry_run(plan)
            return
        show = ProgressDisplay(err, lines=False, dashboard=dashboard)
        if quiet or as_json:
            show.style = "off"
        with show as on_progress:
            stats = index(
                path,
                config,
                force=force,
                progress=on_progress,
                dashboard=dashboard,
                performance_report=performance_report,
                on_wait=on_wait,
            )
        if as_json:
            out.print_json(stats.to_json())
        elif quiet:
            out.print(_one_line(stats), markup=False)
        else:
            out.print("\n".join(stats.summary_lines()), markup=False)

    _run(body)


def _one_line(stats: IndexStats) -> str:
    """The --quiet summary."""
    skipped = f", {stats.files_skipped} skipped" if stats.files_skipped else ""
    return (
        f"{stats.root}: {stats.files_indexed} files indexed, {stats.files_unchanged} unchanged, "
        f"{stats.files_removed} removed{skipped}; {stats.chunks} chunks in {stats.seconds:.1f}s "
        f"({stats.chunks_per_second:.1f} chunks/s) -> {stats.index_dir}"
    )


def _print_dry_run(plan: DryRun) -> None:
    """The --dry-run report, warnings highlighted."""
    for line in plan.summary_lines():
        if line.startswith("  warning: "):
            out.print(Text(line, style="bold yellow"))
        else:
            out.print(line, markup=False)


@main.command("search")
@click.argument("query")
@click.option("--limit", "-n", type=click.IntRange(1), default=10, show_default=True)
@click.option("--bm25", "lexical", is_flag=True, help="Keyword (BM25) ranking only.")
@click.option(
    "--vector",
    "semantic",
    is_flag=True,
    help="Vector (meaning) ranking only (not on an index built with --vectors none).",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(CHUNK_KINDS),
    help="Only this kind (repeatable).",
)
@click.option("--path-glob", default=None, help="Only files matching this glob (src/io/**).")
@click.option("--path", "codebase", default=None, help="Search the default index of this codebase.")
@index_dir_option
@model_options
@click.option(
    "--files",
    "by_file",
    is_flag=True,
    help="One result per file, with its best items (which files should I read?).",
)
@click.option(
    "--ranking",
    default=None,
    help="Ranking steps after fusion: default (definitions,tests,diversity,whole_file), all, none, "
    "or a list such as definitions,paths,tests [RCM_RANKING].",
)
@click.option(
    "--fusion",
    type=click.Choice(FUSIONS),
    default=None,
    help="How hybrid search fuses BM25 and vectors: score (their normalised scores, the "
    "default) or rrf (reciprocal rank fusion) [RCM_FUSION].",
)
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
    by_file: bool,
    ranking: str | None,
    fusion: str | None,
    as_json: bool,
) -> None:
    """Search an index for QUERY: words, identifiers, a question or a code fragment.

    A bare name (BinaryHeap, fmt::Display, vec!) is looked up as a symbol: its
    definition comes first. Anything else is a question, answered by keywords and
    meaning together. Without --index-dir or --path, searches the most recently
    updated index.
    """
    if lexical and semantic:
        raise click.UsageError("--bm25 and --vector exclude each other")
    mode = "bm25" if lexical else "vector" if semantic else "hybrid"

    def body() -> None:
        from .reader import open_index

        config = _config(
            index_dir=index_dir,
            model=model,
            device=device,
            qdrant_url=qdrant_url,
            ranking=ranking,
            fusion=fusion,
        )
        with open_index(path=codebase, config=config) as idx:
            if by_file:
                files = idx.search_files(
                    query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob
                )
                found: Sequence[Hit | FileHit] = files
            else:
                hits = idx.search(query, limit=limit, mode=mode, kinds=kinds, path_glob=path_glob)
                found = hits
            for notice in idx.notices:
                err.print(f"[yellow]Note:[/] {notice}")
            if as_json:
                out.print_json(json.dumps([h.to_dict() for h in found]))
                return
            if not found:
                err.print(f"No hits in {idx.index_dir}.")
                return
            if by_file:
                print_files(files, out)
            else:
                print_hits(hits, query, out)

    _run(body)


def query_terms(query: str) -> list[str]:
    """Words of a query to highlight in snippets, longest first.

    Examples
    --------
    >>> query_terms("push an item onto a BinaryHeap")
    ['binaryheap', 'item', 'push']
    """
    from .stores.bm25 import STOP_WORDS  # the words BM25 does not search either

    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)}
    return sorted(
        (w for w in words if len(w) > 2 and w not in STOP_WORDS), key=lambda w: (-len(w), w)
    )


def term_spans(text: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """Non-overlapping ``(start, end)`` offsets of the terms in ``text``, case-insensitive.

    Examples
    --------
    >>> term_spans("fn push(&mut self)", ["push", "self"])
    [(3, 7), (13, 17)]
    """
    if not terms:
        return []
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    return [m.span() for m in pattern.finditer(text)]


def print_hits(hits: Sequence[Hit], query: str, console: Console) -> None:
    """Hits for a terminal: rank, ``path:line``, symbol, kind, score, then the snippet.

    On a terminal the snippet is highlighted as Rust with the query's words marked;
    elsewhere (a pipe, a file) it is plain text, so that tools can read it.
    """
    terms = query_terms(query)
    for i, h in enumerate(hits, 1):
        head = Text.assemble(
            (f"{i:>2}. ", "bold"),
            (f"{display_path(h.path)}:{h.start_line}", "bold cyan"),
            "  ",
            (h.qualname or h.name, "bold"),
            "  ",
            (h.kind, "magenta"),
            "  ",
            (f"score {h.score:.4f}", "dim"),
        )
        console.print(head)
        if not h.snippet:
            continue
        if console.is_terminal:
            syntax = Syntax(h.snippet, "rust", theme="ansi_dark", background_color="default")
            for n, line in enumerate(h.snippet.splitlines(), 1):
                for start, end in term_spans(line, terms):
                    syntax.stylize_range("bold reverse", (n, start), (n, end))
            console.print(Padding(syntax, (0, 0, 0, 4)))
        else:
            for line in h.snippet.splitlines():
                console.print("    " + line, markup=False, highlight=False)


def print_files(files: Sequence[FileHit], console: Console) -> None:
    """File results for a terminal: rank, path, score, then each best item's line."""
    for i, f in enumerate(files, 1):
        console.print(
            Text.assemble(
                (f"{i:>2}. ", "bold"),
                (display_path(f.path), "bold cyan"),
                "  ",
                (f"score {f.score:.4f}", "dim"),
            )
        )
        for h in f.hits:
            console.print(
                Text.assemble(
                    "    ",
                    (f"{h.start_line:>5}", "cyan"),
                    "  ",
                    (h.qualname or h.name, "bold"),
                    "  ",
                    (h.kind, "magenta"),
                )
            )


@main.command("status")
@click.option("--path", "codebase", default=None, help="Status of this codebase's default index.")
@index_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status_cmd(codebase: str | None, index_dir: str | None, as_json: bool) -> None:
    """Show what an index holds (or list every index under the default location)."""

    def body() -> None:
        from .planning import list_indexes
        from .reader import open_index
        from .status import ago

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
                when = ago(time.time() - float(entry["mtime"]))
                kind = ", keyword-only" if entry.get("vectors") == "none" else ""
                out.print(
                    f"{display_path(str(entry['root']))}  ->  "
                    f"{display_path(str(entry['index_dir']))}  (updated {when}{kind})",
                    markup=False,
                )
            return
        with open_index(codebase, config=config) as idx:
            info = idx.stats()
        if as_json:
            out.print_json(info.to_json())
            return
        for line in info.summary_lines():
            key, sep, rest = line.partition(":")
            if sep and not line.startswith(" "):
                out.print(Text.assemble((key + sep, "bold"), rest))
            else:
                out.print(line, markup=False)

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
@click.option(
    "--root",
    "roots",
    multiple=True,
    metavar="DIR",
    help="A folder the tools may index and read (repeatable); nothing outside the roots is "
    "touched. Default: the folders in RCM_MCP_ROOTS (separated by the path separator, ':'), "
    "else the working directory. [env: RCM_MCP_ROOTS]",
)
@click.option(
    "--auth-token",
    metavar="TOKEN",
    envvar="RCM_MCP_TOKEN",
    help="For --http: the bearer token every request must carry (header 'Authorization: "
    "Bearer TOKEN'), at least 16 characters. Default: one generated for the run and printed "
    "on stderr. Prefer the variable: other local users can see a command line. "
    "[env: RCM_MCP_TOKEN]",
)
def mcp_cmd(http: bool, port: int, roots: tuple[str, ...], auth_token: str | None) -> None:
    """Serve the index, search and code-navigation tools to AI coding agents over MCP.

    By default speaks MCP on stdin/stdout, as MCP clients expect of a server they start.
    The tools work only inside the roots you allow (--root, RCM_MCP_ROOTS); a client that
    offers its own roots narrows them further. Over --http, every request must carry the
    bearer token (--auth-token, RCM_MCP_TOKEN, else generated and printed on stderr).
    """

    def body() -> None:
        from .mcp_server import serve

        serve("http" if http else "stdio", port=port, roots=roots, auth_token=auth_token)

    _run(body, interrupted="MCP server stopped.")


if __name__ == "__main__":  # pragma: no cover
    main()
