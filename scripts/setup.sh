#!/usr/bin/env bash
# Installs every Debian package Pulse needs to build, test and benchmark.
# Idempotent: when everything is present it only checks (well under a second)
# and never runs apt-get update; otherwise it updates the package lists once
# and installs just what is missing. Also installs the npm packages of the
# black-box tests (tests/api) when they are missing.
set -euo pipefail

packages=(
  build-essential pkg-config
  libmicrohttpd-dev libwslay-dev
  libjansson-dev libinih-dev
  libsqlite3-dev sqlite3
  libargon2-dev libsodium-dev
  libpq-dev libhiredis-dev libnats-dev libcurl4-openssl-dev
  libcriterion-dev clang libclang-rt-14-dev
  postgresql postgresql-contrib redis-server redis-tools nats-server
  wrk curl procps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

# Node.js may come from another source than Debian (it ships npm itself then):
# ask for the Debian packages only when the commands are absent.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages: ${missing[*]}; run as root (or with sudo)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start system services we do not use: Pulse's
  # harness starts its own engines on free loopback ports.
  for svc in redis-server nats-server postgresql; do
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
    service "$svc" stop >/dev/null 2>&1 || true
  done
fi

here=$(cd "$(dirname "$0")/.." && pwd)
# Installed again whenever the lock file changed since the last install (a stamp
# copy of it is kept in node_modules), so a new test package reaches old checkouts.
api="$here/tests/api"
if [ -f "$api/package-lock.json" ] && ! cmp -s "$api/package-lock.json" "$api/node_modules/.pulse-lock.json"; then
  echo "setup: installing npm packages for tests/api" >&2
  (cd "$api" && npm ci --no-audit --no-fund --silent >/dev/null && cp package-lock.json node_modules/.pulse-lock.json)
fi
exit 0
