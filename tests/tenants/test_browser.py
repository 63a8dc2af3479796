"""The tenant pages in a real browser: onboard one tenant and watch its steps complete live."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from console import jobs
from console.models import Job
from tenants import runners

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
    page.screenshot(path=str(artifacts / "tenant-onboarded.png"), full_page=True)

    page.click("button:has-text('Refresh health')")
    expect(page.locator(".messages")).to_contain_text("Measuring")
    measuring = Job.objects.filter(kind=runners.HEALTH, tenant__slug=slug).latest("created_at")
    assert jobs.wait_for(measuring.pk, timeout_s=40).state == Job.State.SUCCEEDED  # the page reads its stored result
    page.reload()
    expect(page.locator("#tenant-drift")).to_contain_text("none", timeout=10_000)
    expect(page.locator("#tenant-version")).to_contain_text("0003")
    page.screenshot(path=str(artifacts / "tenant-health.png"), full_page=True)
    page.click("nav >> text=Tenants")
    expect(page.locator(f"tr[data-tenant='{slug}']")).to_contain_text("Active")
    page.screenshot(path=str(artifacts / "tenant-list.png"), full_page=True)
