"""Fleet registry work: probing targets, one at a time or the whole fleet."""

import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connection

from console import engines
from console.models import Target

log = logging.getLogger(__name__)


def probe_target(target: Target) -> engines.Probe:
    result = engines.probe(target)
    target.record_probe(result)
    if not result.ok:
        log.warning("target %s is down: %s", target.name, result.error)
    return result


def _probe_in_thread(target: Target) -> bool:
    try:
        return probe_target(target).ok
    finally:
        connection.close()


def probe_fleet() -> dict:
    """Probe every target with bounded concurrency; one dead target costs its connect timeout."""
    targets = list(Target.objects.all())
    with ThreadPoolExecutor(max_workers=settings.TARGET_PROBE_CONCURRENCY) as pool:
        results = dict(zip((t.name for t in targets), pool.map(_probe_in_thread, targets)))
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
