"""Backup policies, backups and drill runs (imported by monitors.models, so the app owns them)."""

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


def cron_schedule(expression: str, nowfun=None):
    """Celery's crontab for a five-field cron expression (crontab's own order differs)."""
    from celery.schedules import crontab

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("a cron expression has five fields: minute hour day-of-month month day-of-week")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                   day_of_week=day_of_week, nowfun=nowfun)


def validate_cron(expression: str) -> None:
    if not expression:
        return
    from celery.schedules import ParseException

    try:
        cron_schedule(expression)
    except (ValueError, TypeError, ParseException) as exc:
        raise ValidationError(f"not a cron expression: {exc}") from exc


class LivePolicies(models.QuerySet):
    def live(self):
        """Policies of whole databases, and of tenants not offboarded: an archived tenant's policy
        is neither scheduled nor alerted on (its schema or database is gone)."""
        from tenants.models import Tenant

        gone = (Tenant.State.OFFBOARDING, Tenant.State.ARCHIVED)
        return self.filter(models.Q(tenant__isnull=True) | ~models.Q(tenant__state__in=gone))


class BackupPolicy(models.Model):
    """When to back up one database of a target, or one tenant (its database, schema or RLS rows),
    how many backups to keep, and where."""

    objects = LivePolicies.as_manager()

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="backup_policies")
    database = models.CharField(max_length=63)
    tenant = models.ForeignKey("tenants.Tenant", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="backup_policies")
    every_hours = models.PositiveIntegerField(null=True, blank=True)
    cron = models.CharField(max_length=100, blank=True, validators=[validate_cron])
    keep_count = models.PositiveIntegerField(null=True, blank=True)
    keep_days = models.PositiveIntegerField(null=True, blank=True)
    destination = models.CharField(max_length=500, blank=True)  # empty: BACKUP_DIR
    scratch = models.ForeignKey("console.Target", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Read-only statements a drill runs on the restored copy; each must return at least one row.
    smoke_queries = models.JSONField(default=list, blank=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)  # when beat last started its backup
    # Alerts: no backup younger than backup_max_age_h, no verified (drilled) one younger than drill_max_age_h.
    backup_max_age_h = models.PositiveIntegerField(default=26)
    drill_max_age_h = models.PositiveIntegerField(default=7 * 24)
    # A lower retention waiting for an approver: {"keep_count": n | None, "keep_days": n | None}.
    pending_retention = models.JSONField(null=True, blank=True)

    def is_due(self, now) -> bool:
        """Every `every_hours` hours, or whenever `cron` says (Celery's crontab, in UTC)."""
        if self.every_hours:
            return self.scheduled_at is None or now - self.scheduled_at >= timedelta(hours=self.every_hours)
        if self.cron:
            if self.scheduled_at is None:
                return True
            return cron_schedule(self.cron, nowfun=lambda: now).is_due(self.scheduled_at).is_due
        return False

    def next_run_at(self, now=None):
        """When beat starts its next backup (None: only by hand)."""
        now = now or timezone.now()
        if self.every_hours:
            return max(now, self.scheduled_at + timedelta(hours=self.every_hours)) if self.scheduled_at else now
        if self.cron:
            if self.scheduled_at is None:
                return now
            return now + cron_schedule(self.cron, nowfun=lambda: now).remaining_estimate(self.scheduled_at)
        return None

    def schedule_text(self) -> str:
        if self.every_hours:
            return f"every {self.every_hours} h"
        return f"cron {self.cron} (UTC)" if self.cron else "by hand only"

    def retention_text(self) -> str:
        return retention_text(self.keep_count, self.keep_days)

    def pending_retention_text(self) -> str:
        return retention_text(**self.pending_retention) if self.pending_retention else ""

    def lowers_retention(self, keep_count, keep_days) -> bool:
        """Whether retention would keep fewer backups. Retention keeps the union of the last
        keep_count and the last keep_days days; with neither set it keeps everything."""
        if keep_count is None and keep_days is None:
            return False
        if self.keep_count is None and self.keep_days is None:
            return True
        return (keep_count or 0) < (self.keep_count or 0) or (keep_days or 0) < (self.keep_days or 0)

    def backups_of(self):
        """Its tenant's backups, or its database's whole-database ones; those taken by hand or
        before the policy included."""
        if self.tenant_id:
            return Backup.objects.filter(tenant_id=self.tenant_id)
        return Backup.objects.filter(target_id=self.target_id, database=self.database, schema="", tenant__isnull=True)

    @classmethod
    def of(cls, target, database: str, tenant=None) -> "BackupPolicy | None":
        if tenant is not None:
            return cls.objects.filter(tenant=tenant).first()
        return cls.objects.filter(target=target, database=database, tenant__isnull=True).first()

    def drill_runs(self):
        return DrillRun.objects.filter(backup__in=self.backups_of())

    def status(self, now=None) -> "PolicyStatus":
        now = now or timezone.now()
        backups = self.backups_of()
        last_backup = backups.filter(state=Backup.State.DONE).order_by("-snapshot_at", "-id").first()
        last_verified = backups.filter(verified_at__isnull=False).order_by("-snapshot_at", "-id").first()
        last_drill = self.drill_runs().filter(finished_at__isnull=False).order_by("-finished_at", "-id").first()
        overdue = []
        if last_backup is None or now - last_backup.snapshot_at > timedelta(hours=self.backup_max_age_h):
            overdue.append(f"no backup in the last {self.backup_max_age_h} h")
        if last_verified is None or now - last_verified.snapshot_at > timedelta(hours=self.drill_max_age_h):
            overdue.append(f"no verified backup in the last {_hours_text(self.drill_max_age_h)}")
        return PolicyStatus(last_backup, last_verified, last_drill, self.next_run_at(now), overdue)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["target", "database"], condition=models.Q(tenant__isnull=True),
                                    name="one_backup_policy_per_database"),
            models.UniqueConstraint(fields=["tenant"], name="one_backup_policy_per_tenant"),
        ]

    def __str__(self):
        return f"{self.target.name}/{self.database}" + (f" tenant {self.tenant.slug}" if self.tenant_id else "")

    def get_absolute_url(self):
        from django.urls import reverse

        return reverse("drill-policy", args=[self.pk])

    def directory(self) -> Path:
        return Path(self.destination or settings.BACKUP_DIR)


def retention_text(keep_count: int | None, keep_days: int | None) -> str:
    kept = ([f"the last {keep_count}"] if keep_count is not None else []) + (
        [f"those of the last {keep_days} days"] if keep_days is not None else [])
    return "keep " + " and ".join(kept) if kept else "keep all"


def _hours_text(hours: int) -> str:
    return f"{hours // 24} days" if hours % 24 == 0 and hours >= 48 else f"{hours} h"


@dataclass
class PolicyStatus:
    last_backup: "Backup | None"
    last_verified: "Backup | None"
    last_drill: "DrillRun | None"
    next_run_at: object
    overdue: list[str]


class Backup(models.Model):
    class State(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        REMOVED = "removed", "Removed by retention"

    policy = models.ForeignKey(BackupPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="backups")
    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="backups")
    database = models.CharField(max_length=63)
    # A tenant's backup: its database (database per tenant) or only its schema (schema per tenant).
    tenant = models.ForeignKey("tenants.Tenant", null=True, blank=True, on_delete=models.SET_NULL, related_name="backups")
    schema = models.CharField(max_length=63, blank=True)
    job = models.ForeignKey("console.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=8, choices=State.choices, default=State.RUNNING)
    snapshot_at = models.DateTimeField(null=True, blank=True)
    # {"tables": [{"schema", "table", "rows"}], "alembic": {schema: [version]}, "extensions": [...],
    #  "files": {name: {"sha256", "bytes"}}}, all taken in the backup's snapshot.
    manifest = models.JSONField(default=dict, blank=True)
    path = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)  # a drill restored and verified it
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"backup {self.pk} of {self.target.name}/{self.database}"

    @classmethod
    def restorable(cls):
        return cls.objects.filter(state=cls.State.DONE)


class DrillRun(models.Model):
    backup = models.ForeignKey(Backup, null=True, on_delete=models.SET_NULL, related_name="drills")
    scratch = models.ForeignKey("console.Target", null=True, on_delete=models.SET_NULL, related_name="drill_runs")
    job = models.ForeignKey("console.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    database_name = models.CharField(max_length=63, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dropped_at = models.DateTimeField(null=True, blank=True)  # the scratch database is gone
    steps = models.JSONField(default=list, blank=True)  # [{"name", "started_at", "seconds", "note"}]
    rto_s = models.FloatField(null=True, blank=True)  # drill start to verified
    rpo_s = models.FloatField(null=True, blank=True)  # drill start minus the backup's snapshot time
    bytes_restored = models.BigIntegerField(null=True, blank=True)  # size of the restored database
    # What verification compared: [{"check", "object", "expected", "found"}], one row per difference.
    differences = models.JSONField(default=list, blank=True)
    verification = models.JSONField(default=dict, blank=True)  # tables compared, smoke queries, amcheck
    passed = models.BooleanField(null=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"drill {self.pk}"

    def get_absolute_url(self):
        from django.urls import reverse

        return reverse("drill-run-detail", args=[self.pk])

    @property
    def is_over(self) -> bool:
        return self.finished_at is not None

    def result_text(self) -> str:
        return {True: "passed", False: "failed"}.get(self.passed, "running" if not self.is_over else "interrupted")

    def table_rows(self) -> list[dict]:
        """The verification table: every table compared, its expected and found rows, and whether they match."""
        return [{**t, "name": f"{t['schema']}.{t['table']}", "ok": t.get("expected") == t["rows"]}
                for t in self.verification.get("tables", [])]

    @property
    def rto(self) -> timedelta | None:
        return timedelta(seconds=self.rto_s) if self.rto_s is not None else None
