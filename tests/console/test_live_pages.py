"""Pages that stay live: a region showing a job's state polls while the job runs, and when it
ends stops polling and has the page refresh what the job changed (the tenant page's header,
health and offboarding; the job list's rows). The browser test needs no reload."""

import json
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from console import jobs, selftest
from console.models import Job
from tenants import runners
from tenants.models import Tenant, TenantHealth
from tests.console.test_browser import _log_in

HTMX = {"HTTP_HX_REQUEST": "true"}


def _finish(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED, finished_at=timezone.now())


def test_it_polls_the_job_list_while_a_job_shown_is_unfinished_and_then_stops(client_as, db):
    job = Job.objects.create(kind=selftest.KIND, state=Job.State.RUNNING)
    client = client_as("viewer")
    page = client.get("/jobs/?kind=selftest").content.decode()
    assert 'hx-get="/jobs/?kind=selftest"' in page and 'hx-trigger="every 2s"' in page  # polls the filtered list
    assert client.get("/jobs/?kind=selftest", **HTMX).status_code == 200

    _finish(job)
    ended = client.get("/jobs/?kind=selftest", **HTMX)
    assert ended.status_code == 286  # htmx stops polling
    assert 'data-state="succeeded"' in ended.content.decode() and "every 2s" not in ended.content.decode()


def test_it_refreshes_the_tenant_summary_once_its_offboarding_job_ends(client_as, demo_targets):
    # given an active, measured tenant whose offboarding job is under way
    tenant = Tenant.objects.create(name="Leaving", slug="leaving", target=demo_targets["demo-primary"],
                                   state=Tenant.State.OFFBOARDING, schema_version="0003")
    tenant.last_health = TenantHealth.objects.create(tenant=tenant, version="0003", head="0003", size_bytes=123456,
                                                     drift=["x"], drift_count=1)
    tenant.save()
    job = Job.objects.create(kind=runners.OFFBOARD, tenant=tenant, state=Job.State.RUNNING)
    client = client_as("operator")
    page = client.get(f"/tenants/{tenant.pk}/").content.decode()
    assert 'hx-trigger="tenant-changed from:body"' in page and "?fragment=jobs" in page

    polled = client.get(f"/tenants/{tenant.pk}/?fragment=jobs", **HTMX)
    assert polled.status_code == 200 and "HX-Trigger" not in polled.headers
    assert 'id="tenant-steps" hx-swap-oob="true"' in polled.content.decode()  # the steps come along

    # when the job has dropped it (as the offboarding runner does)
    _finish(job)
    Tenant.objects.filter(pk=tenant.pk).update(state=Tenant.State.ARCHIVED, archived_at=timezone.now())
    ended = client.get(f"/tenants/{tenant.pk}/?fragment=jobs", **HTMX)

    # then polling stops and the summary is told to refresh, showing the new state and no stale figures
    assert ended.status_code == 286 and "tenant-changed" in json.loads(ended.headers["HX-Trigger"])
    assert "every 1s" not in ended.content.decode()
    summary = client.get(f"/tenants/{tenant.pk}/?fragment=summary", **HTMX).content.decode()
    assert 'id="tenant-state">Archived' in summary and 'id="tenant-archived-health"' in summary
    assert "120.6 KB" not in summary and "drift-badge" not in summary and 'id="tenant-alerts"' not in summary
    assert "Refresh health" not in summary and "<html" not in summary


@pytest.mark.browser
@pytest.mark.worker
def test_it_follows_a_job_row_on_the_job_list_to_its_end_without_a_reload(page, users, live_worker, artifacts):
    # given a job queued but not yet sent to the worker
    job = jobs.create(selftest.KIND, total=3, params={"steps": 3, "step_seconds": 0.2}, send=False)
    _log_in(page, "operator")
    page.goto("/jobs/")
    row = page.locator(f"#job-table tr[data-job='{job.pk}']")
    expect(row).to_have_attribute("data-state", "queued")
    page.screenshot(path=str(artifacts / "jobs-live-queued.png"), full_page=True)
    page.evaluate("window.stillTheSamePage = true")

    # when the worker runs it
    jobs.enqueue(job.pk)

    # then its row says so, and the list stops polling
    expect(row).to_have_attribute("data-state", "succeeded", timeout=40_000)
    expect(row).to_contain_text("3 / 3")
    expect(page.locator("#job-table")).not_to_have_attribute("hx-trigger", re.compile("every"))
    assert page.evaluate("window.stillTheSamePage") is True
    page.screenshot(path=str(artifacts / "jobs-live-succeeded.png"), full_page=True)



def test_it_polls_the_job_rows_of_any_page_until_they_have_ended(client_as, demo_targets):
    primary = demo_targets["demo-primary"]
    running = Job.objects.create(kind=selftest.KIND, target=primary, state=Job.State.RUNNING)
    done = Job.objects.create(kind=selftest.KIND, target=primary, state=Job.State.SUCCEEDED)
    client = client_as("viewer")
    page = client.get(f"/fleet/targets/{primary.pk}/").content.decode()  # its recent jobs
    assert f'hx-get="/jobs/rows/?ids={done.pk},{running.pk}"' in page

    polled = client.get(f"/jobs/rows/?ids={done.pk},{running.pk}", **HTMX)
    assert polled.status_code == 200 and "<html" not in polled.content.decode()
    assert polled.content.decode().index(f'data-job="{done.pk}"') < polled.content.decode().index(f'data-job="{running.pk}"')

    _finish(running)
    ended = client.get(f"/jobs/rows/?ids={done.pk},{running.pk}", **HTMX)
    assert ended.status_code == 286 and "jobs-ended" in json.loads(ended.headers["HX-Trigger"])
    assert "hx-get" not in ended.content.decode() and f'data-job="{running.pk}" data-state="succeeded"' in ended.content.decode()
    assert "hx-get" not in client.get(f"/fleet/targets/{primary.pk}/").content.decode().split("Recent jobs")[1]

    for bad in ("", "1,x", "1;2", ",".join(["1"] * 101), "١"):
        assert client.get(f"/jobs/rows/?ids={bad}", **HTMX).status_code == 400, bad


@pytest.mark.browser
@pytest.mark.worker
def test_it_follows_a_targets_recent_job_to_its_end_without_a_reload(page, users, demo_targets, live_worker):
    primary = demo_targets["demo-primary"]
    job = jobs.create(selftest.KIND, target=primary, total=2, params={"steps": 2, "step_seconds": 0.2}, send=False)
    _log_in(page, "operator")
    page.goto(f"/fleet/targets/{primary.pk}/")
    row = page.locator(f".job-rows tr[data-job='{job.pk}']")
    expect(row).to_have_attribute("data-state", "queued")
    page.evaluate("window.stillTheSamePage = true")

    jobs.enqueue(job.pk)

    expect(row).to_have_attribute("data-state", "succeeded", timeout=40_000)
    expect(page.locator(".job-rows")).not_to_have_attribute("hx-get", re.compile("ids"))
    assert page.evaluate("window.stillTheSamePage") is True
