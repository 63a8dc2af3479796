"""What charts show: the series of each target chart, their data for uPlot (static/charts.js) with
gaps kept as gaps, and server-rendered SVG sparklines where a small trend is enough."""

from django.utils.html import format_html

# name: (unit, ((metric, label), ...)). The unit labels the y axis and every hover value.
TARGET_CHARTS = {
    "tps": ("tx/s", (("tps", "commits + rollbacks"),)),
    "connections": ("connections", (("connections_active", "active"), ("connections_idle", "idle"),
                                    ("connections_idle_in_transaction", "idle in transaction"))),
    "pool": ("connections", (("pool_checked_out", "checked out"),)),
    "replica_lag_s": ("s", (("replica_lag_s", "replay lag"),)),
    "replica_lag_bytes": ("bytes", (("replica_lag_bytes", "replay lag"),)),
    "bouncer_cl_waiting": ("clients", (("bouncer_cl_waiting", "waiting"),)),
}
STATEMENT_CHARTS = {"calls": ("calls", (("calls", "calls"),)), "mean_ms": ("ms", (("mean_ms", "mean time"),))}


def columns(rows, metrics, step_s: float, since, until, unit: str, labels) -> dict:
    """uPlot's columns from (at, metric, value) rows, oldest first: one timestamp list (Unix
    seconds) and one value list per metric, null where a metric has no sample at a timestamp. A
    silence longer than two sampling steps gets a null point of its own, so the line breaks there
    instead of bridging the gap."""
    by_time: dict = {}
    for at, metric, value in rows:
        by_time.setdefault(at.timestamp(), {})[metric] = value
    times: list[float] = []
    for t in sorted(by_time):
        if times and t - times[-1] > 2 * step_s:
            times.append(times[-1] + step_s)  # nothing was sampled here
        times.append(t)
    return {
        "unit": unit,
        "from": since.timestamp(), "to": until.timestamp(), "step_s": step_s,
        "t": times,
        "series": [{"label": label, "values": [by_time.get(t, {}).get(metric) for t in times]}
                   for metric, label in zip(metrics, labels)],
    }


def sparkline(points, width: int = 180, height: int = 36, unit: str = "") -> str:
    """points: (at, value) pairs, oldest first."""
    values = [float(v) for _at, v in points]
    if len(values) < 2:
        return format_html('<svg class="spark" width="{}" height="{}" role="img" aria-label="not enough data yet"></svg>', width, height)
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    coords = " ".join(f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}" for i, v in enumerate(values))
    label = f"last {values[-1]:,.2f}{unit}, min {low:,.2f}{unit}, max {high:,.2f}{unit}"
    return format_html(
        '<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" aria-label="{}">'
        "<title>{}</title><polyline points=\"{}\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\"/></svg>",
        width, height, width, height, label, label, coords,
    )
