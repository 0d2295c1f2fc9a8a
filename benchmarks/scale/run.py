"""Cost that grows linearly: index growing, nested slices of rust-src and watch the rates.

Every slice is the same rust-src root indexed by a fresh ``rcm-dask index --force --mode
pipeline`` process, limited to part of the tree by ``--exclude`` patterns, so paths,
chunk ids and settings are the same at every size. Two series:

- ``real-model``: the bundled all-MiniLM-L6-v2 embeds every chunk (the default
  ``--vectors qdrant``);
- ``keyword-only``: ``--vectors none``, BM25 and the manifest only, nothing embedded.

The slices, each a superset of the one before:

- the ladder named in the issue: ``library/`` (about 1.3k files), ``+ compiler/`` (2.7k),
  ``+ src/tools/`` (5.6k), and the whole tree (21.6k, most of it ``src/test/``);
- for the short default run, samples of ``library/``: every 64th, 32nd and 16th file in
  path order (the 64th-file sample is inside the 32nd-file one, and so on).

``--size small`` (default): real model on the three samples of ``library/``, keyword-only
on ``library/``, ``+ compiler/ + src/tools/`` and the whole tree (every other rung and the
top). ``--size full``: real model on ``library/``, ``+ compiler/``, ``+ src/tools/``;
keyword-only on all four rungs.

Per slice: files and chunks indexed, wall seconds of the whole process, the busy window
(first stage task start to last stage task end, so without imports, cluster start and
model load), files/s and chunks/s over both, peak memory (largest sum of RSS over the
process and all its children, sampled every 0.2 s, as in ``benchmarks/modes``) and the
index's size on disk. The flatness summary is, per series, the largest slice's figure
over the smallest slice's.

Usage:
  python benchmarks/scale/run.py                  # ~15 min on 2 cores
  python benchmarks/scale/run.py --size full      # hours on 2 cores (real model on 5.6k files)
  python benchmarks/scale/run.py --series keyword-only --repeats 3
  python benchmarks/scale/run.py --plot-only      # redraw scale.png from last_run.json
Writes benchmarks/scale/last_run.json and scale.png, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from modes.run import measure, rust_src  # noqa: E402  (one way to run and measure an index)

SERIES = ("real-model", "keyword-only")
# the ladder: each rung adds folders to the one before; None is the whole tree
LADDER: dict[str, tuple[str, ...] | None] = {
    "library/": ("library",),
    "+ compiler/": ("library", "compiler"),
    "+ src/tools/": ("library", "compiler", "src/tools"),
    "whole tree": None,
}
SAMPLE_STEPS = (64, 32, 16)  # every k-th file of library/, nested


@dataclass(frozen=True)
class Slice:
    """One part of the tree: a name for the table and the patterns that carve it out."""

    name: str
    """Shown in the table and the plot."""
    excludes: tuple[str, ...]
    """``--exclude`` patterns, relative to the rust-src root."""


def folder_excludes(folders: tuple[str, ...] | None) -> tuple[str, ...]:
    """Gitignore patterns that keep only ``folders`` (and everything below them).

    Each level excludes its siblings and re-includes the one folder on the way down;
    the last matching pattern wins, as in a ``.gitignore``.
    """
    if folders is None:
        return ()
    out: list[str] = ["/*"]
    for folder in folders:
        parts = folder.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if depth > 1:
                out.append("/" + "/".join(parts[: depth - 1]) + "/*")
            out.append(f"!/{prefix}/")
    return tuple(dict.fromkeys(out))


def sample_slices(root: Path, folder: str, steps: tuple[int, ...]) -> list[Slice]:
    """Every k-th file (path order) of ``folder`` for each k in ``steps``, nested."""
    from rcm_dask.sources import discover_sources, open_root

    base = folder_excludes((folder,))
    files = [f.path for f in discover_sources(open_root(str(root)), exclude=base).files]
    out = []
    for k in steps:
        keep = [f"!/{p}" for i, p in enumerate(files) if i % k == 0]
        out.append(Slice(f"{folder}/, 1 file in {k}", (*base, "*.rs", *keep)))
    return out


def plan(size: str, root: Path) -> dict[str, list[Slice]]:
    """The slices of each series for one size."""
    ladder = [Slice(name, folder_excludes(folders)) for name, folders in LADDER.items()]
    if size == "full":
        return {"real-model": ladder[:3], "keyword-only": ladder}
    return {
        "real-model": sample_slices(root, "library", SAMPLE_STEPS),
        "keyword-only": [ladder[0], ladder[2], ladder[3]],
    }


def busy_window(stats: dict[str, Any]) -> float:
    """Seconds from the first stage task's start to the last one's end."""
    spans = [s for spans in stats.get("stage_spans", {}).values() for s in spans]
    if not spans:
        return float(stats["seconds"])
    return max(e for _, e in spans) - min(s for s, _ in spans)


def disk_mb(path: Path) -> float:
    """Size of the files under ``path`` in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def run_slice(series: str, piece: Slice, root: Path, index_dir: Path) -> dict[str, Any]:
    """One measured ``rcm-dask index --force`` of one slice."""
    cmd = [
        sys.executable,
        "-m",
        "rcm_dask",
        "index",
        str(root),
        "--mode",
        "pipeline",
        "--force",
        "--index-dir",
        str(index_dir),
        "--json",
    ]
    if series == "keyword-only":
        cmd += ["--vectors", "none"]
    for pattern in piece.excludes:
        cmd.append(f"--exclude={pattern}")
    load_before = os.getloadavg()[0]
    stats, wall, peak = measure(cmd)
    window = busy_window(stats)
    result = {
        "series": series,
        "slice": piece.name,
        "files": stats["files_indexed"],
        "chunks": stats["chunks"],
        "wall_s": wall,
        "run_s": stats["seconds"],
        "window_s": window,
        "files_per_s": stats["files_indexed"] / wall,
        "chunks_per_s": stats["chunks"] / wall,
        "window_chunks_per_s": stats["chunks"] / window,
        "peak_mb": peak,
        "index_mb": disk_mb(index_dir),
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "batches": stats["batches"],
        "skipped": stats["skipped"],
        "stage_seconds": stats["stage_seconds"],
        "stage_wall_seconds": stats["stage_wall_seconds"],
        "cluster": stats["cluster"],
        "excludes": len(piece.excludes),
    }
    shutil.rmtree(index_dir, ignore_errors=True)
    return result


def median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from repeats of a slice: medians of the measured figures."""
    row = dict(runs[0])
    for key in (
        "wall_s",
        "run_s",
        "window_s",
        "files_per_s",
        "chunks_per_s",
        "window_chunks_per_s",
        "peak_mb",
        "index_mb",
    ):
        row[key] = statistics.median(r[key] for r in runs)
    row["repeats"] = len(runs)
    return row


def flatness(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per series: the largest slice's rates and peak memory over the smallest slice's."""
    out = {}
    for series in SERIES:
        mine = sorted((r for r in rows if r["series"] == series), key=lambda r: r["chunks"])
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        out[series] = {
            "size_ratio_chunks": large["chunks"] / small["chunks"],
            "size_ratio_files": large["files"] / small["files"],
            "chunks_per_s": large["chunks_per_s"] / small["chunks_per_s"],
            "window_chunks_per_s": large["window_chunks_per_s"] / small["window_chunks_per_s"],
            "files_per_s": large["files_per_s"] / small["files_per_s"],
            "peak_mb": large["peak_mb"] / small["peak_mb"],
        }
    return out


def table(rows: list[dict[str, Any]], flat: dict[str, dict[str, float]]) -> str:
    """The rows and the flatness ratios as Markdown."""
    lines = [
        "| series | slice | files | chunks | wall s | files/s | chunks/s "
        "| busy window s | chunks/s in window | peak MB | index MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['series']} | {r['slice']} | {r['files']:,} | {r['chunks']:,} "
            f"| {r['wall_s']:.1f} | {r['files_per_s']:.2f} | {r['chunks_per_s']:.1f} "
            f"| {r['window_s']:.1f} | {r['window_chunks_per_s']:.1f} "
            f"| {r['peak_mb']:,.0f} | {r['index_mb']:,.0f} |"
        )
    lines += [
        "",
        "Largest slice over smallest (1.00 is flat):",
        "",
        "| series | chunks × | files × | chunks/s | chunks/s in window | files/s | peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for series, f in flat.items():
        lines.append(
            f"| {series} | {f['size_ratio_chunks']:.1f} | {f['size_ratio_files']:.1f} "
            f"| {f['chunks_per_s']:.2f} | {f['window_chunks_per_s']:.2f} "
            f"| {f['files_per_s']:.2f} | {f['peak_mb']:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """Rates and peak memory against the size indexed, one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("chunks", "chunks_per_s", "chunks/s (whole process)", True),
        ("chunks", "window_chunks_per_s", "chunks/s (busy window)", True),
        ("files", "files_per_s", "files/s (whole process)", True),
        ("chunks", "peak_mb", "peak memory, MB (all processes)", False),
    )
    styles = {"real-model": ("tab:blue", "o"), "keyword-only": ("tab:orange", "s")}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    for ax, (x, y, label, log_y) in zip(axes.flat, panels):
        for series in SERIES:
            mine = sorted((r for r in rows if r["series"] == series), key=lambda r: r[x])
            if not mine:
                continue
            color, marker = styles[series]
            ax.plot(
                [r[x] for r in mine],
                [r[y] for r in mine],
                marker=marker,
                color=color,
                label=series,
            )
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel(f"{x} indexed (log)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and the software that ran."""
    import psutil
    import torch
    import transformers

    import dask
    import distributed
    import rcm_dask

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    repo = HERE.parents[1]
    commit = subprocess.run(
        ["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=12"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "rcm_dask": f"{rcm_dask.__version__} ({commit})",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "dask": dask.__version__,
            "distributed": distributed.__version__,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--root", help="the rust-src root (default: the installed one)")
    parser.add_argument("--series", default=",".join(SERIES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "last_run.json"))
    parser.add_argument("--png", default=str(HERE / "scale.png"))
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the PNG from --out, run nothing"
    )
    args = parser.parse_args()
    if args.plot_only:
        figures = json.loads(Path(args.out).read_text())
        plot(figures["rows"], Path(args.png), figures["plot_title"])
        return
    root = Path(args.root) if args.root else rust_src()
    wanted = [s.strip() for s in args.series.split(",") if s.strip()]
    unknown = set(wanted) - set(SERIES)
    if unknown:
        parser.error(f"unknown series {sorted(unknown)}; pick from {', '.join(SERIES)}")
    slices = {s: v for s, v in plan(args.size, root).items() if s in wanted}
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rcm-scale-") as tmp:
        for series, pieces in slices.items():
            for piece in pieces:
                runs = []
                for rep in range(args.repeats):
                    r = run_slice(series, piece, root, Path(tmp) / "index")
                    runs.append(r)
                    print(
                        f"[{series} | {piece.name} | {rep + 1}/{args.repeats}] "
                        f"{r['files']:,} files, {r['chunks']:,} chunks in {r['wall_s']:.1f} s: "
                        f"{r['files_per_s']:.2f} files/s, {r['chunks_per_s']:.1f} chunks/s, "
                        f"peak {r['peak_mb']:,.0f} MB, index {r['index_mb']:,.0f} MB "
                        f"(load {r['load_1min'][0]} -> {r['load_1min'][1]})",
                        file=sys.stderr,
                        flush=True,
                    )
                row = median_runs(runs)
                row["runs"] = runs
                rows.append(row)
    flat = flatness(rows)
    info = machine()
    figures = {
        "size": args.size,
        "root": str(root),
        "command": " ".join(["python", "benchmarks/scale/run.py", *sys.argv[1:]]),
        "total_s": round(time.time() - started, 1),
        "machine": info,
        "settings": {k: v for k, v in os.environ.items() if k.startswith("RCM_")},
        "rows": rows,
        "flatness": flat,
        "table": table(rows, flat),
        "plot_title": (
            f"rcm-dask index --mode pipeline on growing slices of {root.name} "
            f"({info['cores']} cores, {args.size} size)"
        ),
    }
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    plot(rows, Path(args.png), figures["plot_title"])
    print(figures["table"])
    print(f"\n{figures['total_s']:.0f} s in all; wrote {args.out} and {args.png}")


if __name__ == "__main__":
    main()
