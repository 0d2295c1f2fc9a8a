"""Cost that grows linearly: index growing, nested slices of rust-src and watch the rates.

Each series grows one copy of the tree in a temporary folder, slice by slice (only the
files a slice adds are copied, mtimes kept, before the run and outside its timing), and
indexes it with a fresh ``rcm-dask index --force --mode pipeline --json`` process, so the
index root, the relative paths and the settings are the same at every size. What is kept:

- ``real-model``: the bundled all-MiniLM-L6-v2 embeds every chunk (the default
  ``--vectors qdrant``);
- ``keyword-only``: ``--vectors none``, BM25 and the manifest only, nothing embedded.

The files are those ``rcm-dask index`` takes from the rust-src root (its ``.gitignore``
files applied), and the slices of a series hold each other. Two ways to choose them:

- ``folders``, the ladder named in the issue: ``library/`` (1,256 files),
  ``+ compiler/`` (2,700), ``+ src/tools/`` (4,849) and the whole tree (21,559, three
  quarters of it ``src/test/``). The rungs differ in kind (``library/`` files are large,
  ``src/test/`` files small), so files/s moves with them;
- ``samples`` of the whole tree: 1 file in k in path order, the same mix of folders at
  every size, so a rate that moves is the size's doing.

``--size small`` (default): real-model on samples 1 in 128, 64 and 32 (169 to 674
files); keyword-only on samples 1 in 16, 4 and the whole tree, and on the folders
``library/``, ``+ compiler/ + src/tools/`` and the whole tree (measured once for both).
``--size full``: real-model on the folders ``library/``, ``+ compiler/``,
``+ src/tools/``; keyword-only on all four rungs and on the same samples as small.

Per slice: files and chunks indexed, wall seconds of the whole process (imports, cluster
start and model load included), files/s and chunks/s over it, the chunks/s of what the
slice adds to the one before (difference of chunks over difference of seconds: fixed
costs cancel, so this is the rate at which the cost grows), peak memory (largest sum of
RSS over the process and all its children, sampled every 0.2 s, the sampler of
``benchmarks/modes``), the index's size on disk and the 1-minute load average before and
after (the machine may be shared). The summary gives, per series, the largest slice's
figures over the smallest slice's, and per ``--vectors`` setting a least-squares fit of
wall seconds as fixed + per-file + per-chunk costs with its worst miss.

Usage:
  python benchmarks/scale/run.py                  # 11 min on an idle 2-core machine
  python benchmarks/scale/run.py --size full      # hours on 2 cores (real model on 4.8k files)
  python benchmarks/scale/run.py --series keyword-only --repeats 3
  python benchmarks/scale/run.py --redraw         # summary and scale.png again from last_run.json
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
# what every report records: the lock's hash, CPU, cores, GPU (shared by benchmarks/*)
from _env import environment_lines, environment_summary

# one way to find the corpus and to run and measure an index, shared with benchmarks/modes
from modes.run import measure, rust_src

VECTORS = {"real-model": "qdrant", "keyword-only": "none"}
# the ladder: each rung adds folders to the one before; None is the whole tree
LADDER: dict[str, tuple[str, ...] | None] = {
    "library/": ("library",),
    "library/ + compiler/": ("library", "compiler"),
    "library/ + compiler/ + src/tools/": ("library", "compiler", "src/tools"),
    "whole tree": None,
}
# 1 file in k of the whole tree, path order: nested samples with the whole tree's mix
REAL_MODEL_SAMPLES = (128, 64, 32)
KEYWORD_SAMPLES = (16, 4, 1)


@dataclass(frozen=True)
class Slice:
    """One part of the tree: a name for the table and the files it holds."""

    name: str
    """Shown in the table and the plot."""
    files: tuple[str, ...]
    """``.rs`` paths relative to the rust-src root, as discovery lists them."""


def discover(root: Path) -> list[str]:
    """The .rs files that ``rcm-dask index ROOT`` would take (.gitignore applied), sorted."""
    from rcm_dask.sources import discover_sources, open_root

    return [f.path for f in discover_sources(open_root(str(root))).files]


def ladder_slice(name: str, folders: tuple[str, ...] | None, files: list[str]) -> Slice:
    """The files under ``folders`` (all of them for None)."""
    if folders is None:
        return Slice(name, tuple(files))
    prefixes = tuple(f.rstrip("/") + "/" for f in folders)
    return Slice(name, tuple(p for p in files if p.startswith(prefixes)))


def sample_slice(k: int, files: list[str]) -> Slice:
    """Every k-th file in path order: the same mix of folders as the whole tree."""
    name = "whole tree" if k == 1 else f"1 file in {k}"
    return Slice(name, tuple(p for i, p in enumerate(files) if i % k == 0))


@dataclass(frozen=True)
class Series:
    """Slices indexed one after the other with the same settings, smallest first."""

    name: str
    """``real-model`` or ``keyword-only``, then how the slices were chosen."""
    vectors: str
    """The run's ``--vectors``: ``qdrant`` (the real model embeds) or ``none``."""
    slices: tuple[Slice, ...]
    """Each holding the one before."""


def plan(size: str, root: Path) -> list[Series]:
    """The series of one size."""
    files = discover(root)
    ladder = [ladder_slice(name, folders, files) for name, folders in LADDER.items()]

    def samples(steps: tuple[int, ...]) -> tuple[Slice, ...]:
        return tuple(sample_slice(k, files) for k in steps)

    keyword_samples = Series("keyword-only, samples", "none", samples(KEYWORD_SAMPLES))
    if size == "full":
        return [
            Series("real-model, folders", "qdrant", tuple(ladder[:3])),
            Series("keyword-only, folders", "none", tuple(ladder)),
            keyword_samples,
        ]
    return [
        Series("real-model, samples", "qdrant", samples(REAL_MODEL_SAMPLES)),
        keyword_samples,
        Series("keyword-only, folders", "none", (ladder[0], ladder[2], ladder[3])),
    ]


def grow_tree(tree: Path, root: Path, files: tuple[str, ...]) -> float:
    """Make ``tree`` hold exactly ``files`` copied from ``root`` (mtimes kept); seconds taken.

    Slices are nested, so between two slices this only copies the files added.
    """
    start = time.perf_counter()
    wanted = set(files)
    have = {p.relative_to(tree).as_posix() for p in tree.rglob("*.rs")} if tree.exists() else set()
    for rel in have - wanted:
        (tree / rel).unlink()
    for rel in sorted(wanted - have):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, tree / rel)
    return time.perf_counter() - start


def busy_window(stats: dict[str, Any]) -> float:
    """Seconds from the first stage task's start to the last one's end."""
    spans = [s for spans in stats.get("stage_spans", {}).values() for s in spans]
    if not spans:
        return float(stats["seconds"])
    return max(e for _, e in spans) - min(s for s, _ in spans)


def disk_mb(path: Path) -> float:
    """Size of the files under ``path`` in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def run_slice(series: Series, piece: Slice, tree: Path, index_dir: Path) -> dict[str, Any]:
    """One measured ``rcm-dask index --force`` of ``tree``, which holds the slice."""
    cmd = [
        sys.executable,
        "-m",
        "rcm_dask",
        "index",
        str(tree),
        "--mode",
        "pipeline",
        "--force",
        "--index-dir",
        str(index_dir),
        "--json",
    ]
    if series.vectors != "qdrant":  # the default: leave it out, as a user would
        cmd += ["--vectors", series.vectors]
    load_before = os.getloadavg()[0]
    stats, wall, peak = measure(cmd)
    window = busy_window(stats)
    result = {
        "series": series.name,
        "vectors": series.vectors,
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


def add_marginal_rates(rows: list[dict[str, Any]]) -> None:
    """Chunks/s and files/s of what each slice adds to the one before (fixed costs cancel)."""
    previous: dict[str, dict[str, Any]] = {}
    for r in rows:
        before = previous.get(r["series"])
        r["marginal_chunks_per_s"] = r["marginal_files_per_s"] = None
        if before is not None and r["wall_s"] > before["wall_s"]:
            dt = r["wall_s"] - before["wall_s"]
            r["marginal_chunks_per_s"] = (r["chunks"] - before["chunks"]) / dt
            r["marginal_files_per_s"] = (r["files"] - before["files"]) / dt
        previous[r["series"]] = r


def flatness(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per series: the largest slice's rates and peak memory over the smallest slice's."""
    out = {}
    for name in dict.fromkeys(r["series"] for r in rows):
        mine = sorted((r for r in rows if r["series"] == name), key=lambda r: r["chunks"])
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        out[name] = {
            "size_ratio_chunks": large["chunks"] / small["chunks"],
            "size_ratio_files": large["files"] / small["files"],
            "chunks_per_s": large["chunks_per_s"] / small["chunks_per_s"],
            "files_per_s": large["files_per_s"] / small["files_per_s"],
            "peak_mb": large["peak_mb"] / small["peak_mb"],
        }
    return out


def linear_fit(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ``--vectors`` setting, wall seconds as fixed + per-file + per-chunk costs.

    Least squares over the distinct slices measured with that setting; with fewer than
    four, files are left out (wall = fixed + per chunk). A cost that grows linearly is
    one the fit misses by little at every size; the worst miss is the largest relative one.
    """
    import numpy as np

    out = {}
    for vectors in dict.fromkeys(r["vectors"] for r in rows):
        points = {(r["files"], r["chunks"]): r["wall_s"] for r in rows if r["vectors"] == vectors}
        if len(points) < 3:
            continue
        with_files = len(points) >= 4
        x = np.array([[1.0, f, c] if with_files else [1.0, c] for f, c in points])
        y = np.array(list(points.values()))
        coef = np.linalg.lstsq(x, y, rcond=None)[0]
        miss = x @ coef - y
        worst = int(np.argmax(np.abs(miss) / y))  # relative: small slices count as much
        out[vectors] = {
            "slices": len(points),
            "fixed_s": float(coef[0]),
            "ms_per_file": float(coef[1] * 1000) if with_files else None,
            "ms_per_chunk": float(coef[-1] * 1000),
            "worst_miss_s": float(miss[worst]),
            "worst_miss_pct": float(100 * miss[worst] / y[worst]),
        }
    return out


def table(
    rows: list[dict[str, Any]],
    flat: dict[str, dict[str, float]],
    fit: dict[str, dict[str, Any]],
) -> str:
    """The rows, the flatness ratios and the linear fit as Markdown."""
    lines = [
        (
            "| series | slice | files | chunks | wall s | files/s | chunks/s "
            "| chunks/s of what the slice adds | peak MB | index MB | load before → after |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        marginal = r.get("marginal_chunks_per_s")
        lines.append(
            f"| {r['series']} | {r['slice']} | {r['files']:,} | {r['chunks']:,} "
            f"| {r['wall_s']:.1f} | {r['files_per_s']:.2f} | {r['chunks_per_s']:.1f} "
            f"| {'' if marginal is None else f'{marginal:.1f}'} "
            f"| {r['peak_mb']:,.0f} | {r['index_mb']:,.0f} "
            f"| {r['load_1min'][0]:.1f} → {r['load_1min'][1]:.1f} |"
        )
    lines += [
        "",
        "Largest slice over smallest (1.00 is flat):",
        "",
        "| series | chunks × | files × | chunks/s | files/s | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in flat.items():
        lines.append(
            f"| {name} | {f['size_ratio_chunks']:.1f} | {f['size_ratio_files']:.1f} "
            f"| {f['chunks_per_s']:.2f} | {f['files_per_s']:.2f} | {f['peak_mb']:.2f} |"
        )
    lines += [
        "",
        "Wall seconds fitted as fixed + per file + per chunk (least squares over the slices):",
        "",
        "| --vectors | slices | fixed s | ms per file | ms per chunk | worst miss |",
        "|---|---|---|---|---|---|",
    ]
    for vectors, f in fit.items():
        per_file = "" if f["ms_per_file"] is None else f"{f['ms_per_file']:.2f}"
        lines.append(
            f"| {vectors} | {f['slices']} | {f['fixed_s']:.1f} | {per_file} "
            f"| {f['ms_per_chunk']:.3f} | {f['worst_miss_s']:+.1f} s "
            f"({f['worst_miss_pct']:+.0f} %) |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """Rates, peak memory and rates relative to the smallest slice, one line per series."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    # between decades label only 2x and 5x, or the labels run into each other
    sparse = FuncFormatter(lambda v, _: plain(v) if f"{v:e}"[0] in "25" else "")
    by_series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_series.setdefault(r["series"], []).append(r)

    def style(name: str, mine: list[dict[str, Any]]) -> dict[str, Any]:
        # colour: what is kept (the real model or keywords); line: how slices were chosen
        real = mine[0]["vectors"] == "qdrant"
        samples = "sample" in name
        return {
            "color": "tab:blue" if real else "tab:orange",
            "marker": "o" if samples else "s",
            "linestyle": "-" if samples else "--",
        }

    fig, axes = plt.subplots(2, 2, figsize=(12, 9), constrained_layout=True)
    (ax_chunks, ax_files), (ax_peak, ax_rel) = axes

    def decades(ax: Any, values: list[float]) -> None:
        # whole decades, so that a flat line looks flat and not zoomed into noise
        lo, hi = min(values), max(values)
        ax.set_ylim(10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi) + 1e-9))

    for ax, x, y, label in (
        (ax_chunks, "chunks", "chunks_per_s", "chunks/s (whole process, log)"),
        (ax_files, "files", "files_per_s", "files/s (whole process, log)"),
    ):
        for name, mine in by_series.items():
            st = style(name, mine)
            ax.plot([r[x] for r in mine], [r[y] for r in mine], label=name, **st)
            if ax is ax_chunks:
                for r in mine:
                    ax.annotate(
                        r["slice"],
                        (r[x], r[y]),
                        textcoords="offset points",
                        # samples' names above their points, folders' below
                        xytext=(3, 5) if "sample" in name else (3, -11),
                        fontsize=7,
                        color=st["color"],
                    )
        ax.set_yscale("log")
        decades(ax, [r[y] for mine in by_series.values() for r in mine])
        ax.set_ylabel(label)
        ax.set_xlabel(f"{x} indexed (log)")
    highest = 2.0
    for name, mine in by_series.items():
        st = style(name, mine)
        ax_peak.plot([r["chunks"] for r in mine], [r["peak_mb"] for r in mine], label=name, **st)
        first = mine[0]
        for key, what, width in (("chunks_per_s", "chunks/s", 1.8), ("peak_mb", "peak MB", 0.9)):
            ys = [r[key] / first[key] for r in mine]
            highest = max(highest, *ys)
            ax_rel.plot(
                [r["chunks"] for r in mine],
                ys,
                label=f"{name}: {what}",
                **{**st, "linewidth": width},
            )
    ax_peak.set_ylim(bottom=0)
    ax_peak.set_ylabel("peak memory, MB (all processes)")
    ax_peak.set_xlabel("chunks indexed (log)")
    ax_rel.axhline(1.0, color="grey", linewidth=0.8)
    ax_rel.set_ylim(0, highest * 1.05)
    ax_rel.set_ylabel("chunks/s (thick), peak MB (thin): over the series' first slice")
    ax_rel.set_xlabel("chunks indexed (log)")
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(sparse)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_formatter(plain)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and the software that ran."""
    import dask
    import distributed
    import psutil
    import torch
    import transformers

    import rcm_dask

    repo = HERE.parents[1]
    commit = subprocess.run(
        ["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=12"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    env = environment_summary()
    return {
        "environment": env,
        "cpu": env["cpu"],
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


def summarise(figures: dict[str, Any]) -> None:
    """Add the marginal rates, flatness ratios, linear fit and Markdown table."""
    rows = figures["rows"]
    add_marginal_rates(rows)
    figures["flatness"] = flatness(rows)
    figures["linear_fit"] = linear_fit(rows)
    figures["table"] = table(rows, figures["flatness"], figures["linear_fit"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--root", help="the rust-src root (default: the installed one)")
    parser.add_argument(
        "--series",
        help="run only the series whose names hold one of these comma-separated words "
        "(real-model, keyword-only, samples, folders)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "last_run.json"))
    parser.add_argument("--png", default=str(HERE / "scale.png"))
    parser.add_argument(
        "--redraw",
        action="store_true",
        help="recompute the summary and the PNG from the rows in --out, run nothing",
    )
    args = parser.parse_args()
    if args.redraw:
        figures = json.loads(Path(args.out).read_text())
        summarise(figures)
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
        plot(figures["rows"], Path(args.png), figures["plot_title"])
        print(figures["table"])
        return
    root = Path(args.root) if args.root else rust_src()
    series = plan(args.size, root)
    if args.series:
        words = [w.strip() for w in args.series.split(",") if w.strip()]
        series = [s for s in series if any(w in s.name for w in words)]
        if not series:
            parser.error(f"no series of --size {args.size} matches --series {args.series}")
    started = time.time()
    rows = []
    # a slice that two series share (the whole tree) is measured once
    measured: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rcm-scale-") as tmp:
        for s in series:
            # one folder per series, grown slice by slice: the index root never changes
            tree = Path(tmp) / s.name.replace(", ", "-") / root.name
            for piece in s.slices:
                key = (s.vectors, piece.files)
                if key in measured:
                    rows.append({**measured[key], "series": s.name, "slice": piece.name})
                    continue
                copy_s = grow_tree(tree, root, piece.files)
                runs = []
                for rep in range(args.repeats):
                    r = run_slice(s, piece, tree, Path(tmp) / "index")
                    runs.append(r)
                    print(
                        f"[{s.name} | {piece.name} | {rep + 1}/{args.repeats}] "
                        f"{r['files']:,} files, {r['chunks']:,} chunks in {r['wall_s']:.1f} s: "
                        f"{r['files_per_s']:.2f} files/s, {r['chunks_per_s']:.1f} chunks/s, "
                        f"peak {r['peak_mb']:,.0f} MB, index {r['index_mb']:,.0f} MB "
                        f"(load {r['load_1min'][0]} -> {r['load_1min'][1]})",
                        file=sys.stderr,
                        flush=True,
                    )
                row = median_runs(runs)
                row["copy_s"] = round(copy_s, 2)
                row["runs"] = runs
                measured[key] = row
                rows.append(row)
    info = machine()
    figures = {
        "size": args.size,
        "root": str(root),
        "command": " ".join(["python", "benchmarks/scale/run.py", *sys.argv[1:]]),
        "total_s": round(time.time() - started, 1),
        "machine": info,
        "settings": {k: v for k, v in os.environ.items() if k.startswith("RCM_")},
        "rows": rows,
        "plot_title": (
            f"rcm-dask index --mode pipeline on growing slices of {root.name} "
            f"({info['cores']} cores, --size {args.size})"
        ),
    }
    summarise(figures)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    plot(rows, Path(args.png), figures["plot_title"])
    print("\n".join(environment_lines(info["environment"])) + "\n")
    print(figures["table"])
    print(f"\n{figures['total_s']:.0f} s in all; wrote {args.out} and {args.png}")


if __name__ == "__main__":
    main()
