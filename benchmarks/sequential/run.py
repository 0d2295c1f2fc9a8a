"""Sequential-mode baseline: index a rust-src tree from scratch, print figures, query it.

Environment:
  RCM_BENCH_ROOT     folder to index (default: $(sh benchmarks/rust_src.sh)/library)
  RCM_BENCH_QUERIES  queries separated by ";" (default: three general questions)
  RCM_BENCH_OUT      write the figures as JSON here (default: benchmarks/sequential/last_run.json)
  RCM_TORCH_THREADS  torch threads (default: one per core)
Usage: python benchmarks/sequential/run.py
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import rcm_dask
from rcm_dask import IndexConfig
from rcm_dask.search import SearchIndex

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
# what every report records: the lock's hash, CPU, cores, GPU (shared by benchmarks/*)
from _env import environment_lines, environment_summary, rust_src  # noqa: E402

DEFAULT_QUERIES = (
    "push an item onto a binary heap;"
    "spawn a new thread and wait for it to finish;"
    "read a whole file into a string"
)


def corpus_root() -> Path:
    if os.environ.get("RCM_BENCH_ROOT"):
        return Path(os.environ["RCM_BENCH_ROOT"])
    return rust_src() / "library"


def main() -> None:
    root = corpus_root()
    queries = [q.strip() for q in os.environ.get("RCM_BENCH_QUERIES", DEFAULT_QUERIES).split(";")]
    with tempfile.TemporaryDirectory(prefix="rcm-bench-") as tmp:
        config = IndexConfig.from_env(index_dir=tmp, mode="sequential")
        start = time.perf_counter()
        stats = rcm_dask.index(str(root), config, force=True)
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results = {}
        with SearchIndex(tmp, config) as idx:
            idx.search("warm up the model", limit=1)
            for q in queries:
                t = time.perf_counter()
                hits = idx.search(q, limit=5)
                results[q] = {
                    "ms": round((time.perf_counter() - t) * 1000, 1),
                    "hits": [f"{h.qualname} ({h.kind}) {h.path}:{h.start_line}" for h in hits],
                }
    figures = {
        "root": str(root),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "environment": environment_summary(),
        "versions": {
            m: __import__(m).__version__
            for m in ("torch", "transformers", "tantivy", "dask")
            if hasattr(__import__(m), "__version__")
        },
        "files_seen": stats.files_seen,
        "files_indexed": stats.files_indexed,
        "skipped": stats.skipped,
        "chunks": stats.chunks,
        "chunks_with_errors": stats.chunks_with_errors,
        "wall_s": round(wall, 1),
        "chunks_per_s": round(stats.chunks / wall, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stats.stage_seconds.items()},
        "peak_rss_mb": round(peak_mb),
        "queries": results,
    }
    out = Path(os.environ.get("RCM_BENCH_OUT", HERE / "last_run.json"))
    out.write_text(json.dumps(figures, indent=2) + "\n")
    json.dump(figures, sys.stdout, indent=2)
    print("\n\n" + "\n".join(environment_lines(figures["environment"])))


if __name__ == "__main__":
    main()
