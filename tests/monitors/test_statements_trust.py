"""pg_stat_statements deltas stay exact when a statement also runs nested (track = all), and a
sampler that fails says so where its figures are: on the target page, in an alert after N failed
rounds, and in /metrics."""

import os
import re
import subprocess
import time

from django.db.models import Sum
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from console.models import Target
from monitors import samplers
from monitors.models import Alert, StatementDelta, TargetState
from scripts.localfleet import PG_BIN
from tests.servers import superuser as _connect

PGBENCH_SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"




def _pgbench(fleet, clients: int, transactions: int) -> int:
    """Run pgbench's TPC-B-like script on the demo database; the transactions it processed."""
    result = subprocess.run(
        [str(PG_BIN / "pgbench"), "-n", "-c", str(clients), "-t", str(transactions),
         "-h", "127.0.0.1", "-p", str(fleet.port("primary")), "-U", "postgres", "demo"],
        capture_output=True, text=True, check=True, env={**os.environ, "PGPASSWORD": fleet.superuser_password},
    )
    return int(re.search(r"number of transactions actually processed: (\d+)", result.stdout).group(1))


def _metric_samples(client, family_name: str) -> dict[tuple, float]:
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").content.decode())}
    family = families.get(family_name)
    return {(s.labels["target"], s.labels["sampler"]): s.value for s in family.samples} if family else {}


def test_it_counts_every_pgbench_transaction_when_its_statement_also_ran_nested(transactional_db, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    with _connect(fleet) as session:
        session.execute("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
        session.execute("EXPLAIN SELECT abalance FROM pgbench_accounts WHERE aid = 1")  # the same statement, nested
        levels = session.execute(
            "SELECT queryid, array_agg(toplevel ORDER BY toplevel) FROM pg_stat_statements s"
            " WHERE (queryid, userid, dbid) IN (SELECT queryid, userid, dbid FROM pg_stat_statements"
            "   WHERE query = %s AND toplevel AND userid = 'postgres'::regrole"
            "     AND dbid = (SELECT oid FROM pg_database WHERE datname = 'demo'))"
            " GROUP BY queryid", (PGBENCH_SELECT,)).fetchall()
    assert len(levels) == 1 and levels[0][1] == [False, True], "the view holds a nested and a top-level row"
    queryid = levels[0][0]
    baseline = samplers.sample_statements_round([primary])
    assert (baseline["ok"], baseline["failed"]) == (1, 0)

    processed = _pgbench(fleet, clients=2, transactions=40)
    summary = samplers.sample_statements_round([primary])

    assert (summary["ok"], summary["failed"]) == (1, 0)
    state = TargetState.objects.get(target=primary)
    deltas = StatementDelta.objects.filter(target=primary, queryid=queryid, window_end=state.statements_sampled_at)
    assert processed == 80
    assert deltas.aggregate(calls=Sum("calls"))["calls"] == processed
    assert list(deltas.values_list("toplevel", flat=True)) == [True]


def test_it_shows_a_failing_sampler_alerts_after_n_rounds_and_exports_it(transactional_db, demo_targets, fleet, client_as, settings):
    settings.MONITOR_SAMPLER_FAILURE_ALERT_ROUNDS = 2
    with _connect(fleet, "scratch", "postgres") as admin:
        admin.execute("DROP DATABASE IF EXISTS stats_aside")
        admin.execute("CREATE DATABASE stats_aside")
    with _connect(fleet, "scratch", "stats_aside") as owner:  # installed, but off the search path
        owner.execute("CREATE SCHEMA aside")
        owner.execute("CREATE EXTENSION pg_stat_statements SCHEMA aside")
    target = Target.objects.create(name="stats-aside", host="127.0.0.1", port=fleet.port("scratch"), dbname="stats_aside",
                                   username="fleet_monitor", password_env="FLEET_MONITOR_PASSWORD")
    viewer = client_as("viewer")

    assert samplers.sample_fast_round([target])["ok"] == 1
    assert samplers.sample_statements_round([target])["failed"] == 1

    page = viewer.get(f"/fleet/targets/{target.pk}/").content.decode()
    failing = re.search(r'<p class="error sampler-failing" id="sampler-failing-statements">(.*?)</p>', page, re.S)
    assert failing, "the page names the failing sampler"
    assert "pg_stat_statements sampler failing" in failing.group(1)
    assert f"since {timezone.now():%Y-%m-%d}" in failing.group(1) and "1 round in a row" in failing.group(1)
    assert "pg_stat_statements_info" in failing.group(1) and "does not exist" in failing.group(1)
    assert 'id="sampler-failing-fast"' not in page
    target.refresh_from_db()
    assert target.status == Target.Status.UP, "a failing query is not a target down"
    assert not Alert.open().filter(target=target, metric="sampler_statements").exists()

    samplers.sample_statements_round([target])

    alert = Alert.open().get(target=target, metric="sampler_statements")
    assert alert.level == Alert.Level.CRITICAL and alert.value == 2 and "pg_stat_statements_info" in alert.message
    assert "sampler failing" in viewer.get("/fleet/").content.decode()
    failures = _metric_samples(viewer, "fleet_sampler_failures")
    successes = _metric_samples(viewer, "fleet_sampler_last_success_timestamp_seconds")
    assert failures[("stats-aside", "statements")] == 2 and failures[("stats-aside", "fast")] == 0
    assert ("stats-aside", "statements") not in successes
    assert abs(successes[("stats-aside", "fast")] - time.time()) < 300

    with _connect(fleet, "scratch", "stats_aside") as owner:
        owner.execute("ALTER EXTENSION pg_stat_statements SET SCHEMA public")
    samplers.sample_statements_round([target])

    assert not Alert.open().filter(target=target, metric="sampler_statements").exists()
    page = viewer.get(f"/fleet/targets/{target.pk}/").content.decode()
    assert 'id="sampler-failing-statements"' not in page and 'id="statements-sampled-ago"' in page
    assert _metric_samples(viewer, "fleet_sampler_failures")[("stats-aside", "statements")] == 2
    assert ("stats-aside", "statements") in _metric_samples(viewer, "fleet_sampler_last_success_timestamp_seconds")


def test_it_charts_one_point_per_snapshot_for_a_statement_that_also_ran_nested(transactional_db, demo_targets, fleet, client_as):
    # Given a snapshot window in which a statement ran three times top level and twice nested,
    primary = demo_targets["demo-primary"]
    statement = "SELECT bid FROM pgbench_branches WHERE bid = 1 AND bbalance > -1000000"
    samplers.sample_statements_round([primary])  # the baseline
    with _connect(fleet) as session:
        for _ in range(3):
            session.execute(statement)
        for _ in range(2):
            session.execute(f"EXPLAIN ANALYZE {statement}")
    samplers.sample_statements_round([primary])
    queryid = StatementDelta.objects.filter(target=primary, toplevel=False, calls=2).values_list("queryid", flat=True).get()
    assert sorted(StatementDelta.objects.filter(target=primary, queryid=queryid).values_list("toplevel", "calls")) == [
        (False, 2), (True, 3)]
    # when its history is shown,
    body = client_as("viewer").get(f"/fleet/targets/{primary.pk}/queries/{queryid}/").content.decode()
    # then the snapshot is one row (and one chart point) with both counts added up.
    history = body.split('id="history"', 1)[1]
    assert re.findall(r'<tr><td>[^<]*</td><td>[^<]*</td><td class="num">(\d+)</td>', history) == ["5"]
