"""Backfills and lock-safe NOT NULL on a 2,000,000-row table.

- The console's backfill (a `migrations.backfill` job run by a real Celery worker subprocess on
  the jobs queue, with the default settings: keyset batches steered towards
  BACKFILL_BATCH_TARGET_MS and halved when their row locks hold sessions up, health checks,
  throttled when they say so, the wait counted) against a single-statement UPDATE of the same
  column on an identical table, both with the same concurrent writer running.
- The writer: pgbench, one client, `UPDATE ... SET hits = hits + 1 WHERE id = random(1, N)` back
  to back, every statement's latency logged (-l); its p99 with no backfill, during the backfill and
  during the single UPDATE. pgbench, not a thread of this process: the writer never waits for
  Python (the GIL) or takes the CPU a client written in C would not.
- Where: the headline figures on the fleet's scratch server, a PostgreSQL with no standby; the
  same again on the demo primary (`*_beside_local_standby`), whose streaming standby runs on the
  same two cores: there the standby's replay of the WAL (any WAL: the backfill's, the single
  UPDATE's) takes the CPU the writer needs, which a standby on its own host does not.
- How long SET NOT NULL holds ACCESS EXCLUSIVE: the ALTER and its COMMIT timed on a connection
  with nobody else on the table (so the lock is granted at once and held until the commit),
  without any CHECK (the naive way: it scans the table) and with the validated CHECK (c IS NOT
  NULL) console/pg/ddl.py puts first; the statement text is ddl.render's. Rounds interleaved,
  medians taken.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import psycopg
from django.conf import settings
from psycopg import sql

from scripts.localfleet import PG_BIN

from console import engines, jobs
from console.models import Job, Target
from console.pg import ddl
from console.pg.ddl import Op
from migrations_ui import services

N_ROWS = 2_000_000
IDLE_WRITER_S = 6.0
NOT_NULL_ROUNDS = 3
SINGLE, BATCHED = "bench_bf_single", "bench_bf_batched"



def _make_table(ctx, server: str, name: str) -> None:
    ident = sql.Identifier("public", name)
    with psycopg.connect(ctx.conninfo(server, "demo"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, payload int NOT NULL, flag int,"
                             " hits int NOT NULL DEFAULT 0)").format(ident))
        conn.execute(sql.SQL("INSERT INTO {} (id, payload) SELECT g, g %% 1000 FROM generate_series(1, %s) g")
                     .format(ident), (N_ROWS,))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))


class Writer:
    """pgbench updating random rows of one table, one client, back to back, every statement's
    latency logged (-l). It runs in one-second rounds until stopped, so it can stop at any moment
    with every round's log complete; a round's connection is not among its latencies."""

    def __init__(self, ctx, server: str, table: str):
        self.ctx, self.server, self.table = ctx, server, table
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._dir = ctx.root / f"writer-{server}-{table}-{time.monotonic_ns()}"
        self._thread = threading.Thread(target=self._loop, name=f"writer-{table}", daemon=True)

    def _loop(self) -> None:
        self._dir.mkdir()
        script = self._dir / "update.sql"
        script.write_text(f"\\set id random(1, {N_ROWS})\n"
                          f"UPDATE {sql.Identifier(self.table).as_string(None)} SET hits = hits + 1 WHERE id = :id;\n")
        rounds = 0
        while not self._stop.is_set():
            rounds += 1
            subprocess.run([str(PG_BIN / "pgbench"), "-n", "-c", "1", "-T", "1", "-M", "prepared", "-f", str(script),
                            "-l", f"--log-prefix={self._dir / f'round{rounds}'}", "-h", self.ctx.host,
                            "-p", str(self.ctx.port(self.server)), "-U", self.ctx.superuser, "demo"],
                           env={**os.environ, "PGPASSWORD": self.ctx.password}, capture_output=True, check=True,
                           timeout=60)
        for log in self._dir.glob("round*"):
            # client_id transaction_no latency_us script_no epoch_s epoch_us
            self.latencies_ms += [int(line.split()[2]) / 1000 for line in log.read_text().splitlines()]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=60)

    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[98]

    def describe(self) -> str:
        cuts = statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")
        slow = sum(1 for ms in self.latencies_ms if ms > 50)
        return (f"{len(self.latencies_ms)} statements, ms p50 {cuts[499]:.2f} p90 {cuts[899]:.2f} p99 {cuts[989]:.2f} "
                f"p99.9 {cuts[998]:.1f} max {max(self.latencies_ms):.0f}, {slow} over 50 ms")


def _single_update_s(ctx, server: str) -> float:
    with psycopg.connect(ctx.conninfo(server, "demo"), autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(sql.SQL("UPDATE {} SET flag = payload + 1").format(sql.Identifier(SINGLE)))
        return time.perf_counter() - started


class JobWorker:
    """A real Celery worker on the jobs queue (one slot), as a subprocess of the benchmark."""

    def __init__(self, ctx):
        self.logfile = ctx.root / "bench-backfill-worker.log"
        with open(self.logfile, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "console", "worker", "-P", "prefork", "-c", "1",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", settings.JOBS_QUEUE,
                 "-n", "bench-backfill@%h", "-l", "INFO"],
                cwd=settings.BASE_DIR, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while "ready." not in self.logfile.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"job worker did not start:\n{self.logfile.read_text()[-2000:]}")
            time.sleep(0.2)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def _backfill_s(target: Target) -> tuple[float, Job]:
    """Wall time from the job's first claim to its end, throttled waits included."""
    backfill = services.create_backfill(target=target, table=BATCHED, set_column="flag", set_expression="payload + 1")
    job = jobs.wait_for(backfill.job_id, timeout_s=600)
    assert job.state == Job.State.SUCCEEDED, (job.state, job.error)
    return (job.finished_at - job.started_at).total_seconds(), job


def _lock_held_ms(conn, statement: str) -> float:
    """ALTER and COMMIT of one transaction: nobody else is on the table, so the lock is granted at
    once and held until the commit returns."""
    conn.execute("BEGIN")
    started = time.perf_counter()
    conn.execute(statement)
    conn.execute("COMMIT")
    return (time.perf_counter() - started) * 1000


def _set_not_null_ms(ctx, server: str, target: Target) -> tuple[float, float]:
    set_not_null = Op("set_not_null", "public", BATCHED, column="flag")
    statement = ddl.render(set_not_null).rstrip(";")
    drop = sql.SQL("ALTER TABLE {} ALTER COLUMN flag DROP NOT NULL").format(sql.Identifier(BATCHED))
    check = Op("add_not_null_check_not_valid", "public", BATCHED, column="flag", constraint="bench_flag_not_null")
    validate = Op("validate_constraint", "public", BATCHED, constraint="bench_flag_not_null")
    drop_check = Op("drop_constraint", "public", BATCHED, constraint="bench_flag_not_null")
    naive, checked = [], []
    with psycopg.connect(ctx.conninfo(server, "demo"), autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(BATCHED)))
        for _ in range(NOT_NULL_ROUNDS):
            naive.append(_lock_held_ms(conn, statement))
            conn.execute(drop)
            for op in (check, validate):
                ddl.apply(target, op)
            checked.append(_lock_held_ms(conn, statement))
            conn.execute(drop)
            ddl.apply(target, drop_check)
    ctx.log(f"SET NOT NULL lock held, ms: naive {[round(v, 1) for v in naive]}, "
            f"with the validated CHECK {[round(v, 2) for v in checked]}")
    return statistics.median(naive), statistics.median(checked)


def _settle(ctx, server: str) -> None:
    """What the single UPDATE left (its WAL to checkpoint, its dead rows to vacuum) is not the
    backfill's: cleared before the idle writer and the backfill are measured."""
    with psycopg.connect(ctx.conninfo(server, "demo"), autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(SINGLE)))
        conn.execute("CHECKPOINT")


def _measure(ctx, server: str, target: Target) -> dict[str, float]:
    """The single UPDATE, the idle writer and the backfill on one server, each beside the writer."""
    started = time.perf_counter()
    for name in (SINGLE, BATCHED):
        _make_table(ctx, server, name)
    ctx.log(f"{server}: two tables of {N_ROWS} rows in {time.perf_counter() - started:.1f} s")
    with Writer(ctx, server, SINGLE) as beside_single:
        single_s = _single_update_s(ctx, server)
    _settle(ctx, server)
    with Writer(ctx, server, BATCHED) as idle:
        time.sleep(IDLE_WRITER_S)
    with Writer(ctx, server, BATCHED) as beside_backfill:
        backfill_s, job = _backfill_s(target)
    backfill = job.backfill
    ctx.log(f"{server}: single UPDATE {single_s:.1f} s; backfill {backfill_s:.1f} s, {job.attempts} attempt(s), "
            f"{backfill.batches} batches, the last {backfill.batch_size} keys in {backfill.last_batch_ms:.0f} ms, "
            f"throttled {backfill.throttles} time(s){': ' + backfill.throttle_reason if backfill.throttles else ''}")
    for label, writer in (("idle", idle), ("beside the single UPDATE", beside_single),
                          ("beside the backfill", beside_backfill)):
        ctx.log(f"{server}: writer {label}: {writer.describe()}")
    with psycopg.connect(ctx.conninfo(server, "demo"), autocommit=True) as conn:
        wrong = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE flag IS DISTINCT FROM payload + 1")
                             .format(sql.Identifier(BATCHED))).fetchone()[0]
    assert wrong == 0, f"{wrong} rows not backfilled as asked"
    single_rows_per_s, backfill_rows_per_s = N_ROWS / single_s, N_ROWS / backfill_s
    return {
        "backfill_rows_per_s": backfill_rows_per_s,
        "single_update_rows_per_s": single_rows_per_s,
        "backfill_vs_single_update_ratio": backfill_rows_per_s / single_rows_per_s,
        "idle_writer_p99_ms": idle.p99_ms(),
        "backfill_writer_p99_ms": beside_backfill.p99_ms(),
        "backfill_vs_idle_writer_p99_ratio": beside_backfill.p99_ms() / idle.p99_ms(),
        "single_update_writer_max_ms": max(beside_single.latencies_ms),
        "backfill_writer_max_ms": max(beside_backfill.latencies_ms),
    }


def _target(ctx, server: str) -> Target:
    return Target.objects.create(
        name=f"bench-backfill-{server}", role=Target.Role.PRIMARY, host=ctx.host, port=ctx.port(server),
        dbname="demo", username=ctx.monitor_user, password_env=ctx.monitor_password_env,
        change_username=ctx.superuser, change_password_env=ctx.password_env,
    )


def run(ctx) -> dict[str, float]:
    ctx.ensure_databases("scratch", ["demo"])
    figures = {}
    with JobWorker(ctx):  # idle, but there in every phase
        for server, suffix in (("scratch", ""), ("primary", "_beside_local_standby")):
            target = _target(ctx, server)
            try:
                figures.update({f"{key}{suffix}": value for key, value in _measure(ctx, server, target).items()})
                if server == "scratch":
                    naive_ms, checked_ms = _set_not_null_ms(ctx, server, target)
                    figures.update(set_not_null_lock_ms=checked_ms, naive_set_not_null_lock_ms=naive_ms)
            finally:
                with psycopg.connect(ctx.conninfo(server, "demo"), autocommit=True) as conn:
                    for name in (SINGLE, BATCHED):
                        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                engines.forget(target.pk)
    return figures
