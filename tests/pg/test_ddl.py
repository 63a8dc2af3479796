"""Lock-safe DDL (console/pg/ddl.py) against the suite's real primary: the NOT NULL and foreign-key
sequences step by step, each step idempotent, and DDL that never queues application queries
behind it for longer than its lock_timeout."""

import threading
import time

import psycopg
import pytest
from psycopg import sql

from console import engines
from console.pg import ddl, lock_retry
from console.pg.ddl import ALREADY_DONE, DONE, DdlRefused, Op
from tests.servers import superuser




@pytest.fixture(autouse=True)
def fresh_registry():
    engines.dispose_all()
    yield
    engines.dispose_all()


@pytest.fixture
def table(fleet):
    """A fresh table of 1000 rows in the demo database, owned by the change login."""
    made = []

    def make(name, rows=1000):
        with superuser(fleet) as conn:
            ident = sql.Identifier("public", name)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(ident))
            conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, parent_id bigint, note text)").format(ident))
            conn.execute(sql.SQL("INSERT INTO {} SELECT g, g %% 10 + 1, 'n' || g FROM generate_series(1, %s) g")
                         .format(ident), (rows,))
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO fleet_owner").format(ident))
        made.append(name)
        return name

    yield make
    with superuser(fleet) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier("public", name)))


def _column(fleet, table, column):
    with superuser(fleet) as conn:
        return conn.execute(
            "SELECT attnotnull, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped", (f"public.{table}", column)
        ).fetchone()


def _constraints(fleet, table):
    with superuser(fleet) as conn:
        return dict(conn.execute("SELECT conname, convalidated FROM pg_constraint WHERE conrelid = %s::regclass",
                                 (f"public.{table}",)).fetchall())


def _apply_twice(target, op, **kwargs):
    first, second = ddl.apply(target, op, **kwargs), ddl.apply(target, op, **kwargs)
    assert first.outcome == DONE and second.outcome == ALREADY_DONE, op
    assert second.statements == []
    return first


def test_it_adds_a_not_null_column_step_by_step_each_step_once(fleet, demo_targets, table):
    primary = demo_targets["demo-primary"]
    name = table("ddl_notnull")
    column = Op("add_column_nullable", "public", name, column="flag", column_type="varchar(20)")
    result = _apply_twice(primary, column)
    assert result.statements == [ddl.render(column).rstrip(";")]
    assert _column(fleet, name, "flag") == (False, "character varying(20)")

    # SET NOT NULL without a validated CHECK would scan under ACCESS EXCLUSIVE: refused, nothing done.
    not_null = Op("set_not_null", "public", name, column="flag")
    with pytest.raises(DdlRefused, match="no validated CHECK"):
        ddl.apply(primary, not_null)
    assert _column(fleet, name, "flag")[0] is False

    with superuser(fleet) as conn:  # the backfill's part
        conn.execute(sql.SQL("UPDATE {} SET flag = 'x'").format(sql.Identifier(name)))
    check = Op("add_not_null_check_not_valid", "public", name, column="flag", constraint="flag_not_null")
    _apply_twice(primary, check)
    assert _constraints(fleet, name)["flag_not_null"] is False
    with pytest.raises(DdlRefused, match="no validated CHECK"):
        ddl.apply(primary, not_null)  # NOT VALID proves nothing yet
    _apply_twice(primary, Op("validate_constraint", "public", name, constraint="flag_not_null"))
    assert _constraints(fleet, name)["flag_not_null"] is True
    _apply_twice(primary, not_null)
    assert _column(fleet, name, "flag")[0] is True
    _apply_twice(primary, Op("drop_constraint", "public", name, constraint="flag_not_null"))
    assert "flag_not_null" not in _constraints(fleet, name)
    assert _column(fleet, name, "flag")[0] is True


def test_it_adds_a_foreign_key_after_dropping_an_invalid_index_left_over(fleet, demo_targets, table):
    primary = demo_targets["demo-primary"]
    parent, child = table("ddl_parent", rows=10), table("ddl_child")
    # An earlier try that failed half-way: CREATE INDEX CONCURRENTLY leaves an INVALID index behind.
    with superuser(fleet) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY ddl_child_parent_idx ON {} (parent_id)")
                         .format(sql.Identifier(child)))
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ddl_child_parent_idx'::regclass"
                            ).fetchone() == (False,)
    logged = []
    index = Op("create_index_concurrently", "public", child, index="ddl_child_parent_idx", columns=("parent_id",))
    result = ddl.apply(primary, index, log=lambda message, level="info": logged.append(message))
    assert result.outcome == DONE and result.statements[0].startswith("DROP INDEX CONCURRENTLY IF EXISTS")
    assert any("dropped the INVALID index ddl_child_parent_idx" in line for line in logged)
    assert ddl.apply(primary, index).outcome == ALREADY_DONE
    with superuser(fleet) as conn:
        valid, unique = conn.execute("SELECT indisvalid, indisunique FROM pg_index"
                                     " WHERE indexrelid = 'ddl_child_parent_idx'::regclass").fetchone()
    assert valid and not unique, "the leftover was replaced by the index asked for"

    foreign_key = Op("add_foreign_key_not_valid", "public", child, column="parent_id", constraint="ddl_child_parent_fk",
                     ref_schema="public", ref_table=parent, ref_column="id")
    _apply_twice(primary, foreign_key)
    assert _constraints(fleet, child)["ddl_child_parent_fk"] is False
    _apply_twice(primary, Op("validate_constraint", "public", child, constraint="ddl_child_parent_fk"))
    assert _constraints(fleet, child)["ddl_child_parent_fk"] is True


def test_it_renders_quoted_sql_and_refuses_bad_names_before_connecting():
    op = Op("add_foreign_key_not_valid", "public", "Orders", column="customer_id", constraint="orders_customer_fk",
            ref_schema="public", ref_table="customers", ref_column="id")
    assert ddl.render(op) == ('ALTER TABLE "public"."Orders" ADD CONSTRAINT "orders_customer_fk" FOREIGN KEY '
                              '("customer_id") REFERENCES "public"."customers" ("id") NOT VALID;')
    assert "DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"i\";" in ddl.render(
        Op("create_index_concurrently", "public", "t", index="i", columns=("a", "b")))
    with pytest.raises(DdlRefused, match="table"):
        Op("drop_constraint", "public", 't"; DROP TABLE x; --', constraint="c")
    with pytest.raises(DdlRefused, match="not a column type"):
        ddl.apply(None, Op("add_column_nullable", "public", "t", column="c", column_type="int; DROP TABLE t"))


def test_it_waits_at_most_lock_timeout_per_try_and_never_queues_queries_longer(fleet, demo_targets, table):
    # Given a session holding a lock that conflicts with ALTER TABLE, and application queries on the table,
    primary = demo_targets["demo-primary"]
    name = table("ddl_locked")
    lock_timeout_ms = 400
    holder = superuser(fleet)
    holder.execute("BEGIN")
    holder.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
    holder_pid = holder.info.backend_pid
    stop = threading.Event()
    waits = {}  # (pid, waitstart) -> (mode, longest wait seen in s)

    def application():
        with superuser(fleet) as conn:
            while not stop.is_set():
                conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))

    def watch():
        with superuser(fleet) as conn:
            while not stop.is_set():
                for pid, mode, waitstart, waited_s in conn.execute(
                        "SELECT pid, mode, waitstart, EXTRACT(EPOCH FROM clock_timestamp() - waitstart)::float8"
                        " FROM pg_locks WHERE NOT granted AND relation = %s::regclass AND waitstart IS NOT NULL",
                        (f"public.{name}",)):
                    waits[(pid, waitstart)] = (mode, max(waited_s, waits.get((pid, waitstart), (mode, 0))[1]))
                time.sleep(0.01)

    threads = [threading.Thread(target=application), threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    logged = []
    op = Op("add_column_nullable", "public", name, column="extra", column_type="bigint")
    try:
        # when the DDL runs under a short lock_timeout with two retries,
        with pytest.raises(lock_retry.LockRetriesExhausted) as refused:
            ddl.apply(primary, op, lock_timeout_ms=lock_timeout_ms, retries=2,
                      log=lambda message, level="info": logged.append((level, message)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        holder.execute("ROLLBACK")
        holder.close()
    # then it tried three times, reporting the holder's pid and query on each wait, and gave up clearly,
    assert [level for level, _ in logged] == ["warning", "warning", "error"]
    for _level, message in logged:
        assert f"pid {holder_pid}" in message and f"SELECT count(*) FROM {sql.Identifier(name).as_string(None)}" in message
    assert "gave up after 3 tries of 400 ms" in str(refused.value)
    assert _column(fleet, name, "extra") is None
    # each try waited at most lock_timeout, and the queries queued behind it never longer
    # (the margin is the timeout signal's delivery on a busy machine, not a speed claim).
    ddl_waits = [waited for mode, waited in waits.values() if mode == "AccessExclusiveLock"]
    query_waits = [waited for mode, waited in waits.values() if mode == "AccessShareLock"]
    assert len(ddl_waits) == 3 and query_waits, waits
    bound_s = lock_timeout_ms / 1000 * 1.25
    assert max(ddl_waits) <= bound_s and max(query_waits) <= bound_s, waits

    # Once the holder is gone the same operation goes through, and only once.
    assert ddl.apply(primary, op, lock_timeout_ms=lock_timeout_ms).outcome == DONE
    assert ddl.apply(primary, op).outcome == ALREADY_DONE


def test_it_reports_the_blocker_of_a_validate_waiting_in_its_own_transaction(fleet, demo_targets, table):
    # Given a NOT VALID check and a session holding a lock VALIDATE must wait for,
    primary = demo_targets["demo-primary"]
    name = table("ddl_validate")
    ddl.apply(primary, Op("add_not_null_check_not_valid", "public", name, column="note", constraint="note_nn"))
    holder = superuser(fleet)
    holder_pid = holder.info.backend_pid
    holder.execute("BEGIN")
    holder.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(sql.Identifier(name)))
    logged = []

    def release_on_first_wait(message, level="info"):
        logged.append(message)
        if level == "warning" and len(logged) == 1:
            holder.execute("ROLLBACK")

    # when VALIDATE runs and the holder lets go after the first wait,
    try:
        result = ddl.apply(primary, Op("validate_constraint", "public", name, constraint="note_nn"),
                           lock_timeout_ms=300, retries=3, log=release_on_first_wait)
    finally:
        holder.close()
    # then the wait named the holder, and the next try validated it.
    assert result.outcome == DONE
    assert f"pid {holder_pid}" in logged[0] and "LOCK TABLE" in logged[0]
    assert _constraints(fleet, name)["note_nn"] is True
