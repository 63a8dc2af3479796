"""Physical backups with pgBackRest and point-in-time restore drills: a policy per target (the
stanza, when to take full/diff/incr backups, pgBackRest's retention options, how old a backup or
the newest archived WAL may get), the backups as `pgbackrest info` lists them, and PITR drill runs
with their steps, recovery progress, RTO, RPO and verification (imported by monitors.models).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from console.pg import pgbackrest


def validate_stanza(name: str) -> None:
    if not pgbackrest.STANZA_NAME.match(name or ""):
        raise ValidationError("a stanza name is letters, digits, '_', '.' or '-' (at most 63)")


def validate_absolute_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValidationError("an absolute path on the worker's host")


class PhysicalBackupPolicy(models.Model):
    """A target's pgBackRest stanza and what the console does with it."""

    target = models.OneToOneField("console.Target", on_delete=models.CASCADE, related_name="physical_backup_policy")
    stanza = models.CharField(max_length=63, validators=[validate_stanza])
    config = models.CharField("pgBackRest configuration", max_length=500, validators=[validate_absolute_path])
    run_as = models.CharField(max_length=63, blank=True)  # empty: PITR_SERVICE_USER
    # Schedule: each type every N hours (empty: never on schedule). A due full makes diff and incr wait.
    full_every_hours = models.PositiveIntegerField(null=True, blank=True, default=168)
    diff_every_hours = models.PositiveIntegerField(null=True, blank=True, default=24)
    incr_every_hours = models.PositiveIntegerField(null=True, blank=True)
    # pgBackRest's own retention, passed to every backup (expire runs right after it).
    retention_full = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])  # repo1-retention-full
    retention_diff = models.PositiveIntegerField(null=True, blank=True)  # repo1-retention-diff
    # A lower retention waits for an approver other than the requester (monitors/drills/physical_policies.py):
    # {"retention_full", "retention_diff"} asked for, applied once approved.
    pending_retention = models.JSONField(null=True, blank=True)
    # Alerts: the newest backup, and the newest archived WAL, may be at most this old.
    max_backup_age_h = models.PositiveIntegerField(default=26)
    max_wal_age_s = models.PositiveIntegerField(default=900)
    # Drills: every N hours (empty: by hand only), to now minus drill_delay_s.
    drill_every_hours = models.PositiveIntegerField(null=True, blank=True)
    drill_delay_s = models.PositiveIntegerField(null=True, blank=True)  # empty: PITR_DRILL_DELAY_S
    database = models.CharField(max_length=63, blank=True)  # smoke queries run here; empty: the target's
    smoke_queries = models.JSONField(default=list, blank=True)
    server_settings = models.JSONField(default=dict, blank=True)  # for the drill's server (shared_buffers...)
    scheduled = models.JSONField(default=dict, blank=True)  # {"full"|"diff"|"incr"|"drill": iso time last started}

    class Meta:
        verbose_name_plural = "physical backup policies"

    def __str__(self):
        return f"{self.target.name} (stanza {self.stanza})"

    def clean(self):
        from console.pg import pitr_server

        try:
            pitr_server.check_settings(self.server_settings)
        except ValueError as exc:
            raise ValidationError({"server_settings": str(exc)}) from exc

    def retention_text(self, retention_full=None, retention_diff=None, *, asked: bool = False) -> str:
        full, diff = (retention_full, retention_diff) if asked else (self.retention_full, self.retention_diff)
        return f"{full} full" + (f", {diff} differential" if diff else ", differentials as long as their full")

    def lowers_retention(self, retention_full, retention_diff) -> bool:
        """Whether pgBackRest would keep fewer backups (no retention_diff: as long as their full)."""
        return (retention_full or 0) < (self.retention_full or 0) or (
            retention_diff is not None and (self.retention_diff is None or retention_diff < self.retention_diff))

    def stanza_ref(self) -> pgbackrest.Stanza:
        return pgbackrest.Stanza(config=self.config, name=self.stanza, run_as=self.run_as)

    @property
    def delay(self) -> timedelta:
        return timedelta(seconds=self.drill_delay_s if self.drill_delay_s is not None else settings.PITR_DRILL_DELAY_S)

    def due(self, now) -> list[str]:
        """What is due now: one backup type, and "drill". A backup of a bigger type counts for the
        smaller ones (a full resets the diff and incr clocks, a diff the incr clock)."""
        def since(*kinds):
            times = [_parse(self.scheduled[k]) for k in kinds if self.scheduled.get(k)]
            return now - max(times) if times else None

        def is_due(hours, *kinds):
            elapsed = since(*kinds)
            return bool(hours) and (elapsed is None or elapsed >= timedelta(hours=hours))

        wanted = []
        for kind, hours, counted in (("full", self.full_every_hours, ("full",)),
                                     ("diff", self.diff_every_hours, ("full", "diff")),
                                     ("incr", self.incr_every_hours, ("full", "diff", "incr"))):
            if is_due(hours, *counted):
                wanted.append(kind)
                break
        if is_due(self.drill_every_hours, "drill"):
            wanted.append("drill")
        return wanted


def _parse(moment: str):
    from datetime import datetime

    return datetime.fromisoformat(moment)


class PhysicalBackup(models.Model):
    """One backup set of a stanza, as `pgbackrest info` last listed it."""

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="physical_backups")
    policy = models.ForeignKey(PhysicalBackupPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="backups")
    label = models.CharField(max_length=40)
    type = models.CharField(max_length=4)  # full, diff, incr
    prior = models.CharField(max_length=40, blank=True)
    started_at = models.DateTimeField()
    stopped_at = models.DateTimeField()
    size_bytes = models.BigIntegerField(default=0)
    delta_bytes = models.BigIntegerField(default=0)
    repo_size_bytes = models.BigIntegerField(default=0)
    repo_delta_bytes = models.BigIntegerField(default=0)
    wal_start = models.CharField(max_length=24, blank=True)
    wal_stop = models.CharField(max_length=24, blank=True)
    lsn_start = models.CharField(max_length=20, blank=True)
    lsn_stop = models.CharField(max_length=20, blank=True)
    job = models.ForeignKey("console.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    seen_at = models.DateTimeField(default=timezone.now)
    expired_at = models.DateTimeField(null=True, blank=True)  # no longer listed: pgBackRest's retention expired it

    class Meta:
        ordering = ["-stopped_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["target", "label"], name="one_physical_backup_per_label")]

    def __str__(self):
        return f"{self.target.name} {self.label}"

    @property
    def duration_s(self) -> float:
        return (self.stopped_at - self.started_at).total_seconds()


class PitrDrillRun(models.Model):
    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="pitr_drill_runs")
    policy = models.ForeignKey(PhysicalBackupPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="drills")
    job = models.ForeignKey("console.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    backup_label = models.CharField(max_length=40, blank=True)  # the set restored
    target_at = models.DateTimeField(null=True, blank=True)  # the moment recovered to
    directory = models.CharField(max_length=500, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    reached_at = models.DateTimeField(null=True, blank=True)  # recovery paused at the target
    verified_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)  # the server stopped and the folder deleted
    steps = models.JSONField(default=list, blank=True)  # [{"name", "started_at", "seconds", "note"}]
    # Recovery progress: from the backup's start LSN to the LSN to reach (at most the archive's
    # newest WAL when the drill began); replayed_lsn moves while recovery runs.
    lsn_from = models.CharField(max_length=20, blank=True)
    lsn_to_reach = models.CharField(max_length=20, blank=True)
    lsn_replayed = models.CharField(max_length=20, blank=True)
    replayed_xact_at = models.DateTimeField(null=True, blank=True)  # last transaction replayed
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # newest heartbeat row replayed
    rto_s = models.FloatField(null=True, blank=True)  # drill start to verified
    rpo_s = models.FloatField(null=True, blank=True)  # target moment minus the newest heartbeat replayed
    verification = models.JSONField(default=dict, blank=True)  # amcheck, smoke, alembic per tenant
    differences = models.JSONField(default=list, blank=True)  # [{"check", "object", "expected", "found"}]
    passed = models.BooleanField(null=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"PITR drill {self.pk}"

    def get_absolute_url(self):
        return reverse("pitr-drill", args=[self.pk])

    def progress_pct(self) -> float | None:
        """LSN replayed of LSN to reach, counted from the backup's start."""
        from console.pg.pitr_server import lsn_int

        start, end, now = lsn_int(self.lsn_from), lsn_int(self.lsn_to_reach), lsn_int(self.lsn_replayed)
        if self.reached_at:
            return 100.0
        if None in (start, end, now) or end <= start:
            return None
        return max(0.0, min(100.0, 100.0 * (now - start) / (end - start)))

    @property
    def running(self) -> bool:
        return self.finished_at is None and self.started_at is not None
