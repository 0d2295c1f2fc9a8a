"""semble as a side-by-side peer on the twelve crates (issue 24).

Indexes each crate of ``../crates`` with semble (PyPI ``semble``, the ``peers`` extra) and
the Model2Vec model ``distill.sh`` makes from the bundled MiniLM (semble's own default model
comes from the hub, unreachable here), asks the same questions and scores the files of the
top 10 results exactly as ``crates_run.py`` scores ours (file nDCG@10 and MRR@10). Two
semble methods: ``semble`` (its hybrid as shipped, alpha chosen per query) and ``semble
alpha=0`` (BM25 and its ranking only, no model at all). Each crate is also indexed, right after
semble's index of it, by our keyword-only index (``vectors="none"``, sequential mode, from
nothing): the two model-free indexes' times side by side.

Our side is read from ``crates_last_run.json`` (``crates_run.py``'s last real run: the same
questions and crates), so the comparison is paired question by question; the report gives
means per half, per kind and per crate, and the paired differences with 95 % bootstrap
intervals (``compare_runs.py``'s method).

Usage::

    python benchmarks/search_quality/peers/semble_run.py [--model DIR] [--crates a,b]

Writes ``semble_last_run.json`` beside this script (or in ``--out``) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import rcm_dask  # noqa: E402
from _env import environment_lines  # noqa: E402
from crates_run import (  # noqa: E402
    HELD_BACK,
    K,
    crate_roots,
    file_mrr,
    file_ndcg,
    load_crate_questions,
    mean,
)

OURS = ("hybrid (default)", "files (default)", "bm25 (default)", "vector (default)", "file-bm25")
PEERS = {"semble": None, "semble alpha=0": 0.0}
"""Method name -> semble's ``alpha`` (None: chosen per query, as shipped)."""


def distilled_model() -> Path:
    """The Model2Vec folder ``distill.sh`` makes (once)."""
    out = subprocess.run(
        ["bash", str(HERE / "distill.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def file_paths(results: list[Any]) -> list[str]:
    """Root-relative paths of semble's results, in rank order."""
    return [str(r.chunk.file_path).removeprefix("./") for r in results]


def bootstrap(diffs: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95 % percentile interval of the mean of paired differences."""
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a Model2Vec folder")
    parser.add_argument("--crates", default="", help="comma-separated subset")
    parser.add_argument("--ours", type=Path, default=HERE.parent / "crates_last_run.json")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    from semble import SembleIndex

    model = args.model or distilled_model()
    ours = {q["id"]: q["scores"] for q in json.loads(args.ours.read_text())["questions"]}
    questions = load_crate_questions()
    wanted = set(filter(None, args.crates.split(","))) or {q.crate for q in questions}
    roots = crate_roots()
    rows: list[dict[str, Any]] = []
    runs: dict[str, Any] = {}
    scratch = Path(tempfile.mkdtemp(prefix="rcm-keyword-"))
    for crate in sorted(wanted):
        asked = [q for q in questions if q.crate == crate]
        t0 = time.perf_counter()
        index = SembleIndex.from_path(roots[crate], model_path=str(model))
        runs[crate] = {"index_seconds": round(time.perf_counter() - t0, 2)}
        # the same crate, right after: our keyword-only index, built from nothing (a peer
        # without a model against ours without one; sequential: no cluster to start)
        t0 = time.perf_counter()
        rcm_dask.index(
            str(roots[crate]), index_dir=str(scratch / crate), vectors="none",
            mode="sequential", progress=False,
        )  # fmt: skip
        runs[crate]["ours_keyword_index_seconds"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        for q in asked:
            row: dict[str, Any] = {
                "id": q.id, "crate": crate, "kind": q.kind,
                "half": "held-back" if crate in HELD_BACK else "tuning", "scores": {},
                "top": {},
            }  # fmt: skip
            for name, alpha in PEERS.items():
                paths = file_paths(index.search(q.question, top_k=K, alpha=alpha))
                row["scores"][name] = {
                    "file_ndcg": file_ndcg(paths, q.files),
                    "file_mrr": file_mrr(paths, q.files),
                }
                row["top"][name] = paths[:3]
            for name in OURS:
                if q.id in ours and name in ours[q.id]:
                    row["scores"][name] = ours[q.id][name]
            rows.append(row)
        runs[crate]["ask_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"{crate}: {len(asked)} questions, indexed in {runs[crate]['index_seconds']} s "
              f"(ours, keyword-only: {runs[crate]['ours_keyword_index_seconds']} s)",
              file=sys.stderr)  # fmt: skip
    shutil.rmtree(scratch, ignore_errors=True)
    methods = [*PEERS, *OURS]
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        for g in ("all", f"half:{r['half']}", f"kind:{r['kind']}", f"crate:{r['crate']}"):
            groups[g].append(r)
    summary: dict[str, Any] = {}
    for g, members in groups.items():
        summary[g] = {"n": len(members)}
        for m in methods:
            have = [r for r in members if m in r["scores"]]
            summary[g][m] = {
                s: round(mean([r["scores"][m][s] for r in have]), 3) for s in ("file_ndcg", "file_mrr")
            }
    pairs: dict[str, Any] = {}
    for g in ("all", "half:tuning", "half:held-back"):
        for ours_name in ("hybrid (default)", "files (default)", "bm25 (default)"):
            for peer in PEERS:
                both = [r for r in groups.get(g, []) if ours_name in r["scores"]]
                diffs = [r["scores"][ours_name]["file_ndcg"] - r["scores"][peer]["file_ndcg"] for r in both]
                if diffs:
                    low, high = bootstrap(diffs)
                    pairs[f"{g}: {ours_name} - {peer}"] = {
                        "n": len(diffs), "mean": round(sum(diffs) / len(diffs), 3),
                        "ci95": [round(low, 3), round(high, 3)],
                        "better": sum(d > 1e-9 for d in diffs), "worse": sum(d < -1e-9 for d in diffs),
                    }  # fmt: skip
    head = "| group | n | " + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (len(methods) + 2)]
    for g in sorted(summary, key=lambda g: (g != "all", g.split(":")[0] != "half", g)):
        cells = [f"{summary[g][m]['file_ndcg']:.3f}" for m in methods]
        lines.append(f"| {g} | {summary[g]['n']} | " + " | ".join(cells) + " |")
    print("file nDCG@10\n" + "\n".join(lines))
    for name, p in pairs.items():
        print(f"{name}: {p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] "
              f"({p['better']} better, {p['worse']} worse of {p['n']})")  # fmt: skip
    theirs = sum(r["index_seconds"] for r in runs.values())
    mine = sum(r["ours_keyword_index_seconds"] for r in runs.values())
    ratios = sorted(r["ours_keyword_index_seconds"] / max(r["index_seconds"], 1e-3) for r in runs.values())
    print(f"indexing, all crates: semble {theirs:.1f} s, ours keyword-only {mine:.1f} s "
          f"(per crate, ours / semble: median {ratios[len(ratios) // 2]:.1f})")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "semble_last_run.json").write_text(
        json.dumps(
            {"environment": environment_lines(), "model": str(model), "runs": runs,
             "summary": summary, "pairs": pairs, "rows": rows},
            indent=1,
        ) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
