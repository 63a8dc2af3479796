"""Replica lag after an idle period: from the primary's pg_stat_replication when the primary is
registered, from the heartbeat when it cannot be reached; never the primary's idle time."""

import re
import time


from console.models import Target
from monitors import panels, samplers
from monitors.models import Alert, TargetState
from tests.servers import superuser as _connect
from tests.waiting import wait_until

INTERVAL_S = 3.0  # the sampling interval these tests run rounds at (beat's is MONITOR_FAST_INTERVAL_S)
SLACK_S = 1.0  # what a round itself may take on a busy machine





def _replica_caught_up(fleet) -> bool:
    with _connect(fleet) as primary:
        return primary.execute("SELECT bool_and(replay_lsn >= pg_current_wal_lsn()) FROM pg_stat_replication").fetchone()[0]


def _run_rounds(targets, seconds: float, workload, check) -> None:
    """Sample every INTERVAL_S for `seconds`, as beat would; `workload()` runs in between (every
    0.2 s: it paces the writes, it waits for nothing), `check(started, finished)` after each round."""
    end = time.monotonic() + seconds
    next_round = time.monotonic()
    while time.monotonic() < end:
        if time.monotonic() >= next_round:
            started = time.monotonic()
            samplers.sample_fast_round(targets)
            check(started, time.monotonic())
            next_round = started + INTERVAL_S
        workload()
        time.sleep(0.2)


def _shown_seconds(html: str, element_id: str) -> float:
    found = re.search(rf'id="{element_id}">\s*([\d.]+) s', html)
    assert found, f"no figure in #{element_id}"
    return float(found.group(1))


def _figures(client, primary, replica, orphan) -> dict[str, float | None]:
    """Every lag figure the console shows for these targets: states, overview, pages."""
    states = {s.target_id: s for s in TargetState.objects.filter(target__in=[primary, replica, orphan])}
    rows = {r["name"]: r for r in panels.overview_rows(Target.objects.filter(pk__in=[primary.pk, replica.pk, orphan.pk]))}
    replica_page = client.get(f"/fleet/targets/{replica.pk}/").content.decode()
    orphan_page = client.get(f"/fleet/targets/{orphan.pk}/").content.decode()
    return {
        "replica, primary's view": states[replica.pk].replica_lag_s,
        "replica, own view (heartbeat)": states[replica.pk].replication.get("own_lag_s"),
        "primary, worst standby": states[primary.pk].replica_lag_s,
        "replica without a reachable primary": states[orphan.pk].replica_lag_s,
        "overview, replica": rows[replica.name]["lag_s"],
        "overview, primary": rows[primary.name]["lag_s"],
        "overview, replica without a reachable primary": rows[orphan.name]["lag_s"],
        "replica page": _shown_seconds(replica_page, "replica-lag"),
        "replica page, primary's view": _shown_seconds(replica_page, "replica-lag-primary"),
        "replica page, own view": _shown_seconds(replica_page, "replica-lag-own"),
        "page of the replica without a reachable primary": _shown_seconds(orphan_page, "replica-lag"),
    }


def test_it_measures_true_lag_after_an_idle_period_and_alerts_only_above_thresholds(
        transactional_db, demo_targets, fleet, client_as):
    # Given the demo primary (heartbeat on) with its replica, and a second registration of the
    # same replica whose primary the console cannot reach
    primary, replica = demo_targets["demo-primary"], demo_targets["demo-replica"]
    assert primary.heartbeat_enabled
    unreachable = Target.objects.create(name="primary-elsewhere", host="127.0.0.1", port=1, dbname="demo",
                                        username="fleet_monitor", connect_timeout_s=1, heartbeat_enabled=True)
    orphan = Target.objects.create(name="replica-elsewhere", role=Target.Role.REPLICA, upstream=unreachable,
                                   host="127.0.0.1", port=fleet.port("replica"), dbname="demo",
                                   username="fleet_monitor", password_env="FLEET_MONITOR_PASSWORD")
    targets = [primary, replica, orphan, unreachable]
    client = client_as("viewer")
    writes_started = None
    seen = []

    def true_lag(moment: float) -> float:
        return max(0.0, moment - writes_started) if writes_started is not None else 0.0

    def check(started: float, finished: float) -> None:
        low, high = true_lag(started) - INTERVAL_S - SLACK_S, true_lag(finished) + INTERVAL_S + SLACK_S
        for name, value in _figures(client, primary, replica, orphan).items():
            seen.append((name, value))
            assert value is not None and low <= value <= high, (
                f"{name} shows {value} s, the true lag was {true_lag(started):.1f}-{true_lag(finished):.1f} s")
        for alert in Alert.open().filter(target__in=[primary, replica, orphan], metric="replica_lag_s"):
            assert alert.threshold <= high, f"{alert.message} opened with a true lag of {true_lag(finished):.1f} s"
        sources = dict(TargetState.objects.filter(target__in=[primary, replica, orphan]).values_list("target_id", "replica_lag_source"))
        assert sources == {primary.pk: "standbys", replica.pk: "primary", orphan.pk: "replica"}

    with _connect(fleet) as writer, _connect(fleet, "replica") as standby:
        writer.execute("CREATE TABLE IF NOT EXISTS lag_writes (at timestamptz DEFAULT now())")
        wait_until(lambda: _replica_caught_up(fleet), 30, "the replica to replay the table")
        try:
            # When the primary writes nothing but heartbeats for two minutes
            _run_rounds(targets, 120, workload=lambda: None, check=check)
            # and then replay pauses while the primary writes for 10 s
            standby.execute("SELECT pg_wal_replay_pause()")
            wait_until(lambda: standby.execute("SELECT pg_get_wal_replay_pause_state() = 'paused'").fetchone()[0],
                        10, "replay to pause")
            writes_started = time.monotonic()
            _run_rounds(targets, 10 + INTERVAL_S, workload=lambda: writer.execute("INSERT INTO lag_writes DEFAULT VALUES"),
                        check=check)
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
            writer.execute("DROP TABLE IF EXISTS lag_writes")
        # Then every figure was within one interval of the true lag (checked round by round), and
        # the lag that built up was seen
        assert max(value for name, value in seen if name == "replica, primary's view") >= 10
        wait_until(lambda: _replica_caught_up(fleet), 30, "the replica to catch up after resume")


def test_it_matches_a_replica_named_otherwise_to_the_primarys_only_standby(transactional_db, demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    alias = Target.objects.create(name="replica-alias", role=Target.Role.REPLICA, upstream=primary, host="127.0.0.1",
                                  port=fleet.port("replica"), dbname="demo", username="fleet_monitor",
                                  password_env="FLEET_MONITOR_PASSWORD")
    samplers.sample_fast_round([primary, alias])
    state = TargetState.objects.get(target=alias)
    assert state.replica_lag_source == "primary"
    assert state.replication["primary_view"]["application_name"] == "demo-replica"
    assert state.replication["primary_view"]["upstream"] == "demo-primary"


def test_it_writes_the_heartbeat_as_the_change_role_in_a_schema_of_its_own(transactional_db, demo_targets, fleet, client_as):
    primary, replica = demo_targets["demo-primary"], demo_targets["demo-replica"]
    samplers.sample_fast_round([primary, replica])
    with _connect(fleet) as conn:
        owner = conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'fleet_console'").fetchone()
        privileges = conn.execute(
            "SELECT has_table_privilege('fleet_monitor', 'fleet_console.heartbeat', 'SELECT'),"
            " has_table_privilege('fleet_monitor', 'fleet_console.heartbeat', 'INSERT'),"
            " has_table_privilege('fleet_monitor', 'fleet_console.heartbeat', 'UPDATE')").fetchone()
        beats = conn.execute("SELECT count(*), min(beats) FROM fleet_console.heartbeat").fetchone()
    assert owner == ("fleet_owner",)
    assert privileges == (True, False, False), "the monitor role reads the heartbeat and writes nothing"
    assert beats[0] >= 1 and beats[1] >= 1
    wait_until(lambda: _replica_caught_up(fleet), 30, "the replica to replay the heartbeat")
    samplers.sample_fast_round([primary, replica])
    assert TargetState.objects.get(target=replica).replication["heartbeat_at"]

    # A primary with the heartbeat on but no change credential: the heartbeat fails, visibly
    no_owner = Target.objects.create(name="primary-no-owner", host="127.0.0.1", port=fleet.port("primary"), dbname="demo",
                                     username="fleet_monitor", password_env="FLEET_MONITOR_PASSWORD", heartbeat_enabled=True)
    assert samplers.sample_fast_round([no_owner])["ok"] == 1
    no_owner.refresh_from_db()
    assert no_owner.status == Target.Status.UP
    page = client_as("viewer").get(f"/fleet/targets/{no_owner.pk}/").content.decode()
    failing = re.search(r'id="sampler-failing-heartbeat">(.*?)</p>', page, re.S)
    assert failing and "Heartbeat writer failing" in failing.group(1) and "no change credential" in failing.group(1)
