"""PITR drills with pgBackRest on a database of more than 1 GB (pgbench scale 70) of the bench's
own primary, which archives its WAL into the fleet's repository (stanza demo).

- `pitr_drill_rto_vs_raw_ratio`: the console's `pitr.drill` job (run in this process, as a worker
  runs it) to a moment, RTO = drill start to verified, against the same work by hand in the same
  run: `pgbackrest restore --type=time` of the same backup set to the same moment with the same
  --process-max, pg_ctl start, waiting for recovery to pause at the target, promote, pg_amcheck
  --heapallindexed --install-missing --all with the same --jobs. By hand runs before and after the
  drill (page cache alike for both); the ratio is against their mean. Goal <= 1.15.
- `pitr_rpo_s`: the drill's RPO (the moment minus the newest heartbeat row replayed) for a moment
  in the middle of a pgbench run, with the sampler's heartbeat written every
  MONITOR_FAST_INTERVAL_S as the fast sampler does (samplers.write_heartbeat). Goal: at most one
  heartbeat interval.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from django.conf import settings
from django.utils import timezone

from console import jobs
from console.models import Target
from console.pg import pgbackrest, pitr_server
from monitors import samplers
from monitors.drills import pitr  # noqa: F401  (registers the pitr.drill runner)
from monitors.drills.physical import PhysicalBackupPolicy, PitrDrillRun

SCALE = 70  # pgbench accounts: 7,000,000 rows, about 1.05 GB with its index
PGBENCH_S = 24
MOMENT_AT_S = 13.7  # into the pgbench run
ROUNDS = 2


def _pgbench(ctx, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": ctx.password}
    return subprocess.run([str(Path(settings.PITR_PG_BIN) / "pgbench"), "-h", ctx.host, "-p", str(ctx.port("primary")),
                           "-U", ctx.superuser, *args, "demo"], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=True)


def _database_bytes(ctx) -> int:
    with psycopg.connect(ctx.conninfo("primary", "demo"), autocommit=True) as conn:
        return conn.execute("SELECT pg_database_size('demo')").fetchone()[0]


class Heartbeat(threading.Thread):
    """The fast sampler's heartbeat, every MONITOR_FAST_INTERVAL_S, until stopped."""

    def __init__(self, target: Target):
        super().__init__(daemon=True)
        self.target, self.stop = target, threading.Event()

    def run(self):
        from django.db import connection

        try:
            while True:
                samplers.write_heartbeat(self.target)
                if self.stop.wait(settings.MONITOR_FAST_INTERVAL_S):
                    break
        finally:
            connection.close()


def _by_hand_s(ctx, stanza: pgbackrest.Stanza, label: str, moment, root: Path) -> float:
    """pgbackrest restore + recovery to the moment + pg_amcheck, as an operator would run them."""
    server = pitr_server.DrillServer(root)
    server.prepare(0)
    started = time.perf_counter()
    pgbackrest.restore(stanza, server.data_dir, moment, backup_label=label)
    restored = time.perf_counter()
    server.start()
    try:
        while not server.recovery_state()["paused"]:
            if not server.alive():
                raise RuntimeError(f"by hand: the server stopped: {server.log_tail()}")
            time.sleep(0.25)
        recovered = time.perf_counter()
        server.promote()
        problems = pitr_server.pg_amcheck(server, jobs=settings.BACKUP_JOBS, timeout_s=3600)
        elapsed = time.perf_counter() - started
        ctx.log(f"by hand: restore {restored - started:.1f} s, recovery {recovered - restored:.1f} s, "
                f"promote and amcheck {time.perf_counter() - recovered:.1f} s")
        if problems:
            raise RuntimeError(f"by hand: pg_amcheck found problems: {problems[:3]}")
    finally:
        pitr_server.remove(root)
    return elapsed


def _drill(ctx, target: Target, moment) -> PitrDrillRun:
    """The console's drill, run here as a worker runs it."""
    job = jobs.create("pitr.drill", target=target, params={"target_at": moment.isoformat()}, send=False)
    jobs.execute(job.pk)
    drill = PitrDrillRun.objects.get(job_id=job.pk)
    if not drill.passed:
        raise RuntimeError(f"the drill did not pass: {drill.reason}")
    ctx.log("drill steps: " + ", ".join(f"{s['name']} {s['seconds']:.1f} s" for s in drill.steps))
    return drill


def run(ctx) -> dict[str, float]:
    target = Target.objects.create(
        name="bench-pitr", role=Target.Role.PRIMARY, host=ctx.host, port=ctx.port("primary"), dbname="demo",
        username=ctx.monitor_user, password_env=ctx.monitor_password_env,
        change_username=ctx.superuser, change_password_env=ctx.password_env,
    )
    policy = PhysicalBackupPolicy.objects.create(
        target=target, stanza="demo", config=os.environ["PGBACKREST_CONFIG"], database="demo",
        smoke_queries=["SELECT aid FROM pgbench_accounts LIMIT 1"])
    stanza = policy.stanza_ref()
    try:
        started = time.perf_counter()
        _pgbench(ctx, "-i", "-q", "-s", str(SCALE), timeout_s=1800)
        size = _database_bytes(ctx)
        ctx.log(f"pgbench scale {SCALE}: {size / 2**30:.2f} GB in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        pgbackrest.backup(stanza, "full", retention_full=1)
        ctx.log(f"full backup in {time.perf_counter() - started:.0f} s")

        beat = Heartbeat(target)
        beat.start()
        load = threading.Thread(target=_pgbench, args=(ctx, "-c", "2", "-j", "2", "-T", str(PGBENCH_S), "-n"),
                                kwargs={"timeout_s": PGBENCH_S + 120}, daemon=True)
        load_started = timezone.now()
        load.start()
        load.join()
        beat.stop.set()
        beat.join()
        moment = load_started + timedelta(seconds=MOMENT_AT_S)
        samplers.write_heartbeat(target)  # after the moment: recovery has a commit past it to stop at
        ctx.log(f"pgbench -T {PGBENCH_S} with a heartbeat every {settings.MONITOR_FAST_INTERVAL_S:g} s; "
                f"moment {moment:%H:%M:%S.%f}")

        info = pgbackrest.info(stanza)
        label = info.before(moment).label
        root = Path(settings.PITR_DRILL_DIR) / "by-hand"
        pgbackrest.check(stanza)  # what the drill does first: the WAL up to now archived
        raws, drills = [], []
        for _ in range(ROUNDS):  # interleaved: the machine is shared and noisy
            raws.append(_by_hand_s(ctx, stanza, label, moment, root))
            drills.append(_drill(ctx, target, moment))
        raw_s = statistics.mean(raws)
        rto_s = statistics.mean(d.rto_s for d in drills)
        drill = drills[0]
        ctx.log(f"by hand {[round(r, 1) for r in raws]} s; drill RTO {[round(d.rto_s, 1) for d in drills]} s; "
                f"RPO {drill.rpo_s:.3f} s (heartbeat {drill.heartbeat_at:%H:%M:%S.%f}, "
                f"interval {settings.MONITOR_FAST_INTERVAL_S:g} s)")
        return {
            "pitr_drill_rto_vs_raw_ratio": rto_s / raw_s,
            "pitr_rpo_s": drill.rpo_s,
            "pitr_drill_rto_s": rto_s,
            "pitr_by_hand_s": raw_s,
            "pitr_database_gb": size / 2**30,
        }
    finally:
        shutil.rmtree(Path(settings.PITR_DRILL_DIR) / "by-hand", ignore_errors=True)
        PhysicalBackupPolicy.objects.filter(pk=policy.pk).delete()
        Target.objects.filter(pk=target.pk).delete()
