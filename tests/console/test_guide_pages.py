"""Pages the operator guide (docs/operator-guide.md) shows and no other browser test draws in
that state: a target's activity with a lock wait and its root blocker, an EXPLAIN plan, open
alerts with their thresholds, the audit filtered by a tenant, the Migrations page. Each test checks
what the page says, then takes the screenshot the guide uses (scripts/guide_screenshots.sh)."""

import pytest
from playwright.sync_api import expect

from console import audit
from monitors import samplers
from monitors.models import Alert, AlertThreshold
from tests.console.test_browser import _log_in

pytestmark = pytest.mark.browser


def test_it_shows_the_root_blocker_of_a_lock_wait_and_an_explain_plan(page, users, demo_targets, blocked_session,
                                                                      artifacts):
    blocker_pid, waiter_pid = blocked_session
    primary = demo_targets["demo-primary"]
    samplers.sample_fast_round([primary])
    _log_in(page, "operator")
    page.goto(f"/fleet/targets/{primary.pk}/")

    activity = page.locator("#panel-activity")
    expect(activity.locator(".blocking")).to_contain_text("root blocker")
    expect(activity.locator(f"tr[data-pid='{waiter_pid}']")).to_contain_text(f"blocked by {blocker_pid}")
    page.screenshot(path=str(artifacts / "target-page.png"), full_page=True)
    activity.screenshot(path=str(artifacts / "target-activity.png"))

    page.fill("#explain-sql", "SELECT * FROM pgbench_accounts WHERE aid = 42")
    page.click("#panel-explain button[type=submit]")
    expect(page.locator("#explain-result")).to_contain_text("Index Scan")
    expect(page.locator("#explain-result")).to_contain_text("rolled back")
    page.locator("#panel-explain").screenshot(path=str(artifacts / "explain-result.png"))


def test_it_shows_open_alerts_on_every_page_and_the_thresholds_behind_them(page, users, demo_targets, artifacts):
    primary = demo_targets["demo-primary"]
    # a threshold this target crosses with the sampler's own session: an alert opens at the next round
    AlertThreshold.objects.create(target=primary, metric="connections_pct", warning=1, critical=99)
    samplers.sample_fast_round([primary])
    assert Alert.open().filter(target=primary, metric="connections_pct", level=Alert.Level.WARNING).exists()
    _log_in(page, "viewer")

    expect(page.locator(f"tr[data-target='{primary.name}'] .badge-warning")).to_be_visible()
    expect(page.locator("header")).to_contain_text("1 warning")
    page.screenshot(path=str(artifacts / "fleet-alerts.png"), full_page=True)

    page.goto(f"/fleet/targets/{primary.pk}/alerts/")
    row = page.locator("#thresholds tr[data-metric='connections_pct']")
    expect(row).to_contain_text("overridden")
    expect(page.locator("#thresholds tr[data-metric='replica_lag_s']")).to_contain_text("10 s")
    page.screenshot(path=str(artifacts / "alert-thresholds.png"), full_page=True)


def test_it_shows_the_audit_of_one_tenant(page, users, demo_targets, artifacts):
    primary = demo_targets["demo-primary"]
    for slug in ("acme", "globex"):
        audit.record(None, "tenant.onboard", primary, user=users["operator"], detail={"tenants": [slug], "target": primary.name})
    audit.record(None, "tenant.offboard_request", primary, user=users["operator"], outcome="failed",
                 detail={"tenants": ["acme"], "state": "pending"})
    _log_in(page, "admin")
    page.goto("/audit/?object_name=acme")
    expect(page.locator("#audit tbody tr")).to_have_count(2)
    expect(page.locator("#audit")).not_to_contain_text("globex")
    page.screenshot(path=str(artifacts / "audit.png"), full_page=True)


def test_it_shows_the_migrations_page(page, users, demo_targets, artifacts):
    _log_in(page, "operator")
    page.goto("/migrations/")
    expect(page.locator("main h1")).to_have_text("Migrations")
    expect(page.locator("#new-change-link")).to_be_visible()  # an operator may plan a change
    page.screenshot(path=str(artifacts / "migrations.png"), full_page=True)
