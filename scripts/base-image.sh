#!/usr/bin/env bash
# Prints the base image the project's Dockerfiles build on.
#
# debian:bookworm-slim when it is present or can be pulled; otherwise a minimal Debian
# bookworm built here with mmdebstrap from Debian's packages and imported as
# gitlab-dr/debian:bookworm (machines with no container registry). Progress goes to stderr;
# only the image name goes to stdout.
set -euo pipefail

want=${BASE_IMAGE:-debian:bookworm-slim}
local_tag=gitlab-dr/debian:bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$want" >/dev/null 2>&1; then
  echo "$want"; exit 0
fi
if timeout 60 docker pull -q "$want" >/dev/null 2>&1; then
  echo "$want"; exit 0
fi
if docker image inspect "$local_tag" >/dev/null 2>&1; then
  echo "$local_tag"; exit 0
fi

echo "base-image: $want cannot be pulled; building $local_tag with mmdebstrap" >&2
if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "base-image: mmdebstrap is missing (run: make host-deps, or apt-get install mmdebstrap)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# minbase: essential packages plus apt, like debian:bookworm-slim; docs and man pages dropped.
mmdebstrap --variant=minbase --format=tar \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm "$tmp/rootfs.tar" "$mirror" >&2
docker import --change 'CMD ["bash"]' "$tmp/rootfs.tar" "$local_tag" >/dev/null
echo "$local_tag"
