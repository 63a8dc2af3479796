"""The physical backups and PITR drill pages: an operator starts a full backup and a PITR drill from
the target's page and watches the drill's steps to the end; failures are shown where the data is."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from console.models import Job
from monitors.drills.physical import PhysicalBackupPolicy, PitrDrillRun
from tests.waiting import wait_until
from tests.monitors.test_pitr import MARKS_FIRST, drill_dir, marks, two_writes  # noqa: F401  (fixtures)


@pytest.fixture
def policy(demo_targets, fleet, drill_dir):  # noqa: F811
    return PhysicalBackupPolicy.objects.create(
        target=demo_targets["demo-primary"], stanza="demo", config=fleet.env()["PGBACKREST_CONFIG"], database="demo",
        smoke_queries=[MARKS_FIRST])


@pytest.mark.browser
@pytest.mark.worker
def test_it_backs_up_and_drills_from_the_target_page_and_shows_the_steps_live(page, users, policy, marks, fleet,  # noqa: F811
                                                                              live_worker, artifacts):
    target = policy.target
    page.goto(reverse("physical-backups", args=[target.pk]))
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pw-123")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text(f"Physical backups of {target.name}")
    expect(page.locator("#archiver")).to_contain_text("archive_mode")
    page.click("button:has-text('Full backup')")
    expect(page.locator(".state").first).to_have_text("Succeeded", timeout=60_000)

    page.goto(reverse("physical-backups", args=[target.pk]))
    rows = page.locator("#physical-backup-list tbody tr")
    expect(rows.first).to_contain_text("full")
    moment = two_writes(fleet, policy)
    page.fill("#target_at", moment.isoformat())
    page.screenshot(path=str(artifacts / "pitr-physical-backups.png"), full_page=True)
    page.click("button:has-text('PITR drill')")
    job = Job.objects.filter(kind="pitr.drill").latest("id")
    run = wait_until(lambda: PitrDrillRun.objects.filter(job=job).first(), 60, "the drill to start")
    page.goto(run.get_absolute_url())

    expect(page.locator("#pitr-result .state")).to_have_text("passed", timeout=90_000)
    expect(page.locator("#pitr-steps li[data-step='alembic versions']")).to_have_attribute("data-status", "done")
    expect(page.locator("#pitr-recovery .label")).to_have_text("100 %")
    expect(page.locator("#pitr-live")).to_contain_text("1 row")
    expect(page.locator("#pitr-result")).to_contain_text("folder deleted")
    page.screenshot(path=str(artifacts / "pitr-drill-run.png"), full_page=True)

    page.goto(reverse("physical-list"))
    expect(page.locator("#physical-policies")).to_contain_text("passed")
    page.screenshot(path=str(artifacts / "pitr-physical-list.png"), full_page=True)


def test_it_shows_why_pgbackrest_info_failed_on_the_page(policy, client_as):
    policy.config = "/nonexistent/pgbackrest.conf"
    policy.save()

    html = client_as("viewer").get(reverse("physical-backups", args=[policy.target.pk])).content.decode()

    assert "pgbackrest info failed" in html and "/nonexistent/pgbackrest.conf" in html
    assert "WAL archiving" in html and "Full backup" not in html  # viewers do not start backups


def test_it_refuses_a_drill_to_a_moment_that_is_not_one_and_starts_nothing(policy, client_as):
    response = client_as("operator").post(reverse("pitr-drill-start", args=[policy.target.pk]), {"target_at": "yesterday"})

    assert response.status_code == 302 and not Job.objects.filter(kind="pitr.drill").exists()
    page = client_as("operator").get(response["Location"]).content.decode()
    assert "is not a moment" in page


def test_it_lets_only_operators_start_a_backup(policy, client_as):
    response = client_as("viewer").post(reverse("physical-backup-start", args=[policy.target.pk]), {"type": "full"})

    assert response.status_code == 403 and not Job.objects.filter(kind="pitr.backup").exists()


@pytest.mark.browser
@pytest.mark.worker
def test_it_shows_recovery_live_and_leaves_nothing_when_the_drill_is_cancelled(page, users, policy, marks, fleet,  # noqa: F811
                                                                               live_worker, artifacts, drill_dir):  # noqa: F811
    from console import jobs
    from tests.monitors.test_pitr import backup_now_on_worker, leftovers

    # Recovery waits an hour before it replays a recent commit: the drill stays in "recovery".
    policy.server_settings = {"recovery_min_apply_delay": "1h"}
    policy.save()
    backup_now_on_worker(policy)
    moment = two_writes(fleet, policy)
    job = jobs.create("pitr.drill", target=policy.target, params={"target_at": moment.isoformat()})
    run = wait_until(lambda: PitrDrillRun.objects.filter(job_id=job.pk).first(), 60, "the drill to start")
    page.goto(run.get_absolute_url())
    page.fill("#id_username", "viewer")
    page.fill("#id_password", "viewer-pw-123")
    page.click("button[type=submit]")

    expect(page.locator("#pitr-steps li[data-step='recovery']")).to_have_attribute("data-status", "running", timeout=60_000)
    expect(page.locator("#lsn-replayed")).not_to_have_text("—")
    page.screenshot(path=str(artifacts / "pitr-drill-recovering.png"), full_page=True)
    jobs.request_cancel(Job.objects.get(pk=job.pk))

    expect(page.locator("#pitr-result .state")).to_have_text("failed", timeout=30_000)
    expect(page.locator("#pitr-result")).to_contain_text("Cancelled by an operator")
    expect(page.locator("#pitr-result")).to_contain_text("folder deleted")
    assert leftovers(drill_dir) == []
    page.screenshot(path=str(artifacts / "pitr-drill-cancelled.png"), full_page=True)


def _form(fleet, **changes):
    data = {"stanza": "demo", "config": fleet.env()["PGBACKREST_CONFIG"], "run_as": "", "full_every_hours": "168",
            "diff_every_hours": "24", "incr_every_hours": "", "retention_full": "2", "retention_diff": "",
            "max_backup_age_h": "26", "max_wal_age_s": "900", "drill_every_hours": "24", "drill_delay_s": "600",
            "database": "demo", "smoke_queries": "SELECT aid FROM pgbench_accounts LIMIT 1",
            "server_settings": "shared_buffers = 64MB"}
    return {**data, **changes}


def test_it_saves_a_physical_policy_once_pgbackrest_reads_the_stanza(demo_targets, fleet, client_as):
    target = demo_targets["demo-primary"]
    url = reverse("physical-policy", args=[target.pk])
    operator = client_as("operator")

    response = operator.post(url, _form(fleet))

    assert response.status_code == 302 and response["Location"] == reverse("physical-backups", args=[target.pk])
    policy = PhysicalBackupPolicy.objects.get(target=target)
    assert policy.stanza == "demo" and policy.drill_every_hours == 24 and policy.drill_delay_s == 600
    assert policy.server_settings == {"shared_buffers": "64MB"}
    assert policy.smoke_queries == ["SELECT aid FROM pgbench_accounts LIMIT 1"]
    assert "Edit policy" in operator.get(response["Location"]).content.decode()


def test_it_applies_a_lower_pgbackrest_retention_only_once_another_approver_approves_it(demo_targets, fleet,
                                                                                       client_as, users):
    from console import approvals
    from monitors.drills import physical_policies

    url = reverse("physical-policy", args=[demo_targets["demo-primary"].pk])
    client_as("operator").post(url, _form(fleet, retention_full="3", retention_diff="3"))

    client_as("operator").post(url, _form(fleet, retention_full="1", retention_diff="3", drill_every_hours="12"))

    policy = PhysicalBackupPolicy.objects.get()
    assert policy.drill_every_hours == 12  # what does not lower retention applies at once
    assert (policy.retention_full, policy.retention_diff) == (3, 3)
    assert policy.pending_retention == {"retention_full": 1, "retention_diff": 3}
    approval = approvals.pending(physical_policies.RETENTION_APPROVAL, policy)
    assert approval.requested_by == users["operator"]
    assert approval.shown["retention asked for"] == {"retention_full": 1, "retention_diff": 3}
    page = client_as("viewer").get(reverse("physical-backups", args=[policy.target.pk])).content.decode()
    assert "Asked for: repo1-retention-full=1, repo1-retention-diff=3" in page
    assert reverse("approval-detail", args=[approval.pk]) in page
    with pytest.raises(approvals.ApprovalRefused, match="someone else must decide"):
        approvals.decide(approval, users["operator"], True, shown_digest=approval.digest)

    decided = client_as("approver").post(reverse("approval-decide", args=[approval.pk]),
                                         {"decision": "approve", "digest": approval.digest})

    assert decided.status_code == 302
    policy.refresh_from_db()
    assert (policy.retention_full, policy.retention_diff, policy.pending_retention) == (1, 3, None)


def test_it_takes_a_stanza_only_for_the_server_it_backs_up_and_once(demo_targets, fleet, client_as):
    from console.models import Target

    operator = client_as("operator")
    other = demo_targets["demo-scratch"]
    Target.objects.filter(pk=other.pk).update(role=Target.Role.PRIMARY)  # another server, not a scratch one

    refused = operator.post(reverse("physical-policy", args=[other.pk]), _form(fleet)).content.decode()
    replica = operator.post(reverse("physical-policy", args=[demo_targets["demo-replica"].pk]), _form(fleet))
    primary = operator.post(reverse("physical-policy", args=[demo_targets["demo-primary"].pk]), _form(fleet))

    assert "stanza demo backs up another server (db-system-id" in refused
    assert replica.status_code == 302  # a streaming replica has its primary's system identifier
    assert "stanza demo is already demo-replica&#x27;s" in primary.content.decode()
    assert list(PhysicalBackupPolicy.objects.values_list("target__name", flat=True)) == ["demo-replica"]


def test_it_refuses_a_policy_pgbackrest_cannot_read_or_with_bad_input_and_changes_nothing(demo_targets, fleet, client_as):
    target = demo_targets["demo-primary"]
    url = reverse("physical-policy", args=[target.pk])
    operator = client_as("operator")

    for changes, said in (({"stanza": "no-such-stanza"}, "pgBackRest reports stanza no-such-stanza: missing stanza path"),
                          ({"server_settings": "archive_mode = on"}, "the drill&#x27;s own setting"),
                          ({"smoke_queries": "DELETE FROM pgbench_accounts"}, "exactly one SELECT"),
                          ({"config": "relative/pgbackrest.conf"}, "absolute path")):
        response = operator.post(url, _form(fleet, **changes))
        assert response.status_code == 200 and said in response.content.decode(), changes
    assert not PhysicalBackupPolicy.objects.exists()
    assert client_as("viewer").post(url, _form(fleet)).status_code == 403


@pytest.mark.browser
def test_it_shows_the_policy_form_with_pgbackrests_own_error(page, users, demo_targets, fleet, artifacts):
    target = demo_targets["demo-primary"]
    page.goto(reverse("physical-policy", args=[target.pk]))
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pw-123")
    page.click("button[type=submit]")
    page.fill("#id_stanza", "no-such-stanza")
    page.fill("#id_config", fleet.env()["PGBACKREST_CONFIG"])
    page.click("button:has-text('Save')")

    expect(page.locator("form .error")).to_contain_text("pgBackRest reports stanza no-such-stanza: missing stanza path")
    page.screenshot(path=str(artifacts / "pitr-policy-form.png"), full_page=True)
    assert not PhysicalBackupPolicy.objects.exists()
