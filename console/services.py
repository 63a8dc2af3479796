"""Fleet registry work: probing targets, one at a time or the whole fleet."""

import logging

from django.conf import settings

from console import engines, fanout
from console.models import Target

log = logging.getLogger(__name__)


def probe_target(target: Target) -> engines.Probe:
    result = engines.probe(target)
    target.record_probe(result)
    if not result.ok:
        log.warning("target %s is down: %s", target.name, result.error)
    return result


def probe_fleet() -> dict:
    """Probe every target with bounded concurrency; one dead target costs its connect timeout."""
    targets = list(Target.objects.all())
    oks = fanout.run_bounded(targets, lambda target: probe_target(target).ok, settings.TARGET_PROBE_CONCURRENCY)
    results = dict(zip((t.name for t in targets), oks))
    return {"up": sorted(n for n, ok in results.items() if ok), "down": sorted(n for n, ok in results.items() if not ok)}


def save_target(form, *, save_unreachable: bool) -> tuple[Target | None, engines.Probe]:
    """Test a validated target form's connection, then save it if it works (or if asked to).
    Returns (None, probe) when nothing was saved."""
    target = form.save(commit=False)
    probe = engines.probe(target)
    if not probe.ok and not save_unreachable:
        return None, probe
    target.save()
    target.record_probe(probe)
    engines.forget(target.pk)
    return target, probe
