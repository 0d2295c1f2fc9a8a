"""Try ranking settings on the tuning half of the multi-crate set (never the held-back half).

Asks each tuning question once (``SearchIndex.candidates``: fusion and the symbol table's
definitions), then ranks the same candidates under every setting tried
(``rcm_dask.ranking.rank_candidates``), so a trial costs milliseconds. Indexes come from
``crates_run.py`` (run it first). Prints one row per trial: file nDCG@10 and MRR@10, item
nDCG@10, and file nDCG@10 per kind.

  python benchmarks/search_quality/crates_tune.py                 # the built-in trials
  python benchmarks/search_quality/crates_tune.py --out trials.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from crates_run import (  # noqa: E402
    K,
    KINDS,
    TUNING,
    file_mrr,
    file_ndcg,
    item_ndcg,
    load_crate_questions,
    mean,
)


def trials() -> dict[str, Any]:
    """Name -> RankingConfig of every trial: each step alone, all, and strengths around
    the defaults, one knob at a time."""
    from rcm_dask.ranking import RANKING_STEPS, RankingConfig

    base = RankingConfig()
    out: dict[str, Any] = {"none": RankingConfig.from_spec("none")}
    for step in RANKING_STEPS:
        out[f"only {step}"] = RankingConfig.only(step)
        out[f"all but {step}"] = base.without(step)
    out["all (defaults)"] = base
    knobs = {
        "path_boost": (0.05, 0.1, 0.5),
        "test_factor": (0.25, 0.75),
        "diversity_decay": (0.3, 0.45, 0.8),
        "file_evidence": (0.0, 0.05, 0.3, 0.5),
        "named_boost": (0.0, 0.25, 1.0),
        "whole_file_boost": (0.25, 1.0, 2.0),
    }
    for knob, values in knobs.items():
        for v in values:
            # a strength of the paths step is tried with the step on
            extra = {"paths": True} if knob == "path_boost" else {}
            out[f"{knob}={v}"] = replace(base, **{knob: v}, **extra)
    strong = replace(base, diversity_decay=0.3, diversity_free=1, file_evidence=0.05)
    out["strong diversity (decay 0.3 from the 2nd hit, evidence 0.05)"] = strong
    out["same, with paths"] = replace(strong, paths=True)
    return out


def score_trial(gathered: list[tuple[Any, Any]], config: Any) -> dict[str, float]:
    """Mean file/item figures of one ranking setting over gathered candidates."""
    from rcm_dask.ranking import group_by_file, rank_candidates

    scores = []
    for q, cands in gathered:
        full = rank_candidates(cands, q.question, config)
        ranked = full[:K]
        paths = [c.path for c in ranked]
        keys = [(c.path, str(c.payload.get("qualname", ""))) for c in ranked]
        s = {"kind": q.kind, "file_ndcg": file_ndcg(paths, q.files), "file_mrr": file_mrr(paths, q.files)}
        if q.items:
            s["item_ndcg"] = item_ndcg(keys, q.items)
        s["files_ndcg"] = file_ndcg([g.path for g in group_by_file(full, K)], q.files)
        scores.append(s)
    row = {
        "file_ndcg": mean([s["file_ndcg"] for s in scores]),
        "file_mrr": mean([s["file_mrr"] for s in scores]),
        "item_ndcg": mean([s["item_ndcg"] for s in scores if "item_ndcg" in s]),
        "files_ndcg": mean([s["files_ndcg"] for s in scores]),
    }
    for k in KINDS:
        row[k] = mean([s["file_ndcg"] for s in scores if s["kind"] == k])
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", default="", help="indexes folder (default $RCM_HOME/search-quality/crates)")
    p.add_argument("--out", default="", help="write the trials' figures here as JSON")
    p.add_argument("--rrf-k", default="60", help="RRF k values to try, comma-separated")
    args = p.parse_args(argv)

    from rcm_dask.config import IndexConfig, data_home
    from rcm_dask.ranking import RankingConfig
    from rcm_dask.search import SearchIndex

    home = Path(args.home) if args.home else data_home() / "search-quality" / "crates"
    questions = [q for q in load_crate_questions() if q.crate in TUNING]
    rows = {}
    for rrf_k in [int(k) for k in args.rrf_k.split(",")]:
        config_k = IndexConfig.from_env().replace(rrf_k=rrf_k)
        gathered = []
        for crate in TUNING:
            with SearchIndex(home / f"{crate}-minilm", config_k) as idx:
                for q in (q for q in questions if q.crate == crate):
                    cands = idx.candidates(q.question, ranking=RankingConfig(), pool=100)
                    gathered.append((q, cands))
        for name, config in trials().items():
            if rrf_k != 60:
                name = f"{name} (rrf k={rrf_k})"
            rows[name] = score_trial(gathered, config)
    print(f"{len(questions)} tuning questions ({', '.join(TUNING)})\n")
    print("| trial | file nDCG@10 | file MRR@10 | item nDCG@10 | --files nDCG@10 | behaviour | architecture | symbol |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['file_ndcg']:.3f} | {r['file_mrr']:.3f} | {r['item_ndcg']:.3f} | "
            f"{r['files_ndcg']:.3f} | {r['behaviour']:.3f} | {r['architecture']:.3f} | {r['symbol']:.3f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
