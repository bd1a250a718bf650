#!/bin/bash
# PostgreSQL from Debian's package, configured as the official postgres image is:
# POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required, unless
# POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default: the user's name), data in
# $PGDATA (default /var/lib/postgresql/data, a volume). Arguments go to the server, as the
# official image's command does: `postgres -c max_connections=200` (or without the leading
# `postgres`). Runs as the postgres user.
set -euo pipefail
[ "${1:-}" = postgres ] && shift

BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
USER_NAME="${POSTGRES_USER:-postgres}"
DB="${POSTGRES_DB:-$USER_NAME}"
AUTH="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$AUTH" != trust ]; then
    echo "postgres: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust to allow any connection)" >&2
    exit 1
  fi
  pwfile="$(mktemp)"
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  "$BIN/initdb" -D "$PGDATA" -U "$USER_NAME" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="$AUTH" >/dev/null
  rm -f "$pwfile"
  echo "host all all all $AUTH" >>"$PGDATA/pg_hba.conf"
  if [ "$DB" != postgres ]; then
    # a private, socket-only server while the database is made
    "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
    "$BIN/psql" -h /tmp -U "$USER_NAME" -d postgres -v ON_ERROR_STOP=1 -q \
      -c "CREATE DATABASE \"$DB\""
    "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "postgres: initialised $PGDATA (user $USER_NAME, database $DB)"
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql "$@"
