#!/usr/bin/env bash
# Stop before `docker build` when Docker's disk cannot hold a build: the build stage's dependency
# layers and the final image's virtualenv are about 2.4 GB and 2.2 GB, and an image that does not fit
# fails late, mid-copy, with "no space left on device". SEALS_IMAGE_MIN_FREE_GB (default 6) sets
# how much must be free.
set -euo pipefail
need_gb=${SEALS_IMAGE_MIN_FREE_GB:-6}
root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)
[ -d "$root" ] || root=/
free_kb=$(df -Pk "$root" | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
  echo "image: only $((free_kb / 1024)) MB free under $root; building the image needs ${need_gb} GB." >&2
  echo "image: free some space (docker image prune, docker system df shows what Docker holds)," >&2
  echo "image: or set SEALS_IMAGE_MIN_FREE_GB if you know the build fits." >&2
  exit 1
fi
