"""What the fleet overview and the live target page show, read from samples only."""

import math
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from console.models import Target
from monitors import alerts, figures, pools, samplers
from monitors.models import Alert, LagSource, MetricPoint, SamplerHealth, SlowStatement, TargetState

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6),
           "24h": timedelta(hours=24), "7d": timedelta(days=7)}
ORDERS = ("total", "mean", "calls")
SORTS = ("name", "status", "pool", "connections", "lag", "slow", "alerts")
# The overview reads only the figures it shows, as plain values: no model per row.
OVERVIEW_FIELDS = (
    "id", "name", "role", "status", "last_seen_at", "tags", "upstream__name",
    "state__connections", "state__max_connections", "state__reserved_connections", "state__replica_lag_s",
    "state__replica_lag_bytes", "state__replica_lag_source", "state__slow_queries", "state__bouncer_cl_waiting",
)
ROLE_LABELS = dict(Target.Role.choices)
SAMPLER_LABELS = dict(SamplerHealth.Sampler.choices)
LAG_SOURCE_LABELS = dict(LagSource.choices)
STATUS_LABELS = dict(Target.Status.choices)




def _ago(moment, now) -> str:
    from console.templatetags.console_tags import _span

    return f"{_span((now - moment).total_seconds())} ago" if moment else "never"


def overview_rows(targets, sort: str = "name") -> list[dict]:
    """One ready-to-print row per target (a Target queryset): formatting happens here, once."""
    pool_totals = pools.totals_by_target()
    open_alerts = defaultdict(list)
    for target_id, level, message in Alert.open().values_list("target_id", "level", "message"):
        open_alerts[target_id].append({"level": level, "message": message,
                                       "short": message if len(message) <= 40 else message[:39] + "…"})
    failing = defaultdict(list)
    for target_id, sampler, since in SamplerHealth.objects.filter(consecutive_failures__gt=0).values_list(
            "target_id", "sampler", "failing_since"):
        failing[target_id].append(f"{SAMPLER_LABELS.get(sampler, sampler)} failing since {since:%H:%M:%S} UTC")
    now = timezone.now()
    rows = []
    for t in targets.values(*OVERVIEW_FIELDS):
        pool = pool_totals.get(t["id"])
        capacity = (pool["size"] + pool["max_overflow"]) if pool else 0
        pool_pct = figures.pool_utilisation_pct(pool)
        connections = t["state__connections"]
        usable = figures.usable_connections(t["state__max_connections"], t["state__reserved_connections"])
        conn_pct = figures.connections_pct(connections, t["state__max_connections"], t["state__reserved_connections"])
        alerts = sorted(open_alerts[t["id"]], key=lambda a: a["level"] != Alert.Level.CRITICAL)
        lag_s = t["state__replica_lag_s"]
        rows.append({
            "id": t["id"],
            "name": t["name"],
            "url": reverse("target-detail", args=[t["id"]]),
            "tags": t["tags"],
            "role": ROLE_LABELS.get(t["role"], t["role"]),
            "upstream": t["upstream__name"] or "",
            "status": t["status"],
            "status_text": STATUS_LABELS.get(t["status"], t["status"]),
            "seen": ("last seen " if t["status"] == Target.Status.DOWN else "") + _ago(t["last_seen_at"], now),
            "pool_pct": pool_pct,
            "pool_width": round(pool_pct or 0),
            "pool_label": f"{pool['checked_out']} / {capacity}" if capacity else "",
            "pool_level": figures.meter_class("pool_utilisation_pct", pool_pct),
            "is_bouncer": t["role"] == Target.Role.PGBOUNCER,
            "bouncer_waiting": t["state__bouncer_cl_waiting"],
            "conn_pct": conn_pct,
            "conn_width": round(conn_pct or 0),
            "conn_label": f"{connections} / {usable}" if connections is not None and usable else "",
            "conn_level": figures.meter_class("connections_pct", conn_pct),
            "lag_s": lag_s,
            "lag_text": f"{lag_s:.1f} s · {_bytes(t['state__replica_lag_bytes'] or 0)}" if lag_s is not None else "",
            "lag_source": LAG_SOURCE_LABELS.get(t["state__replica_lag_source"] or "", ""),
            "failing_samplers": failing[t["id"]],
            "slow": t["state__slow_queries"],
            "alerts": alerts,
        })
    keys = {
        "name": lambda r: r["name"],
        "status": lambda r: (r["status"] != Target.Status.DOWN, r["name"]),
        "pool": lambda r: -(r["pool_pct"] or 0),
        "connections": lambda r: -(r["conn_pct"] or 0),
        "lag": lambda r: -(r["lag_s"] or 0),
        "slow": lambda r: -(r["slow"] or 0),
        "alerts": lambda r: (-sum(2 if a["level"] == "critical" else 1 for a in r["alerts"]), r["name"]),
    }
    return sorted(rows, key=keys.get(sort, keys["name"]))


def _bytes(value: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def blocking_tree(sessions: list[dict]) -> list[dict]:
    """Root blockers (blocking others, blocked by no one) with what waits behind them."""
    by_pid = {s["pid"]: s for s in sessions}
    children = defaultdict(list)
    for s in sessions:
        for blocker in s.get("blocked_by") or []:
            children[blocker].append(s["pid"])
    blocked = {s["pid"] for s in sessions if s.get("blocked_by")}

    def node(pid, seen):
        return {"pid": pid, "session": by_pid.get(pid, {"pid": pid}),
                "waiting": [node(c, seen | {c}) for c in children.get(pid, []) if c not in seen]}

    return [node(pid, {pid}) for pid in list(children) if pid not in blocked]


def connection_budget(target: Target, state: TargetState | None, pool: dict) -> dict | None:
    """The seeds' budget: every console process's pool for this target at its maximum (as each
    published it: monitor processes of a large fleet keep one connection, web and job processes
    the target's pool) plus the other applications' peak, against max_connections minus reserved;
    the console's sessions on the whole server (all its targets there), as sampled; and a pool
    size suggested from demand."""
    if state is None or state.max_connections is None:
        return None
    processes = pool.get("processes") or 0
    if pool.get("size") is not None:  # as published: each process's own shape
        console_max = pool["size"] + (pool.get("max_overflow") or 0)
    else:
        console_max = processes * (target.pool_size + target.max_overflow)
    since = timezone.now() - timedelta(hours=24)
    peaks = dict(
        MetricPoint.objects.filter(target=target, metric__in=("other_connections", "console_connections"), at__gte=since)
        .values("metric").annotate(m=Max("value")).values_list("metric", "m")
    )
    others_peak = int(peaks.get("other_connections") or 0)
    server_peak = int(peaks.get("console_connections") or 0)
    usable = state.usable_connections
    worst = max(console_max, server_peak)  # the server's sessions include this target's
    checkouts = pool.get("checkouts") or 0
    mean_hold_s = (pool.get("hold_s_total") or 0) / checkouts if checkouts else None
    rate = pool.get("checkouts_per_s") or 0
    suggestion = None
    if mean_hold_s is not None and rate:
        base = rate * mean_hold_s
        suggestion = (max(1, math.ceil(base * 1.5)), max(1, math.ceil(base * 2)))
    return {
        "processes": processes, "console_max": console_max,
        "others_peak": others_peak, "total": worst + others_peak, "usable": usable,
        "server_now": state.console_connections, "server_peak": server_peak,
        "return_above": settings.MONITOR_RETURN_CONNECTIONS_ABOVE,
        "over": worst + others_peak > usable, "rate_per_s": rate, "mean_hold_ms": mean_hold_s * 1000 if mean_hold_s else None,
        "suggested": suggestion,
    }


def live_context(target: Target, params) -> dict:
    state = TargetState.objects.filter(target=target).first()
    window_name = params.get("window") if params.get("window") in WINDOWS else "1h"
    order = params.get("order") if params.get("order") in ORDERS else "total"
    pool = pools.totals(target.pk)
    sessions = state.sessions if state else []
    splits = []
    if state is not None:
        for title, counts in (("By state", state.connections_by_state), ("By application", state.connections_by_application),
                              ("By user", state.connections_by_user), ("By database", state.connections_by_database)):
            splits.append((title, sorted(counts.items(), key=lambda kv: -kv[1])[:8]))
    return {
        "state": state,
        "connection_splits": splits,
        "pool": pool,
        "budget": connection_budget(target, state, pool),
        "connections_level": figures.meter_class("connections_pct", state.connections_percent if state else None,
                                                 alerts.thresholds(target)),
        "sessions": sessions,
        "tree": blocking_tree(sessions),
        "window": window_name,
        "windows": list(WINDOWS),
        "order": order,
        "orders": ORDERS,
        "top": samplers.top_statements(target, WINDOWS[window_name], order) if target.role != Target.Role.PGBOUNCER else [],
        "own_slow": SlowStatement.objects.filter(target=target)[:10],
        "alerts": Alert.open().filter(target=target),
        "sampler_health": list(SamplerHealth.objects.filter(target=target)),
        "allow_cancel": settings.MONITOR_ALLOW_CANCEL,
        "allow_terminate": settings.MONITOR_ALLOW_TERMINATE,
        "slow_ms": settings.MONITOR_SLOW_QUERY_MS,
    }
