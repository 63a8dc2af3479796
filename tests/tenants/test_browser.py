"""The tenant pages in a real browser: onboard one tenant and watch its steps complete live; the
page follows its jobs to the end (state, health, actions) without a reload."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from console import jobs
from console.models import Job
from tenants import onboarding, runners
from tests.console.test_browser import _log_in
from tests.tenants.helpers import unique_slug

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_it_onboards_a_tenant_and_shows_each_step_live(page, users, demo_targets, live_worker, artifacts):
    page.goto("/tenants/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pw-123")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Tenants")
    page.click("text=Onboard tenants")
    slug = f"web_{uuid.uuid4().hex[:5]}"
    page.select_option("#id_target", label="demo-primary")
    page.fill("#id_slug", slug)
    page.fill("#id_name", "Web Co")
    page.click("button:has-text('Onboard')")
    expect(page).to_have_url(re.compile(r"/tenants/\d+/$"))
    expect(page.locator("li[data-step='activate']")).to_have_attribute("data-status", "done", timeout=40_000)
    expect(page.locator("li[data-step='migrate']")).to_have_attribute("data-status", "done")
    # the first measurement, which onboarding starts, shows up when it is done; the page then settles
    expect(page.locator("#tenant-version")).to_contain_text("at head", timeout=40_000)
    expect(page.locator("#tenant-jobs")).not_to_have_attribute("hx-trigger", re.compile("every"))
    page.screenshot(path=str(artifacts / "tenant-onboarded.png"), full_page=True)

    page.click("button:has-text('Refresh health')")
    expect(page.locator(".messages")).to_contain_text("Measuring")
    measuring = Job.objects.filter(kind=runners.HEALTH, tenant__slug=slug).latest("created_at")
    assert jobs.wait_for(measuring.pk, timeout_s=40).state == Job.State.SUCCEEDED  # the page reads its stored result
    expect(page.locator("#tenant-drift")).to_contain_text("none", timeout=10_000)  # no reload: the page follows the job
    expect(page.locator("#tenant-version")).to_contain_text("at head")
    page.screenshot(path=str(artifacts / "tenant-health.png"), full_page=True)
    page.click("nav >> text=Tenants")
    expect(page.locator(f"tr[data-tenant='{slug}']")).to_contain_text("Active")
    page.screenshot(path=str(artifacts / "tenant-list.png"), full_page=True)


SAME_PAGE = "window.stillTheSamePage"  # set once; a reload or navigation would drop it


def test_it_turns_a_pending_tenant_active_with_health_and_actions_without_a_reload(page, users, demo_targets,
                                                                                 live_worker, artifacts):
    # given a tenant whose onboarding job is queued but not yet sent to the worker
    [tenant] = onboarding.create_tenants([onboarding.TenantSpec(unique_slug("live"), "Live Co", "schema")],
                                         demo_targets["demo-primary"], users["operator"])
    job = onboarding.start_onboarding([tenant], user=users["operator"], send=False)
    _log_in(page, "operator")
    page.goto(tenant.get_absolute_url())
    expect(page.locator("#tenant-state")).to_have_text("Pending")
    expect(page.locator(f"#tenant-jobs tr[data-job='{job.pk}']")).to_have_attribute("data-state", "queued")
    expect(page.get_by_role("button", name="Request offboarding")).to_have_count(0)
    expect(page.locator("#tenant-health")).to_contain_text("Not measured yet")
    page.screenshot(path=str(artifacts / "tenant-live-pending.png"), full_page=True)
    page.evaluate(f"{SAME_PAGE} = true")

    # when the worker gets it (onboarding, then the first health measurement it starts)
    jobs.enqueue(job.pk)

    # then the header, health and job rows follow, with no reload
    expect(page.locator("#tenant-state")).to_have_text("Active", timeout=60_000)
    expect(page.locator("#tenant-version")).to_contain_text("at head", timeout=60_000)
    expect(page.locator("#tenant-size")).not_to_be_empty()
    expect(page.get_by_role("button", name="Request offboarding")).to_be_visible()
    expect(page.locator(f"#tenant-jobs tr[data-job='{job.pk}']")).to_have_attribute("data-state", "succeeded")
    expect(page.locator("li[data-step='activate']")).to_have_attribute("data-status", "done")
    assert page.evaluate(SAME_PAGE) is True
    page.screenshot(path=str(artifacts / "tenant-live-active.png"), full_page=True)
    expect(page.locator("#tenant-jobs")).not_to_have_attribute("hx-trigger", re.compile("every"))  # polling ended

    # and a health job started later is followed the same way: "measuring…", then the new figures
    measured = page.locator("#tenant-measured").get_attribute("title")
    health = jobs.create(runners.HEALTH, user=users["operator"], target=tenant.target, tenant=tenant,
                         params={"tenant_ids": [tenant.pk]}, send=False)
    page.reload()
    expect(page.locator("#tenant-measuring")).to_have_text("measuring…")
    page.evaluate(f"{SAME_PAGE} = true")
    jobs.enqueue(health.pk)
    expect(page.get_by_role("button", name="Refresh health")).to_be_visible(timeout=60_000)
    expect(page.locator("#tenant-measured")).not_to_have_attribute("title", measured)
    assert page.evaluate(SAME_PAGE) is True
