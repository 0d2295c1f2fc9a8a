"""Paired comparison of two ``crates_last_run.json`` files: is a change better, worse or noise?

Both runs ask the same questions; the difference of each question's score is paired, and a
bootstrap over questions (5,000 resamples, fixed seed) gives a 95 % interval of the mean
difference. An interval that holds zero means the two runs are not told apart by these
questions.

Usage:
  python benchmarks/search_quality/compare_runs.py OLD.json NEW.json
  python benchmarks/search_quality/compare_runs.py OLD.json NEW.json --methods "hybrid (default)"
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

from crates_run import HELD_BACK, TUNING

DEFAULT_METHODS = ("hybrid (default)", "vector (default)", "bm25 (default)", "files (default)")
METRICS = ("file_ndcg", "item_ndcg")


def _score(question: dict[str, Any], method: str, metric: str) -> float | None:
    value = question["scores"].get(method, {}).get(metric)
    return None if value is None or math.isnan(value) else float(value)


def paired(
    old: dict[str, Any], new: dict[str, Any], method: str, metric: str, crates: tuple[str, ...]
) -> dict[str, Any] | None:
    """Mean difference (new - old), its bootstrap 95 % interval, questions better and worse."""
    new_by_id = {q["id"]: q for q in new["questions"]}
    diffs = []
    for q in old["questions"]:
        if q["crate"] not in crates or q["id"] not in new_by_id:
            continue
        a, b = _score(q, method, metric), _score(new_by_id[q["id"]], method, metric)
        if a is not None and b is not None:
            diffs.append(b - a)
    if not diffs:
        return None
    rng = random.Random(0)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(5000))
    return {
        "n": len(diffs),
        "mean": sum(diffs) / len(diffs),
        "low": means[125],
        "high": means[4874],
        "better": sum(d > 1e-9 for d in diffs),
        "worse": sum(d < -1e-9 for d in diffs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    args = parser.parse_args()
    old, new = json.loads(args.old.read_text()), json.loads(args.new.read_text())
    print(
        "| half | method | metric | questions | mean new - old | 95 % interval | better | worse |"
    )
    print("|---|---|---|---:|---:|---|---:|---:|")
    for half, crates in (("held-back", HELD_BACK), ("tuning", TUNING)):
        for method in (m.strip() for m in args.methods.split(",") if m.strip()):
            for metric in METRICS:
                r = paired(old, new, method, metric, crates)
                if r is None:
                    continue
                print(
                    f"| {half} | {method} | {metric} | {r['n']} | {r['mean']:+.4f} | "
                    f"[{r['low']:+.4f}, {r['high']:+.4f}] | {r['better']} | {r['worse']} |"
                )


if __name__ == "__main__":
    main()
