#!/usr/bin/env bash
# The Debian base image the project's images build FROM where no registry can be reached:
# `debootstrap --variant=minbase bookworm` from the Debian mirror apt uses, `docker import`ed
# as $BASE_IMAGE (default convmetrics/debian:bookworm), cached as a `docker save` tarball in
# ~/.cache/convmetrics/images/ so a new engine loads it in a second instead of ~30 s.
#
#   bash deploy/base-image.sh          make sure the engine at $DOCKER_HOST has the image
#
# Where a registry is reachable, skip this and build with BASE_IMAGE=debian:bookworm-slim.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"

BASE_IMAGE="${BASE_IMAGE:-convmetrics/debian:bookworm}"
CACHE="${CONVMETRICS_CACHE_DIR:-$HOME/.cache/convmetrics}/images"
TARBALL="$CACHE/$(echo "$BASE_IMAGE" | tr '/:' '__').tar"
SUITE=bookworm

say() { echo "base-image: $*" >&2; }

if docker_cli image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "$BASE_IMAGE present"
  exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # two builds at once make it once
if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null 2>&1 || {
    say "installing Debian's debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  # the mirror apt uses here (deb822 or one-line sources), else Debian's own
  mirror="$(grep -hoE '^(URIs:|deb) +http[^ ]*/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list 2>/dev/null | head -n 1 | awk '{print $2}' || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  say "debootstrap --variant=minbase $SUITE from $mirror (once, ~30 s)"
  debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 || {
    tail -n 20 "$CACHE/debootstrap.log" >&2
    exit 1
  }
  # apt in the image follows the same suites as here: the release, its updates, security
  security="${CONVMETRICS_DEBIAN_SECURITY:-${mirror%/debian*}/debian-security}"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$mirror" "$SUITE" "$mirror" "$SUITE" "$security" "$SUITE" >"$root/etc/apt/sources.list"
  # a slim image: no apt lists or caches, no docs
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
  tar -C "$root" -c . | docker_cli import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  docker_cli save -o "$TARBALL.partial" "$BASE_IMAGE"
  mv "$TARBALL.partial" "$TARBALL"
  say "imported $BASE_IMAGE; cached as $TARBALL"
else
  docker_cli load -q -i "$TARBALL" >/dev/null
  say "loaded $BASE_IMAGE from $TARBALL"
fi
