"""Pages the operator guide (docs/operator-guide.md) shows and no other browser test draws in
that state: a target's activity with a lock wait and its root blocker, an EXPLAIN plan, open
alerts with their thresholds, the audit filtered by a tenant, the Migrations page, a job page linking
to what the job made, an overdue backup policy with its alerts. Each test checks what the page says,
then takes the screenshot the guide uses (scripts/guide_screenshots.sh)."""

import re

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


def test_it_sorts_the_tenant_list_by_a_header_in_the_browser(page, users, demo_targets, artifacts):
    from tenants import migrator
    from tenants.models import Tenant, TenantHealth

    head = migrator.head()
    primary, bouncer = demo_targets["demo-primary"], demo_targets["demo-bouncer"]
    for slug, target, strategy, state, size_bytes, drift in (
            ("acme", primary, "schema", "active", 9_400_000, 0), ("globex", primary, "database", "active", 31_000_000, 2),
            ("initech", bouncer, "shared", "active", 210_000, 0), ("hooli", primary, "schema", "failed", None, 0),
            ("umbrella", primary, "schema", "archived", 5_000_000, 0)):
        tenant = Tenant.objects.create(name=slug.title(), slug=slug, target=target, strategy=strategy, state=state,
                                       schema_version=head if state != "failed" else "", failed_step="migrate" if state == "failed" else "")
        if size_bytes:
            tenant.last_health = TenantHealth.objects.create(
                tenant=tenant, version=head, head=head, size_bytes=size_bytes, drift=["x"] * drift, drift_count=drift,
                tables=[{"table_name": "documents", "rows_estimate": size_bytes // 800, "total_bytes": size_bytes}])
            tenant.save()
    _log_in(page, "viewer")
    page.goto("/tenants/?target=" + str(primary.pk))
    page.click("th a[data-sort='size']")
    page.click("th a[data-sort='size']")  # the same header again: largest first

    expect(page.locator("th[aria-sort='descending']")).to_contain_text("Size")
    slugs = page.locator("#tenants tbody tr").evaluate_all("(rows) => rows.map((r) => r.dataset.tenant)")
    assert slugs == ["globex", "acme", "umbrella", "hooli"]  # the target filter kept; no figures sort last
    expect(page.locator("tr[data-tenant='umbrella']")).not_to_contain_text("4.8 MB")  # archived: no stale size
    page.screenshot(path=str(artifacts / "tenant-list-sorted.png"), full_page=True)


def test_it_links_a_jobs_page_to_what_the_job_made(page, users, demo_targets, artifacts):
    from datetime import timedelta

    from django.utils import timezone

    from console.models import Job
    from monitors.drills.models import Backup, DrillRun

    primary, taken = demo_targets["demo-primary"], timezone.now() - timedelta(minutes=5)
    job = Job.objects.create(kind="drills.backup_and_drill", target=primary, state=Job.State.SUCCEEDED,
                             progress_done=2, progress_total=2, started_at=taken, finished_at=taken + timedelta(seconds=40))
    backup = Backup.objects.create(target=primary, database="demo", job=job, state=Backup.State.DONE, snapshot_at=taken,
                                   verified_at=taken + timedelta(seconds=38))
    run = DrillRun.objects.create(backup=backup, job=job, started_at=taken + timedelta(seconds=10), passed=True,
                                  rto_s=28.0, rpo_s=10.0, verified_at=taken + timedelta(seconds=38),
                                  finished_at=taken + timedelta(seconds=40))
    for at_s, message in ((0, f"backup #{backup.pk} of demo-primary/demo taken"),
                          (40, f"drill #{run.pk} passed: RTO 28.0 s, RPO 10.0 s; scratch database dropped")):
        job.log_lines.create(at=taken + timedelta(seconds=at_s), message=message)
    _log_in(page, "operator")
    page.goto(f"/jobs/{job.pk}/")

    links = page.locator("dd.links a")
    expect(links).to_have_text([f"Drill run #{run.pk}", f"Backup #{backup.pk} of demo"])
    links.first.click()
    expect(page).to_have_url(re.compile(rf"/drills/runs/{run.pk}/$"))
    page.go_back()
    page.screenshot(path=str(artifacts / "job-links.png"), full_page=True)


def test_it_shows_an_overdue_backup_policy_and_its_backup_alerts(page, users, demo_targets, artifacts):
    from datetime import timedelta

    from django.utils import timezone

    from monitors import alerts
    from monitors.drills.models import Backup, BackupPolicy, DrillRun

    primary, now = demo_targets["demo-primary"], timezone.now()
    policy = BackupPolicy.objects.create(target=primary, database="demo", every_hours=24, keep_count=7,
                                         scheduled_at=now - timedelta(hours=30))
    for hours_ago, verified in ((24 * 8, True), (30, False)):  # the last drill 8 days ago, the last backup 30 h ago
        taken = now - timedelta(hours=hours_ago)
        backup = Backup.objects.create(policy=policy, target=primary, database="demo", state=Backup.State.DONE,
                                       snapshot_at=taken, size_bytes=290_000,
                                       verified_at=taken + timedelta(minutes=2) if verified else None)
        if verified:
            DrillRun.objects.create(backup=backup, started_at=taken + timedelta(seconds=50), passed=True, rto_s=70.0,
                                    rpo_s=50.0, verified_at=taken + timedelta(minutes=2),
                                    finished_at=taken + timedelta(minutes=2))
    alerts.evaluate([primary])
    opened = {a.metric: a.level for a in Alert.open().filter(target=primary)}
    assert opened == {"backup_age:demo": "warning", "verified_backup_age:demo": "critical"}
    _log_in(page, "operator")
    page.goto("/drills/")

    row = page.locator("tr[data-policy='demo-primary/demo']")
    expect(row.locator(".overdue")).to_have_text("overdue")
    expect(row).to_contain_text("no backup in the last 26 h")
    expect(row).to_contain_text("no verified backup in the last 7 days")
    expect(row).to_contain_text("passed")  # the last drill, 8 days ago
    expect(page.locator("header")).to_contain_text("1 critical")
    page.screenshot(path=str(artifacts / "drill-overdue.png"), full_page=True)
