"""The jobs of staged changes: a backfill, and one approved stage of a change. Ids in; the work
is in migrations_ui.services (the backfill loop) and console/pg/ddl.py (each operation, under
lock_timeout with retries, skipped when the catalog says it is done)."""

from console.jobs import JobContext, runner
from console.pg import ddl
from migrations_ui import changes, rollouts, services
from migrations_ui.models import Backfill, Change, Rollout


@runner(services.KIND)
def run_backfill(ctx: JobContext) -> dict:
    backfill = Backfill.objects.select_related("target").get(pk=ctx.params["backfill_id"])
    return services.run_backfill(ctx, backfill)


@runner(changes.STAGE_JOB)
def run_stage(ctx: JobContext) -> dict:
    change = Change.objects.select_related("target").get(pk=ctx.params["change_id"])
    stage = next(s for s in change.stages() if s.name == ctx.params["stage"])
    changes.use_stage_approval(ctx, change, stage.name)
    if stage.backfill is not None:
        return {"stage": stage.name, **services.run_backfill(ctx, changes.stage_backfill(change, ctx.job))}
    ctx.set_total(len(stage.ops), "statements")
    start = int(ctx.checkpoint_data.get("ops_done", 0))
    outcomes = list(ctx.checkpoint_data.get("outcomes", []))
    for index, op in enumerate(stage.ops[start:], start=start):
        ctx.raise_if_stopped()
        result = ddl.apply(change.target, op, database=change.database or None, log=ctx.log)
        outcomes.append(f"{op.describe()}: {result.outcome}")
        ctx.run_unit(lambda: None, index + 1, {"ops_done": index + 1, "outcomes": outcomes})
    return {"stage": stage.name, "change": change.pk, "outcomes": outcomes}


@runner(rollouts.ROLLOUT_JOB)
def run_rollout(ctx: JobContext) -> dict:
    return rollouts.run(ctx, Rollout.objects.get(pk=ctx.params["rollout_id"]))
