"""Samplers against the suite's real primary, replica and PgBouncer."""

import threading
import time

from sqlalchemy import text

from console import engines
from console.models import Target
from console.pg import bouncer as bouncer_admin
from monitors import samplers
from monitors.models import MetricMinute, MetricPoint, StatementDelta, TargetState
from tests.waiting import wait_for_backend, wait_until
from tests.servers import superuser as _connect




def _state(target):
    return TargetState.objects.get(target=target)


def _clients_waiting_in_pgbouncer(fleet) -> int:
    with bouncer_admin.admin_connection("127.0.0.1", fleet.port("bouncer"), "postgres", fleet.superuser_password, 3) as conn:
        return sum(pool["cl_waiting"] for pool in bouncer_admin.show(conn, "POOLS"))


def test_it_samples_connections_and_replication_of_every_target(transactional_db, demo_targets, fleet):
    with _connect(fleet, application_name="billing-app"):
        summary = samplers.sample_fast_round()
    assert summary["ok"] == 4 and summary["failed"] == 0
    primary = _state(demo_targets["demo-primary"])
    assert primary.max_connections == 100 and primary.reserved_connections == 3
    assert primary.connections >= 1 and sum(primary.connections_by_state.values()) == primary.connections
    assert primary.connections_by_application["billing-app"] == 1 and primary.connections_by_user["postgres"] >= 1
    assert primary.replication["side"] == "primary"
    assert [s["application_name"] for s in primary.replication["standbys"]] == ["demo-replica"]
    replica = _state(demo_targets["demo-replica"])
    assert replica.replication["side"] == "standby" and replica.replica_lag_s == 0
    bouncer = _state(demo_targets["demo-bouncer"])
    assert {"cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait"} <= set(bouncer.bouncer_pools[0])
    assert MetricPoint.objects.filter(target=demo_targets["demo-primary"], metric="connections").count() == 1
    assert MetricMinute.objects.filter(target=demo_targets["demo-primary"], metric="connections").get().count == 1


def test_it_marks_a_dead_target_down_and_samples_the_others(transactional_db, demo_targets):
    dead = Target.objects.create(name="dead-one", host="127.0.0.1", port=1, dbname="x", username="x", connect_timeout_s=1)
    summary = samplers.sample_fast_round()
    assert summary == {"ok": 4, "failed": 1, "seconds": summary["seconds"]}
    dead.refresh_from_db()
    assert dead.status == Target.Status.DOWN and "refused" in dead.last_error.lower()
    assert _state(dead).sample_error
    assert dead.alerts.get(closed_at__isnull=True).metric == "target_down"
    assert Target.objects.get(name="demo-primary").status == Target.Status.UP


def test_it_reports_an_idle_primary_as_zero_lag(transactional_db, demo_targets):
    samplers.sample_fast_round()
    samplers.sample_fast_round()
    assert _state(demo_targets["demo-replica"]).replica_lag_s == 0
    assert _state(demo_targets["demo-replica"]).replica_lag_bytes == 0
    assert _state(demo_targets["demo-primary"]).replica_lag_bytes == 0


def test_it_shows_replica_lag_while_replay_is_paused_and_zero_after_resume(transactional_db, demo_targets, fleet):
    replica, primary = demo_targets["demo-replica"], demo_targets["demo-primary"]
    with _connect(fleet, "replica") as standby, _connect(fleet, "primary") as writer:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            writer.execute("CREATE TABLE IF NOT EXISTS lag_probe (id int)")
            for _ in range(3):
                writer.execute("INSERT INTO lag_probe SELECT generate_series(1, 5000)")
                time.sleep(0.4)
            samplers.sample_fast_round([replica, primary])
            paused = _state(replica)
            assert paused.replica_lag_s > 0 and paused.replica_lag_bytes > 0
            assert paused.replication["replay_paused"] is True
            assert _state(primary).replica_lag_bytes > 0
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
            writer.execute("DROP TABLE IF EXISTS lag_probe")

    def caught_up():
        samplers.sample_fast_round([replica, primary])
        return _state(replica).replica_lag_s == 0 and _state(primary).replica_lag_bytes == 0

    wait_until(caught_up, 20, "the replica to catch up after replay resumed", poll_s=0.3)
    assert _state(replica).replica_lag_s == 0 and _state(replica).replica_lag_bytes == 0
    assert _state(primary).replica_lag_bytes == 0


def test_it_shows_a_long_query_in_activity_then_in_slow_queries(transactional_db, demo_targets, fleet, settings):
    settings.MONITOR_LONG_RUNNING_S = 1
    primary = demo_targets["demo-primary"]
    samplers.sample_statements_round([primary])  # the baseline snapshot
    with _connect(fleet) as session:
        # A statement of its own shape: pg_stat_statements keeps the text of a shape's first run,
        # and another test may have run a plain SELECT pg_sleep(...) since the view was reset.
        worker = threading.Thread(target=lambda: session.execute(
            "SELECT /* long-query-marker */ pg_sleep(2.5) FROM pgbench_branches WHERE bid = 1 AND 'long-query-marker' <> ''"))
        worker.start()
        with _connect(fleet) as observer:  # running for longer than MONITOR_LONG_RUNNING_S
            wait_for_backend(observer, "query LIKE %s AND state = 'active' AND clock_timestamp() - query_start > interval '1.2 s'",
                             ["%long-query-marker%"], what="the long query to run for over a second")
        samplers.sample_fast_round([primary])
        worker.join()
    state = _state(primary)
    running = [s for s in state.sessions if "long-query-marker" in (s["query"] or "")]
    assert running and running[0]["state"] == "active" and running[0]["long_running"] is True
    assert state.long_running >= 1 and state.longest_query_s >= 1
    samplers.sample_statements_round([primary])
    top = samplers.top_statements(primary, window=__import__("datetime").timedelta(hours=1), order="mean")
    assert "long-query-marker" in top[0]["query"] and top[0]["calls"] == 1 and top[0]["mean_ms"] >= 2400
    assert _state(primary).slow_queries >= 1


def test_it_keeps_deltas_exact_and_never_resets_the_view(transactional_db, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    samplers.sample_statements_round([primary])
    with _connect(fleet) as session:
        for _ in range(7):
            session.execute("SELECT count(*) FROM pgbench_branches WHERE bid > %s", (0,))
    samplers.sample_statements_round([primary])
    with _connect(fleet) as session:
        for _ in range(3):
            session.execute("SELECT count(*) FROM pgbench_branches WHERE bid > %s", (0,))
        reset_at = session.execute("SELECT stats_reset FROM pg_stat_statements_info").fetchone()[0]
    samplers.sample_statements_round([primary])
    deltas = StatementDelta.objects.filter(target=primary, queryid__in=samplers.StatementCounter.objects.filter(
        target=primary, query__contains="FROM pgbench_branches WHERE bid >").values("queryid"))
    assert sorted(deltas.values_list("calls", flat=True)) == [3, 7]
    with _connect(fleet) as session:  # the console never reset it
        assert session.execute("SELECT stats_reset FROM pg_stat_statements_info").fetchone()[0] == reset_at


def test_it_restarts_deltas_after_someone_resets_the_view(transactional_db, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    samplers.sample_statements_round([primary])
    with _connect(fleet) as session:
        session.execute("SELECT pg_stat_statements_reset()")
        for _ in range(2):
            session.execute("SELECT count(*) FROM pgbench_tellers WHERE tid > %s", (0,))
    samplers.sample_statements_round([primary])
    state = _state(primary)
    assert "was reset" in state.statements_notice
    tellers = StatementDelta.objects.filter(target=primary, after_reset=True, queryid__in=samplers.StatementCounter.objects.filter(
        target=primary, query__contains="FROM pgbench_tellers WHERE tid >").values("queryid"))
    assert list(tellers.values_list("calls", flat=True)) == [2]
    assert all(d.calls >= 0 and d.total_exec_ms >= 0 for d in StatementDelta.objects.filter(target=primary))


def test_it_explains_how_to_enable_a_missing_pg_stat_statements(transactional_db, demo_targets, fleet):
    with _connect(fleet, "scratch", "postgres") as admin:
        admin.execute("DROP DATABASE IF EXISTS nostats")
        admin.execute("CREATE DATABASE nostats")
    target = Target.objects.create(name="no-stats", host="127.0.0.1", port=fleet.port("scratch"), dbname="nostats",
                                   username="postgres", password_env="FLEET_PG_PASSWORD")
    summary = samplers.sample_statements_round([target])
    assert summary["ok"] == 1
    state = _state(target)
    assert state.statements_status == "missing"
    assert "CREATE EXTENSION pg_stat_statements" in state.statements_notice and "nostats" in state.statements_notice


def test_it_sees_pgbouncer_clients_waiting_while_its_pool_is_held(transactional_db, demo_targets, fleet):
    bouncer = demo_targets["demo-bouncer"]
    holders, waiters = [], []
    try:
        for _ in range(5):  # default_pool_size = 5: hold every server connection
            conn = _connect(fleet, "bouncer", autocommit=False)
            conn.execute("SELECT 1")
            holders.append(conn)

        def wait_for_a_server():
            with _connect(fleet, "bouncer") as conn:
                conn.execute("SELECT 1")

        waiters = [threading.Thread(target=wait_for_a_server) for _ in range(2)]
        for thread in waiters:
            thread.start()
        wait_until(lambda: _clients_waiting_in_pgbouncer(fleet) >= 2, 15, "two clients to wait for a server in PgBouncer")
        samplers.sample_fast_round([bouncer])
        state = _state(bouncer)
        assert state.bouncer_cl_waiting >= 2
        # Pools are per database and user: the holders' (postgres), not the console's monitor login's.
        demo_pool = next(p for p in state.bouncer_pools if p["database"] == "demo" and p["user"] == "postgres")
        assert demo_pool["sv_active"] == 5 and demo_pool["cl_waiting"] >= 2
    finally:
        for conn in holders:
            conn.rollback()
            conn.close()
        for thread in waiters:
            thread.join(timeout=10)
    samplers.sample_fast_round([bouncer])
    assert _state(bouncer).bouncer_cl_waiting == 0


def test_it_records_the_consoles_own_slow_statements(transactional_db, demo_targets, settings):
    primary = demo_targets["demo-primary"]
    settings.CONSOLE_SLOW_STATEMENT_MS = 200
    engines.dispose_all()
    with engines.connect(primary) as conn:
        conn.execute(text("SELECT pg_sleep(0.3)"))
        conn.execute(text("SELECT 1"))
    from monitors.models import SlowStatement

    slow = SlowStatement.objects.get(target=primary)
    assert "pg_sleep" in slow.statement and slow.duration_ms >= 300
    engines.dispose_all()
