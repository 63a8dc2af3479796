"""The health checks (console/pg/checks.py, monitors/checks.py) on the demo primary: an invalid
index, a duplicate index and a nearly exhausted sequence each appear on the target page with the
SQL that fixes it; the sequence raises its alert; a failing run is shown."""

import html
import re

import psycopg
import pytest
from playwright.sync_api import expect

from tests.servers import application, superuser
from tests.waiting import wait_for_backend, wait_until

SCHEMA = "health_checks_test"


@pytest.fixture
def broken_schema(fleet):
    """On the demo primary: an index left INVALID by a failed CREATE UNIQUE INDEX CONCURRENTLY
    (the column has duplicates), two identical indexes, and a sequence 994 of 1000 used."""
    with superuser(fleet) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC")
        conn.execute(f"CREATE TABLE {SCHEMA}.orders (id int, customer int)")
        conn.execute(f"INSERT INTO {SCHEMA}.orders SELECT g, g % 10 FROM generate_series(1, 100) g")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY orders_customer_unique ON {SCHEMA}.orders (customer)")
        conn.execute(f"CREATE INDEX orders_customer_a ON {SCHEMA}.orders (customer)")
        conn.execute(f"CREATE INDEX orders_customer_b ON {SCHEMA}.orders (customer)")
        conn.execute(f"CREATE SEQUENCE {SCHEMA}.order_numbers MAXVALUE 1000 START 990")
        for _ in range(5):
            conn.execute(f"SELECT nextval('{SCHEMA}.order_numbers')")
        yield conn
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")


def test_it_shows_an_invalid_index_a_duplicate_index_and_a_nearly_exhausted_sequence(
        transactional_db, demo_targets, broken_schema, client_as):
    from monitors import checks
    from monitors.models import Alert, HealthCheckRun

    primary = demo_targets["demo-primary"]
    summary = checks.sample_checks_round([primary])
    assert summary["ok"] == 1, HealthCheckRun.objects.get(target=primary).error

    findings = HealthCheckRun.objects.get(target=primary).findings
    assert [r["index_name"] for r in findings["invalid_indexes"] if r["schema"] == SCHEMA] == ["orders_customer_unique"]
    duplicates = [r for r in findings["duplicate_indexes"] if r["schema"] == SCHEMA]
    assert [(r["index_name"], r["covered_by"]) for r in duplicates] == [("orders_customer_b", "orders_customer_a")]
    sequence = next(r for r in findings["sequences"] if r["sequence_name"] == "order_numbers")
    assert sequence["last_value"] == 994 and sequence["upper_limit"] == 1000 and sequence["used_pct"] == 99.4
    assert any(r["database"] == "demo" for r in findings["wraparound"])

    page = html.unescape(client_as("viewer").get(f"/fleet/targets/{primary.pk}/").content.decode())
    assert 'id="panel-checks"' in page and "Last run" in page
    assert f'REINDEX INDEX CONCURRENTLY "{SCHEMA}"."orders_customer_unique";' in page
    assert f'DROP INDEX CONCURRENTLY "{SCHEMA}"."orders_customer_b";' in page
    assert f'ALTER SEQUENCE "{SCHEMA}"."order_numbers" NO MAXVALUE;' in page
    assert "VACUUM (FREEZE, VERBOSE);" in page

    alert = Alert.open().get(target=primary, metric="sequence_used_pct")
    assert alert.level == Alert.Level.CRITICAL and alert.value == 99.4
    assert "Sequence 99% used" in alert.message
    assert not Alert.open().filter(target=primary, metric="xid_wraparound_pct").exists()


def test_it_runs_every_check_on_the_primary_the_replica_and_the_scratch_server(transactional_db, demo_targets):
    from monitors import checks
    from monitors.models import HealthCheckRun

    databases = [t for t in demo_targets.values() if t.role != "pgbouncer"]
    summary = checks.sample_checks_round(databases)

    runs = {run.target.name: run for run in HealthCheckRun.objects.select_related("target")}
    assert summary["failed"] == 0, {name: run.error for name, run in runs.items()}
    assert sorted(runs) == sorted(t.name for t in databases)
    for run in runs.values():
        assert set(run.findings) == {check.name for check in checks.CHECKS}
    oldest = runs["demo-primary"].findings["oldest_tables"]
    assert oldest and all(r["fix"].startswith("VACUUM (FREEZE, VERBOSE) ") for r in oldest)


def test_it_shows_a_session_idle_in_transaction_and_how_to_end_it(transactional_db, demo_targets, fleet, settings):
    from monitors import checks
    from monitors.models import HealthCheckRun

    settings.MONITOR_LONG_RUNNING_S = 0.2
    primary = demo_targets["demo-primary"]
    with application(fleet, application_name="idle-in-transaction-test") as idle, superuser(fleet) as watcher:
        idle.execute("BEGIN")
        idle.execute("SELECT 1")
        wait_for_backend(watcher, "application_name = 'idle-in-transaction-test' AND state = 'idle in transaction' "
                         "AND now() - state_change > interval '0.3 s'", what="the session to idle in its transaction")
        checks.sample_checks_round([primary])
        pid = idle.info.backend_pid
    rows = HealthCheckRun.objects.get(target=primary).findings["idle_in_transaction"]
    row = next(r for r in rows if r["application_name"] == "idle-in-transaction-test")
    assert row["pid"] == pid and row["fix"] == f"SELECT pg_terminate_backend({pid});"


def test_it_widens_an_integer_column_whose_serial_is_near_its_limit(transactional_db, demo_targets, broken_schema):
    from monitors import checks
    from monitors.models import HealthCheckRun

    broken_schema.execute(f"CREATE TABLE {SCHEMA}.invoices (id serial PRIMARY KEY)")
    broken_schema.execute(f"SELECT setval('{SCHEMA}.invoices_id_seq', 2147000000)")
    primary = demo_targets["demo-primary"]
    checks.sample_checks_round([primary])

    sequences = HealthCheckRun.objects.get(target=primary).findings["sequences"]
    row = next(r for r in sequences if r["sequence_name"] == "invoices_id_seq")
    assert (row["table_name"], row["column_name"], row["column_type"]) == ("invoices", "id", "integer")
    assert row["upper_limit"] == 2**31 - 1 and row["used_pct"] >= 99.9
    assert f'ALTER TABLE "{SCHEMA}"."invoices" ALTER COLUMN "id" TYPE bigint;' in row["fix"]
    assert f'ALTER SEQUENCE "{SCHEMA}"."invoices_id_seq" AS bigint NO MAXVALUE;' in row["fix"]


def test_it_alerts_on_wraparound_from_the_stored_run_at_the_targets_thresholds(transactional_db, demo_targets):
    from monitors import checks
    from monitors.models import Alert, AlertThreshold, HealthCheckRun

    primary = demo_targets["demo-primary"]
    checks.sample_checks_round([primary])
    assert not Alert.open().filter(target=primary, metric="xid_wraparound_pct").exists()  # a young cluster

    # Any database's age is above zero: a tiny warning threshold opens the alert at its level.
    AlertThreshold.objects.create(target=primary, metric="xid_wraparound_pct", warning=1e-9, critical=50.0)
    checks.sample_checks_round([primary])
    databases = HealthCheckRun.objects.get(target=primary).findings["wraparound"]
    alert = Alert.open().get(target=primary, metric="xid_wraparound_pct")
    assert alert.level == Alert.Level.WARNING and alert.value == max(r["used_pct"] for r in databases) > 0
    assert alert.message.startswith("Transaction ID wraparound")


def test_it_quotes_names_in_the_suggested_sql(transactional_db, demo_targets, broken_schema):
    from monitors import checks
    from monitors.models import HealthCheckRun

    broken_schema.execute(f'CREATE INDEX "odd ""name""; DROP TABLE x" ON {SCHEMA}.orders (customer)')
    primary = demo_targets["demo-primary"]
    checks.sample_checks_round([primary])
    duplicates = HealthCheckRun.objects.get(target=primary).findings["duplicate_indexes"]
    fixes = {r["index_name"]: r["fix"] for r in duplicates if r["schema"] == SCHEMA}
    assert fixes['odd "name"; DROP TABLE x'] == f'DROP INDEX CONCURRENTLY "{SCHEMA}"."odd ""name""; DROP TABLE x";'


def test_it_clears_findings_and_the_alert_once_their_sql_is_run(transactional_db, demo_targets, broken_schema):
    from monitors import checks
    from monitors.models import Alert, HealthCheckRun

    primary = demo_targets["demo-primary"]
    checks.sample_checks_round([primary])
    assert Alert.open().filter(target=primary, metric="sequence_used_pct").exists()
    findings = HealthCheckRun.objects.get(target=primary).findings
    ours = {name: [r for r in findings[name] if r["schema"] == SCHEMA]
            for name in ("invalid_indexes", "duplicate_indexes", "sequences")}
    # What an operator would paste: the last statement of the invalid index's fix drops it (it
    # cannot be rebuilt over duplicates); each statement on its own (CONCURRENTLY needs that).
    broken_schema.execute(ours["invalid_indexes"][0]["fix"].splitlines()[-1])
    broken_schema.execute(ours["duplicate_indexes"][0]["fix"])
    broken_schema.execute(ours["sequences"][0]["fix"])

    checks.sample_checks_round([primary])
    findings = HealthCheckRun.objects.get(target=primary).findings
    for name in ("invalid_indexes", "duplicate_indexes", "sequences"):
        assert not [r for r in findings[name] if r["schema"] == SCHEMA], name
    assert not Alert.open().filter(target=primary, metric="sequence_used_pct").exists()


def test_it_shows_a_failing_run_and_the_checks_sampler_failing(transactional_db, demo_targets, client_as):
    from console.models import Target
    from monitors import checks
    from monitors.models import HealthCheckRun, SamplerHealth

    primary = demo_targets["demo-primary"]
    missing = Target.objects.create(
        name="demo-missing-db", host=primary.host, port=primary.port, dbname="no_such_database",
        username=primary.username, password_env=primary.password_env, role=Target.Role.PRIMARY,
    )
    summary = checks.sample_checks_round([missing])

    assert summary["failed"] == 1
    run = HealthCheckRun.objects.get(target=missing)
    assert run.failing and 'database "no_such_database" does not exist' in run.error
    health = SamplerHealth.objects.get(target=missing, sampler=SamplerHealth.Sampler.CHECKS)
    assert health.consecutive_failures == 1
    missing.refresh_from_db()
    assert missing.status != Target.Status.DOWN  # the slow sampler never marks a target down
    page = client_as("viewer").get(f"/fleet/targets/{missing.pk}/").content.decode()
    assert 'id="checks-error"' in page and "no_such_database" in page and "Not run yet" in page
    assert 'id="sampler-failing-checks"' in page


def test_it_keeps_the_other_checks_when_one_times_out(transactional_db, demo_targets, fleet, broken_schema, client_as, settings):
    from monitors import checks
    from monitors.models import HealthCheckRun, SamplerHealth

    settings.MONITOR_CHECKS_STATEMENT_TIMEOUT_MS = 500
    primary = demo_targets["demo-primary"]
    with superuser(fleet) as locker:
        with locker.transaction():  # ALTER SEQUENCE's lock, held: reading its last value waits
            locker.execute(f"ALTER SEQUENCE {SCHEMA}.order_numbers INCREMENT BY 1")
            summary = checks.sample_checks_round([primary])

    assert summary["failed"] == 1
    run = HealthCheckRun.objects.get(target=primary)
    assert run.partly_failed and "sequences" not in run.findings
    assert "Sequences near their limit" in run.error and "QueryCanceled" in run.error
    assert [r["index_name"] for r in run.findings["invalid_indexes"] if r["schema"] == SCHEMA] == ["orders_customer_unique"]
    assert SamplerHealth.objects.get(target=primary, sampler=SamplerHealth.Sampler.CHECKS).failing
    page = html.unescape(client_as("viewer").get(f"/fleet/targets/{primary.pk}/").content.decode())
    assert "Some checks failed in the last run" in page and "Not checked: this check failed" in page
    assert f'REINDEX INDEX CONCURRENTLY "{SCHEMA}"."orders_customer_unique";' in page

    checks.sample_checks_round([primary])  # the lock is gone
    run.refresh_from_db()
    assert not run.failing and run.findings["sequences"]
    assert not SamplerHealth.objects.get(target=primary, sampler=SamplerHealth.Sampler.CHECKS).failing


def test_it_runs_the_checks_on_the_monitor_worker_every_interval(transactional_db, demo_targets, monitor_worker, settings):
    from monitors import tasks
    from monitors.models import HealthCheckRun

    schedule = settings.CELERY_BEAT_SCHEDULE["monitors-sample-checks"]
    assert schedule["task"] == "monitors.sample_checks" and schedule["schedule"] == settings.MONITOR_CHECKS_INTERVAL_S
    tasks.sample_checks.delay()
    primary = demo_targets["demo-primary"]
    wait_until(lambda: HealthCheckRun.objects.filter(target=primary, sampled_at__isnull=False).exists(),
               60, "the monitor worker to run the health checks")


@pytest.mark.browser
def test_it_shows_the_checks_on_the_target_page_with_copyable_sql(
        page, users, demo_targets, broken_schema, artifacts):
    from monitors import checks

    primary = demo_targets["demo-primary"]
    checks.sample_checks_round([primary])
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/fleet/")
    page.fill("#id_username", "viewer")
    page.fill("#id_password", "viewer-pw-123")
    page.click("button[type=submit]")
    page.goto(f"/fleet/targets/{primary.pk}/")

    invalid = page.locator("#check-invalid_indexes")
    expect(invalid.locator(".check-count")).to_have_text(re.compile(r"[1-9]"))
    expect(invalid).to_contain_text("orders_customer_unique")
    expect(page.locator("#check-duplicate_indexes")).to_contain_text("orders_customer_b")
    expect(page.locator("#check-sequences")).to_contain_text("order_numbers")
    row = page.locator("#check-sequences tr", has_text="order_numbers")
    row.locator("button[data-copy]").click()
    expect(row.locator("button[data-copy]")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f'ALTER SEQUENCE "{SCHEMA}"."order_numbers" NO MAXVALUE;'
    page.locator("#panel-checks").screenshot(path=str(artifacts / "health-checks.png"))
