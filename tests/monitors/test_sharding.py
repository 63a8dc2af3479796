"""A sampling round in chunks on the monitor queue, shared by the monitor workers; above
MONITOR_RETURN_CONNECTIONS_ABOVE targets a monitor process keeps no connection per target between
samples."""

import base64
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import redis
from django.utils import timezone

from console import engines
from console.models import Target
from monitors import panels, pools, samplers, tasks
from monitors.models import EnginePool, MetricPoint, SamplingChunk, SamplingRound, TargetState
from tests.conftest import Worker
from tests.waiting import wait_until

SERVERS = ("primary", "replica", "scratch")


def _more_targets(demo_targets, primaries: int, replicas: int) -> list[Target]:
    """Targets on the demo primary's database, and replicas of it (whose samples also read the
    primary's pg_stat_replication)."""
    primary, replica = demo_targets["demo-primary"], demo_targets["demo-replica"]
    login = {"username": primary.username, "password_env": primary.password_env, "dbname": primary.dbname}
    made = [Target.objects.create(name=f"shard-primary-{i}", role=Target.Role.PRIMARY, host=primary.host,
                                  port=primary.port, **login) for i in range(primaries)]
    made += [Target.objects.create(name=f"shard-replica-{i}", role=Target.Role.REPLICA, host=replica.host,
                                   port=replica.port, upstream=primary, **login) for i in range(replicas)]
    return made


def _queued_tasks(fleet, queue: str) -> list[tuple[str, list, str]]:
    """(task name, args, expires) of the messages waiting in a Redis queue, oldest first."""
    messages = redis.Redis.from_url(fleet.env()["REDIS_URL"]).lrange(queue, 0, -1)
    found = []
    for raw in reversed(messages):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], args, message["headers"]["expires"]))
    return found


def _clear_queue(fleet, queue: str) -> None:
    redis.Redis.from_url(fleet.env()["REDIS_URL"]).delete(queue)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _pid_of_local_port() -> dict[int, int]:
    """Local TCP port -> pid of the process holding the socket (loopback only)."""
    listing = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    return {int(m[1]): int(m[2]) for m in re.finditer(r"127\.0\.0\.1:(\d+)\s+\S+\s+users:\(\(\"[^\"]*\",pid=(\d+)", listing)}


def _console_sessions(observers) -> list[tuple[str, int]]:
    """(application_name, client pid) of every session of the console on the fleet's servers."""
    rows = [row for conn in observers for row in conn.execute(
        "SELECT application_name, client_port FROM pg_stat_activity WHERE application_name LIKE 'fleet-console:%%'")]
    pids = _pid_of_local_port()
    return [(name, pids[port]) for name, port in rows if port in pids]


def _observers(fleet):
    return [psycopg.connect(host="127.0.0.1", port=fleet.port(server), user="postgres", dbname="postgres",
                            password=fleet.superuser_password, autocommit=True) for server in SERVERS]


def _round_done(round_id: int):
    return SamplingRound.objects.filter(pk=round_id, finished_at__isnull=False).first()


def test_it_splits_a_round_into_chunk_tasks_on_the_monitor_queue(transactional_db, demo_targets, fleet, settings):
    # Given 11 targets and chunks of 3, and no monitor worker to take them,
    settings.MONITOR_CHUNK_SIZE = 3
    everyone = set(Target.objects.values_list("pk", flat=True)) | {t.pk for t in _more_targets(demo_targets, 4, 3)}
    _clear_queue(fleet, settings.MONITOR_QUEUE)
    try:
        # when beat's task runs,
        sent = tasks.sample_fast()
        queued = _queued_tasks(fleet, settings.MONITOR_QUEUE)
    finally:
        _clear_queue(fleet, settings.MONITOR_QUEUE)
    # then it has sampled nothing itself and sent one chunk task per three targets,
    sampling_round = SamplingRound.objects.get(pk=sent["round"])
    chunks = {c.pk: c for c in SamplingChunk.objects.filter(round=sampling_round)}
    assert sent["chunks"] == 4 and len(chunks) == 4
    assert not TargetState.objects.exists()
    assert sorted(name for name, _args, _expires in queued) == ["monitors.sample_chunk"] * 4
    assert sorted(args[0] for _name, args, _expires in queued) == sorted(chunks)
    # that expire with the round, and hold every target once.
    assert {expires for _name, _args, expires in queued} == {sampling_round.expires_at.isoformat()}
    sampled = [target_id for chunk in chunks.values() for target_id in chunk.target_ids]
    assert sorted(sampled) == sorted(everyone) and max(len(c.target_ids) for c in chunks.values()) == 3


def test_it_skips_a_chunk_that_is_done_or_whose_round_expired(transactional_db, demo_targets, settings):
    settings.MONITOR_CHUNK_SIZE = 2
    sampling_round, chunks = samplers.plan_round(samplers.Sampler.FAST)
    try:
        first = samplers.sample_chunk(chunks[0].pk)
        assert first["ok"] == 2 and not first.get("skipped")
        assert samplers.sample_chunk(chunks[0].pk) == {"chunk": chunks[0].pk, "skipped": True}
        SamplingRound.objects.filter(pk=sampling_round.pk).update(expires_at=sampling_round.started_at)
        assert samplers.sample_chunk(chunks[1].pk)["skipped"] is True
    finally:
        engines.dispose_all()
    assert MetricPoint.objects.filter(metric="up").count() == 2, "the skipped chunks sampled nothing"
    assert _round_done(sampling_round.pk) is None


@pytest.mark.worker
def test_it_shares_a_round_between_two_monitor_workers_and_samples_every_target_once(
    transactional_db, demo_targets, monitor_worker, fleet, tmp_path, settings
):
    # Given two monitor workers and 16 targets in chunks of 2,
    settings.MONITOR_CHUNK_SIZE = 2
    settings.MONITOR_FAST_INTERVAL_S = 120  # the round expires long after a slow machine is done
    second = Worker(fleet, tmp_path, queue="monitor")
    second.generation = 1  # a node name and log file of its own
    second.start()
    try:
        owner = {child: main for main in (monitor_worker.proc.pid, second.proc.pid) for child in _children(main)}
        targets = list(demo_targets.values()) + _more_targets(demo_targets, 6, 6)
        # when beat's task dispatches one round,
        sent = tasks.sample_fast()
        sampling_round = wait_until(lambda: _round_done(sent["round"]), timeout_s=60, what="the round to finish")
    finally:
        second.stop()
    # then both workers sampled chunks of it,
    chunks = list(SamplingChunk.objects.filter(round=sampling_round))
    by_worker = Counter(owner[int(chunk.process.rsplit(":", 1)[1])] for chunk in chunks)
    assert len(chunks) == 8 and all(chunk.finished_at for chunk in chunks)
    assert set(by_worker) == {monitor_worker.proc.pid, second.proc.pid}, f"chunks per worker: {by_worker}"
    # and every target exactly once.
    assert sorted(t for chunk in chunks for t in chunk.target_ids) == sorted(t.pk for t in targets)
    assert sum(chunk.ok for chunk in chunks) == 16
    up_points = Counter(MetricPoint.objects.filter(metric="up").values_list("target_id", flat=True))
    assert up_points == {t.pk: 1 for t in targets}


@pytest.mark.worker
def test_it_holds_at_most_one_connection_per_target_and_none_after_the_round_above_the_setting(
    transactional_db, demo_targets, monitor_worker, fleet, settings
):
    # Given a fleet above MONITOR_RETURN_CONNECTIONS_ABOVE, with replicas that also read their primary,
    settings.MONITOR_RETURN_CONNECTIONS_ABOVE = 8
    settings.MONITOR_CHUNK_SIZE = 8
    settings.MONITOR_FAST_INTERVAL_S = 120
    targets = list(demo_targets.values()) + _more_targets(demo_targets, 4, 8)
    names = {f"fleet-console:{t.name}" for t in targets}
    worker_pids = _children(monitor_worker.proc.pid)
    observers = _observers(fleet)
    seen = Counter()

    def watch_round():
        for (name, pid), count in Counter(_console_sessions(observers)).items():
            if name in names and pid in worker_pids:
                seen[(name, pid)] = max(seen[(name, pid)], count)
        return _round_done(sent["round"])

    try:
        # when the monitor worker samples a round,
        sent = tasks.sample_fast()
        wait_until(watch_round, timeout_s=60, what="the round to finish", poll_s=0)
        # then each of its processes held at most one connection per target meanwhile,
        assert seen, "no connection of the worker was seen during the round"
        assert max(seen.values()) == 1, {key: n for key, n in seen.items() if n > 1}
        # and none once the round is over;
        wait_until(lambda: not [s for s in _console_sessions(observers) if s[1] in worker_pids], timeout_s=10,
                   what="the worker to close its connections")
    finally:
        for conn in observers:
            conn.close()
    # and its pools say so: one connection each, no overflow.
    assert SamplingChunk.objects.filter(round_id=sent["round"], ok=8).count() == 2
    def published_by_worker():
        return [p for p in EnginePool.objects.filter(target__in=targets) if int(p.process.rsplit(":", 1)[1]) in worker_pids]

    published = wait_until(published_by_worker, timeout_s=10, what="the worker to publish its pools")
    assert {(p.size, p.max_overflow) for p in published} == {(1, 0)}


def test_it_counts_the_consoles_monitor_connections_in_the_connection_budget(transactional_db, demo_targets):
    # Given another target on the demo primary's server holding a console connection,
    primary = demo_targets["demo-primary"]
    alias = _more_targets(demo_targets, 1, 0)[0]
    try:
        with engines.connect(alias):
            # when the primary is sampled,
            samplers.sample_fast_round([primary])
    finally:
        engines.dispose_all()
    # then its state counts the console's sessions on that server (the sampler's own included),
    state = TargetState.objects.get(target=primary)
    assert state.console_connections >= 2
    # and the budget adds up each process's pool as published: a web process's 5 + 2, a monitor
    # process's one connection.
    now = timezone.now()
    for process, size, overflow in (("web-host:1", 5, 2), ("monitor-host:2", 1, 0)):
        EnginePool.objects.create(process=process, target=primary, size=size, max_overflow=overflow, checked_in=0,
                                  checked_out=0, overflow=0, started_at=now, updated_at=now)
    budget = panels.connection_budget(primary, state, pools.totals(primary.pk))
    assert budget["processes"] == 2 and budget["console_max"] == 8
    assert budget["server_now"] == budget["server_peak"] == state.console_connections
    assert budget["total"] == max(8, state.console_connections) + budget["others_peak"]
