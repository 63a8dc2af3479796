"""The replication heartbeat: one row per console that the sampler rewrites on a primary every
round, so that a standby can tell how far behind it is from the newest heartbeat it has replayed.

It lives in a schema of its own on the primary, `fleet_console.heartbeat`, created and written by
the change credential (the monitor role stays read-only); the monitor role is granted USAGE and
SELECT, to read it on the standbys (grants replicate like everything else). Times are the
primary's `clock_timestamp()`, read on the standby against its own `now()`: the hosts' clocks
must agree (NTP), as with any heartbeat.
"""

from datetime import datetime

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

SCHEMA = "fleet_console"
TABLE = "heartbeat"

CREATE = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{TABLE} (
            console text PRIMARY KEY,
            beat_at timestamptz NOT NULL,
            beats bigint NOT NULL DEFAULT 1
        )""",
    f"COMMENT ON TABLE {SCHEMA}.{TABLE} IS 'Fleet Console replication heartbeat: rewritten every sampling round. "
    "Drop the schema once no console writes it.'",
)
GRANTS = (
    sql.SQL(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {{}}"),
    sql.SQL(f"GRANT SELECT ON {SCHEMA}.{TABLE} TO {{}}"),
)

# The primary flushes the row at commit (even where synchronous_commit is off), so standbys get it
# within the round; 'local' never waits for a synchronous standby.
FLUSH_AT_COMMIT = text("SELECT set_config('synchronous_commit', 'local', true)")
BEAT = text(
    f"""
    INSERT INTO {SCHEMA}.{TABLE} AS h (console, beat_at) VALUES (:console, clock_timestamp())
        ON CONFLICT (console) DO UPDATE SET beat_at = EXCLUDED.beat_at, beats = h.beats + 1
    """
)

# Looked up in the catalog, which never fails on a schema we may not use.
READABLE = text(
    """
    SELECT has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = :schema AND c.relname = :table
    """
)
NEWEST = text(f"SELECT max(beat_at) FROM {SCHEMA}.{TABLE}")


def ensure(conn: Connection, reader: str) -> None:
    """Create the schema and table if missing and let `reader` (the monitor role) read them."""
    for statement in CREATE:
        conn.exec_driver_sql(statement)
    for grant in GRANTS:
        conn.exec_driver_sql(grant.format(sql.Identifier(reader)).as_string(conn.connection.driver_connection))


def beat(conn: Connection, console: str) -> None:
    conn.execute(FLUSH_AT_COMMIT)
    conn.execute(BEAT, {"console": console})


def newest(conn: Connection) -> datetime | None:
    """The newest heartbeat replayed here; None when there is none (or it may not be read)."""
    if not conn.execute(READABLE, {"schema": SCHEMA, "table": TABLE}).scalar():
        return None
    return conn.execute(NEWEST).scalar()
