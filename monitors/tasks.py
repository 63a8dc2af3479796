"""Thin Celery tasks for the samplers; the work is in monitors.samplers.

Beat's sampler tasks only dispatch: a round is split into chunks of targets, one
`monitors.sample_chunk` each, which any monitor worker takes."""

import random

from celery import shared_task

from monitors import checks, samplers, series
from monitors.drills import backups, restores  # registers the backup and drill job runners too
from monitors.drills import pitr  # and the physical backup and PITR drill runners
from monitors.models import SamplerHealth


@shared_task(name="monitors.sample_fast")
def sample_fast() -> dict:
    return dispatch_round(SamplerHealth.Sampler.FAST)


@shared_task(name="monitors.sample_statements")
def sample_statements() -> dict:
    return dispatch_round(SamplerHealth.Sampler.STATEMENTS)


@shared_task(name="monitors.sample_checks")
def sample_checks() -> dict:
    return checks.sample_checks_round()


@shared_task(name="monitors.sample_chunk")
def sample_chunk(chunk_id: int) -> dict:
    return samplers.sample_chunk(chunk_id)


def dispatch_round(sampler: str) -> dict:
    sampling_round, chunks = samplers.plan_round(sampler)
    # In random order: when a round overruns its interval, the chunks left over (skipped once the
    # round expires) are not always the same targets.
    for chunk in random.sample(chunks, len(chunks)):
        sample_chunk.apply_async((chunk.pk,), expires=sampling_round.expires_at)
    return {"round": sampling_round.pk, "targets": sampling_round.targets, "chunks": len(chunks)}


@shared_task(name="monitors.cleanup")
def cleanup() -> dict:
    return {**series.cleanup(), "rounds_deleted": samplers.forget_rounds()}


@shared_task(name="monitors.sweep_drills")
def sweep_drills() -> dict:
    return restores.sweep()


@shared_task(name="monitors.schedule_backups")
def schedule_backups() -> dict:
    return {"jobs": backups.schedule_due()}


@shared_task(name="monitors.sweep_pitr_drills")
def sweep_pitr_drills() -> dict:
    return pitr.sweep()


@shared_task(name="monitors.schedule_physical_backups")
def schedule_physical_backups() -> dict:
    return {"jobs": pitr.schedule_due()}
