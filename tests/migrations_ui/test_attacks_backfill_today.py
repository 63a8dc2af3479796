"""The backfill engine of today (batches halved on lock waits, the console's record every
BACKFILL_PROGRESS_INTERVAL_S, the target's progress row the truth) tried as a hostile tester
would, against the suite's real primary: a batch that fails after some were committed, a pause
or a cancel while a batch waits on an application's row lock, many writers on the table. The
findings and figures are in /work/notes/issue-9-attacks-backfill.md."""

import random
import threading
import time

import pytest
from django.db import connection
from psycopg import sql

from console import jobs
from console.models import Job
from migrations_ui import rollouts, services
from migrations_ui.models import Backfill
from tests.migrations_ui.test_backfill import _progress_row, _rows_by_n, _start, table  # noqa: F401  (fixture)
from tests.migrations_ui.test_rollout_backfill import (  # noqa: F401  (fixtures)
    STATUS, _cell, _locked, _statuses, _version, _waiting_batch, at_expand, small_batches)
from tests.migrations_ui.test_rollouts import _approved_job, _key
from tests.pg.test_ddl import fresh_registry  # noqa: F401  (its autouse fixture)
from tests.servers import superuser
from tests.waiting import wait_for_backend, wait_until


def _set_on_target(fleet, name) -> int:
    """Rows the backfill (n = n + 1) really set on the target."""
    with superuser(fleet) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE n = 1").format(sql.Identifier(name))).fetchone()[0]


def _in_a_thread(job_id: int) -> tuple[threading.Thread, dict]:
    """jobs.execute(job_id) in a thread of this process: (the thread, {"state": what it returned})."""
    ended: dict = {}

    def run():
        try:
            ended["state"] = jobs.execute(job_id)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, ended


# A batch that fails after others committed ------------------------------------------------------


def test_it_records_the_batches_the_target_committed_when_a_later_batch_fails(fleet, demo_targets, table,
                                                                              transactional_db):
    # Given a backfill whose expression fails on key 15,001 (division by zero), its first
    # batches (1,000, 2,000, 4,000, 8,000 keys) done well within one BACKFILL_PROGRESS_INTERVAL_S,
    name = table("bfa_fails", rows=20_000)
    backfill = services.create_backfill(target=demo_targets["demo-primary"], table=name, set_column="n",
                                        set_expression="n + 1 + 0 * (1 / (id - 15001))", enqueue=False)
    # when it runs and fails,
    assert jobs.execute(backfill.job_id) == Job.State.FAILED
    # then the console says how many rows were really set (the page of a failed job must not
    # say 0 rows done while 15,000 are set on the target).
    set_rows = _set_on_target(fleet, name)
    assert set_rows > 0
    failed, job = Backfill.objects.get(pk=backfill.pk), Job.objects.get(pk=backfill.job_id)
    assert "division by zero" in job.error
    assert failed.rows_done == job.progress_done == set_rows == _progress_row(fleet, backfill, "rows_done")[0]
    assert job.checkpoint["after"] == _progress_row(fleet, backfill)[0]


# Pause and cancel while a batch waits on a row lock ----------------------------------------------


@pytest.mark.parametrize("verb", ["pause", "cancel"])
def test_it_stops_as_asked_while_a_batch_waits_on_an_applications_row_lock(fleet, demo_targets, table,
                                                                           transactional_db, settings, verb):
    # (three tries of 1 s for a batch's locks, 0.1 s apart: a lock held longer fails the batch)
    settings.DDL_LOCK_RETRIES, settings.DDL_LOCK_BACKOFF_S = 2, 0.1
    # Given an application session holding a row lock of the second batch (keys 1,001-3,000),
    name = table("bfa_stop_" + verb, rows=5000)
    backfill = _start(demo_targets, name, enqueue=False)
    holder = superuser(fleet)
    holder.execute("BEGIN")
    holder.execute(sql.SQL("UPDATE {} SET note = 'app' WHERE id = 2501").format(sql.Identifier(name)))
    try:
        thread, ended = _in_a_thread(backfill.job_id)
        job = Job.objects.get(pk=backfill.job_id)
        wait_until(lambda: job.log_lines.filter(message__contains="lock not granted").exists(), 30,
                   "the second batch to wait for the application's lock")
        # when an operator pauses (cancels) the backfill while its batch waits,
        {"pause": jobs.request_pause, "cancel": jobs.request_cancel}[verb](job)
        thread.join(timeout=30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # then it stops as asked (rather than failing once the lock's tries are used up), at the
    # batch boundary, the console saying exactly what is set on the target.
    assert not thread.is_alive()
    job = Job.objects.get(pk=backfill.job_id)
    assert ended["state"] == {"pause": Job.State.PAUSED, "cancel": Job.State.CANCELLED}[verb], (job.state, job.error)
    stopped = Backfill.objects.get(pk=backfill.pk)
    assert stopped.rows_done == job.progress_done == _set_on_target(fleet, name) == 900
    assert stopped.last_pk == job.checkpoint["after"] == _progress_row(fleet, backfill)[0] == 1000
    if verb == "pause":
        # and resumed, it sets every row once.
        assert jobs.resume(job)
        assert jobs.execute(job.pk) == Job.State.SUCCEEDED
        assert _rows_by_n(fleet, name) == {(1, True): 4500, (0, False): 500}


# Many application writers on the table -----------------------------------------------------------


def _writers(fleet, name, count: int, stop: threading.Event, hold_s: float) -> list[threading.Thread]:
    """`count` sessions updating random rows' note (not n), each row lock held `hold_s`, until `stop`."""
    ident = sql.Identifier(name)

    def write():
        with superuser(fleet) as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute(sql.SQL("UPDATE {} SET note = 'w' WHERE id = %s").format(ident),
                                 (random.randint(1, 50_000),))
                    if hold_s:
                        conn.execute("SELECT pg_sleep(%s)", (hold_s,))

    threads = [threading.Thread(target=write, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _run_through_throttles(job_id: int, timeout_s: float) -> Job:
    """jobs.execute here, again each time it throttled once due, until it ends (or the deadline).
    A throttle also sends the job to the broker: a worker of the suite may run it meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.state == Job.State.QUEUED:
            time.sleep(max(0.0, job.not_before.timestamp() - time.time()) if job.not_before else 0)
            jobs.execute(job_id)
        elif job.state == Job.State.RUNNING:
            time.sleep(0.05)
        else:
            return job
    return Job.objects.get(pk=job_id)


@pytest.mark.parametrize("hold_s", [0, 0.002], ids=["autocommit", "held-2ms"])
def test_it_finishes_while_many_sessions_write_random_rows(fleet, demo_targets, table, transactional_db, hold_s):
    # Given eight application sessions updating random rows of a 50,000-row table,
    name = table("bfa_writers", rows=50_000)
    backfill = _start(demo_targets, name, enqueue=False, throttle_retry_s=0.5)
    stop = threading.Event()
    writers = _writers(fleet, name, 8, stop, hold_s)
    started = time.monotonic()
    try:
        # when a backfill runs through them,
        job = _run_through_throttles(backfill.job_id, timeout_s=40)
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=10)
    took_s = time.monotonic() - started
    done = Backfill.objects.get(pk=backfill.pk)
    figures = (f"{took_s:.1f} s, {done.batches} batches, last size {done.batch_size}, {done.throttles} throttles "
               f"({done.throttle_reason!r}), contended={job.checkpoint.get('contended')}")
    print("writers", hold_s, figures)
    # then it finishes in bounded time, every row set once, saying what it did.
    assert job.state == Job.State.SUCCEEDED, (job.state, job.error, job.wait_reason, figures)
    assert _rows_by_n(fleet, name) == {(1, True): 45_000, (0, False): 5_000}
    assert done.rows_done == done.rows_total == job.result["rows"] == 45_000
    assert done.throttles == 0 or done.throttle_reason, "a hold-off says why"


# A worker SIGKILLed while its batch waits on an application's row lock ---------------------------


@pytest.mark.worker
def test_it_sets_every_row_once_when_the_worker_is_killed_while_a_batch_waits_on_a_row_lock(
        fleet, demo_targets, table, transactional_db, live_worker):
    # Given a backfill whose batch waits on a row an application session holds (its backend,
    # holding the batch's progress row, waits on with it),
    name = table("bfa_killed_waiting", rows=50_000)
    holder = superuser(fleet)
    holder.execute("BEGIN")
    holder.execute(sql.SQL("UPDATE {} SET note = 'app' WHERE id = 30001").format(sql.Identifier(name)))
    try:
        backfill = _start(demo_targets, name)
        with superuser(fleet) as watcher:
            wait_for_backend(watcher, "wait_event_type = 'Lock' AND query LIKE %s", (f'UPDATE "public"."{name}"%',),
                             what="the batch to wait on the application's row lock", timeout_s=60)
        # when the worker is SIGKILLed there and another one started while the lock is still held,
        live_worker.kill()
        live_worker.start()
        wait_until(lambda: backfill.job_id in jobs.reap_stale(), 30, "the reaper to re-queue the backfill", poll_s=0.5)
        wait_until(lambda: Job.objects.get(pk=backfill.job_id).attempts >= 2, 30, "the backfill claimed again")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # then, once the application lets go, it ends with every row set once (the killed backend's
    # batch rolled back, not half counted), and the console's figures are the target's.
    job = jobs.wait_for(backfill.job_id, timeout_s=60)
    assert job.state == Job.State.SUCCEEDED, (job.state, job.error)
    assert _rows_by_n(fleet, name) == {(1, True): 45_000, (0, False): 5_000}
    done = Backfill.objects.get(pk=backfill.pk)
    assert done.rows_done == done.rows_total == job.result["rows"] == 45_000
    assert _progress_row(fleet, done) is None


# A rollout's backfill stage paused or aborted while a tenant's batch waits ---------------------


@pytest.mark.worker
@pytest.mark.parametrize("verb", ["pause", "abort"])
def test_it_stops_a_rollout_backfill_mid_tenant_while_its_batch_waits_on_a_row_lock(at_expand, users, fleet,
                                                                                   small_batches, verb):
    (tenant,) = at_expand(1, documents=60)
    schema = tenant.schema_name
    # Given a tenant's fourth batch (keys 31-40) waiting on a row lock (three batches recorded),
    locker = _locked(fleet, schema, 35)
    rollout = rollouts.request(rollouts.staged_change(STATUS), "backfill", users["operator"])
    job = _approved_job(rollout, users)
    stopped_state = {"pause": Job.State.PAUSED, "abort": Job.State.CANCELLED}[verb]
    try:
        _waiting_batch(fleet, schema)
        # when an operator pauses (aborts) the rollout while the lock is still held,
        asked = {"pause": jobs.request_pause, "abort": jobs.request_cancel}[verb](job)
        assert asked == {"pause": "pausing", "abort": "cancelling"}[verb]
        stopped = wait_until(lambda: Job.objects.filter(pk=job.pk, state=stopped_state).first(), 30,
                             f"the rollout to {verb} while the batch waits")
    finally:
        locker.close()
    # then it stops at the tenant's batch boundary: its cell, its Backfill row, the rollout's
    # checkpoint and the target agree on 30 rows,
    cell = _cell(rollout, tenant)
    assert cell.state == "pending" and _version(tenant) == "0004"
    assert cell.backfill.rows_done == 30 and cell.backfill.last_pk == 30
    assert stopped.checkpoint["backfills"][_key(tenant)]["after"] == 30
    assert _statuses(fleet, schema)[(False, None)] == 30
    if verb == "pause":
        # and resumed, it sets every row once and stamps the tenant.
        assert jobs.resume(stopped)
        job = jobs.wait_for(job.pk, timeout_s=60)
        assert job.state == Job.State.SUCCEEDED, (job.state, job.error)
        assert _statuses(fleet, schema) == {(True, "active"): 45, (True, "deleted"): 15}
        assert _cell(rollout, tenant).backfill.rows_done == 60 and _version(tenant) == "0005"


# Batches that set nothing -------------------------------------------------------------------------


def test_it_ends_a_backfill_whose_filter_lets_no_row_through(fleet, demo_targets, table, transactional_db):
    # Given a filter no row passes (every batch changes 0 rows),
    name = table("bfa_nothing", rows=5000)
    backfill = services.create_backfill(target=demo_targets["demo-primary"], table=name, set_column="n",
                                        set_expression="n + 1", where="id < 0", enqueue=False)
    # when it runs, then it walks every key, sets nothing, says so and cleans up.
    assert jobs.execute(backfill.job_id) == Job.State.SUCCEEDED
    done, job = Backfill.objects.get(pk=backfill.pk), Job.objects.get(pk=backfill.job_id)
    assert _rows_by_n(fleet, name) == {(0, True): 4500, (0, False): 500}
    assert done.rows_done == done.rows_total == job.result["rows"] == 0 and done.last_pk == 5000
    assert _progress_row(fleet, done) is None


# Rows deleted ahead of the batches ----------------------------------------------------------------


def test_it_ends_with_its_figures_agreeing_when_rows_ahead_of_it_were_deleted(fleet, demo_targets, table,
                                                                             transactional_db, client_as, settings):
    settings.DDL_LOCK_BACKOFF_S = 0.1
    # Given a backfill of 4,500 rows (counted at its start) whose second batch (keys 1,001-3,000)
    # waits on an application's row lock,
    name = table("bfa_deleted", rows=5000)
    ident = sql.Identifier(name)
    backfill = _start(demo_targets, name, enqueue=False)
    holder = superuser(fleet)
    holder.execute("BEGIN")
    holder.execute(sql.SQL("UPDATE {} SET note = 'app' WHERE id = 2501").format(ident))
    try:
        thread, ended = _in_a_thread(backfill.job_id)
        job = Job.objects.get(pk=backfill.job_id)
        wait_until(lambda: job.log_lines.filter(message__contains="lock not granted").exists(), 30,
                   "the second batch to wait for the application's lock")
        # when the application deletes the rows past key 3,000 meanwhile,
        with superuser(fleet) as deleting:
            deleting.execute(sql.SQL("DELETE FROM {} WHERE id > 3000").format(ident))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    thread.join(timeout=30)
    # then it ends with what it did, its total what there was to do by then: a succeeded
    # backfill does not say "2700 of 4500 (60%)".
    assert ended["state"] == Job.State.SUCCEEDED
    done, job = Backfill.objects.get(pk=backfill.pk), Job.objects.get(pk=backfill.job_id)
    assert _rows_by_n(fleet, name) == {(1, True): 2700, (0, False): 300}
    assert done.rows_done == job.result["rows"] == job.progress_done == 2700
    assert (done.rows_total, job.progress_total) == (2700, 2700)
    page = client_as("viewer").get(done.get_absolute_url()).content.decode()
    assert "2700 of 2700 (100%)" in page
    assert any("1800 rows fewer than counted at its start" in line.message for line in job.log_lines.all())
