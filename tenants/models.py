import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
RESERVED_SLUGS = frozenset(
    {"public", "pg_catalog", "information_schema", "pg_toast", "postgres", "template0", "template1",
     "console", "pgbouncer", "shared", "admin", "root"}
)


def validate_tenant_slug(value: str) -> None:
    """Refused before any SQL: the slug becomes a schema or database name."""
    if not SLUG_RE.match(value or ""):
        raise ValidationError(
            "A slug is 1-40 characters: lowercase letters, digits and underscores, starting with a letter.",
            code="bad_slug",
        )
    if value in RESERVED_SLUGS or value.startswith("pg_"):
        raise ValidationError(f"'{value}' is reserved; choose another slug.", code="reserved_slug")


class Tenant(models.Model):
    class Strategy(models.TextChoices):
        SCHEMA = "schema", "Schema per tenant"
        DATABASE = "database", "Database per tenant"
        SHARED = "shared", "Shared schema with RLS"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        PROVISIONING = "provisioning", "Provisioning"
        ACTIVE = "active", "Active"
        FAILED = "failed", "Failed"
        OFFBOARDING = "offboarding", "Offboarding"
        ARCHIVED = "archived", "Archived"

    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=40, unique=True, validators=[validate_tenant_slug])
    target = models.ForeignKey("console.Target", on_delete=models.PROTECT, related_name="tenants")
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.SCHEMA)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug
