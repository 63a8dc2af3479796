"""Backup alerts and metrics: a policy without a backup younger than its backup age (26 h by
default) or a verified one younger than its drill age (7 days) opens an alert on its target, which
closes once there is one; /metrics exports per database the last verified backup's time, the last
drill's RTO, RPO and result, and the last backup's size."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitors import alerts
from monitors.drills.models import Backup, BackupPolicy, DrillRun
from monitors.models import Alert


@pytest.fixture
def policy(demo_targets):
    return BackupPolicy.objects.create(target=demo_targets["demo-primary"], database="demo", every_hours=24)


def backup(policy, hours_ago, verified=False, **fields):
    at = timezone.now() - timedelta(hours=hours_ago)
    return Backup.objects.create(policy=policy, target=policy.target, database=policy.database, state=Backup.State.DONE,
                                 snapshot_at=at, verified_at=at + timedelta(minutes=2) if verified else None, **fields)


def open_alerts(target) -> dict[str, Alert]:
    return {a.metric: a for a in Alert.open().filter(target=target)}


def test_it_alerts_without_a_backup_or_a_verified_backup_and_closes_once_there_are(policy):
    alerts.evaluate([policy.target])

    opened = open_alerts(policy.target)
    assert opened["backup_age:demo"].level == "warning" and "there has never been one" in opened["backup_age:demo"].message
    assert opened["verified_backup_age:demo"].level == "critical"
    assert opened["verified_backup_age:demo"].threshold == 168

    backup(policy, 24 * 8, verified=True)  # verified, but older than 7 days
    backup(policy, 2)                      # recent, never drilled
    alerts.evaluate([policy.target])

    opened = open_alerts(policy.target)
    assert "backup_age:demo" not in opened
    assert "taken 192 h ago" in opened["verified_backup_age:demo"].message
    assert round(opened["verified_backup_age:demo"].value) == 192

    backup(policy, 1, verified=True)
    alerts.evaluate([policy.target])

    assert not {m for m in open_alerts(policy.target) if "backup" in m}
    assert Alert.objects.filter(target=policy.target, metric="verified_backup_age:demo", closed_at__isnull=False).exists()


def test_it_uses_the_policys_own_ages(policy):
    policy.backup_max_age_h, policy.drill_max_age_h = 2, 4
    policy.save()
    backup(policy, 3, verified=True)

    alerts.evaluate([policy.target])

    opened = open_alerts(policy.target)
    assert "backup_age:demo" in opened and "verified_backup_age:demo" not in opened
    assert "younger than 2 h" in opened["backup_age:demo"].message


def test_it_ignores_failed_backups_for_the_backup_age(policy):
    Backup.objects.create(policy=policy, target=policy.target, database="demo", state=Backup.State.FAILED,
                          snapshot_at=timezone.now(), error="pg_dump: connection refused")

    alerts.evaluate([policy.target])

    assert "backup_age:demo" in open_alerts(policy.target)


def scrape() -> dict[tuple[str, tuple], float]:
    body = Client().get("/metrics").content.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples
            if s.name.startswith(("fleet_backup_", "fleet_drill_"))}


def test_it_exports_the_last_verified_backup_rto_rpo_result_and_size_per_database(policy, demo_targets):
    from tenants.models import Tenant

    verified = backup(policy, 5, verified=True, size_bytes=1000)
    DrillRun.objects.create(backup=verified, passed=True, rto_s=42.5, rpo_s=60.0, started_at=timezone.now(),
                            finished_at=timezone.now(), verified_at=timezone.now())
    newest = backup(policy, 1, size_bytes=2000)
    DrillRun.objects.create(backup=newest, passed=False, rpo_s=30.0, started_at=timezone.now(), finished_at=timezone.now(),
                            reason="The backup's files do not match its manifest")
    tenant = Tenant.objects.create(slug="acme", name="Acme", target=policy.target, strategy=Tenant.Strategy.SCHEMA)
    Backup.objects.create(target=policy.target, database="demo", schema="tenant_acme", tenant=tenant,
                          state=Backup.State.DONE, snapshot_at=timezone.now(), size_bytes=77)

    samples = scrape()

    demo = (("database", "demo"), ("target", "demo-primary"), ("tenant_id", ""))
    assert samples[("fleet_backup_last_verified_timestamp_seconds", demo)] == verified.snapshot_at.timestamp()
    assert samples[("fleet_backup_last_bytes", demo)] == 2000
    assert samples[("fleet_drill_last_rto_seconds", demo)] == 42.5  # of the last passing drill
    assert samples[("fleet_drill_last_rpo_seconds", demo)] == 30.0  # of the last drill
    assert samples[("fleet_drill_last_passed", demo)] == 0
    acme = (("database", "demo"), ("target", "demo-primary"), ("tenant_id", str(tenant.pk)))
    assert samples[("fleet_backup_last_bytes", acme)] == 77
    assert ("fleet_backup_last_verified_timestamp_seconds", acme) not in samples


def test_it_alerts_on_a_tenants_policy_by_the_tenants_backups(policy):
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="acme", name="Acme", target=policy.target, strategy=Tenant.Strategy.SCHEMA)
    BackupPolicy.objects.create(target=policy.target, database="demo", tenant=tenant)
    backup(policy, 1, verified=True)  # the whole database's: not the tenant's

    alerts.evaluate([policy.target])

    opened = open_alerts(policy.target)
    assert "backup_age:demo" not in opened and "verified_backup_age:demo" not in opened
    assert "there has never been one" in opened["verified_backup_age:tenant:acme"].message
    assert "of tenant acme" in opened["verified_backup_age:tenant:acme"].message

    Backup.objects.create(target=policy.target, database="demo", schema="tenant_acme", tenant=tenant,
                          state=Backup.State.DONE, snapshot_at=timezone.now(), verified_at=timezone.now())
    alerts.evaluate([policy.target])

    assert not {m for m in open_alerts(policy.target) if "tenant:acme" in m}
