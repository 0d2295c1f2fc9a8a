"""The three indexing modes side by side, against the embedding limit, on one rust-src tree.

Each run is a fresh ``rcm-dask index --force`` in its own process; its peak memory is the
largest sum of RSS over that process and all its children (scheduler, nannies, workers),
sampled every 0.2 s. ``embed-only`` is the limit: the same chunk texts through the same
embedder in a plain loop of 128-chunk cross-file batches, chunking not timed. ``null`` is
the dataflow's ceiling: the pipeline mode with rcm_dask.testing.NullEmbedder (the real
tokenizer, no forward pass), with the writer's and the driver's busy seconds.
Runs are interleaved (mode after mode, then again) so that a noisy neighbour hurts all
modes alike; the report quotes medians.

Usage:
  python benchmarks/modes/run.py                    # library/alloc, 3 repeats (~30 min on 2 cores)
  python benchmarks/modes/run.py --size library     # all of library/ (hours on 2 cores)
  python benchmarks/modes/run.py --root DIR --repeats 1 --modes pipeline,embed-only
  python benchmarks/modes/run.py --size library --repeats 3 --modes null   # ~2 min a run
Writes benchmarks/modes/last_run.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
# what every report records: the lock's hash, CPU, cores, GPU (shared by benchmarks/*)
from _env import environment_lines, environment_summary, rust_src  # noqa: E402

MODES = ("sequential", "parallel", "pipeline", "embed-only", "matmul-peak", "null")
SIZES = {
    "alloc": "library/alloc",
    "collections": "library/alloc/src/collections",
    "library": "library",
}


def measure(cmd: list[str]) -> tuple[dict[str, Any], float, float]:
    """Run a command; return its JSON stdout, wall seconds and peak tree RSS in MB."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [parent, *parent.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out), wall, peak / 2**20


def embed_only(root: str) -> None:
    """Child process: chunk everything (untimed), then time the plain embedding loop."""
    from rcm_dask.config import IndexConfig
    from rcm_dask.embed_text import format_for_embedding
    from rcm_dask.embedding import Embedder
    from rcm_dask.sources import discover_sources, open_root
    from rcm_dask.stages import read_chunk_partition

    config = IndexConfig.from_env()
    src = open_root(root)
    emb = Embedder(
        config.model,
        batch_size=config.batch_size,
        cpu_batch_size=config.cpu_batch_size,
        torch_threads=config.torch_threads,
        precision=config.precision,
    )
    part = read_chunk_partition(discover_sources(src).files, src.fs, emb)
    texts = [format_for_embedding(c) for c in part.chunks]
    tokens = sum(emb.count_tokens(texts))
    emb.load()
    start = time.perf_counter()
    for i in range(0, len(texts), config.batch_size):
        emb.embed_batch(texts[i : i + config.batch_size])
    seconds = time.perf_counter() - start
    flops = tokens * flops_per_token(emb.model_dir, tokens / max(len(texts), 1))
    json.dump(
        {
            "chunks": len(texts),
            "embed_seconds": seconds,
            "tokens": tokens,
            "precision": emb.precision,
            "model_gflops": flops / seconds / 1e9,
        },
        sys.stdout,
    )


def null_pipeline(root: str, index_dir: str) -> None:
    """Child process: the pipeline mode with the null embedder (no forward pass); prints
    the run's stats as JSON, as ``rcm-dask index --json`` does."""
    import rcm_dask
    from rcm_dask.testing import NullEmbedder

    stats = rcm_dask.index(
        root, mode="pipeline", force=True, index_dir=index_dir, embedder=NullEmbedder()
    )
    json.dump(stats.to_dict(), sys.stdout)


def flops_per_token(model_dir: Path, mean_tokens: float) -> float:
    """Forward-pass FLOPs per real token of a BERT-style encoder (multiply-adds count 2):
    the dense layers (4 h^2 for Q, K, V and the output, 2 h i for the feed-forward) and
    the attention products (2 x 2 h s, s the sequence length), per layer. Padding is not
    counted: it is work the model does, but not work a chunk needs."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return layers * (2 * (4 * h * h + 2 * h * inter) + 4 * h * mean_tokens)


def matmul_peak(seconds: float = 3.0, size: int = 2048) -> None:
    """Child process: the machine's matrix-multiply rate in fp32 and bf16 (torch, as many
    threads as usable cores), the ceiling the model's FLOP/s is judged against."""
    import torch
    from _env import usable_cores

    torch.set_num_threads(usable_cores())
    out: dict[str, float] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        torch.matmul(a, b)  # warm-up (oneDNN picks its kernels)
        rates = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(rates) < 3:
            start = time.perf_counter()
            torch.matmul(a, b)
            rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
        out[name] = statistics.median(rates)
    json.dump({"gflops": out, "threads": torch.get_num_threads()}, sys.stdout)


def run_once(mode: str, root: Path, tmp: Path) -> dict[str, Any]:
    """One measured run of one mode."""
    if mode == "matmul-peak":
        data, wall, peak = measure([sys.executable, __file__, "--matmul-peak-child"])
        return {"mode": mode, "wall_s": wall, "chunks": 0, "peak_mb": peak, **data}
    if mode == "embed-only":
        data, wall, peak = measure([sys.executable, __file__, "--embed-only-child", str(root)])
        return {
            "mode": mode,
            "wall_s": data["embed_seconds"],
            "process_s": wall,
            "chunks": data["chunks"],
            "peak_mb": peak,
            "tokens": data["tokens"],
            "precision": data["precision"],
            "model_gflops": data["model_gflops"],
        }
    if mode == "null":
        cmd = [sys.executable, __file__, "--null-child", str(root), str(tmp / mode)]
        stats, wall, peak = measure(cmd)
        write = stats["stage_seconds"].get("write", 0.0)
        return {
            "mode": mode,
            "wall_s": wall,
            "run_s": stats["seconds"],
            "chunks": stats["chunks"],
            "files": stats["files_indexed"],
            "peak_mb": peak,
            "batches": stats["batches"],
            "stage_seconds": stats["stage_seconds"],
            "writer_busy_s": write,
            "writer_chunks_per_busy_s": stats["chunks"] / write if write else 0.0,
            "driver_s": stats.get("driver_seconds", 0.0),
            "driver_share": stats.get("driver_seconds", 0.0) / stats["seconds"],
            "cluster": stats["cluster"],
        }
    cmd = [
        sys.executable,
        "-m",
        "rcm_dask",
        "index",
        str(root),
        "--mode",
        mode,
        "--force",
        "--index-dir",
        str(tmp / mode),
        "--json",
    ]
    stats, wall, peak = measure(cmd)
    return {
        "mode": mode,
        "wall_s": wall,
        "chunks": stats["chunks"],
        "files": stats["files_indexed"],
        "peak_mb": peak,
        "batches": stats["batches"],
        "stage_seconds": stats["stage_seconds"],
        "stage_wall_seconds": stats["stage_wall_seconds"],
        "overlap_seconds": stats["stage_overlap_seconds"],
        "cluster": stats["cluster"],
        "embed_workers": stats["embed_workers"],
        "driver_s": stats.get("driver_seconds", 0.0),
    }


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Medians per mode as Markdown, with the ratios the targets are about."""
    peak_runs = results.pop("matmul-peak", [])
    med = {m: statistics.median(r["wall_s"] for r in runs) for m, runs in results.items()}
    lines = [
        "| mode | wall s (median) | runs | chunks | chunks/s | peak MB (median, all processes) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, runs in results.items():
        chunks = runs[0]["chunks"]
        if not chunks:
            continue
        walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        lines.append(
            f"| {mode} | {med[mode]:.1f} | {walls} | {chunks:,} | {chunks / med[mode]:.1f} | {peak:,.0f} |"
        )
    if "sequential" in med and "pipeline" in med:
        lines.append(
            f"\npipeline speed-up over sequential: {med['sequential'] / med['pipeline']:.2f}x"
        )
    if "embed-only" in med and "pipeline" in med:
        lines.append(f"pipeline wall / embed-only: {med['pipeline'] / med['embed-only']:.3f}")
    if "embed-only" in med and "parallel" in med:
        lines.append(f"parallel wall / embed-only: {med['parallel'] / med['embed-only']:.3f}")
    null = results.get("null", [])
    if null:
        writer = statistics.median(r["writer_chunks_per_busy_s"] for r in null)
        driver = statistics.median(r["driver_s"] for r in null)
        share = statistics.median(r["driver_share"] for r in null)
        lines.append(
            f"null (pipeline, no forward pass): writer {writer:,.0f} chunks per busy second, "
            f"driver {driver:.1f} CPU s = {share:.1%} of the run"
        )
    if peak_runs:
        peak = {
            k: statistics.median(r["gflops"][k] for r in peak_runs) for k in peak_runs[0]["gflops"]
        }
        lines.append(
            "matmul peak (2048^2, median): "
            + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peak.items())
        )
        embed = results.get("embed-only", [])
        if embed:
            model = statistics.median(r["model_gflops"] for r in embed)
            precision = embed[0]["precision"]
            tokens = embed[0]["tokens"] / max(embed[0]["chunks"], 1)
            ceiling = peak.get(precision, peak["fp32"])
            lines.append(
                f"model (embed-only, {precision}, {tokens:.0f} tokens a chunk): "
                f"{model:,.0f} GFLOP/s = {model / ceiling:.0%} of the {precision} matmul peak"
            )
        results["matmul-peak"] = peak_runs
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="alloc")
    parser.add_argument("--root", help="index this folder instead of a rust-src slice")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", default=str(HERE / "last_run.json"))
    parser.add_argument("--embed-only-child", help=argparse.SUPPRESS)
    parser.add_argument("--matmul-peak-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--null-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.null_child:
        null_pipeline(*args.null_child)
        return
    if args.embed_only_child:
        embed_only(args.embed_only_child)
        return
    if args.matmul_peak_child:
        matmul_peak()
        return
    root = Path(args.root) if args.root else rust_src() / SIZES[args.size]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="rcm-modes-") as tmp:
        for rep in range(args.repeats):
            for mode in modes:
                r = run_once(mode, root, Path(tmp))
                results[mode].append(r)
                print(
                    f"[{rep + 1}/{args.repeats}] {mode}: {r['wall_s']:.1f} s, "
                    f"{r['chunks'] / r['wall_s']:.1f} chunks/s, peak {r['peak_mb']:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
    import dask
    import torch
    import transformers

    import rcm_dask

    env = environment_summary()
    figures = {
        "root": str(root),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "environment": env,
        "versions": {
            "rcm_dask": rcm_dask.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "dask": dask.__version__,
        },
        "settings": {k: v for k, v in os.environ.items() if k.startswith("RCM_")},
        "results": results,
        "table": table(results),
    }
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print("\n".join(environment_lines(env)) + "\n")
    print(figures["table"])


if __name__ == "__main__":
    main()
