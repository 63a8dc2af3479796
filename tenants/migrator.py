"""The managed application's Alembic project, run in-process on the console's pooled connections.

The console owns the migration environment: it hands Alembic a session of its own (outside
PgBouncer) bound to the tenant's schema (`SET search_path`, reset when the session goes back to
the pool), with the version table in that schema, and Alembic commits once per revision. So a
revision may hold work that cannot run in a transaction (`CREATE INDEX CONCURRENTLY`) or must be
committed on its own (`VALIDATE CONSTRAINT`), in `op.get_context().autocommit_block()`. The SQL of
the pending revisions is rendered offline (`as_sql`) by the same configuration, for previews. The
script directory (revisions) is read once per process. The project's own env.py serves the
`alembic` command line only.

Compared with one `alembic upgrade head` process per tenant, this saves the interpreter start,
the imports, the revision files being read again and a new login to the server, per tenant.
"""

from __future__ import annotations

import functools
import importlib
import io
import logging
import threading

from alembic import op as alembic_op
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from django.conf import settings
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

VERSION_TABLE = "alembic_version"
# One line per revision per tenant is too much at a few hundred tenants; jobs log their own.
logging.getLogger("alembic").setLevel(logging.WARNING)
_lock = threading.Lock()


class _PerThreadOperations:
    """Alembic's `op` is one module-global proxy, so two threads migrating two tenants at once
    would send each other's DDL to the wrong connection. This proxy gives each thread its own."""

    _local = threading.local()

    def __getattr__(self, name):
        operations = getattr(self._local, "operations", None)
        if operations is None:
            raise RuntimeError("alembic.op used outside of a tenant migration")
        return getattr(operations, name)

    def running(self, migration_context: MigrationContext):
        self._local.operations = Operations(migration_context)
        return self

    def __enter__(self):
        return self._local.operations

    def __exit__(self, *exc_info):
        self._local.operations = None


_operations = _PerThreadOperations()


@functools.cache
def script_directory() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", settings.TENANT_ALEMBIC_SCRIPT_LOCATION)
    return ScriptDirectory.from_config(config)


class MigratorError(Exception):
    """The application's migrations cannot be run as they are; the message says what to do."""


def head() -> str:
    """The application's head revision: exactly one, or a MigratorError saying how to fix it."""
    with _lock:
        heads = script_directory().get_heads()
    if len(heads) > 1:
        raise MigratorError(
            f"The application's migrations have {len(heads)} heads ({', '.join(sorted(heads))}): the console "
            "migrates to one head only. Merge them (alembic merge -m 'merge heads' "
            f"{' '.join(sorted(heads))}) and deploy the merge revision."
        )
    return heads[0] if heads else ""


@functools.cache
def metadata() -> MetaData:
    module_name, _, attribute = settings.TENANT_ALEMBIC_METADATA.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "metadata")


@functools.cache
def metadata_in(schema: str) -> MetaData:
    """The application's tables placed in `schema` (foreign keys follow them there)."""
    placed = MetaData(naming_convention=metadata().naming_convention)
    for table in metadata().sorted_tables:
        table.to_metadata(placed, schema=schema)
    return placed


def table_names() -> list[str]:
    """Parents first, as rows must be inserted."""
    return [table.name for table in metadata().sorted_tables]


def current_version(conn: Connection, schema: str) -> str:
    context = MigrationContext.configure(conn, opts={"version_table_schema": schema})
    return context.get_current_revision() or ""


def _context(conn: Connection | None, schema: str, revision: str, dialect_name: str | None = None, **opts) -> MigrationContext:
    script = script_directory()
    if revision == "head":
        revision = head()  # refuses several heads

    def upgrade_steps(rev, _context):
        return script._upgrade_revs(revision, rev)

    # The revision map is shared by every thread of the process: resolve it under the lock.
    with _lock:
        script.revision_map.get_revisions(revision)
        alembic_op._proxy = _operations  # module functions (op.create_table, ...) call _proxy
    return MigrationContext.configure(
        conn,
        dialect_name=dialect_name,
        opts={
            "fn": upgrade_steps,
            "script": script,
            "destination_rev": revision,
            "version_table": VERSION_TABLE,
            "version_table_schema": schema,
            "transactional_ddl": True,
            "transaction_per_migration": True,
            "target_metadata": metadata(),
            **opts,
        },
    )


def upgrade(conn: Connection, schema: str, revision: str = "head") -> tuple[str, str]:
    """Bring the schema the session is bound to (tenancy.bind_session) up to `revision`, one
    transaction per revision, so a failure leaves every earlier revision done and recorded.
    `conn` must not be in a transaction. Returns (version before, version after)."""
    if conn.in_transaction():
        raise MigratorError("migrator.upgrade needs a session outside any transaction (engines.session)")
    before = current_version(conn, schema)
    conn.commit()  # reading the version began a transaction
    context = _context(conn, schema, revision)
    try:
        with _operations.running(context), context.begin_transaction():
            context.run_migrations()
    finally:
        if conn.in_transaction():
            conn.rollback()
    after = current_version(conn, schema)
    conn.commit()
    return before, after


def pending_sql(schema: str, current: str, revision: str = "head") -> str:
    """The SQL that `upgrade` runs from `current` to `revision`, rendered offline (as_sql) by the
    same configuration: each revision in its own BEGIN/COMMIT, its autocommit blocks outside them,
    the version table updates included. Empty when nothing is pending."""
    buffer = io.StringIO()
    context = _context(
        None, schema, revision, dialect_name="postgresql", as_sql=True, output_buffer=buffer,
        starting_rev=current or None, literal_binds=True,
    )
    with _operations.running(context), context.begin_transaction():
        context.run_migrations()
    return buffer.getvalue()


def drift(conn: Connection, schema: str) -> list[str]:
    """Differences between the tables actually in `schema` and the application's metadata, found
    by Alembic's own comparison. Ignores the version table and anything outside the schema."""

    # Alembic names the connection's default schema None (a database tenant's "public").
    compared = None if schema == conn.dialect.default_schema_name else schema

    def include_name(name, type_, _parent):
        if type_ == "schema":
            return name == compared
        if type_ == "table":
            return name != VERSION_TABLE
        return True

    context = MigrationContext.configure(
        conn,
        opts={
            "include_schemas": True,
            "include_name": include_name,
            "version_table_schema": schema,
            "compare_type": True,
        },
    )
    return [_describe(diff) for diff in compare_metadata(context, metadata_in(compared))]


_WORDING = {"add": "missing", "remove": "unexpected"}  # seen from the application's metadata


def _describe(diff) -> str:
    """One readable line per difference: 'missing index ...' (the application expects it, the
    database lacks it), 'unexpected column ...' (the database has it, the application does not),
    'changed type ...'."""
    if isinstance(diff, list):  # modifications of one column come as a list
        return "; ".join(_describe(item) for item in diff)
    kind = diff[0]
    verb, _, what = kind.partition("_")
    if verb in _WORDING:
        what = {"fk": "foreign key"}.get(what, what)
        item = diff[1]
        if what == "column":
            return f"{_WORDING[verb]} column {diff[2]}.{diff[3].name}"
        if what == "table":
            return f"{_WORDING[verb]} table {item.name}"
        return f"{_WORDING[verb]} {what} {item.name or '(unnamed)'} on {item.table.name}"
    if verb == "modify":
        _kind, _schema, table, column, _info, old, new = diff
        return f"changed {what.replace('_', ' ')} of {table}.{column}: {old} in the database, {new} expected"
    return " ".join(str(part) for part in diff)
