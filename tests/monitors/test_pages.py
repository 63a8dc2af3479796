"""The fleet overview, the live target page and the monitor actions."""

import threading
from datetime import timedelta

import psycopg
import pytest
from django.test.utils import CaptureQueriesContext
from django.db import connection
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from console.models import AuditEvent, Target
from monitors import alerts, pools, samplers, series
from monitors.models import Alert, AlertThreshold, EnginePool, MetricMinute, MetricPoint, TargetState
from tests.waiting import wait_for_backend
from tests.servers import application as _connect_as_application
from tests.servers import superuser as _connect






def test_it_shows_every_target_on_the_overview_from_samples_only(transactional_db, client_as, demo_targets):
    samplers.sample_fast_round()
    client = client_as("viewer")
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/fleet/")
    body = response.content.decode()
    assert response.status_code == 200
    for name in demo_targets:
        assert f'data-target="{name}"' in body
    assert " / 97" in body  # connections against max_connections minus reserved
    assert 'hx-trigger="every 10s"' in body
    assert len(queries) < 15, "the overview reads a few sample tables, not one query per target"
    fragment = client.get("/fleet/?sort=alerts", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<div id="overview"')


def test_it_sorts_and_filters_the_overview(transactional_db, client_as, demo_targets):
    Target.objects.filter(name="demo-replica").update(status=Target.Status.DOWN)
    Target.objects.filter(name="demo-scratch").update(tags=["drills"])
    client = client_as("viewer")
    body = client.get("/fleet/?sort=status").content.decode()
    assert body.index('data-target="demo-replica"') < body.index('data-target="demo-bouncer"')
    body = client.get("/fleet/?tag=drills").content.decode()
    assert 'data-target="demo-scratch"' in body and 'data-target="demo-primary"' not in body


def test_it_shows_a_stopped_target_down_within_one_round_while_the_overview_renders(transactional_db, client_as, demo_targets, fleet):
    from scripts import localfleet

    scratch = demo_targets["demo-scratch"]
    samplers.sample_fast_round()
    localfleet._pg_stop(fleet, "scratch")
    try:
        summary = samplers.sample_fast_round()
        assert summary["failed"] == 1
        scratch.refresh_from_db()
        assert scratch.status == Target.Status.DOWN
        body = client_as("viewer").get("/fleet/").content.decode()
        assert "demo-scratch is down" in body and "1 critical" in body
    finally:
        localfleet._pg_start(fleet, "scratch")
    samplers.sample_fast_round()
    scratch.refresh_from_db()
    assert scratch.status == Target.Status.UP
    assert not Alert.open().filter(target=scratch).exists()


def test_it_shows_the_root_blocker_of_a_blocked_session(transactional_db, client_as, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    with _connect(fleet, autocommit=False) as blocker, _connect(fleet, application_name="waiting-app") as waiter:
        blocker.execute("UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1")
        blocker_pid = blocker.info.backend_pid
        waiting = threading.Thread(
            target=lambda: waiter.execute("UPDATE pgbench_branches SET bbalance = bbalance + 0 WHERE bid = 1"))
        waiting.start()
        try:
            with _connect(fleet) as observer:
                wait_for_backend(observer, "application_name = %s AND wait_event_type = 'Lock'", ["waiting-app"],
                                 what="the second UPDATE to wait for the first one's lock")
            samplers.sample_fast_round([primary])
            state = TargetState.objects.get(target=primary)
            waiter_row = next(s for s in state.sessions if s["application_name"] == "waiting-app")
            assert waiter_row["blocked_by"] == [blocker_pid] and waiter_row["wait_event_type"] == "Lock"
            from monitors.panels import blocking_tree

            tree = blocking_tree(state.sessions)
            assert [root["pid"] for root in tree] == [blocker_pid]
            assert tree[0]["waiting"][0]["pid"] == waiter_row["pid"]
            page = client_as("viewer").get(f"/fleet/targets/{primary.pk}/").content.decode()
            assert "root blocker" in page and f"blocked by {blocker_pid}" in page
        finally:
            blocker.rollback()
            waiting.join(timeout=10)


def test_it_cancels_and_terminates_a_backend_for_operators_and_audits_it(transactional_db, client_as, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    with _connect_as_application(fleet) as victim:
        pid = victim.info.backend_pid
        errors = []

        def run():
            try:
                victim.execute("SELECT pg_sleep(20)")
            except psycopg.Error as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        with _connect(fleet) as observer:
            wait_for_backend(observer, "pid = %s AND wait_event = 'PgSleep'", [pid], what="the victim to be in pg_sleep")
        response = client_as("operator").post(f"/fleet/targets/{primary.pk}/sessions/{pid}/cancel/")
        thread.join(timeout=10)
    assert response.status_code == 302 and errors and isinstance(errors[0], psycopg.errors.QueryCanceled)
    assert AuditEvent.objects.get(action="monitors.cancel").detail["pid"] == pid

    victim = _connect_as_application(fleet)
    pid = victim.info.backend_pid
    client_as("operator").post(f"/fleet/targets/{primary.pk}/sessions/{pid}/terminate/")
    with pytest.raises(psycopg.OperationalError):
        victim.execute("SELECT 1")
    assert AuditEvent.objects.get(action="monitors.terminate").outcome == "ok"


def test_it_refuses_terminate_when_switched_off(transactional_db, client_as, demo_targets, fleet, settings):
    settings.MONITOR_ALLOW_TERMINATE = False
    primary = demo_targets["demo-primary"]
    with _connect(fleet) as victim:
        response = client_as("admin").post(f"/fleet/targets/{primary.pk}/sessions/{victim.info.backend_pid}/terminate/")
        assert response.status_code == 403 and "switched off" in response.content.decode()
        assert victim.execute("SELECT 1").fetchone() == (1,)
    assert AuditEvent.objects.get(action="monitors.terminate").outcome == "denied"


def test_it_adds_up_pool_figures_published_by_every_process(transactional_db, demo_targets):
    from console import engines

    primary = demo_targets["demo-primary"]
    engines.dispose_all()
    with engines.connect(primary):
        assert pools.publish_once() == 1
    now = timezone.now()
    EnginePool.objects.create(process="other-host:4242", target=primary, size=5, max_overflow=2, checked_in=1,
                              checked_out=3, overflow=0, started_at=now, updated_at=now)
    EnginePool.objects.create(process="dead-host:1", target=primary, size=5, max_overflow=2, checked_in=0,
                              checked_out=5, overflow=2, started_at=now, updated_at=now - timedelta(hours=1))
    totals = pools.totals(primary.pk)
    assert totals["processes"] == 2 and totals["size"] == 10 and totals["checked_out"] == 4
    engines.dispose_all()


def test_it_opens_changes_and_closes_alerts_with_per_target_thresholds(transactional_db, demo_targets):
    primary = demo_targets["demo-primary"]
    TargetState.objects.create(target=primary, connections=80, max_connections=100, reserved_connections=3)
    Target.objects.filter(pk=primary.pk).update(status=Target.Status.UP)
    alerts.evaluate([primary])
    alert = Alert.open().get(target=primary, metric="connections_pct")
    assert alert.level == "warning" and "Connections 82% of max" in alert.message
    TargetState.objects.filter(target=primary).update(connections=95)
    alerts.evaluate([primary])
    assert Alert.open().get(target=primary, metric="connections_pct").level == "critical"
    AlertThreshold.objects.create(target=primary, metric="connections_pct", warning=98, critical=99)
    alerts.evaluate([primary])
    assert not Alert.open().filter(target=primary).exists()
    assert Alert.objects.get(target=primary).closed_at is not None


def test_it_edits_thresholds_as_admin_with_validation(transactional_db, client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    client = client_as("admin")
    client.post(f"/fleet/targets/{primary.pk}/alerts/save/", {"metric": "replica_lag_s", "warning": 5, "critical": 30})
    assert alerts.thresholds(primary)["replica_lag_s"] == (5, 30)
    response = client.post(f"/fleet/targets/{primary.pk}/alerts/save/", {"metric": "replica_lag_s", "warning": 50, "critical": 30}, follow=True)
    assert "must be below the critical" in response.content.decode()
    assert alerts.thresholds(primary)["replica_lag_s"] == (5, 30)
    page = client.get(f"/fleet/targets/{primary.pk}/alerts/").content.decode()
    assert "overridden" in page


def test_it_keeps_raw_points_a_day_and_minutes_a_week(transactional_db, demo_targets):
    primary = demo_targets["demo-primary"]
    now = timezone.now()
    for age in (timedelta(minutes=1), timedelta(hours=30), timedelta(days=8)):
        series.record(primary, {"connections": 5.0}, at=now - age)
    series.record(primary, {"connections": 7.0}, at=now - timedelta(minutes=1))
    minute = MetricMinute.objects.get(target=primary, minute=(now - timedelta(minutes=1)).replace(second=0, microsecond=0))
    assert minute.count == 2 and minute.average == 6.0 and minute.maximum == 7.0
    result = series.cleanup(now)
    assert result == {"raw_deleted": 2, "minutes_deleted": 1}
    assert MetricPoint.objects.filter(target=primary).count() == 2
    assert MetricMinute.objects.filter(target=primary).count() == 2


def test_it_schedules_only_tasks_the_workers_know(settings):
    from console.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"monitors.sample_fast", "monitors.sample_statements", "monitors.cleanup"} <= scheduled
    assert scheduled - set(app.tasks) == set(), "beat would send tasks no worker has registered"


def test_it_exports_per_target_gauges(transactional_db, client, demo_targets, fleet):
    with _connect(fleet, application_name="idle-app"):  # one idle session at least
        samplers.sample_fast_round()
    body = client.get("/metrics").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    lag = {s.labels["target"]: s.value for s in families["fleet_replica_lag_seconds"].samples}
    assert lag["demo-replica"] == 0 and "demo-primary" in lag
    by_state = {s.labels["state"]: s.value for s in families["fleet_target_connections"].samples
                if s.labels["target"] == "demo-primary"}
    assert by_state.get("idle", 0) >= 1, by_state
    assert sum(by_state.values()) == TargetState.objects.get(target=demo_targets["demo-primary"]).connections
    assert families["fleet_target_max_connections"].samples[0].value == 97
    assert "fleet_alert" in families and "fleet_console_pool_checked_out" in families


def test_it_renders_target_pages_without_connecting_to_the_target(transactional_db, client_as, demo_targets):
    from console import engines

    samplers.sample_fast_round()
    samplers.sample_statements_round()
    engines.dispose_all()
    client = client_as("operator")
    for target in demo_targets.values():
        assert client.get(f"/fleet/targets/{target.pk}/").status_code == 200
        assert client.get(f"/fleet/targets/{target.pk}/?fragment=live", HTTP_HX_REQUEST="true").status_code == 200
    assert client.get("/fleet/").status_code == 200
    assert engines.engines_snapshot() == {}, "a page opened a connection to a target"


def test_it_shows_a_query_history_chart(transactional_db, client_as, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    samplers.sample_statements_round([primary])
    for _ in range(2):
        with _connect(fleet) as session:
            session.execute("SELECT /* history-marker */ count(*) FROM pgbench_tellers")
        samplers.sample_statements_round([primary])
    client = client_as("viewer")
    page = client.get(f"/fleet/targets/{primary.pk}/?window=15m&order=calls").content.decode()
    assert "history-marker" in page
    queryid = samplers.StatementCounter.objects.get(target=primary, query__contains="history-marker").queryid
    history = client.get(f"/fleet/targets/{primary.pk}/queries/{queryid}/")
    body = history.content.decode()
    assert history.status_code == 200 and "history-marker" in body and "<polyline" in body
    assert body.count("<tr>") >= 3  # header + two snapshots
    assert client.get(f"/fleet/targets/{primary.pk}/queries/12345/").status_code == 404


def test_it_warns_when_the_connection_budget_can_exceed_max_connections(transactional_db, demo_targets):
    from monitors.panels import connection_budget

    primary = demo_targets["demo-primary"]
    primary.pool_size, primary.max_overflow = 40, 10
    state = TargetState.objects.create(target=primary, connections=20, max_connections=100, reserved_connections=3)
    series.record(primary, {"other_connections": 30.0})
    budget = connection_budget(primary, state, {"processes": 2, "checkouts": 1000, "hold_s_total": 50.0, "checkouts_per_s": 40.0})
    assert budget["console_max"] == 100 and budget["others_peak"] == 30 and budget["total"] == 130
    assert budget["usable"] == 97 and budget["over"] is True
    assert budget["suggested"] == (3, 4)  # 40/s x 0.05 s x 1.5-2
    one_process = connection_budget(primary, state, {"processes": 1, "checkouts": 0})
    assert one_process["total"] == 80 and one_process["over"] is False  # 50 + 30 others, within 97
    primary.pool_size, primary.max_overflow = 5, 2
    ok = connection_budget(primary, state, {"processes": 2, "checkouts": 0})
    assert ok["over"] is False and ok["suggested"] is None


def test_it_pages_a_big_overview_sorted_over_the_whole_fleet(transactional_db, client_as, demo_targets, settings):
    settings.FLEET_OVERVIEW_PAGE_SIZE = 3
    extra = [Target(name=f"zz-page-{i}", host="127.0.0.1", port=1, dbname="x", username="x") for i in range(4)]
    Target.objects.bulk_create(extra)
    client = client_as("viewer")
    first = client.get("/fleet/?sort=name").content.decode()
    last = client.get("/fleet/?sort=name&page=3").content.decode()
    assert "Targets 1–3 of 8" in first and 'data-target="demo-bouncer"' in first and "zz-page" not in first
    assert "Targets 7–8 of 8" in last and 'data-target="zz-page-3"' in last and "demo-bouncer" not in last
    assert "Targets 1–3 of 8" in client.get("/fleet/?page=bogus").content.decode()
