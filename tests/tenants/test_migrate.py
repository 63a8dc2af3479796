"""Fan-out migration: every active tenant of a target to head as one job, with bounded
parallelism, per-tenant progress, failures listed, and pooled connections reused across tenants."""

import uuid

from django.conf import settings
from django.core.management import call_command
from sqlalchemy import text

from console import engines, jobs
from console.models import Job
from console.pg import tenancy
from tenants import migrator, onboarding, runners
from tenants.models import Tenant


def _old_tenant(target, slug, revision="0002") -> Tenant:
    """An active schema tenant left behind at an older revision."""
    tenant = Tenant.objects.create(name=slug, slug=slug, target=target, state=Tenant.State.ACTIVE,
                                   onboarding_step="activate", schema_version=revision)
    with engines.connect(target, credential="change") as conn:
        tenancy.create_schema(conn, tenant.schema_name, tenancy.marker(slug))
    onboarding.migrate_location(target, None, tenant.schema_name, slug, revision=revision)
    return tenant


def _version(target, tenant) -> str:
    with engines.connect(target, credential="change", rollback=True) as conn:
        return migrator.current_version(conn, tenant.schema_name)


def test_it_brings_every_tenant_of_a_target_to_head_in_one_job_and_lists_failures(transactional_db, demo_targets):
    primary = demo_targets["demo-primary"]
    run = uuid.uuid4().hex[:5]
    tenants = [_old_tenant(primary, f"fan{n}_{run}") for n in range(6)]
    broken = _old_tenant(primary, f"broken_{run}")
    with engines.connect(primary, credential="change") as conn:  # 0003 alters documents: without it, this tenant fails
        conn.execute(text(f'DROP TABLE "{broken.schema_name}".documents CASCADE'))
    assert {_version(primary, t) for t in tenants} == {"0002"}

    job = Job.objects.create(kind=runners.MIGRATE, target=primary, params={"target_id": primary.pk})
    jobs.execute(job.pk)
    job.refresh_from_db()

    assert job.state == Job.State.FAILED
    assert "1 of 7 tenants failed:" in job.error and broken.slug in job.error and "documents" in job.error
    assert job.progress_done == 6 and job.progress_total == 7  # per-tenant progress
    for tenant in tenants:
        assert _version(primary, tenant) == onboarding.release_revision() == "0003"  # staged revisions pending
        assert Tenant.objects.get(pk=tenant.pk).schema_version == "0003"
    assert Tenant.objects.get(pk=broken.pk).schema_version == "0002"
    messages = list(job.log_lines.values_list("message", flat=True))
    assert sum("0002 -> 0003" in m for m in messages) == 6
    assert any(m.startswith(f"{broken.slug}: failed:") for m in messages)
    # Connections reused across tenants, not one per tenant: at most one per parallel worker.
    reuse = [m for m in messages if "server connection(s)" in m][0]
    used = int(reuse.split(" on ")[1].split()[0])
    assert 1 <= used <= settings.TENANT_PARALLELISM < len(tenants)

    # Repaired and retried, the job picks up only what is left.
    with engines.connect(primary, credential="change") as conn:
        conn.execute(text(f'DROP SCHEMA "{broken.schema_name}" CASCADE'))
        tenancy.create_schema(conn, broken.schema_name, tenancy.marker(broken.slug))
    onboarding.migrate_location(primary, None, broken.schema_name, broken.slug, revision="0002")
    assert jobs.retry(job)
    jobs.execute(job.pk)  # here, unless a worker of the suite already took it
    job = jobs.wait_for(job.pk, timeout_s=60)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["migrated_now"] == 1 and job.result["tenants"] == 7
    assert _version(primary, broken) == "0003"
    # Run again with everything at head: nothing is counted as migrated.
    again = jobs.create(runners.MIGRATE, target=primary, params={"target_id": primary.pk}, send=False)
    jobs.execute(again.pk)
    again = jobs.wait_for(again.pk, timeout_s=60)
    assert again.state == Job.State.SUCCEEDED and again.result["migrated_now"] == 0


def test_it_migrates_the_shared_schema_once_for_all_its_tenants(transactional_db, demo_targets):
    primary = demo_targets["demo-primary"]
    run = uuid.uuid4().hex[:5]
    for n in range(3):
        Tenant.objects.create(name="s", slug=f"sh{n}_{run}", target=primary, strategy="shared", state="active")
    Tenant.objects.create(name="d", slug=f"db_{run}", target=primary, strategy="database", state="active")
    units = runners.migration_units(primary)
    shared = [u for u in units if u["key"].startswith("shared:")]
    assert len(shared) == 1 and len(shared[0]["tenant_ids"]) == 3
    assert [u["database"] for u in units if u["key"] == f"db_{run}"] == [f"tenant_db_{run}"]


def test_it_migrates_from_the_management_command(transactional_db, demo_targets, capsys):
    primary = demo_targets["demo-primary"]
    tenant = _old_tenant(primary, f"cmd_{uuid.uuid4().hex[:5]}")
    call_command("tenant_migrate", "--target", "demo-primary", "--run-here")
    out = capsys.readouterr().out
    assert f"{tenant.slug}: 0002 -> 0003" in out and "succeeded" in out
    assert _version(primary, tenant) == "0003"
