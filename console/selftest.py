"""The self-test job: proves the worker path end to end (queue, claim, heartbeat, checkpoint,
resume). Each step is recorded in the same transaction as its checkpoint, so a step that ran
twice would show up as a duplicate row."""

import time

from django.db import transaction

from console.jobs import JobContext, runner
from console.models import SelftestStep

KIND = "console.selftest"


@runner(KIND)
def run_selftest(ctx: JobContext) -> dict:
    steps = int(ctx.params.get("steps", 10))
    step_seconds = float(ctx.params.get("step_seconds", 0.5))
    ctx.set_total(steps, "steps")
    start = int(ctx.checkpoint_data.get("next_step", 0))
    for step in range(start, steps):
        ctx.raise_if_stopped()
        time.sleep(step_seconds)
        with transaction.atomic():
            SelftestStep.objects.create(job_id=ctx.job.pk, step=step, worker=ctx.me)
            ctx.checkpoint(step + 1, {"next_step": step + 1})
    return {"steps": steps, "resumed_from": start}
