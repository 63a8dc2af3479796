"""What the fleet overview and the live target page show, read from samples only."""

import math
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from console.models import Target
from monitors import charts, pools, samplers, series
from monitors.models import Alert, MetricPoint, SlowStatement, TargetState

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6),
           "24h": timedelta(hours=24), "7d": timedelta(days=7)}
ORDERS = ("total", "mean", "calls")
SORTS = ("name", "status", "pool", "connections", "lag", "slow", "alerts")
# The overview shows scalar figures only: leave the large JSON documents in the database.
OVERVIEW_DEFERRED = tuple(
    f"state__{name}" for name in (
        "connections_by_state", "connections_by_application", "connections_by_user", "connections_by_database",
        "sessions", "replication", "bouncer_pools", "bouncer_stats", "statements_notice", "sample_error",
    )
) + ("upstream__password_encrypted", "upstream__last_error", "upstream__tags", "last_error", "password_encrypted")


def meter_level(pct) -> str:
    if pct is None:
        return ""
    return "meter-critical" if pct >= 90 else "meter-warning" if pct >= 70 else ""


def _ago(moment, now) -> str:
    from console.templatetags.console_tags import _span

    return f"{_span((now - moment).total_seconds())} ago" if moment else "never"


def overview_rows(targets, sort: str = "name") -> list[dict]:
    """One ready-to-print row per target: formatting happens here, once, not in the template."""
    pool_totals = pools.totals_by_target()
    open_alerts = defaultdict(list)
    for alert in Alert.open().only("target_id", "level", "message"):
        open_alerts[alert.target_id].append(alert)
    now = timezone.now()
    rows = []
    for target in targets:
        state = getattr(target, "state", None)
        pool = pool_totals.get(target.pk)
        capacity = (pool["size"] + pool["max_overflow"]) if pool else 0
        pool_pct = 100.0 * pool["checked_out"] / capacity if capacity else None
        conn_pct = state.connections_percent if state else None
        alerts = sorted(open_alerts[target.pk], key=lambda a: a.level != Alert.Level.CRITICAL)
        lag_s = state.replica_lag_s if state else None
        rows.append({
            "target": target,
            "name": target.name,
            "url": target.get_absolute_url(),
            "role": target.get_role_display(),
            "upstream": target.upstream.name if target.upstream_id else "",
            "status": target.status,
            "status_text": target.get_status_display(),
            "seen": ("last seen " if target.status == Target.Status.DOWN else "") + _ago(target.last_seen_at, now),
            "pool_pct": pool_pct,
            "pool_width": round(pool_pct or 0),
            "pool_label": f"{pool['checked_out']} / {capacity}" if capacity else "",
            "pool_level": meter_level(pool_pct),
            "is_bouncer": target.role == Target.Role.PGBOUNCER,
            "bouncer_waiting": state.bouncer_cl_waiting if state else None,
            "conn_pct": conn_pct,
            "conn_width": round(conn_pct or 0),
            "conn_label": f"{state.connections} / {state.usable_connections}" if state and state.connections is not None else "",
            "conn_level": meter_level(conn_pct),
            "lag_s": lag_s,
            "lag_text": f"{lag_s:.1f} s · {_bytes(state.replica_lag_bytes or 0)}" if lag_s is not None else "",
            "slow": state.slow_queries if state else None,
            "alerts": alerts,
            "worst_alert": alerts[0].level if alerts else "",
        })
    keys = {
        "name": lambda r: r["name"],
        "status": lambda r: (r["status"] != Target.Status.DOWN, r["name"]),
        "pool": lambda r: -(r["pool_pct"] or 0),
        "connections": lambda r: -(r["conn_pct"] or 0),
        "lag": lambda r: -(r["lag_s"] or 0),
        "slow": lambda r: -(r["slow"] or 0),
        "alerts": lambda r: (-sum(2 if a.level == "critical" else 1 for a in r["alerts"]), r["name"]),
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
    """The seeds' budget: every configured pool's maximum plus the other applications' peak,
    against max_connections minus reserved; and a pool size suggested from demand."""
    if state is None or state.max_connections is None:
        return None
    processes = pool.get("processes") or 0
    console_max = processes * (target.pool_size + target.max_overflow)
    since = timezone.now() - timedelta(hours=24)
    others_peak = MetricPoint.objects.filter(target=target, metric="other_connections", at__gte=since).aggregate(m=Max("value"))["m"]
    others_peak = int(others_peak or 0)
    usable = state.usable_connections
    checkouts = pool.get("checkouts") or 0
    mean_hold_s = (pool.get("hold_s_total") or 0) / checkouts if checkouts else None
    rate = pool.get("checkouts_per_s") or 0
    suggestion = None
    if mean_hold_s is not None and rate:
        base = rate * mean_hold_s
        suggestion = (max(1, math.ceil(base * 1.5)), max(1, math.ceil(base * 2)))
    return {
        "processes": processes, "per_process": target.pool_size + target.max_overflow, "console_max": console_max,
        "others_peak": others_peak, "total": console_max + others_peak, "usable": usable,
        "over": console_max + others_peak > usable, "rate_per_s": rate, "mean_hold_ms": mean_hold_s * 1000 if mean_hold_s else None,
        "suggested": suggestion,
    }


def live_context(target: Target, params) -> dict:
    state = TargetState.objects.filter(target=target).first()
    window_name = params.get("window") if params.get("window") in WINDOWS else "1h"
    order = params.get("order") if params.get("order") in ORDERS else "total"
    pool = pools.totals(target.pk)
    sessions = state.sessions if state else []
    spark = {
        name: charts.sparkline(series.recent(target.pk, metric, minutes=30), unit=unit)
        for name, metric, unit in (
            ("connections", "connections", ""), ("lag_s", "replica_lag_s", " s"), ("lag_bytes", "replica_lag_bytes", " B"),
            ("cl_waiting", "bouncer_cl_waiting", ""), ("pool", "pool_checked_out", ""),
        )
    }
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
        "sessions": sessions,
        "tree": blocking_tree(sessions),
        "window": window_name,
        "windows": list(WINDOWS),
        "order": order,
        "orders": ORDERS,
        "top": samplers.top_statements(target, WINDOWS[window_name], order) if target.role != Target.Role.PGBOUNCER else [],
        "own_slow": SlowStatement.objects.filter(target=target)[:10],
        "alerts": Alert.open().filter(target=target),
        "spark": spark,
        "allow_cancel": settings.MONITOR_ALLOW_CANCEL,
        "allow_terminate": settings.MONITOR_ALLOW_TERMINATE,
        "slow_ms": settings.MONITOR_SLOW_QUERY_MS,
    }
