"""Console-authored changes: the target's catalog for the pickers, the checks a new change goes
through, what a plan page knows of the table, overrides, and the approval of each stage.

Reads of a target are explicit actions of an operator (the form, the plan page's facts): the
monitor login, read only, rolled back, under a short statement timeout; a failure is words on
the page, never a slow page.
"""

from __future__ import annotations

import psycopg
import sqlalchemy.exc
from django.utils import timezone

from console import approvals, engines
from console.models import Target
from console.pg import catalog as pg_catalog
from console.pg import ddl
from console.secrets import driver_message
from migrations_ui import plans
from migrations_ui.models import Backfill, Change

STAGE_APPROVAL = "migrations.stage"
CATALOG_STATEMENT_TIMEOUT_MS = 3000
OVERRIDE_REASON_MIN_CHARS = 10


class ChangeRefused(ValueError):
    """The change (or this step of it) cannot be made as asked; nothing was changed."""


def _read(target: Target, database: str, work):
    try:
        with engines.connect(target, database=database or None, rollback=True,
                             statement_timeout_ms=CATALOG_STATEMENT_TIMEOUT_MS) as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            return work(conn)
    except engines.TargetError as exc:
        raise ChangeRefused(str(exc)) from None
    except (psycopg.Error, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise ChangeRefused(f"{target.name}: {driver_message(exc)}") from None


def tables(target: Target, database: str = "") -> list[pg_catalog.Table]:
    """The tables of the target's database with their columns, for the pickers."""
    return _read(target, database, pg_catalog.tables)


def check_backfill(target: Target, database: str, schema: str, table: str, expression_sql: str,
                   column_type: str = "") -> None:
    """Let PostgreSQL plan the backfill's value over the table (and as the column's type)."""
    def plan(conn):
        try:
            pg_catalog.plan_expression(conn, expression_sql, schema, table, column_type)
        except psycopg.Error as exc:
            raise ChangeRefused(f"PostgreSQL refuses the backfill expression on {schema}.{table}: "
                                f"{driver_message(exc)}") from None

    _read(target, database, plan)


def create(*, user, **fields) -> Change:
    """Record a change whose fields the form checked against the target's catalog; it is checked
    once more by building its stages (ddl.Op validates every name, render() the type)."""
    change = Change(requested_by=user if user and user.is_authenticated else None, **fields)
    try:
        for stage in change.stages():
            for op in stage.ops:
                ddl.render(op)
    except ddl.DdlRefused as exc:
        raise ChangeRefused(str(exc)) from None
    change.save()
    return change


# The plan page's facts --------------------------------------------------------------------------


def facts(change: Change) -> dict:
    """The table's size, estimated rows and rows to backfill; `error` says why they could not be read."""
    def read(conn):
        stats = pg_catalog.table_stats(conn, change.schema, change.table)
        null_fraction = None
        if change.kind == Change.Kind.SET_NOT_NULL:
            null_fraction = pg_catalog.null_fraction(conn, change.schema, change.table, change.column)
        return stats, null_fraction

    try:
        stats, null_fraction = _read(change.target, change.database, read)
    except ChangeRefused as exc:
        return {"error": str(exc)}
    rows = stats.rows if stats else None
    to_backfill = None
    if rows is not None and change.kind == Change.Kind.ADD_NOT_NULL_COLUMN:
        to_backfill = rows
    elif rows is not None and change.kind == Change.Kind.SET_NOT_NULL and null_fraction is not None:
        to_backfill = round(rows * null_fraction)
    return {"stats": stats, "rows_to_backfill": to_backfill, "null_fraction": null_fraction, "error": ""}


def tenant_catalog(tenant, script: str) -> plans.Catalog:
    """What the checks of the application's pending SQL may know of one tenant: its tables' rows
    and which functions the SQL calls are volatile in its database. Empty if it cannot be read."""
    called = sorted(plans.functions_in_script(script))

    def read(conn):
        schema = tenant.schema_name
        return plans.Catalog(rows=pg_catalog.schema_rows(conn, schema), volatile=pg_catalog.volatile_functions(conn, called),
                             column_types=pg_catalog.schema_column_types(conn, schema), read=True)

    try:
        return _read(tenant.target, tenant.database_name or "", read)
    except ChangeRefused:
        return plans.Catalog()


# Overrides and approvals ------------------------------------------------------------------------


def flagged(change: Change) -> list[dict]:
    """The unsafe findings that hold up the change's statements, per stage."""
    stages, _ran = plans.change_plan(change)
    return [{"stage": stage.name, "statement": statement.sql, "finding": finding.describe()}
            for stage in stages for statement, finding in stage.flagged]


def record_override(change: Change, reason: str, user) -> Change:
    reason = (reason or "").strip()
    if len(reason) < OVERRIDE_REASON_MIN_CHARS:
        raise ChangeRefused(f"Write why these statements may run as they are (at least {OVERRIDE_REASON_MIN_CHARS} "
                            "characters): the approver reads it.")
    if not flagged(change):
        raise ChangeRefused("Nothing in this plan is flagged: there is nothing to override.")
    Change.objects.filter(pk=change.pk).update(override_reason=reason, override_by=user, override_at=timezone.now())
    change.refresh_from_db()
    return change


def stage_shown(change: Change, stage_name: str) -> dict:
    """Exactly what the approver of one stage sees, and what its digest binds: the SQL as
    rendered by the code that runs it, where it runs, and the overrides with their reason."""
    stages, _ran = plans.change_plan(change)
    stage = next((s for s in stages if s.name == stage_name), None)
    if stage is None:
        raise ChangeRefused(f"This change has no stage {stage_name!r}; it has {', '.join(s.name for s in stages)}.")
    target = change.target
    overridden = [{"statement": s.sql, "finding": f.describe()} for s, f in stage.flagged]
    return {
        "change": change.pk,
        "kind": change.kind,
        "stage": stage.name,
        "target": {"name": target.name, "host": target.host, "port": target.port},
        "database": change.database or target.dbname,
        "table": f"{change.schema}.{change.table}",
        "statements": stage.sql,
        "overrides": overridden,
        "override_reason": change.override_reason if overridden else "",
        "override_by": change.override_by.get_username() if overridden and change.override_by else "",
    }


def request_stage_approval(change: Change, stage_name: str, user, http_request=None):
    shown = stage_shown(change, stage_name)
    if shown["overrides"] and not change.override_reason:
        raise ChangeRefused(f"Stage {stage_name} has {len(shown['overrides'])} flagged statement(s): override them "
                            "with a written reason first, or change the plan.")
    summary = (f"Stage {stage_name} of {change.get_kind_display().lower()} on {shown['table']} "
               f"({change.subject}) on {shown['target']['name']}/{shown['database']}: "
               f"{len(shown['statements'])} statement(s)"
               + (f", {len(shown['overrides'])} unsafe, overridden: {change.override_reason}" if shown["overrides"] else ""))
    try:
        return approvals.request(STAGE_APPROVAL, change, shown, summary, user, http_request=http_request)
    except approvals.ApprovalRefused as exc:
        raise ChangeRefused(str(exc)) from None


def _shown_now(change: Change) -> dict:
    """What an approver of the change's latest stage request would be shown now."""
    latest = approvals.for_object(STAGE_APPROVAL, change).first()
    stage_name = latest.shown.get("stage") if latest else None
    try:
        return stage_shown(change, stage_name) if stage_name else {}
    except ChangeRefused:
        return {}


def stage_approvals(change: Change):
    return approvals.for_object(STAGE_APPROVAL, change).select_related("requested_by", "decided_by")


# Running an approved stage ---------------------------------------------------------------------

STAGE_JOB = "migrations.stage"


def start_stage(approval) -> None:
    """Once a stage is approved, in the transaction of the decision: a job runs it."""
    from console import jobs

    change = Change.objects.select_related("target").get(pk=approval.object_id)
    jobs.create(STAGE_JOB, user=approval.decided_by, target=change.target, unit="statements",
                params={"change_id": change.pk, "stage": approval.shown["stage"], "approval": approval.pk})


def use_stage_approval(ctx, change: Change, stage_name: str) -> None:
    """Right before the stage's first statement: its approval must be of exactly the SQL about to
    run (a changed plan voids it). A resumed attempt finds it used by its own first attempt."""
    approval = approvals.for_object(STAGE_APPROVAL, change).filter(pk=ctx.params["approval"]).first()
    if approval is not None and approval.decision == approval.Decision.USED:
        return
    approvals.use(STAGE_APPROVAL, change, stage_shown(change, stage_name), detail={"job": ctx.job.pk})


def stage_backfill(change: Change, job) -> Backfill:
    """The backfill stage's Backfill row (its live progress), made once for the stage's job."""
    from migrations_ui import services

    spec = change.backfill_spec()
    backfill, _made = Backfill.objects.get_or_create(job=job, defaults={
        "target": change.target, "database": change.database, "requested_by": job.requested_by,
        **services.fields_of(spec),
    })
    return backfill


approvals.register(STAGE_APPROVAL, model=Change, shown=_shown_now, on_approved=start_stage)

