"""Prometheus families of the monitors: the console's pools, server connections, replica lag,
slow queries, sampler health, open alerts, backups and drills, from the console DB at scrape time
(console/metrics.py gathers them with its own)."""

from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from console.models import Target
from monitors import pools
from monitors.drills import metrics as drill_metrics
from monitors.drills import physical_metrics
from monitors.models import Alert, SamplerHealth, SlowStatement, TargetState


def families():
    """The monitors' figures, per target, from the latest samples."""
    names = dict(Target.objects.values_list("pk", "name"))
    pool = {
        key: GaugeMetricFamily(f"fleet_console_pool_{key}", help_text, labels=["target"])
        for key, help_text in (
            ("checked_out", "Connections the console's engines have checked out, all processes"),
            ("size", "Pool size of the console's engines, all processes"),
            ("overflow", "Overflow connections in use by the console's engines"),
            ("checkout_timeouts_total", "Checkouts that timed out, all live processes"),
        )
    }
    for target_id, row in pools.totals_by_target().items():
        for key, family in pool.items():
            source = {"checkout_timeouts_total": "timeouts_total"}.get(key, key)
            family.add_metric([names.get(target_id, str(target_id))], row.get(source) or 0)
    yield from pool.values()

    connections = GaugeMetricFamily("fleet_target_connections", "Server connections by state", labels=["target", "state"])
    max_connections = GaugeMetricFamily("fleet_target_max_connections", "max_connections minus reserved", labels=["target"])
    lag_s = GaugeMetricFamily("fleet_replica_lag_seconds", "Worst replica lag seen from this target", labels=["target"])
    lag_bytes = GaugeMetricFamily("fleet_replica_lag_bytes", "Worst replica lag in bytes", labels=["target"])
    slow_queries = GaugeMetricFamily("fleet_slow_queries", "Queries slower than the threshold in the last hour", labels=["target"])
    for state in TargetState.objects.all():
        name = names.get(state.target_id, str(state.target_id))
        for label, count in (state.connections_by_state or {}).items():
            connections.add_metric([name, label], count)
        if state.usable_connections is not None:
            max_connections.add_metric([name], state.usable_connections)
        if state.replica_lag_s is not None:
            lag_s.add_metric([name], state.replica_lag_s)
        if state.replica_lag_bytes is not None:
            lag_bytes.add_metric([name], state.replica_lag_bytes)
        if state.slow_queries is not None:
            slow_queries.add_metric([name], state.slow_queries)
    yield from (connections, max_connections, lag_s, lag_bytes, slow_queries)

    own_slow = GaugeMetricFamily("fleet_console_slow_statements", "The console's own slow statements kept", labels=["target"])
    for row in SlowStatement.objects.values("target_id").annotate(n=Count("id")):
        own_slow.add_metric([names.get(row["target_id"], str(row["target_id"]))], row["n"])
    yield own_slow

    failures = CounterMetricFamily(
        "fleet_sampler_failures", "Rounds in which a sampler failed on a target", labels=["target", "sampler"]
    )
    last_success = GaugeMetricFamily(
        "fleet_sampler_last_success_timestamp_seconds", "Unix time of a sampler's last successful round on a target",
        labels=["target", "sampler"],
    )
    for health in SamplerHealth.objects.all():
        labels = [names.get(health.target_id, str(health.target_id)), health.sampler]
        failures.add_metric(labels, health.failures_total)
        if health.last_success_at is not None:
            last_success.add_metric(labels, health.last_success_at.timestamp())
    yield from (failures, last_success)

    alerts = GaugeMetricFamily("fleet_alert", "Open alerts: 1 warning, 2 critical", labels=["target", "alert"])
    for alert in Alert.open():
        alerts.add_metric([names.get(alert.target_id, str(alert.target_id)), alert.metric], 2 if alert.level == "critical" else 1)
    yield alerts

    yield from drill_metrics.families(names)
    yield from physical_metrics.families(names)
