#!/usr/bin/env bash
# Prints the root of Debian's rust-src (the Rust 1.63 sources: library/ holds the standard
# library), installing the package first when it is missing: the corpus of the README's
# first command, of the tests and of the benchmarks. It installs the same package as the
# project's shared corpus script, so a clone needs nothing beside it.
# Usage: ROOT=$(sh benchmarks/rust_src.sh) && ls "$ROOT/library"
# Idempotent; installing needs root (apt-get), as every machine of this project has.
set -eu
root() { for d in /usr/src/rustc-*/library; do [ -d "$d" ] && dirname "$d" && return; done; }
if [ -z "$(root)" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq rust-src >/dev/null
fi
r=$(root)
[ -n "$r" ] || { echo "rust_src.sh: rust-src did not install" >&2; exit 1; }
echo "$r"
