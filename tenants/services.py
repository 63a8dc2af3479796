"""What every piece of tenant work shares: the step error, the one-line error text, how many
tenants of a target are worked on at once. The work itself is in tenants/onboarding.py,
tenants/health.py and tenants/offboarding.py; the SQL in console/pg/."""

from __future__ import annotations

from django.conf import settings

from console.models import Target
from console.secrets import driver_message
from tenants.models import Tenant


class StepError(Exception):
    """A step cannot go on; the message says why and what to do."""


def error_text(tenant: Tenant, exc: Exception) -> str:
    """What went wrong, one line, never with a password in it."""
    return driver_message(exc, *tenant.target.known_passwords())[:1000]


def parallelism_for(target: Target) -> int:
    """Never more threads than the target's pool can serve without waiting."""
    return max(1, min(settings.TENANT_PARALLELISM, target.pool_size + target.max_overflow))
