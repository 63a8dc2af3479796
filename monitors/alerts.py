"""Alerts: thresholds (defaults from the seeds, overridable per target) checked after every
sampling round; an alert opens, changes level and closes as the figures move. A sampler that
failed MONITOR_SAMPLER_FAILURE_ALERT_ROUNDS rounds in a row on a target that is up opens a
critical alert of its own (`sampler_<name>`): its figures have stopped updating. A backup policy
whose last backup, or last verified backup, is older than it allows opens one per database
(monitors/drills/alerts.py)."""

from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from console.models import Target
from monitors import figures, pools
from monitors.drills import alerts as backup_alerts
from monitors.drills import pitr_alerts
from monitors.drills.physical import PhysicalBackupPolicy
from monitors.models import Alert, AlertThreshold, HealthCheckRun, SamplerHealth, TargetState

LABELS = {
    "pool_utilisation_pct": ("Pool use", "%"),
    "checkout_wait_ms": ("Checkout wait", " ms"),
    "overflow_pct": ("Overflow use", "%"),
    "failed_checkouts_per_min": ("Failed checkouts", "/min"),
    "connections_pct": ("Connections", "% of max"),
    "replica_lag_s": ("Replica lag", " s"),
    "replica_lag_bytes": ("Replica lag", " bytes"),
    "long_running_query_s": ("Long-running query", " s"),
    "xid_wraparound_pct": ("Transaction ID wraparound", "% used"),
    "sequence_used_pct": ("Sequence", "% used"),
    "target_down": ("Target down", ""),
}


def thresholds(target, overrides=None) -> dict[str, tuple[float, float]]:
    merged = dict(settings.ALERT_DEFAULTS)
    if overrides is None:
        overrides = AlertThreshold.objects.filter(target=target)
    for override in overrides:
        merged[override.metric] = (override.warning, override.critical)
    return merged


def current_values(target, state: TargetState | None, pool: dict | None,
                   health_checks: HealthCheckRun | None = None) -> dict[str, float | None]:
    """Each alert metric's value now, computed as the pages compute it (monitors/figures.py)."""
    values: dict[str, float | None] = {}
    if pool and pool.get("size") is not None:
        values["pool_utilisation_pct"] = figures.pool_utilisation_pct(pool)
        values["overflow_pct"] = figures.overflow_pct(pool)
        values["checkout_wait_ms"] = pool["wait_ms_recent"]
        values["failed_checkouts_per_min"] = pool["timeouts_per_min"]
    if state is not None and target.status == Target.Status.UP:
        values["connections_pct"] = state.connections_percent
        values["replica_lag_s"] = state.replica_lag_s
        values["replica_lag_bytes"] = state.replica_lag_bytes
        values["long_running_query_s"] = state.longest_query_s
    if health_checks is not None:
        values.update(health_checks.alert_values())
    return values


def evaluate(targets) -> None:
    ids = [t.pk for t in targets]
    states = {s.target_id: s for s in TargetState.objects.filter(target_id__in=ids).defer("sessions")}
    statuses = dict(Target.objects.filter(pk__in=ids).values_list("pk", "status"))
    overrides = defaultdict(list)
    for override in AlertThreshold.objects.filter(target_id__in=ids):
        overrides[override.target_id].append(override)
    pool_totals = pools.totals_by_target()
    check_runs = {run.target_id: run for run in HealthCheckRun.objects.filter(target_id__in=ids)}
    rounds = settings.MONITOR_SAMPLER_FAILURE_ALERT_ROUNDS
    failing = defaultdict(list)
    for health in SamplerHealth.objects.filter(target_id__in=ids, consecutive_failures__gte=rounds):
        failing[health.target_id].append(health)
    with_open_alerts = set(Alert.open().filter(target_id__in=ids).values_list("target_id", flat=True))
    now = timezone.now()
    stale_backups = backup_alerts.wanted(ids, now)
    physical = {p.target_id: p for p in PhysicalBackupPolicy.objects.filter(target_id__in=ids)}
    for target in targets:
        target.status = statuses.get(target.pk, target.status)
        wanted = dict(stale_backups.get(target.pk, {}))
        limits = thresholds(target, overrides[target.pk])
        for metric, value in current_values(target, states.get(target.pk), pool_totals.get(target.pk), check_runs.get(target.pk)).items():
            warning, critical = limits[metric]
            level = figures.level(metric, value, limits)
            if level:
                threshold = critical if level == Alert.Level.CRITICAL else warning
                label, unit = LABELS[metric]
                message = f"{label} {value:,.0f}{unit} (threshold {threshold:,.0f}{unit})"
                wanted[metric] = (level, value, threshold, message)
        if target.status == Target.Status.DOWN:
            wanted["target_down"] = (Alert.Level.CRITICAL, 1.0, 1.0, f"{target.name} is down")
        else:  # a down target's samplers fail for that one reason, already alerted
            for health in failing[target.pk]:
                wanted[f"sampler_{health.sampler}"] = (Alert.Level.CRITICAL, health.consecutive_failures, rounds, sampler_message(health))
            wanted.update(pitr_alerts.wanted(target, now, physical))  # physical backups and WAL archiving
        if wanted or target.pk in with_open_alerts:  # else there is nothing to open, update or close
            _apply(target, wanted, now)


def sampler_message(health: SamplerHealth) -> str:
    message = (f"{health.get_sampler_display()} failing for {health.consecutive_failures} rounds since "
               f"{health.failing_since:%Y-%m-%d %H:%M:%S} UTC: {health.last_error}")
    return message if len(message) <= 300 else message[:299] + "…"


@transaction.atomic
def _apply(target, wanted: dict, now) -> None:
    open_alerts = {a.metric: a for a in Alert.open().select_for_update().filter(target=target)}
    for metric, alert in open_alerts.items():
        if metric not in wanted:
            alert.closed_at = now
            alert.save(update_fields=["closed_at"])
    for metric, (level, value, threshold, message) in wanted.items():
        alert = open_alerts.get(metric)
        if alert is None:
            Alert.objects.create(target=target, metric=metric, level=level, value=value, threshold=threshold,
                                 message=message, opened_at=now, last_seen_at=now)
        else:
            alert.level, alert.value, alert.threshold, alert.message, alert.last_seen_at = level, value, threshold, message, now
            alert.save(update_fields=["level", "value", "threshold", "message", "last_seen_at"])
