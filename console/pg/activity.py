"""Live activity: sessions, connections against the limit, blocking, cancel and terminate."""

from sqlalchemy import text
from sqlalchemy.engine import Connection

# pg_blocking_pids is costly: it is only called for sessions waiting on a heavyweight lock.
SESSIONS = text(
    """
    SELECT pid, usename AS username, application_name, client_addr::text AS client_addr,
           datname AS database, state, wait_event_type, wait_event, backend_type,
           EXTRACT(EPOCH FROM now() - query_start)::float8 AS query_seconds,
           EXTRACT(EPOCH FROM now() - xact_start)::float8 AS xact_seconds,
           left(query, :query_chars) AS query,
           CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid) ELSE '{}'::int[] END AS blocked_by
      FROM pg_stat_activity
     WHERE pid <> pg_backend_pid()
     ORDER BY query_start NULLS LAST
    """
)

# The server's limits and counters, and what the overview shows of its load besides its sessions:
# one round trip.
LIMITS = text(
    """
    SELECT current_setting('max_connections')::int AS max_connections,
           current_setting('superuser_reserved_connections')::int AS reserved_connections,
           current_setting('server_version') AS server_version,
           pg_is_in_recovery() AS in_recovery,
           (SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database)::float8 AS xact_total,
           (SELECT max(EXTRACT(EPOCH FROM now() - xact_start))::float8 FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS oldest_xact_s,
           (SELECT 100.0 * blks_hit / nullif(blks_hit + blks_read, 0) FROM pg_stat_database
             WHERE datname = current_database())::float8 AS cache_hit_pct,
           pg_database_size(current_database()) AS database_size_bytes,
           (SELECT max(age(datfrozenxid)) FROM pg_database)::float8 / 2147483648 * 100 AS xid_age_pct,
           pg_postmaster_start_time() AS server_started_at
    """
)
LOAD_FIELDS = ("oldest_xact_s", "cache_hit_pct", "database_size_bytes", "xid_age_pct", "server_started_at")


def sessions(conn: Connection, query_chars: int = 2000) -> list[dict]:
    return [dict(row) for row in conn.execute(SESSIONS, {"query_chars": query_chars}).mappings()]


def limits(conn: Connection) -> dict:
    return dict(conn.execute(LIMITS).mappings().one())


def cancel(conn: Connection, pid: int) -> bool:
    return bool(conn.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": pid}).scalar_one())


def terminate(conn: Connection, pid: int) -> bool:
    return bool(conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one())
