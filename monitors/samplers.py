"""Samplers: read each target (with bounded concurrency and per-target timeouts) and store what
they saw in the console DB. A target that does not answer is logged, marked down and skipped.
Every sampler's outcome on every target is kept (SamplerHealth), so a sampler that fails is shown
where its figures are, instead of leaving them frozen."""

import logging
import time
from collections import Counter
from datetime import timedelta

import psycopg
import sqlalchemy
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from console import engines, fanout
from console.models import Target
from console.pg import activity, bouncer, heartbeat, replication, statements
from console.secrets import SecretUnavailable, driver_message
from monitors import alerts, figures, pools, series
from monitors.models import (
    LagSource, SamplerHealth, SamplingChunk, SamplingRound, StatementCounter, StatementDelta, TargetState,
)

log = logging.getLogger(__name__)

SAMPLED_ERRORS = (engines.TargetError, sqlalchemy.exc.SQLAlchemyError, psycopg.Error, SecretUnavailable, OSError)
Sampler = SamplerHealth.Sampler


def _each_target(sampler: str, sample, targets, marks_down: bool = True, return_connections: bool = False) -> dict:
    """Run `sample(target)` for every target, a bounded number at a time, and record how each
    went; never raises. A target that does not answer is marked down if `marks_down`. With
    `return_connections`, each target's connections are closed once it is sampled (those of an
    upstream, which its replicas' samples also read, once all are)."""
    upstreams = {t.upstream_id for t in targets if t.upstream_id} if return_connections else set()
    succeeded = []

    def guarded(target):
        try:
            sample(target)
        except Exception as exc:
            _record_failure(sampler, target, exc, marks_down)
            return False
        else:
            succeeded.append(target.pk)
            return True
        finally:
            if return_connections and target.pk not in upstreams:
                engines.release(target.pk)
            if not connection.in_atomic_block:  # a sample in the caller's own transaction (a test)
                connection.close_if_unusable_or_obsolete()  # after a console DB error, say

    # Each thread takes the next target until none is left and keeps one console DB connection
    # for all of them.
    results = fanout.run_bounded(list(targets), guarded, settings.MONITOR_SAMPLER_CONCURRENCY)
    for target_id in upstreams:
        engines.release(target_id)
    SamplerHealth.record_successes(succeeded, sampler)
    return {"ok": sum(1 for r in results if r), "failed": sum(1 for r in results if not r)}


def _record_failure(sampler: str, target: Target, exc: Exception, marks_down: bool) -> None:
    message = _error_text(target, exc)
    if isinstance(exc, SAMPLED_ERRORS):
        log.warning("%s sampler failed on %s: %s", sampler, target.name, message)
    else:
        log.error("%s sampler crashed on %s: %s", sampler, target.name, message, exc_info=exc)
    try:
        SamplerHealth.record_failure(target.pk, sampler, message)
        if marks_down and _target_unreachable(exc):
            target.mark_down(message)
            TargetState.objects.update_or_create(target=target, defaults={"sample_error": message})
            series.record(target, {"up": 0.0})
    except Exception:
        log.exception("could not record the failure of the %s sampler on %s", sampler, target.name)


def _target_unreachable(exc: Exception) -> bool:
    """The target did not answer (connect, pool, timeout, lost connection), as opposed to one
    query of a sampler failing (a missing view, a privilege, the console's own database)."""
    if not isinstance(exc, SAMPLED_ERRORS):
        return False
    original = getattr(exc, "orig", None) or exc
    return not isinstance(original, psycopg.Error) or isinstance(original, psycopg.OperationalError)


def _error_text(target, exc) -> str:
    if isinstance(exc, engines.TargetError):
        return str(exc)
    return f"{target.name}: {driver_message(exc, *target.known_passwords(), with_type=True)}"


# Rounds in chunks, shared by the monitor workers ---------------------------------------------------


def plan_round(sampler: str, now=None) -> tuple[SamplingRound, list[SamplingChunk]]:
    """A round of `sampler` (fast or statements) over the fleet, in chunks of MONITOR_CHUNK_SIZE
    targets; it expires after one interval, when the next round begins."""
    now = now or timezone.now()
    targets = Target.objects.order_by("pk")
    if sampler == Sampler.STATEMENTS:
        targets = targets.exclude(role=Target.Role.PGBOUNCER)
    ids = list(targets.values_list("pk", flat=True))
    interval_s = settings.MONITOR_FAST_INTERVAL_S if sampler == Sampler.FAST else settings.MONITOR_STATEMENTS_INTERVAL_S
    size = settings.MONITOR_CHUNK_SIZE
    with transaction.atomic():
        sampling_round = SamplingRound.objects.create(
            sampler=sampler, started_at=now, expires_at=now + timedelta(seconds=interval_s), targets=len(ids),
            returns_connections=Target.objects.count() > settings.MONITOR_RETURN_CONNECTIONS_ABOVE,
            finished_at=None if ids else now,
        )
        chunks = SamplingChunk.objects.bulk_create(
            [SamplingChunk(round=sampling_round, target_ids=ids[i:i + size]) for i in range(0, len(ids), size)]
        )
    return sampling_round, chunks


def sample_chunk(chunk_id: int) -> dict:
    """Sample one chunk of a round in this process; skipped when it is done already or its round
    has expired."""
    chunk = SamplingChunk.claim(chunk_id, pools.process_name())
    if chunk is None:
        log.info("sampling chunk %s skipped: done already, or its round expired", chunk_id)
        return {"chunk": chunk_id, "skipped": True}
    returning = chunk.round.returns_connections
    engines.keep_one_connection_per_target(returning)
    targets = Target.objects.select_related("upstream").filter(pk__in=chunk.target_ids).order_by("pk")
    rounds = {Sampler.FAST: sample_fast_round, Sampler.STATEMENTS: sample_statements_round}
    summary = rounds[chunk.round.sampler](targets, return_connections=returning)
    chunk.finish(summary["ok"], summary["failed"])
    return {"chunk": chunk_id, **summary}


def forget_rounds(now=None) -> int:
    """Rounds are bookkeeping: an hour of them is plenty to see how the workers share them."""
    before = (now or timezone.now()) - timedelta(hours=1)
    deleted, _ = SamplingRound.objects.filter(started_at__lt=before).delete()
    return deleted


# Activity, connections, replication, PgBouncer pools: every MONITOR_FAST_INTERVAL_S ---------------


class Shared:
    """What the samples of one round (or chunk) share, read once for all its targets: the console's
    checked-out connections by target, each target's previous transaction counter; and the points
    they take, written together at the end (`flush`)."""

    def __init__(self, targets):
        ids = [t.pk for t in targets]
        self.checked_out = {target_id: pool["checked_out"] for target_id, pool in pools.totals_by_target().items()}
        self.xact_before = series.latest(ids, "xact_total")
        self.points = series.Batch()

    def flush(self) -> None:
        self.points.flush()


def sample_fast_round(targets=None, return_connections: bool = False) -> dict:
    started = time.monotonic()
    targets = list(targets if targets is not None else Target.objects.select_related("upstream"))
    shared = Shared(targets)
    summary = _each_target(Sampler.FAST, lambda target: sample_fast(target, shared), targets,
                           return_connections=return_connections)
    shared.flush()
    # After the round's (or chunk's) reads, so that no standby read there has this heartbeat in flight.
    beating = [t for t in targets if t.heartbeat_enabled and t.role == Target.Role.PRIMARY and t.status != Target.Status.DOWN]
    _each_target(Sampler.HEARTBEAT, write_heartbeat, beating, marks_down=False, return_connections=return_connections)
    alerts.evaluate(targets)
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary


def sample_fast(target: Target, shared: Shared | None = None) -> bool:
    """One target's activity, connections and replication; with `shared` (a round's), its points
    are written with the round's, else here."""
    if shared is None:
        shared = Shared([target])
        sample_fast(target, shared)
        shared.flush()
        return True
    if target.role == Target.Role.PGBOUNCER:
        return sample_bouncer(target, shared)
    started = time.perf_counter()
    with engines.connect(target, statement_timeout_ms=settings.MONITOR_STATEMENT_TIMEOUT_MS, rollback=True) as conn:
        latency_ms = (time.perf_counter() - started) * 1000
        limits = activity.limits(conn)
        rows = activity.sessions(conn)
        in_recovery = limits["in_recovery"]
        if in_recovery:
            standby = replication.standby_status(conn)
            standby["heartbeat_at"] = heartbeat.newest(conn) if _reads_heartbeat(target) else None
            standbys = []
        else:
            standby = None
            standbys = replication.standbys(conn)
    target.mark_up(in_recovery=in_recovery, latency_ms=round(latency_ms, 2), server_version=limits["server_version"])
    state = summarize_activity(rows, limits)
    other_connections = state.pop("other_connections")
    state.update(summarize_replication(standby, standbys, primary_view(target) if in_recovery else None))
    now = timezone.now()
    tps = series.rate(shared.xact_before.get(target.pk), limits["xact_total"], now)
    state.update({name: limits[name] for name in activity.LOAD_FIELDS}, tps=tps, sampled_at=now, sample_error="")
    if not TargetState.objects.filter(target=target).update(**state):  # one statement, but the first time
        TargetState.objects.update_or_create(target=target, defaults=state)
    by_state = state["connections_by_state"]
    shared.points.record(target, {
        "up": 1.0,
        "connections": state["connections"],
        "connections_pct": figures.connections_pct(state["connections"], limits["max_connections"], limits["reserved_connections"]),
        "long_running": state["long_running"],
        "waiting_on_locks": state["waiting_on_locks"],
        "replica_lag_s": state["replica_lag_s"],
        "replica_lag_bytes": state["replica_lag_bytes"],
        "other_connections": other_connections,
        "console_connections": state["console_connections"],
        "pool_checked_out": shared.checked_out.get(target.pk),
        "connections_active": by_state.get("active", 0),
        "connections_idle": by_state.get("idle", 0),
        "connections_idle_in_transaction": by_state.get("idle in transaction", 0) + by_state.get("idle in transaction (aborted)", 0),
        "xact_total": limits["xact_total"],
        "tps": tps,
    }, at=now)
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
    others = sum(1 for r in clients if not (r["application_name"] or "").startswith(own_prefix))
    return {
        "other_connections": others,
        "console_connections": len(clients) - others + 1,  # + the sampler's own, not among the rows
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


# Replication lag ---------------------------------------------------------------------------------


def _reads_heartbeat(replica: Target) -> bool:
    """A standby reads the heartbeat when its primary writes one, or when its primary is not
    registered here (someone else's console may write it)."""
    return replica.upstream is None or replica.upstream.heartbeat_enabled


def primary_view(replica: Target) -> dict | None:
    """The replica's row in its registered primary's pg_stat_replication (`error` says why there
    is none). Its name there (application_name) is the replica target's name, else the primary's
    only standby is taken."""
    upstream = replica.upstream
    if upstream is None:
        return None
    if upstream.status == Target.Status.DOWN:
        return {"upstream": upstream.name, "error": f"{upstream.name} is down"}
    try:
        with engines.connect(upstream, statement_timeout_ms=settings.MONITOR_STATEMENT_TIMEOUT_MS, rollback=True) as conn:
            rows = replication.standbys(conn)
    except SAMPLED_ERRORS as exc:
        return {"upstream": upstream.name, "error": _error_text(upstream, exc)}
    named = [r for r in rows if r["application_name"] == replica.name]
    row = named[0] if named else rows[0] if len(rows) == 1 else None
    if row is None:
        names = ", ".join(r["application_name"] or "(unnamed)" for r in rows) or "none"
        return {"upstream": upstream.name, "error": f"no standby of {upstream.name} is named {replica.name} (standbys: {names})"}
    if row["replay_lag_s"] is None:
        return {"upstream": upstream.name, "error": f"{replica.name} has not reported replaying anything to {upstream.name} yet"}
    return {"upstream": upstream.name, "error": "", **row}


def own_lag_s(standby: dict) -> float | None:
    """The replica's own view: 0 while it streams and has replayed all it received; else the age
    of the newest change it replayed, known only with a heartbeat (without one, a primary that
    wrote nothing for a while would count as lag)."""
    if standby["replayed_all_received"] and standby["receiver_status"] == "streaming":
        return 0.0
    if standby["heartbeat_at"] is None:
        return None
    newest = max(t for t in (standby["heartbeat_at"], standby["last_replayed_commit_at"]) if t is not None)
    return max(0.0, (standby["now"] - newest).total_seconds())


def summarize_replication(standby: dict | None, standbys: list[dict], from_primary: dict | None = None) -> dict:
    if standby is None:
        return {
            "replication": {"side": "primary", "standbys": standbys},
            "replica_lag_s": max((s["replay_lag_s"] or 0.0 for s in standbys), default=None),
            "replica_lag_bytes": max((s["replay_bytes_behind"] or 0.0 for s in standbys), default=None),
            "replica_lag_source": LagSource.STANDBYS if standbys else LagSource.NONE,
        }
    own = own_lag_s(standby)
    if from_primary and not from_primary["error"]:
        lag_s, lag_bytes, source = from_primary["replay_lag_s"], from_primary["replay_bytes_behind"], LagSource.PRIMARY
    else:
        lag_s, lag_bytes = own, standby["replay_bytes_pending"] or 0.0
        source = LagSource.REPLICA if own is not None else LagSource.NONE
    heartbeat_at = standby["heartbeat_at"]
    return {
        "replication": {
            "side": "standby",
            "replay_paused": standby["replay_paused"],
            "replay_bytes_pending": standby["replay_bytes_pending"],
            "receiver_status": standby["receiver_status"],
            "own_lag_s": own,
            "heartbeat_at": heartbeat_at.isoformat() if heartbeat_at else None,
            "primary_view": from_primary,
        },
        "replica_lag_s": lag_s,
        "replica_lag_bytes": lag_bytes,
        "replica_lag_source": source,
    }


def write_heartbeat(primary: Target) -> None:
    """One heartbeat row per round, written and (the first time in a process, or after a failure)
    set up with the change credential."""
    ready = (primary.pk, primary.username)
    try:
        with engines.connect(primary, credential="change", statement_timeout_ms=settings.MONITOR_STATEMENT_TIMEOUT_MS) as conn:
            if ready not in _heartbeat_ready:
                heartbeat.ensure(conn, reader=primary.username)
            heartbeat.beat(conn, settings.ENGINE_APPLICATION_NAME)
    except Exception:
        _heartbeat_ready.discard(ready)
        raise
    _heartbeat_ready.add(ready)


# (primary, monitor role) pairs whose heartbeat table and grant this process has set up
_heartbeat_ready: set[tuple[int, str]] = set()


def sample_bouncer(target: Target, shared: Shared) -> bool:
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
    shared.points.record(target, {"up": 1.0, "bouncer_cl_waiting": cl_waiting, "bouncer_maxwait_s": maxwait_s})
    return True


def _plain(row: dict) -> dict:
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in row.items()}


# pg_stat_statements: every MONITOR_STATEMENTS_INTERVAL_S ------------------------------------------


def sample_statements_round(targets=None, return_connections: bool = False) -> dict:
    started = time.monotonic()
    if targets is None:
        targets = Target.objects.exclude(role=Target.Role.PGBOUNCER)
    targets = list(targets)
    summary = _each_target(Sampler.STATEMENTS, sample_statements, targets, return_connections=return_connections)
    alerts.evaluate(targets)
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
    previous = {c.key: c for c in StatementCounter.objects.filter(target=target)}
    baseline_only = state.statements_sampled_at is None
    reset = state.stats_reset_at is not None and reset_at != state.stats_reset_at
    window_start = state.statements_sampled_at or now
    deltas, counters = [], []
    for row in rows:
        key = tuple(row[field] for field in StatementCounter.KEY)
        identity = dict(zip(StatementCounter.KEY, key))
        before = previous.get(key)
        after_reset = reset or (before is not None and row["calls"] < before.calls)
        hit, read = row.get("shared_blks_hit") or 0, row.get("shared_blks_read") or 0
        if before is None or after_reset:
            calls, total_ms, n_rows = row["calls"], row["total_exec_ms"], row["rows"]
            hit_delta, read_delta = hit, read
        else:
            calls, total_ms, n_rows = row["calls"] - before.calls, row["total_exec_ms"] - before.total_exec_ms, row["rows"] - before.rows
            hit_delta, read_delta = hit - before.shared_blks_hit, read - before.shared_blks_read
        if calls > 0 and not baseline_only:
            deltas.append(StatementDelta(
                target=target, **identity, window_start=window_start,
                window_end=now, calls=calls, total_exec_ms=max(0.0, total_ms), rows=max(0, n_rows), after_reset=after_reset,
                shared_blks_hit=max(0, hit_delta), shared_blks_read=max(0, read_delta), max_exec_ms=row.get("max_exec_ms"),
            ))
        counters.append(StatementCounter(
            target=target, **identity, calls=row["calls"],
            total_exec_ms=row["total_exec_ms"], rows=row["rows"], query=row["query"] or "", seen_at=now,
            shared_blks_hit=hit, shared_blks_read=read, max_exec_ms=row.get("max_exec_ms"),
            username=row.get("username") or "", database=row.get("database") or "",
        ))
    StatementDelta.objects.bulk_create(deltas, batch_size=1000)
    StatementCounter.objects.bulk_create(
        counters, batch_size=1000, update_conflicts=True, unique_fields=["target", *StatementCounter.KEY],
        update_fields=["calls", "total_exec_ms", "rows", "query", "seen_at", "shared_blks_hit", "shared_blks_read",
                       "max_exec_ms", "username", "database"],
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
    texts = dict(  # the top-level text wins (a nested one may read "EXPLAIN ...")
        StatementCounter.objects.filter(target=target, queryid__in=[r["queryid"] for r in rows])
        .order_by("toplevel").values_list("queryid", "query")
    )
    for row in rows:
        row["query"] = texts.get(row["queryid"], "")
    return rows


def slow_query_count(target: Target, now) -> int:
    window = StatementDelta.objects.filter(target=target, window_end__gt=now - timedelta(hours=1))
    per_query = window.values("queryid").annotate(calls=Sum("calls"), total=Sum("total_exec_ms"))
    return sum(1 for q in per_query if q["calls"] and q["total"] / q["calls"] >= settings.MONITOR_SLOW_QUERY_MS)
