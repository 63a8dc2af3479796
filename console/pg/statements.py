"""pg_stat_statements: read, never reset (other tools read it too).

The view has one row per (userid, dbid, queryid, toplevel) (PostgreSQL 14+): with
`pg_stat_statements.track = all`, a statement that also runs nested (inside a function, or under
EXPLAIN) has a second row with toplevel false, so that is the key of every row read here."""

from sqlalchemy import text
from sqlalchemy.engine import Connection

AVAILABLE = text(
    """
    SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS installed,
           'pg_stat_statements' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
             AS preloaded
    """
)

STATS_RESET = text("SELECT stats_reset FROM pg_stat_statements_info")

STATEMENTS = text(
    """
    SELECT s.queryid, s.dbid, s.userid, s.toplevel, s.calls, s.total_exec_time::float8 AS total_exec_ms, s.rows,
           s.shared_blks_hit, s.shared_blks_read, s.max_exec_time::float8 AS max_exec_ms,
           coalesce(r.rolname, '') AS username, coalesce(d.datname, '') AS database,
           left(s.query, :query_chars) AS query
      FROM pg_stat_statements s
      LEFT JOIN pg_roles r ON r.oid = s.userid
      LEFT JOIN pg_database d ON d.oid = s.dbid
     WHERE s.queryid IS NOT NULL
    """
)


def availability(conn: Connection) -> dict:
    return dict(conn.execute(AVAILABLE).mappings().one())


def stats_reset(conn: Connection):
    return conn.execute(STATS_RESET).scalar_one()


def statements(conn: Connection, query_chars: int = 4000) -> list[dict]:
    return [dict(row) for row in conn.execute(STATEMENTS, {"query_chars": query_chars}).mappings()]
