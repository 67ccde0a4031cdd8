#!/usr/bin/env bash
# Make Docker usable for `make e2e` on a machine like the CI one: install Debian's docker.io if
# `dockerd` is missing, start the daemon if nothing answers on its socket (no bridge, no iptables:
# every container uses host networking, so all traffic stays on 127.0.0.1), and build a Debian
# bookworm base image with debootstrap when no Python base image is present (none can be pulled).
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
BASE_IMAGE=${BASE_IMAGE:-seals-al/bookworm-python:3.11}
LOG=${E2E_LOG:-/tmp/seals-e2e-dockerd.log}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

if ! command -v dockerd >/dev/null; then
  echo "e2e: installing docker.io and debootstrap (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null
fi
command -v debootstrap >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null

if ! docker info >/dev/null 2>&1; then
  echo "e2e: starting dockerd (log: $LOG)"
  as_root sh -c "nohup dockerd --bridge=none --iptables=false --ip6tables=false >'$LOG' 2>&1 &"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "e2e: dockerd did not start; see $LOG" >&2; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  ROOT=$(mktemp -d /tmp/seals-e2e-rootfs.XXXXXX)
  echo "e2e: building $BASE_IMAGE with debootstrap from $MIRROR"
  as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >/dev/null
  as_root sh -c "cd '$ROOT' && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/* \
    && ln -sf /usr/bin/python3 usr/local/bin/python \
    && tar -c . | docker import --change 'CMD [\"/bin/bash\"]' - '$BASE_IMAGE'" >/dev/null
  as_root rm -rf "$ROOT"
fi
echo "e2e: docker ready, base image $BASE_IMAGE"
