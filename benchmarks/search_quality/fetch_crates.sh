#!/usr/bin/env bash
# Unpacks the Rust crates of the multi-crate evaluation set from Debian's librust-*-dev
# packages and prints one "crate<TAB>root" line per crate.
#   Only the named packages are unpacked (apt-get download + dpkg -x), never their
#   dependencies: hyper and clap depend on tokio and serde, which this project must not
#   be evaluated or tuned on (they are reserved for an independent measure).
# Usage: benchmarks/search_quality/fetch_crates.sh             -> /usr/share/cargo/registry/<crate>-<version>
#        DEST=~/crates benchmarks/search_quality/fetch_crates.sh  (no root needed; default without root:
#                                                                  ~/.cache/rcm_dask/crates)
# Idempotent; needs apt-get (Debian 12 "bookworm" package versions: the set names them).
set -euo pipefail
CRATES="regex clap nom crossbeam-channel bytes tracing-core hyper rayon syn rustls mio url"
if [[ -z "${DEST:-}" ]]; then
  if [[ $(id -u) == 0 ]]; then DEST=/usr/share/cargo/registry; else DEST=$HOME/.cache/rcm_dask/crates; fi
fi
mkdir -p "$DEST"
found() { ls -d "$DEST/$1"-[0-9]* 2>/dev/null | sort -V | tail -n 1; }
missing=()
for c in $CRATES; do [[ -n "$(found "$c")" ]] || missing+=("librust-$c-dev"); done
if (( ${#missing[@]} )); then
  work=$(mktemp -d); chmod 755 "$work"; trap 'rm -rf "$work"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  if [[ $(id -u) == 0 ]]; then apt-get update -qq >/dev/null 2>&1 || true; fi
  (cd "$work" && apt-get download -qq "${missing[@]}" >/dev/null) \
    || { echo "fetch_crates: apt-get download ${missing[*]} failed" >&2; exit 1; }
  for deb in "$work"/*.deb; do
    dpkg -x "$deb" "$work/x"
  done
  # the packages put their sources under usr/share/cargo/registry/<crate>-<version>/
  cp -a "$work/x/usr/share/cargo/registry/." "$DEST/"
fi
for c in $CRATES; do
  r=$(found "$c")
  [[ -n "$r" ]] || { echo "fetch_crates: $c did not unpack under $DEST" >&2; exit 1; }
  printf '%s\t%s\n' "$c" "$r"
done
