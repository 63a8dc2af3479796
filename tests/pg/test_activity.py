"""console/pg/activity.py on the real primary, as the monitor login."""

from console import engines
from console.pg import activity


def _sessions(target):
    with engines.connect(target, rollback=True) as conn:
        return {row["pid"]: row for row in activity.sessions(conn)}


def test_it_lists_a_running_query_with_its_duration_and_user(demo_targets, running_session):
    row = _sessions(demo_targets["demo-primary"])[running_session]
    assert row["state"] == "active" and "pg_sleep(60)" in row["query"]
    assert row["username"] == "fleet_owner" and row["query_seconds"] >= 0 and not row["blocked_by"]


def test_it_names_the_session_a_waiting_one_is_blocked_by(demo_targets, blocked_session):
    blocker, waiter = blocked_session
    rows = _sessions(demo_targets["demo-primary"])
    assert list(rows[waiter]["blocked_by"]) == [blocker] and not rows[blocker]["blocked_by"]


def test_it_reads_the_limits_without_being_a_superuser(demo_targets):
    with engines.connect(demo_targets["demo-primary"], rollback=True) as conn:
        limits = activity.limits(conn)
    assert limits["max_connections"] == 100 and limits["reserved_connections"] == 3 and limits["in_recovery"] is False


def test_it_cancels_and_terminates_an_ordinary_session_as_the_monitor_role(demo_targets, running_session):
    primary = demo_targets["demo-primary"]
    with engines.connect(primary) as conn:
        assert activity.cancel(conn, running_session) is True
    with engines.connect(primary) as conn:
        assert activity.terminate(conn, running_session) is True
        assert activity.terminate(conn, 2_000_000_000) is False  # no such backend


def test_it_cannot_signal_a_superusers_session(demo_targets, fleet):
    from tests.servers import superuser

    with superuser(fleet) as admin, engines.connect(demo_targets["demo-primary"]) as conn:
        try:
            activity.terminate(conn, admin.info.backend_pid)
        except Exception as exc:  # pg_signal_backend does not reach superusers' backends
            assert "permission denied" in str(exc) or "must be a superuser" in str(exc)
        else:
            raise AssertionError("the monitor role terminated a superuser's session")
        assert admin.execute("SELECT 1").fetchone() == (1,)
