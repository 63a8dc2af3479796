"""Physical backups and PITR drills with pgBackRest on the real fleet: demo-primary archives its WAL
into the suite's own repository (stanza demo, under the fleet's temp dir); drills restore into
PITR_DRILL_DIR there, start a server as the service user, and leave nothing behind."""

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from console import engines, jobs
from console.models import Job
from console.pg import heartbeat, pgbackrest, pitr_server
from monitors import alerts
from monitors.drills import physical_metrics, pitr, pitr_alerts
from monitors.drills.physical import PhysicalBackup, PhysicalBackupPolicy, PitrDrillRun
from monitors.models import Alert
from tests import servers
from tests.waiting import wait_until

MARKS_FIRST = "SELECT 1 FROM public.pitr_marks WHERE note = 'first' AND NOT EXISTS " \
              "(SELECT 1 FROM public.pitr_marks WHERE note = 'second')"


@pytest.fixture
def drill_dir(fleet, settings):
    settings.PITR_DRILL_DIR = fleet.env()["PITR_DRILL_DIR"]  # what the suite's worker has
    return Path(settings.PITR_DRILL_DIR)


@pytest.fixture
def policy(demo_targets, fleet, drill_dir):
    return PhysicalBackupPolicy.objects.create(
        target=demo_targets["demo-primary"], stanza="demo", config=fleet.env()["PGBACKREST_CONFIG"],
        retention_full=2, database="demo", smoke_queries=[MARKS_FIRST])


@pytest.fixture
def marks(fleet):
    with servers.superuser(fleet) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.pitr_marks (note text NOT NULL, at timestamptz NOT NULL)")
        conn.execute("TRUNCATE public.pitr_marks")
    yield
    with servers.superuser(fleet) as conn:
        conn.execute("DROP TABLE IF EXISTS public.pitr_marks")


def write(fleet, note: str):
    """A committed row; the commit's own moment (clock_timestamp after COMMIT returned)."""
    with servers.superuser(fleet) as conn:
        conn.execute("INSERT INTO public.pitr_marks VALUES (%s, clock_timestamp())", [note])
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def beat(target):
    with engines.connect(target, credential="change") as conn:
        heartbeat.ensure(conn, reader="fleet_monitor")
        heartbeat.beat(conn, "pitr-test")


def backup_now(run_here, policy, kind="full") -> Job:
    job = run_here(jobs.create("pitr.backup", target=policy.target, params={"type": kind}, send=False))
    assert job.state == Job.State.SUCCEEDED, job.error
    return job


def backup_now_on_worker(policy, kind="full") -> Job:
    job = jobs.wait_for(jobs.create("pitr.backup", target=policy.target, params={"type": kind}).pk, timeout_s=120)
    assert job.state == Job.State.SUCCEEDED, job.error
    return job


def two_writes(fleet, policy):
    """'first', then the moment, then 'second', each committed; the heartbeat beats before the moment."""
    beat(policy.target)
    write(fleet, "first")
    moment = timezone.now()
    write(fleet, "second")
    return moment


def leftovers(drill_dir: Path) -> list[str]:
    return sorted(p.name for p in drill_dir.iterdir()) if drill_dir.is_dir() else []


def drill_servers(drill_dir: Path) -> list[str]:
    """postgres processes started on a drill's data directory (its -D is in a run-<id> folder there)."""
    found = subprocess.run(["pgrep", "-a", "-f", f"{drill_dir}/run-"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "postgres" in line]


def test_it_reads_backups_with_sizes_and_wal_range_from_pgbackrest_info(transactional_db, fleet, policy, run_here):
    job = backup_now(run_here, policy)

    backup = PhysicalBackup.objects.get(job=job)
    info = pgbackrest.info(policy.stanza_ref())
    listed = next(b for b in info.backups if b.label == backup.label)
    assert backup.type == "full" and backup.label.endswith("F")
    assert backup.size_bytes == listed.size_bytes > 0 and 0 < backup.repo_size_bytes == listed.repo_size_bytes
    assert backup.wal_start and backup.wal_stop >= backup.wal_start and backup.stopped_at >= backup.started_at
    assert job.result["label"] == backup.label
    assert info.wal_min <= backup.wal_start <= info.wal_max


def test_it_restores_a_moment_between_two_writes_with_the_first_and_not_the_second(transactional_db, fleet, policy,
                                                                                    marks, run_here, drill_dir):
    backup_now(run_here, policy)
    moment = two_writes(fleet, policy)

    job = run_here(jobs.create("pitr.drill", target=policy.target, params={"target_at": moment.isoformat()}, send=False))

    run = PitrDrillRun.objects.get(job=job)
    assert job.state == Job.State.SUCCEEDED, run.reason
    assert run.passed is True and run.reason == "" and run.differences == []
    assert run.verification["smoke"] == [{"query": MARKS_FIRST, "rows": 1, "error": ""}]
    assert [s["name"] for s in run.steps] == [
        "archive check", "choose backup", "restore", "start server", "recovery", "heartbeat", "promote", "amcheck",
        "smoke queries", "alembic versions"]
    assert run.verification["amcheck"] == ["no problems found"]
    assert run.target_at == moment and run.reached_at is not None
    assert run.heartbeat_at is not None and run.rpo_s == (moment - run.heartbeat_at).total_seconds() >= 0
    assert run.rto_s == (run.verified_at - run.started_at).total_seconds() > 0
    assert run.progress_pct() == 100.0 and run.lsn_replayed
    assert run.removed_at is not None and leftovers(drill_dir) == [] and drill_servers(drill_dir) == []
    exported = {f.name: f.samples for f in physical_metrics.families({policy.target.pk: "demo-primary"})}
    assert [(x.labels, x.value) for x in exported["fleet_pitr_drill_last_rpo_seconds"]] == [
        ({"target": "demo-primary"}, run.rpo_s)]
    assert [x.value for x in exported["fleet_pitr_drill_last_passed"]] == [1]


def test_it_fails_a_drill_over_a_missing_wal_segment_clearly_and_leaves_nothing(transactional_db, fleet, policy, marks,
                                                                              run_here, drill_dir):
    backup = PhysicalBackup.objects.get(job=backup_now(run_here, policy))
    moment = two_writes(fleet, policy)
    pgbackrest.check(policy.stanza_ref())  # the writes' segment is archived
    missing = pitr.next_segment(backup.wal_stop)
    archive = Path(fleet.path("pgbackrest", "repo", "archive", "demo"))
    files = [p for p in archive.rglob(f"{missing}-*")]
    assert files, f"{missing} is not in the repository"
    for path in files:
        path.unlink()

    job = run_here(jobs.create("pitr.drill", target=policy.target, params={"target_at": moment.isoformat()}, send=False))

    run = PitrDrillRun.objects.get(job=job)
    assert job.state == Job.State.FAILED and run.passed is False
    assert f"the repository has no WAL segment {missing}" in run.reason
    assert "Take a new full backup" in run.reason and run.reason in job.error
    assert [s["name"] for s in run.steps][-1] == "recovery"
    assert run.removed_at is not None and leftovers(drill_dir) == [] and drill_servers(drill_dir) == []


def test_it_removes_what_a_drill_left_when_its_worker_died_during_recovery(transactional_db, fleet, policy, marks,
                                                                           run_here, live_worker, drill_dir):
    # Recovery waits an hour before it replays a recent commit: the drill is in "recovery" until killed.
    policy.server_settings = {"recovery_min_apply_delay": "1h"}
    policy.save()
    backup_now(run_here, policy)
    moment = two_writes(fleet, policy)
    job = jobs.create("pitr.drill", target=policy.target, params={"target_at": moment.isoformat()})

    def recovering():
        run = PitrDrillRun.objects.filter(job_id=job.pk).first()
        return run if run and run.steps and run.steps[-1]["name"] == "recovery" and run.port else None

    run = wait_until(recovering, 60, "the drill to wait for recovery")
    live_worker.kill()
    folder = Path(run.directory)
    assert folder.is_dir() and drill_servers(drill_dir)  # no finally ran
    try:
        wait_until(lambda: str(folder) in pitr.sweep()["removed"], 30, "the sweeper to remove it")

        assert leftovers(drill_dir) == [] and drill_servers(drill_dir) == []
        assert PitrDrillRun.objects.get(pk=run.pk).removed_at is not None
    finally:
        # Over for good: neither the next worker nor a reaper resumes it.
        Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED, cancel_requested=True, finished_at=timezone.now())
        pitr.sweep()


def test_it_sweeps_only_folders_of_drills_that_are_over(db, policy, drill_dir):
    alive = Job.objects.create(kind="pitr.drill", state=Job.State.RUNNING, claimed_by="here", heartbeat_at=timezone.now(),
                               attempts=1)
    failed = Job.objects.create(kind="pitr.drill", state=Job.State.FAILED, attempts=1)
    runs = {name: PitrDrillRun.objects.create(target=policy.target, policy=policy, job=job)
            for name, job in (("alive", alive), ("failed", failed))}
    folders = {name: pitr.attempt_directory(run, 1) for name, run in runs.items()}
    for name, run in runs.items():
        pitr_server.DrillServer(folders[name]).prepare(run.pk)
    stranger = drill_dir / "run-999999-a1"  # no marker: someone else's
    stranger.mkdir(parents=True)
    try:
        swept = pitr.sweep()

        assert swept["removed"] == [str(folders["failed"])]
        assert leftovers(drill_dir) == sorted([folders["alive"].name, stranger.name])
        assert PitrDrillRun.objects.get(pk=runs["failed"].pk).removed_at is not None
    finally:
        pitr_server.remove(folders["alive"])
        stranger.rmdir()


def test_it_raises_the_alert_when_archiving_fails_and_closes_it_when_it_works_again(transactional_db, fleet, policy):
    target = policy.target
    PhysicalBackup.objects.create(target=target, policy=policy, label="20260101-000000F", type="full",
                                  started_at=timezone.now(), stopped_at=timezone.now())
    with servers.superuser(fleet, dbname="postgres") as conn:
        good = conn.execute("SELECT current_setting('archive_command')").fetchone()[0]
        failed_before = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]
        conn.execute("ALTER SYSTEM SET archive_command = 'pgbackrest --stanza=no-such-stanza archive-push %p'")
        conn.execute("SELECT pg_reload_conf()")
        try:

            def failed() -> bool:
                # A segment to archive each time: the archiver may have read the new command only after
                # it archived the last one (the reload is asynchronous).
                conn.execute("SELECT txid_current()")
                conn.execute("SELECT pg_switch_wal()")
                return conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] > failed_before

            wait_until(failed, 60, "archive_command to fail", poll_s=1)

            alerts.evaluate([target])

            alert = Alert.open().get(target=target, metric="wal_archive_failing")
            assert alert.level == Alert.Level.CRITICAL and "WAL archiving failing" in alert.message
            last_failed = conn.execute("SELECT last_failed_wal FROM pg_stat_archiver").fetchone()[0]
            assert last_failed in alert.message
        finally:
            conn.execute("ALTER SYSTEM RESET archive_command")
            conn.execute("SELECT pg_reload_conf()")
        wait_until(lambda: conn.execute("SELECT current_setting('archive_command')").fetchone()[0] == good, 30,
                   "the archive_command of the fleet to be back")  # the reload is asynchronous
        wait_until(lambda: conn.execute("SELECT last_archived_time > last_failed_time FROM pg_stat_archiver").fetchone()[0],
                   60, "archiving to work again")

    alerts.evaluate([target])

    assert not Alert.open().filter(target=target, metric="wal_archive_failing").exists()


def test_it_alerts_when_the_newest_physical_backup_is_older_than_the_policy_allows(db, policy):
    policy.max_backup_age_h = 24
    policy.save()
    PhysicalBackup.objects.create(target=policy.target, policy=policy, label="20260101-000000F", type="full",
                                  started_at=timezone.now() - timedelta(hours=30),
                                  stopped_at=timezone.now() - timedelta(hours=30))

    found = pitr_alerts.wanted(policy.target, timezone.now())

    level, value, threshold, message = found["physical_backup_age_h"]
    assert level == "critical" and round(value) == 30 and threshold == 24
    assert "20260101-000000F" in message and "the policy allows 24 h" in message


def test_it_refuses_settings_the_drill_owns_and_names_that_are_not_settings(db, policy):
    from django.core.exceptions import ValidationError

    for bad in ({"archive_mode": "on"}, {"port": "5432"}, {"shared_buffers; DROP": "1"}):
        policy.server_settings = bad
        with pytest.raises(ValidationError):
            policy.full_clean()


def test_it_starts_what_the_schedule_says_once(db, policy):
    policy.full_every_hours, policy.diff_every_hours, policy.drill_every_hours = 168, 24, 24
    policy.save()
    now = timezone.now()

    first = pitr.schedule_due(now)
    again = pitr.schedule_due(now + timedelta(hours=1))
    while_the_full_runs = pitr.schedule_due(now + timedelta(hours=25))
    Job.objects.filter(pk__in=first).update(state=Job.State.SUCCEEDED)
    next_day = pitr.schedule_due(now + timedelta(hours=25))

    kinds = [(Job.objects.get(pk=i).kind, Job.objects.get(pk=i).params.get("type")) for i in first]
    assert kinds == [("pitr.backup", "full"), ("pitr.drill", None)]
    assert again == []
    # pgBackRest backs a stanza up once at a time: the diff waits for the running full, the drill does not.
    assert [Job.objects.get(pk=i).kind for i in while_the_full_runs] == ["pitr.drill"]
    assert [(Job.objects.get(pk=i).kind, Job.objects.get(pk=i).params.get("type")) for i in next_day] == [
        ("pitr.backup", "diff")]


def test_it_keeps_pgbackrest_arguments_a_list_and_runs_it_as_the_service_user(settings):
    stanza = pgbackrest.Stanza(config="/etc/pgbackrest.conf", name="demo")
    args = pgbackrest.command(stanza, "backup", "--type=full")
    if os.geteuid() == 0:
        assert args[:4] == ["runuser", "-u", settings.PITR_SERVICE_USER, "--"]
    assert args[-4:] == ["--config=/etc/pgbackrest.conf", "--stanza=demo", "--type=full", "backup"]
    with pytest.raises(ValueError):
        pgbackrest.Stanza(config="/etc/pgbackrest.conf", name="demo; rm -rf /")


def test_it_runs_no_smoke_query_that_calls_a_function_which_can_do_more_than_read(transactional_db, fleet, policy,
                                                                                   marks, run_here, drill_dir):
    policy.smoke_queries = [MARKS_FIRST, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"]
    policy.save()
    backup_now(run_here, policy)
    moment = two_writes(fleet, policy)

    job = run_here(jobs.create("pitr.drill", target=policy.target, params={"target_at": moment.isoformat()}, send=False))

    run = PitrDrillRun.objects.get(job=job)
    assert job.state == Job.State.FAILED and run.passed is False
    assert run.verification["smoke"][0]["rows"] == 1
    refused = run.verification["smoke"][1]
    assert refused["rows"] is None and "calls pg_terminate_backend, which can do more than read" in refused["error"]
    assert "smoke query" in run.reason and leftovers(drill_dir) == []


def test_it_says_a_configuration_pgbackrest_cannot_parse_without_the_lines_it_quotes():
    output = "P00  ERROR: [029]: key/value found outside of section at line 1: 127.0.0.1:5432:*:fleet_owner:Secret-9\n"

    assert pgbackrest.said(output) == "the file is not a pgBackRest configuration"
    assert pgbackrest.said("P00  ERROR: [055]: unable to open missing file '/x.conf' for read") == (
        "P00  ERROR: [055]: unable to open missing file '/x.conf' for read")


def test_it_refuses_pgbackrest_with_a_configuration_or_user_not_allowed(settings):
    settings.PITR_PGBACKREST_CONFIGS, settings.PITR_RUN_AS_USERS = ["/etc/pgbackrest/pgbackrest.conf"], ["postgres"]

    assert pgbackrest.refusal(pgbackrest.Stanza(config="/etc/pgbackrest/pgbackrest.conf", name="demo")) == ""
    assert pgbackrest.refusal(pgbackrest.Stanza(config="/etc/pgbackrest/pgbackrest.conf", name="demo", run_as="postgres")) == ""
    for stanza in (pgbackrest.Stanza(config="/proc/self/environ", name="demo"),
                   pgbackrest.Stanza(config="/etc/pgbackrest/pgbackrest.conf", name="demo", run_as="root"),
                   pgbackrest.Stanza(config="/etc/pgbackrest/pgbackrest.conf", name="demo", run_as="www-data")):
        assert pgbackrest.refusal(stanza)
        with pytest.raises(pgbackrest.PgBackRestFailed):
            pgbackrest.info(stanza)


def test_it_lets_the_drills_server_take_only_resource_settings_with_values_of_their_kind():
    assert pitr_server.check_settings({"shared_buffers": "64MB", "jit": "off", "recovery_min_apply_delay": "1h",
                                       "max_parallel_workers": "2"}) == {
        "shared_buffers": "64MB", "jit": "off", "recovery_min_apply_delay": "1h", "max_parallel_workers": "2"}
    for bad in ({"recovery_end_command": "touch /tmp/x"}, {"shared_preload_libraries": "x"}, {"include": "/tmp/x"},
                {"shared_buffers": "64MB'; x"}, {"jit": "maybe"}, {"max_connections": "-1"}):
        with pytest.raises(ValueError):
            pitr_server.check_settings(bad)
