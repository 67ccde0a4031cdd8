#!/usr/bin/env bash
# Copy this machine's pip settings into images/pip/ for the image's build stage: its certificate
# bundle (a proxy or mirror may need it) and, from its find-links folder, the CPU torch wheel that
# requirements.txt pins. Writes images/pip/pip.conf pointing at those copies. With no such settings
# it writes an empty pip.conf (the build then takes torch from TORCH_INDEX) and prints the
# TORCH_INDEX to use: empty when a CPU torch wheel was found here.
# Usage: images/pip-settings.sh [DIR]   (DIR: default images/pip)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "${1:-$here/pip}" && cd "${1:-$here/pip}"
find . -mindepth 1 ! -name README.md -delete
PY=${PYTHON:-python3}
TORCH=$(sed -n 's/^torch==//p' "$here/../requirements.txt")
# What pip here uses, from its environment variables or any of its config files.
setting() { $PY -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'$/\1/p" | head -1; }
cert=${PIP_CERT:-$(setting cert)}
links=${PIP_FIND_LINKS:-$(setting find-links)}
{
  echo "[global]"
  if [ -n "$cert" ] && [ -f "$cert" ]; then cp "$cert" ca-bundle.pem; echo "cert = /etc/seals-build/pip/ca-bundle.pem"; fi
  for dir in $links; do
    dir=${dir#file://}
    for wheel in "$dir"/torch-"$TORCH"+cpu-cp311-*.whl; do
      [ -f "$wheel" ] || continue
      mkdir -p wheels && cp "$wheel" wheels/
    done
  done
  if [ -d wheels ]; then echo "find-links = /etc/seals-build/pip/wheels"; fi
} > pip.conf
if [ -d wheels ]; then echo ""; else echo "https://download.pytorch.org/whl/cpu"; fi
