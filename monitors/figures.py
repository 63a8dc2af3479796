"""The figures pages, alerts and series show, computed one way, and the level a figure is at
(warning, critical) against its thresholds: the seeds' defaults (ALERT_DEFAULTS) or a target's own."""

from __future__ import annotations

from django.conf import settings

WARNING, CRITICAL = "warning", "critical"


def percent(part, whole) -> float | None:
    if not whole or part is None:
        return None
    return 100.0 * part / whole


def pool_utilisation_pct(pool: dict | None) -> float | None:
    """Checked-out connections against pool size plus overflow, all processes added up."""
    if not pool or pool.get("size") is None:
        return None
    return percent(pool.get("checked_out") or 0, (pool["size"] or 0) + (pool.get("max_overflow") or 0))


def overflow_pct(pool: dict | None) -> float | None:
    if not pool:
        return None
    return percent(pool.get("overflow") or 0, pool.get("max_overflow"))


def usable_connections(max_connections, reserved_connections) -> int | None:
    """max_connections less those reserved for superusers: what the console and the application share."""
    if max_connections is None:
        return None
    return max_connections - (reserved_connections or 0)


def connections_pct(connections, max_connections, reserved_connections) -> float | None:
    return percent(connections, usable_connections(max_connections, reserved_connections))


def level(metric: str, value, thresholds: dict | None = None) -> str | None:
    """WARNING, CRITICAL or None for `value` of `metric` (thresholds: metric -> (warning, critical))."""
    if value is None:
        return None
    warning, critical = (thresholds or settings.ALERT_DEFAULTS)[metric]
    if value >= critical:
        return CRITICAL
    if value >= warning:
        return WARNING
    return None


def meter_class(metric: str, value, thresholds: dict | None = None) -> str:
    """The CSS class of a meter showing `value`: coloured at the same levels as its alert."""
    found = level(metric, value, thresholds)
    return f"meter-{found}" if found else ""
