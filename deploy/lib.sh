# Sourced by the scripts in deploy/: which engine they talk to, and its client.
#
# The project's own engine (deploy/engine.sh) listens on $CONVMETRICS_DOCKER_SOCKET; the
# scripts use it when DOCKER_HOST is not set and it is there, else DOCKER_HOST or the
# client's default (Docker Desktop, a system dockerd).
CONVMETRICS_DOCKER_SOCKET="${CONVMETRICS_DOCKER_SOCKET:-/run/convmetrics-docker/docker.sock}"
if [ -z "${DOCKER_HOST:-}" ] && [ -S "$CONVMETRICS_DOCKER_SOCKET" ]; then
  export DOCKER_HOST="unix://$CONVMETRICS_DOCKER_SOCKET"
fi

# Debian's client (the engine's own version) where installed; a newer one on PATH also works
docker_cli() {
  if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}
