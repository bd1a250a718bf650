#!/usr/bin/env bash
# `make container-test`: the container suite on a real Docker engine, start to finish.
#   1. the project's engine (deploy/engine.sh start; stopped at the end, by its PID, when this
#      script started it; an engine that already answered is left as it was)
#   2. the images (deploy/images.sh all: convmetrics, Kafka, PostgreSQL; offline)
#   3. pytest: tests/containers (the compose stack; the session fixtures in containers),
#      and through testcontainers tests/integration's end-to-end test and one fault test
# CONVMETRICS_REQUIRE_DOCKER=1: a container that cannot start fails the run, never a skip or
# a fallback to the local broker. Prints how long each step took.
#
#   bash deploy/container-test.sh            the three steps
#   bash deploy/container-test.sh prepare    steps 1 and 2 only, the engine left running
#   bash deploy/container-test.sh tests      step 3 only, on the engine that answers
# .ci/run prepares while `make test` runs, then runs the tests, then stops the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/pytest)
STEPS="${1:-all}"
case "$STEPS" in
  all | prepare | tests) ;;
  *) echo "usage: $0 [prepare|tests]" >&2; exit 2 ;;
esac

started_engine=0
cleanup() {
  local rc=$?
  # containers a failed test left behind (testcontainers' Ryuk reaper cannot run here)
  if docker_cli version >/dev/null 2>&1; then
    left="$(docker_cli ps -aq --filter label=org.testcontainers.lang 2>/dev/null || true)"
    # shellcheck disable=SC2086
    [ -z "$left" ] || docker_cli rm -f -v $left >/dev/null 2>&1 || true
  fi
  if [ "$started_engine" = 1 ]; then bash deploy/engine.sh stop; fi
  echo "container-test: ${SECONDS}s in all (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT

# shellcheck source=deploy/lib.sh
source deploy/lib.sh
if [ "$STEPS" != tests ]; then
  if [ "$STEPS" = all ] && ! docker_cli version >/dev/null 2>&1; then
    started_engine=1
  fi
  t=$SECONDS
  bash deploy/engine.sh start
  export DOCKER_HOST="${DOCKER_HOST:-unix://$CONVMETRICS_DOCKER_SOCKET}"
  echo "container-test: engine in $((SECONDS - t))s" >&2

  t=$SECONDS
  bash deploy/images.sh all
  echo "container-test: images in $((SECONDS - t))s" >&2
  [ "$STEPS" = all ] || exit 0
else
  export DOCKER_HOST="${DOCKER_HOST:-unix://$CONVMETRICS_DOCKER_SOCKET}"
  docker_cli version >/dev/null 2>&1 || {
    echo "container-test: no Docker engine answers at $DOCKER_HOST: run \`$0 prepare\` first" >&2
    exit 1
  }
fi

t=$SECONDS
export CONVMETRICS_CONTAINER_TESTS=1 CONVMETRICS_REQUIRE_DOCKER=1 TESTCONTAINERS_RYUK_DISABLED=true
unset CONVMETRICS_BOOTSTRAP_SERVERS CONVMETRICS_POSTGRES_URL
set +e
"${PYTEST[@]}" -p no:cacheprovider tests/containers tests/integration/test_end_to_end.py \
  "tests/integration/test_faults.py::test_sigkill_one_of_three_consumers[postgresql]"
rc=$?
set -e
echo "container-test: tests in $((SECONDS - t))s" >&2
if [ $rc -eq 5 ]; then echo "container-test: pytest ran no test" >&2; exit 1; fi
exit $rc
