"""Tenant backups and drills by strategy on the real fleet: a shared (RLS rows) tenant's backup
holds only its rows and its drill verifies only them; a database-per-tenant tenant's backup is its
own database; and the drill finds rows of other tenants slipped into a shared tenant's backup."""

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import text

from console import engines, jobs
from console.models import Job
from console.pg import tenancy
from console.models import Target
from monitors.drills.models import Backup, BackupPolicy, DrillRun
from tests.monitors.test_drills import amcheck_on_scratch, drill_databases  # noqa: F401  (a fixture)
from tests.tenants.helpers import onboard, unique_slug
from tests.tenants.test_isolation import _add_documents as add_documents

APP_ROLE = "fleet_app"


@pytest.fixture
def backup_dir(settings, tmp_path):
    settings.BACKUP_DIR = str(tmp_path)
    return tmp_path


def demo_scratch(primary) -> Target:
    return Target.objects.get(role=Target.Role.SCRATCH)


def tenant_counts(target, tenant) -> dict[str, int]:
    """What the tenant itself sees of each shared table."""
    with engines.connect(target, credential="change", rollback=True) as conn:
        tenancy.bind(conn, schema=tenant.schema_name, tenant_key=tenant.slug, role=APP_ROLE)
        return {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("tenants", "users", "folders", "documents", "document_versions")}


def backup_and_drill(run_here, tenant) -> tuple[Backup, Job, DrillRun]:
    backup_job = run_here(jobs.create("drills.backup", target=tenant.target, tenant=tenant, send=False))
    assert backup_job.state == Job.State.SUCCEEDED, backup_job.error
    job = run_here(jobs.create("drills.drill", target=tenant.target, tenant=tenant, send=False))
    return Backup.objects.get(job=backup_job), job, DrillRun.objects.get(job=job)


@pytest.fixture
def shared_pair(transactional_db, demo_targets):
    primary = demo_targets["demo-primary"]
    a, b = onboard(primary, (unique_slug("bka"), "Backup A", "shared"), (unique_slug("bkb"), "Backup B", "shared"))
    add_documents(primary, a, ["a-plan", "a-budget", "a-notes"])
    add_documents(primary, b, ["b-secret"])
    return primary, a, b


def test_it_backs_up_and_drills_only_the_rows_of_one_shared_tenant(shared_pair, fleet, amcheck_on_scratch,  # noqa: F811
                                                                  backup_dir, run_here):
    primary, a, b = shared_pair
    policy = BackupPolicy.objects.create(target=primary, database="demo", tenant=a, scratch=demo_scratch(primary),
                                         smoke_queries=["SELECT title FROM documents"])

    backup, job, run = backup_and_drill(run_here, a)

    assert backup.tenant == a and backup.schema == "tenant_shared" and backup.manifest["tenant_key"] == a.slug
    counted = {t["table"]: t["rows"] for t in backup.manifest["tables"] if t["tenant_rows"]}
    assert counted == tenant_counts(primary, a) and counted["documents"] == 3
    files = b"".join((Path(backup.path) / entry["file"]).read_bytes() for entry in backup.manifest["tenant_rows"])
    assert a.slug.encode() in files and b.slug.encode() not in files and b"b-secret" not in files
    assert job.state == Job.State.SUCCEEDED, run.reason
    assert run.passed is True and run.differences == []
    restored = {t["table"]: t["rows"] for t in run.verification["tables"] if t["table"] != "alembic_version"}
    assert restored == counted
    assert run.verification["alembic"]["tenant_shared"] == backup.manifest["alembic"]["tenant_shared"] != []
    assert "rows of tenant" in next(s["note"] for s in run.steps if s["name"] == "restore")
    assert backup.policy == policy and run.verification["smoke"][0]["rows"] == 3  # as the tenant sees it
    assert drill_databases(fleet) == []


def test_it_fails_a_shared_tenants_drill_that_finds_another_tenants_rows(shared_pair, fleet, amcheck_on_scratch,  # noqa: F811
                                                                        backup_dir, run_here):
    primary, a, b = shared_pair
    backup, _job, _run = backup_and_drill(run_here, a)
    entry = next(e for e in backup.manifest["tenant_rows"] if e["table"] == "tenants")
    path = Path(backup.path) / entry["file"]
    own_row = path.read_bytes().splitlines()[0]
    path.write_bytes(path.read_bytes() + own_row.replace(a.slug.encode(), b"intruder", 1) + b"\n")
    backup.manifest["files"][entry["file"]] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                               "bytes": path.stat().st_size}  # a manifest that agrees
    backup.save(update_fields=["manifest"])

    job = run_here(jobs.create("drills.drill", target=primary, tenant=a, params={"backup_id": backup.pk}, send=False))

    run = DrillRun.objects.get(job=job)
    assert job.state == Job.State.FAILED and run.passed is False
    assert run.differences == [{"check": "other tenants' rows", "object": "tenant_shared.tenants", "expected": 0,
                                "found": 1}]
    assert "tenant_shared.tenants" in run.reason
    assert drill_databases(fleet) == []


def test_it_backs_up_and_drills_a_database_per_tenant_tenant(transactional_db, demo_targets, fleet,
                                                             amcheck_on_scratch, backup_dir, run_here):  # noqa: F811
    (tenant,) = onboard(demo_targets["demo-primary"], (unique_slug("bkd"), "Backup D", "database"))

    backup, job, run = backup_and_drill(run_here, tenant)

    assert backup.database == tenant.database_name and backup.schema == "" and backup.tenant == tenant
    assert job.state == Job.State.SUCCEEDED, run.reason
    assert run.passed is True and run.backup == backup
    folders = next(t for t in run.verification["tables"] if (t["schema"], t["table"]) == ("public", "folders"))
    assert folders["rows"] == folders["expected"] == 1  # the root folder onboarding seeds
    assert run.verification["alembic"] == backup.manifest["alembic"] and len(backup.manifest["alembic"]["public"]) == 1
    assert drill_databases(fleet) == []
