"""Samplers: read each target (with bounded concurrency and per-target timeouts) and store what
they saw in the console DB. A failing target is logged, marked down and skipped."""

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import sqlalchemy
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from console import engines
from console.models import Target
from console.pg import activity, bouncer, replication, statements
from console.secrets import SecretUnavailable, redact
from monitors import alerts, pools, series
from monitors.models import StatementCounter, StatementDelta, TargetState

log = logging.getLogger(__name__)

SAMPLED_ERRORS = (engines.TargetError, sqlalchemy.exc.SQLAlchemyError, psycopg.Error, SecretUnavailable, OSError)


def _each_target(sample, targets) -> dict:
    """Run `sample(target)` for every target, a bounded number at a time; never raises."""

    def guarded(target):
        try:
            return sample(target)
        except SAMPLED_ERRORS as exc:
            message = _error_text(target, exc)
            log.warning("sampling %s failed: %s", target.name, message)
            target.mark_down(message)
            TargetState.objects.update_or_create(target=target, defaults={"sample_error": message})
            series.record(target, {"up": 0.0})
            return False
        except Exception:
            log.exception("sampling %s crashed", target.name)
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=settings.MONITOR_SAMPLER_CONCURRENCY) as pool:
        results = list(pool.map(guarded, targets))
    return {"ok": sum(1 for r in results if r), "failed": sum(1 for r in results if not r)}


def _error_text(target, exc) -> str:
    if isinstance(exc, engines.TargetError):
        return str(exc)
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    try:
        password = target.password()
    except SecretUnavailable:
        password = None
    return f"{target.name}: {redact(lines[0] if lines else type(original).__name__, password)}"


# Activity, connections, replication, PgBouncer pools: every MONITOR_FAST_INTERVAL_S ---------------


def sample_fast_round(targets=None) -> dict:
    started = time.monotonic()
    targets = list(targets if targets is not None else Target.objects.all())
    summary = _each_target(sample_fast, targets)
    alerts.evaluate(targets)
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary


def sample_fast(target: Target) -> bool:
    if target.role == Target.Role.PGBOUNCER:
        return sample_bouncer(target)
    started = time.perf_counter()
    with engines.connect(target, statement_timeout_ms=settings.MONITOR_STATEMENT_TIMEOUT_MS, rollback=True) as conn:
        latency_ms = (time.perf_counter() - started) * 1000
        limits = activity.limits(conn)
        rows = activity.sessions(conn)
        in_recovery = limits["in_recovery"]
        if in_recovery:
            standby = replication.standby_status(conn)
            standbys = []
        else:
            standby = None
            standbys = replication.standbys(conn)
    target.mark_up(in_recovery=in_recovery, latency_ms=round(latency_ms, 2), server_version=limits["server_version"])
    state = summarize_activity(rows, limits)
    other_connections = state.pop("other_connections")
    state.update(summarize_replication(standby, standbys))
    state.update(sampled_at=timezone.now(), sample_error="")
    TargetState.objects.update_or_create(target=target, defaults=state)
    series.record(target, {
        "up": 1.0,
        "connections": state["connections"],
        "connections_pct": 100.0 * state["connections"] / max(1, limits["max_connections"] - limits["reserved_connections"]),
        "long_running": state["long_running"],
        "waiting_on_locks": state["waiting_on_locks"],
        "replica_lag_s": state["replica_lag_s"],
        "replica_lag_bytes": state["replica_lag_bytes"],
        "other_connections": other_connections,
        "pool_checked_out": pools.totals(target.pk)["checked_out"],
    })
    return True


def _jsonable(row: dict) -> dict:
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in row.items()}


def summarize_activity(rows: list[dict], limits: dict) -> dict:
    clients = [r for r in rows if r["backend_type"] == "client backend"]
    long_running_s = settings.MONITOR_LONG_RUNNING_S
    active = [r for r in clients if r["state"] == "active"]
    blockers = {pid for r in rows for pid in (r["blocked_by"] or [])}
    shown = [
        _jsonable({**r, "long_running": r["state"] == "active" and (r["query_seconds"] or 0) >= long_running_s})
        for r in rows
        if (r["backend_type"] == "client backend" and r["state"] not in ("idle", None)) or r["pid"] in blockers
    ]
    own_prefix = settings.ENGINE_APPLICATION_NAME
    return {
        "other_connections": sum(1 for r in clients if not (r["application_name"] or "").startswith(own_prefix)),
        "connections": len(clients),
        "max_connections": limits["max_connections"],
        "reserved_connections": limits["reserved_connections"],
        "connections_by_state": dict(Counter(r["state"] or "unknown" for r in clients)),
        "connections_by_application": dict(Counter(r["application_name"] or "(none)" for r in clients)),
        "connections_by_user": dict(Counter(r["username"] or "(none)" for r in clients)),
        "connections_by_database": dict(Counter(r["database"] or "(none)" for r in clients)),
        "long_running": sum(1 for r in active if (r["query_seconds"] or 0) >= long_running_s),
        "waiting_on_locks": sum(1 for r in rows if r["blocked_by"]),
        "longest_query_s": max((r["query_seconds"] or 0 for r in active), default=0.0),
        "sessions": sorted(shown, key=lambda r: -(r["query_seconds"] or 0))[:200],
    }


def summarize_replication(standby: dict | None, standbys: list[dict]) -> dict:
    if standby is not None:
        return {
            "replication": {"side": "standby", **standby},
            "replica_lag_s": standby["replay_lag_s"],
            "replica_lag_bytes": standby["replay_bytes_pending"] or 0.0,
        }
    return {
        "replication": {"side": "primary", "standbys": standbys},
        "replica_lag_s": max((s["replay_lag_s"] or 0.0 for s in standbys), default=None),
        "replica_lag_bytes": max((s["replay_bytes_behind"] or 0.0 for s in standbys), default=None),
    }


def sample_bouncer(target: Target) -> bool:
    started = time.perf_counter()
    with bouncer.admin_connection(
        target.host, target.port, target.username, target.password(), target.connect_timeout_s
    ) as conn:
        latency_ms = (time.perf_counter() - started) * 1000
        pools = [_plain(row) for row in bouncer.show(conn, "POOLS")]
        stats = [_plain(row) for row in bouncer.show(conn, "STATS")]
    target.mark_up(latency_ms=round(latency_ms, 2))
    cl_waiting = sum(int(p.get("cl_waiting") or 0) for p in pools)
    maxwait_s = max((float(p.get("maxwait") or 0) + float(p.get("maxwait_us") or 0) / 1e6 for p in pools), default=0.0)
    TargetState.objects.update_or_create(target=target, defaults={
        "sampled_at": timezone.now(), "sample_error": "", "bouncer_pools": pools, "bouncer_stats": stats,
        "bouncer_cl_waiting": cl_waiting, "bouncer_maxwait_s": maxwait_s,
    })
    series.record(target, {"up": 1.0, "bouncer_cl_waiting": cl_waiting, "bouncer_maxwait_s": maxwait_s})
    return True


def _plain(row: dict) -> dict:
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in row.items()}


# pg_stat_statements: every MONITOR_STATEMENTS_INTERVAL_S ------------------------------------------


def sample_statements_round(targets=None) -> dict:
    started = time.monotonic()
    if targets is None:
        targets = Target.objects.exclude(role=Target.Role.PGBOUNCER)
    summary = _each_target(sample_statements, list(targets))
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary


NOTICE_MISSING = (
    "pg_stat_statements is not installed in database {db}: run CREATE EXTENSION pg_stat_statements; "
    "there (it also needs shared_preload_libraries = 'pg_stat_statements')."
)
NOTICE_NOT_PRELOADED = (
    "pg_stat_statements is not preloaded: add it to shared_preload_libraries in postgresql.conf, "
    "restart the server, then CREATE EXTENSION pg_stat_statements;"
)


def sample_statements(target: Target) -> bool:
    with engines.connect(target, statement_timeout_ms=settings.MONITOR_STATEMENT_TIMEOUT_MS, rollback=True) as conn:
        available = statements.availability(conn)
        if not available["preloaded"] or not available["installed"]:
            rows, reset_at = None, None
        else:
            reset_at = statements.stats_reset(conn)
            rows = statements.statements(conn)
    if rows is None:
        status = "not_preloaded" if not available["preloaded"] else "missing"
        notice = NOTICE_NOT_PRELOADED if status == "not_preloaded" else NOTICE_MISSING.format(db=target.dbname)
        TargetState.objects.update_or_create(target=target, defaults={"statements_status": status, "statements_notice": notice})
        return True
    record_statement_snapshot(target, rows, reset_at, timezone.now())
    return True


@transaction.atomic
def record_statement_snapshot(target: Target, rows: list[dict], reset_at, now) -> int:
    """Store the deltas since the previous snapshot. Cumulative counters that went down, or a
    changed stats_reset, mean the view was reset: the new values are then the delta."""
    state, _ = TargetState.objects.select_for_update().get_or_create(target=target)
    previous = {(c.queryid, c.dbid, c.userid): c for c in StatementCounter.objects.filter(target=target)}
    baseline_only = state.statements_sampled_at is None
    reset = state.stats_reset_at is not None and reset_at != state.stats_reset_at
    window_start = state.statements_sampled_at or now
    deltas, counters = [], []
    for row in rows:
        key = (row["queryid"], row["dbid"], row["userid"])
        before = previous.get(key)
        after_reset = reset or (before is not None and row["calls"] < before.calls)
        if before is None or after_reset:
            calls, total_ms, n_rows = row["calls"], row["total_exec_ms"], row["rows"]
        else:
            calls, total_ms, n_rows = row["calls"] - before.calls, row["total_exec_ms"] - before.total_exec_ms, row["rows"] - before.rows
        if calls > 0 and not baseline_only:
            deltas.append(StatementDelta(
                target=target, queryid=key[0], dbid=key[1], userid=key[2], window_start=window_start,
                window_end=now, calls=calls, total_exec_ms=max(0.0, total_ms), rows=max(0, n_rows), after_reset=after_reset,
            ))
        counters.append(StatementCounter(
            target=target, queryid=key[0], dbid=key[1], userid=key[2], calls=row["calls"],
            total_exec_ms=row["total_exec_ms"], rows=row["rows"], query=row["query"] or "", seen_at=now,
        ))
    StatementDelta.objects.bulk_create(deltas, batch_size=1000)
    StatementCounter.objects.bulk_create(
        counters, batch_size=1000, update_conflicts=True, unique_fields=["target", "queryid", "dbid", "userid"],
        update_fields=["calls", "total_exec_ms", "rows", "query", "seen_at"],
    )
    if reset:
        state.statements_notice = f"pg_stat_statements was reset at {reset_at:%Y-%m-%d %H:%M:%S} UTC; deltas restart from there."
    elif state.statements_status != "ok":
        state.statements_notice = ""
    state.statements_sampled_at = now
    state.stats_reset_at = reset_at
    state.statements_status = "ok"
    state.slow_queries = slow_query_count(target, now)
    state.save()
    return len(deltas)


def top_statements(target: Target, window: timedelta, order: str = "total", limit: int = 25, now=None) -> list[dict]:
    """Statements ranked over a window, from the stored deltas (never from the live view)."""
    now = now or timezone.now()
    ordering = {"total": "-total_exec_ms", "mean": "-mean_ms", "calls": "-calls"}[order]
    rows = (
        StatementDelta.objects.filter(target=target, window_end__gt=now - window)
        .values("queryid")
        .annotate(calls=Sum("calls"), total_exec_ms=Sum("total_exec_ms"), rows=Sum("rows"))
        .annotate(mean_ms=F("total_exec_ms") / F("calls"))
        .order_by(ordering)[:limit]
    )
    rows = list(rows)
    texts = dict(
        StatementCounter.objects.filter(target=target, queryid__in=[r["queryid"] for r in rows]).values_list("queryid", "query")
    )
    for row in rows:
        row["query"] = texts.get(row["queryid"], "")
    return rows


def slow_query_count(target: Target, now) -> int:
    window = StatementDelta.objects.filter(target=target, window_end__gt=now - timedelta(hours=1))
    per_query = window.values("queryid").annotate(calls=Sum("calls"), total=Sum("total_exec_ms"))
    return sum(1 for q in per_query if q["calls"] and q["total"] / q["calls"] >= settings.MONITOR_SLOW_QUERY_MS)
