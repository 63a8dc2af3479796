"""Backups and restore drills of a database of more than 1 GB that the benchmark generates
(`pgbench -i -s 70` on the bench fleet's primary), against the raw tools on the same dump, in the
same run.

- `backup_vs_raw_dump_ratio`: the console's `drills.backup` job (run by `jobs.execute`, what a
  worker does: the exported snapshot held open, exact row counts and versions read in it,
  `pg_dump --snapshot -Fd -j2`, a SHA-256 of every file, the rows recorded) against a raw
  `pg_dump -Fd -j2` of the same database into a fresh directory. Goal <= 1.10.
- `drill_rto_vs_raw_ratio`: a `drills.drill` job's RTO (drill start to verified: checksums, fresh
  scratch database, `pg_restore -j2 --exit-on-error --no-owner`, exact counts compared, Alembic
  versions, `pg_amcheck --heapallindexed -j2`) against a raw `createdb` + `pg_restore -j2` of the
  same backup directory + `pg_amcheck --heapallindexed -j2` of the result on the same scratch
  server. Goal <= 1.15.

Raw and console runs are interleaved (raw first) for ROUNDS rounds, medians compared; both run as
the superuser, BACKUP_JOBS = 2.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import psycopg
from django.conf import settings
from psycopg import sql

from console import engines, jobs
from console.models import Job, Target
from monitors.drills import restores  # noqa: F401  (registers the drill job runners)
from monitors.drills.models import Backup, BackupPolicy, DrillRun

DATABASE = "drillbench"
PGBENCH_SCALE = 70  # about 1.05 GB with its indexes
MIN_BYTES = 1 << 30
ROUNDS = 3  # each about 20 s on the reference machine
PG_BIN = Path(settings.BACKUP_PG_DUMP).parent


def _tool(ctx, server: str, *args: str) -> float:
    env = {**os.environ, "PGPASSWORD": ctx.password}
    started = time.perf_counter()
    result = subprocess.run([*args, "-h", ctx.host, "-p", str(ctx.port(server)), "-U", ctx.superuser], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed_s = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-500:]}")
    return elapsed_s


def _generate(ctx) -> int:
    ctx.ensure_databases("primary", [DATABASE])
    with psycopg.connect(ctx.conninfo("primary", DATABASE)) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    if size < MIN_BYTES:
        ctx.log(f"drills: generating {DATABASE} (pgbench -i -s {PGBENCH_SCALE})")
        seconds = _tool(ctx, "primary", str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(PGBENCH_SCALE), "-I", "dtGvp",
                        DATABASE)
        ctx.log(f"drills: generated in {seconds:.0f} s")
        with psycopg.connect(ctx.conninfo("primary", DATABASE)) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    assert size >= MIN_BYTES, f"{DATABASE} is {size} bytes, less than 1 GB"
    return size


def _raw_dump(ctx, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    return _tool(ctx, "primary", str(PG_BIN / "pg_dump"), "-Fd", "-j2", "-f", str(out), "-d", DATABASE)


def _raw_restore_and_check(ctx, directory: Path, name: str) -> float:
    with psycopg.connect(ctx.conninfo("scratch"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    started = time.perf_counter()
    with psycopg.connect(ctx.conninfo("scratch"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    _tool(ctx, "scratch", str(PG_BIN / "pg_restore"), "-j2", "-d", name, str(directory))
    _tool(ctx, "scratch", str(PG_BIN / "pg_amcheck"), "--heapallindexed", "-j2", "-d", name)
    elapsed_s = time.perf_counter() - started
    with psycopg.connect(ctx.conninfo("scratch"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return elapsed_s


def _console_backup(source: Target) -> tuple[float, Backup]:
    job = jobs.create("drills.backup", target=source, params={"database": DATABASE}, send=False)
    started = time.perf_counter()
    jobs.execute(job.pk)
    elapsed_s = time.perf_counter() - started
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    return elapsed_s, Backup.objects.get(job=job)


def _console_drill(source: Target, backup: Backup) -> DrillRun:
    job = jobs.create("drills.drill", target=source, params={"backup_id": backup.pk}, send=False)
    jobs.execute(job.pk)
    run = DrillRun.objects.get(job=job)
    assert run.passed, run.reason
    return run


def run(ctx) -> dict[str, float]:
    size_bytes = _generate(ctx)
    work = ctx.root / "bench-drills"
    source = Target.objects.create(
        name="bench-drills-source", role=Target.Role.PRIMARY, host=ctx.host, port=ctx.port("primary"), dbname=DATABASE,
        username=ctx.superuser, password_env=ctx.password_env, change_username=ctx.superuser,
        change_password_env=ctx.password_env)
    scratch = Target.objects.create(
        name="bench-drills-scratch", role=Target.Role.SCRATCH, host=ctx.host, port=ctx.port("scratch"),
        dbname="postgres", username=ctx.superuser, password_env=ctx.password_env, change_username=ctx.superuser,
        change_password_env=ctx.password_env)
    BackupPolicy.objects.create(target=source, database=DATABASE, destination=str(work / "console"), scratch=scratch)
    raw_dumps, backups, raw_drills, drills = [], [], [], []
    try:
        for _round in range(ROUNDS):
            raw_dumps.append(_raw_dump(ctx, work / "raw-dump"))
            backup_s, backup = _console_backup(source)
            backups.append(backup_s)
            raw_drills.append(_raw_restore_and_check(ctx, Path(backup.path), "bench_raw_restore"))
            drill = _console_drill(source, backup)
            drills.append(drill.rto_s)
            ctx.log(f"drills: round {_round + 1}: raw dump {raw_dumps[-1]:.1f} s, backup job {backup_s:.1f} s, "
                    f"raw restore + amcheck {raw_drills[-1]:.1f} s, drill RTO {drill.rto_s:.1f} s")
    finally:
        engines.forget(source.pk)
        engines.forget(scratch.pk)
        shutil.rmtree(work, ignore_errors=True)

    backup_s, raw_dump_s = statistics.median(backups), statistics.median(raw_dumps)
    rto_s, raw_drill_s = statistics.median(drills), statistics.median(raw_drills)
    steps = ", ".join(f"{s['name']} {s['seconds']:.1f} s" for s in drill.steps)
    ctx.log(f"drills: {DATABASE} {size_bytes / 2**30:.2f} GB, medians of {ROUNDS} interleaved rounds; backup job "
            f"{backup_s:.1f} s ({backup.size_bytes / 2**20:.0f} MB dumped), raw pg_dump -Fd -j2 {raw_dump_s:.1f} s; "
            f"drill RTO {rto_s:.1f} s (last: {steps}), raw pg_restore -j2 + pg_amcheck {raw_drill_s:.1f} s")
    return {
        "drill_database_gb": round(size_bytes / 2**30, 2),
        "backup_job_s": round(backup_s, 2),
        "backup_raw_pg_dump_s": round(raw_dump_s, 2),
        "backup_vs_raw_dump_ratio": round(backup_s / raw_dump_s, 3),
        "drill_rto_s": round(rto_s, 2),
        "drill_raw_restore_amcheck_s": round(raw_drill_s, 2),
        "drill_rto_vs_raw_ratio": round(rto_s / raw_drill_s, 3),
    }
