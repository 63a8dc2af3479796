"""Backups and drills tried as an attacker would, on the real fleet: a password that must never
show (in the job's error, its log, the backup row, or the pages), markup in what operators write
showing only as text."""

import pytest
from django.urls import reverse

from console import jobs
from console.models import AuditEvent, Job, Target
from monitors.drills import backups  # noqa: F401  (registers the backup job runner)
from monitors.drills.models import Backup, BackupPolicy

from tests.monitors.test_pitr import drill_dir, policy  # noqa: F401  (fixtures: the suite's pgBackRest stanza)

WRONG_PASSWORD = "Attack-Pw-Secret-42"


@pytest.fixture
def wrong_password_target(transactional_db, demo_targets, monkeypatch):
    """The demo primary again under another name, both of its logins given a wrong password."""
    monkeypatch.setenv("FLEET_ATTACK_PASSWORD", WRONG_PASSWORD)
    primary = demo_targets["demo-primary"]
    return Target.objects.create(
        name="attack-primary", role=Target.Role.PRIMARY, host=primary.host, port=primary.port, dbname="demo",
        username=primary.username, password_env="FLEET_ATTACK_PASSWORD",
        change_username=primary.change_username, change_password_env="FLEET_ATTACK_PASSWORD")


def test_it_never_shows_the_password_of_a_backup_that_failed_to_log_in(wrong_password_target, client_as, run_here,
                                                                       tmp_path):
    from console import jobs

    BackupPolicy.objects.create(target=wrong_password_target, database="demo", destination=str(tmp_path))
    job = run_here(jobs.create("drills.backup", target=wrong_password_target, params={"database": "demo"}, send=False))

    assert job.state == Job.State.FAILED and "password authentication failed" in job.error
    texts = [job.error, *(line.message for line in job.log_lines.all()),
             *Backup.objects.filter(job=job).values_list("error", flat=True),
             *(str(e.detail) for e in AuditEvent.objects.all())]
    for url in (reverse("job-detail", args=[job.pk]), reverse("drill-backups"),
                f"{reverse('job-rows')}?ids={job.pk}", reverse("jobs")):
        texts.append(client_as("viewer").get(url).content.decode())
    assert not [t for t in texts if WRONG_PASSWORD in t]
    assert list(tmp_path.rglob("*")) == [] or all(p.is_dir() for p in tmp_path.rglob("*"))  # no partial dump left


def test_it_shows_markup_in_smoke_queries_and_destinations_as_text(demo_targets, client_as, tmp_path):
    marker = "<script>window.attacked=1</script>"
    destination = str(tmp_path / "a<b>c")
    response = client_as("operator").post(reverse("drill-policy-new"), {
        "target": demo_targets["demo-primary"].pk, "database": "demo", "cron": "0 3 * * *", "keep_count": 5,
        "destination": destination, "scratch": demo_targets["demo-scratch"].pk,
        "smoke_queries": f"SELECT '{marker}'", "backup_max_age_h": 26, "drill_max_age_h": 168})
    assert response.status_code == 302
    policy = BackupPolicy.objects.get()

    for url in (reverse("drill-policy", args=[policy.pk]), reverse("drill-policy-edit", args=[policy.pk])):
        page = client_as("operator").get(url).content.decode()
        assert marker not in page and "<b>c" not in page, url


def test_it_lists_a_policy_that_has_had_no_drill_yet(demo_targets, client_as, tmp_path):
    """A careless client: a new policy, then the Drills list, before anything ran."""
    policy = BackupPolicy.objects.create(target=demo_targets["demo-primary"], database="demo", cron="0 3 * * *",
                                         destination=str(tmp_path))

    assert client_as("viewer").get(reverse("drill-policy", args=[policy.pk])).status_code == 200
    assert client_as("viewer").get(reverse("drills")).status_code == 200


# PITR drills to moments the repository cannot reach ------------------------------------------------------


def _drill_to(client_as, run_here, policy, moment: str) -> Job | None:
    """A PITR drill to `moment` started from the page and run here; None if the page refused it."""
    client_as("operator").post(reverse("pitr-drill-start", args=[policy.target_id]), {"target_at": moment})
    job = Job.objects.filter(kind="pitr.drill").first()
    return run_here(job) if job else None


def test_it_fails_a_pitr_drill_to_a_moment_before_every_backup_clearly_leaving_nothing(
        transactional_db, client_as, run_here, drill_dir, policy):
    from monitors.drills.physical import PitrDrillRun
    from tests.monitors.test_pitr import drill_servers, leftovers

    # The page refuses it before any job: no physical backup had ended by then.
    assert _drill_to(client_as, run_here, policy, "2000-01-01T00:00:00+00:00") is None
    # A drill job asked for it another way (a script) fails clearly and leaves nothing.
    job = run_here(jobs.create("pitr.drill", target=policy.target, params={"target_at": "2000-01-01T00:00:00+00:00"}))

    run = PitrDrillRun.objects.get(job=job)
    assert job.state == Job.State.FAILED and run.passed is False
    assert "No backup of stanza demo had finished by" in run.reason and "take a backup" in run.reason
    assert leftovers(drill_dir) == [] and drill_servers(drill_dir) == []


def test_it_keeps_the_physical_pages_up_after_a_pitr_drill_to_year_1_with_an_offset(
        transactional_db, client_as, run_here, drill_dir, policy):
    job = _drill_to(client_as, run_here, policy, "0001-01-01T00:00:00+05:00")  # UTC: 1 BC

    assert job is None or job.state == Job.State.FAILED
    viewer = client_as("viewer")
    for url in (reverse("physical-list"), reverse("physical-backups", args=[policy.target_id]), reverse("jobs")):
        assert viewer.get(url).status_code == 200, url


def test_it_names_no_tenant_to_someone_not_logged_in_on_metrics(demo_targets):
    from django.test import Client
    from django.utils import timezone

    from tenants.models import Tenant

    primary = demo_targets["demo-primary"]
    tenant = Tenant.objects.create(slug="acme_secret_customer", name="Acme", target=primary,
                                   strategy=Tenant.Strategy.SCHEMA)
    Backup.objects.create(target=primary, database="demo", tenant=tenant, schema=tenant.schema_name,
                          state=Backup.State.DONE, snapshot_at=timezone.now(), size_bytes=1)

    body = Client().get("/metrics").content.decode()  # no login: Prometheus scrapes it

    assert "acme_secret_customer" not in body


def test_it_schedules_and_alerts_nothing_for_the_policy_of_an_offboarded_tenant(demo_targets, tmp_path):
    from django.utils import timezone

    from monitors.drills import alerts
    from tenants.models import Tenant

    primary = demo_targets["demo-primary"]
    tenant = Tenant.objects.create(slug="gone_customer", name="Gone", target=primary, strategy=Tenant.Strategy.SCHEMA,
                                   state=Tenant.State.ARCHIVED)  # offboarded: its schema is dropped
    BackupPolicy.objects.create(target=primary, database="demo", tenant=tenant, every_hours=1,
                                destination=str(tmp_path))

    started = backups.schedule_due(timezone.now())
    raised = alerts.wanted([primary.pk], timezone.now()).get(primary.pk, {})

    assert not Job.objects.filter(pk__in=started, tenant=tenant).exists(), "a backup of a dropped schema, every hour"
    assert not [m for m in raised if "gone_customer" in str(raised[m])], raised
