"""Tenants on a target: schemas, databases, the application role, row-level security, binding a
transaction to a tenant, seeding and verifying.

Identifiers (schema, database, role, table names) are validated by the caller (Tenant slugs,
settings) and quoted here by psycopg (`sql.Identifier`); values are bound parameters. Tenant
binding uses `SET LOCAL` and `set_config(..., true)`: it lasts for the transaction only, so it
holds behind PgBouncer in transaction mode and never leaks into the next user of a connection.
"""

from __future__ import annotations

from typing import Iterable

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

POLICY_NAME = "tenant_isolation"
# Marks schemas and databases the console made, so it never adopts or drops anyone else's.
MARKER_PREFIX = "fleet-console tenant "


def _run(conn: Connection, statement: sql.Composable, params: dict | None = None):
    """Execute a statement whose identifiers psycopg has quoted; values stay bound."""
    rendered = statement.as_string(conn.connection.driver_connection)
    if params:
        return conn.execute(text(rendered), params)
    return conn.exec_driver_sql(rendered)


def marker(slug: str) -> str:
    return MARKER_PREFIX + slug


# Binding a transaction to a tenant --------------------------------------------------------------


def bind(conn: Connection, *, schema: str, tenant_key: str | None, role: str | None = None) -> None:
    """For this transaction only: the tenant's schema first on the search path, `app.tenant_id`
    set to the tenant (RLS policies read it) and, if given, the non-owner application role."""
    _run(conn, sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(text("SELECT set_config('app.tenant_id', :tenant, true)"), {"tenant": tenant_key or ""})
    if role:
        _run(conn, sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))


def bind_session(conn: Connection, *, schema: str, tenant_key: str | None) -> None:
    """For the whole session (engines.session resets it): what `bind` sets for one transaction,
    for work that spans several transactions, such as one transaction per migration revision."""
    _run(conn, sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(text("SELECT set_config('app.tenant_id', :tenant, false)"), {"tenant": tenant_key or ""})
    conn.commit()


def lock_session(conn: Connection, key: str) -> None:
    """Serialise work on one schema until the session lets go (engines.session unlocks all)."""
    conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"), {"key": key})
    conn.commit()


def current_binding(conn: Connection) -> dict:
    return dict(
        conn.execute(
            text(
                "SELECT current_schema() AS schema,"
                " NULLIF(current_setting('app.tenant_id', true), '') AS tenant_key,"
                " current_user AS role"
            )
        ).mappings().one()
    )


def lock(conn: Connection, key: str) -> None:
    """Serialise work on one schema (migrations, policies) until the transaction ends."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


# Schemas ---------------------------------------------------------------------------------------


def schema_marker(conn: Connection, schema: str) -> str | None:
    """None when the schema does not exist, its comment ('' for none) when it does."""
    row = conn.execute(
        text(
            "SELECT coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace WHERE nspname = :schema"
        ),
        {"schema": schema},
    ).first()
    return None if row is None else row[0]


def create_schema(conn: Connection, schema: str, comment: str) -> None:
    _run(conn, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    _run(conn, sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(schema), sql.Literal(comment)))


def drop_schema(conn: Connection, schema: str) -> None:
    _run(conn, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def tables_in_schema(conn: Connection, schema: str) -> list[str]:
    return list(
        conn.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') ORDER BY c.relname"
            ),
            {"schema": schema},
        ).scalars()
    )


# Databases (CREATE/DROP DATABASE cannot run in a transaction: pass an autocommit connection) ----


def database_marker(conn: Connection, database: str) -> str | None:
    row = conn.execute(
        text("SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = :db"),
        {"db": database},
    ).first()
    return None if row is None else row[0]


def create_database(autocommit_conn: Connection, database: str) -> None:
    _run(autocommit_conn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def comment_database(conn: Connection, database: str, comment: str) -> None:
    _run(conn, sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), sql.Literal(comment)))


def drop_database(autocommit_conn: Connection, database: str) -> None:
    _run(autocommit_conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


# The application role and row-level security ---------------------------------------------------


def ensure_role(conn: Connection, role: str) -> bool:
    """A NOLOGIN role the application's own login roles are members of. True if it was made.
    The console's change login joins it too (PostgreSQL 15 does not make a role's creator a
    member), so that it can SET ROLE to it to check row-level security as the application sees it."""
    made = not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
    if made:
        _run(conn, sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOBYPASSRLS").format(sql.Identifier(role)))
    if not conn.execute(text("SELECT pg_has_role(current_user, :role, 'MEMBER')"), {"role": role}).scalar_one():
        _run(conn, sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
    return made


def grant_application_role(conn: Connection, schema: str, role: str) -> None:
    """Data access only: the role owns nothing, so row-level security always applies to it."""
    ident_schema, ident_role = sql.Identifier(schema), sql.Identifier(role)
    _run(conn, sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident_schema, ident_role))
    _run(conn, sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(ident_schema, ident_role))
    _run(conn, sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(ident_schema, ident_role))


def rls_status(conn: Connection, schema: str) -> dict[str, dict]:
    """Per table: RLS enabled, forced, and the names of its policies."""
    rows = conn.execute(
        text(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
            "  coalesce(array_agg(p.polname) FILTER (WHERE p.polname IS NOT NULL), '{}') AS policies"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_policy p ON p.polrelid = c.oid"
            " WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
            " GROUP BY c.relname, c.relrowsecurity, c.relforcerowsecurity"
        ),
        {"schema": schema},
    )
    return {row.relname: {"enabled": row.relrowsecurity, "forced": row.relforcerowsecurity,
                          "policies": list(row.policies)} for row in rows}


def secure_table(conn: Connection, schema: str, table: str, status: dict | None) -> list[str]:
    """ENABLE and FORCE row-level security (the owner is bound too) and the isolation policy on
    `tenant_id`. Only what is missing is done; returns what was done."""
    done = []
    qualified = sql.Identifier(schema, table)
    if not (status and status["enabled"]):
        _run(conn, sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(qualified))
        done.append("enable")
    if not (status and status["forced"]):
        _run(conn, sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(qualified))
        done.append("force")
    if not (status and POLICY_NAME in status["policies"]):
        # No tenant set (or set to '') is NULL: the comparison is never true, no row is visible.
        condition = sql.SQL("{} = NULLIF(current_setting('app.tenant_id', true), '')").format(sql.Identifier("tenant_id"))
        _run(
            conn,
            sql.SQL("CREATE POLICY {} ON {} USING ({}) WITH CHECK ({})").format(
                sql.Identifier(POLICY_NAME), qualified, condition, condition
            ),
        )
        done.append("policy")
    return done


# The application's rows ------------------------------------------------------------------------


def insert_tenant_row(conn: Connection, *, tenant_key: str, name: str) -> int:
    """The tenant's row in the application's `tenants` table, if missing. Returns rows added."""
    return conn.execute(
        text("INSERT INTO tenants (tenant_id, name) VALUES (:tenant, :name) ON CONFLICT (tenant_id) DO NOTHING"),
        {"tenant": tenant_key, "name": name},
    ).rowcount


def insert_root_folder(conn: Connection, *, tenant_key: str, name: str) -> int:
    """The tenant's root folder, if it has none. The caller has bound the transaction to the
    tenant (search_path, app.tenant_id). Returns rows added."""
    return conn.execute(
        text(
            "INSERT INTO folders (tenant_id, parent_id, name)"
            " SELECT CAST(:tenant AS varchar), NULL, :folder"
            " WHERE NOT EXISTS (SELECT 1 FROM folders WHERE tenant_id = CAST(:tenant AS varchar) AND parent_id IS NULL)"
        ),
        {"tenant": tenant_key, "folder": name},
    ).rowcount


def scoped_root_folders(conn: Connection) -> int:
    """Root folders visible to the transaction's tenant: the query names no tenant on purpose."""
    return conn.execute(text("SELECT count(*) FROM folders WHERE parent_id IS NULL")).scalar_one()


def delete_tenant_rows(conn: Connection, schema: str, tables_children_first: Iterable[str], tenant_key: str) -> dict:
    deleted = {}
    for table in tables_children_first:
        result = _run(
            conn,
            sql.SQL("DELETE FROM {} WHERE {} = :tenant").format(sql.Identifier(schema, table), sql.Identifier("tenant_id")),
            {"tenant": tenant_key},
        )
        deleted[table] = result.rowcount
    return deleted


def copy_tenant_rows(conn: Connection, schema: str, table: str, columns: list[str], out) -> int:
    """COPY one table's rows of the tenant the transaction is bound to (app.tenant_id, with RLS
    as a second guard) into `out` in COPY text format. Returns the bytes written."""
    statement = sql.SQL(
        "COPY (SELECT {columns} FROM {table} WHERE {tenant} = current_setting('app.tenant_id') ORDER BY 1) TO STDOUT"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        table=sql.Identifier(schema, table),
        tenant=sql.Identifier("tenant_id"),
    )
    written = 0
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(statement) as copy:
        for block in copy:
            out.write(bytes(block))
            written += len(block)
    return written


def copy_header(conn: Connection, schema: str, table: str, columns: list[str]) -> str:
    """The `COPY ... FROM stdin;` line psql restores a block of copied rows with."""
    return sql.SQL("COPY {} ({}) FROM stdin;\n").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    ).as_string(conn.connection.driver_connection)
