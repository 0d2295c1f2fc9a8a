"""The index writer alone: how many chunks per busy second it applies to the stores.

A rust-src slice is read and chunked once (not timed) with the real tokenizer (no model
weights), each chunk gets a deterministic random unit vector (384 float32), and a fresh
:class:`~rcm_dask.writer.IndexWriter` is fed 128-chunk cross-file batches in the order
the cluster modes use: ``expect_files`` per partition of files, ``write_batch`` per
batch, ``commit`` at the end, then ``close``. The writer's own busy seconds
(``report()["write_seconds"]``: its ``write_batch`` and ``commit`` calls) give chunks
per busy second; the whole feed, close included, gives chunks per wall second. Runs of
the two stores set-ups (embedded Qdrant, keyword-only) are interleaved; medians.

``--code DIR`` measures the ``rcm_dask`` package found in DIR instead of this checkout
(another worktree or an older commit checked out elsewhere), so that old and new code
run side by side in one session on the same chunks.

Usage:
  python benchmarks/writer/run.py                        # library/alloc, 3 repeats
  python benchmarks/writer/run.py --size library --repeats 1
  python benchmarks/writer/run.py --code /path/to/old/checkout --out old.json
  python benchmarks/writer/run.py --profile              # cProfile of one run, top 25
Writes benchmarks/writer/last_run.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _env import environment_lines, environment_summary, rust_src

SIZES = {
    "collections": "library/alloc/src/collections",
    "alloc": "library/alloc",
    "core": "library/core",
    "library": "library",
}
SETUPS = ("qdrant", "none")
BATCH = 128
PARTITION_FILES = 16
DIM = 384


def load_chunks(root: Path) -> tuple[Any, list[Any], dict[str, Any]]:
    """Read and chunk every .rs file under ``root`` (untimed): (source root, partitions,
    identities by set-up)."""
    from rcm_dask.embedding import Embedder
    from rcm_dask.identity import run_identity
    from rcm_dask.sources import discover_sources, open_root
    from rcm_dask.stages import read_chunk_partition

    src = open_root(str(root))
    refs = discover_sources(src).files
    embedder = Embedder()
    parts = [
        read_chunk_partition(refs[i : i + PARTITION_FILES], src.fs, embedder)
        for i in range(0, len(refs), PARTITION_FILES)
    ]
    ids = {
        "qdrant": {**run_identity(src, embedder, "qdrant"), "dimensions": DIM},
        "none": run_identity(src, embedder, "none"),
    }
    return src, parts, ids


def unit_vectors(n: int, seed: int = 0) -> Any:
    """``n`` deterministic random unit vectors of dimension :data:`DIM` (float32)."""
    import numpy as np

    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def feed(
    parts: list[Any], identity: dict[str, Any], vectors: Any, index_dir: Path
) -> dict[str, Any]:
    """One fresh index written from the partitions; the writer's report and the wall time."""
    from rcm_dask.config import IndexConfig
    from rcm_dask.records import EmbeddedBatch
    from rcm_dask.writer import IndexWriter, writer_options

    keyword = identity.get("vectors") == "none"
    start = time.perf_counter()
    cpu = time.process_time()
    # a run's own settings: commits every commit_every chunks (4096) count as busy time
    writer = IndexWriter(index_dir, dict(identity), **writer_options(IndexConfig(), True))
    pending: list[Any] = []
    row = 0
    try:
        for part in parts:
            writer.expect_files(list(part.files))
            pending.extend(part.chunks)
            while len(pending) >= BATCH:
                batch, pending = pending[:BATCH], pending[BATCH:]
                vecs = None if keyword else vectors[row : row + len(batch)]
                row += len(batch)
                writer.write_batch(EmbeddedBatch(tuple(batch), vecs))
        if pending:
            vecs = None if keyword else vectors[row : row + len(pending)]
            writer.write_batch(EmbeddedBatch(tuple(pending), vecs))
        # the cluster modes' ending: commit, report, close without a second commit
        writer.commit()
        report = writer.report()
    finally:
        writer.close(commit=False)
    wall = time.perf_counter() - start
    return {
        "chunks": report["chunks_written"],
        "busy_s": report["write_seconds"],
        "wall_s": wall,
        # CPU seconds of every thread of the process (Tantivy's and Qdrant's included): a
        # figure that a busy neighbour slows much less than the clock
        "cpu_s": time.process_time() - cpu,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--size", choices=sorted(SIZES), default="alloc", help="rust-src slice (default alloc)"
    )
    ap.add_argument("--root", type=Path, help="index this folder instead of a rust-src slice")
    ap.add_argument("--repeats", type=int, default=3, help="runs per set-up (default 3)")
    ap.add_argument("--setups", default=",".join(SETUPS), help="qdrant,none (default both)")
    ap.add_argument("--code", type=Path, help="checkout whose rcm_dask package to measure")
    ap.add_argument(
        "--label", default="", help="name of this code in the table (default: its git commit)"
    )
    ap.add_argument("--profile", action="store_true", help="cProfile one run of the first set-up")
    ap.add_argument("--out", type=Path, default=HERE / "last_run.json", help="figures file")
    args = ap.parse_args(argv)
    if args.code:
        sys.path.insert(0, str(args.code.resolve()))
    import rcm_dask

    code_dir = Path(rcm_dask.__file__).resolve().parents[1]
    label = args.label or _git_head(code_dir)
    root = args.root or rust_src() / SIZES[args.size]
    t0 = time.perf_counter()
    _, parts, identities = load_chunks(root)
    n = sum(len(p.chunks) for p in parts)
    print(
        f"{root}: {n:,} chunks in {sum(len(p.files) for p in parts):,} files, "
        f"chunked in {time.perf_counter() - t0:.0f} s (not timed)",
        file=sys.stderr,
    )
    vectors = unit_vectors(n)
    setups = [s for s in args.setups.split(",") if s]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
    with tempfile.TemporaryDirectory(prefix="rcm-writer-bench-") as tmp:
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            feed(parts, identities[setups[0]], vectors, Path(tmp) / "profile")
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return 0
        for i in range(args.repeats):
            for s in setups:
                r = feed(parts, identities[s], vectors, Path(tmp) / f"{s}-{i}")
                runs[s].append(r)
                print(
                    f"  {label} {s} run {i + 1}: {r['chunks'] / r['busy_s']:,.0f} chunks/busy s, "
                    f"{r['chunks'] / r['wall_s']:,.0f} chunks/wall s, "
                    f"{r['chunks'] / r['cpu_s']:,.0f} chunks/CPU s",
                    file=sys.stderr,
                )
    env = environment_summary()
    figures: dict[str, Any] = {
        "code": str(code_dir),
        "label": label,
        "root": str(root),
        "chunks": n,
        "batch": BATCH,
        "repeats": args.repeats,
        "environment": env,
        "setups": {
            s: {
                "runs": rs,
                "median_busy_cps": statistics.median(r["chunks"] / r["busy_s"] for r in rs),
                "median_wall_cps": statistics.median(r["chunks"] / r["wall_s"] for r in rs),
                "median_cpu_cps": statistics.median(r["chunks"] / r["cpu_s"] for r in rs),
            }
            for s, rs in runs.items()
        },
    }
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print("\n".join(environment_lines(env)))
    print()
    print(f"{n:,} chunks of {root}, {BATCH}-chunk batches, median of {args.repeats}")
    print()
    print("| code | vectors | chunks / busy s | chunks / wall s | chunks / CPU s |")
    print("|---|---|---:|---:|---:|")
    for s, f in figures["setups"].items():
        print(
            f"| {label} | {'embedded Qdrant' if s == 'qdrant' else 'none (keyword-only)'} "
            f"| {f['median_busy_cps']:,.0f} | {f['median_wall_cps']:,.0f} |"
        )
    return 0


def _git_head(path: Path) -> str:
    """Short commit of the checkout at ``path`` (``+`` when its tree is modified)."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *a], capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
