"""Backups and restore drills on the real fleet: demo-primary's demo database (its pgbench tables)
backed up, restored into demo-scratch, verified against the manifest, the scratch database gone."""

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from console import jobs
from console.models import Job
from console.pg import backup as pg_backup
from monitors.drills import backups, restores
from monitors.drills.models import Backup, BackupPolicy, DrillRun
from tests import servers
from tests.waiting import wait_for_backend, wait_until


@pytest.fixture(scope="module")
def amcheck_on_scratch(fleet):
    """What docs/deployment.md asks of a scratch server's superuser: amcheck in template1, its
    functions executable by the change login, so every drill database has them."""
    with servers.superuser(fleet, "scratch", "template1") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        conn.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO fleet_owner")
    yield
    # Dozens of dumps' catalog queries would crowd the statements other tests look for.
    with servers.superuser(fleet, "primary", "demo") as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


@pytest.fixture
def policy(demo_targets, tmp_path, amcheck_on_scratch):
    return BackupPolicy.objects.create(
        target=demo_targets["demo-primary"], database="demo", keep_count=1, destination=str(tmp_path),
        scratch=demo_targets["demo-scratch"], smoke_queries=["SELECT aid FROM pgbench_accounts LIMIT 1"],
    )


def drill_databases(fleet) -> list[str]:
    with servers.superuser(fleet, "scratch", "postgres") as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'fleet\\_drill\\_%'")]


def true_counts(fleet) -> dict[str, int]:
    with servers.superuser(fleet, "primary", "demo") as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {f"public.{t}": conn.execute(f'SELECT count(*) FROM public."{t}"').fetchone()[0] for t in tables}


def backup_now(run_here, policy) -> Backup:
    job = run_here(jobs.create("drills.backup", target=policy.target, params={"database": "demo"}, send=False))
    assert job.state == Job.State.SUCCEEDED, job.error
    return Backup.objects.get(job=job)


def drill_now(run_here, backup, **params) -> tuple[Job, DrillRun]:
    job = run_here(jobs.create("drills.drill", target=backup.target, params={"backup_id": backup.pk, **params}, send=False))
    return job, DrillRun.objects.get(job=job)


def test_it_backs_up_with_exact_counts_and_checksums_in_the_manifest(transactional_db, fleet, policy, run_here):
    backup = backup_now(run_here, policy)

    manifest = backup.manifest
    counts = {f"{t['schema']}.{t['table']}": t["rows"] for t in manifest["tables"]}
    # Every table of the database is in it; other tests may have left schemas of their own there.
    assert {name: rows for name, rows in counts.items() if name.startswith("public.")} == true_counts(fleet)
    assert counts["public.pgbench_accounts"] == 100000
    directory = Path(backup.path)
    assert "toc.dat" in manifest["files"]
    assert set(manifest["files"]) == {p.name for p in directory.iterdir()}
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == entry["sha256"]
    assert backup.size_bytes == sum(p.stat().st_size for p in directory.iterdir())
    assert backup.snapshot_at is not None and backup.duration_s > 0 and backup.verified_at is None


def test_it_passes_a_drill_with_rto_and_rpo_and_drops_the_scratch_database(transactional_db, fleet, policy, run_here):
    backup = backup_now(run_here, policy)

    job, run = drill_now(run_here, backup)

    assert job.state == Job.State.SUCCEEDED, job.error
    assert run.passed is True and run.reason == "" and run.differences == []
    assert [s["name"] for s in run.steps] == [
        "checksums", "create database", "extensions", "restore", "compare tables", "smoke queries", "amcheck"]
    assert all(s["seconds"] is not None for s in run.steps)
    assert run.rto_s == (run.verified_at - run.started_at).total_seconds() and run.rto_s > 0
    assert run.rpo_s == (run.started_at - backup.snapshot_at).total_seconds() and run.rpo_s > 0
    assert run.bytes_restored > 0
    assert {t["table"]: t["rows"] == t["expected"] for t in run.verification["tables"]}["pgbench_accounts"]
    assert run.verification["smoke"][0]["rows"] == 1
    assert run.verification["amcheck"] == ["no problems found"]
    backup.refresh_from_db()
    assert backup.verified_at == run.verified_at
    assert run.dropped_at is not None and drill_databases(fleet) == []


def test_it_fails_a_tampered_backup_with_a_clear_reason_and_leaves_nothing(transactional_db, fleet, policy, run_here):
    backup = backup_now(run_here, policy)
    data_file = next(p for p in sorted(Path(backup.path).iterdir()) if p.name != "toc.dat")
    with open(data_file, "ab") as handle:
        handle.write(b"tampered")

    job, run = drill_now(run_here, backup)

    assert job.state == Job.State.FAILED
    assert run.passed is False
    assert "do not match its manifest" in run.reason and data_file.name in run.reason
    assert [d["object"] for d in run.differences] == [data_file.name]
    assert drill_databases(fleet) == [] and run.dropped_at is not None
    backup.refresh_from_db()
    assert backup.verified_at is None


def test_it_lists_every_count_that_differs_from_the_manifest(transactional_db, fleet, policy, run_here):
    backup = backup_now(run_here, policy)
    for table in backup.manifest["tables"]:
        if table["table"] in ("pgbench_branches", "pgbench_tellers"):
            table["rows"] += 1
    backup.save(update_fields=["manifest"])

    job, run = drill_now(run_here, backup)

    assert job.state == Job.State.FAILED and run.passed is False
    assert [(d["check"], d["object"]) for d in run.differences] == [
        ("rows", "public.pgbench_branches"), ("rows", "public.pgbench_tellers")]
    assert run.differences[0]["expected"] == run.differences[0]["found"] + 1
    assert "public.pgbench_branches" in run.reason and "1 more differences" in run.reason
    assert drill_databases(fleet) == []


def test_it_compares_with_the_manifest_not_with_the_primary_as_it_is_now(transactional_db, fleet, policy, run_here):
    backup = backup_now(run_here, policy)
    with servers.superuser(fleet, "primary", "demo") as conn:
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 5, now())")
    try:
        job, run = drill_now(run_here, backup)
    finally:
        with servers.superuser(fleet, "primary", "demo") as conn:
            conn.execute("DELETE FROM pgbench_history WHERE delta = 5 AND aid = 1")

    assert job.state == Job.State.SUCCEEDED, run.reason
    history = next(t for t in run.verification["tables"] if t["table"] == "pgbench_history")
    assert history["rows"] == history["expected"] == 0


def test_it_restores_the_latest_backup_by_default_and_records_the_alembic_version(transactional_db, fleet, policy, run_here):
    with servers.superuser(fleet, "primary", "demo") as conn:
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('abc123')")
        conn.execute("ALTER TABLE public.alembic_version OWNER TO fleet_owner")
    try:
        older = backup_now(run_here, policy)
        latest = backup_now(run_here, policy)
    finally:
        with servers.superuser(fleet, "primary", "demo") as conn:
            conn.execute("DROP TABLE public.alembic_version")

    job = run_here(jobs.create("drills.drill", target=policy.target, params={"database": "demo"}, send=False))

    run = DrillRun.objects.get(job=job)
    assert job.state == Job.State.SUCCEEDED, run.reason
    assert run.backup == latest != older
    # Tenant schemas other tests left in the demo database have versions of their own.
    assert latest.manifest["alembic"]["public"] == ["abc123"]
    assert run.verification["alembic"]["public"] == ["abc123"]


def test_it_drops_the_scratch_database_when_the_drill_is_cancelled(transactional_db, fleet, policy, run_here,
                                                                   live_worker):
    policy.smoke_queries = ["SELECT pg_sleep(3)"]
    policy.save()
    backup = backup_now(run_here, policy)
    job = jobs.create("drills.drill", target=policy.target, params={"backup_id": backup.pk})
    with servers.superuser(fleet, "scratch", "postgres") as conn:
        wait_for_backend(conn, "query LIKE 'SELECT pg_sleep(3)%%'", what="the drill's smoke query", timeout_s=60)
    jobs.request_cancel(Job.objects.get(pk=job.pk))

    job = jobs.wait_for(job.pk)

    run = DrillRun.objects.get(job=job)
    assert job.state == Job.State.CANCELLED
    assert run.passed is False and "Cancelled" in run.reason
    assert drill_databases(fleet) == [] and run.dropped_at is not None


def test_it_backs_up_and_drills_on_the_worker(transactional_db, fleet, policy, live_worker, client_as):
    job = jobs.create("drills.backup_and_drill", target=policy.target, params={"database": "demo"})

    job = jobs.wait_for(job.pk, timeout_s=120)

    assert job.state == Job.State.SUCCEEDED, job.error
    run = DrillRun.objects.get(job=job)
    assert run.passed is True and run.backup.job_id == job.pk and run.backup.verified_at is not None
    assert job.result["drill_run_id"] == run.pk and job.result["backup_id"] == run.backup_id
    assert drill_databases(fleet) == []
    # The job's page links to the run it made (and the backup).
    page = client_as("viewer").get(job.get_absolute_url()).content.decode()
    assert f'href="{reverse("drill-run-detail", args=[run.pk])}">Drill run #{run.pk}</a>' in page
    assert f"Backup #{run.backup_id} of demo" in page


def test_it_sweeps_drill_databases_of_finished_or_dead_jobs_only(db, fleet, demo_targets):
    scratch = demo_targets["demo-scratch"]
    dead = Job.objects.create(kind="drills.drill", state=Job.State.RUNNING, claimed_by="gone",
                              heartbeat_at=timezone.now() - timedelta(hours=1))
    alive = Job.objects.create(kind="drills.drill", state=Job.State.RUNNING, claimed_by="here", heartbeat_at=timezone.now())
    failed = Job.objects.create(kind="drills.drill", state=Job.State.FAILED)
    runs = {name: DrillRun.objects.create(scratch=scratch, job=job) for name, job in
            (("dead", dead), ("alive", alive), ("failed", failed))}
    for run in runs.values():
        pg_backup.create_scratch_database(scratch, pg_backup.drill_database_name(run.pk), run.pk)
    with servers.superuser(fleet, "scratch", "postgres") as conn:
        conn.execute("CREATE DATABASE fleet_drill_999999")  # not marked: someone else's

    try:
        swept = restores.sweep()

        alive_db = pg_backup.drill_database_name(runs["alive"].pk)
        assert sorted(drill_databases(fleet)) == sorted([alive_db, "fleet_drill_999999"])
        assert sorted(swept["dropped"]) == sorted(
            f"demo-scratch/{pg_backup.drill_database_name(runs[n].pk)}" for n in ("dead", "failed"))
        assert DrillRun.objects.get(pk=runs["failed"].pk).dropped_at is not None
    finally:
        pg_backup.drop_scratch_database(scratch, pg_backup.drill_database_name(runs["alive"].pk))
        with servers.superuser(fleet, "scratch", "postgres") as conn:
            conn.execute("DROP DATABASE IF EXISTS fleet_drill_999999")


def _backup(policy, hours_ago, verified=False):
    snapshot_at = timezone.now() - timedelta(hours=hours_ago)
    return Backup.objects.create(policy=policy, target=policy.target, database="demo", state=Backup.State.DONE,
                                 snapshot_at=snapshot_at, verified_at=snapshot_at if verified else None)


def test_it_keeps_at_least_one_verified_backup_under_retention(db, policy):
    oldest_verified = _backup(policy, 30, verified=True)
    unverified = [_backup(policy, 20), _backup(policy, 10)]

    assert backups.apply_retention(policy) == []  # keep_count 1, but nothing newer is verified
    assert Backup.restorable().count() == 3

    newer_verified = _backup(policy, 15, verified=True)
    removed = backups.apply_retention(policy)

    assert sorted(removed) == sorted([oldest_verified.pk, unverified[0].pk])
    left = set(Backup.restorable().values_list("pk", flat=True))
    assert left == {newer_verified.pk, unverified[1].pk}
    assert Backup.objects.get(pk=oldest_verified.pk).state == Backup.State.REMOVED


def test_it_removes_nothing_before_any_backup_is_verified(db, policy):
    for hours in (3, 2, 1):
        _backup(policy, hours)

    assert backups.apply_retention(policy) == []


def test_it_shows_drill_results_and_starts_a_backup_and_drill_for_operators(transactional_db, fleet, policy, run_here,
                                                                            client_as):
    backup = backup_now(run_here, policy)
    with open(next(p for p in sorted(Path(backup.path).iterdir()) if p.name != "toc.dat"), "ab") as handle:
        handle.write(b"tampered")
    drill_now(run_here, backup)

    page = client_as("viewer").get("/drills/").content.decode()

    assert "do not match its manifest" in page and "1 difference" in page
    assert f"#{backup.pk}" in page and "Backup and drill now" not in page
    operator = client_as("operator")
    assert "Backup and drill now" in operator.get("/drills/").content.decode()
    response = operator.post("/drills/run/", {"target": policy.target.pk})
    job = Job.objects.get(kind="drills.backup_and_drill")
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert job.params == {"database": "demo"} and job.target == policy.target
    job = run_here(job)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert DrillRun.objects.get(job=job).passed is True


def test_it_fails_the_drill_when_pg_amcheck_cannot_check_the_copy(transactional_db, fleet, policy, run_here):
    backup = backup_now(run_here, policy)
    with servers.superuser(fleet, "scratch", "template1") as conn:
        conn.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM fleet_owner")
    try:
        job, run = drill_now(run_here, backup)
    finally:
        with servers.superuser(fleet, "scratch", "template1") as conn:
            conn.execute("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO fleet_owner")

    assert job.state == Job.State.FAILED and run.passed is False
    assert run.reason.startswith("pg_amcheck --heapallindexed found problems") and "permission denied" in run.reason and "template1" in run.reason
    assert {d["check"] for d in run.differences} == {"amcheck"}
    assert drill_databases(fleet) == []


def test_it_starts_a_due_policy_once_every_n_hours(db, policy):
    policy.every_hours = 6
    policy.save()
    now = timezone.now()

    first = backups.schedule_due(now)
    again = backups.schedule_due(now + timedelta(hours=1))
    while_the_first_runs = backups.schedule_due(now + timedelta(hours=6))  # one backup of a database at a time
    Job.objects.filter(pk__in=first).update(state=Job.State.SUCCEEDED, finished_at=now)
    later = backups.schedule_due(now + timedelta(hours=12))

    assert len(first) == 1 and again == [] and while_the_first_runs == [] and len(later) == 1
    job = Job.objects.get(pk=first[0])
    assert job.kind == "drills.backup_and_drill" and job.params == {"database": "demo"} and job.target == policy.target


def test_it_starts_a_policy_when_its_cron_expression_says(db, policy):
    policy.cron = "0 3 1 * *"  # 03:00 on the first of every month
    policy.scheduled_at = timezone.now().replace(day=1, hour=3, minute=0, second=0, microsecond=0) - timedelta(days=40)
    policy.scheduled_at = policy.scheduled_at.replace(day=1)
    policy.save()
    next_run = (policy.scheduled_at + timedelta(days=32)).replace(day=1)

    assert policy.is_due(next_run - timedelta(minutes=1)) is False
    assert policy.is_due(next_run + timedelta(seconds=30)) is True
    assert policy.is_due(policy.scheduled_at + timedelta(days=8)) is False  # a week of Mondays is not the 1st


def test_it_refuses_a_cron_expression_that_is_not_one(db, policy):
    from django.core.exceptions import ValidationError

    policy.cron = "every day"
    with pytest.raises(ValidationError, match="five fields"):
        policy.full_clean()


def test_it_sweeps_the_database_a_drill_left_when_its_worker_died(transactional_db, fleet, policy, run_here, live_worker):
    policy.smoke_queries = ["SELECT pg_sleep(120)"]
    policy.save()
    backup = backup_now(run_here, policy)
    job = jobs.create("drills.drill", target=policy.target, params={"backup_id": backup.pk})
    with servers.superuser(fleet, "scratch", "postgres") as conn:
        wait_for_backend(conn, "query LIKE 'SELECT pg_sleep(120)%%'", what="the drill's smoke query", timeout_s=60)
    live_worker.kill()
    name = DrillRun.objects.get(job_id=job.pk).database_name
    assert name in drill_databases(fleet)  # no finally ran
    try:
        wait_until(lambda: f"demo-scratch/{name}" in restores.sweep()["dropped"], 30, "the sweeper to drop it")

        assert drill_databases(fleet) == []
        assert DrillRun.objects.get(job_id=job.pk).dropped_at is not None
    finally:
        # Over for good: neither the next worker nor a reaper resumes it.
        Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED, cancel_requested=True, finished_at=timezone.now())


def test_it_backs_up_and_drills_one_schema_per_tenant_tenant(transactional_db, fleet, demo_targets, amcheck_on_scratch,
                                                             run_here, settings, tmp_path):
    from tenants.models import Tenant

    settings.BACKUP_DIR = str(tmp_path)
    primary = demo_targets["demo-primary"]
    tenant = Tenant.objects.create(slug="drill", name="Drill", target=primary, strategy=Tenant.Strategy.SCHEMA)
    with servers.application(fleet, "primary", "demo") as conn:
        conn.execute("CREATE SCHEMA tenant_drill")
        conn.execute("CREATE TABLE tenant_drill.items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO tenant_drill.items SELECT generate_series(1, 3)")
        conn.execute("CREATE TABLE tenant_drill.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO tenant_drill.alembic_version VALUES ('rev1')")
    try:
        backup_job = run_here(jobs.create("drills.backup", target=primary, tenant=tenant, send=False))
        job = run_here(jobs.create("drills.drill", target=primary, tenant=tenant, send=False))
    finally:
        with servers.application(fleet, "primary", "demo") as conn:
            conn.execute("DROP SCHEMA tenant_drill CASCADE")

    backup = Backup.objects.get(job=backup_job)
    assert backup.tenant == tenant and backup.schema == "tenant_drill"
    assert backup.manifest["tables"] == [{"schema": "tenant_drill", "table": "alembic_version", "rows": 1},
                                         {"schema": "tenant_drill", "table": "items", "rows": 3}]
    run = DrillRun.objects.get(job=job)
    assert job.state == Job.State.SUCCEEDED, run.reason
    assert run.backup == backup and run.passed is True
    assert run.verification["alembic"] == {"tenant_drill": ["rev1"]}
    assert drill_databases(fleet) == []


def test_it_keeps_the_backups_of_the_last_n_days_and_removes_older_ones_once_a_newer_is_verified(db, policy):
    policy.keep_count, policy.keep_days = None, 7
    policy.save()
    old_verified, old_unverified = _backup(policy, 24 * 10, verified=True), _backup(policy, 24 * 8)
    recent_verified, recent = _backup(policy, 24, verified=True), _backup(policy, 1)

    removed = backups.apply_retention(policy)

    assert sorted(removed) == sorted([old_verified.pk, old_unverified.pk])
    assert set(Backup.restorable().values_list("pk", flat=True)) == {recent_verified.pk, recent.pk}


def test_it_drills_a_chosen_older_backup_from_its_button(transactional_db, fleet, policy, run_here, client_as):
    older = backup_now(run_here, policy)
    latest = backup_now(run_here, policy)
    page = client_as("viewer").get(f"/drills/policies/{policy.pk}/").content.decode()
    assert "Drill this backup" not in page
    operator = client_as("operator")
    assert f"/drills/backups/{older.pk}/drill/" in operator.get("/drills/backups/").content.decode()

    response = operator.post(f"/drills/backups/{older.pk}/drill/")

    job = Job.objects.get(kind="drills.drill")
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    job = run_here(job)
    run = DrillRun.objects.get(job=job)
    assert job.state == Job.State.SUCCEEDED, run.reason
    assert run.backup == older != latest and run.passed is True
    Backup.objects.filter(pk=latest.pk).update(state=Backup.State.FAILED)
    refused = operator.post(f"/drills/backups/{latest.pk}/drill/")
    assert refused.status_code == 302 and Job.objects.filter(kind="drills.drill").count() == 1


def test_it_runs_no_smoke_query_that_calls_a_function_which_can_change_something(transactional_db, fleet, policy, run_here):
    # Saved before the form refused such queries (or written straight into the database).
    policy.smoke_queries = ["SELECT set_config('search_path', 'pg_temp', false)", "SELECT count(*) FROM pgbench_branches"]
    policy.save(update_fields=["smoke_queries"])
    backup = backup_now(run_here, policy)

    job, run = drill_now(run_here, backup)

    assert run.passed is False
    smoke = {r["query"]: r for r in run.verification["smoke"]}
    assert "calls set_config, which can do more than read" in smoke[policy.smoke_queries[0]]["error"]
    assert smoke[policy.smoke_queries[0]]["rows"] is None and smoke[policy.smoke_queries[1]]["rows"] == 1
    assert drill_databases(fleet) == []


def test_it_counts_a_backup_and_drill_started_by_hand_as_the_policys_run(db, policy, client_as):
    policy.every_hours = 6
    policy.save()
    assert policy.is_due(timezone.now())

    client_as("operator").post(reverse("drill-run"), {"policy": policy.pk})

    policy.refresh_from_db()
    assert not policy.is_due(timezone.now()) and policy.is_due(timezone.now() + timedelta(hours=6, minutes=1))
    assert backups.schedule_due(timezone.now() + timedelta(hours=7)) == []  # the hand-started one is still under way
    assert Job.objects.filter(kind="drills.backup_and_drill").count() == 1
