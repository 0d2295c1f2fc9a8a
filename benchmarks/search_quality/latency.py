"""Warm query latency on an index of at least 50,000 chunks (issue 15's latency target).

Indexes rust-src ``library/`` without stdarch's x86/x86_64 intrinsics and generated NEON
tables (48,314 chunks with the bundled model and chunker 5, 54,936 with chunker 4;
incremental on a re-run), then times
``SearchIndex.search`` one call at a time, query embedding included: every question of
``questions.jsonl`` and of ``crates/*.jsonl`` as the query text (437 queries), methods
interleaved query by query, after untimed warm-up queries. Prints p50/p95 per method.

  python benchmarks/search_quality/latency.py              # ~8 min the first time on 2 idle cores
  python benchmarks/search_quality/latency.py --repeat 2   # every query twice
  python benchmarks/search_quality/latency.py --no-build --index-dir DIR   # time any index
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _env import environment_lines  # noqa: E402

EXCLUDES = (
    "stdarch/crates/core_arch/src/x86/",
    "stdarch/crates/core_arch/src/x86_64/",
    "stdarch/crates/core_arch/src/arm_shared/neon/generated.rs",
    "stdarch/crates/core_arch/src/aarch64/neon/generated.rs",
)
METHODS = {
    "hybrid (default ranking)": {"mode": "hybrid"},
    "hybrid, ranking none": {"mode": "hybrid", "ranking": "none"},
    "hybrid, without whole-file records": {"mode": "hybrid", "ranking": "default,-whole_file"},
    "hybrid --files": {"mode": "hybrid", "group": "file"},
    "bm25 (default ranking)": {"mode": "bm25"},
}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index-dir", default="", help="default $RCM_HOME/search-quality/latency-55k")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default="", help="write the figures here as JSON")
    p.add_argument("--no-build", action="store_true", help="time the index as it is (no run)")
    args = p.parse_args(argv)

    import rcm_dask
    from rcm_dask.config import IndexConfig, data_home
    from rcm_dask.search import SearchIndex
    from run import find_library

    library = find_library()
    index_dir = Path(args.index_dir) if args.index_dir else data_home() / "search-quality" / "latency-55k"
    if not args.no_build:
        t0 = time.perf_counter()
        stats = rcm_dask.index(
            str(library), index_dir=str(index_dir), exclude=EXCLUDES, progress=False
        )
        print(
            f"index: {index_dir}: {stats.files_indexed} files indexed, {stats.files_unchanged} "
            f"unchanged in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
    queries = [json.loads(line)["question"] for line in (HERE / "questions.jsonl").read_text().splitlines() if line.strip()]
    for path in sorted((HERE / "crates").glob("*.jsonl")):
        queries += [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    with SearchIndex(index_dir, IndexConfig.from_env()) as idx:
        chunks = idx.stats().chunks
        for q in queries[: args.warmup]:
            for kw in METHODS.values():
                idx.search(q, limit=10, **kw)  # type: ignore[call-overload]
        for _ in range(args.repeat):
            for q in queries:
                for name, kw in METHODS.items():
                    start = time.perf_counter()
                    idx.search(q, limit=10, **kw)  # type: ignore[call-overload]
                    times[name].append(time.perf_counter() - start)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "environment": environment_lines(),
        "index_chunks": chunks,
        "queries": len(queries) * args.repeat,
        "ms": {
            m: {"p50": round(percentile(t, 50) * 1000, 1), "p95": round(percentile(t, 95) * 1000, 1)}
            for m, t in times.items()
        },
    }
    print(f"{chunks:,} chunks, {result['queries']} timed queries per method, warm")
    print("| method | p50 ms | p95 ms |\n|---|---:|---:|")
    for m, v in result["ms"].items():
        print(f"| {m} | {v['p50']} | {v['p95']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
