"""console/pg/server.py, statements.py, replication.py and bouncer.py on the real fleet, as the
monitor login."""

import pytest

from console import engines
from console.pg import bouncer, replication, server, statements


def test_it_tells_who_the_server_is_and_that_the_login_is_no_superuser(demo_targets):
    with engines.connect(demo_targets["demo-replica"], rollback=True) as conn:
        identity = server.identity(conn)
    assert identity["server_version"].startswith("15") and identity["in_recovery"] is True
    assert identity["is_superuser"] is False


def test_it_reads_pg_stat_statements_with_top_level_and_nested_rows_apart(demo_targets):
    with engines.connect(demo_targets["demo-primary"], rollback=True) as conn:
        assert statements.availability(conn) == {"installed": True, "preloaded": True}
        rows = statements.statements(conn)
    assert rows and {"queryid", "dbid", "userid", "toplevel", "calls", "total_exec_ms"} <= set(rows[0])
    keys = [(r["queryid"], r["dbid"], r["userid"], r["toplevel"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_it_sees_the_standby_from_both_sides(demo_targets):
    with engines.connect(demo_targets["demo-primary"], rollback=True) as conn:
        standbys = replication.standbys(conn)
    assert [s["application_name"] for s in standbys] == ["demo-replica"] and standbys[0]["state"] == "streaming"
    with engines.connect(demo_targets["demo-replica"], rollback=True) as conn:
        status = replication.standby_status(conn)
    assert status["replay_paused"] is False and status["receiver_status"] == "streaming"


def test_it_reads_pgbouncer_pools_by_column_name_and_refuses_other_commands(demo_targets):
    target = demo_targets["demo-bouncer"]
    with bouncer.admin_connection(target.host, target.port, target.username, target.password(), 3) as conn:
        pools = bouncer.show(conn, "POOLS")
        with pytest.raises(ValueError):
            bouncer.show(conn, "POOLS; SHUTDOWN")
    assert {"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle"} <= set(pools[0])
