"""The Approvals pages (what waits for me, what I asked for, what was decided; one approval with
exactly what was asked for), the count badge in the navigation, and tenant offboarding carried
out through its approval on the real worker."""

import re
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import expect
from sqlalchemy import text

from console import approvals, engines, jobs
from console.pg import tenancy
from console.models import Approval, AuditEvent, Job
from tenants import health, offboarding, runners
from tenants.models import OFFBOARD_APPROVAL, Tenant, TenantHealth
from tests.tenants.helpers import onboard, unique_slug


def _ask(obj, user, what: str, kind="test.change"):
    return approvals.request(kind, obj, {"what": what}, f"Please {what}", user)


@pytest.fixture
def inbox(demo_targets, users):
    """Two requests waiting for the approver, one of its own, an expired one, two decided."""
    primary, replica, scratch, bouncer = (demo_targets[name] for name in
                                          ("demo-primary", "demo-replica", "demo-scratch", "demo-bouncer"))
    made = {
        "operator": _ask(primary, users["operator"], "raise max_connections"),
        "admin": _ask(replica, users["admin"], "rebuild the replica"),
        "own": _ask(scratch, users["approver"], "wipe scratch"),
        "expired": _ask(bouncer, users["operator"], "restart the bouncer"),
        "rejected": _ask(primary, users["operator"], "drop the demo database", kind="test.drop"),
        "used": _ask(scratch, users["operator"], "vacuum scratch", kind="test.vacuum"),
    }
    Approval.objects.filter(pk=made["expired"].pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    approvals.decide(made["rejected"], users["admin"], False, "no", made["rejected"].digest)
    approvals.decide(made["used"], users["approver"], True, "ok", made["used"].digest)
    approvals.use("test.vacuum", scratch, {"what": "vacuum scratch"})
    return made


def _section(page: str, region_id: str) -> str:
    """A region of the page: a <section> to its end, a <div> or table to the next heading."""
    start = page.index(f'id="{region_id}"')
    end = page.find("</section>" if page.rfind("<section", 0, start) > page.rfind(">", 0, start) else "<h2", start)
    return page[start:end if end != -1 else None]


def _rows(section: str, inbox: dict) -> set[str]:
    return {name for name, approval in inbox.items() if f'data-approval="{approval.pk}"' in section}


def test_it_shows_what_waits_for_me_what_i_asked_for_and_what_was_decided(inbox, client_as):
    page = client_as("approver").get("/approvals/").content.decode()
    assert _rows(_section(page, "approvals-waiting"), inbox) == {"operator", "admin"}
    assert _rows(_section(page, "approvals-asked"), inbox) == {"own"}
    assert _rows(_section(page, "approvals-decided"), inbox) == {"rejected", "used"}
    assert 'id="approvals-badge"' in page and ">2</span>" in page.split('id="approvals-badge"')[1][:120]
    fragment = client_as("approver").get("/approvals/?fragment=waiting", HTTP_HX_REQUEST="true").content.decode()
    assert _rows(fragment, inbox) == {"operator", "admin"} and "<html" not in fragment  # what the region polls

    page = client_as("operator").get("/approvals/").content.decode()
    assert "Waiting for me" not in page and 'id="approvals-badge"' not in page  # operators ask, approvers decide
    assert _rows(_section(page, "approvals-asked"), inbox) == {"operator", "expired", "rejected", "used"}
    assert "Expired" in _section(page, "approvals-asked")

    page = client_as("admin").get("/approvals/").content.decode()
    assert _rows(_section(page, "approvals-waiting"), inbox) == {"operator", "own"}  # never their own


def test_it_filters_the_decided_approvals(inbox, client_as, users):
    client = client_as("viewer")

    def decided(query):
        return _rows(_section(client.get(f"/approvals/{query}").content.decode(), "approvals-decided"), inbox)

    assert decided("") == {"rejected", "used"}
    assert decided("?decision=rejected") == {"rejected"}
    assert decided("?kind=vacuum") == {"used"}
    assert decided("?requester=operator&decision=used") == {"used"}
    assert decided("?requester=admin") == set()
    since = (timezone.now() + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    assert decided(f"?since={since}") == set()
    page = client.get("/approvals/?since=yesterday").content.decode()
    assert 'class="error"' in page  # refused clearly, not a 500
    fragment = client.get("/approvals/?decision=used", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<div id="approvals-decided">') and "<html" not in fragment
    assert _rows(fragment, inbox) == {"used"}


def test_it_shows_exactly_what_is_approved_and_lets_only_another_approver_decide(inbox, client_as):
    waiting = inbox["operator"]
    url = f"/approvals/{waiting.pk}/"
    page = client_as("operator").get(url).content.decode()
    assert "Please raise max_connections" in page and "raise max_connections" in _section(page, "approval-shown")
    assert waiting.digest in page and "another approver must decide" in page and 'id="approve-button"' not in page
    assert 'id="approve-button"' not in client_as("viewer").get(url).content.decode()

    client = client_as("approver")
    assert 'id="approve-button"' in client.get(url).content.decode()
    response = client.post(f"{url}decide/", {"decision": "approve", "comment": "go", "digest": "0" * 64}, follow=True)
    assert "Not approved: what you were shown is not what waits" in response.content.decode()
    assert Approval.objects.get(pk=waiting.pk).decision == "pending"

    response = client.post(f"{url}decide/", {"decision": "approve", "comment": "go", "digest": waiting.digest}, follow=True)
    page = response.content.decode()
    assert "Approved: Please raise max_connections" in page and 'id="approve-button"' not in page
    assert 'id="approval-comment">go<' in page and "approval.approve" in _section(page, "approval-history")
    assert Approval.objects.get(pk=waiting.pk).decided_by.username == "approver"


def test_it_needs_a_login_for_every_approvals_page(inbox, client):
    approval = inbox["operator"]
    for method, path in (("get", "/approvals/"), ("get", f"/approvals/{approval.pk}/"),
                         ("post", f"/approvals/{approval.pk}/decide/"), ("post", f"/approvals/{approval.pk}/withdraw/")):
        response = getattr(client, method)(path, {"decision": "approve", "digest": approval.digest})
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), path
    assert Approval.objects.get(pk=approval.pk).decision == "pending"


def test_it_refuses_the_requester_on_the_page_too_and_lets_them_withdraw(inbox, client_as):
    own = inbox["own"]
    client = client_as("approver")
    response = client.post(f"/approvals/{own.pk}/decide/", {"decision": "approve", "digest": own.digest}, follow=True)
    assert "someone else must decide" in response.content.decode()
    assert AuditEvent.objects.filter(action="approval.approve", outcome="denied", object_id=str(own.pk)).exists()
    client.post(f"/approvals/{own.pk}/withdraw/")
    assert Approval.objects.get(pk=own.pk).decision == "withdrawn"
    assert client_as("admin").post(f"/approvals/{inbox['admin'].pk}/withdraw/").status_code == 302
    assert Approval.objects.get(pk=inbox["admin"].pk).decision == "withdrawn"


@pytest.mark.browser
def test_it_counts_what_waits_in_the_navigation_and_approves_in_a_browser(page, inbox, artifacts):
    page.goto("/approvals/")
    page.fill("#id_username", "approver")
    page.fill("#id_password", "approver-pw-123")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Approvals")
    expect(page.locator("#approvals-badge")).to_have_text("2")
    expect(page.locator("#approvals-waiting tr[data-approval]")).to_have_count(2)
    expect(page.locator("#approvals-asked tr[data-approval]")).to_have_count(1)
    expect(page.locator("#approvals-decided tr[data-approval]")).to_have_count(2)
    page.screenshot(path=str(artifacts / "approvals.png"), full_page=True)

    page.click(f"#approvals-waiting a[href='/approvals/{inbox['operator'].pk}/']")
    expect(page.locator("#approval-digest")).to_have_text(inbox["operator"].digest)
    page.fill("input[name=comment]", "raise it, then watch the pools")
    page.screenshot(path=str(artifacts / "approval-detail.png"), full_page=True)
    page.click("#approve-button")
    expect(page.locator(".messages")).to_contain_text("Approved")
    expect(page.locator("#approval-state [data-decision]")).to_have_text("Approved")
    expect(page.locator("#approvals-badge")).to_have_text("1")
    page.screenshot(path=str(artifacts / "approval-approved.png"), full_page=True)

    page.click("nav >> text=Approvals")
    page.select_option("#id_decision", "rejected")
    page.click("button:has-text('Filter')")
    expect(page.locator("#approvals-decided tr[data-approval]")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/approvals/\?.*decision=rejected"))  # the filter is in the address


# Tenant offboarding, through its approval, on the real worker -------------------------------------


def _schema_exists(target, schema) -> bool:
    with engines.connect(target, credential="change", rollback=True) as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}).scalar_one())


@pytest.fixture
def leaving(transactional_db, demo_targets, settings, tmp_path):
    settings.TENANT_DUMP_DIR = str(tmp_path)
    [tenant] = onboard(demo_targets["demo-primary"], (unique_slug("leave"), "Leaving Co"))
    return tenant


@pytest.mark.worker
def test_it_offboards_a_tenant_through_its_approval_on_the_worker(leaving, users, client_as, live_worker, tmp_path):
    client = client_as("operator")
    client.post(f"/tenants/{leaving.pk}/offboard/")
    approval = approvals.pending(OFFBOARD_APPROVAL, leaving)
    assert approval.requested_by == users["operator"] and approval.shown["dump_dir"] == str(tmp_path)
    assert approval.shown["location"] == f"schema {leaving.schema_name}" and approval.shown["tenant"] == leaving.slug
    page = client_as("approver").get(f"/approvals/{approval.pk}/").content.decode()
    assert leaving.schema_name in page and str(tmp_path) in page and 'id="approve-button"' in page
    listed = client.get("/tenants/").content.decode().split(f'data-tenant="{leaving.slug}"')[1].split("</tr>")[0]
    assert "offboarding requested" in listed

    client_as("approver").post(f"/approvals/{approval.pk}/decide/", {"decision": "approve", "digest": approval.digest})
    job = Job.objects.get(kind=runners.OFFBOARD, tenant=leaving)
    assert job.params["approval"] == approval.pk and job.requested_by == users["approver"]
    job = jobs.wait_for(job.pk, timeout_s=60)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert Tenant.objects.get(pk=leaving.pk).state == Tenant.State.ARCHIVED
    assert not _schema_exists(leaving.target, leaving.schema_name)
    approval.refresh_from_db()
    assert approval.decision == "used" and approval.used_at and approval.decided_by == users["approver"]
    steps = list(approvals.history(approval).values_list("action", "outcome"))
    assert steps == [("approval.request", "ok"), ("approval.approve", "ok"), ("approval.use", "ok")]
    assert approvals.history(approval).get(action="approval.use").detail["job"] == job.pk
    assert "approval checked" in " ".join(job.log_lines.values_list("message", flat=True))


@pytest.mark.worker
def test_it_resumes_an_offboarding_whose_approval_was_used_without_asking_again(leaving, users, live_worker):
    with engines.connect(leaving.target, credential="change") as conn:  # the drop will refuse: not our schema
        tenancy.create_schema(conn, leaving.schema_name, "someone else's")
    approval = offboarding.request_offboarding(leaving, users["operator"])
    approvals.decide(approval, users["approver"], True, "", approval.digest)
    job = jobs.wait_for(Job.objects.get(kind=runners.OFFBOARD, tenant=leaving).pk, timeout_s=60)
    assert job.state == Job.State.FAILED and "marker" in job.error
    assert job.checkpoint["approval_used"] == approval.pk and Approval.objects.get(pk=approval.pk).decision == "used"

    with engines.connect(leaving.target, credential="change") as conn:
        tenancy.create_schema(conn, leaving.schema_name, tenancy.marker(leaving.slug))
    assert jobs.retry(job)
    job = jobs.wait_for(job.pk, timeout_s=60)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert Tenant.objects.get(pk=leaving.pk).state == Tenant.State.ARCHIVED
    assert not _schema_exists(leaving.target, leaving.schema_name)
    assert approvals.history(approval).filter(action="approval.use").count() == 1  # used once, by the first attempt


def _new_measurement(tenant, rows: int, version: str = "0003") -> None:
    """The tenant as measured again: other row counts (live traffic), perhaps another version."""
    health = TenantHealth.objects.create(tenant=tenant, version=version, head="0003", size_bytes=123456,
                                         tables=[{"table_name": "documents", "rows_estimate": rows, "total_bytes": 8192}])
    Tenant.objects.filter(pk=tenant.pk).update(last_health=health)


def _renamed(tenant) -> None:
    """What the approver saw no longer describes the tenant."""
    Tenant.objects.filter(pk=tenant.pk).update(name=f"{tenant.name} (renamed)")


def test_it_keeps_an_offboarding_request_through_new_row_counts(leaving, users):
    health.measure(leaving)
    approval = offboarding.request_offboarding(leaving, users["operator"])
    _new_measurement(leaving, rows=5000, version=approval.shown["measured"]["version"])  # live traffic, same tenant
    approvals.decide(approval, users["approver"], True, "", approval.digest)
    assert Approval.objects.get(pk=approval.pk).decision == "approved"


@pytest.mark.worker
def test_it_does_not_drop_a_tenant_that_changed_after_the_approval(leaving, users, live_worker):
    approval = offboarding.request_offboarding(leaving, users["operator"])
    with transaction.atomic():  # approved, and the tenant changes before the job gets to the drop
        approvals.decide(approval, users["approver"], True, "", approval.digest)
        _renamed(leaving)
    job = jobs.wait_for(Job.objects.get(kind=runners.OFFBOARD, tenant=leaving).pk, timeout_s=60)

    assert job.state == Job.State.FAILED and "not what was approved" in job.error
    assert _schema_exists(leaving.target, leaving.schema_name)  # dumped, never dropped
    tenant = Tenant.objects.get(pk=leaving.pk)
    assert tenant.state == Tenant.State.ACTIVE and tenant.dump_path
    assert Approval.objects.get(pk=approval.pk).decision == "voided"
    assert ("approval.use", "failed") in approvals.history(approval).values_list("action", "outcome")


def test_it_voids_an_offboarding_request_when_the_tenant_changed_before_the_decision(leaving, users, client_as):
    client_as("operator").post(f"/tenants/{leaving.pk}/offboard/")
    approval = approvals.pending(OFFBOARD_APPROVAL, leaving)
    _new_measurement(leaving, rows=7, version="0002")  # migrated elsewhere since the request
    page = client_as("approver").get(f"/approvals/{approval.pk}/").content.decode()
    assert 'id="approval-changed"' in page

    response = client_as("approver").post(f"/tenants/{leaving.pk}/offboard/approve/", {"digest": approval.digest},
                                          follow=True)
    assert "changed since the request" in response.content.decode()
    assert Approval.objects.get(pk=approval.pk).decision == "voided"
    assert Tenant.objects.get(pk=leaving.pk).state == Tenant.State.ACTIVE
    assert not Job.objects.filter(kind=runners.OFFBOARD, tenant=leaving).exists()
    page = client_as("operator").get(f"/tenants/{leaving.pk}/").content.decode()
    assert "Request offboarding" in page and "Voided" in page  # asked again, on what it is now


@pytest.mark.browser
@pytest.mark.worker
def test_it_offboards_a_tenant_approved_in_a_browser(page, leaving, users, live_worker, artifacts):
    health.measure(leaving)  # what the approver sees includes the tenant's schema version
    approval = offboarding.request_offboarding(leaving, users["operator"])
    assert approval.shown["measured"] == {"version": "0003"}
    page.goto(f"/tenants/{leaving.pk}/")
    page.fill("#id_username", "approver")
    page.fill("#id_password", "approver-pw-123")
    page.click("button[type=submit]")
    expect(page.locator("#offboarding-request")).to_contain_text("awaiting approval by someone else")
    expect(page.locator("#approvals-badge")).to_have_text("1")
    page.locator("#tenant-offboarding").screenshot(path=str(artifacts / "tenant-offboarding-requested.png"))

    page.click(f"#offboarding-request a[href='/approvals/{approval.pk}/']")
    expect(page.locator("#approval-shown")).to_contain_text(leaving.schema_name)
    expect(page.locator("#approval-shown")).to_contain_text('"version": "0003"')
    page.screenshot(path=str(artifacts / "approval-tenant-offboard.png"), full_page=True)
    page.fill("input[name=comment]", "customer left, contract ended")
    page.click("#approve-button")
    expect(page.locator("#approval-state [data-decision]")).to_have_text("Approved and carried out", timeout=40_000)

    page.goto(f"/tenants/{leaving.pk}/")
    expect(page.locator("#tenant-state")).to_have_text("Archived")
    expect(page.locator("#offboarding-request")).to_contain_text("approved and carried out by approver")
    expect(page.locator("#approvals-badge")).to_have_count(0)
    page.screenshot(path=str(artifacts / "tenant-offboarded.png"), full_page=True)
