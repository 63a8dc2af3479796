"""Drills beside other work on the real fleet: two drills at once each restore into a database of
their own and both pass; a backup and drill of the demo database taken while pgbench writes to it
passes with the exact counts of the backup's snapshot, not of the tables as they are by then."""

import os
import subprocess
import threading

from django.db import connection

from console import jobs
from console.models import Job
from monitors.drills.models import Backup, DrillRun
from scripts.localfleet import PG_BIN
from tests import servers
from tests.monitors.test_drills import amcheck_on_scratch, backup_now, drill_databases, policy  # noqa: F401  (fixtures)
from tests.waiting import wait_for_backend, wait_until


def _execute(job_id: int) -> None:
    try:
        jobs.execute(job_id)
    finally:
        connection.close()  # this thread's own


def _sleeping_databases(conn) -> set[str]:
    return {row[0] for row in conn.execute("SELECT datname FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3)%%'")}


def test_it_runs_two_drills_at_once_each_in_its_own_database(transactional_db, fleet, policy, run_here):  # noqa: F811
    policy.smoke_queries = ["SELECT pg_sleep(3)"]
    policy.save()
    backups = [backup_now(run_here, policy), backup_now(run_here, policy)]
    drill_jobs = [jobs.create("drills.drill", target=policy.target, params={"backup_id": b.pk}, send=False) for b in backups]
    threads = [threading.Thread(target=_execute, args=(job.pk,)) for job in drill_jobs]

    for thread in threads:
        thread.start()
    with servers.superuser(fleet, "scratch", "postgres") as conn:
        both = wait_until(lambda: found if len(found := _sleeping_databases(conn)) == 2 else None, 60,
                          "both drills' smoke queries running at the same time")
    for thread in threads:
        thread.join(timeout=120)

    runs = [DrillRun.objects.get(job_id=job.pk) for job in drill_jobs]
    assert both == {run.database_name for run in runs} and len(both) == 2
    assert [Job.objects.get(pk=job.pk).state for job in drill_jobs] == [Job.State.SUCCEEDED] * 2, [r.reason for r in runs]
    assert [run.backup_id for run in runs] == [b.pk for b in backups] and all(run.passed for run in runs)
    assert all(Backup.objects.get(pk=b.pk).verified_at is not None for b in backups)
    assert drill_databases(fleet) == []


def _history_rows(fleet) -> int:
    with servers.superuser(fleet, "primary", "demo") as conn:
        return conn.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]


def test_it_drills_the_demo_database_with_exact_counts_while_pgbench_writes(transactional_db, fleet, policy, run_here):  # noqa: F811
    with servers.superuser(fleet, "primary", "demo") as conn:
        started_at = conn.execute("SELECT localtimestamp").fetchone()[0]  # pgbench_history.mtime's clock
    bench = subprocess.Popen(
        [str(PG_BIN / "pgbench"), "-n", "-c", "2", "-T", "300", "-h", "127.0.0.1", "-p", str(fleet.port("primary")),
         "-U", "postgres", "demo"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PGPASSWORD": fleet.superuser_password})
    try:
        with servers.superuser(fleet, "primary", "demo") as conn:
            wait_for_backend(conn, "application_name = 'pgbench'", what="pgbench connected")
        wait_until(lambda: _history_rows(fleet) > 0, 30, "pgbench's first transactions")

        job = run_here(jobs.create("drills.backup_and_drill", target=policy.target, params={"database": "demo"}, send=False))

        run = DrillRun.objects.get(job=job)
        snapshot_rows = {t["table"]: t["rows"] for t in run.backup.manifest["tables"] if t["schema"] == "public"}
        wait_until(lambda: _history_rows(fleet) > snapshot_rows["pgbench_history"], 30, "pgbench to write past the snapshot")
    finally:
        bench.terminate()
        bench.wait(timeout=30)
        with servers.superuser(fleet, "primary", "demo") as conn:
            conn.execute("DELETE FROM pgbench_history WHERE mtime >= %s", [started_at])

    assert job.state == Job.State.SUCCEEDED, run.reason
    assert run.passed is True and run.differences == []
    restored = {t["table"]: (t["rows"], t["expected"]) for t in run.verification["tables"] if t["schema"] == "public"}
    assert restored == {name: (rows, rows) for name, rows in snapshot_rows.items()}
    assert snapshot_rows["pgbench_accounts"] == 100000 and snapshot_rows["pgbench_history"] > 0
    assert drill_databases(fleet) == []
