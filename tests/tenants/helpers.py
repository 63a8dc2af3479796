"""Helpers the tenant tests share."""

import uuid

from console import jobs
from console.models import Job
from tenants import onboarding, runners
from tenants.models import Tenant


def unique_slug(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def onboard(target, *specs) -> list[Tenant]:
    """Create and onboard tenants (slug, name[, strategy]) in this process, as a worker would."""
    tenants = onboarding.create_tenants([onboarding.TenantSpec(*spec) for spec in specs], target)
    job = Job.objects.create(kind=runners.ONBOARD, params={"tenant_ids": [t.pk for t in tenants]})
    jobs.execute(job.pk)
    job = Job.objects.get(pk=job.pk)
    assert job.state == Job.State.SUCCEEDED, job.error
    return [Tenant.objects.get(pk=t.pk) for t in tenants]
