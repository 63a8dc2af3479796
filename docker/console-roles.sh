#!/usr/bin/env bash
# The console's two logins on a demo server (first start only, /docker-entrypoint-initdb.d), as
# scripts/localfleet.py creates them:
#  - fleet_monitor: pg_monitor, pg_signal_backend and pg_read_all_data, never a superuser (samplers,
#    pages, EXPLAIN, cancel/terminate);
#  - fleet_owner: CREATEDB CREATEROLE BYPASSRLS (tenant onboarding, migrations, restores).
# Passwords come from FLEET_MONITOR_PASSWORD and FLEET_OWNER_PASSWORD, bound as psql variables.
# The postgres image may source this file instead of running it: no `exit`, no `set -u`.
set -e

psql -v ON_ERROR_STOP=1 -X --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v monitor_password="${FLEET_MONITOR_PASSWORD:?set FLEET_MONITOR_PASSWORD}" \
  -v owner_password="${FLEET_OWNER_PASSWORD:?set FLEET_OWNER_PASSWORD}" <<'SQL'
CREATE ROLE fleet_monitor LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'monitor_password';
GRANT pg_monitor, pg_signal_backend, pg_read_all_data TO fleet_monitor;
CREATE ROLE fleet_owner LOGIN NOSUPERUSER CREATEDB CREATEROLE BYPASSRLS PASSWORD :'owner_password';
SQL
echo "$(hostname): roles fleet_monitor and fleet_owner created"
