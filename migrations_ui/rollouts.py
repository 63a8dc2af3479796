"""Rolling a stage of the application's staged changes out over the tenants.

A stage is one staged Alembic revision (tenants/app_schema/staged.py). A rollout of it is
requested for the active tenants as they are now (`resolve`): the canary (one tenant, chosen or
the smallest by its last measured size) goes first, alone, then waves of the given sizes, each
a few tenants at a time (console/fanout.run_bounded). The approver is shown the stage's exact
SQL (rendered offline by the migrator, as it runs) and the tenant set and waves; the approval
binds to their digest, and the job uses it right before the first tenant: a revision edited
since, or a tenant set that is not the same any more, voids it.

Each tenant's stage is one run of the migrator to the stage's revision, in a session of its own:
one transaction (the autocommit parts of VALIDATE and CREATE INDEX CONCURRENTLY apart), and its
alembic_version says where it is, so `alembic current` agrees with the grid. A backfill stage is
the exception: the console runs it with the backfill engine (migrations_ui/services.py, the loop
of standalone backfills and console-authored changes: batch size adapted to a target time, the
health indicators checked between batches, the job throttled while one says Stop, a checkpoint
after every batch, so a killed worker resumes mid-tenant, each row set once), one Backfill row
per tenant (its rows done/total and rate on the grid), then stamps the revision in the tenant's
version table; `alembic upgrade` outside the console runs the revision's own simple loop.
The first failure stops the rollout: tenants not yet started are left untouched, those in flight
finish. Pause, resume and abort are the job's (console/jobs.py); a paused or aborted rollout
stops handing out tenants, so each is either fully at the stage or untouched (a backfill stage
also stops between two batches of a tenant, which stays at the stage before until it is done). Retrying a failed rollout goes on
from its checkpoint (the tenants done stay done).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from console import approvals, audit, engines, fanout, jobs
from console.jobs import ClaimLost, JobCancelled, JobContext
from console.models import Approval, AuditEvent, Job
from console.pg import tenancy
from migrations_ui import services
from migrations_ui.models import Backfill, Rollout, RolloutTenant
from tenants import databases, migrator, onboarding
from tenants.models import Tenant
from tenants.runners import migration_units
from tenants.services import error_text

ROLLOUT_APPROVAL = "migrations.rollout"
ROLLOUT_JOB = "migrations.rollout"
SQL_SCHEMA = "tenant"  # the schema the approver's SQL is rendered for: each tenant's own in the run
DEFAULT_WAVES = (2, 10)
MAX_PARALLELISM = 16


class RolloutRefused(ValueError):
    """The rollout cannot be requested as asked; nothing was changed."""


class RolloutStopped(Exception):
    """A tenant failed: no further tenant is started."""


# What there is to roll out ----------------------------------------------------------------------


@dataclass(frozen=True)
class StagedChange:
    name: str
    revisions: list  # migrator.StagedRevision, in order

    @property
    def description(self) -> str:
        return self.revisions[0].change.describe()

    def revision(self, stage: str):
        return next((r for r in self.revisions if r.stage == stage), None)


def staged_changes() -> list[StagedChange]:
    found: dict[str, list] = {}
    for staged in migrator.staged_revisions():
        found.setdefault(staged.change_name, []).append(staged)
    return [StagedChange(name, revisions) for name, revisions in found.items()]


def staged_change(name: str) -> StagedChange | None:
    return next((c for c in staged_changes() if c.name == name), None)


def rolled_out_revisions() -> set[str]:
    """Staged revisions a rollout took every tenant of its set to (onboarding goes up to them)."""
    return set(Rollout.objects.filter(job__state=Job.State.SUCCEEDED).values_list("revision", flat=True))


def stage_sql(staged) -> str:
    """The stage's SQL as the migrator runs it, for a schema named SQL_SCHEMA."""
    return migrator.pending_sql(SQL_SCHEMA, staged.down_revision, staged.revision)


# The tenants ------------------------------------------------------------------------------------


def resolve() -> list[dict]:
    """The units a rollout works on now: every active schema and database tenant on its own, a
    shared schema once (console/tenants' own migration units), with the version the console
    last recorded and the last measured size (for the canary)."""
    from console.models import Target

    tenants = Tenant.objects.filter(state=Tenant.State.ACTIVE).select_related("last_health")
    known = {t.pk: t for t in tenants}
    units = []
    for target in Target.objects.filter(pk__in={t.target_id for t in tenants}).order_by("name"):
        for unit in migration_units(target):
            members = [known[pk] for pk in unit["tenant_ids"] if pk in known]
            sizes = [m.last_health.size_bytes for m in members if m.last_health and m.last_health.size_bytes is not None]
            units.append({**unit, "key": f"{target.name}/{unit['key']}", "target_id": target.pk,
                          "version": min((m.schema_version for m in members), default=""),
                          "size_bytes": sum(sizes) if sizes else None})
    return units


def plan_waves(keys: list[str], canary: str, wave_sizes: list[int]) -> list[list[str]]:
    """[[canary], wave 1, wave 2, ...]: the waves take the sizes given, the last size repeating."""
    rest = [k for k in keys if k != canary]
    waves, sizes = [[canary]], list(wave_sizes) or [len(rest) or 1]
    while rest:
        size = sizes.pop(0) if len(sizes) > 1 else sizes[0]
        waves.append(rest[:size])
        rest = rest[size:]
    return waves


def _smallest(units: list[dict]) -> str:
    return min(units, key=lambda u: (u["size_bytes"] is None, u["size_bytes"] or 0, u["key"]))["key"]


def request(change: StagedChange, stage: str, user, *, canary: str = "", wave_sizes=None, parallelism: int = 4,
            http_request=None) -> Rollout:
    """Record a rollout of one stage over the tenants as they are now and ask for its approval."""
    staged = change.revision(stage)
    if staged is None:
        raise RolloutRefused(f"{change.name} has no stage {stage!r}; it has {', '.join(r.stage for r in change.revisions)}")
    wave_sizes = [int(s) for s in (wave_sizes or DEFAULT_WAVES)]
    if any(s < 1 for s in wave_sizes) or not 1 <= parallelism <= MAX_PARALLELISM:
        raise RolloutRefused(f"Wave sizes are whole numbers of at least 1; parallelism 1 to {MAX_PARALLELISM}.")
    units = resolve()
    if not units:
        raise RolloutRefused("No active tenant to roll out to.")
    behind = [u["key"] for u in units if staged.down_revision and not migrator.reached(u["version"], staged.down_revision)]
    if behind:
        raise RolloutRefused(f"{len(behind)} tenant(s) are not at {staged.down_revision} yet ({', '.join(behind[:5])}"
                             f"{', ...' if len(behind) > 5 else ''}): roll out the earlier stage (or migrate them) first.")
    keys = [u["key"] for u in units]
    if canary and canary not in keys:
        raise RolloutRefused(f"No active tenant {canary!r} to be the canary.")
    chosen = canary or _smallest(units)
    try:
        with jobs.exclusively(f"rollout:{change.name}:{stage}"):  # one open rollout per stage, two requests at once too
            open_one = open_rollout(change.name, stage)
            if open_one is not None:
                raise RolloutRefused(f"A rollout of {stage} already {open_one[1]} (#{open_one[0].pk}): one at a time. "
                                     "Wait for it, or withdraw or abort it first.")
            rollout = Rollout.objects.create(
                change_name=change.name, stage=stage, revision=staged.revision, down_revision=staged.down_revision,
                canary=canary, wave_sizes=wave_sizes, parallelism=parallelism, units=units,
                waves=plan_waves(keys, chosen, wave_sizes), requested_by=user if user and user.is_authenticated else None)
            summary = (f"Stage {stage} ({staged.revision}) of {change.description}: over {len(units)} tenant(s), "
                       f"canary {chosen}, then {len(rollout.waves) - 1} wave(s), {parallelism} at a time")
            approvals.request(ROLLOUT_APPROVAL, rollout, shown_for(rollout), summary, user, http_request=http_request)
    except approvals.ApprovalRefused as exc:
        raise RolloutRefused(str(exc)) from None
    return rollout


def open_rollout(change_name: str, stage: str) -> tuple[Rollout, str] | None:
    """A rollout of the stage that waits for its approval, or whose job has not finished."""
    for rollout in Rollout.objects.filter(change_name=change_name, stage=stage).select_related("job"):
        if rollout.job is not None and not rollout.job.is_finished:
            return rollout, f"runs ({rollout.job.get_state_display().lower()})"
        if rollout.job is None:
            approval = approvals.latest(ROLLOUT_APPROVAL, rollout)
            if approval is not None and approval.decision in (approval.Decision.PENDING, approval.Decision.APPROVED) \
                    and not approval.is_expired():
                return rollout, "waits for its approval"
    return None


def shown_for(rollout: Rollout, units: list[dict] | None = None) -> dict:
    """What the approver sees and the approval binds to: the SQL exactly as it runs, its digest,
    the tenants and the waves. `units`: the tenant set as resolved now (default: as requested)."""
    staged = next((r for r in migrator.staged_revisions() if r.revision == rollout.revision), None)
    sql = stage_sql(staged) if staged is not None else "(the revision is gone)"
    keys = sorted(u["key"] for u in (units if units is not None else rollout.units))
    return {
        "rollout": rollout.pk, "change": rollout.change_name, "stage": rollout.stage,
        "revision": rollout.revision, "from": rollout.down_revision,
        "sql": [line for line in sql.splitlines() if line.strip()],  # a line each on the approval page
        "sql_sha256": hashlib.sha256(sql.encode()).hexdigest(),
        "tenants": keys, "waves": rollout.waves, "parallelism": rollout.parallelism,
    }


def shown_now(rollout: Rollout) -> dict:
    return shown_for(rollout, resolve())


def start(approval) -> None:
    """Once approved, in the transaction of the decision: the rollout's job."""
    rollout = Rollout.objects.get(pk=approval.object_id)
    rollout.job = jobs.create(ROLLOUT_JOB, user=approval.decided_by, unit="tenants", total=len(rollout.units),
                              params={"rollout_id": rollout.pk, "approval": approval.pk})
    rollout.save(update_fields=["job"])


approvals.register(ROLLOUT_APPROVAL, model=Rollout, shown=shown_now, on_approved=start)


# The run ----------------------------------------------------------------------------------------


def _use_approval(ctx: JobContext, rollout: Rollout) -> None:
    """Right before the first tenant of every attempt: what is about to run must be exactly what
    was approved (this SQL, this tenant set, these waves). The first attempt uses the approval; a
    resumed or retried one compares with the approval it used, so an edited revision or another
    tenant set since is refused before any further tenant."""
    used = ctx.checkpoint_data.get("approved")
    if not used:
        approvals.use(ROLLOUT_APPROVAL, rollout, shown_now(rollout), detail={"job": ctx.job.pk},
                      then=lambda approval: ctx.checkpoint(0, {"approved": approval.pk, "done": {}}))
        return
    approval = Approval.objects.get(pk=used)
    digest_now = approvals.digest_of(shown_now(rollout))
    if digest_now != approval.digest:
        audit.record(None, "approval.use", approval, outcome=AuditEvent.Outcome.FAILED, detail={
            "kind": ROLLOUT_APPROVAL, "job": ctx.job.pk, "digest": approval.digest, "digest_now": digest_now,
            "reason": "resumed rollout: not what was approved"})
        raise RolloutRefused(
            f"What is about to be done is not what was approved in #{approval.pk} (the stage's SQL or the tenant set "
            f"changed since): no further tenant is started. {len(ctx.checkpoint_data.get('done', {}))} tenant(s) "
            "were done under that approval; request a new rollout of this stage for the rest.")


def _cells(rollout: Rollout) -> dict[str, RolloutTenant]:
    existing = {c.key: c for c in rollout.cells.all()}
    missing = [RolloutTenant(rollout=rollout, key=u["key"], tenant_id=(u["tenant_ids"] or [None])[0], wave=wave)
               for wave, keys in enumerate(rollout.waves) for u in rollout.units if u["key"] in keys
               and u["key"] not in existing]
    RolloutTenant.objects.bulk_create(missing, ignore_conflicts=True)
    return {c.key: c for c in rollout.cells.all()}


def run(ctx: JobContext, rollout: Rollout) -> dict:
    _use_approval(ctx, rollout)
    cells = _cells(rollout)
    units = {u["key"]: u for u in rollout.units}
    targets = {t.pk: t for t in _targets(rollout)}
    lock = threading.Lock()
    ctx.set_total(len(units), "tenants")
    failed: list[str] = []

    backfilled = _backfilled_change(rollout)

    def one(key: str) -> None:
        ctx.raise_if_stopped()  # a pause or an abort starts no further tenant
        unit, cell = units[key], cells[key]
        RolloutTenant.objects.filter(pk=cell.pk).update(state=RolloutTenant.State.RUNNING, started_at=timezone.now(),
                                                        error="")
        started = time.perf_counter()
        try:
            if backfilled is not None:
                before, after = _backfill_tenant(_TenantContext(ctx, key, lock), rollout, backfilled,
                                                 targets[unit["target_id"]], unit, cell)
            else:
                before, after, _ms, _backend = onboarding.migrate_location(
                    targets[unit["target_id"]], unit["database"], unit["schema"], revision=rollout.revision,
                    expected_from=rollout.down_revision or None)
        except (ClaimLost, JobCancelled):  # throttled, paused, aborted: the tenant goes on from its checkpoint
            RolloutTenant.objects.filter(pk=cell.pk).update(state=RolloutTenant.State.PENDING)
            raise
        except Exception as exc:  # noqa: BLE001  (recorded on its cell; the rollout stops)
            message = error_text(Tenant(target=targets[unit["target_id"]]), exc)
            RolloutTenant.objects.filter(pk=cell.pk).update(
                state=RolloutTenant.State.FAILED, duration_ms=(time.perf_counter() - started) * 1000, error=message)
            ctx.log(f"{key}: {rollout.stage} failed: {message}", level="error")
            failed.append(key)
            raise RolloutStopped(key) from None
        state = RolloutTenant.State.ALREADY if before == after else RolloutTenant.State.DONE
        elapsed_ms = (time.perf_counter() - started) * 1000

        def record():
            RolloutTenant.objects.filter(pk=cell.pk).update(state=state, version_before=before, version_after=after,
                                                            duration_ms=elapsed_ms)
            Tenant.objects.filter(pk__in=unit["tenant_ids"]).update(schema_version=after)

        with lock:
            done = {**ctx.checkpoint_data.get("done", {}), key: after}
            backfills = {k: v for k, v in ctx.checkpoint_data.get("backfills", {}).items() if k != key}
            ctx.run_unit(record, len(done), {**ctx.checkpoint_data, "done": done, "backfills": backfills})
        ctx.log(f"{key}: {'already at ' + after if before == after else f'{before} -> {after}'} ({elapsed_ms:.0f} ms)")

    for wave, keys in enumerate(rollout.waves):
        todo = [k for k in keys if k not in ctx.checkpoint_data.get("done", {})]
        if not todo:
            continue
        ctx.raise_if_stopped()
        ctx.log(f"{'canary' if wave == 0 else f'wave {wave}'}: {len(todo)} tenant(s)"
                + (f", {min(rollout.parallelism, len(todo))} at a time" if len(todo) > 1 else f" ({todo[0]})"))
        try:
            fanout.run_bounded(todo, one, 1 if wave == 0 else rollout.parallelism)
        except RolloutStopped:
            left = len(units) - len(ctx.checkpoint_data.get("done", {})) - len(failed)
            where = "the canary" if wave == 0 else f"wave {wave}"
            raise RolloutStopped(
                f"{', '.join(failed)} failed in {where}: the rollout stopped there, {left} tenant(s) left untouched. "
                "Read the error on its cell, fix the cause, then retry the job: it goes on from there.") from None
    done = ctx.checkpoint_data.get("done", {})
    return {"revision": rollout.revision, "stage": rollout.stage, "tenants": len(done),
            "waves": len(rollout.waves)}


def _backfilled_change(rollout: Rollout):
    """The staged change whose backfill stage this rollout is (None for the other stages)."""
    staged = next((r for r in migrator.staged_revisions() if r.revision == rollout.revision), None)
    if staged is None or staged.change.stage("public", staged.stage).backfill is None:
        return None
    return staged.change


class _TenantContext:
    """The backfill engine's job context for one tenant of a rollout: the engine's checkpoint
    (where its batches got to) is kept in the rollout job's, under `backfills` by tenant key, and
    written with the rollout's own count of tenants done; throttle, pause, abort and the log are
    the rollout job's (a throttle says which tenant)."""

    def __init__(self, ctx: JobContext, key: str, lock: threading.Lock):
        self._ctx, self._key, self._lock = ctx, key, lock
        self.job = ctx.job

    @property
    def checkpoint_data(self) -> dict:
        return self._ctx.checkpoint_data.get("backfills", {}).get(self._key, {})

    def set_total(self, total: int, unit: str | None = None) -> None:
        """The rollout counts tenants; this tenant's rows are its Backfill row's."""

    def run_unit(self, work, done: int, data: dict | None = None) -> None:
        with self._lock:
            backfills = {**self._ctx.checkpoint_data.get("backfills", {}), self._key: dict(data or {})}
            self._ctx.run_unit(work, self._ctx.job.progress_done, {**self._ctx.checkpoint_data, "backfills": backfills})

    def raise_if_stopped(self) -> None:
        self._ctx.raise_if_stopped()

    def throttle(self, reason: str, retry_after_s: float) -> None:
        self._ctx.throttle(f"{self._key}: {reason}", retry_after_s)

    def log(self, message: str, level: str = "info") -> None:
        self._ctx.log(f"{self._key}: {message}", level)


def _backfill_tenant(ctx: _TenantContext, rollout: Rollout, change, target, unit: dict,
                     cell: RolloutTenant) -> tuple[str, str]:
    """The backfill stage on one tenant: the backfill engine's batches over its table (from its
    checkpoint), then the stage's revision stamped in its version table. (version before, after)."""
    schema = unit["schema"]
    with engines.connect(target, credential="change", database=unit["database"], rollback=True) as conn:
        before = migrator.current_version(conn, schema)
    if not migrator.to_run(before, schema, rollout.revision, rollout.down_revision or None):
        return before, before
    try:
        services.run_backfill(ctx, _tenant_backfill(rollout, change, target, unit, cell))
        with databases.session(target, unit["database"],
                               statement_timeout_ms=settings.TENANT_MIGRATE_STATEMENT_TIMEOUT_MS) as conn:
            tenancy.lock_session(conn, f"{schema}:migrate")
            _before, after = migrator.stamp(conn, schema, rollout.revision, rollout.down_revision)
    finally:
        if unit["database"]:
            # A database tenant's own pools, the monitor login's of the health checks among them: none
            # stays open in its database, done, throttled or failed (offboarding's DROP DATABASE ...
            # FORCE, as the change login, may not end another login's sessions).
            databases.forget(target.pk, unit["database"])
    return before, after


def _tenant_backfill(rollout: Rollout, change, target, unit: dict, cell: RolloutTenant) -> Backfill:
    """This tenant's Backfill row (its progress and its key on the target), made once per cell."""
    if cell.backfill_id:
        return Backfill.objects.select_related("target").get(pk=cell.backfill_id)
    spec = change.backfill_spec(unit["schema"])
    with transaction.atomic():
        backfill = Backfill.objects.create(target=target, database=unit["database"] or "",
                                           requested_by=rollout.job.requested_by, **services.fields_of(spec))
        RolloutTenant.objects.filter(pk=cell.pk).update(backfill=backfill)
    cell.backfill_id = backfill.pk
    return backfill


def _targets(rollout: Rollout):
    from console.models import Target

    return Target.objects.filter(pk__in={u["target_id"] for u in rollout.units})


# "Migrate all to head": what it does, before it is confirmed -----------------------------------


def migrate_all_plan(target) -> dict:
    """What the tenants.migrate job would do on `target` now: each unit from the version the
    console last recorded to the release revision (staged revisions past it are left to their
    rollouts), and the SQL of the revisions it would run."""
    release = onboarding.release_revision()
    versions = dict(Tenant.objects.filter(target=target).values_list("pk", "schema_version"))
    units = []
    for unit in migration_units(target):
        version = min((versions.get(pk) or "" for pk in unit["tenant_ids"]), default="")
        units.append({"key": unit["key"], "version": version, "moves": not migrator.reached(version, release)})
    moving = [u for u in units if u["moves"]]
    known = [r.revision for r in migrator.chain()]
    lowest = min((u["version"] for u in moving), key=lambda v: known.index(v) if v in known else -1, default=None)
    sql = migrator.pending_sql(SQL_SCHEMA, lowest, release) if moving else ""
    pending = [r for r in migrator.staged_revisions() if not migrator.reached(release, r.revision)]
    return {"target": target, "release": release, "head": migrator.head(), "units": units, "moving": moving,
            "sql": sql, "staged_pending": pending}


# The grid ---------------------------------------------------------------------------------------


CELL_CSS = {"done": "state-succeeded", "already": "state-active", "failed": "state-failed", "running": "state-running",
            "pending": "state-pending"}


@dataclass
class Cell:
    state: str
    label: str
    duration_ms: float | None = None
    error: str = ""
    rollout: Rollout | None = None
    wave: int | None = None  # 0: the canary
    backfill: Backfill | None = None  # a backfill stage's run on this tenant

    @property
    def rows(self) -> str:
        """A backfill stage's rows done/total (and rows per second while it runs), '' otherwise."""
        backfill = self.backfill
        if backfill is None:
            return ""
        text = f"{backfill.rows_done:,}/{backfill.rows_total:,} rows" if backfill.rows_total is not None \
            else f"{backfill.rows_done:,} rows"
        rates = backfill.rates() if self.state == RolloutTenant.State.RUNNING else []
        return f"{text}, {rates[-1][1]:,.0f} rows/s" if rates else text

    @property
    def wave_label(self) -> str:
        return "" if self.wave is None else ("canary" if self.wave == 0 else f"wave {self.wave}")

    @property
    def css(self) -> str:
        return CELL_CSS.get(self.state, "state-pending")


def grid(change: StagedChange) -> tuple[list[dict], list[dict]]:
    """(stages, rows): for each stage its latest rollout; for each tenant unit now, a cell per
    stage: that rollout's cell if it had one, else where the console's record of its version says."""
    rollouts = list(Rollout.objects.filter(change_name=change.name).select_related("job", "requested_by"))
    stages = []
    for staged in change.revisions:
        latest = next((r for r in rollouts if r.revision == staged.revision), None)
        stages.append({"staged": staged, "rollout": latest,
                       "approval": approvals.latest(ROLLOUT_APPROVAL, latest) if latest else None})
    cells: dict[tuple[str, str], RolloutTenant] = {}
    for cell in RolloutTenant.objects.filter(rollout__in=[s["rollout"] for s in stages if s["rollout"]]) \
            .select_related("backfill"):
        cells[(cell.rollout_id, cell.key)] = cell
    rows = []
    for unit in resolve():
        row = {"key": unit["key"], "version": unit["version"], "size_bytes": unit["size_bytes"], "cells": []}
        for stage in stages:
            rollout, staged = stage["rollout"], stage["staged"]
            cell = cells.get((rollout.pk, unit["key"])) if rollout else None
            if cell is not None and cell.state != RolloutTenant.State.PENDING:
                row["cells"].append(Cell(cell.state, cell.get_state_display(), cell.duration_ms, cell.error, rollout,
                                         cell.wave, cell.backfill))
            elif migrator.reached(unit["version"], staged.revision):
                row["cells"].append(Cell("already", "At the stage"))
            else:
                untouched = rollout is not None and cell is not None and rollout.job and rollout.job.is_finished
                begun = cell is not None and cell.backfill is not None and rollout.is_live  # throttled or paused mid-tenant
                row["cells"].append(Cell("pending", "Untouched" if untouched else "Waiting" if begun else "Pending",
                                         backfill=cell.backfill if cell is not None else None))
        rows.append(row)
    return stages, rows


def next_stage(stages: list[dict], rows: list[dict]):
    """The first stage some tenant has not had, unless a rollout of it waits or runs: what to
    request next (None: nothing, or wait)."""
    for stage in stages:
        if rows and all(migrator.reached(row["version"], stage["staged"].revision) for row in rows):
            continue
        rollout, approval = stage["rollout"], stage["approval"]
        waiting = approval is not None and approval.decision in (approval.Decision.PENDING, approval.Decision.APPROVED)
        if rollout is not None and (rollout.is_live or (rollout.job is None and waiting)):
            return None
        return stage
    return None


def tenants_at(change: StagedChange) -> list[tuple[str, int]]:
    """(stage, how many active tenants the console records at it or past it), for the list."""
    versions = [u["version"] for u in resolve()]
    return [(r.stage, sum(migrator.reached(v, r.revision) for v in versions)) for r in change.revisions]


