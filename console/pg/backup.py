"""Logical backups and restore drills on targets: the snapshot a backup is taken in (exact row
counts and Alembic versions read in it), pg_dump/pg_restore/pg_amcheck in directory format, and the
scratch databases drills restore into (marked with a COMMENT, so a sweeper drops only its own).

Identifiers are quoted by psycopg (`sql.Identifier`), values bound. The subprocesses get the
password in their environment, never on the command line, and never give it back in an error.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

from django.conf import settings
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

from console import engines
from console.secrets import redact

# Scratch databases a drill makes are named this prefix + the drill run's id, and carry
# DRILL_MARKER_PREFIX + the id as their comment: the sweeper never drops anyone else's database.
DRILL_DATABASE_PREFIX = "fleet_drill_"
DRILL_MARKER_PREFIX = "fleet-console drill "


class ToolFailed(Exception):
    """pg_dump, pg_restore or pg_amcheck said no; the message is safe to show."""


def _run(conn: Connection, statement: sql.Composable, params: dict | None = None):
    rendered = statement.as_string(conn.connection.driver_connection)
    if params:
        return conn.execute(text(rendered), params)
    return conn.exec_driver_sql(rendered)


# Reading a database: tables, exact counts, versions ----------------------------------------------

# Ordinary tables holding data pg_dump dumps: not the catalogs, not an extension's own; whether
# they have a tenant_id column (the rows of shared tenants, under row-level security).
_TABLES = text(
    """
    SELECT n.nspname AS schema, c.relname AS name,
           EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                   AND NOT a.attisdropped) AS has_tenant_id
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND (CAST(:schema AS text) IS NULL OR n.nspname = :schema)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY 1, 2
    """
)


def exact_counts(conn: Connection, schema: str | None = None, *, tenant_rows: bool = False) -> list[dict]:
    """Every table (of `schema`, if given) and its exact row count, as the transaction's snapshot
    sees them. With `tenant_rows`, a table with a tenant_id column counts only the rows of the
    tenant the transaction is bound to (bind_tenant)."""
    tables = []
    for schema, name, has_tenant_id in conn.execute(_TABLES, {"schema": schema}).all():
        rows = _run(conn, sql.SQL("SELECT count(*) FROM {}{}").format(
            sql.Identifier(schema, name), _TENANT_FILTER if tenant_rows and has_tenant_id else sql.SQL("")))
        entry = {"schema": schema, "table": name, "rows": rows.scalar_one()}
        if tenant_rows:
            entry["tenant_rows"] = has_tenant_id
        tables.append(entry)
    return tables


# Shared (row-level security) tenants: their rows only ------------------------------------------

_TENANT_FILTER = sql.SQL(" WHERE tenant_id = current_setting('app.tenant_id')")


def bind_tenant(conn: Connection, tenant_key: str) -> None:
    """For this transaction: the tenant the RLS policies (and _TENANT_FILTER) see."""
    conn.execute(text("SELECT set_config('app.tenant_id', :tenant, true)"), {"tenant": tenant_key})


def copy_rows_out(conn: Connection, table: dict, out: Path) -> int:
    """COPY one table's rows into `out` (COPY text format): only the bound tenant's when the table
    has a tenant_id column, all of them otherwise (a schema's own, such as alembic_version)."""
    statement = sql.SQL("COPY (SELECT * FROM {}{}) TO STDOUT").format(
        sql.Identifier(table["schema"], table["table"]), _TENANT_FILTER if table.get("tenant_rows") else sql.SQL(""))
    cursor = conn.connection.driver_connection.cursor()
    with open(out, "wb") as file, cursor.copy(statement.as_string(conn.connection.driver_connection)) as copy:
        for block in copy:
            file.write(bytes(block))
    return cursor.rowcount


def copy_rows_in(scratch, database: str, schema: str, table: str, source: Path) -> int:
    """Load a file copy_rows_out wrote into the same table of a restored database."""
    with engines.connect(scratch, credential="change", database=database,
                         statement_timeout_ms=settings.BACKUP_STATEMENT_TIMEOUT_MS) as conn:
        driver = conn.connection.driver_connection
        cursor = driver.cursor()
        statement = sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(schema, table)).as_string(driver)
        with open(source, "rb") as file, cursor.copy(statement) as copy:
            for block in iter(lambda: file.read(1 << 20), b""):
                copy.write(block)
        return cursor.rowcount


def other_tenants_rows(conn: Connection, schema: str, table: str, tenant_key: str) -> int:
    """Rows of a restored table that are not the tenant's (read before row-level security is back)."""
    return _run(conn, sql.SQL("SELECT count(*) FROM {} WHERE tenant_id IS DISTINCT FROM :tenant").format(
        sql.Identifier(schema, table)), {"tenant": tenant_key}).scalar_one()


def alembic_versions(conn: Connection, tables: list[dict]) -> dict[str, list[str]]:
    """The Alembic version of every schema with an alembic_version table (one per tenant schema)."""
    versions = {}
    for table in tables:
        if table["table"] == "alembic_version":
            rows = _run(conn, sql.SQL("SELECT version_num FROM {}.alembic_version ORDER BY 1").format(
                sql.Identifier(table["schema"])))
            versions[table["schema"]] = [row[0] for row in rows]
    return versions


def extensions(conn: Connection) -> list[str]:
    return list(conn.execute(text("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1")).scalars())


@dataclass
class Snapshot:
    snapshot_id: str
    taken_at: datetime
    tables: list[dict]
    alembic: dict[str, list[str]]
    extensions: list[str]
    conn: Connection | None = field(default=None, repr=False)  # the transaction holding it, while it lasts


@contextmanager
def exported_snapshot(target, database: str, schema: str | None = None,
                      tenant_key: str | None = None) -> Iterator[Snapshot]:
    """A REPEATABLE READ transaction, as the change login, holding an exported snapshot open for
    as long as the block runs (pg_dump --snapshot reads the very same data); the counts and
    versions of the manifest are read in it first. With `tenant_key` (a shared tenant), the
    transaction is bound to that tenant and counts only its rows."""
    with engines.session(target, credential="change", database=database,
                         statement_timeout_ms=settings.BACKUP_STATEMENT_TIMEOUT_MS) as conn:
        repeatable = conn.execution_options(isolation_level="REPEATABLE READ")
        with repeatable.begin():
            # The snapshot is taken by this first statement: its start is the backup's point in time.
            snapshot_id, taken_at = repeatable.execute(text("SELECT pg_export_snapshot(), statement_timestamp()")).one()
            if tenant_key is not None:
                bind_tenant(repeatable, tenant_key)
            tables = exact_counts(repeatable, schema, tenant_rows=tenant_key is not None)
            yield Snapshot(snapshot_id, taken_at, tables, alembic_versions(repeatable, tables), extensions(repeatable),
                           repeatable)


# Volatile, yet they only read the clock or draw numbers (pg_sleep waits, within the statement timeout).
HARMLESS_VOLATILE = frozenset({"pg_sleep", "random", "clock_timestamp", "timeofday", "gen_random_uuid"})


def volatile_functions(conn: Connection, names) -> list[str]:
    """Which of these function names have a volatile variant in the database's catalog (one that
    may change something: pg_terminate_backend, set_config, nextval, dblink...)."""
    names = sorted(set(names) - HARMLESS_VOLATILE)
    if not names:
        return []
    return list(conn.execute(text(
        "SELECT DISTINCT proname FROM pg_proc WHERE proname = ANY(:names) AND provolatile = 'v' ORDER BY 1"
    ), {"names": names}).scalars())


def run_smoke_query(conn: Connection, query: str) -> int:
    """One read-only statement an operator wrote (checked by the caller with pglast); its row count."""
    conn.execute(text("SET TRANSACTION READ ONLY"))
    return len(conn.exec_driver_sql(query).all())


def database_size_bytes(conn: Connection) -> int:
    return conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()


# Scratch databases ---------------------------------------------------------------------------


def drill_database_name(run_id: int) -> str:
    return f"{DRILL_DATABASE_PREFIX}{int(run_id)}"


def create_scratch_database(scratch, name: str, run_id: int) -> None:
    """A fresh database on the scratch server, owned by its change login, marked as the drill's.
    One left by an earlier attempt of the same run is dropped first."""
    drop_scratch_database(scratch, name)
    with engines.autocommit(scratch, credential="change") as conn:
        _run(conn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        _run(conn, sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(f"{DRILL_MARKER_PREFIX}{int(run_id)}")))


def drop_scratch_database(scratch, name: str) -> bool:
    """Drop a drill's database (its sessions too); False if it was not there."""
    engines.forget(scratch.pk, name)  # our own pooled connections to it
    with engines.autocommit(scratch, credential="change") as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first()
        _run(conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return exists is not None


def marked_drill_databases(scratch) -> dict[str, int]:
    """The databases on a scratch server that a drill made: name -> drill run id."""
    with engines.connect(scratch, credential="change") as conn:
        rows = conn.execute(text(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE starts_with(datname, :prefix)"), {"prefix": DRILL_DATABASE_PREFIX}).all()
    found = {}
    for name, comment in rows:
        match = re.fullmatch(re.escape(DRILL_MARKER_PREFIX) + r"(\d+)", comment or "")
        if match and name == drill_database_name(int(match.group(1))):
            found[name] = int(match.group(1))
    return found


def ensure_extensions(scratch, database: str, wanted: list[str]) -> list[str]:
    """Create the backup's extensions the scratch database lacks, as far as the change login may
    (trusted ones); the names it could not create."""
    missing = []
    with engines.autocommit(scratch, credential="change", database=database) as conn:
        present = set(extensions(conn))
        for name in wanted:
            if name in present:
                continue
            try:
                _run(conn, sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
            except Exception:
                missing.append(name)
    return missing


# The tools -----------------------------------------------------------------------------------


def _server(target):
    return target.upstream if target.behind_pgbouncer and target.upstream_id else target


def _tool(args: list[str], server, credential: str, timeout_s: float, what: str) -> subprocess.CompletedProcess:
    login = server.credential(credential)
    password = login.password()
    env = {**os.environ, "PGCONNECT_TIMEOUT": str(server.connect_timeout_s)}
    if password:
        env["PGPASSWORD"] = password
    full = [*args, "--no-password", "--host", server.host, "--port", str(server.port), "--username", login.username]
    try:
        result = subprocess.run(full, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"{what} did not finish within {timeout_s:g} s") from None
    except OSError as exc:
        raise ToolFailed(f"{what} could not be started: {exc}") from None
    result.stdout = redact(result.stdout, password)
    result.stderr = redact(result.stderr, password)
    return result


def pg_dump_snapshot(target, database: str, snapshot_id: str, out: Path, *, jobs: int, schema: str | None = None,
                     schema_only: bool = False) -> None:
    """A directory-format dump of `database` (or only `schema`; with `schema_only` no rows) as the
    exported snapshot sees it, `jobs` in parallel."""
    server = _server(target)
    args = [settings.BACKUP_PG_DUMP, "--format=directory", f"--jobs={jobs}", f"--snapshot={snapshot_id}",
            "--dbname", database, "--file", str(out)]
    if schema:
        args.append(f"--schema={schema}")
    if schema_only:
        args.append("--schema-only")
    result = _tool(args, server, "change", settings.BACKUP_TOOL_TIMEOUT_S, "pg_dump")
    if result.returncode != 0:
        raise ToolFailed(f"pg_dump failed: {result.stderr.strip()[-800:]}")


def file_checksums(directory: Path) -> dict[str, dict]:
    """SHA-256 and size of every file of a directory-format dump."""
    files = {}
    for path in sorted(directory.iterdir()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        files[path.name] = {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}
    return files


# Extensions are the scratch server's business (created beforehand, as far as the change login
# may): restoring them, or their comments, needs their owner.
_EXTENSION_ENTRY = re.compile(r"^\d+; \d+ \d+ (EXTENSION|COMMENT - EXTENSION) ")


def restore_list(directory: Path, list_file: Path) -> None:
    result = subprocess.run([settings.BACKUP_PG_RESTORE, "--list", str(directory)], capture_output=True, text=True,
                            timeout=settings.BACKUP_TOOL_TIMEOUT_S)
    if result.returncode != 0:
        raise ToolFailed(f"pg_restore could not read the backup: {result.stderr.strip()[-800:]}")
    lines = [(";" + line if _EXTENSION_ENTRY.match(line) else line) for line in result.stdout.splitlines()]
    list_file.write_text("\n".join(lines) + "\n")


def pg_restore(scratch, database: str, directory: Path, *, jobs: int, list_file: Path, section: str | None = None) -> None:
    """Restore into `database` on the scratch server, stopping at the first error; objects owned by
    the change login, no grants (the source's roles need not exist here). `section`: pre-data or
    post-data only (rows are loaded in between, before constraints and row-level security)."""
    args = [settings.BACKUP_PG_RESTORE, "--format=directory", f"--jobs={jobs}", "--exit-on-error", "--no-owner",
            "--no-privileges", f"--use-list={list_file}", "--dbname", database, str(directory)]
    if section:
        args.append(f"--section={section}")
    result = _tool(args, scratch, "change", settings.BACKUP_TOOL_TIMEOUT_S, "pg_restore")
    if result.returncode != 0:
        raise ToolFailed(f"pg_restore failed: {result.stderr.strip()[-800:]}")


def pg_amcheck(scratch, database: str, *, jobs: int) -> list[str]:
    """pg_amcheck --heapallindexed on a restored database; the problems it reported (none: clean).
    It needs the amcheck extension in the database and EXECUTE on its functions for the change
    login (installed in the scratch server's template1 by a superuser: docs/deployment.md)."""
    args = [settings.BACKUP_PG_AMCHECK, "--heapallindexed", f"--jobs={jobs}", "--database", database]
    result = _tool(args, scratch, "change", settings.BACKUP_TOOL_TIMEOUT_S, "pg_amcheck")
    said = []
    for line in (result.stdout + "\n" + result.stderr).splitlines():
        if not line.strip():
            continue
        if line[:1].isspace() and said:  # the detail of the relation named on the line before
            said[-1] += " " + line.strip()
        else:
            said.append(line.strip())
    if result.returncode != 0 and not said:
        said = [f"pg_amcheck exited with status {result.returncode}"]
    return said[:50] if result.returncode != 0 or said else []
