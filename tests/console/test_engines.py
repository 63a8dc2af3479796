"""The engine registry against the suite's real PostgreSQL and PgBouncer."""

import os

import pytest
import sqlalchemy
from sqlalchemy import text

from console import engines
from console.models import Target
from console.pg import server
from tests.servers import superuser as _superuser




@pytest.fixture(autouse=True)
def fresh_registry():
    engines.dispose_all()
    yield
    engines.dispose_all()


def test_it_creates_one_engine_per_target_and_reuses_it(demo_targets):
    primary = demo_targets["demo-primary"]
    first = engines.engine_for(primary)
    assert engines.engine_for(Target.objects.get(pk=primary.pk)) is first
    assert engines.engine_for(demo_targets["demo-replica"]) is not first


def test_it_replaces_the_engine_of_a_changed_target(demo_targets):
    primary = demo_targets["demo-primary"]
    before = engines.engine_for(primary)
    primary.pool_size = 2
    primary.save()
    after = engines.engine_for(primary)
    assert after is not before
    assert after.pool.size() == 2


def test_it_replaces_a_backend_terminated_on_the_server(demo_targets, fleet):
    primary = demo_targets["demo-primary"]
    with engines.connect(primary) as conn:
        first_pid = server.backend_pid(conn)
    with _superuser(fleet) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (first_pid,)).fetchone()[0]
    # The pooled connection is dead (its backend has exited), it was idle for far less than
    # ENGINE_PING_AFTER_IDLE_S, and yet it is pinged (its socket holds the goodbye) and replaced.
    with engines.connect(primary) as conn:
        second_pid = server.backend_pid(conn)
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert second_pid != first_pid


def test_it_times_out_clearly_when_a_pool_of_one_is_exhausted(demo_targets):
    primary = demo_targets["demo-primary"]
    primary.pool_size, primary.max_overflow, primary.pool_timeout_s = 1, 0, 0.5
    primary.save()
    with engines.connect(primary):
        with pytest.raises(engines.PoolExhausted) as excinfo:
            with engines.connect(primary):
                pass
    message = str(excinfo.value)
    assert "demo-primary" in message and "no connection free after 0.5 s" in message
    assert "pool_size 1 + max_overflow 0" in message
    # Once the holder returns its connection, the pool works again.
    with engines.connect(primary) as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_it_sets_statement_and_lock_timeouts_per_use_only(demo_targets):
    primary = demo_targets["demo-primary"]
    primary.pool_size, primary.max_overflow = 1, 0
    primary.save()
    with engines.connect(primary, statement_timeout_ms=150, lock_timeout_ms=75) as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "150ms"
        assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "75ms"
    with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
        with engines.connect(primary, statement_timeout_ms=100) as conn:
            conn.execute(text("SELECT pg_sleep(2)"))
    # Same single pooled connection, next use: the defaults, not the previous use's values.
    with engines.connect(primary) as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "5s"


def test_it_applies_default_and_per_use_timeouts_behind_pgbouncer_too(demo_targets):
    bouncer = demo_targets["demo-bouncer"]
    for _ in range(3):  # whichever server connection the pool hands out
        with engines.connect(bouncer, statement_timeout_ms=150) as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "150ms"
        with engines.connect(bouncer) as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "5s"


def test_it_pings_a_connection_idle_for_longer_than_the_setting(demo_targets, settings):
    settings.ENGINE_PING_AFTER_IDLE_S = 0.0
    primary = demo_targets["demo-primary"]
    engines.forget(primary.pk)
    with engines.connect(primary) as conn:
        engine = conn.engine
    pings, original = [], engine.dialect.do_ping
    engine.dialect.do_ping = lambda dbapi_conn: pings.append(1) or original(dbapi_conn)
    try:
        with engines.connect(primary) as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dialect.do_ping = original
    assert pings == [1]


def test_it_rolls_back_when_asked(demo_targets):
    primary = demo_targets["demo-primary"]
    with engines.connect(primary, credential="change", rollback=True) as conn:
        conn.execute(text("CREATE TABLE rolled_back_probe (id int)"))
    with engines.connect(primary) as conn:
        assert conn.execute(text("SELECT to_regclass('rolled_back_probe')")).scalar_one() is None


def test_it_sets_application_name_per_target(demo_targets, fleet):
    replica = demo_targets["demo-replica"]
    with engines.connect(replica) as conn:
        name = conn.execute(text("SELECT current_setting('application_name')")).scalar_one()
    assert name == "fleet-console:demo-replica"


def test_it_turns_prepared_statements_off_behind_pgbouncer(demo_targets):
    bouncer, primary = demo_targets["demo-bouncer"], demo_targets["demo-primary"]
    with engines.connect(bouncer) as conn:
        assert conn.connection.dbapi_connection.prepare_threshold is None
    with engines.connect(primary) as conn:
        assert conn.connection.dbapi_connection.prepare_threshold is not None
    # Many identical statements in separate transactions: with server-side prepares, transaction
    # pooling would hand them server connections that never saw the PREPARE.
    for _ in range(30):
        with engines.connect(bouncer) as conn:
            assert conn.execute(text("SELECT count(*) FROM pgbench_branches WHERE bid > :b"), {"b": 0}).scalar_one() == 1


def test_it_gives_each_forked_process_its_own_connections(demo_targets):
    primary = demo_targets["demo-primary"]
    with engines.connect(primary) as conn:
        parent_pid = server.backend_pid(conn)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child does what a Celery pool process does on start
        status = 1
        try:
            os.close(read_end)
            from console.celery import _fresh_engines_after_fork

            _fresh_engines_after_fork()
            with engines.connect(primary) as conn:
                os.write(write_end, str(server.backend_pid(conn)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    child_pid = int(os.read(read_end, 32).decode())
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_pid != parent_pid
    # The parent's pooled connection survived the child's start and exit.
    with engines.connect(primary) as conn:
        assert server.backend_pid(conn) == parent_pid


def test_it_explains_an_unreachable_target_without_leaking_the_password(demo_targets):
    primary = demo_targets["demo-primary"]
    primary.port = 1  # nothing listens there
    probe = engines.probe(primary)
    assert not probe.ok
    assert "demo-primary" in probe.error and "refused" in probe.error.lower()
    assert os.environ["FLEET_MONITOR_PASSWORD"] not in probe.error
    assert os.environ["FLEET_OWNER_PASSWORD"] not in probe.error
