#!/usr/bin/env bash
# demo-primary, first start only (/docker-entrypoint-initdb.d), like scripts/localfleet.py:
#  - WAL archiving with pgbackrest archive-push (postgresql.auto.conf; in effect from the real
#    start that follows the init scripts);
#  - the pgBackRest stanza `demo`, over the init server's local socket.
# The postgres image may source this file instead of running it: no `exit`, no `set -u`.
set -e
psql -v ON_ERROR_STOP=1 -X --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
ALTER SYSTEM SET archive_mode = 'on';
ALTER SYSTEM SET archive_command = 'pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=demo archive-push %p';
SQL
pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=demo stanza-create
echo "demo-primary: WAL archived with pgBackRest, stanza demo in the pgbackrest-repo volume"
