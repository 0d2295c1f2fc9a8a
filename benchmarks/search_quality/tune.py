"""Cross-validated tuning of the hybrid fusion settings (RRF k, BM25 weight) on the question set.

Picking fusion settings on the same questions that then report them overstates what a user
gains on questions nobody wrote yet. This script splits the answerable questions into two
folds by a stable hash of their ids, picks the best grid point on one fold (by nDCG@10, ties
broken by recall@10 then MRR@10) and scores it on the other, both ways round. A setting is
worth making the default only when it wins on held-out questions in both folds.

Each question's BM25 and vector candidate lists are fetched once (``candidates`` per
method, as :meth:`~rcm_dask.search.SearchIndex.search` fetches them); every grid point then
re-fuses the same lists with :class:`~rcm_dask.search.SearchIndex` under that point's
:class:`~rcm_dask.config.IndexConfig`, so the figures are the ones the search itself gives.

Usage:
  python benchmarks/search_quality/tune.py --index-dir DIR   # an index run.py built
  python benchmarks/search_quality/tune.py --index-dir DIR --k 5,10,20,60 --bm25-weight 0.5,1
Prints a Markdown report and writes tune_last_run.json beside this script (or in --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from evalset import Question, load_questions
from run import K, covered_by_hits, mean, score

METRICS = ("ndcg", "recall", "mrr")


def fold_of(question: Question) -> int:
    """0 or 1, from a hash of the question's id (stable across runs and machines)."""
    return hashlib.sha256(question.id.encode()).digest()[0] & 1


class CachedEmbedder:
    """Wraps an embedder so that each query is embedded once however often it is asked."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_batch(self, texts: list[str]) -> Any:
        import numpy as np

        missing = [t for t in texts if t not in self.cache]
        if missing:
            for text, vec in zip(missing, self.inner.embed_batch(missing)):
                self.cache[text] = vec
        return np.stack([self.cache[t] for t in texts])


def grid_scores(
    index_dir: Path, questions: list[Question], ks: list[int], weights: list[float]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per setting label, per question id: MRR, recall and nDCG@10 of hybrid search;
    plus the ``bm25`` and ``vector`` single methods under the labels of the same names."""
    from rcm_dask.config import IndexConfig
    from rcm_dask.search import SearchIndex

    base = IndexConfig.from_env()
    out: dict[str, dict[str, dict[str, float]]] = {}
    with SearchIndex(index_dir, base) as idx:
        # the index loads (and checks) its own model; the grid re-asks every question
        idx._embedder = CachedEmbedder(idx.embedder)
        for mode in ("bm25", "vector"):
            out[mode] = {
                q.id: score(covered_by_hits(idx.search(q.question, limit=K, mode=mode)), q.relevant)
                for q in questions
            }
        for k in ks:
            for w in weights:
                idx.config = dataclasses.replace(base, rrf_k=k, bm25_weight=w, vector_weight=1.0)
                label = f"k {k}, bm25 weight {w:g}"
                out[label] = {
                    q.id: score(
                        covered_by_hits(idx.search(q.question, limit=K, mode="hybrid")),
                        q.relevant,
                    )
                    for q in questions
                }
    return out


def averaged(per_q: dict[str, dict[str, float]], ids: list[str]) -> dict[str, float]:
    """Mean of each metric over these question ids."""
    return {m: mean([per_q[i][m] for i in ids]) for m in METRICS}


def best(labels: list[str], scores: dict[str, dict[str, dict[str, float]]], ids: list[str]) -> str:
    """The grid point with the highest nDCG@10 on these questions (then recall, then MRR)."""
    return max(labels, key=lambda lab: tuple(averaged(scores[lab], ids)[m] for m in METRICS))


def row(label: str, values: dict[str, float]) -> str:
    return f"| {label} | " + " | ".join(f"{values[m]:.3f}" for m in METRICS) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--index-dir", type=Path, required=True, help="an index run.py built")
    ap.add_argument("--k", default="5,10,20,30,60", help="RRF k values, comma-separated")
    ap.add_argument("--bm25-weight", default="0.3,0.5,0.7,1", help="BM25 weights (vector: 1)")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for tune_last_run.json")
    args = ap.parse_args(argv)

    from rcm_dask.config import IndexConfig
    from rcm_dask.stores.manifest import Manifest

    manifest = Manifest(args.index_dir, readonly=True)
    try:
        have = set(manifest.paths())
    finally:
        manifest.close()
    questions = [q for q in load_questions() if all(p in have for p, _ in q.relevant)]
    if not questions:
        print(f"no question has all its relevant items in {args.index_dir}", file=sys.stderr)
        return 1
    ks = [int(x) for x in args.k.split(",")]
    weights = [float(x) for x in args.bm25_weight.split(",")]
    defaults = IndexConfig()
    print(
        f"{len(questions)} questions, {len(ks) * len(weights)} settings; defaults: "
        f"k {defaults.rrf_k}, bm25 weight {defaults.bm25_weight:g}",
        file=sys.stderr,
    )
    scores = grid_scores(args.index_dir, questions, ks, weights)
    labels = [lab for lab in scores if lab not in ("bm25", "vector")]
    folds = [[q.id for q in questions if fold_of(q) == f] for f in (0, 1)]
    every = [q.id for q in questions]

    lines = [
        (
            f"Questions: {len(questions)} (fold A {len(folds[0])}, fold B {len(folds[1])}); "
            f"grid: k {ks} x BM25 weight {weights} (vector weight 1)."
        ),
        "",
        (
            "Held-out figures (nDCG@10 / recall@10 / MRR@10): the setting picked on one fold, "
            "scored on the other."
        ),
        "",
        "| picked on | setting | scored on | nDCG | recall | MRR | bm25 there | vector there |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    picks = []
    for train, test, name in ((0, 1, "A"), (1, 0, "B")):
        pick = best(labels, scores, folds[train])
        picks.append(pick)
        held = averaged(scores[pick], folds[test])
        singles = [averaged(scores[m], folds[test]) for m in ("bm25", "vector")]
        lines.append(
            f"| {name} | {pick} | {'B' if name == 'A' else 'A'} | "
            + " | ".join(f"{held[m]:.3f}" for m in METRICS)
            + " | "
            + " | ".join(" / ".join(f"{s[m]:.3f}" for m in METRICS) for s in singles)
            + " |"
        )
    lines += ["", "Every setting on all questions:", "", "| setting | nDCG | recall | MRR |"]
    lines.append("|---|---:|---:|---:|")
    for lab in ["bm25", "vector", *labels]:
        lines.append(row(lab, averaged(scores[lab], every)))
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_last_run.json").write_text(
        json.dumps(
            {
                "index_dir": str(args.index_dir),
                "questions": len(questions),
                "folds": {"A": folds[0], "B": folds[1]},
                "picked": picks,
                "all": {lab: averaged(scores[lab], every) for lab in scores},
                "per_fold": {lab: [averaged(scores[lab], f) for f in folds] for lab in scores},
            },
            indent=1,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
