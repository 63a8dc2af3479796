"""Samples of the fleet's health, stored in the console DB so pages never query a target."""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone


class LagSource(models.TextChoices):
    """Who measured a replica's lag. The primary's pg_stat_replication is preferred: it measures
    from the primary's own clock and never counts an idle primary as lag."""

    STANDBYS = "standbys", "this primary's pg_stat_replication"
    PRIMARY = "primary", "the primary's pg_stat_replication"
    REPLICA = "replica", "this replica's own view (heartbeat)"
    NONE = "", "unknown"


class TargetState(models.Model):
    """The latest figures of one target, rewritten every sampling round: what the overview reads."""

    target = models.OneToOneField("console.Target", on_delete=models.CASCADE, related_name="state", primary_key=True)
    sampled_at = models.DateTimeField(null=True)
    connections = models.IntegerField(null=True)
    max_connections = models.IntegerField(null=True)
    reserved_connections = models.IntegerField(null=True)
    connections_by_state = models.JSONField(default=dict)
    connections_by_application = models.JSONField(default=dict)
    connections_by_user = models.JSONField(default=dict)
    connections_by_database = models.JSONField(default=dict)
    long_running = models.IntegerField(default=0)
    waiting_on_locks = models.IntegerField(default=0)
    longest_query_s = models.FloatField(null=True)
    sessions = models.JSONField(default=list)
    replication = models.JSONField(default=dict)
    replica_lag_s = models.FloatField(null=True)
    replica_lag_bytes = models.FloatField(null=True)
    replica_lag_source = models.CharField(max_length=16, choices=LagSource.choices, blank=True)
    bouncer_pools = models.JSONField(default=list)
    bouncer_stats = models.JSONField(default=list)
    bouncer_cl_waiting = models.IntegerField(null=True)
    bouncer_maxwait_s = models.FloatField(null=True)
    slow_queries = models.IntegerField(null=True)  # queries slower than MONITOR_SLOW_QUERY_MS in the last hour
    statements_status = models.CharField(max_length=16, default="unknown")  # ok / missing / not_preloaded
    statements_notice = models.TextField(blank=True)
    statements_sampled_at = models.DateTimeField(null=True)
    stats_reset_at = models.DateTimeField(null=True)
    sample_error = models.TextField(blank=True)
    # Client sessions of this console (any process, any target) on the target's server, the
    # sampler's own included: what the console takes of max_connections there.
    console_connections = models.IntegerField(null=True)
    # Load, for the overview (the fast sampler):
    tps = models.FloatField(null=True)  # commits + rollbacks per second, all databases
    oldest_xact_s = models.FloatField(null=True)  # the oldest open transaction of a client backend
    cache_hit_pct = models.FloatField(null=True)  # blks_hit / (blks_hit + blks_read) of the target's database
    database_size_bytes = models.BigIntegerField(null=True)
    xid_age_pct = models.FloatField(null=True)  # the oldest database's age(datfrozenxid) over 2^31
    server_started_at = models.DateTimeField(null=True)  # pg_postmaster_start_time()

    @property
    def usable_connections(self) -> int | None:
        from monitors import figures

        return figures.usable_connections(self.max_connections, self.reserved_connections)

    @property
    def connections_percent(self) -> float | None:
        from monitors import figures

        return figures.connections_pct(self.connections, self.max_connections, self.reserved_connections)


class SamplerHealth(models.Model):
    """How one sampler fares on one target: when it last succeeded, and since when and why it
    fails. Pages show failing samplers next to the figures they stopped updating."""

    class Sampler(models.TextChoices):
        FAST = "fast", "Activity, connections and replication sampler"
        STATEMENTS = "statements", "pg_stat_statements sampler"
        HEARTBEAT = "heartbeat", "Heartbeat writer"
        CHECKS = "checks", "Health checks sampler"

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="sampler_health")
    sampler = models.CharField(max_length=16, choices=Sampler.choices)
    last_success_at = models.DateTimeField(null=True)
    last_failure_at = models.DateTimeField(null=True)
    failing_since = models.DateTimeField(null=True)
    consecutive_failures = models.IntegerField(default=0)
    failures_total = models.BigIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["sampler"]
        constraints = [models.UniqueConstraint(fields=["target", "sampler"], name="sampler_health_unique")]

    @property
    def failing(self) -> bool:
        return self.consecutive_failures > 0

    @classmethod
    def record_success(cls, target_id: int, sampler: str, now=None) -> None:
        cls.record_successes([target_id], sampler, now)

    @classmethod
    def record_successes(cls, target_ids: list[int], sampler: str, now=None) -> None:
        """One round's successes of `sampler`, in one statement (two the first time)."""
        if not target_ids:
            return
        rows = cls.objects.filter(target_id__in=target_ids, sampler=sampler)
        changes = {"last_success_at": now or timezone.now(), "consecutive_failures": 0, "failing_since": None}
        if rows.update(**changes) < len(set(target_ids)):
            cls.objects.bulk_create([cls(target_id=i, sampler=sampler) for i in set(target_ids)], ignore_conflicts=True)
            rows.update(**changes)

    @classmethod
    def record_failure(cls, target_id: int, sampler: str, error: str, now=None) -> None:
        now = now or timezone.now()
        cls._record(
            target_id, sampler, last_failure_at=now, last_error=error[:2000],
            consecutive_failures=models.F("consecutive_failures") + 1, failures_total=models.F("failures_total") + 1,
            failing_since=Coalesce(models.F("failing_since"), models.Value(now)),
        )

    @classmethod
    def _record(cls, target_id: int, sampler: str, **changes) -> None:
        rows = cls.objects.filter(target_id=target_id, sampler=sampler)
        if not rows.update(**changes):
            cls.objects.get_or_create(target_id=target_id, sampler=sampler)
            rows.update(**changes)


class HealthCheckRun(models.Model):
    """The latest run of the slow health checks on one target (monitors/checks.py): findings per
    check, each a list of plain rows with the SQL that would fix it (shown, never run)."""

    target = models.OneToOneField("console.Target", on_delete=models.CASCADE, related_name="health_checks", primary_key=True)
    sampled_at = models.DateTimeField(null=True)  # the last run that stored findings
    findings = models.JSONField(default=dict)  # check name -> list of rows (a check that failed: absent)
    failed_at = models.DateTimeField(null=True)  # the last run, if it failed (= sampled_at: some checks did)
    error = models.TextField(blank=True)

    @property
    def failing(self) -> bool:
        return self.failed_at is not None

    @property
    def partly_failed(self) -> bool:
        return self.failing and self.failed_at == self.sampled_at

    def alert_values(self) -> dict[str, float]:
        """The alerts' figures from the last successful run: the oldest database's share of the
        2^31 transaction IDs, and the fullest sequence's share of its limit."""
        if self.sampled_at is None:
            return {}
        databases, sequences = self.findings.get("wraparound", []), self.findings.get("sequences", [])
        return {
            "xid_wraparound_pct": max((r["used_pct"] or 0.0 for r in databases), default=0.0),
            "sequence_used_pct": max((r["used_pct"] or 0.0 for r in sequences), default=0.0),
        }

    @property
    def cards(self) -> list[dict]:
        from monitors import checks

        return checks.cards(self)


class SamplingRound(models.Model):
    """One beat of a sampler over the fleet, split into chunks of targets that the monitor
    workers share (one `monitors.sample_chunk` task each). Finished when every chunk is; a chunk
    still queued when the round expires (the next round has begun) is skipped."""

    sampler = models.CharField(max_length=16, choices=SamplerHealth.Sampler.choices)
    started_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    targets = models.IntegerField()
    # The fleet is larger than MONITOR_RETURN_CONNECTIONS_ABOVE: each target's connection is
    # closed once it is sampled, so no worker keeps one per target.
    returns_connections = models.BooleanField(default=False)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [models.Index(fields=["started_at"])]

    @property
    def seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


class SamplingChunk(models.Model):
    """Some targets of a round, sampled by one worker process (`process`, as in EnginePool)."""

    round = models.ForeignKey(SamplingRound, on_delete=models.CASCADE, related_name="chunks")
    target_ids = models.JSONField(default=list)
    process = models.CharField(max_length=128, blank=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    ok = models.IntegerField(null=True)
    failed = models.IntegerField(null=True)

    @classmethod
    def claim(cls, chunk_id: int, process: str, now=None) -> "SamplingChunk | None":
        """The chunk, claimed for `process`; None when it is done or its round has expired. A chunk
        whose worker died half-way is claimed again (sampling it twice is harmless)."""
        now = now or timezone.now()
        claimed = cls.objects.filter(pk=chunk_id, finished_at__isnull=True, round__expires_at__gt=now).update(
            process=process, started_at=now)
        return cls.objects.select_related("round").get(pk=chunk_id) if claimed == 1 else None

    def finish(self, ok: int, failed: int, now=None) -> None:
        now = now or timezone.now()
        SamplingChunk.objects.filter(pk=self.pk).update(finished_at=now, ok=ok, failed=failed)
        # Each chunk commits before it looks, so the last one to finish sees all the others done.
        if not SamplingChunk.objects.filter(round_id=self.round_id, finished_at__isnull=True).exists():
            SamplingRound.objects.filter(pk=self.round_id, finished_at__isnull=True).update(finished_at=now)


class EnginePool(models.Model):
    """One process's engine for one target, as that process last published it."""

    process = models.CharField(max_length=128)
    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="engine_pools")
    size = models.IntegerField()
    max_overflow = models.IntegerField()
    checked_in = models.IntegerField()
    checked_out = models.IntegerField()
    overflow = models.IntegerField()
    checkouts_total = models.BigIntegerField(default=0)
    checkout_timeouts_total = models.BigIntegerField(default=0)
    checkout_wait_s_total = models.FloatField(default=0)
    checkout_wait_s_max = models.FloatField(default=0)
    hold_s_total = models.FloatField(default=0)
    # Over the last publishing interval, for alerts:
    recent_checkout_wait_ms = models.FloatField(default=0)
    recent_timeouts_per_min = models.FloatField(default=0)
    recent_checkouts_per_s = models.FloatField(default=0)
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["process", "target"], name="engine_pool_per_process")]

    @classmethod
    def fresh(cls):
        horizon = timezone.now() - timedelta(seconds=3 * settings.POOL_PUBLISH_INTERVAL_S)
        return cls.objects.filter(updated_at__gte=horizon)


class MetricPoint(models.Model):
    """Raw samples of a target's time series, kept for MONITOR_RAW_RETENTION_H."""

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="+")
    metric = models.CharField(max_length=48)
    at = models.DateTimeField()
    value = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["target", "metric", "at"])]


class MetricMinute(models.Model):
    """Per-minute aggregates of the same series, kept for MONITOR_MINUTE_RETENTION_D."""

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="+")
    metric = models.CharField(max_length=48)
    minute = models.DateTimeField()
    count = models.IntegerField()
    total = models.FloatField()
    maximum = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["target", "metric", "minute"], name="metric_minute_unique")]

    @property
    def average(self) -> float:
        return self.total / self.count if self.count else 0.0


class StatementCounter(models.Model):
    """The last cumulative pg_stat_statements values seen, to compute deltas from."""

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="+")
    queryid = models.BigIntegerField()
    dbid = models.BigIntegerField()
    userid = models.BigIntegerField()
    toplevel = models.BooleanField(default=True)  # false: the statement's nested runs (track = all)
    calls = models.BigIntegerField()
    total_exec_ms = models.FloatField()
    rows = models.BigIntegerField()
    shared_blks_hit = models.BigIntegerField(default=0)
    shared_blks_read = models.BigIntegerField(default=0)
    max_exec_ms = models.FloatField(null=True)  # pg_stat_statements' max_exec_time: since its last reset
    username = models.CharField(max_length=128, blank=True)  # userid and dbid resolved on the target
    database = models.CharField(max_length=128, blank=True)
    query = models.TextField()
    seen_at = models.DateTimeField()

    KEY = ("queryid", "dbid", "userid", "toplevel")  # the view's own key

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["target", "queryid", "dbid", "userid", "toplevel"], name="statement_counter_unique")
        ]

    @property
    def key(self) -> tuple:
        return tuple(getattr(self, field) for field in self.KEY)


class StatementDelta(models.Model):
    """What one statement did between two snapshots; only statements that ran get a row."""

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="+")
    queryid = models.BigIntegerField()
    dbid = models.BigIntegerField()
    userid = models.BigIntegerField()
    toplevel = models.BooleanField(default=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    calls = models.BigIntegerField()
    total_exec_ms = models.FloatField()
    rows = models.BigIntegerField()
    shared_blks_hit = models.BigIntegerField(default=0)
    shared_blks_read = models.BigIntegerField(default=0)
    max_exec_ms = models.FloatField(null=True)  # max_exec_time at this snapshot (since the view's last reset)
    after_reset = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["target", "window_end"]),
            models.Index(fields=["target", "queryid", "window_end"]),
        ]


class SlowStatement(models.Model):
    """A statement the console itself sent to a target that took longer than the threshold."""

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    duration_ms = models.FloatField()
    statement = models.TextField()
    process = models.CharField(max_length=128)

    class Meta:
        ordering = ["-at"]


class AlertThreshold(models.Model):
    """A per-target override of an alert's thresholds; defaults live in settings."""

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="alert_thresholds")
    metric = models.CharField(max_length=48)
    warning = models.FloatField()
    critical = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["target", "metric"], name="alert_threshold_unique")]


class Alert(models.Model):
    class Level(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    target = models.ForeignKey("console.Target", on_delete=models.CASCADE, related_name="alerts")
    metric = models.CharField(max_length=48)
    level = models.CharField(max_length=8, choices=Level.choices)
    value = models.FloatField()
    threshold = models.FloatField()
    message = models.CharField(max_length=300)
    opened_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["closed_at", "target"])]
        constraints = [
            models.UniqueConstraint(
                fields=["target", "metric"], condition=models.Q(closed_at__isnull=True), name="one_open_alert_per_metric"
            )
        ]

    @classmethod
    def open(cls):
        return cls.objects.filter(closed_at__isnull=True)


from monitors.drills.models import Backup, BackupPolicy, DrillRun  # noqa: E402, F401  (the app's models too)
from monitors.drills.physical import PhysicalBackup, PhysicalBackupPolicy, PitrDrillRun  # noqa: E402, F401
