"""Who the server is: version, recovery state, connection limits."""

from sqlalchemy import text
from sqlalchemy.engine import Connection

IDENTITY = text(
    """
    SELECT current_setting('server_version') AS server_version,
           pg_is_in_recovery() AS in_recovery,
           current_setting('max_connections')::int AS max_connections,
           current_setting('superuser_reserved_connections')::int AS reserved_connections,
           current_setting('is_superuser')::bool AS is_superuser
    """
)


def identity(conn: Connection) -> dict:
    return dict(conn.execute(IDENTITY).mappings().one())


def backend_pid(conn: Connection) -> int:
    return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def terminate_backend(conn: Connection, pid: int) -> bool:
    return bool(conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one())
