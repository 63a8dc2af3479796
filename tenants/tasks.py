"""Thin Celery tasks of the tenants app: the work is a job, run by console.run_job."""

from celery import shared_task

from console import jobs
from console.models import Job
from tenants import runners


@shared_task(name="tenants.refresh_health")
def refresh_health() -> int | None:
    """Beat: measure every active tenant, unless a measurement of all of them is under way."""
    busy = Job.objects.filter(kind=runners.HEALTH, state__in=[Job.State.QUEUED, Job.State.RUNNING])
    if busy.filter(params__tenant_ids__isnull=True).exists():
        return None
    return jobs.create(runners.HEALTH, params={}).pk
