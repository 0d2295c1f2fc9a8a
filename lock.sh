#!/bin/sh
# Regenerates requirements.lock from pyproject.toml (core + test + bench extras), from the
# repository root:  sh lock.sh
#
# uv is pinned so that the same inputs give the same lock. TORCH_WHEELS is where pip finds
# the CPU wheel of torch 2.13.0 (this project's machines keep it in /opt/wheels; elsewhere
# TORCH_WHEELS=https://download.pytorch.org/whl/cpu/torch/). torch is resolved from that
# wheel, so the lock holds torch's own CPU dependencies (sympy, networkx, jinja2...) and no
# CUDA packages, and torch itself is left out of it: see the header written below.
set -eu
UV_VERSION=0.13.9
TORCH_WHEELS=${TORCH_WHEELS:-/opt/wheels}
if [ "$(uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "lock.sh needs uv $UV_VERSION: pip install uv==$UV_VERSION" >&2
    exit 1
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
echo "torch==2.13.0" | uv pip compile pyproject.toml - --extra test --extra bench \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --find-links "$TORCH_WHEELS" --index-url https://pypi.org/simple \
    --generate-hashes --no-emit-package torch --no-header --quiet -o "$tmp"
{
    cat <<EOF
# requirements.lock: every package that environment.yml installs with pip, at exact versions
# with their PyPI sha256 hashes (pyproject.toml's dependencies and its test and bench extras).
# Made by uv $UV_VERSION (uv pip compile, Python 3.11, x86_64 manylinux); regenerate with:
#     sh lock.sh
# Install (environment.yml's pip step does the first; see README "Reproducible environment"):
#     pip install torch==2.13.0        # or your CUDA build of torch 2.13.0, first
#     pip install --require-hashes -r requirements.lock
#     pip install --no-deps -e .
# torch is NOT in this lock, on purpose: its CPU wheel (what pip takes here) is not on PyPI,
# and PyPI's Linux torch is a CUDA build that pulls several GB of nvidia-* packages. The lock
# was resolved against torch 2.13.0's CPU wheel and holds everything that wheel needs, so
# whichever torch 2.13.0 build you install first, every other package is the locked one.
# Without a torch installed first, --require-hashes stops: "torch ... must be pinned".
# The conda layer (python=3.11, pip from conda-forge) is not locked: conda-lock needs the
# conda channels, which this project's machines cannot reach.
EOF
    cat "$tmp"
} > requirements.lock
echo "wrote requirements.lock ($(grep -c '^[a-z0-9]' requirements.lock) packages)"
