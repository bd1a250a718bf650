#!/usr/bin/env bash
# System packages the tests need (Debian). Idempotent: installs only what is missing.
# Called by `make setup`; each line names the package and why.
set -euo pipefail
need=()
# one line per package:  dpkg -s PKG >/dev/null 2>&1 || need+=(PKG)   # why
dpkg -s chromium >/dev/null 2>&1 || need+=(chromium)   # headless browser for tests/integration/test_dashboard.py (driven by Playwright)
dpkg -s postgresql >/dev/null 2>&1 || need+=(postgresql)   # a local PostgreSQL server for the store tests (initdb/pg_ctl, no Docker needed)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
