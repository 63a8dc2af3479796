"""Rolling a stage of the application's staged changes out over real schema tenants: canary first,
then waves; a failing canary leaves every other tenant untouched; an abort mid-wave leaves each
tenant either fully at the stage or untouched; the approval binds to the SQL and the tenant set."""

import os
import shutil
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from sqlalchemy import text

from console import approvals, engines, jobs
from console.models import Approval, Job
from migrations_ui import rollouts
from migrations_ui.models import Rollout, RolloutTenant
from tenants import migrator
from tenants.models import Tenant
from tests.servers import superuser
from tests.tenants.helpers import onboard, unique_slug
from tests.waiting import wait_until

STATUS = "documents_status_add_not_null_column"


@pytest.fixture
def tenants(transactional_db, demo_targets, fleet):
    """Five schema tenants onboarded on the demo primary (at 0003, the staged revisions pending);
    their schemas dropped afterwards."""
    made = onboard(demo_targets["demo-primary"], *[(unique_slug(f"ro{n}"), f"Rollout {n}") for n in range(5)])
    yield made
    with superuser(fleet) as conn:
        for tenant in made:
            conn.execute(f'DROP SCHEMA IF EXISTS "{tenant.schema_name}" CASCADE')


def _key(tenant) -> str:
    return f"{tenant.target.name}/{tenant.slug}"


def _version(tenant) -> str:
    with engines.connect(tenant.target, credential="change", rollback=True) as conn:
        return migrator.current_version(conn, tenant.schema_name)


def _approved_job(rollout, users) -> Job:
    approval = approvals.latest(rollouts.ROLLOUT_APPROVAL, rollout)
    approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)
    return Rollout.objects.get(pk=rollout.pk).job


def _cells(rollout) -> dict[str, str]:
    return dict(RolloutTenant.objects.filter(rollout=rollout).values_list("key", "state"))


def test_it_rolls_a_stage_out_canary_first_then_waves_and_alembic_current_agrees(tenants, users, run_here, fleet):
    change = rollouts.staged_change(STATUS)
    canary = tenants[3]
    rollout = rollouts.request(change, "expand", users["operator"], canary=_key(canary), wave_sizes=[1, 3],
                               parallelism=2)
    assert rollout.waves[0] == [_key(canary)] and [len(w) for w in rollout.waves] == [1, 1, 3]
    approval = approvals.latest(rollouts.ROLLOUT_APPROVAL, rollout)
    assert approval.shown["tenants"] == sorted(_key(t) for t in tenants)
    assert 'ALTER TABLE "tenant"."documents" ADD COLUMN IF NOT EXISTS "status" varchar(20);' in approval.shown["sql"]
    with pytest.raises(approvals.ApprovalRefused, match="someone else must decide"):
        approvals.decide(approval, users["operator"], approve=True, shown_digest=approval.digest)

    job = run_here(_approved_job(rollout, users))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert set(_cells(rollout).values()) == {"done"}
    log = [line.message for line in job.log_lines.all()]
    starts = [i for i, m in enumerate(log) if m.startswith(("canary", "wave"))]
    assert log[starts[0]].startswith("canary: 1 tenant(s) (" + _key(canary))
    first_done = next(m for m in log if "0003 -> 0004" in m)
    assert first_done.startswith(_key(canary))  # the canary went first, alone
    for tenant in tenants:
        assert _version(tenant) == Tenant.objects.get(pk=tenant.pk).schema_version == "0004"
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(fleet.port("primary")), "PGUSER": "fleet_owner",
           "PGPASSWORD": fleet.owner_password, "PGDATABASE": "demo"}
    current = subprocess.run([sys.executable, "-m", "alembic", "-c", "tenants/app_schema/alembic.ini", "-x",
                              f"schema={canary.schema_name}", "current"], env=env, check=True, capture_output=True,
                             text=True)
    assert current.stdout.split()[0] == RolloutTenant.objects.get(rollout=rollout, key=_key(canary)).version_after
    # Rolled out everywhere: a tenant onboarded now starts at the stage too.
    assert rollouts.rolled_out_revisions() == {"0004"}


def test_it_stops_at_a_failing_canary_and_leaves_every_other_tenant_untouched(tenants, users, run_here, fleet):
    canary = tenants[0]
    with superuser(fleet) as conn:  # someone renamed the canary's table by hand: its expand fails
        conn.execute(f'ALTER TABLE "{canary.schema_name}".documents RENAME TO documents_old')
    rollout = rollouts.request(rollouts.staged_change(STATUS), "expand", users["operator"], canary=_key(canary))

    job = run_here(_approved_job(rollout, users))

    assert job.state == Job.State.FAILED and "failed in the canary" in job.error and "4 tenant(s) left untouched" in job.error
    cells = RolloutTenant.objects.filter(rollout=rollout)
    failed = cells.get(key=_key(canary))
    assert failed.state == "failed" and "documents" in failed.error
    assert {c.state for c in cells.exclude(pk=failed.pk)} == {"pending"}
    assert [_version(t) for t in tenants] == ["0003"] * 5
    with superuser(fleet) as conn:
        columns = conn.execute("SELECT count(*) FROM information_schema.columns WHERE column_name = 'status'"
                               " AND table_schema = ANY(%s)", ([t.schema_name for t in tenants],)).fetchone()[0]
    assert columns == 0
    assert rollouts.rolled_out_revisions() == set()


def test_it_leaves_each_tenant_fully_at_the_stage_or_untouched_when_aborted_mid_wave(tenants, users, fleet):
    rollout = rollouts.request(rollouts.staged_change(STATUS), "expand", users["operator"], canary=_key(tenants[0]),
                               wave_sizes=[4], parallelism=2)
    job = _approved_job(rollout, users)
    wave = rollout.waves[1]
    held = [t for t in tenants if _key(t) in wave[:2]]
    # Hold the migrator's own lock of the first two tenants of the wave: both start, and wait.
    holder = superuser(fleet)
    for tenant in held:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"{tenant.schema_name}:migrate",))
    runner = threading.Thread(target=jobs.execute, args=(job.pk,), daemon=True)
    runner.start()
    try:
        wait_until(lambda: RolloutTenant.objects.filter(rollout=rollout, key__in=wave[:2], state="running").count() == 2,
                   60, "both tenants of the wave in hand")
        assert jobs.request_cancel(Job.objects.get(pk=job.pk)) == "cancelling"
    finally:
        holder.execute("SELECT pg_advisory_unlock_all()")
        holder.close()
    job = jobs.wait_for(job.pk, timeout_s=60)
    runner.join(timeout=30)

    assert job.state == Job.State.CANCELLED
    cells = _cells(rollout)
    assert cells[_key(tenants[0])] == "done" and all(cells[k] == "done" for k in wave[:2])
    assert all(cells[k] == "pending" for k in wave[2:])
    with superuser(fleet) as conn:
        for tenant in tenants:
            has_column = conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = %s"
                                      " AND table_name = 'documents' AND column_name = 'status'",
                                      (tenant.schema_name,)).fetchone()[0] == 1
            at_stage = _version(tenant) == "0004"
            assert has_column == at_stage == (cells[_key(tenant)] == "done"), tenant.slug  # all of it, or none


def test_it_pauses_between_tenants_and_resumes_from_where_it_stopped(tenants, users, fleet, run_here):
    rollout = rollouts.request(rollouts.staged_change(STATUS), "expand", users["operator"], canary=_key(tenants[0]),
                               wave_sizes=[4], parallelism=1)
    job = _approved_job(rollout, users)
    first = next(t for t in tenants if _key(t) == rollout.waves[1][0])
    holder = superuser(fleet)  # the wave's first tenant waits for the migrator's lock while the pause is asked
    holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"{first.schema_name}:migrate",))
    runner = threading.Thread(target=jobs.execute, args=(job.pk,), daemon=True)
    runner.start()
    try:
        wait_until(lambda: RolloutTenant.objects.filter(rollout=rollout, key=_key(first), state="running").exists(),
                   60, "the wave's first tenant in hand")
        assert jobs.request_pause(Job.objects.get(pk=job.pk)) == "pausing"
    finally:
        holder.execute("SELECT pg_advisory_unlock_all()")
        holder.close()
    wait_until(lambda: Job.objects.get(pk=job.pk).state == Job.State.PAUSED, 60, "the rollout to pause")
    runner.join(timeout=30)
    assert sorted(_cells(rollout).values()) == ["done", "done", "pending", "pending", "pending"]

    assert jobs.resume(Job.objects.get(pk=job.pk))
    job = run_here(job)
    assert job.state == Job.State.SUCCEEDED and set(_cells(rollout).values()) == {"done"}
    assert [_version(t) for t in tenants] == ["0004"] * 5


def test_it_voids_the_approval_when_the_tenant_set_changes(tenants, users, run_here, demo_targets):
    change = rollouts.staged_change(STATUS)
    rollout = rollouts.request(change, "expand", users["operator"])
    (late,) = onboard(demo_targets["demo-primary"], (unique_slug("late"), "Late Ltd"))
    approval = approvals.latest(rollouts.ROLLOUT_APPROVAL, rollout)
    with pytest.raises(approvals.ApprovalRefused, match="changed since the request"):
        approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)
    assert Approval.objects.get(pk=approval.pk).decision == Approval.Decision.VOIDED

    # Approved, then the set changes before the job runs: the job refuses, nothing runs.
    rollout = rollouts.request(change, "expand", users["operator"])
    approval = approvals.latest(rollouts.ROLLOUT_APPROVAL, rollout)
    with transaction.atomic():
        approvals.decide(approval, users["approver"], approve=True, shown_digest=approval.digest)
        Tenant.objects.filter(pk=late.pk).update(state=Tenant.State.ARCHIVED)
    job = run_here(Rollout.objects.get(pk=rollout.pk).job)
    assert job.state == Job.State.FAILED and "not what was approved" in job.error
    assert Approval.objects.get(pk=approval.pk).decision == Approval.Decision.VOIDED
    assert [_version(t) for t in tenants] == ["0003"] * 5


def _left_by_any_worker(job_id: int) -> None:
    """A worker of the suite (on the real revision files) has had the job's message and left it,
    not due: from now on only this process runs it."""
    from console.celery import app as celery_app

    if celery_app.control.ping(timeout=1):
        since = timezone.now() - timedelta(hours=1)
        wait_until(lambda: job_id not in jobs._job_ids_in_broker(delivered_since=since), 30,
                   "the worker to take the job's message and leave the job (not due)")


def test_it_voids_the_approval_when_the_stages_sql_changes(tenants, users, run_here, tmp_path):
    app = tmp_path / "app_schema"
    shutil.copytree(migrator.settings.TENANT_ALEMBIC_SCRIPT_LOCATION, app, ignore=shutil.ignore_patterns("__pycache__"))
    migrator.script_directory.cache_clear()
    try:
        with override_settings(TENANT_ALEMBIC_SCRIPT_LOCATION=str(app)):
            rollout = rollouts.request(rollouts.staged_change(STATUS), "expand", users["operator"])
            with transaction.atomic():  # not due yet: a worker of the suite (on the real files) leaves it
                job = _approved_job(rollout, users)
                Job.objects.filter(pk=job.pk).update(not_before=timezone.now() + timedelta(hours=1))
            _left_by_any_worker(job.pk)
            for revision in app.glob("versions/000[4-7]_*.py"):  # the revision edited after its approval
                revision.write_text(revision.read_text().replace("varchar(20)", "varchar(200)"))  # another size: no stale .pyc
            migrator.script_directory.cache_clear()
            Job.objects.filter(pk=job.pk).update(not_before=None)
            job = run_here(job)
    finally:
        migrator.script_directory.cache_clear()
    assert job.state == Job.State.FAILED and "not what was approved" in job.error
    assert [_version(t) for t in tenants] == ["0003"] * 5


def test_it_requests_a_rollout_from_the_grid_page_and_shows_each_cell(tenants, client_as, users, run_here):
    from django.urls import reverse

    url = reverse("staged-change", args=[STATUS])
    page = client_as("operator").get(url).content.decode()
    assert 'id="rollout-grid"' in page and all(_key(t) in page for t in tenants) and 'id="rollout-form"' in page
    refused = client_as("operator").post(reverse("rollout-request", args=[STATUS, "expand"]), {"waves": "2,x"})
    assert refused.status_code == 302 and not Rollout.objects.exists()
    client_as("operator").post(reverse("rollout-request", args=[STATUS, "expand"]),
                               {"canary": _key(tenants[1]), "waves": "2", "parallelism": "2"})
    rollout = Rollout.objects.get()
    assert rollout.waves[0] == [_key(tenants[1])] and rollout.requested_by == users["operator"]
    assert 'id="rollout-form"' not in client_as("operator").get(url).content.decode()  # one at a time
    run_here(_approved_job(rollout, users))

    grid = client_as("viewer").get(url, {"grid": "1"}, headers={"HX-Request": "true"})
    assert grid.status_code == 286  # nothing live: the polling stops
    body = grid.content.decode()
    assert body.count('data-state="done"') == 5 and body.count('data-state="pending"') == 5 * 3
    page = client_as("operator").get(url).content.decode()
    assert 'id="rollout-form"' in page and "Roll out backfill (0005)" in page


def test_it_requests_and_reports_a_rollout_from_the_command_line(tenants, users, run_here):
    import io

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("rollout", "list", stdout=out)
    assert f"{STATUS}: NOT NULL column documents.status" in out.getvalue() and "expand 0" in out.getvalue()
    with pytest.raises(CommandError, match="not at 0004 yet"):
        call_command("rollout", "request", STATUS, "backfill", "--user", "operator")
    out = io.StringIO()
    call_command("rollout", "request", STATUS, "expand", "--user", "operator", "--waves", "4", stdout=out)
    assert "over 5 tenant(s), waves [1, 4]" in out.getvalue() and "someone else approves it" in out.getvalue()
    run_here(_approved_job(Rollout.objects.get(), users))
    out = io.StringIO()
    call_command("rollout", "status", STATUS, stdout=out)
    report = out.getvalue()
    assert "expand (0004): #" in report and "job succeeded" in report and report.count(": Done") == 5


def _migrate_to(tenant, revision):
    from tenants import onboarding

    onboarding.migrate_location(tenant.target, None, tenant.schema_name, tenant.slug, revision=revision)
    Tenant.objects.filter(pk=tenant.pk).update(schema_version=revision)


def test_it_rolls_out_to_a_database_tenant_with_its_version_table_in_its_own_database(transactional_db, demo_targets,
                                                                                      users, run_here):
    from console.pg import tenancy

    primary = demo_targets["demo-primary"]
    (schema_tenant,) = onboard(primary, (unique_slug("rsch"), "Schema Co"))
    (db_tenant,) = onboard(primary, (unique_slug("rdb"), "Database Co", "database"))
    try:
        rollout = rollouts.request(rollouts.staged_change(STATUS), "expand", users["operator"])
        assert {u["key"]: (u["database"], u["schema"]) for u in rollout.units}[_key(db_tenant)] == (
            db_tenant.database_name, "public")
        job = run_here(_approved_job(rollout, users))
        assert job.state == Job.State.SUCCEEDED, job.error
        with engines.connect(primary, credential="change", database=db_tenant.database_name, rollback=True) as conn:
            assert migrator.current_version(conn, "public") == "0004"
            assert conn.execute(text("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
                                     " AND table_name = 'documents' AND column_name = 'status'")).scalar_one() == 1
        assert _version(schema_tenant) == "0004"
        # The backfill stage (the backfill engine, its progress row in the tenant's own database), then stamped.
        job = run_here(_approved_job(rollouts.request(rollouts.staged_change(STATUS), "backfill", users["operator"]),
                                     users))
        assert job.state == Job.State.SUCCEEDED, job.error
        with engines.connect(primary, credential="change", database=db_tenant.database_name, rollback=True) as conn:
            assert migrator.current_version(conn, "public") == "0005"
        assert _version(schema_tenant) == "0005"
        def no_monitor_session_left():  # in the tenant's database (each look a transaction of its own)
            with engines.connect(primary, rollback=True) as conn:
                return conn.execute(text("SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = :d"
                                         " AND usename = current_user"), {"d": db_tenant.database_name}).scalar_one()

        wait_until(no_monitor_session_left, 10, "the health checks' sessions in the tenant's database to close")
    finally:
        engines.forget(primary.pk, db_tenant.database_name)
        with engines.autocommit(primary) as conn:
            tenancy.drop_database(conn, db_tenant.database_name)
        with engines.connect(primary, credential="change") as conn:
            tenancy.drop_schema(conn, schema_tenant.schema_name)
