import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from console import approvals

OFFBOARD_APPROVAL = "tenants.offboard"
# Job kinds: the runners are in tenants/runners.py; services create the jobs by kind.
ONBOARD = "tenants.onboard"
MIGRATE = "tenants.migrate"
HEALTH = "tenants.health"
OFFBOARD = "tenants.offboard"
SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
RESERVED_SLUGS = frozenset(
    {"public", "pg_catalog", "information_schema", "pg_toast", "postgres", "template0", "template1",
     "console", "pgbouncer", "shared", "admin", "root"}
)


def validate_tenant_slug(value: str) -> None:
    """Refused before any SQL: the slug becomes a schema or database name."""
    if not isinstance(value, str) or not SLUG_RE.fullmatch(value):
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

    # Onboarding, in order. Each step is idempotent; `onboarding_step` is the last one completed.
    STEPS = ("validate", "provision", "migrate", "secure", "seed", "verify", "activate")
    STEP_HELP = {
        "validate": "slug, strategy and target checked, before any SQL",
        "provision": "CREATE SCHEMA / CREATE DATABASE / the tenant row",
        "migrate": "Alembic to head, version table with the tenant",
        "secure": "row-level security, policies, application role (shared tenants)",
        "seed": "the tenant row and its root folder",
        "verify": "tables present, version at head, a tenant-scoped query",
        "activate": "state active",
    }

    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=40, unique=True, validators=[validate_tenant_slug])
    target = models.ForeignKey("console.Target", on_delete=models.PROTECT, related_name="tenants")
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.SCHEMA)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    onboarding_step = models.CharField(max_length=16, blank=True)
    failed_step = models.CharField(max_length=16, blank=True)
    error = models.TextField(blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    schema_version = models.CharField(max_length=64, blank=True)
    last_health = models.ForeignKey(
        "TenantHealth", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # Offboarding is asked for and approved through console.approvals (kind OFFBOARD_APPROVAL).
    dump_path = models.CharField(max_length=500, blank=True)
    dump_size_bytes = models.BigIntegerField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug

    def get_absolute_url(self):
        return reverse("tenant-detail", args=[self.pk])

    # Where the tenant lives ---------------------------------------------------------------------

    @property
    def schema_name(self) -> str:
        """The schema holding the tenant's tables (and, except for shared tenants, only theirs)."""
        if self.strategy == self.Strategy.SHARED:
            return settings.TENANT_SHARED_SCHEMA
        if self.strategy == self.Strategy.DATABASE:
            return "public"
        return settings.TENANT_NAME_PREFIX + self.slug

    @property
    def database_name(self) -> str | None:
        """The tenant's own database; None when it lives in the target's database."""
        if self.strategy == self.Strategy.DATABASE:
            return settings.TENANT_NAME_PREFIX + self.slug
        return None

    @property
    def location(self) -> str:
        if self.database_name:
            return f"database {self.database_name}"
        if self.strategy == self.Strategy.SHARED:
            return f"rows in schema {self.schema_name}"
        return f"schema {self.schema_name}"

    # Onboarding --------------------------------------------------------------------------------

    def steps_done(self) -> int:
        return self.STEPS.index(self.onboarding_step) + 1 if self.onboarding_step in self.STEPS else 0

    def next_step(self) -> str | None:
        done = self.steps_done()
        return self.STEPS[done] if done < len(self.STEPS) else None

    def step_rows(self) -> list[dict]:
        """For the page: each step with its status (done, running, failed, waiting)."""
        done = self.steps_done()
        rows = []
        for index, step in enumerate(self.STEPS):
            if index < done:
                status = "done"
            elif self.state == self.State.FAILED and step == self.failed_step:
                status = "failed"
            elif index == done and self.state == self.State.PROVISIONING:
                status = "running"
            else:
                status = "waiting"
            rows.append({"name": step, "status": status, "help": self.STEP_HELP[step]})
        return rows

    @property
    def is_busy(self) -> bool:
        """Something is changing it right now: pages poll while this is true."""
        return self.state in (self.State.PENDING, self.State.PROVISIONING, self.State.OFFBOARDING)

    # Health ------------------------------------------------------------------------------------

    def health(self):
        """The latest measurement (size, rows, version, drift), or None if never measured. None
        once archived as well: what was measured before the drop describes nothing that exists."""
        return None if self.state == self.State.ARCHIVED else self.last_health

    # Offboarding ---------------------------------------------------------------------------------

    def offboarding_approval(self):
        """The latest offboarding request, whatever became of it; None if never asked for."""
        return approvals.latest(OFFBOARD_APPROVAL, self)

    @property
    def offboarding_requested(self) -> bool:
        """An active tenant with a request waiting for an approver."""
        if "_offboarding_requested" not in self.__dict__:
            waiting = approvals.pending(OFFBOARD_APPROVAL, self) if self.state == self.State.ACTIVE else None
            self._offboarding_requested = waiting is not None and not waiting.is_expired()
        return self._offboarding_requested

    @classmethod
    def note_offboarding_requests(cls, tenants: list) -> list:
        """`offboarding_requested` for a whole list in one query."""
        waiting = set(approvals.waiting(OFFBOARD_APPROVAL).values_list("object_id", flat=True))
        for tenant in tenants:
            tenant._offboarding_requested = tenant.state == cls.State.ACTIVE and str(tenant.pk) in waiting
        return tenants


class TenantHealth(models.Model):
    """One measurement of a tenant, taken by a job; pages read the latest, never the target."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="health_snapshots")
    measured_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField(default=True)
    error = models.TextField(blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    # [{"table_name": ..., "rows_estimate": ..., "total_bytes": ...}, ...]
    tables = models.JSONField(default=list, blank=True)
    version = models.CharField(max_length=64, blank=True)
    head = models.CharField(max_length=64, blank=True)
    # Differences between the tenant's schema and the application's metadata, one line each.
    drift = models.JSONField(default=list, blank=True)
    drift_count = models.PositiveIntegerField(default=0)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-measured_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-measured_at"])]

    @property
    def at_head(self) -> bool:
        return bool(self.version) and self.version == self.head

    @property
    def rows_estimate_total(self) -> int:
        return sum(max(0, table.get("rows_estimate") or 0) for table in self.tables)

    @property
    def has_drift(self) -> bool:
        return self.ok and self.drift_count > 0
