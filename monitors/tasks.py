"""Thin Celery tasks for the samplers; the work is in monitors.samplers."""

from celery import shared_task

from monitors import samplers, series


@shared_task(name="monitors.sample_fast")
def sample_fast() -> dict:
    return samplers.sample_fast_round()


@shared_task(name="monitors.sample_statements")
def sample_statements() -> dict:
    return samplers.sample_statements_round()


@shared_task(name="monitors.cleanup")
def cleanup() -> dict:
    return series.cleanup()
