"""Tenant job runners: onboarding, fan-out migration, health, offboarding. Thin: they walk the
tenants, checkpoint, and call tenants.onboarding, .health and .offboarding for the work."""

from __future__ import annotations

import threading
import time

from django.utils import timezone

from console import approvals, jobs
from console.jobs import ClaimLost, JobCancelled, JobContext, runner
from console.models import Target
from tenants import health, migrator, offboarding, onboarding, services
from console import fanout
from tenants.models import HEALTH, MIGRATE, OFFBOARD, OFFBOARD_APPROVAL, ONBOARD, Tenant



class TenantsFailed(Exception):
    pass


class _Progress:
    """Checkpoints from many threads, one at a time, each in the transaction of its own work."""

    def __init__(self, ctx: JobContext, done: int):
        self.ctx = ctx
        self.done = done
        self.lock = threading.Lock()

    def advance(self, record, **tenant_update) -> None:
        """One more unit done: `record(data)` notes it in the checkpoint data. The tenant's update
        and the checkpoint are one transaction, run again if the console DB drops it (run_unit)."""
        tenant_id = tenant_update.pop("tenant_id", None)

        def work():
            if tenant_id is not None:
                Tenant.objects.filter(pk=tenant_id).update(**tenant_update)

        with self.lock:
            data = dict(self.ctx.checkpoint_data)
            record(data)
            self.ctx.run_unit(work, self.done + 1, data)
            self.done += 1


def _failure_summary(failures: dict[str, str], total: int, noun: str) -> str:
    listed = "; ".join(f"{slug}: {error}" for slug, error in sorted(failures.items()))
    return f"{len(failures)} of {total} {noun} failed: {listed}"[:4000]


# Onboarding -------------------------------------------------------------------------------------


@runner(ONBOARD)
def run_onboard(ctx: JobContext) -> dict:
    tenants = list(Tenant.objects.filter(pk__in=ctx.params["tenant_ids"]).select_related("target"))
    pause_s = float(ctx.params.get("pause_s", 0))
    ctx.set_total(len(tenants) * len(Tenant.STEPS), "steps")
    progress = _Progress(ctx, done=sum(tenant.steps_done() for tenant in tenants))
    failures: dict[str, str] = {}

    def onboard(tenant: Tenant) -> None:
        error = _onboard_one(ctx, progress, tenant, pause_s)
        if error:
            failures[tenant.slug] = error

    by_target: dict[int, list[Tenant]] = {}
    for tenant in tenants:
        by_target.setdefault(tenant.target_id, []).append(tenant)
    for group in by_target.values():
        fanout.run_bounded(group, onboard, services.parallelism_for(group[0].target))
    active = list(Tenant.objects.filter(pk__in=[t.pk for t in tenants], state=Tenant.State.ACTIVE).values_list("pk", flat=True))
    if active and ctx.params.get("measure_after"):
        # Their first health measurement, so their pages show size, version and drift at once.
        jobs.create(HEALTH, user=ctx.job.requested_by, params={"tenant_ids": active})
    if failures:
        raise TenantsFailed(_failure_summary(failures, len(tenants), "tenants"))
    return {"tenants": len(tenants), "active": len(active), "head": migrator.head()}


def _onboard_one(ctx: JobContext, progress: _Progress, tenant: Tenant, pause_s: float) -> str | None:
    """Every remaining step of one tenant; returns the error if a step failed."""
    if tenant.state in (Tenant.State.OFFBOARDING, Tenant.State.ARCHIVED):
        ctx.log(f"{tenant.slug}: {tenant.get_state_display().lower()}, not onboarded again", level="warning")
        return None
    Tenant.objects.filter(pk=tenant.pk).update(state=Tenant.State.PROVISIONING, failed_step="", error="")
    tenant.state = Tenant.State.PROVISIONING
    for step in Tenant.STEPS[tenant.steps_done():]:
        try:
            ctx.raise_if_stopped()
            started = time.perf_counter()
            message = onboarding.STEP_FUNCTIONS[step](tenant)
        except (ClaimLost, JobCancelled) as exc:
            if isinstance(exc, JobCancelled):
                Tenant.objects.filter(pk=tenant.pk).update(
                    state=Tenant.State.FAILED, failed_step=step, error=f"onboarding cancelled before {step}"
                )
            raise
        except Exception as exc:  # noqa: BLE001  (the tenant fails, the others go on)
            error = services.error_text(tenant, exc)
            Tenant.objects.filter(pk=tenant.pk).update(state=Tenant.State.FAILED, failed_step=step, error=error)
            ctx.log(f"{tenant.slug}: {step} failed: {error}", level="error")
            return f"{step}: {error}"
        update = {"tenant_id": tenant.pk, "onboarding_step": step}
        if step == "activate":
            update.update(state=Tenant.State.ACTIVE, activated_at=timezone.now())
        progress.advance(lambda data: data.update({str(tenant.pk): step}), **update)
        tenant.onboarding_step = step
        ctx.log(f"{tenant.slug}: {step}: {message} ({(time.perf_counter() - started) * 1000:.0f} ms)")
        if pause_s:
            time.sleep(pause_s)
    return None


# Fan-out migration ------------------------------------------------------------------------------


def migration_units(target: Target) -> list[dict]:
    """What "every tenant on the target to head" means: each schema tenant and each database
    tenant on its own, and the shared schema once for all its tenants (one version table)."""
    units, shared = [], []
    for tenant in Tenant.objects.filter(target=target, state=Tenant.State.ACTIVE).order_by("slug"):
        if tenant.strategy == Tenant.Strategy.SHARED:
            shared.append(tenant)
            continue
        units.append({"key": tenant.slug, "database": tenant.database_name, "schema": tenant.schema_name,
                      "tenant_ids": [tenant.pk]})
    if shared:
        units.append({"key": f"shared:{shared[0].schema_name}", "database": None, "schema": shared[0].schema_name,
                      "tenant_ids": [tenant.pk for tenant in shared]})
    return units


@runner(MIGRATE)
def run_migrate(ctx: JobContext) -> dict:
    target = Target.objects.get(pk=ctx.params["target_id"])
    if "units" not in ctx.checkpoint_data:  # fixed on the first attempt: a retry works on the same list
        ctx.run_unit(lambda: None, 0, {"units": migration_units(target), "done": {}})
    units = ctx.checkpoint_data["units"]
    head = onboarding.release_revision()  # staged revisions past it are rolled out on their own
    ctx.set_total(len(units), "tenants")
    done = ctx.checkpoint_data.get("done", {})
    todo = [unit for unit in units if unit["key"] not in done]
    progress = _Progress(ctx, done=len(units) - len(todo))
    failures: dict[str, str] = {}
    backends: set[int] = set()
    changed: list[str] = []  # the units this attempt actually moved (not those already at head)
    ctx.log(f"{len(todo)} of {len(units)} to bring to {head} on {target.name}, "
            f"{services.parallelism_for(target)} at a time on pooled connections")

    def migrate(unit: dict) -> None:
        ctx.raise_if_stopped()
        try:
            before, after, elapsed_ms, backend = onboarding.migrate_location(target, unit["database"], unit["schema"],
                                                                             revision=head)
        except Exception as exc:  # noqa: BLE001  (listed, the others go on)
            failures[unit["key"]] = services.error_text(Tenant(target=target), exc)
            ctx.log(f"{unit['key']}: failed: {failures[unit['key']]}", level="error")
            return
        backends.add(backend)
        Tenant.objects.filter(pk__in=unit["tenant_ids"]).update(schema_version=after)
        progress.advance(lambda data: data.update(done={**data.get("done", {}), unit["key"]: after}))
        if before != after:
            changed.append(unit["key"])
        change = "already at head" if before == after else f"{before or 'empty'} -> {after}"
        ctx.log(f"{unit['key']}: {change} ({elapsed_ms:.0f} ms)")

    fanout.run_bounded(todo, migrate, services.parallelism_for(target))
    # Pooled connections carry one tenant after another: far fewer server processes than tenants.
    ctx.log(f"{len(changed)} migrated, {len(todo) - len(failures) - len(changed)} already at head, "
            f"on {len(backends)} server connection(s)")
    if failures:
        raise TenantsFailed(_failure_summary(failures, len(units), "tenants"))
    return {"tenants": len(units), "migrated_now": len(changed), "server_connections": len(backends),
            "head": head, "target": target.name}


# Health -----------------------------------------------------------------------------------------


@runner(HEALTH)
def run_health(ctx: JobContext) -> dict:
    tenants = Tenant.objects.select_related("target").exclude(state=Tenant.State.ARCHIVED)
    if ctx.params.get("tenant_ids"):
        tenants = tenants.filter(pk__in=ctx.params["tenant_ids"])
    else:
        tenants = tenants.filter(state=Tenant.State.ACTIVE)
    tenants = list(tenants)
    ctx.set_total(len(tenants), "tenants")
    counted = {"measured": 0, "drifting": 0, "failed": 0}
    lock = threading.Lock()

    def measure(tenant: Tenant) -> None:
        ctx.raise_if_stopped()
        snapshot = health.measure(tenant)
        with lock:
            counted["measured"] += 1
            counted["drifting"] += snapshot.has_drift
            counted["failed"] += not snapshot.ok
            ctx.run_unit(lambda: None, counted["measured"])
        if not snapshot.ok:
            ctx.log(f"{tenant.slug}: could not measure: {snapshot.error}", level="warning")

    by_target: dict[int, list[Tenant]] = {}
    for tenant in tenants:
        by_target.setdefault(tenant.target_id, []).append(tenant)
    for group in by_target.values():
        fanout.run_bounded(group, measure, services.parallelism_for(group[0].target))
    return counted


# Offboarding ------------------------------------------------------------------------------------


@runner(OFFBOARD)
def run_offboard(ctx: JobContext) -> dict:
    tenant = Tenant.objects.select_related("target").get(pk=ctx.params["tenant_id"])
    ctx.set_total(3, "steps")
    data = dict(ctx.checkpoint_data)
    if tenant.state != Tenant.State.OFFBOARDING and not data:
        raise services.StepError(f"{tenant.slug} is {tenant.get_state_display().lower()}, not approved for offboarding")

    if not (tenant.dump_path and data.get("dumped")):
        ctx.log(f"{tenant.slug}: dumping {tenant.location}")
        path = offboarding.dump(tenant, ctx.params.get("dump_dir"))
        size = path.stat().st_size
        ctx.run_unit(lambda: Tenant.objects.filter(pk=tenant.pk).update(dump_path=str(path), dump_size_bytes=size),
                     1, {**data, "dumped": str(path)})
        data = dict(ctx.checkpoint_data)
        ctx.log(f"{tenant.slug}: dump kept at {path} ({size} bytes)")
    ctx.raise_if_stopped()

    if not data.get("approval_used"):
        _use_approval(ctx, tenant, data)
        data = dict(ctx.checkpoint_data)

    if not data.get("dropped"):
        message = offboarding.drop(tenant)
        ctx.run_unit(lambda: None, 2, {**data, "dropped": True})
        data = dict(ctx.checkpoint_data)
        ctx.log(f"{tenant.slug}: {message}")

    ctx.run_unit(lambda: Tenant.objects.filter(pk=tenant.pk).update(state=Tenant.State.ARCHIVED, archived_at=timezone.now()),
                 3, data)
    tenant.refresh_from_db()
    return {"tenant": tenant.slug, "dump": tenant.dump_path, "dump_bytes": tenant.dump_size_bytes}


def _use_approval(ctx: JobContext, tenant: Tenant, data: dict) -> None:
    """Right before the drop: the approval must be of exactly this tenant as it is now. Used once,
    with the checkpoint in its transaction; refused, the tenant is active again (the dump stays)."""
    shown = offboarding.offboarding_shown(tenant, ctx.params.get("dump_dir"))
    try:
        approvals.use(OFFBOARD_APPROVAL, tenant, shown, detail={"job": ctx.job.pk},
                      then=lambda approval: ctx.checkpoint(1, {**data, "approval_used": approval.pk}))
    except approvals.ApprovalRefused as refusal:
        Tenant.objects.filter(pk=tenant.pk, state=Tenant.State.OFFBOARDING).update(state=Tenant.State.ACTIVE)
        ctx.log(f"{tenant.slug}: not dropped: {refusal}", level="error")
        raise
    ctx.log(f"{tenant.slug}: approval checked: what is dropped is what was approved")
