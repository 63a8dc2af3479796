"""What the fleet overview and the live target page show, read from samples only."""

import functools
import math
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
import pglast
from django.db.models import Max, Sum
from django.urls import reverse
from django.utils import timezone

from console.models import Target
from monitors import alerts, charts, figures, pools, samplers
from monitors.models import (
    Alert, LagSource, MetricPoint, SamplerHealth, SlowStatement, StatementCounter, StatementDelta, TargetState,
)

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6),
           "24h": timedelta(hours=24), "7d": timedelta(days=7)}
ORDERS = ("total", "mean", "calls")
# The overview's columns, in order: sort key -> (header, header's title). Every header sorts.
SORTS = {
    "name": ("Target", ""), "role": ("Role", ""), "status": ("Status", "down first"), "pool": ("Console pool", ""),
    "tps": ("TPS", "commits + rollbacks per second, all databases; the trend is the last samples, its scale beside it"),
    "sessions": ("Active / waiting", "client sessions running a statement / waiting on a lock"),
    "longest_query": ("Longest query", "the longest-running active statement"),
    "oldest_xact": ("Oldest xact", "the oldest open transaction of a client session"),
    "cache_hit": ("Cache hit", "shared buffer hits of the target's database, since its statistics were reset; lowest first"),
    "size": ("Size", "the target's database (pg_database_size)"),
    "xid_age": ("XID age", "the oldest database's age(datfrozenxid) as a share of the 2^31 before wraparound"),
    "version": ("Version", ""), "uptime": ("Uptime", "since the server started; the latest restart first"),
    "connections": ("Connections", ""), "lag": ("Worst replica lag", ""),
    "slow": ("Slow queries", "queries with a mean above MONITOR_SLOW_QUERY_MS in the last hour"),
    "alerts": ("Alerts", ""),
}
TPS_TREND_POINTS = 30  # the overview's TPS sparkline: the last N fast samples
# The overview reads only the figures it shows, as plain values: no model per row.
OVERVIEW_FIELDS = (
    "id", "name", "role", "status", "last_seen_at", "tags", "upstream__name",
    "state__connections", "state__max_connections", "state__reserved_connections", "state__replica_lag_s",
    "state__replica_lag_bytes", "state__replica_lag_source", "state__slow_queries", "state__bouncer_cl_waiting",
    "server_version", "state__tps", "state__connections_by_state", "state__waiting_on_locks", "state__longest_query_s",
    "state__oldest_xact_s", "state__cache_hit_pct", "state__database_size_bytes", "state__xid_age_pct",
    "state__server_started_at",
)
ROLE_LABELS = dict(Target.Role.choices)
SAMPLER_LABELS = dict(SamplerHealth.Sampler.choices)
LAG_SOURCE_LABELS = dict(LagSource.choices)
STATUS_LABELS = dict(Target.Status.choices)




def _ago(moment, now) -> str:
    from console.templatetags.console_tags import _span

    return f"{_span((now - moment).total_seconds())} ago" if moment else "never"


def tps_trends(target_ids, now=None) -> dict[int, list[tuple]]:
    """The last TPS_TREND_POINTS tps points of each target, oldest first, in one query."""
    since = (now or timezone.now()) - timedelta(seconds=TPS_TREND_POINTS * settings.MONITOR_FAST_INTERVAL_S)
    trends = defaultdict(list)
    for target_id, at, value in (MetricPoint.objects.filter(target_id__in=target_ids, metric="tps", at__gte=since)
                                 .order_by("at").values_list("target_id", "at", "value")):
        trends[target_id].append((at, value))
    return {target_id: points[-TPS_TREND_POINTS:] for target_id, points in trends.items()}


def _tps_trend(points) -> dict:
    values = [v for _at, v in points]
    return {"svg": charts.sparkline(points, width=80, height=18, unit=" tx/s"),
            "scale": f"{min(values):,.0f}–{max(values):,.0f}" if len(values) > 1 else ""}


def _version_key(version: str | None) -> tuple:
    head = (version or "").split()[0] if version else ""
    return tuple(int(part) for part in head.split(".") if part.isdigit()) or (0,)


def _span_or_dash(seconds) -> str:
    from console.templatetags.console_tags import _span

    return "—" if seconds is None else _span(seconds)


def _last(value):
    """A descending sort key that puts unknown figures last."""
    return (value is None, -(value or 0))


class _Overview:
    """What every overview row is read against, read once per request: the console's pools, open
    alerts and failing samplers by target."""

    def __init__(self):
        self.now = timezone.now()
        self.pools = pools.totals_by_target()
        self.alerts = defaultdict(list)
        for target_id, level, message in Alert.open().values_list("target_id", "level", "message"):
            self.alerts[target_id].append({"level": level, "message": message,
                                           "short": message if len(message) <= 40 else message[:39] + "…"})
        self.failing = defaultdict(list)
        for target_id, sampler, since in SamplerHealth.objects.filter(consecutive_failures__gt=0).values_list(
                "target_id", "sampler", "failing_since"):
            self.failing[target_id].append(f"{SAMPLER_LABELS.get(sampler, sampler)} failing since {since:%H:%M:%S} UTC")

    def pool_pct(self, t: dict):
        return figures.pool_utilisation_pct(self.pools.get(t["id"]))

    def alert_score(self, t: dict) -> int:
        return sum(2 if a["level"] == Alert.Level.CRITICAL else 1 for a in self.alerts[t["id"]])


def _active(t: dict):
    by_state = t["state__connections_by_state"]
    return None if by_state is None else by_state.get("active", 0)


def _conn_pct(t: dict):
    return figures.connections_pct(t["state__connections"], t["state__max_connections"], t["state__reserved_connections"])


# Sort keys: the fields each reads and how; the whole fleet is sorted on those few fields, and only
# the rows of the page shown are read in full and formatted.
_SORT_KEYS = {
    "name": ((), lambda t, o: t["name"]),
    "role": (("role",), lambda t, o: (ROLE_LABELS.get(t["role"], t["role"]), t["name"])),
    "status": (("status",), lambda t, o: (t["status"] != Target.Status.DOWN, t["name"])),
    "pool": ((), lambda t, o: -(o.pool_pct(t) or 0)),
    "tps": (("state__tps",), lambda t, o: _last(t["state__tps"])),
    "sessions": (("state__connections_by_state", "state__waiting_on_locks"),
                 lambda t, o: _last(None if _active(t) is None else _active(t) + (t["state__waiting_on_locks"] or 0))),
    "longest_query": (("state__longest_query_s",), lambda t, o: _last(t["state__longest_query_s"])),
    "oldest_xact": (("state__oldest_xact_s",), lambda t, o: _last(t["state__oldest_xact_s"])),
    "cache_hit": (("state__cache_hit_pct",),  # the worst first
                  lambda t, o: (t["state__cache_hit_pct"] is None, t["state__cache_hit_pct"] or 0)),
    "size": (("state__database_size_bytes",), lambda t, o: _last(t["state__database_size_bytes"])),
    "xid_age": (("state__xid_age_pct",), lambda t, o: _last(t["state__xid_age_pct"])),
    "version": (("server_version",), lambda t, o: (not t["server_version"], _version_key(t["server_version"]), t["name"])),
    "uptime": (("state__server_started_at",),  # the latest restart first
               lambda t, o: _last(t["state__server_started_at"] and t["state__server_started_at"].timestamp())),
    "connections": (("state__connections", "state__max_connections", "state__reserved_connections"),
                    lambda t, o: -(_conn_pct(t) or 0)),
    "lag": (("state__replica_lag_s",), lambda t, o: -(t["state__replica_lag_s"] or 0)),
    "slow": (("state__slow_queries",), lambda t, o: -(t["state__slow_queries"] or 0)),
    "alerts": ((), lambda t, o: (-o.alert_score(t), t["name"])),
}


def overview_rows(targets, sort: str = "name") -> "OverviewRows":
    """The overview of `targets` (a Target queryset), sorted by `sort` over all of them; a row is
    read in full and formatted when it is shown (see OverviewRows)."""
    overview = _Overview()
    fields, key = _SORT_KEYS.get(sort, _SORT_KEYS["name"])
    keys = sorted(targets.values("id", "name", *fields), key=lambda t: key(t, overview))
    return OverviewRows(targets, keys, overview)


def _overview_row(t: dict, o: _Overview) -> dict:
    """One ready-to-print row: formatting happens here, once."""
    pool = o.pools.get(t["id"])
    capacity = (pool["size"] + pool["max_overflow"]) if pool else 0
    pool_pct = o.pool_pct(t)
    connections = t["state__connections"]
    usable = figures.usable_connections(t["state__max_connections"], t["state__reserved_connections"])
    conn_pct = _conn_pct(t)
    lag_s = t["state__replica_lag_s"]
    started = t["state__server_started_at"]
    uptime_s = (o.now - started).total_seconds() if started else None
    size = t["state__database_size_bytes"]
    return {
        "id": t["id"],
        "name": t["name"],
        "url": reverse("target-detail", args=[t["id"]]),
        "tags": t["tags"],
        "role": ROLE_LABELS.get(t["role"], t["role"]),
        "upstream": t["upstream__name"] or "",
        "status": t["status"],
        "status_text": STATUS_LABELS.get(t["status"], t["status"]),
        "seen": ("last seen " if t["status"] == Target.Status.DOWN else "") + _ago(t["last_seen_at"], o.now),
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
        "failing_samplers": o.failing[t["id"]],
        "slow": t["state__slow_queries"],
        "alerts": sorted(o.alerts[t["id"]], key=lambda a: a["level"] != Alert.Level.CRITICAL),
        "tps": t["state__tps"],
        "active": _active(t),
        "waiting": t["state__waiting_on_locks"],
        "longest_query_s": t["state__longest_query_s"],
        "longest_query": _span_or_dash(t["state__longest_query_s"]),
        "oldest_xact_s": t["state__oldest_xact_s"],
        "oldest_xact": _span_or_dash(t["state__oldest_xact_s"]),
        "cache_hit_pct": t["state__cache_hit_pct"],
        "size_bytes": size,
        "size": _bytes(size) if size is not None else "—",
        "xid_age_pct": t["state__xid_age_pct"],
        "version": t["server_version"] or "",
        "uptime_s": uptime_s,
        "uptime": _span_or_dash(uptime_s),
    }


class OverviewRows(list):
    """The sorted overview as the targets' sort keys; the rows taken from it (the Paginator's page,
    or all of them when iterated) are read in full then, with their TPS trends, in two queries."""

    def __init__(self, targets, keys: list[dict], overview: _Overview):
        super().__init__(keys)
        self.targets = targets
        self.overview = overview

    def _rows(self, keys) -> list[dict]:
        ids = [k["id"] for k in keys]
        values = {t["id"]: t for t in self.targets.filter(pk__in=ids).values(*OVERVIEW_FIELDS)}
        rows = [_overview_row(values[i], self.overview) for i in ids if i in values]
        trends = tps_trends(ids)
        for row in rows:
            row["tps_trend"] = _tps_trend(trends.get(row["id"], []))
        return rows

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._rows(super().__getitem__(index))
        return self._rows([super().__getitem__(index)])[0]

    def __iter__(self):
        return iter(self._rows(list.__iter__(self)))


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
        "explain_sql": explain_prefill(target, params.get("explain")),
    }


def explain_prefill(target: Target, queryid) -> str:
    """The normalised text of a statement (?explain=<queryid>) for the EXPLAIN form, placeholders kept."""
    try:
        queryid = int(queryid)
    except (TypeError, ValueError):
        return ""
    texts = StatementCounter.objects.filter(target=target, queryid=queryid).order_by("-toplevel").values_list("query", flat=True)
    return texts.first() or ""  # the top-level text (a nested one may read "EXPLAIN ...")


# The slow-query page -----------------------------------------------------------------------------

UTILITY_NODES = {"TransactionStmt", "VariableSetStmt", "VariableShowStmt", "DiscardStmt", "DeallocateStmt"}
UTILITY_PREFIXES = ("BEGIN", "START TRANSACTION", "COMMIT", "END", "ROLLBACK", "ABORT", "SET", "RESET", "SAVEPOINT",
                    "RELEASE", "SHOW", "DISCARD", "DEALLOCATE")


@functools.lru_cache(maxsize=4096)
def is_utility(query: str) -> bool:
    """BEGIN, COMMIT, ROLLBACK, SET, SAVEPOINT, RELEASE, SHOW, DISCARD, DEALLOCATE: by the parse
    tree of the normalised text, by its first words when it does not parse (a truncated text)."""
    try:
        statements = pglast.parse_sql(query)
    except pglast.parser.ParseError:
        words = " ".join(query.split()).upper()
        return any(words == p or words.startswith(p + " ") or words.startswith(p + ";") for p in UTILITY_PREFIXES)
    return bool(statements) and all(type(s.stmt).__name__ in UTILITY_NODES for s in statements)


def own_logins(target: Target) -> set[str]:
    """The console's own logins on a target: its monitor and change users."""
    return {name for name in (target.username, target.change_username) if name}


def slow_query_page(target: Target, window: timedelta, show_own: bool = False, database: str = "", user: str = "",
                    now=None) -> dict:
    """Statements over a window from the stored deltas, top-level and nested runs added up per
    (query, database, user); the console's own logins hidden unless `show_own`; utility
    statements added up into one row."""
    now = now or timezone.now()
    counters = list(StatementCounter.objects.filter(target=target).order_by("toplevel")
                    .values("queryid", "dbid", "userid", "query", "username", "database"))
    texts = {c["queryid"]: c["query"] for c in counters}  # the top-level text wins (nested: "EXPLAIN ...")
    users = {c["userid"]: c["username"] or str(c["userid"]) for c in counters}
    databases = {c["dbid"]: c["database"] or str(c["dbid"]) for c in counters}
    own = own_logins(target)
    deltas = StatementDelta.objects.filter(target=target, window_end__gt=now - window)
    hidden_own = 0
    if not show_own:
        own_ids = [uid for uid, name in users.items() if name in own]
        hidden_own = deltas.filter(userid__in=own_ids).values("queryid", "userid", "dbid").distinct().count()
        deltas = deltas.exclude(userid__in=own_ids)
    if user:
        deltas = deltas.filter(userid__in=[uid for uid, name in users.items() if name == user])
    if database:
        deltas = deltas.filter(dbid__in=[did for did, name in databases.items() if name == database])
    grouped = list(
        deltas.values("queryid", "userid", "dbid")
        .annotate(calls=Sum("calls"), total_exec_ms=Sum("total_exec_ms"), rows=Sum("rows"), max_exec_ms=Max("max_exec_ms"),
                  shared_blks_hit=Sum("shared_blks_hit"), shared_blks_read=Sum("shared_blks_read"))
    )
    total_ms = sum(r["total_exec_ms"] for r in grouped) or 0.0
    rows, utility = [], {"statements": 0, "calls": 0, "total_exec_ms": 0.0, "rows": 0, "max_exec_ms": None,
                         "shared_blks_hit": 0, "shared_blks_read": 0}
    for r in grouped:
        r.update(query=texts.get(r["queryid"], ""), username=users.get(r["userid"], str(r["userid"])),
                 database=databases.get(r["dbid"], str(r["dbid"])))
        if is_utility(r["query"]):
            utility["statements"] += 1
            for field in ("calls", "total_exec_ms", "rows", "shared_blks_hit", "shared_blks_read"):
                utility[field] += r[field] or 0
            if r["max_exec_ms"] is not None:
                utility["max_exec_ms"] = max(utility["max_exec_ms"] or 0.0, r["max_exec_ms"])
        else:
            rows.append(r)
    rows.sort(key=lambda r: -r["total_exec_ms"])
    for r in rows + [utility]:
        r["mean_ms"] = r["total_exec_ms"] / r["calls"] if r["calls"] else None
        r["total_pct"] = 100.0 * r["total_exec_ms"] / total_ms if total_ms else None
        blocks = (r["shared_blks_hit"] or 0) + (r["shared_blks_read"] or 0)
        r["cache_hit_pct"] = 100.0 * r["shared_blks_hit"] / blocks if blocks else None
    return {
        "rows": rows, "utility": utility if utility["statements"] else None, "total_exec_ms": total_ms,
        "own_logins": sorted(own), "hidden_own": hidden_own,
        "users": sorted(set(users.values())), "databases": sorted(set(databases.values())),
    }
