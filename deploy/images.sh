#!/usr/bin/env bash
# Build the project's images offline, on the engine at $DOCKER_HOST (deploy/engine.sh).
#
#   bash deploy/images.sh convmetrics   the convmetrics image (`make image`)
#   bash deploy/images.sh kafka         Kafka on Debian's JRE, from the pinned jars
#   bash deploy/images.sh postgres      PostgreSQL from Debian's package
#   bash deploy/images.sh all           the three (`make images`)
#   bash deploy/images.sh lock          rewrite deploy/requirements.lock (needs PyPI)
#
# Each build context is laid out under build/docker/<image>/ with only what the image
# needs: no network for Python packages or jars inside a build (HTTPS does not reach out of
# one here); Debian's packages come over `--network host` from the mirror apt uses.
#   BASE_IMAGE      FROM of every image (default convmetrics/debian:bookworm, made by
#                   deploy/base-image.sh when missing; debian:bookworm-slim where a registry
#                   is reachable; python:3.11-slim-bookworm for the convmetrics image)
#   IMAGE_TAG       the convmetrics image's name (default convmetrics:latest)
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ROOT="$PWD"

PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
BASE_IMAGE="${BASE_IMAGE:-convmetrics/debian:bookworm}"
IMAGE_TAG="${IMAGE_TAG:-convmetrics:latest}"
KAFKA_IMAGE="${CONVMETRICS_KAFKA_IMAGE:-convmetrics/kafka:4.1.1}"
POSTGRES_IMAGE="${CONVMETRICS_POSTGRES_IMAGE:-convmetrics/postgres:15}"
CACHE="${CONVMETRICS_CACHE_DIR:-$HOME/.cache/convmetrics}"
LOCK="$ROOT/deploy/requirements.lock"
CONTEXTS="$ROOT/build/docker"

say() { echo "images: $*" >&2; }

engine() {
  docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1 || {
    say "no Docker engine answers at ${DOCKER_HOST:-the default socket}: \`make engine\` starts the project's own (\`make engine-stop\` stops it), or set DOCKER_HOST"
    exit 1
  }
  if [ "$BASE_IMAGE" = convmetrics/debian:bookworm ]; then BASE_IMAGE="$BASE_IMAGE" bash deploy/base-image.sh; fi
}

build() {  # build NAME TAG CONTEXT [docker build options]
  local started=$SECONDS
  # the classic builder: the Debian engine's BuildKit is optional, and it needs nothing more
  DOCKER_BUILDKIT=0 docker_cli build --quiet --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    "${@:4}" -t "$2" "$3" >/dev/null
  say "built $2 in $((SECONDS - started))s ($(docker_cli image inspect -f '{{.Size}}' "$2" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# The project's wheel, built on the host with its compiled parts, and the locked
# dependencies' wheels (downloaded once into ~/.cache/convmetrics/wheelhouse).
wheels() {
  local out="$1"
  mkdir -p "$out"
  say "building the convmetrics wheel (the Rust fold and the mypyc encoder compiled)"
  mkdir -p "$CONTEXTS"
  # build/wheel.lock: one wheel build at a time in this checkout (the build backend writes
  # build/ in place; tests/integration/test_wheel.py builds one too, and .ci/run builds the
  # images while the tests run)
  CONVMETRICS_REQUIRE_NATIVE=1 CARGO_TARGET_DIR="$ROOT/build/cargo-target" flock "$ROOT/build/wheel.lock" \
    "$PYTHON" -m pip wheel --quiet --no-deps -w "$out" "$ROOT" >"$CONTEXTS/wheel.log" 2>&1 || {
    tail -n 40 "$CONTEXTS/wheel.log" >&2
    say "the wheel did not build (log: $CONTEXTS/wheel.log)"
    exit 1
  }
  local house="$CACHE/wheelhouse"
  local stamp
  stamp="$house/.lock-$(sha256sum "$LOCK" | cut -c1-16)"
  mkdir -p "$house"
  if [ ! -f "$stamp" ]; then
    say "downloading the locked dependencies' wheels into $house (once per lock)"
    "$PYTHON" -m pip download --quiet --only-binary=:all: --no-deps -d "$house" -r "$LOCK"
    touch "$stamp"
  fi
  # only the locked versions go into the context (the wheelhouse keeps older ones)
  local line name version
  while read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    name="${line%%==*}"
    version="${line#*==}"
    version="${version%% *}"
    local pattern
    pattern="$(echo "$name" | tr '[:upper:]-.' '[:lower:]__')-${version}-"
    local found
    found="$(find "$house" -maxdepth 1 -iname "${pattern}*.whl" | head -n 1)"
    [ -n "$found" ] || { say "no wheel of $name==$version in $house: remove $stamp and rerun"; exit 1; }
    ln -f "$found" "$out/" 2>/dev/null || cp "$found" "$out/"
  done <"$LOCK"
  cp "$LOCK" "$out/requirements.lock"
}

# What the convmetrics image is built from: the tracked sources of the package, the lock, the
# Dockerfile and the base; an image labelled with the same digest is not built again (the
# wheel inside would differ only in its timestamps). Outside a git checkout: always built.
source_digest() {
  git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 || return 0
  {
    echo "$BASE_IMAGE"
    git -C "$ROOT" ls-files -z -- convmetrics producer consumer schemas setup.py pyproject.toml \
      deploy/convmetrics deploy/requirements.lock | (cd "$ROOT" && xargs -0 sha256sum)
  } | sha256sum | cut -c1-32
}

convmetrics_image() {
  engine
  local digest
  digest="$(source_digest)"
  if [ -n "$digest" ] && [ "$(docker_cli image inspect -f '{{index .Config.Labels "org.convmetrics.source"}}' \
    "$IMAGE_TAG" 2>/dev/null)" = "$digest" ]; then
    say "$IMAGE_TAG is up to date (sources $digest)"
    return 0
  fi
  local ctx="$CONTEXTS/convmetrics"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  wheels "$ctx/wheels"
  cp deploy/convmetrics/Dockerfile deploy/convmetrics/healthcheck.py "$ctx/"
  build convmetrics "$IMAGE_TAG" "$ctx" --label "org.convmetrics.source=${digest:-none}"
}

kafka_image() {
  engine
  local ctx="$CONTEXTS/kafka"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  # the jars LocalBroker runs (downloaded with Maven on first use)
  local libs
  libs="$("$PYTHON" -c 'from convmetrics.localkafka.jars import kafka_libs; print(kafka_libs(on_download=print))' | tail -n 1)"
  cp -r "$libs" "$ctx/libs"
  cp deploy/kafka/Dockerfile deploy/kafka/entrypoint.sh convmetrics/localkafka/log4j2.properties "$ctx/"
  chmod 0755 "$ctx/entrypoint.sh"
  build kafka "$KAFKA_IMAGE" "$ctx"
}

postgres_image() {
  engine
  local ctx="$CONTEXTS/postgres"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp deploy/postgres/Dockerfile deploy/postgres/entrypoint.sh "$ctx/"
  chmod 0755 "$ctx/entrypoint.sh"
  build postgres "$POSTGRES_IMAGE" "$ctx"
}

# Pin what a `pip install` of the wheel resolves to today: every runtime dependency, to one
# version (the image installs exactly these, with --no-index).
lock() {
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  CONVMETRICS_REQUIRE_NATIVE=0 "$PYTHON" -m pip wheel --quiet --no-deps -w "$tmp" "$ROOT" 2>/dev/null
  "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: \
    --report "$tmp/report.json" "$tmp"/convmetrics-*.whl
  {
    echo "# The convmetrics image's Python dependencies, pinned (bash deploy/images.sh lock rewrites it)."
    "$PYTHON" - "$tmp/report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
pins = sorted(
    (i["metadata"]["name"].lower(), i["metadata"]["version"])
    for i in report["install"]
    if i["metadata"]["name"].lower() != "convmetrics"
)
print("\n".join(f"{n}=={v}" for n, v in pins))
PY
  } >"$LOCK"
  say "wrote $LOCK ($(grep -c '==' "$LOCK") packages)"
}

case "${1:-}" in
  convmetrics) convmetrics_image ;;
  kafka) kafka_image ;;
  postgres) postgres_image ;;
  all) convmetrics_image; kafka_image; postgres_image ;;
  lock) lock ;;
  *) echo "usage: $0 convmetrics|kafka|postgres|all|lock" >&2; exit 2 ;;
esac
