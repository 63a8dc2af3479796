"""The drill pages from the console DB: the drills list (last result, RTO/RPO, next run, overdue),
a policy's run history and trend series, a run's steps and every difference, the backups per
target and tenant, the policy form with its approval for a lower retention, the tenant's last
passing drill."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from console import approvals
from console.models import Approval
from monitors.drills import policies
from monitors.drills.models import Backup, BackupPolicy, DrillRun


@pytest.fixture
def policy(demo_targets, tmp_path):
    return BackupPolicy.objects.create(target=demo_targets["demo-primary"], database="demo", keep_count=3,
                                       every_hours=24, destination=str(tmp_path), scratch=demo_targets["demo-scratch"])


def backup_of(policy, hours_ago, verified=False, **fields):
    snapshot_at = timezone.now() - timedelta(hours=hours_ago)
    return Backup.objects.create(policy=policy, target=policy.target, database=policy.database, state=Backup.State.DONE,
                                 snapshot_at=snapshot_at, verified_at=snapshot_at + timedelta(minutes=5) if verified else None,
                                 size_bytes=5_000_000, duration_s=3.5, **fields)


def drill_of(backup, passed, rto_s=42.0, hours_ago=None, **fields):
    started = backup.snapshot_at + timedelta(minutes=1) if hours_ago is None else timezone.now() - timedelta(hours=hours_ago)
    return DrillRun.objects.create(
        backup=backup, scratch=backup.policy.scratch, started_at=started, finished_at=started + timedelta(seconds=rto_s),
        verified_at=started + timedelta(seconds=rto_s) if passed else None, passed=passed,
        rto_s=rto_s if passed else None, rpo_s=(started - backup.snapshot_at).total_seconds(), **fields)


def test_it_lists_each_policy_with_its_last_result_rto_rpo_next_run_and_an_overdue_badge(policy, client_as, demo_targets):
    BackupPolicy.objects.filter(pk=policy.pk).update(scheduled_at=timezone.now() - timedelta(hours=2, minutes=30))
    drill_of(backup_of(policy, 2, verified=True), passed=True, rto_s=42.0)
    stale = BackupPolicy.objects.create(target=demo_targets["demo-primary"], database="other", every_hours=6)
    drill_of(backup_of(stale, 24 * 9, verified=True), passed=True)
    drill_of(backup_of(stale, 30), passed=False, reason="The backup's files do not match its manifest")

    page = client_as("viewer").get(reverse("drills")).content.decode()

    fresh_row = page[page.index('data-policy="demo-primary/demo"'):page.index('data-policy="demo-primary/other"')]
    assert "passed" in fresh_row and "42.0 s" in fresh_row and "1.0 min" not in fresh_row
    assert "60.0 s" in fresh_row or "1 min 0 s" in fresh_row  # RPO: a minute after the snapshot
    assert "in 21 h 29 min" in fresh_row and "overdue" not in fresh_row and "on time" in fresh_row
    stale_row = page[page.index('data-policy="demo-primary/other"'):]
    stale_row = stale_row[:stale_row.index("</tr>")]
    assert "failed" in stale_row and "do not match its manifest" in stale_row and "due now" in stale_row
    assert "overdue" in stale_row and "no backup in the last 26 h" in stale_row
    assert "no verified backup in the last 7 days" in stale_row


def test_it_shows_a_policy_with_its_run_history_and_an_rto_rpo_trend(policy, client_as):
    runs = [drill_of(backup_of(policy, h, verified=True), passed=True, rto_s=rto) for h, rto in ((50, 30.0), (26, 45.5), (2, 40.0))]
    elsewhere = BackupPolicy.objects.create(target=policy.target, database="other")
    drill_of(backup_of(elsewhere, 1, verified=True), passed=True, rto_s=99.0)
    viewer = client_as("viewer")

    page = viewer.get(reverse("drill-policy", args=[policy.pk])).content.decode()
    trend = viewer.get(reverse("drill-policy-series", args=[policy.pk]), {"window": "7d"}).json()

    assert all(f'data-run="{r.pk}"' in page for r in runs) and "99.0 s" not in page
    assert 'id="chart-drill-trend"' in page and reverse("drill-policy-series", args=[policy.pk]) in page
    assert "Backup and drill now" not in page and "Edit policy" not in page
    assert trend["window"] == "7d" and trend["unit"] == "s"
    assert [s["label"].split(" ")[0] for s in trend["series"]] == ["RTO", "RPO"]
    assert trend["series"][0]["values"] == [30.0, 45.5, 40.0]
    assert trend["series"][1]["values"] == [60.0, 60.0, 60.0]
    assert trend["t"] == [r.started_at.timestamp() for r in runs]
    day = viewer.get(reverse("drill-policy-series", args=[policy.pk]), {"window": "24h"}).json()
    assert day["series"][0]["values"] == [40.0]


def test_it_shows_a_run_with_its_steps_and_every_difference_and_stops_polling_when_over(policy, client_as):
    backup = backup_of(policy, 1)
    running = DrillRun.objects.create(backup=backup, scratch=policy.scratch, started_at=timezone.now(), steps=[
        {"name": "checksums", "started_at": "", "seconds": 0.02, "note": ""},
        {"name": "restore", "started_at": "", "seconds": None, "note": ""}])
    differences = [{"check": "rows", "object": f"public.t{i}", "expected": i + 1, "found": i} for i in range(12)]
    failed = drill_of(backup, passed=False, differences=differences, reason="The restored copy differs",
                      verification={"tables": [{"schema": "public", "table": "t0", "rows": 0, "expected": 1},
                                               {"schema": "public", "table": "u", "rows": 7, "expected": 7}],
                                    "alembic": {"public": ["abc123"]}, "amcheck": ["no problems found"]})
    viewer = client_as("viewer")

    live = viewer.get(reverse("drill-run-detail", args=[running.pk]), {"fragment": "live"}, HTTP_HX_REQUEST="true")
    over = viewer.get(reverse("drill-run-detail", args=[failed.pk]), {"fragment": "live"}, HTTP_HX_REQUEST="true")
    page = viewer.get(reverse("drill-run-detail", args=[failed.pk])).content.decode()

    assert live.status_code == 200 and 'hx-trigger="every 1s"' in live.content.decode()
    assert 'data-step="restore" data-status="running"' in live.content.decode()
    assert over.status_code == 286 and "hx-trigger" not in over.content.decode()
    assert all(f"public.t{i}</td>" in page for i in range(12))  # every difference, not the first few
    assert "The restored copy differs" in page and "abc123" in page and "no problems found" in page
    assert 'data-table="public.u"' in page and "differs</span>" in page and "equal</span>" in page


def test_it_lists_the_last_backup_per_target_database_and_tenant_with_size_age_and_verification(policy, client_as):
    from tenants.models import Tenant

    verified = backup_of(policy, 30, verified=True)
    latest = backup_of(policy, 3)
    tenant = Tenant.objects.create(slug="acme", name="Acme", target=policy.target, strategy=Tenant.Strategy.SCHEMA)
    tenant_backup = Backup.objects.create(target=policy.target, database="demo", schema="tenant_acme", tenant=tenant,
                                          state=Backup.State.DONE, snapshot_at=timezone.now() - timedelta(hours=1),
                                          size_bytes=2048, verified_at=timezone.now())

    page = client_as("viewer").get(reverse("drill-backups")).content.decode()

    whole = page[page.index('data-scope="demo-primary/demo"'):]
    whole = whole[:whole.index("</tr>")]
    assert f"#{latest.pk}" in whole and "4.8\xa0MB" in whole and "3 h 0 min" in whole
    assert "not this one" in whole and f"#{verified.pk} verified" in whole
    scoped = page[page.index('data-scope="demo-primary/demo/tenant_acme"'):]
    scoped = scoped[:scoped.index("</tr>")]
    assert f"#{tenant_backup.pk}" in scoped and "acme" in scoped and "2.0\xa0KB" in scoped and "verified" in scoped


def test_it_saves_a_policy_for_operators_and_refuses_bad_input_unchanged(demo_targets, client_as, tmp_path):
    operator = client_as("operator")
    form = {"target": demo_targets["demo-primary"].pk, "database": "demo", "every_hours": "", "cron": "0 3 * * *",
            "keep_count": 5, "keep_days": "", "destination": str(tmp_path), "scratch": demo_targets["demo-scratch"].pk,
            "smoke_queries": "SELECT 1\nSELECT aid FROM pgbench_accounts LIMIT 1", "backup_max_age_h": 26,
            "drill_max_age_h": 168}

    for bad, said in (({"every_hours": 4}, "not both"), ({"cron": "daily"}, "five fields"),
                      ({"database": "demo; DROP"}, "ASCII letters"), ({"destination": "relative/dir"}, "absolute path"),
                      ({"smoke_queries": "DELETE FROM pgbench_accounts"}, "exactly one SELECT")):
        response = operator.post(reverse("drill-policy-new"), {**form, **bad})
        assert response.status_code == 200 and said in response.content.decode(), bad
    assert not BackupPolicy.objects.exists()

    response = operator.post(reverse("drill-policy-new"), form)

    policy = BackupPolicy.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("drill-policy", args=[policy.pk])
    assert policy.cron == "0 3 * * *" and policy.keep_count == 5
    assert policy.smoke_queries == ["SELECT 1", "SELECT aid FROM pgbench_accounts LIMIT 1"]
    assert client_as("viewer").get(reverse("drill-policy-new")).status_code == 403


def test_it_applies_a_lower_retention_only_once_another_approver_approves_it(policy, client_as, users):
    edit = reverse("drill-policy-edit", args=[policy.pk])
    form = {"every_hours": 12, "cron": "", "keep_count": 1, "keep_days": "", "destination": policy.destination,
            "scratch": policy.scratch_id, "smoke_queries": "", "backup_max_age_h": 26, "drill_max_age_h": 168}

    client_as("operator").post(edit, form)

    policy.refresh_from_db()
    assert policy.every_hours == 12  # what does not lower retention applies at once
    assert policy.keep_count == 3 and policy.pending_retention == {"keep_count": 1, "keep_days": None}
    approval = approvals.pending(policies.RETENTION_APPROVAL, policy)
    assert approval.requested_by == users["operator"]
    assert approval.shown["retention now"] == {"keep_count": 3, "keep_days": None}
    assert approval.shown["retention asked for"] == {"keep_count": 1, "keep_days": None}
    page = client_as("viewer").get(reverse("drill-policy", args=[policy.pk])).content.decode()
    assert "keep the last 1" in page and reverse("approval-detail", args=[approval.pk]) in page

    with pytest.raises(approvals.ApprovalRefused, match="someone else must decide"):
        approvals.decide(approval, users["operator"], True, shown_digest=approval.digest)
    with pytest.raises(approvals.ApprovalRefused, match="not what waits"):
        approvals.decide(approval, users["approver"], True, shown_digest="0" * 64)
    decided = client_as("approver").post(reverse("approval-decide", args=[approval.pk]),
                                         {"decision": "approve", "digest": approval.digest})

    assert decided.status_code == 302
    policy.refresh_from_db()
    assert policy.keep_count == 1 and policy.pending_retention is None
    assert Approval.objects.get(pk=approval.pk).decision == Approval.Decision.APPROVED


def test_it_voids_a_retention_approval_when_the_policy_changed_since(policy, client_as, users):
    edit = reverse("drill-policy-edit", args=[policy.pk])
    form = {"every_hours": 24, "cron": "", "keep_count": 2, "keep_days": "", "destination": policy.destination,
            "scratch": policy.scratch_id, "smoke_queries": "", "backup_max_age_h": 26, "drill_max_age_h": 168}
    client_as("operator").post(edit, form)
    approval = approvals.pending(policies.RETENTION_APPROVAL, policy)
    BackupPolicy.objects.filter(pk=policy.pk).update(keep_count=10)  # changed behind the approver's back

    with pytest.raises(approvals.ApprovalRefused, match="changed since the request"):
        approvals.decide(approval, users["approver"], True, shown_digest=approval.digest)

    policy.refresh_from_db()
    assert policy.keep_count == 10
    assert Approval.objects.get(pk=approval.pk).decision == Approval.Decision.VOIDED


def test_it_raises_retention_without_an_approval(policy, client_as):
    form = {"every_hours": 24, "cron": "", "keep_count": 10, "keep_days": 30, "destination": policy.destination,
            "scratch": policy.scratch_id, "smoke_queries": "", "backup_max_age_h": 26, "drill_max_age_h": 168}

    client_as("operator").post(reverse("drill-policy-edit", args=[policy.pk]), form)

    policy.refresh_from_db()
    assert (policy.keep_count, policy.keep_days) == (10, 30)
    assert approvals.pending(policies.RETENTION_APPROVAL, policy) is None


def test_it_shows_the_tenants_last_passing_drill_on_its_page(policy, client_as):
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="acme", name="Acme", target=policy.target, strategy=Tenant.Strategy.SCHEMA,
                                   state=Tenant.State.ACTIVE)
    url = reverse("tenant-detail", args=[tenant.pk])
    assert "No passing restore drill of this tenant yet" in client_as("viewer").get(url).content.decode()
    backup = backup_of(policy, 2, verified=True, tenant=tenant, schema="tenant_acme")
    passed = drill_of(backup, passed=True, rto_s=12.5)
    failed = drill_of(backup_of(policy, 1, tenant=tenant, schema="tenant_acme"), passed=False, reason="amcheck found problems")

    page = client_as("viewer").get(url).content.decode()

    assert f"Last passing drill: <a href=\"{reverse('drill-run-detail', args=[passed.pk])}\">#{passed.pk}</a>" in page
    assert "12.5 s" in page and f"#{failed.pk}" in page and "amcheck found problems" in page
    assert "add one" not in page  # a viewer
    operator_page = client_as("operator").get(url).content.decode()
    assert f"{reverse('drill-policy-new')}?tenant={tenant.pk}" in operator_page
    form = client_as("operator").get(f"{reverse('drill-policy-new')}?tenant={tenant.pk}").content.decode()
    assert f'<option value="{tenant.pk}" selected>' in form


def test_it_makes_a_tenants_policy_whose_target_and_database_are_the_tenants(policy, client_as, demo_targets):
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="acme", name="Acme", target=policy.target, strategy=Tenant.Strategy.SCHEMA,
                                   state=Tenant.State.ACTIVE)
    form = {"tenant": tenant.pk, "target": "", "database": "", "every_hours": 6, "cron": "", "keep_count": 2,
            "keep_days": "", "destination": "", "scratch": "", "smoke_queries": "", "backup_max_age_h": 26,
            "drill_max_age_h": 168}
    operator = client_as("operator")

    response = operator.post(reverse("drill-policy-new"), form)
    again = operator.post(reverse("drill-policy-new"), form)

    made = BackupPolicy.objects.get(tenant=tenant)
    assert response.status_code == 302 and (made.target, made.database) == (tenant.target, tenant.target.dbname)
    assert again.status_code == 200 and "already exists" in again.content.decode()
    assert operator.post(reverse("drill-policy-new"), {**form, "tenant": ""}).status_code == 200  # no target either
    tenant_run = drill_of(backup_of(made, 2, verified=True, tenant=tenant, schema="tenant_acme"), passed=True)
    database_run = drill_of(backup_of(policy, 2, verified=True), passed=True)
    page = client_as("viewer").get(reverse("drill-policy", args=[made.pk])).content.decode()
    assert f'data-run="{tenant_run.pk}"' in page and f'data-run="{database_run.pk}"' not in page
    assert "demo-primary/demo tenant acme" in client_as("viewer").get(reverse("drills")).content.decode()


def test_it_schedules_a_tenants_policy_as_a_job_for_that_tenant(policy):
    from monitors.drills import backups
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="acme", name="Acme", target=policy.target, strategy=Tenant.Strategy.SHARED)
    BackupPolicy.objects.create(target=policy.target, database="demo", tenant=tenant, every_hours=1)
    BackupPolicy.objects.filter(pk=policy.pk).update(scheduled_at=timezone.now())

    started = backups.schedule_due()

    from console.models import Job

    assert [Job.objects.get(pk=pk).tenant for pk in started] == [tenant]
