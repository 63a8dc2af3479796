"""Space and row estimates: per schema, per database, per tenant of a shared schema.

Estimates come from the catalog (`reltuples`, kept by ANALYZE and autovacuum) and fall back to the
statistics collector's live tuple count for tables never analyzed (`reltuples = -1`), so measuring
a big tenant costs no scan. Only shared (RLS) tenants are counted, by their indexed `tenant_id`, and small tables never
analyzed (a new tenant's), whose statistics may not be there yet.
"""

from __future__ import annotations

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

TABLES = text(
    """
    SELECT c.relname AS table_name,
           CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint
                ELSE coalesce(s.n_live_tup, 0) END AS rows_estimate,
           c.reltuples >= 0 AS analyzed,
           pg_total_relation_size(c.oid) AS total_bytes
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
     WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
     ORDER BY c.relname
    """
)


def tables(conn: Connection, schema: str) -> list[dict]:
    """Each table of the schema: estimated rows and total size (with indexes and TOAST)."""
    return [dict(row) for row in conn.execute(TABLES, {"schema": schema}).mappings()]


def exact_rows(conn: Connection, schema: str, table: str) -> int:
    """count(*): for small tables never analyzed, whose estimate is not there yet."""
    statement = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    return conn.exec_driver_sql(statement.as_string(conn.connection.driver_connection)).scalar_one()


def database_bytes(conn: Connection, database: str) -> int | None:
    return conn.execute(
        text("SELECT pg_database_size(datname) FROM pg_database WHERE datname = :db"), {"db": database}
    ).scalar_one_or_none()


def tenant_rows(conn: Connection, schema: str, table: str, tenant_key: str) -> int:
    """Exact rows of one tenant in a shared table (an index on tenant_id serves it)."""
    statement = sql.SQL("SELECT count(*) FROM {} WHERE {} = :tenant").format(
        sql.Identifier(schema, table), sql.Identifier("tenant_id")
    )
    rendered = statement.as_string(conn.connection.driver_connection)
    return conn.execute(text(rendered), {"tenant": tenant_key}).scalar_one()
