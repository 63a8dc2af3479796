#!/usr/bin/env bash
# demo-primary, first start only (/docker-entrypoint-initdb.d), like scripts/localfleet.py:
#  - pg_hba.conf: streaming replication from other containers, password required (the image's
#    own line, `host all all all scram-sha-256`, does not cover the replication pseudo-database);
#  - pg_stat_statements in `postgres` and in `demo` (the library is preloaded by the command line);
#  - the demo database, owned by fleet_owner (made by 05-console-roles.sh), with pgbench data.
# The postgres image may source this file instead of running it: no `exit`, no `set -u`.
set -e

cat >> "$PGDATA/pg_hba.conf" <<'HBA'

# fleet console demo: demo-replica streams from here (pg_basebackup -R), password required
host    replication     all             all                     scram-sha-256
HBA

psql -v ON_ERROR_STOP=1 -X --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE DATABASE demo OWNER fleet_owner;
\connect demo
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SQL

# Over the init server's local socket; the tables belong to fleet_owner, which migrates them.
pgbench -i -q -s "${DEMO_PGBENCH_SCALE:-1}" --foreign-keys --username fleet_owner demo
echo "demo-primary: database demo loaded (pgbench scale ${DEMO_PGBENCH_SCALE:-1}), replication allowed"
