"""A real browser (Debian's Chromium, driven by Playwright) against a live console."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def _log_in(page, role):
    page.goto("/fleet/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/fleet/"))
    page.fill("#id_username", role)
    page.fill("#id_password", f"{role}-pw-123")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Fleet")


def test_it_logs_in_opens_a_target_and_tests_its_connection(page, users, demo_targets, artifacts):
    _log_in(page, "operator")
    rows = page.locator("#targets tbody tr")
    expect(rows).to_have_count(4)
    for name in demo_targets:
        expect(page.locator(f"tr[data-target='{name}']")).to_be_visible()
    expect(page.locator(".whoami .role")).to_have_text("operator")

    page.click("text=demo-replica")
    expect(page.locator("h1")).to_contain_text("demo-replica")
    page.click("button:has-text('Test connection')")  # an HTMX POST carrying the CSRF header
    result = page.locator("#probe-result p")
    expect(result).to_contain_text("Connected: PostgreSQL 15")
    expect(result).to_contain_text("in recovery")
    page.screenshot(path=str(artifacts / "target-test-connection.png"), full_page=True)


def test_it_shows_a_job_progressing_live_until_it_ends(page, users, live_worker, artifacts):
    _log_in(page, "operator")
    page.click("nav >> text=Jobs")
    page.click("text=Run worker self-test")  # 20 steps of 0.5 s on the real worker
    state = page.locator("#job-state")
    expect(state).to_have_text("Running", timeout=20_000)
    expect(page.locator("#job-done")).not_to_have_text("0 of 20 steps (0%)", timeout=20_000)
    page.screenshot(path=str(artifacts / "job-running.png"), full_page=True)
    expect(state).to_have_text("Succeeded", timeout=40_000)
    expect(page.locator("#job-done")).to_contain_text("20 of 20 steps (100%)")
    page.screenshot(path=str(artifacts / "job-succeeded.png"), full_page=True)


def test_it_updates_the_target_page_live_without_reloading(page, users, demo_targets, fleet, artifacts):
    import psycopg

    from monitors import samplers

    primary = demo_targets["demo-primary"]
    samplers.sample_fast_round([primary])
    _log_in(page, "viewer")
    page.goto(f"/fleet/targets/{primary.pk}/")
    expect(page.locator("#panel-connections")).to_be_visible()
    expect(page.locator("#panel-connections")).not_to_contain_text("browser-live-app")
    page.evaluate("window.__not_reloaded = true")
    with psycopg.connect(host="127.0.0.1", port=fleet.port("primary"), user="postgres", dbname="demo",
                         password=fleet.superuser_password, application_name="browser-live-app"):
        samplers.sample_fast_round([primary])
        expect(page.locator("#panel-connections")).to_contain_text("browser-live-app", timeout=15_000)
    assert page.evaluate("window.__not_reloaded") is True
    page.screenshot(path=str(artifacts / "target-live.png"), full_page=True)


def test_it_shows_the_fleet_overview(page, users, demo_targets, artifacts):
    from monitors import samplers

    samplers.sample_fast_round()
    _log_in(page, "viewer")
    expect(page.locator("#overview tbody tr")).to_have_count(4)
    expect(page.locator("tr[data-target='demo-replica']")).to_contain_text("Up")
    page.screenshot(path=str(artifacts / "fleet-overview.png"), full_page=True)
