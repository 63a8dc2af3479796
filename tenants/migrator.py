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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class StagedRevision:
    """A revision written with tenants/app_schema/staged.py: one stage of one change."""

    revision: str
    down_revision: str
    stage: str
    change: object  # migrations_ui.staging.Definition
    doc: str

    @property
    def change_name(self) -> str:
        definition = self.change
        subject = definition.column or "_".join(definition.index_columns)
        return f"{definition.table}_{subject}_{definition.kind}"


def chain() -> list:
    """The revisions from the base to the head, in the order they run (one head only); walked once
    per loaded script directory (pages ask for it per tenant and stage)."""
    script = script_directory()
    walked = getattr(script, "_fleet_chain", None)
    if walked is None:
        head()
        with _lock:
            walked = script._fleet_chain = tuple(reversed(list(script.walk_revisions())))
    return list(walked)


def staged_revision(script) -> StagedRevision | None:
    module = getattr(script, "module", None)
    change, stage = getattr(module, "CHANGE", None), getattr(module, "STAGE", None)
    if change is None or stage is None:
        return None
    return StagedRevision(script.revision, script.down_revision or "", stage, change, (script.doc or "").strip())


def staged_revisions() -> list[StagedRevision]:
    return [found for script in chain() if (found := staged_revision(script)) is not None]


def release_revision(rolled_out: set[str]) -> str:
    """Where a schema goes without anyone's approval (onboarding, "migrate all"): every revision
    from the base up to, not including, the first staged revision not yet rolled out everywhere
    (`rolled_out`). Staged revisions after it are pending: each is rolled out on its own."""
    reached = ""
    for script in chain():
        if staged_revision(script) is not None and script.revision not in rolled_out:
            break
        reached = script.revision
    return reached


def after(version: str) -> list:
    """The revisions a schema at `version` has not had yet, in order."""
    revisions = chain()
    ids = [r.revision for r in revisions]
    return revisions[ids.index(version) + 1:] if version in ids else revisions


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


def reached(version: str, revision: str) -> bool:
    """Whether a schema at `version` has had `revision` (it is at it or past it)."""
    ids = [r.revision for r in chain()]
    return version in ids and revision in ids and ids.index(version) >= ids.index(revision)


def to_run(version: str, schema: str, revision: str, expected_from: str | None) -> bool:
    """Whether a schema at `version` still has `revision` to run (False: it is at it or past it).
    With `expected_from`, it must then be exactly there: MigratorError otherwise (a staged
    revision runs from the one before it, nothing else with it)."""
    if reached(version, revision):
        return False
    if expected_from is not None and version != expected_from:
        raise MigratorError(f"{schema} is at {version or 'no version'}, not at {expected_from}: bring it to "
                            f"{expected_from} first, then {revision} runs on its own")
    return True


def upgrade(conn: Connection, schema: str, revision: str = "head", expected_from: str | None = None) -> tuple[str, str]:
    """Bring the schema the session is bound to (tenancy.bind_session) up to `revision`, one
    transaction per revision, so a failure leaves every earlier revision done and recorded.
    `conn` must not be in a transaction. A schema already at or past `revision` is left as it is.
    With `expected_from`, a schema below `revision` must be exactly there (a staged revision
    runs from the one before it, nothing else with it). Returns (version before, version after)."""
    if conn.in_transaction():
        raise MigratorError("migrator.upgrade needs a session outside any transaction (engines.session)")
    before = current_version(conn, schema)
    conn.commit()  # reading the version began a transaction
    if revision != "head" and not to_run(before, schema, revision, expected_from):
        return before, before
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


def stamp(conn: Connection, schema: str, revision: str, expected_from: str) -> tuple[str, str]:
    """Record `revision` in the schema's version table without running its upgrade(): the console
    did its work another way (a backfill stage: the backfill engine's batches, checkpointed). The
    schema must be exactly at `expected_from` (or already at or past `revision`: left as it is).
    `conn` must not be in a transaction; the stamp is committed. Returns (before, after)."""
    if conn.in_transaction():
        raise MigratorError("migrator.stamp needs a session outside any transaction (engines.session)")
    before = current_version(conn, schema)
    conn.commit()
    if not to_run(before, schema, revision, expected_from):
        return before, before
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema})
    with _lock:
        script_directory().revision_map.get_revisions(revision)
    context.stamp(script_directory(), revision)
    conn.commit()
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
    by Alembic's own comparison. Ignores the version table and anything outside the schema, and
    what the staged revisions the schema has not had yet will change (they are pending, not drift)."""
    pending = _pending_staged_keys(current_version(conn, schema))

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
    diffs = compare_metadata(context, metadata_in(compared))
    return [_describe(diff) for diff in diffs if not (_keys(diff) and _keys(diff) <= pending)]


def columns_at(version: str) -> list[tuple[str, list[str]]]:
    """(table, its columns) as a schema at `version` has them, parents first: the metadata's,
    less the columns staged revisions it has not had yet will add."""
    pending = _pending_staged_keys(version)
    return [(table.name, [c.name for c in table.columns if ("add_column", table.name, c.name) not in pending])
            for table in metadata().sorted_tables]


def _pending_staged_keys(version: str) -> set[tuple]:
    """What Alembic's comparison reports until the pending staged revisions have run."""
    keys: set[tuple] = set()
    for script in after(version):
        staged = staged_revision(script)
        if staged is None:
            continue
        for stage in staged.change.stages("public"):
            if stage.name != staged.stage:
                continue
            for each in stage.ops:
                keys |= {
                    "add_column_nullable": {("add_column", each.table, each.column)},
                    "set_not_null": {("modify_nullable", each.table, each.column)},
                    "create_index_concurrently": {("add_index", each.table, each.index)},
                    "add_foreign_key_not_valid": {("add_fk", each.table, (each.column,))},
                }.get(each.kind, set())
    return keys


def _keys(diff) -> set[tuple]:
    if isinstance(diff, list):
        return set().union(*(_keys(item) for item in diff)) if diff else set()
    kind = diff[0]
    if kind == "add_column":
        return {("add_column", diff[2], diff[3].name)}
    if kind == "modify_nullable":
        return {("modify_nullable", diff[2], diff[3])}
    if kind == "add_index":
        return {("add_index", diff[1].table.name, diff[1].name)}
    if kind == "add_fk":
        return {("add_fk", diff[1].table.name, tuple(c.name for c in diff[1].columns))}
    return set()


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
