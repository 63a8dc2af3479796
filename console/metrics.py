"""Prometheus metrics built from the console DB at scrape time, so every web and worker process
gives the same, complete answer."""

from django.db.models import Count
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from console.models import Job, Target


class ConsoleCollector:
    def collect(self):
        up = GaugeMetricFamily("fleet_target_up", "1 when the target answered its last probe", labels=["target", "role"])
        latency = GaugeMetricFamily(
            "fleet_target_probe_latency_seconds", "Round trip of the last probe query", labels=["target"]
        )
        for target in Target.objects.only("name", "role", "status", "last_latency_ms"):
            up.add_metric([target.name, target.role], 1 if target.status == Target.Status.UP else 0)
            if target.last_latency_ms is not None:
                latency.add_metric([target.name], target.last_latency_ms / 1000)
        yield up
        yield latency

        jobs = GaugeMetricFamily("fleet_jobs", "Jobs by kind and state", labels=["kind", "state"])
        counts = {(row["kind"], row["state"]): row["n"] for row in Job.objects.values("kind", "state").annotate(n=Count("id"))}
        kinds = {kind for kind, _ in counts}
        for kind in sorted(kinds):
            for state in Job.State.values:
                jobs.add_metric([kind, state], counts.get((kind, state), 0))
        yield jobs
        for families in FAMILIES:
            yield from families()


# The apps built on the console add their own families here (monitors: pools, samplers, alerts),
# so this module never imports them.
FAMILIES = []


def register_families(families) -> None:
    """`families()` yields metric families, gathered from the console DB at scrape time."""
    FAMILIES.append(families)


def render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsoleCollector())
    return generate_latest(registry)
