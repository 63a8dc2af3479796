"""Tenant pages (list with filters and health at a glance, tenant page with size, rows, version
against head and Alembic drift), health measured by a job, and offboarding with four eyes."""

from pathlib import Path

import pytest
from django.test import override_settings
from sqlalchemy import text

from console import engines, jobs
from console.models import AuditEvent, Job
from tenants import runners
from tenants.models import Tenant, TenantHealth
from tests.tenants.helpers import onboard, unique_slug


def _run_latest(kind):
    job = Job.objects.filter(kind=kind).latest("created_at")
    jobs.execute(job.pk)  # here, unless a worker of the suite already took it
    return jobs.wait_for(job.pk, timeout_s=60)


def test_it_measures_health_with_a_job_and_shows_drift_on_the_tenant_page(transactional_db, demo_targets, client_as):
    primary = demo_targets["demo-primary"]
    clean, drifting = onboard(primary, (unique_slug("clean"), "Clean Co"), (unique_slug("drift"), "Drift Co"))
    with engines.connect(primary, credential="change") as conn:  # someone changed the schema by hand
        conn.execute(text(f'ALTER TABLE "{drifting.schema_name}".documents ADD COLUMN legacy_flag boolean'))
        conn.execute(text(f'DROP INDEX "{drifting.schema_name}".ix_documents_owner_id'))
    client = client_as("operator")
    assert "not measured" in client.get("/tenants/").content.decode()

    assert client.post("/tenants/health/").status_code == 302  # the action only enqueues
    job = _run_latest(runners.HEALTH)
    assert job.state == Job.State.SUCCEEDED and job.result == {"measured": 2, "drifting": 1, "failed": 0}

    health = Tenant.objects.get(pk=drifting.pk).health()
    assert health.ok and health.version == health.head == "0003" and health.at_head
    assert sorted(health.drift) == ["missing index ix_documents_owner_id on documents",
                                    "unexpected column documents.legacy_flag"]
    assert {t["table_name"] for t in health.tables} == {"tenants", "users", "folders", "documents", "document_versions"}
    assert health.size_bytes > 0 and health.rows_estimate_total >= 2
    assert Tenant.objects.get(pk=clean.pk).health().drift == []

    page = client_as("viewer").get(f"/tenants/{drifting.pk}/").content.decode()
    assert "drift: 2" in page and "unexpected column documents.legacy_flag" in page
    assert 'id="tenant-version">0003' in page and "at head" in page and 'id="tenant-tables"' in page
    assert "schema drift: 2 difference(s)" in page  # among the open alerts
    assert "Onboarding jobs" in page and f"/jobs/{Job.objects.filter(kind=runners.ONBOARD).first().pk}/" in page
    assert "Refresh health" not in page  # a viewer sees, an operator acts


def test_it_filters_the_tenant_list(db, demo_targets, client_as):
    primary, bouncer = demo_targets["demo-primary"], demo_targets["demo-bouncer"]
    a = Tenant.objects.create(name="Alpha", slug="alpha", target=primary, state="active", schema_version="0003")
    b = Tenant.objects.create(name="Beta", slug="beta", target=bouncer, strategy="shared", state="failed",
                              failed_step="provision")
    Tenant.objects.create(name="Gamma", slug="gamma", target=primary, strategy="database", state="active")
    a.last_health = TenantHealth.objects.create(tenant=a, version="0003", head="0003", drift=["x"], drift_count=1,
                                                size_bytes=2048, tables=[{"table_name": "users", "rows_estimate": 7, "total_bytes": 2048}])
    a.save()
    b.last_health = TenantHealth.objects.create(tenant=b, version="0003", head="0003", size_bytes=10)
    b.save()
    client = client_as("viewer")

    def listed(query):
        page = client.get(f"/tenants/{query}").content.decode()
        return {slug for slug in ("alpha", "beta", "gamma") if f'data-tenant="{slug}"' in page}

    assert listed("") == {"alpha", "beta", "gamma"}
    assert listed(f"?target={bouncer.pk}") == {"beta"}
    assert listed("?strategy=database") == {"gamma"}
    assert listed("?state=failed") == {"beta"}
    assert listed("?drift=yes") == {"alpha"}
    assert listed("?drift=no") == {"beta"}
    assert listed("?drift=unknown") == {"gamma"}
    page = client.get("/tenants/").content.decode()
    assert "drift (1)" in page and "2.0\xa0KB" in page and "at provision" in page


def test_it_onboards_from_the_form_and_from_a_csv_upload(db, demo_targets, client_as):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = client_as("operator")
    primary = demo_targets["demo-primary"]
    response = client.post("/tenants/onboard/", {"target": primary.pk, "strategy": "schema", "slug": "solo", "name": "Solo"})
    solo = Tenant.objects.get(slug="solo")
    assert response.status_code == 302 and response["Location"] == f"/tenants/{solo.pk}/"
    assert Job.objects.get(kind=runners.ONBOARD, tenant=solo).params == {"tenant_ids": [solo.pk], "measure_after": True}

    upload = SimpleUploadedFile("t.csv", b"slug,name,strategy\nbulk_a,Bulk A,\nbulk_b,Bulk B,shared\n", "text/csv")
    response = client.post("/tenants/onboard/", {"target": primary.pk, "strategy": "schema", "bulk": "bulk_c,Bulk C",
                                                 "csv_file": upload})
    assert response.status_code == 302, response.content.decode()[-3000:]
    job = Job.objects.filter(kind=runners.ONBOARD).latest("created_at")
    assert response["Location"] == f"/jobs/{job.pk}/"
    assert set(Tenant.objects.filter(pk__in=job.params["tenant_ids"]).values_list("slug", "strategy")) == {
        ("bulk_a", "schema"), ("bulk_b", "shared"), ("bulk_c", "schema")}

    response = client.post("/tenants/onboard/", {"target": primary.pk, "strategy": "schema",
                                                 "bulk": "ok_one,Fine\npg_catalog,Evil\nbad;slug,Evil"})
    page = response.content.decode()
    assert response.status_code == 200 and "reserved" in page and "lowercase letters" in page
    assert not Tenant.objects.filter(slug="ok_one").exists()  # all or nothing
    assert AuditEvent.objects.filter(action="tenant.onboard", outcome="ok").count() == 2


@pytest.mark.parametrize("strategy", ["schema", "shared"])
def test_it_offboards_after_a_second_person_approves_keeping_a_dump(strategy, transactional_db, demo_targets, users,
                                                                    client, tmp_path):
    primary = demo_targets["demo-primary"]
    [tenant] = onboard(primary, (unique_slug("bye"), "Leaving Co", strategy))
    other_approver = users["approver"]
    admin = users["admin"]
    with override_settings(TENANT_DUMP_DIR=str(tmp_path)):  # what the approver is shown: the dump goes there
        client.force_login(admin)  # an admin requests (admins hold every role)...
        assert client.post(f"/tenants/{tenant.pk}/offboard/").status_code == 302
        page = client.get(f"/tenants/{tenant.pk}/").content.decode()
        assert "awaiting approval" in page and "another approver must approve" in page
        approval = tenant.offboarding_approval()
        assert approval.shown["dump_dir"] == str(tmp_path) and approval.shown["tenant"] == tenant.slug

        response = client.post(f"/tenants/{tenant.pk}/offboard/approve/", {"digest": approval.digest})
        assert response.status_code == 302  # ...and cannot approve it
        tenant.refresh_from_db()
        assert tenant.state == Tenant.State.ACTIVE and tenant.offboarding_approval().decision == "pending"
        assert AuditEvent.objects.filter(action="approval.approve", outcome="denied", actor_username="admin").exists()
        assert not Job.objects.filter(kind=runners.OFFBOARD).exists()

        client.force_login(other_approver)
        assert client.post(f"/tenants/{tenant.pk}/offboard/approve/", {"digest": approval.digest}).status_code == 302
        assert Tenant.objects.get(pk=tenant.pk).state == Tenant.State.OFFBOARDING
        job = _run_latest(runners.OFFBOARD)
    assert job.state == Job.State.SUCCEEDED, job.error
    tenant.refresh_from_db()
    assert tenant.state == Tenant.State.ARCHIVED and tenant.archived_at
    dump = Path(tenant.dump_path)
    assert dump.parent == tmp_path and dump.stat().st_size == tenant.dump_size_bytes > 0
    if strategy == "schema":
        assert dump.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
        with engines.connect(primary, credential="change", rollback=True) as conn:
            gone = conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": tenant.schema_name}).scalar_one()
        assert gone == 0
    else:
        content = dump.read_text()
        assert f"\t{tenant.slug}\t" in content and "COPY" in content and "Root" in content
        with engines.connect(primary, credential="change", rollback=True) as conn:
            left = conn.execute(text(f"SELECT count(*) FROM {tenant.schema_name}.folders WHERE tenant_id = :t"),
                                {"t": tenant.slug}).scalar_one()
        assert left == 0
    page = client.get(f"/tenants/{tenant.pk}/").content.decode()
    assert str(dump) in page and "Archived" in page
    steps = AuditEvent.objects.filter(object_type="approval", object_id=str(approval.pk), outcome="ok")
    assert {"approval.request", "approval.approve", "approval.use"} <= set(steps.values_list("action", flat=True))
    assert set(steps.values_list("detail__object_id", flat=True)) == {str(tenant.pk)}
    logged = " ".join(job.log_lines.values_list("message", flat=True))
    assert str(dump) in logged and demo_targets["demo-primary"].password() not in logged
    approval = tenant.offboarding_approval()
    assert (approval.requested_by, approval.decided_by, approval.decision) == (admin, other_approver, "used")
