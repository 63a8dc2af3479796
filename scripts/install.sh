#!/usr/bin/env bash
# Installs what the console needs on a fresh Debian 12 machine, and nothing twice:
# apt packages (PostgreSQL 15, PgBouncer, Redis, pgBackRest; Chromium for the tests) and the .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=false
[ "${1:-}" = "--test" ] && want_test=true

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15 postgresql-client-15)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pgbackrest >/dev/null || need+=(pgbackrest)
command -v runuser >/dev/null || need+=(util-linux)
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
if $want_test; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need[*]}; run as root or install them first" >&2
    exit 1
  fi
  echo "[install] apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The packages' own services are not ours: the console starts its own on other ports.
  for service in redis-server pgbouncer postgresql; do
    if command -v service >/dev/null; then service "$service" stop >/dev/null 2>&1 || true; fi
  done
fi

# PostgreSQL refuses to run as root: clusters run as this unprivileged user.
id -u "${FLEET_SERVICE_USER:-postgres}" >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "${FLEET_SERVICE_USER:-postgres}"

mode=app; $want_test && mode=test
stamp=".venv/.installed-$mode-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  if $want_test; then extras=".[test]"; else extras="."; fi
  echo "[install] pip install -e $extras"
  .venv/bin/python -m pip install -q -e "$extras" 2>&1 | grep -v -e "^WARNING: Location" || true
  .venv/bin/python -c "import django, sqlalchemy, celery, psycopg" 
  rm -f .venv/.installed-$mode-*
  touch "$stamp"
fi
