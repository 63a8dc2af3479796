"""Onboarding on the real fleet: schema, database and shared (RLS) tenants, step by step,
idempotent, resumable after a SIGKILLed worker, failing with the step and the error, retried."""

import time

import pytest
from django.core.management import call_command
from sqlalchemy import text

from console import engines, jobs
from console.models import Job
from console.pg import tenancy
from tenants import health, migrator, onboarding, runners
from console import fanout
from tenants.models import Tenant
from tests.tenants.helpers import unique_slug


def _run_here(kind: str, params: dict, **fields) -> Job:
    """Run a job in this process (no worker): the same code path the worker takes."""
    job = Job.objects.create(kind=kind, params=params, **fields)
    jobs.execute(job.pk)
    return Job.objects.get(pk=job.pk)


def _onboard_here(target, *specs) -> tuple[Job, list[Tenant]]:
    tenants = onboarding.create_tenants([onboarding.TenantSpec(*spec) for spec in specs], target)
    job = _run_here(runners.ONBOARD, {"tenant_ids": [t.pk for t in tenants]}, target=target)
    return job, [Tenant.objects.get(pk=t.pk) for t in tenants]


def _fingerprint(tenant: Tenant) -> dict:
    """What onboarding leaves on the target: tables, version, rows of the seed."""
    from tenants import databases

    with databases.connect_tenant(tenant, rollback=True) as conn:
        tables = tenancy.tables_in_schema(conn, tenant.schema_name)
        version = migrator.current_version(conn, tenant.schema_name)
        tenancy.bind(conn, schema=tenant.schema_name, tenant_key=tenant.slug)
        rows = conn.execute(text("SELECT (SELECT count(*) FROM tenants WHERE tenant_id = :t),"
                                 " (SELECT count(*) FROM folders WHERE tenant_id = :t)"), {"t": tenant.slug}).one()
    return {"tables": [t for t in tables if t in migrator.table_names() or t == "alembic_version"],
            "version": version, "tenant_rows": rows[0], "folders": rows[1]}


EXPECTED = {"tables": ["alembic_version", "document_versions", "documents", "folders", "tenants", "users"],
            "version": "0003", "tenant_rows": 1, "folders": 1}


def test_it_onboards_a_schema_tenant_through_every_step(transactional_db, demo_targets):
    primary = demo_targets["demo-primary"]
    job, [tenant] = _onboard_here(primary, (unique_slug("acme"), "Acme Inc"))

    assert job.state == Job.State.SUCCEEDED, job.error
    assert tenant.state == Tenant.State.ACTIVE and tenant.onboarding_step == "activate"
    assert tenant.schema_version == onboarding.release_revision() == "0003"  # staged revisions pending
    assert job.progress_done == job.progress_total == len(Tenant.STEPS)
    assert job.checkpoint == {str(tenant.pk): "activate"}
    logged = [line.message for line in job.log_lines.all()]
    for step in Tenant.STEPS:  # every step shows in the job's live log
        assert any(m.startswith(f"{tenant.slug}: {step}:") for m in logged), step
    assert any(f"created schema tenant_{tenant.slug}" in m for m in logged)
    # The version table lives in the tenant's own schema, nothing went to public.
    assert _fingerprint(tenant) == EXPECTED
    with engines.connect(primary, credential="change", rollback=True) as conn:
        assert tenancy.schema_marker(conn, tenant.schema_name) == tenancy.marker(tenant.slug)
        assert "alembic_version" not in tenancy.tables_in_schema(conn, "public")


def test_it_onboards_a_database_tenant_with_its_version_table_in_its_database(transactional_db, demo_targets):
    job, [tenant] = _onboard_here(demo_targets["demo-primary"], (unique_slug("dbt"), "Database tenant", "database"))
    assert job.state == Job.State.SUCCEEDED, job.error
    assert tenant.database_name == f"tenant_{tenant.slug}" and tenant.schema_name == "public"
    assert _fingerprint(tenant) == EXPECTED
    snapshot = health.measure(tenant)  # its tables live in its database's default schema
    assert snapshot.ok and snapshot.drift == [] and snapshot.version == onboarding.release_revision()


def test_it_onboards_shared_tenants_under_forced_row_level_security(transactional_db, demo_targets):
    job, tenants = _onboard_here(demo_targets["demo-primary"], (unique_slug("sha"), "Shared A", "shared"),
                                 (unique_slug("shb"), "Shared B", "shared"))
    assert job.state == Job.State.SUCCEEDED, job.error
    schema = tenants[0].schema_name
    with engines.connect(demo_targets["demo-primary"], credential="change", rollback=True) as conn:
        status = tenancy.rls_status(conn, schema)
        version = migrator.current_version(conn, schema)
    for table in migrator.table_names():
        assert status[table]["enabled"] and status[table]["forced"], table
        assert tenancy.POLICY_NAME in status[table]["policies"], table
    assert version == onboarding.release_revision()  # one version table for the shared schema
    secure_lines = [m for m in job.log_lines.values_list("message", flat=True) if ": secure:" in m]
    assert len(secure_lines) == 2
    for tenant in tenants:
        assert tenant.state == Tenant.State.ACTIVE
        assert _fingerprint(tenant)["folders"] == 1


def test_it_runs_every_step_again_without_doing_anything_twice(transactional_db, demo_targets):
    _job, [tenant] = _onboard_here(demo_targets["demo-primary"], (unique_slug("again"), "Again"))
    _job, [shared] = _onboard_here(demo_targets["demo-primary"], (unique_slug("again"), "Again shared", "shared"))
    for onboarded in (tenant, shared):
        before = _fingerprint(onboarded)
        messages = {step: onboarding.STEP_FUNCTIONS[step](onboarded) for step in Tenant.STEPS}
        assert _fingerprint(onboarded) == before
        assert "already" in messages["migrate"] and "already there" in messages["seed"]
    assert "already there" in messages["provision"]  # the shared one: its tenant row


def test_it_fails_with_the_step_and_the_error_and_retries_from_there(transactional_db, demo_targets, client_as):
    primary = demo_targets["demo-primary"]
    slug = unique_slug("clash")
    with engines.connect(primary, credential="change") as conn:  # someone else's schema, with a table, under the same name
        conn.execute(text(f'CREATE SCHEMA "tenant_{slug}"'))
        conn.execute(text(f'CREATE TABLE "tenant_{slug}".theirs (id int)'))
    job, [tenant] = _onboard_here(primary, (slug, "Clash"))

    assert job.state == Job.State.FAILED
    assert tenant.state == Tenant.State.FAILED and tenant.failed_step == "provision"
    assert "was not made by the console" in tenant.error and tenant.onboarding_step == "validate"
    assert "1 of 1 tenants failed" in job.error
    page = client_as("operator").get(f"/tenants/{tenant.pk}/").content.decode()
    assert "Failed at <strong>provision</strong>" in page and 'id="retry-button"' in page
    assert 'data-step="validate" data-status="done"' in page and 'data-step="provision" data-status="failed"' in page

    with engines.connect(primary, credential="change") as conn:  # the operator moves the other schema out of the way
        conn.execute(text(f'DROP SCHEMA "tenant_{slug}" CASCADE'))
    response = client_as("operator").post(f"/tenants/{tenant.pk}/retry/")
    assert response.status_code == 302
    retry_job = Job.objects.filter(kind=runners.ONBOARD, tenant=tenant).latest("created_at")
    jobs.execute(retry_job.pk)  # here, unless a worker of the suite already took it
    retry_job = jobs.wait_for(retry_job.pk, timeout_s=60)
    tenant.refresh_from_db()
    assert retry_job.state == Job.State.SUCCEEDED, retry_job.error
    assert tenant.state == Tenant.State.ACTIVE and not tenant.error
    assert not any(": validate:" in m for m in retry_job.log_lines.values_list("message", flat=True))
    assert _fingerprint(tenant) == EXPECTED


@pytest.mark.worker
def test_it_continues_after_the_worker_is_killed_and_ends_in_the_same_state(transactional_db, demo_targets, live_worker):
    primary = demo_targets["demo-primary"]
    tenants = onboarding.create_tenants([onboarding.TenantSpec(unique_slug("kill"), "Killed") for _ in range(3)], primary)
    job = jobs.create(runners.ONBOARD, target=primary, params={"tenant_ids": [t.pk for t in tenants], "pause_s": 0.4})
    deadline = time.monotonic() + 60
    while Job.objects.get(pk=job.pk).progress_done < 4:
        assert time.monotonic() < deadline, "the job did not get going"
        time.sleep(0.1)
    live_worker.kill()  # SIGKILL mid-way: no ack, no goodbye
    killed_at = Job.objects.get(pk=job.pk).progress_done
    assert killed_at < 3 * len(Tenant.STEPS)
    assert Tenant.objects.filter(pk__in=[t.pk for t in tenants], state=Tenant.State.PROVISIONING).exists()

    live_worker.start()
    deadline = time.monotonic() + 30
    while job.pk not in jobs.reap_stale():
        assert time.monotonic() < deadline, "the job was not reaped"
        time.sleep(0.5)
    job = jobs.wait_for(job.pk, timeout_s=90)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.attempts == 2 and job.progress_done == 3 * len(Tenant.STEPS)
    for tenant in Tenant.objects.filter(pk__in=[t.pk for t in tenants]):
        assert tenant.state == Tenant.State.ACTIVE
        assert _fingerprint(tenant) == EXPECTED  # the same state as an onboarding never interrupted
    messages = list(job.log_lines.values_list("message", flat=True))
    assert any(m.startswith("attempt 2") for m in messages)
    activations = [m for m in messages if ": activate:" in m]
    assert len(activations) == 3


def test_it_onboards_in_bulk_from_a_csv_with_the_management_command(transactional_db, demo_targets, tmp_path):
    slugs = [unique_slug("csv") for _ in range(4)]
    csv_file = tmp_path / "tenants.csv"
    csv_file.write_text("slug,name,strategy\n" + "\n".join(f"{s},Tenant {s}," for s in slugs[:3])
                        + f"\n{slugs[3]},Shared {slugs[3]},shared\n")
    call_command("tenant_onboard", "--target", "demo-primary", "--csv", str(csv_file), "--run-here", "--parallelism", "2")
    tenants = Tenant.objects.filter(slug__in=slugs)
    assert sorted(tenants.values_list("state", flat=True)) == ["active"] * 4
    assert tenants.get(slug=slugs[3]).strategy == "shared"
    job = Job.objects.get(kind=runners.ONBOARD)
    assert job.state == Job.State.SUCCEEDED and job.progress_done == 4 * len(Tenant.STEPS)


def test_it_runs_tenants_with_bounded_parallelism():
    running, peak = [0], [0]
    import threading

    lock = threading.Lock()

    def work(item):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return item

    assert sorted(fanout.run_bounded(list(range(12)), work, parallelism=3)) == list(range(12))
    assert peak[0] == 3
