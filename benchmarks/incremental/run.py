"""What a re-run costs: nothing changed, 10 files touched, 10 files edited, 10 deleted.

A copy of one rust-src tree (so its files can be edited) is indexed once with the
default settings (real model, embedded stores); then, each repeated and the median
kept:

- ``no-change (API)``: ``rcm_dask.index()`` in this warm process, nothing changed
  (the issue's "well under a second" figure; it must start no cluster and load no model);
- ``no-change (CLI)``: ``rcm-dask index`` as a fresh process (imports included);
- ``touch 10``: 10 files get a new mtime, same content (read and hashed, not embedded);
- ``edit 10``: 10 files get a comment line appended (their chunks re-embedded);
- ``delete 10``: 10 files removed (their chunks removed from both stores).

The initial build runs in ``--mode`` (default pipeline); the re-runs in the default
``auto`` mode, as a user's would (10 files are below the size that starts a cluster).

Each edit run is compared with the initial full run's seconds per file, so "10 files
cost about 10 files' work" is a ratio in the report.

Usage:
  python benchmarks/incremental/run.py                  # library/alloc (106 files): ~5 min on 2 cores
  python benchmarks/incremental/run.py --size library   # all of library/ (~1,250 files): initial build ~30 min
Writes benchmarks/incremental/last_run.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
# what every report records: the lock's hash, CPU, cores, GPU (shared by benchmarks/*)
from _env import environment_lines, environment_summary  # noqa: E402
from modes.run import rust_src  # noqa: E402  (one place that finds the corpus)

SIZES = {
    "alloc": "library/alloc",
    "collections": "library/alloc/src/collections",
    "library": "library",
}


def tiny_model(out: Path) -> Path:
    """A random 1-layer, 32-dim BERT with the bundled tokenizer (the tests build the same)."""
    import torch
    from transformers import BertConfig, BertModel

    from rcm_dask.embedding import bundled_model_dir

    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(cfg).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (bundled_model_dir() / name).exists():
            shutil.copy(bundled_model_dir() / name, out / name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", choices=sorted(SIZES), default="alloc")
    ap.add_argument(
        "--root", type=Path, default=None, help="a tree to copy instead of a rust-src slice"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--mode", default="pipeline", help="mode of the initial build (re-runs use auto)"
    )
    ap.add_argument("--out", type=Path, default=HERE / "last_run.json")
    ap.add_argument(
        "--tiny-model",
        action="store_true",
        help="embed with a random 1-layer, 32-dim model (bundled tokenizer) instead of the "
        "default: for the bookkeeping figures (no-change, touch, delete) on big trees, which "
        "do not depend on the model",
    )
    args = ap.parse_args()

    import rcm_dask
    from rcm_dask import IndexConfig

    source = args.root or rust_src() / SIZES[args.size]
    work = Path(tempfile.mkdtemp(prefix="rcm-incr-"))
    tree = work / "tree"
    shutil.copytree(source, tree, symlinks=True)
    model = str(tiny_model(work / "tiny-model")) if args.tiny_model else None
    rerun = IndexConfig.from_env(index_dir=str(work / "index"), model=model)
    config = rerun.replace(mode=args.mode)
    results: dict[str, Any] = {"runs": {}}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    first = rcm_dask.index(str(tree), config)
    initial = time.perf_counter() - start
    per_file = initial / max(1, first.files_indexed)
    results["initial"] = {
        "seconds": initial,
        "files": first.files_indexed,
        "chunks": first.chunks,
        "seconds_per_file": per_file,
        "mode": first.mode,
    }
    log(f"initial: {first.files_indexed} files, {first.chunks} chunks in {initial:.1f} s")

    files = sorted(p for p in tree.rglob("*.rs") if p.is_file())
    rng = random.Random(2026)
    n = min(10, max(1, len(files) // 3))  # 10, but fewer on a tiny tree

    def timed(name: str, prepare: Any, runs: int) -> None:
        seconds: list[float] = []
        stats_seen: list[dict[str, Any]] = []
        for _ in range(runs):
            # files recorded less than 2 s after their mtime are re-read once (the racy
            # window); wait it out so that each run reads what it changed, as a re-run
            # minutes or hours later would
            time.sleep(2.1)
            prepare()
            t = time.perf_counter()
            st = rcm_dask.index(str(tree), rerun)
            seconds.append(time.perf_counter() - t)
            keys = (
                "mode",
                "files_todo",
                "files_indexed",
                "files_unchanged",
                "files_removed",
                "chunks",
            )
            stats_seen.append({k: getattr(st, k) for k in keys})
        results["runs"][name] = {
            "seconds": seconds,
            "median": statistics.median(seconds),
            "stats": stats_seen,
        }
        log(f"{name}: median {statistics.median(seconds):.3f} s over {runs} ({stats_seen[-1]})")

    # the first re-run after a build hashes the files written within the racy window
    rcm_dask.index(str(tree), rerun)
    timed("no-change (API)", lambda: None, max(5, args.repeats))

    cli = [
        sys.executable,
        "-m",
        "rcm_dask",
        "index",
        str(tree),
        "--index-dir",
        str(work / "index"),
        "--json",
        *(["--model", model] if model else []),
    ]
    cli_seconds = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True)
        cli_seconds.append(time.perf_counter() - t)
    results["runs"]["no-change (CLI)"] = {
        "seconds": cli_seconds,
        "median": statistics.median(cli_seconds),
    }
    log(f"no-change (CLI): median {statistics.median(cli_seconds):.2f} s")

    def touch10() -> None:
        for p in rng.sample(files, n):
            os.utime(p)

    def edit10() -> None:
        for p in rng.sample([f for f in files if f.exists()], n):
            with p.open("a", encoding="utf-8") as f:
                f.write(f"\n// edited by benchmarks/incremental {time.time()}\n")

    deleted: list[Path] = []

    def delete10() -> None:
        for p in rng.sample([f for f in files if f.exists()], n):
            deleted.append(p)
            p.unlink()

    timed(f"touch {n}", touch10, args.repeats)
    timed(f"edit {n}", edit10, args.repeats)
    timed(f"delete {n}", delete10, args.repeats)
    results["environment"] = environment_summary()
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rcm_dask": rcm_dask.__version__,
    }
    results["source"] = str(source)
    results["model"] = "tiny random 1-layer BERT (--tiny-model)" if model else "default"
    results["settings"] = {k: v for k, v in os.environ.items() if k.startswith("RCM_")}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)

    print("\n" + "\n".join(environment_lines(results["environment"])))
    print(
        f"\n{first.files_indexed} files, {first.chunks} chunks; initial build {initial:.1f} s "
        f"({per_file:.3f} s per file, {first.mode} mode)\n"
    )
    print(
        f"| Re-run | Median wall | Files read | Files re-indexed | vs. {n} files of the initial build |"
    )
    print("|---|---|---|---|---|")
    for name, r in results["runs"].items():
        st = (r.get("stats") or [{}])[-1]
        ratio = f"{r['median'] / (n * per_file):.2f}×" if name.endswith(f" {n}") else "–"
        print(
            f"| {name} | {r['median']:.3f} s | {st.get('files_todo', '–')} | {st.get('files_indexed', '–')} | {ratio} |"
        )


if __name__ == "__main__":
    main()
