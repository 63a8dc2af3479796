"""Staged revisions for the managed application: helpers that expand one change into its stages
(expand, backfill, validate, contract), each stage one Alembic revision.

A staged revision module holds two names, `CHANGE` (one of the helpers below) and `STAGE`, and
its upgrade() is `staged.upgrade(CHANGE, STAGE)`. `manage.py staged_revision` writes them.

    CHANGE = staged.add_not_null_column("documents", "status", "varchar(20)", backfill="'draft'")
    STAGE = "validate"

The stages and their SQL are migrations_ui/staging.py's, the same as a change written in the
console; each statement is console/pg/ddl.py's (one source of the SQL), run on the revision's
own connection in the tenant's schema: a transactional operation under `SET LOCAL lock_timeout`
in a savepoint retried on 55P03, `VALIDATE CONSTRAINT` and `CREATE INDEX CONCURRENTLY` in
Alembic's autocommit_block (outside the revision's transaction), each skipped when the catalog
says it is done. The backfill runs keyset batches over the primary key, each its own short
transaction, only over rows still NULL, so a rerun picks up where it stopped. Offline (the plan
page's pending SQL) the same statements are printed.

The console rolls a stage out over tenants (migrations_ui/rollouts.py); `alembic upgrade` runs
them just as well, and each tenant's alembic_version records how far it got. A backfill stage's
simple loop below is for `alembic upgrade` only: a rollout recognises the backfill stage, runs
the backfill engine on each tenant (migrations_ui/services.py: adaptive batches, throttled on the
health indicators between batches, checkpointed) and then stamps the revision.
"""

from __future__ import annotations

import time

from alembic import op

from console.pg import backfill as pg_backfill
from console.pg import ddl, lock_retry
from migrations_ui import staging

DEFAULTS = {  # used when Django's settings are not configured (the alembic command line)
    "DDL_LOCK_TIMEOUT_MS": 1000,
    "DDL_LOCK_RETRIES": 5,
    "DDL_LOCK_BACKOFF_S": 0.5,
    "STAGED_BACKFILL_BATCH_ROWS": 1000,
    "BACKFILL_REST_RATIO": 0.4,  # rest this fraction of each batch's time before the next
}


def setting(name: str):
    from django.conf import settings

    if settings.configured and hasattr(settings, name):
        return getattr(settings, name)
    return DEFAULTS[name]


# The helpers: what a staged change is ------------------------------------------------------------


def add_not_null_column(table: str, column: str, column_type: str, *, backfill: str, pk: str = "id") -> staging.Definition:
    """A new NOT NULL column: added nullable, backfilled with `backfill` (an SQL expression over the
    row), CHECK (c IS NOT NULL) NOT VALID then validated, SET NOT NULL (no scan), CHECK dropped."""
    ddl.column_type_sql(column_type)  # refuses a bad type when the revision is loaded
    return staging.Definition(staging.ADD_NOT_NULL_COLUMN, table, column, column_type=column_type,
                              backfill_expression=staging.not_null_backfill(backfill), pk_column=pk)


def set_not_null(table: str, column: str, *, backfill: str, pk: str = "id") -> staging.Definition:
    """An existing column made NOT NULL: the CHECK first (NOT VALID), NULLs backfilled, validated, SET NOT NULL."""
    return staging.Definition(staging.SET_NOT_NULL, table, column,
                              backfill_expression=staging.not_null_backfill(backfill), pk_column=pk)


def add_foreign_key(table: str, column: str, ref_table: str, ref_column: str = "id", *,
                    column_type: str = "") -> staging.Definition:
    """A foreign key: (the column, added nullable, when `column_type` is given), an index built
    CONCURRENTLY on it, the key added NOT VALID, then validated in its own transaction."""
    if column_type:
        ddl.column_type_sql(column_type)
    return staging.Definition(staging.ADD_FOREIGN_KEY, table, column, column_type=column_type,
                              ref_table=ref_table, ref_column=ref_column)


def add_index(table: str, *columns: str) -> staging.Definition:
    """An index built CONCURRENTLY (an INVALID leftover of an earlier try dropped first)."""
    return staging.Definition(staging.ADD_INDEX, table, index_columns=columns)


# Running a stage in a revision -----------------------------------------------------------------


def _schema() -> str:
    """The schema being migrated: it holds the version table (tenants/migrator.py, env.py)."""
    return op.get_context().version_table_schema or "public"


def stage_of(change: staging.Definition, stage: str, schema: str) -> staging.Stage:
    return change.stage(schema, stage)


def upgrade(change: staging.Definition, stage: str) -> None:
    """Run (online) or print (offline) one stage of `change` in the migration's schema."""
    context = op.get_context()
    planned = stage_of(change, stage, _schema())
    if context.as_sql:
        _print(planned)
        return
    conn = op.get_bind()
    if planned.backfill is not None:
        with context.autocommit_block():
            _backfill(conn, planned.backfill)
        return
    for each in planned.ops:
        if ddl.OPERATIONS[each.kind].autocommit:
            with context.autocommit_block():
                _run(conn, each, autocommit=True)
        else:
            _run(conn, each, autocommit=False)


def downgrade(change: staging.Definition, stage: str) -> None:
    raise NotImplementedError(
        f"stage {stage} of the {change.describe()} is not downgraded: write a new staged change that undoes it "
        "(each stage is lock-safe only forwards)")


def _run(conn, each: ddl.Op, *, autocommit: bool) -> ddl.Result:
    return lock_retry.run_here(
        conn, lambda c: ddl.run_on(c, each), what=each.describe(), schema=each.schema, table=each.table,
        autocommit=autocommit, lock_timeout_ms=setting("DDL_LOCK_TIMEOUT_MS"), retries=setting("DDL_LOCK_RETRIES"),
        backoff_base_s=setting("DDL_LOCK_BACKOFF_S"))


def _backfill(conn, spec) -> int:
    """Outside the console (`alembic upgrade`): keyset batches over the primary key, each committed
    on its own (the session is in autocommit), over rows still NULL; a rest after each batch in
    proportion to its time. A rollout runs the backfill engine instead, then stamps."""
    first = pg_backfill.first_key(conn, spec)
    after, size, rows = first, int(setting("STAGED_BACKFILL_BATCH_ROWS")), 0
    pause_ratio = float(setting("BACKFILL_REST_RATIO"))
    while after is not None:
        started = time.perf_counter()

        def batch(c, after=after):
            upto = pg_backfill._execute(c, spec.bounds_statement(), {"after": after, "size": size}).fetchone()[0]
            if upto is None:
                return None, 0
            return upto, pg_backfill._execute(c, spec.update_statement(), {"after": after, "upto": upto}).rowcount

        after, changed = lock_retry.run_here(
            conn, batch, what=f"backfill of {spec.schema}.{spec.table}.{spec.column}", schema=spec.schema,
            table=spec.table, autocommit=True, lock_timeout_ms=setting("DDL_LOCK_TIMEOUT_MS"),
            retries=setting("DDL_LOCK_RETRIES"), backoff_base_s=setting("DDL_LOCK_BACKOFF_S"))
        rows += changed
        if after is not None and pause_ratio:
            time.sleep((time.perf_counter() - started) * pause_ratio)
    return rows


def _print(planned: staging.Stage) -> None:
    """Offline: the statements as they run, the autocommit ones outside the revision's transaction."""
    context = op.get_context()
    if planned.backfill is not None:
        spec = planned.backfill
        batch = spec.render().replace("%(after)s", "$1").replace("%(upto)s", "$2")
        with context.autocommit_block():
            op.execute(f"-- in keyset batches over {spec.pk} ($1, $2: each batch's bounds), each its own "
                       f"transaction, until no row is left:\n{batch}")
        return
    for each in planned.ops:
        if ddl.OPERATIONS[each.kind].autocommit:
            with context.autocommit_block():
                op.execute(ddl.render(each).rstrip(";"))
        else:
            op.execute(ddl.render(each).rstrip(";"))
