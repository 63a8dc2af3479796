"""Thin Celery tasks: ids in, the work is in services."""

from celery import shared_task

from console import jobs, selftest  # noqa: F401  (registers the self-test runner)
from console import services


@shared_task(name=jobs.RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> str | None:
    return jobs.execute(job_id)


@shared_task(name="console.reap_stale_jobs")
def reap_stale_jobs() -> list[int]:
    return jobs.reap_stale()


@shared_task(name="console.probe_targets")
def probe_targets() -> dict:
    return services.probe_fleet()
