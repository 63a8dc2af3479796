#!/usr/bin/env bash
# demo-replica: on first start (empty data volume), clone demo-primary with `pg_basebackup -R`,
# which also writes standby.signal and primary_conninfo; then hand over to the postgres image's
# own entrypoint, which finds an existing data directory, skips initdb and starts postgres as a
# hot standby (hot_standby = on is on the command line).
# Runs as root, like the image's entrypoint, and drops to the postgres user for the backup.
set -Eeuo pipefail

PGDATA=${PGDATA:-/var/lib/postgresql/data}
PRIMARY_HOST=${PRIMARY_HOST:-demo-primary}
PRIMARY_PORT=${PRIMARY_PORT:-5432}
REPLICATION_USER=${REPLICATION_USER:-postgres}
REPLICA_NAME=${REPLICA_NAME:-demo-replica}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${FLEET_PG_PASSWORD:?set FLEET_PG_PASSWORD: the password of ${REPLICATION_USER} on ${PRIMARY_HOST}}"
  echo "demo-replica: waiting for ${PRIMARY_HOST}:${PRIMARY_PORT}"
  for _ in $(seq 1 120); do
    pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" && break
    sleep 1
  done
  pg_isready -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER"

  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGDATA"; fi
  as_postgres=()
  if [ "$(id -u)" = 0 ]; then as_postgres=(gosu postgres); fi

  echo "demo-replica: pg_basebackup -R from ${PRIMARY_HOST}:${PRIMARY_PORT}"
  # The password travels in PGPASSWORD, not on the command line; -R records it in
  # postgresql.auto.conf (primary_conninfo) inside the replica's private data volume.
  PGPASSWORD="$FLEET_PG_PASSWORD" "${as_postgres[@]}" pg_basebackup \
    -d "host=${PRIMARY_HOST} port=${PRIMARY_PORT} user=${REPLICATION_USER} application_name=${REPLICA_NAME}" \
    -D "$PGDATA" -R -X stream -c fast --progress
  test -f "$PGDATA/standby.signal"
  echo "demo-replica: base backup done, starting as a hot standby"
fi

exec docker-entrypoint.sh "$@"
