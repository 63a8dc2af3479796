#!/bin/sh
# demo-bouncer: write PgBouncer's password file from the environment, then run PgBouncer in the
# foreground with docker/pgbouncer.ini. The image runs this as its unprivileged user (PgBouncer
# refuses to run as root). POSIX sh: the image is Alpine.
set -eu

: "${FLEET_PG_PASSWORD:?set FLEET_PG_PASSWORD: the password of postgres on demo-primary}"
: "${FLEET_MONITOR_PASSWORD:?set FLEET_MONITOR_PASSWORD: the password of fleet_monitor on demo-primary}"
: "${FLEET_OWNER_PASSWORD:?set FLEET_OWNER_PASSWORD: the password of fleet_owner on demo-primary}"
CONFIG=${PGBOUNCER_CONFIG:-/etc/pgbouncer/pgbouncer.ini}

umask 077
mkdir -p /tmp/pgbouncer
# auth_file format: "user" "password", a double quote inside a value is doubled.
quoted() { printf '%s' "$1" | sed 's/"/""/g'; }
{
  printf '"postgres" "%s"\n' "$(quoted "$FLEET_PG_PASSWORD")"
  printf '"fleet_monitor" "%s"\n' "$(quoted "$FLEET_MONITOR_PASSWORD")"
  printf '"fleet_owner" "%s"\n' "$(quoted "$FLEET_OWNER_PASSWORD")"
} > /tmp/pgbouncer/userlist.txt

exec pgbouncer "$CONFIG"
