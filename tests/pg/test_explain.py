"""EXPLAIN as an attacker would use it: PostgreSQL's parser decides what one statement is, the
extended protocol refuses a second one anyway, and the monitor role has no power to abuse."""

import hashlib
import os
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import text

from console import engines
from console.models import AuditEvent
from console.pg import explain as pg_explain


def _explain(client, target, sql_text, analyze=False):
    data = {"sql": sql_text, **({"analyze": "on"} if analyze else {})}
    response = client.post(f"/fleet/targets/{target.pk}/explain/", data, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def marker():
    """A file that a shell command run by the database server would create."""
    path = f"/tmp/fleet-explain-marker-{uuid.uuid4().hex}"
    yield path
    assert not os.path.exists(path), "the database server ran a shell command"


def test_it_refuses_a_second_statement_hidden_behind_an_identifier_with_dollars(transactional_db, client_as, demo_targets, marker):
    primary = demo_targets["demo-primary"]
    attack = f"select 1 as a$x$; copy (select 1) to program 'touch {marker}'; select 1 as b$x$"
    body = _explain(client_as("operator"), primary, attack)
    assert "Only one statement can be explained at a time (found 3)" in body
    body = _explain(client_as("operator"), primary, "select 1 as a$x$; select pg_sleep(3) as b$x$")
    assert "Only one statement" in body
    assert AuditEvent.objects.filter(action="monitors.explain", outcome="failed").count() == 2


def test_it_accepts_identifiers_with_dollars_and_semicolons_inside_literals(transactional_db, client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    body = _explain(client_as("operator"), primary, "select 1 as a$x$")
    assert "Result" in body and "error" not in body.lower()
    body = _explain(client_as("operator"), primary, "SELECT ';' AS a, $q$;$q$ AS b /* ; */ FROM pgbench_branches; -- ;")
    # A plan of the table (a sequential or an index-only scan, as its statistics say), no error.
    assert 'id="explain-plan"' in body and "on public.pgbench_branches" in body and "error" not in body.lower()


def test_it_lets_the_server_refuse_a_second_statement_whatever_the_parser_said(demo_targets, monkeypatch, marker):
    # Were the parse check ever wrong, the extended protocol still refuses a second statement.
    monkeypatch.setattr(pg_explain, "check", lambda sql_text, analyze=False: pg_explain.Statement(sql_text, "SELECT"))
    with pytest.raises(Exception, match="cannot insert multiple commands into a prepared statement"):
        with engines.connect(demo_targets["demo-primary"], rollback=True) as conn:
            pg_explain.explain(conn, f"select 1; copy (select 1) to program 'touch {marker}'")


def test_it_runs_as_a_monitor_role_that_cannot_run_programs_or_read_files(demo_targets, marker):
    with engines.connect(demo_targets["demo-primary"], rollback=True) as conn:
        assert conn.execute(text("SELECT current_user, current_setting('is_superuser')")).one() == ("fleet_monitor", "off")
    with pytest.raises(Exception, match="privileges of the pg_execute_server_program role") as refused:
        with engines.connect(demo_targets["demo-primary"], rollback=True) as conn:
            conn.exec_driver_sql(f"copy (select 1) to program 'touch {marker}'")
    assert isinstance(refused.value.orig, psycopg.errors.InsufficientPrivilege)


def test_it_shows_permission_denied_instead_of_a_server_file(transactional_db, client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    hostname = open("/etc/hostname").read().strip()
    body = _explain(client_as("operator"), primary, "select pg_read_file('/etc/hostname')::int", analyze=True)
    assert "permission denied for function pg_read_file" in body
    assert "monitor role" in body
    if len(hostname) > 4:
        assert hostname not in body


def test_it_analyzes_only_plain_queries_read_only_and_rolled_back(transactional_db, client_as, demo_targets, fleet):
    primary, client = demo_targets["demo-primary"], client_as("operator")
    body = _explain(client, primary, "SELECT * FROM pgbench_accounts WHERE aid = 42;")
    assert "Index Scan" in body and "actual time" not in body
    body = _explain(client, primary, "SELECT count(*) FROM pgbench_branches", analyze=True)
    assert "actual time" in body and "rolled back" in body
    for write in ("DELETE FROM pgbench_history", "WITH gone AS (DELETE FROM pgbench_history RETURNING *) SELECT * FROM gone"):
        assert "offered for queries only" in _explain(client, primary, write, analyze=True)
    # The plan of a write needs that write's privilege, which the monitor role does not have.
    assert "permission denied for table pgbench_history" in _explain(client, primary, "DELETE FROM pgbench_history")
    assert "SELECT INTO creates a table" in _explain(client, primary, "SELECT 1 INTO new_table")
    assert "this is Copy" in _explain(client, primary, "COPY pgbench_branches TO STDOUT")
    assert "use the session buttons" in _explain(client, primary, "SELECT pg_terminate_backend(1)", analyze=True)
    with psycopg.connect(host="127.0.0.1", port=fleet.port("primary"), user="postgres", dbname="demo",
                         password=fleet.superuser_password) as conn:
        assert conn.execute("SELECT to_regclass('new_table') IS NULL").fetchone()[0]


def test_it_audits_the_whole_statement_however_long(transactional_db, client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    padded = "select 1 /*" + " " * 5000 + "*/ ; select 2"
    _explain(client_as("operator"), primary, padded)
    event = AuditEvent.objects.get(action="monitors.explain")
    assert event.detail["sql"] == padded
    assert event.detail["sql_sha256"] == hashlib.sha256(padded.encode()).hexdigest()
    assert event.outcome == "failed"


def test_it_refuses_and_audits_a_nul_byte_in_the_statement(transactional_db, client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    response = client_as("operator").post(f"/fleet/targets/{primary.pk}/explain/", {"sql": "select 1\x00; select 2"})
    assert response.status_code in (200, 400)
    assert "NUL" in response.content.decode()
    assert AuditEvent.objects.filter(action="monitors.explain").exclude(outcome="ok").count() == 1


# Property: whatever the input, a text the check accepts is one statement for the server too. --

TOKENS = st.sampled_from([
    "select", "1", "a", "a$x$", "$x$", "$$", "'", "';'", '"', '";"', "--", "\n", "/*", "*/", ";", " ", "as",
    "b$", "$1", "from", "(", ")", ",", "e'\\''", "values", "table", "pgbench_branches", "with", "x",
])


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TOKENS, min_size=1, max_size=14).map(" ".join))
def test_it_never_accepts_input_the_server_takes_for_two_statements(demo_targets, sql_text):
    try:
        statement = pg_explain.check(sql_text)
    except pg_explain.NotOneStatement:
        return
    assert _server_sees_one(demo_targets, sql_text)
    assert _server_sees_one(demo_targets, statement.text)


def _server_sees_one(demo_targets, sql_text) -> bool:
    """Ask the server (plan only, rolled back): does this text hold more than one command?"""
    try:
        with engines.connect(demo_targets["demo-primary"], rollback=True, statement_timeout_ms=500) as conn:
            with conn.connection.driver_connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN {sql_text}", binary=True)
    except Exception as exc:  # syntax errors and the like are fine: not two commands
        return "cannot insert multiple commands" not in str(exc)
    return True
