import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from console import secrets
from console.validators import (
    validate_env_name,
    validate_host,
    validate_pg_name,
    validate_tags,
    validate_target_name,
)


def _between(low, high):
    return [MinValueValidator(low), MaxValueValidator(high)]


@dataclass(frozen=True)
class Credential:
    """One login of the console on a target: *monitor* (pg_monitor, never a superuser) for
    samplers, pages and EXPLAIN; *change* (the schema owner) for jobs that change schema or data."""

    purpose: str
    username: str
    password_env: str
    password_encrypted: str

    def password(self) -> str | None:
        if self.password_env:
            secrets.check_env_name_allowed(self.password_env)
            value = os.environ.get(self.password_env)
            if value is None:
                raise secrets.SecretUnavailable(
                    f"The environment variable {self.password_env} is not set in this process; "
                    "set it for the web and worker processes, or store the password instead."
                )
            return value
        if self.password_encrypted:
            return secrets.decrypt(self.password_encrypted)
        return None


CREDENTIALS = ("monitor", "change")


class Target(models.Model):
    """A database server of the fleet, as the console connects to it."""

    class Role(models.TextChoices):
        PRIMARY = "primary", "Primary"
        REPLICA = "replica", "Replica"
        PGBOUNCER = "pgbouncer", "PgBouncer"
        SCRATCH = "scratch", "Scratch (restore drills)"

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Unknown"
        UP = "up", "Up"
        DOWN = "down", "Down"

    name = models.CharField(max_length=63, unique=True, validators=[validate_target_name])
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.PRIMARY)
    upstream = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="downstream",
        help_text="The primary a replica follows or a PgBouncer fronts.",
    )
    host = models.CharField(max_length=253, validators=[validate_host])
    port = models.PositiveIntegerField(default=5432)
    dbname = models.CharField("database", max_length=63, validators=[validate_pg_name])
    # The monitor credential: samplers, pages, EXPLAIN, cancel/terminate.
    username = models.CharField(
        "monitor user", max_length=63, validators=[validate_pg_name],
        help_text="A role with pg_monitor and pg_signal_backend (and pg_read_all_data for EXPLAIN), never a superuser.",
    )
    password_env = models.CharField(
        "monitor password environment variable",
        max_length=128,
        blank=True,
        validators=[validate_env_name],
        help_text="Read the password from this environment variable of the console's processes.",
    )
    password_encrypted = models.TextField(blank=True, editable=False)
    # The change credential: onboarding, migrations, backfills, restores.
    change_username = models.CharField(
        "change user", max_length=63, blank=True, validators=[validate_pg_name],
        help_text="The schema owner, for jobs that change schema or data. Empty: such jobs are refused.",
    )
    change_password_env = models.CharField(
        "change password environment variable", max_length=128, blank=True, validators=[validate_env_name],
    )
    change_password_encrypted = models.TextField(blank=True, editable=False)

    pool_size = models.PositiveSmallIntegerField(default=5, validators=_between(1, 100))
    max_overflow = models.PositiveSmallIntegerField(default=2, validators=_between(0, 100))
    pool_timeout_s = models.FloatField("checkout timeout (s)", default=5.0, validators=_between(0.1, 300))
    pool_recycle_s = models.PositiveIntegerField("recycle after (s)", default=300, validators=_between(10, 86400))
    connect_timeout_s = models.PositiveSmallIntegerField(
        "connect timeout (s)", default=3, validators=_between(1, 60),
        help_text="0 would mean wait forever in libpq: at least 1 s.",
    )
    heartbeat_enabled = models.BooleanField(
        "write a heartbeat", default=False,
        help_text="Primaries only: the sampler writes a row per round into fleet_console.heartbeat, so standbys measure their lag from it.",
    )
    tags = models.JSONField(default=list, blank=True, validators=[validate_tags])

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.UNKNOWN)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_latency_ms = models.FloatField(null=True, blank=True)
    server_version = models.CharField(max_length=64, blank=True)
    in_recovery = models.BooleanField(null=True)
    monitor_is_superuser = models.BooleanField(null=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("target-detail", args=[self.pk])

    # Secrets ----------------------------------------------------------------------------------

    def set_password(self, raw: str, credential: str = "monitor") -> None:
        value = secrets.encrypt(raw) if raw else ""
        if credential == "change":
            self.change_password_encrypted = value
        else:
            self.password_encrypted = value

    def has_password(self) -> bool:
        return bool(self.password_env or self.password_encrypted)

    def credential(self, purpose: str = "monitor") -> Credential:
        if purpose == "monitor":
            return Credential("monitor", self.username, self.password_env, self.password_encrypted)
        if purpose != "change":
            raise ValueError(f"no such credential: {purpose}")
        if not self.change_username:
            raise secrets.SecretUnavailable(
                "no change credential is set for this target, and work that changes schema or data never "
                "runs as the monitor role: an admin adds one (the schema owner) on the target's edit page."
            )
        return Credential("change", self.change_username, self.change_password_env, self.change_password_encrypted)

    def password(self) -> str | None:
        """The monitor credential's password."""
        return self.credential("monitor").password()

    def known_passwords(self) -> list[str]:
        """Every password of this target that can be read here, to scrub them from messages."""
        found = []
        for purpose in CREDENTIALS:
            try:
                found.append(self.credential(purpose).password())
            except secrets.SecretUnavailable:
                pass
        return [p for p in found if p]

    def connection_fingerprint(self) -> str:
        """Changes whenever anything that shapes this target's engines changes."""
        parts = [
            self.role, self.host, self.port, self.dbname, self.username, self.password_env,
            self.password_encrypted, self.change_username, self.change_password_env,
            self.change_password_encrypted, self.pool_size, self.max_overflow, self.pool_timeout_s,
            self.pool_recycle_s, self.connect_timeout_s,
        ]
        return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()

    @property
    def behind_pgbouncer(self) -> bool:
        return self.role == self.Role.PGBOUNCER

    def dsn_display(self) -> str:
        return f"{self.username}@{self.host}:{self.port}/{self.dbname}"

    # Health -----------------------------------------------------------------------------------

    def record_probe(self, probe) -> None:
        if probe.ok:
            self.mark_up(probe.in_recovery, probe.latency_ms, probe.server_version)
            if probe.is_superuser is not None:
                self._set({"monitor_is_superuser": probe.is_superuser})
        else:
            self.mark_down(probe.error)

    def mark_up(self, in_recovery=None, latency_ms=None, server_version=None) -> None:
        now = timezone.now()
        fields = {"status": self.Status.UP, "last_checked_at": now, "last_seen_at": now, "last_error": ""}
        if in_recovery is not None:
            fields["in_recovery"] = in_recovery
        if latency_ms is not None:
            fields["last_latency_ms"] = latency_ms
        if server_version:
            fields["server_version"] = server_version
        self._set(fields)

    def mark_down(self, error: str) -> None:
        self._set({"status": self.Status.DOWN, "last_checked_at": timezone.now(), "last_error": error[:2000]})

    def _set(self, fields: dict) -> None:
        for name, value in fields.items():
            setattr(self, name, value)
        Target.objects.filter(pk=self.pk).update(**fields)


class Job(models.Model):
    """A long piece of work, executed by a worker and watched live."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    kind = models.CharField(max_length=64, db_index=True)
    target = models.ForeignKey(Target, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_unit = models.CharField(max_length=32, default="steps")
    rate_per_s = models.FloatField(null=True, blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Pause: the runner finishes its unit, checkpoints and frees its slot (state PAUSED) until resumed.
    pause_requested = models.BooleanField(default=False)
    # Throttle (or any wait): queued, not to run before `not_before`, for `wait_reason`.
    not_before = models.DateTimeField(null=True, blank=True)
    wait_reason = models.TextField(blank=True)

    claimed_by = models.CharField(max_length=128, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    attempt_start_done = models.BigIntegerField(default=0)

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "heartbeat_at"])]

    def __str__(self):
        return f"{self.kind} #{self.pk}"

    def get_absolute_url(self):
        return reverse("job-detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    def is_stale(self, now=None) -> bool:
        """Running, but its worker has not been heard of for too long: it died."""
        if self.state != self.State.RUNNING or self.heartbeat_at is None:
            return False
        now = now or timezone.now()
        return now - self.heartbeat_at > timedelta(seconds=settings.JOB_STALE_AFTER_S)

    @property
    def percent(self) -> float | None:
        if not self.progress_total:
            return 100.0 if self.state == self.State.SUCCEEDED else None
        return min(100.0, 100.0 * self.progress_done / self.progress_total)

    def eta_seconds(self) -> float | None:
        if self.is_finished or not self.progress_total or not self.rate_per_s:
            return None
        return max(0.0, (self.progress_total - self.progress_done) / self.rate_per_s)

    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    def log_tail(self, lines: int = 200):
        return list(reversed(self.log_lines.order_by("-id")[:lines]))


class JobLogLine(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_lines")
    at = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=8, default="info")
    message = models.TextField()

    class Meta:
        ordering = ["id"]


class SelftestStep(models.Model):
    """What a self-test job did, one row per step, committed with its checkpoint.
    Duplicates here would mean a step ran twice."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="selftest_steps")
    step = models.PositiveIntegerField()
    worker = models.CharField(max_length=128)
    recorded_at = models.DateTimeField(default=timezone.now)


class AuditEvent(models.Model):
    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        DENIED = "denied", "Denied"
        FAILED = "failed", "Failed"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=32, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.OK)
    detail = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.actor_username} {self.action} {self.object_repr} {self.outcome}"

    # object_type (a model name) -> the URL name of that object's page
    OBJECT_PAGES = {"target": "target-detail", "job": "job-detail", "tenant": "tenant-detail",
                    "approval": "approval-detail", "change": "change-plan", "backfill": "backfill-detail"}

    def object_url(self) -> str | None:
        """The audited object's page, or None (no object, or a kind without a page)."""
        page = self.OBJECT_PAGES.get(self.object_type)
        if page is None or not self.object_id.isdigit():
            return None
        return reverse(page, args=[int(self.object_id)])


class Approval(models.Model):
    """Four eyes on one action: what exactly was asked for (a digest of what the approver is shown),
    who asked, who decided and how. Used through console.approvals, never edited directly."""

    class Decision(models.TextChoices):
        PENDING = "pending", "Waiting"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        VOIDED = "voided", "Voided (what was approved changed)"
        WITHDRAWN = "withdrawn", "Withdrawn"
        USED = "used", "Approved and carried out"

    kind = models.CharField(max_length=64, db_index=True)  # e.g. tenants.offboard, migrations.stage
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    summary = models.TextField(help_text="What the approver is shown, in words.")
    shown = models.JSONField(default=dict, blank=True, help_text="Exactly what the approver is shown.")
    digest = models.CharField(max_length=64, help_text="SHA-256 of `shown`: a changed digest voids the approval.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decision = models.CharField(max_length=16, choices=Decision.choices, default=Decision.PENDING, db_index=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id", "kind"])]

    def __str__(self):
        return f"{self.kind} {self.object_repr} ({self.decision})"

    def get_absolute_url(self):
        return reverse("approval-detail", args=[self.pk])

    def is_expired(self, now=None) -> bool:
        return (now or timezone.now()) >= self.expires_at
