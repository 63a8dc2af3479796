"""The self-test job: proves the worker path end to end (queue, claim, heartbeat, checkpoint,
resume, pause, throttle). Each step is recorded in the same transaction as its checkpoint, so a
step that ran twice would show up as a duplicate row."""

import time
from functools import partial

from console.jobs import JobContext, runner
from console.models import SelftestStep

KIND = "console.selftest"


@runner(KIND)
def run_selftest(ctx: JobContext) -> dict:
    steps = int(ctx.params.get("steps", 10))
    step_seconds = float(ctx.params.get("step_seconds", 0.5))
    # Optionally wait once, before this step, as a runner does when its target needs a break.
    throttle_before_step = ctx.params.get("throttle_before_step")
    ctx.set_total(steps, "steps")
    start = int(ctx.checkpoint_data.get("next_step", 0))
    for step in range(start, steps):
        ctx.raise_if_stopped()
        if step == throttle_before_step and not ctx.checkpoint_data.get("throttled"):
            ctx.run_unit(lambda: None, step, {"next_step": step, "throttled": True})
            ctx.throttle("self-test: asked to wait", float(ctx.params.get("throttle_s", 2)))
        time.sleep(step_seconds)
        ctx.run_unit(
            partial(SelftestStep.objects.create, job_id=ctx.job.pk, step=step, worker=ctx.me),
            step + 1, {**ctx.checkpoint_data, "next_step": step + 1},
        )
    return {"steps": steps, "resumed_from": start}
