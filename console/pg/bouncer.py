"""PgBouncer's admin console: SHOW POOLS / SHOW STATS over the simple query protocol."""

import psycopg
from django.conf import settings
from psycopg import sql

SHOWABLE = frozenset({"POOLS", "STATS", "DATABASES", "CLIENTS", "SERVERS", "CONFIG"})


def admin_connection(host: str, port: int, user: str, password: str | None, connect_timeout_s: int) -> psycopg.Connection:
    # The admin console speaks the simple query protocol only: client-side cursors, no prepares.
    return psycopg.connect(
        host=host, port=port, user=user, password=password, dbname="pgbouncer",
        connect_timeout=connect_timeout_s, autocommit=True, prepare_threshold=None,
        cursor_factory=psycopg.ClientCursor, application_name="fleet-console",
        require_auth=settings.TARGET_REQUIRE_AUTH,
    )


def show(conn: psycopg.Connection, what: str) -> list[dict]:
    """Rows of SHOW <what>, each a dict read by column name (columns vary between versions)."""
    if what not in SHOWABLE:
        raise ValueError(f"not a PgBouncer SHOW command: {what!r}")
    with conn.cursor() as cursor:
        cursor.execute(sql.SQL("SHOW {}").format(sql.SQL(what)))
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
