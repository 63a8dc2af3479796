"""The drill pages in a real browser: an operator starts a backup and drill from a policy page,
watches the run's steps live until it passes, then sees it on the policy, drills and backups pages."""

import re

import pytest
from playwright.sync_api import expect

from monitors.drills.models import BackupPolicy, DrillRun
from tests.monitors.test_drills import amcheck_on_scratch  # noqa: F401  (a fixture)
from tests.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def login(page, role):
    page.goto("/drills/")
    page.fill("#id_username", role)
    page.fill("#id_password", f"{role}-pw-123")
    page.click("button[type=submit]")


def test_it_runs_a_drill_from_the_policy_page_and_shows_its_steps_live(page, users, demo_targets, live_worker,
                                                                       amcheck_on_scratch, tmp_path, artifacts):  # noqa: F811
    policy = BackupPolicy.objects.create(
        target=demo_targets["demo-primary"], database="demo", keep_count=2, every_hours=24, destination=str(tmp_path),
        scratch=demo_targets["demo-scratch"], smoke_queries=["SELECT aid FROM pgbench_accounts LIMIT 1",
                                                             "SELECT pg_sleep(4) FROM pgbench_branches LIMIT 1"])
    login(page, "operator")
    page.goto(f"/drills/policies/{policy.pk}/")
    page.click("button:has-text('Backup and drill now')")
    expect(page).to_have_url(re.compile(r"/jobs/\d+/$"))
    job_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    run = wait_until(lambda: DrillRun.objects.filter(job_id=job_id).first(), 60, "the drill to start")

    page.goto(f"/drills/runs/{run.pk}/")
    expect(page.locator("#drill-run-live")).to_have_attribute("data-over", "false")
    expect(page.locator("#drill-run-live")).to_have_attribute("data-over", "true", timeout=90_000)

    expect(page.locator("#drill-result")).to_contain_text("passed")
    expect(page.locator("li[data-step='amcheck']")).to_have_attribute("data-status", "done")
    expect(page.locator("#drill-tables tr[data-table='public.pgbench_accounts']")).to_contain_text("100000")
    expect(page.locator("#drill-result")).to_contain_text("dropped")
    page.screenshot(path=str(artifacts / "drill-run.png"), full_page=True)

    page.goto(f"/drills/policies/{policy.pk}/")
    expect(page.locator(f"tr[data-run='{run.pk}']")).to_contain_text("passed")
    expect(page.locator("#chart-drill-trend")).to_have_attribute("data-samples", "1")
    page.screenshot(path=str(artifacts / "drill-policy.png"), full_page=True)

    page.goto("/drills/")
    expect(page.locator("tr[data-policy='demo-primary/demo']")).to_contain_text("passed")
    expect(page.locator("tr[data-policy='demo-primary/demo']")).to_contain_text("on time")
    page.screenshot(path=str(artifacts / "drill-list.png"), full_page=True)

    page.goto("/drills/backups/")
    expect(page.locator("tr[data-scope='demo-primary/demo']")).to_contain_text("verified")
    page.screenshot(path=str(artifacts / "drill-backups.png"), full_page=True)

    page.goto(f"/drills/policies/{policy.pk}/edit/")
    page.fill("#id_keep_count", "1")
    page.click("button:has-text('Save')")
    expect(page.locator("#pending-retention")).to_contain_text("keep the last 1")
    page.screenshot(path=str(artifacts / "drill-policy-retention-asked.png"), full_page=True)
    page.goto(f"/drills/policies/{policy.pk}/edit/")
    page.screenshot(path=str(artifacts / "drill-policy-form.png"), full_page=True)


def test_it_shows_a_tenants_last_passing_drill_on_the_tenant_page(page, users, demo_targets, artifacts):
    from datetime import timedelta

    from django.utils import timezone

    from monitors.drills.models import Backup
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="acme", name="Acme", target=demo_targets["demo-primary"],
                                   strategy=Tenant.Strategy.SHARED, state=Tenant.State.ACTIVE)
    taken = timezone.now() - timedelta(hours=3)
    backup = Backup.objects.create(target=tenant.target, database="demo", schema="tenant_shared", tenant=tenant,
                                   state=Backup.State.DONE, snapshot_at=taken, verified_at=taken + timedelta(minutes=1))
    run = DrillRun.objects.create(backup=backup, started_at=taken + timedelta(seconds=30), passed=True, rto_s=12.5,
                                  rpo_s=30.0, verified_at=taken + timedelta(seconds=42), finished_at=taken + timedelta(seconds=43))
    login(page, "operator")

    page.goto(f"/tenants/{tenant.pk}/")

    expect(page.locator("#tenant-drill")).to_contain_text(f"Last passing drill: #{run.pk}")
    expect(page.locator("#tenant-drill")).to_contain_text("RTO 12.5 s")
    expect(page.locator("#tenant-drill a:has-text('add one')")).to_be_visible()
    page.locator("#tenant-drill").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "drill-tenant.png"), full_page=True)
