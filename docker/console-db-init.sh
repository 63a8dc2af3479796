#!/usr/bin/env bash
# console-db, first start only (/docker-entrypoint-initdb.d): the console's own role and database,
# as scripts/localfleet.py makes them. The role may log in and create databases (the test suite
# creates its test database) but is not a superuser; it owns the console database.
# The postgres image may source this file instead of running it: no `exit`, no `set -u`.
set -e

: "${CONSOLE_DB_NAME:?set CONSOLE_DB_NAME}"
: "${CONSOLE_DB_USER:?set CONSOLE_DB_USER}"
: "${CONSOLE_DB_PASSWORD:?set CONSOLE_DB_PASSWORD}"

# psql variables (:"ident", :'literal') quote the names and the password; nothing is spliced into SQL.
psql -v ON_ERROR_STOP=1 -X --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v console_db="$CONSOLE_DB_NAME" \
  -v console_user="$CONSOLE_DB_USER" \
  -v console_password="$CONSOLE_DB_PASSWORD" <<'SQL'
CREATE ROLE :"console_user" LOGIN CREATEDB PASSWORD :'console_password';
CREATE DATABASE :"console_db" OWNER :"console_user";
SQL
echo "console-db: role ${CONSOLE_DB_USER} and database ${CONSOLE_DB_NAME} created"
