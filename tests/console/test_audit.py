"""The audit page: filters (an object's name finds its events, a tenant's onboarding included),
links to the audited objects, and the filtered view exported as CSV."""

import csv
import io
import json

from django.core.management import call_command

from console import audit
from console.models import AuditEvent, Job
from tenants.models import Tenant
from tests.tenants.helpers import unique_slug


def _onboard(client, target, **fields):
    response = client.post("/tenants/onboard/", {"target": target.pk, "strategy": "schema", **fields})
    assert response.status_code == 302, response.content.decode()[-3000:]


def _offboarding_requested_and_approved(client_as, tenant):
    Tenant.objects.filter(pk=tenant.pk).update(state=Tenant.State.ACTIVE)
    assert client_as("operator").post(f"/tenants/{tenant.pk}/offboard/").status_code == 302
    approval = Tenant.objects.get(pk=tenant.pk).offboarding_approval()
    response = client_as("approver").post(f"/tenants/{tenant.pk}/offboard/approve/", {"digest": approval.digest})
    assert response.status_code == 302
    return approval


def _rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_it_finds_a_tenants_onboarding_and_offboarding_by_its_slug(db, demo_targets, client_as):
    # given acme onboarded in one job with initech, globex on its own, and acme offboarded
    primary = demo_targets["demo-primary"]
    client = client_as("operator")
    _onboard(client, primary, bulk="initech,Initech\nacme,Acme")
    _onboard(client, primary, slug="globex", name="Globex")
    acme_job = Job.objects.get(tenant__isnull=True, params__tenant_ids__contains=[Tenant.objects.get(slug="acme").pk])
    approval = _offboarding_requested_and_approved(client_as, Tenant.objects.get(slug="acme"))

    # when the audit is filtered by acme's slug
    page = client_as("viewer").get("/audit/", {"object_name": "acme"})

    # then its onboarding (against the job) and its offboarding (against the approval) show, nothing of globex
    shown = list(page.context["page"].object_list)
    assert {(e.action, e.object_type, e.object_id) for e in shown} == {
        ("tenant.onboard", "job", str(acme_job.pk)),
        ("approval.request", "approval", str(approval.pk)),
        ("approval.approve", "approval", str(approval.pk)),
    }
    onboarding = next(e for e in shown if e.action == "tenant.onboard")
    assert onboarding.detail["tenants"] == ["initech", "acme"]
    html = page.content.decode()
    table = html[html.index('<table class="grid" id="audit">'):]
    assert 'value="acme"' in html and "acme" in table and "globex" not in table


def test_it_records_the_tenants_of_an_onboarding_started_from_the_command_line(transactional_db, demo_targets,
                                                                              client_as):
    slug = unique_slug("cli")
    call_command("tenant_onboard", "--target", "demo-primary", "--slug", slug, "--run-here")

    events = client_as("viewer").get("/audit/", {"object_name": slug}).context["page"].object_list
    [event] = events
    job = Job.objects.get(pk=event.object_id)
    assert (event.action, event.object_type, event.actor_username) == ("tenant.onboard", "job", "")
    assert event.detail == {"tenants": [slug], "target": "demo-primary", "via": "manage.py"}
    assert job.params["tenant_ids"] == [Tenant.objects.get(slug=slug).pk]


def test_it_links_each_object_cell_to_the_objects_page(db, demo_targets, users, client_as):
    primary = demo_targets["demo-primary"]
    _onboard(client_as("operator"), primary, slug="linked", name="Linked")
    tenant = Tenant.objects.get(slug="linked")
    job = Job.objects.get(tenant=tenant)
    approval = _offboarding_requested_and_approved(client_as, tenant)
    audit.record(None, "tenant.retry", tenant, user=users["operator"])
    audit.record(None, "target.test", primary, user=users["operator"])
    audit.record(None, "target.delete", detail={"name": "gone", "id": 999_999})  # no object: no link

    html = client_as("viewer").get("/audit/").content.decode()

    for url, text in [(f"/jobs/{job.pk}/", f"job {job}"), (f"/tenants/{tenant.pk}/", "tenant linked"),
                      (f"/fleet/targets/{primary.pk}/", "target demo-primary"),
                      (f"/approvals/{approval.pk}/", "approval tenants.offboard linked")]:
        assert f'<a href="{url}">{text}' in html, url
    deleted = AuditEvent.objects.get(action="target.delete")
    assert deleted.object_url() is None
    assert AuditEvent.objects.get(action="target.test").object_url() == f"/fleet/targets/{primary.pk}/"


def test_it_exports_the_filtered_view_as_csv_with_every_column(db, demo_targets, users, client_as):
    # given events of two actions, one of them twice, and one whose detail could be a spreadsheet formula
    primary = demo_targets["demo-primary"]
    operator = users["operator"]
    first = audit.record(None, "target.test", primary, user=operator, detail={"error": None, "n": 1})
    second = audit.record(None, "target.test", primary, user=operator, outcome="failed",
                          detail={"error": "=HYPERLINK(\"x\")"})
    audit.record(None, "job.pause", user=operator)

    # when a viewer exports the audit filtered by action, as the page's Export link does
    page = client_as("viewer").get("/audit/", {"action": "target.test", "object_name": "demo-primary"})
    assert 'href="/audit/export.csv?action=target.test&amp;object_name=demo-primary"' in page.content.decode()
    response = client_as("viewer").get("/audit/export.csv?action=target.test&object_name=demo-primary")

    # then the CSV holds exactly those events, newest first, every column, the detail as JSON
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = _rows(response)
    assert list(rows[0]) == ["id", "created_at", "actor_username", "action", "object_type", "object_id",
                             "object_repr", "outcome", "detail", "remote_addr"]
    assert [row["id"] for row in rows] == [str(second.pk), str(first.pk)]
    newest, oldest = rows
    assert newest["actor_username"] == "operator" and newest["action"] == "target.test"
    assert (newest["object_type"], newest["object_id"], newest["object_repr"]) == ("target", str(primary.pk),
                                                                                  "demo-primary")
    assert newest["outcome"] == "failed" and newest["created_at"] == second.created_at.isoformat()
    assert json.loads(oldest["detail"]) == {"error": None, "n": 1}
    assert json.loads(newest["detail"]) == {"error": "=HYPERLINK(\"x\")"}  # inside the JSON, never first


def test_it_refuses_an_invalid_filter_instead_of_exporting_everything(db, client_as):
    audit.record(None, "job.pause")
    response = client_as("viewer").get("/audit/export.csv", {"since": "not a date"})
    assert response.status_code == 400


def test_it_neutralises_cells_a_spreadsheet_would_run_as_formulas(db, client_as):
    audit.record(None, "=cmd|' /C calc'!A0", detail={"why": "typed by someone"})
    [row] = _rows(client_as("viewer").get("/audit/export.csv"))
    assert row["action"] == "'=cmd|' /C calc'!A0"


def test_it_needs_a_login_to_export(db, client):
    audit.record(None, "job.pause")
    response = client.get("/audit/export.csv")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=/audit/export.csv")
