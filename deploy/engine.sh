#!/usr/bin/env bash
# A Docker engine of the project's own, for the container images and tests (issue 19).
#
#   bash deploy/engine.sh start    install Debian's docker.io if missing, start dockerd in the
#                                  background (its PID in $STATE/dockerd.pid), wait until it answers
#   bash deploy/engine.sh stop     stop the dockerd this script started (by that PID; its
#                                  containerd and containers go with it)
#   bash deploy/engine.sh status   say whether it answers; exit 0 when it does
#   bash deploy/engine.sh env      print `export DOCKER_HOST=...` for a shell to eval
#
# The engine listens on its own socket ($CONVMETRICS_DOCKER_SOCKET, default
# /run/convmetrics-docker/docker.sock), never on /var/run/docker.sock: the test
# suite switches to testcontainers whenever an engine answers at DOCKER_HOST or the default
# socket, so an engine there would change every other test run on the machine. Its images
# live under $STATE/root (kept between runs: the warm cache).
#
# dockerd runs with --iptables=false --ip6tables=false --ip-forward=false: no firewall
# rule is touched, published ports work through docker-proxy, containers reach each other
# on a user-defined network, and nothing in a container reaches past this machine. Builds
# use `--network host` (Debian's packages during a build); no registry is needed (see
# deploy/base-image.sh).
set -euo pipefail

CACHE="${CONVMETRICS_CACHE_DIR:-$HOME/.cache/convmetrics}"
STATE="$CACHE/docker"
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
SOCKET="$CONVMETRICS_DOCKER_SOCKET"
RUNDIR="$(dirname "$SOCKET")"
export DOCKER_HOST="unix://$SOCKET"
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"
WAIT="${CONVMETRICS_DOCKER_WAIT:-60}"

say() { echo "engine: $*" >&2; }

answers() { docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ours() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

install() {
  command -v dockerd >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1 && return 0
  say "installing Debian's docker.io (dockerd, containerd, runc) and docker-compose"
  local sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends docker.io docker-compose >/dev/null
}

start() {
  install
  if answers; then
    say "an engine already answers at $DOCKER_HOST"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || { say "dockerd runs as root: run this as root (or with sudo)"; exit 1; }
  mkdir -p "$STATE/root" "$RUNDIR"
  # a stale socket or pid file of a killed engine would stop a new one starting
  rm -f "$SOCKET" "$RUNDIR/dockerd.pid"
  say "starting dockerd (log $LOG)"
  setsid dockerd \
    --host "$DOCKER_HOST" \
    --data-root "$STATE/root" \
    --exec-root "$RUNDIR/exec" \
    --pidfile "$RUNDIR/dockerd.pid" \
    --iptables=false --ip6tables=false --ip-forward=false \
    >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local waited=0
  until answers; do
    if ! ours; then
      say "dockerd exited; the end of its log:"
      tail -n 30 "$LOG" >&2
      rm -f "$PIDFILE"
      exit 1
    fi
    if [ "$waited" -ge "$((WAIT * 10))" ]; then
      say "dockerd did not answer within ${WAIT}s; stopping it. The end of its log:"
      tail -n 30 "$LOG" >&2
      stop
      exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  say "dockerd $(docker_cli version --format '{{.Server.Version}}') answers at $DOCKER_HOST (pid $(cat "$PIDFILE"))"
}

stop() {
  if ! [ -f "$PIDFILE" ]; then
    say "no engine started by this script (no $PIDFILE)"
    return 0
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    # containers first, so none outlives the engine (live-restore is off: dockerd would stop
    # them too, but a bounded `docker rm -f` is quicker and says what it removed)
    local running
    running="$(docker_cli ps -q 2>/dev/null || true)"
    if [ -n "$running" ]; then
      say "removing running containers: $(echo "$running" | tr '\n' ' ')"
      # shellcheck disable=SC2086
      docker_cli rm -f $running >/dev/null 2>&1 || true
    fi
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$waited" -ge 300 ]; then
        say "dockerd (pid $pid) ignored SIGTERM for 30s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
    say "dockerd (pid $pid) stopped"
  fi
  # dockerd leaves the bind mount of its network namespace behind
  if mountpoint -q "$RUNDIR/exec/netns/default" 2>/dev/null; then
    umount "$RUNDIR/exec/netns/default" || true
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if answers; then say "answers at $DOCKER_HOST"; else say "no engine at $DOCKER_HOST"; exit 1; fi ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
