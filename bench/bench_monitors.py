"""Monitors: how fast the fleet overview renders for a large fleet (and whether dead targets slow
it down), and how long one sampling round over 100 live targets takes."""

import statistics
import time
from datetime import timedelta

import psycopg
import sqlalchemy
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from console import engines
from console.models import Target
from monitors import samplers
from monitors.models import Alert, EnginePool, MetricPoint, TargetState

OVERVIEW_TARGETS = 200
OVERVIEW_DOWN = 50
OVERVIEW_REQUESTS = 60
SAMPLED_TARGETS = 100
SAMPLER_ROUNDS = 5


def _p95(values):
    return statistics.quantiles(values, n=20)[18]


def _fake_fleet(ctx) -> list[Target]:
    """200 registered targets with a realistic amount of samples; none of them is connected to."""
    Target.objects.filter(name__startswith="bench-ov-").delete()
    now = timezone.now()
    targets = Target.objects.bulk_create([
        Target(name=f"bench-ov-{i:03d}", host="127.0.0.1", port=1, dbname="app", username="app",
               tags=["bench", f"shard-{i % 8}"], status=Target.Status.UP, last_seen_at=now, last_checked_at=now,
               server_version="15.18")
        for i in range(OVERVIEW_TARGETS)
    ])
    sessions = [{"pid": 1000 + n, "username": "app", "application_name": "web", "client_addr": "10.0.0.1",
                 "database": "app", "state": "active", "wait_event_type": None, "wait_event": None,
                 "backend_type": "client backend", "query_seconds": 0.2, "xact_seconds": 0.2,
                 "query": "SELECT * FROM documents WHERE id = $1", "blocked_by": [], "long_running": False}
                for n in range(20)]
    TargetState.objects.bulk_create([
        TargetState(target=t, sampled_at=now, connections=40, max_connections=100, reserved_connections=3,
                    connections_by_state={"active": 20, "idle": 20}, connections_by_application={"web": 40},
                    sessions=sessions, replica_lag_s=0.4, replica_lag_bytes=2048.0, slow_queries=3,
                    replication={"side": "primary", "standbys": []})
        for t in targets
    ])
    EnginePool.objects.bulk_create([
        EnginePool(process=f"web-{p}", target=t, size=5, max_overflow=2, checked_in=3, checked_out=2, overflow=0,
                   started_at=now, updated_at=now)
        for t in targets for p in range(3)
    ])
    MetricPoint.objects.bulk_create([
        MetricPoint(target=t, metric="connections", at=now - timedelta(seconds=10 * k), value=40.0)
        for t in targets for k in range(30)
    ])
    return targets


def _set_down(targets, how_many: int) -> None:
    Alert.objects.filter(target__in=targets).delete()
    down, up = targets[:how_many], targets[how_many:]
    Target.objects.filter(pk__in=[t.pk for t in down]).update(status=Target.Status.DOWN, last_error="connection refused")
    Target.objects.filter(pk__in=[t.pk for t in up]).update(status=Target.Status.UP, last_error="")
    Alert.objects.bulk_create([
        Alert(target=t, metric="target_down", level=Alert.Level.CRITICAL, value=1, threshold=1, message=f"{t.name} is down")
        for t in down
    ])


def _overview_timings_ms(client, requests: int) -> list[float]:
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/fleet/", HTTP_HOST="127.0.0.1")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return timings


def _live_targets(ctx) -> list[Target]:
    """100 real targets: databases spread over the primary, its replica and the scratch server."""
    per_server = {"primary": 34, "scratch": 33}
    for server, count in per_server.items():
        with psycopg.connect(ctx.conninfo(server), autocommit=True) as admin:
            existing = {r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_mon_%'")}
            for i in range(count):
                name = f"bench_mon_{i:02d}"
                if name not in existing:
                    admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    time.sleep(1)  # let the replica replay the new databases
    Target.objects.filter(name__startswith="bench-live-").delete()
    specs = [("primary", i) for i in range(34)] + [("replica", i) for i in range(33)] + [("scratch", i) for i in range(33)]
    return Target.objects.bulk_create([
        Target(name=f"bench-live-{server}-{i:02d}", role=Target.Role.REPLICA if server == "replica" else Target.Role.PRIMARY,
               host=ctx.host, port=ctx.port(server), dbname=f"bench_mon_{i:02d}", username=ctx.superuser,
               password_env=ctx.password_env, pool_size=1, max_overflow=0, tags=["bench-live"])
        for server, i in specs
    ])


def run(ctx) -> dict[str, float]:
    figures = {}
    user, _ = User.objects.get_or_create(username="bench-viewer", defaults={"is_superuser": True})
    client = Client()
    client.force_login(user)

    fleet = _fake_fleet(ctx)
    _set_down(fleet, OVERVIEW_DOWN)
    _overview_timings_ms(client, 5)  # warm-up: templates compiled, connections open
    mixed = _overview_timings_ms(client, OVERVIEW_REQUESTS)
    figures["overview_ms_p95_200_targets"] = round(_p95(mixed), 2)
    figures["overview_ms_median_200_targets"] = round(statistics.median(mixed), 2)

    all_up, all_down = [], []
    for _ in range(3):  # interleaved, so machine noise hits both sides alike
        _set_down(fleet, 0)
        all_up += _overview_timings_ms(client, OVERVIEW_REQUESTS // 3)
        _set_down(fleet, OVERVIEW_TARGETS)
        all_down += _overview_timings_ms(client, OVERVIEW_REQUESTS // 3)
    figures["overview_down_vs_up_ratio"] = round(statistics.median(all_down) / statistics.median(all_up), 3)
    ctx.log(f"overview: p95 {figures['overview_ms_p95_200_targets']} ms; all up median {statistics.median(all_up):.1f} ms, "
            f"all down {statistics.median(all_down):.1f} ms")
    Target.objects.filter(pk__in=[t.pk for t in fleet]).delete()

    live = _live_targets(ctx)
    statements = {"n": 0}

    def count(*_args, **_kwargs):
        statements["n"] += 1

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", count)
    try:
        warm = samplers.sample_fast_round(live)  # creates the engines and their first connections
        assert warm["failed"] == 0, warm
        statements["n"] = 0
        rounds = []
        for _ in range(SAMPLER_ROUNDS):
            started = time.perf_counter()
            summary = samplers.sample_fast_round(live)
            rounds.append(time.perf_counter() - started)
            assert summary["failed"] == 0, summary
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", count)
    figures["sampler_round_s_100_targets"] = round(statistics.median(rounds), 3)
    figures["sampler_queries_per_target"] = round(statements["n"] / (SAMPLER_ROUNDS * len(live)), 2)
    ctx.log(f"sampler: rounds {[round(r, 2) for r in rounds]} s")
    engines.dispose_all()
    Target.objects.filter(pk__in=[t.pk for t in live]).delete()
    return figures
