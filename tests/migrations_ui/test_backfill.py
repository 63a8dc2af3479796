"""Backfills against the suite's real primary, its streaming replica and the real job worker:
keyset batches that adapt, every row set exactly once through a SIGKILL, throttling (no worker
held) while replay is paused on the replica, refusals of anything but one safe expression, and
the pages in a real browser."""

import random
import re
import threading
import time
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from playwright.sync_api import expect
from psycopg import sql

from console import engines, jobs
from console.models import Job
from console.pg import backfill as pg
from console.pg.backfill import BackfillRefused
from migrations_ui import services
from migrations_ui.models import Backfill
from tests.pg.test_ddl import fresh_registry  # noqa: F401  (its autouse fixture)
from tests.servers import superuser
from tests.waiting import wait_for_backend, wait_until


@pytest.fixture
def table(fleet):
    """make(name, rows): a table (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, note text) owned
    by the change login; every row's n starts at 0, so n = n + 1 shows a row set twice."""
    made = []

    def make(name, rows):
        ident = sql.Identifier("public", name)
        with superuser(fleet) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, note text)")
                         .format(ident))
            conn.execute(sql.SQL("INSERT INTO {} (id, note) SELECT g, 'row ' || g FROM generate_series(1, %s) g")
                         .format(ident), (rows,))
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO fleet_owner").format(ident))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))
        made.append(name)
        return name

    yield make
    with superuser(fleet) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("public", name)))


def _rows_by_n(fleet, name) -> dict:
    """{(n, matches id % 10 <> 0): rows}"""
    with superuser(fleet) as conn:
        return {(n, matches): count for n, matches, count in conn.execute(
            sql.SQL("SELECT n, id % 10 <> 0, count(*) FROM {} GROUP BY 1, 2").format(sql.Identifier(name)))}


def _progress_row(fleet, backfill, column="last_pk"):
    """(column,) of the backfill's progress row on the target, None when there is none."""
    with superuser(fleet) as conn:
        if conn.execute("SELECT to_regclass('fleet_console.backfill_progress')").fetchone()[0] is None:
            return None
        return conn.execute(sql.SQL("SELECT {} FROM fleet_console.backfill_progress WHERE backfill = %s").format(
            sql.Identifier(column)), (backfill.spec().key,)).fetchone()


def _start(demo_targets, name, enqueue=True, **limits):
    return services.create_backfill(target=demo_targets["demo-primary"], table=name, set_column="n",
                                    set_expression="n + 1", where="id % 10 <> 0", enqueue=enqueue, **limits)


def _started_on_the_target(demo_targets, name):
    """(backfill, its spec, the primary): a backfill not run yet, its progress row at key 0."""
    backfill = _start(demo_targets, name, enqueue=False)
    spec, primary = backfill.spec(), demo_targets["demo-primary"]
    with engines.connect(primary, credential="change") as conn:
        pg.ensure_progress_table(conn)
        pg.start_progress(conn, spec.key, 0)
    return backfill, spec, primary


# Refusals ---------------------------------------------------------------------------------------


def test_it_refuses_anything_but_one_safe_expression_and_a_table_it_can_batch(fleet, demo_targets, table, db):
    name = table("bf_refused", rows=10)
    for expression, reason in [
        ("1; DROP TABLE bf_refused", "without semicolons"),
        ("n + 1 FROM pg_authid", "exactly one expression"),
        ("pg_sleep(10)::int", "pg_sleep()"),
        ("(SELECT pg_terminate_backend(pid) FROM pg_stat_activity LIMIT 1)::int", "pg_terminate_backend()"),
        ("(WITH gone AS (DELETE FROM bf_refused RETURNING 1) SELECT 1)", "a subquery that writes (DELETE)"),
        ("$1", "a parameter"),
        ("n +", "not one SQL expression"),
    ]:
        with pytest.raises(BackfillRefused, match=re.escape(reason)):
            services.create_backfill(target=demo_targets["demo-primary"], table=name, set_column="n",
                                     set_expression=expression)
    with pytest.raises(BackfillRefused, match=r'column "nope" does not exist'):
        services.create_backfill(target=demo_targets["demo-primary"], table=name, set_column="n",
                                 set_expression="nope + 1")
    with pytest.raises(BackfillRefused, match="no table public.bf_missing"):
        services.create_backfill(target=demo_targets["demo-primary"], table="bf_missing", set_column="n",
                                 set_expression="1")
    with pytest.raises(BackfillRefused, match="is the primary key"):
        services.create_backfill(target=demo_targets["demo-primary"], table=name, set_column="id", set_expression="1")
    with pytest.raises(BackfillRefused, match="replica: backfill on a primary"):
        services.create_backfill(target=demo_targets["demo-replica"], table=name, set_column="n", set_expression="1")
    with pytest.raises(BackfillRefused, match="table name"):
        services.create_backfill(target=demo_targets["demo-primary"], table='x"; DROP TABLE y; --', set_column="n",
                                 set_expression="1")
    assert not Backfill.objects.exists() and not Job.objects.exists()
    assert _rows_by_n(fleet, name) == {(0, True): 9, (0, False): 1}


# Exactly once -----------------------------------------------------------------------------------


@pytest.mark.worker
def test_it_sets_every_row_exactly_once_through_a_sigkilled_worker(fleet, demo_targets, table, transactional_db,
                                                                   live_worker):
    # Given a backfill of 200,000 rows (180,000 pass the filter) in batches of about 10 ms (a few
    # dozen batches even on a fast machine),
    name = table("bf_killed", rows=200_000)
    backfill = _start(demo_targets, name, batch_target_ms=10)
    # when its worker is SIGKILLed at a random batch (counted on the target: the console records
    # progress every BACKFILL_PROGRESS_INTERVAL_S) and another one started,
    kill_at = random.randint(3, 10)
    wait_until(lambda: (_progress_row(fleet, backfill, "batches") or [0])[0] >= kill_at, 60, f"batch {kill_at}",
               poll_s=0.01)
    live_worker.kill()
    at_kill = Backfill.objects.get(pk=backfill.pk)
    assert _progress_row(fleet, backfill) is not None, "killed before the end"
    live_worker.start()
    wait_until(lambda: backfill.job_id in jobs.reap_stale(), 30, "the reaper to re-queue the backfill", poll_s=0.5)
    job = jobs.wait_for(backfill.job_id, timeout_s=60)
    # then it resumed from its checkpoint and every row ended as specified, none twice.
    assert job.state == Job.State.SUCCEEDED, job.error
    done = Backfill.objects.get(pk=backfill.pk)
    # Two claims (the killed one and its resumption), and one more after each time it throttled
    # (autovacuum on the table, say): each goes back to the queue and is claimed again.
    assert job.attempts == 2 + done.throttles and job.result["rows"] == 180_000
    # (from the console's checkpoint, or from the target's progress row if the console had recorded none)
    assert any("resuming from checkpoint" in line.message or "before the console recorded any" in line.message
               for line in job.log_lines.all())
    assert _rows_by_n(fleet, name) == {(1, True): 180_000, (0, False): 20_000}
    assert done.rows_done == done.rows_total == 180_000 and done.batches > at_kill.batches
    assert _progress_row(fleet, done) is None, "its progress row on the target is cleaned up"


def test_it_never_runs_a_batch_again_that_the_target_committed_before_a_lost_checkpoint(
        fleet, demo_targets, table, transactional_db):
    # Given a backfill whose first batch committed on the target while its checkpoint in the
    # console DB never did (the worker died between the two commits),
    name = table("bf_gap", rows=5000)
    backfill, spec, primary = _started_on_the_target(demo_targets, name)
    Job.objects.filter(pk=backfill.job_id).update(checkpoint={"after": 0, "batch_size": 1000})
    with engines.connect(primary, credential="change") as conn:
        committed = pg.run_batch(conn, spec, after=0, size=1000)
    assert committed.upto == 1000 and committed.rows == 900
    # a second runner holding the same stale position changes nothing,
    with pytest.raises(pg.ConcurrentRun), engines.connect(primary, credential="change") as conn:
        pg.run_batch(conn, spec, after=0, size=1000)
    assert _rows_by_n(fleet, name)[(1, True)] == 900
    # when the job runs from the console's checkpoint,
    assert jobs.execute(backfill.job_id) == Job.State.SUCCEEDED
    # then it goes on from where the target says it got to, and no row is set twice.
    job = Job.objects.get(pk=backfill.job_id)
    assert any("the target had committed the batches up to key 1000, past the console's checkpoint at 0" in line.message
               for line in job.log_lines.all())
    assert _rows_by_n(fleet, name) == {(1, True): 4500, (0, False): 500}
    assert job.result["rows"] == 4500 and job.progress_done == 4500

    # And a worker that stopped after the end (the target's row removed) but before the job was
    # marked done runs nothing again.
    Job.objects.filter(pk=job.pk).update(state=Job.State.QUEUED, finished_at=None, result={})
    assert jobs.execute(job.pk) == Job.State.SUCCEEDED
    assert _rows_by_n(fleet, name) == {(1, True): 4500, (0, False): 500}
    assert any("nothing is run again" in line.message for line in Job.objects.get(pk=job.pk).log_lines.all())


def test_it_goes_on_from_the_targets_progress_row_when_the_console_recorded_no_batch(
        fleet, demo_targets, table, transactional_db):
    # Given a backfill whose first two batches committed on the target before the console recorded
    # anything (it records every BACKFILL_PROGRESS_INTERVAL_S, and the worker died sooner),
    name = table("bf_unrecorded", rows=5000)
    backfill, spec, primary = _started_on_the_target(demo_targets, name)
    for after in (0, 1000):
        with engines.connect(primary, credential="change") as conn:
            pg.run_batch(conn, spec, after=after, size=1000)
    assert Job.objects.get(pk=backfill.job_id).checkpoint == {}
    # when the job runs,
    assert jobs.execute(backfill.job_id) == Job.State.SUCCEEDED
    # then it says so and goes on from key 2000: no row is set twice.
    job = Job.objects.get(pk=backfill.job_id)
    assert any("the target had committed 2 batches, up to key 2000, before the console recorded any" in line.message
               for line in job.log_lines.all())
    assert _rows_by_n(fleet, name) == {(1, True): 4500, (0, False): 500}
    assert job.result["rows"] == 4500 and Backfill.objects.get(pk=backfill.pk).rows_done == 4500


# Batch sizes ------------------------------------------------------------------------------------


def test_it_steers_batches_towards_the_target_time_by_at_most_a_factor_of_two(settings):
    settings.BACKFILL_BATCH_MAX_ROWS, settings.BACKFILL_LOCK_WAIT_SHARE = 100_000, 0.05
    sizer = services.BatchSizer(target_ms=200, size=1000)
    assert sizer.next(elapsed_ms=50, waited_s=0) == 2000  # 4x under the target: doubled, not quadrupled
    assert sizer.next(elapsed_ms=250, waited_s=0) == 1600
    assert sizer.next(elapsed_ms=2000, waited_s=0) == 800  # 10x over: halved
    sizer.size = 90_000
    assert sizer.next(elapsed_ms=10, waited_s=0) == 100_000  # never past BACKFILL_BATCH_MAX_ROWS
    sizer.size = 12
    assert sizer.next(elapsed_ms=10_000, waited_s=0) == services.MIN_BATCH_ROWS


def test_it_halves_a_batch_whose_row_locks_held_sessions_up_and_grows_slowly_after(settings):
    settings.BACKFILL_BATCH_MAX_ROWS, settings.BACKFILL_LOCK_WAIT_SHARE = 100_000, 0.05
    sizer = services.BatchSizer(target_ms=200, size=8000)
    # sessions waited 4 ms in all on a 100 ms batch (4 %): within the share, towards the target
    assert sizer.next(elapsed_ms=100, waited_s=0.004) == 16_000 and not sizer.contended
    # 10 ms on a 100 ms batch: half the size, however far under the target time it is
    assert sizer.next(elapsed_ms=100, waited_s=0.010) == 8000 and sizer.contended
    # from then on it grows by at most CONTENDED_GROWTH a batch
    assert sizer.next(elapsed_ms=50, waited_s=0) == int(8000 * services.CONTENDED_GROWTH)
    assert services.BatchSizer(200, 5000, **{"contended": True}).as_checkpoint() == {
        "batch_size": 5000, "contended": True}


def test_it_holds_off_for_sessions_waiting_on_row_locks_only_once_batches_cannot_get_smaller():
    # A batch of 1,000 keys that three sessions waited on: the next one is smaller, no hold-off.
    assert services.row_lock_reason(3, 1000, max_lock_waiters=2) is None
    # At the smallest size, more waiters than the limit hold the backfill off, saying why.
    assert services.row_lock_reason(3, services.MIN_BATCH_ROWS, max_lock_waiters=2) == (
        "lock waiters: 3 sessions waited on the last batch's row locks (limit 2)")
    assert services.row_lock_reason(2, services.MIN_BATCH_ROWS, max_lock_waiters=2) is None


def test_it_tells_how_many_sessions_waited_on_a_batchs_row_locks_and_for_how_long(fleet, demo_targets, table, db):
    # Given a backfill's first batch not committed yet, and an application session updating a row
    # of it, which waits,
    name = table("bf_waits", rows=5000)
    _backfill, spec, primary = _started_on_the_target(demo_targets, name)
    writer, watcher = superuser(fleet), superuser(fleet)
    try:
        with engines.connect(primary, credential="change", rollback=True) as conn:
            first = pg.run_batch(conn, spec, after=0, size=1000)
            assert first.waiters == 0 and first.waited_s == 0
            blocked = threading.Thread(target=writer.execute, args=(
                sql.SQL("UPDATE {} SET note = 'app' WHERE id = 501").format(sql.Identifier(name)),))
            blocked.start()
            wait_for_backend(watcher, "wait_event_type = 'Lock' AND query LIKE %s", ("%note = 'app'%",),
                             what="the application's UPDATE waiting on the batch")
            time.sleep(0.2)
            # when the next batch of the same transaction ends,
            second = pg.run_batch(conn, spec, after=first.upto, size=1000)
        blocked.join(timeout=10)
        # then it counts the session and the time it has waited so far,
        assert second.waiters == 1 and 0.2 <= second.waited_s < 10
        # which is more than 5 % of a batch of 1 s: the next batch is half as big.
        assert services.BatchSizer(target_ms=200, size=1000).next(elapsed_ms=1000, waited_s=second.waited_s) == 500
    finally:
        writer.close()
        watcher.close()


# Throttling -------------------------------------------------------------------------------------


def _replica_lag_s(fleet) -> float:
    with superuser(fleet) as conn:
        return conn.execute("SELECT coalesce(max(EXTRACT(EPOCH FROM replay_lag)), 0)::float8 FROM pg_stat_replication"
                            ).fetchone()[0]


@pytest.mark.worker
def test_it_throttles_while_replay_is_paused_and_goes_on_by_itself_once_it_resumes(
        fleet, demo_targets, table, transactional_db, live_worker, client_as):
    name = table("bf_lag", rows=20_000)
    replica = superuser(fleet, "replica", "postgres")
    try:
        # Given replay paused on the replica while the primary writes,
        replica.execute("SELECT pg_wal_replay_pause()")
        with superuser(fleet) as writer:
            def lagging():
                writer.execute(sql.SQL("UPDATE {} SET note = note WHERE id = 1").format(sql.Identifier(name)))
                return _replica_lag_s(fleet) > 2

            wait_until(lagging, 30, "the replica to lag more than 2 s", poll_s=0.2)
        # when a backfill allowing 1 s of lag starts,
        backfill = _start(demo_targets, name, max_replica_lag_s=1, throttle_retry_s=1)
        # then it throttles, off its worker, saying why, and sets nothing meanwhile,
        throttled = wait_until(lambda: Job.objects.filter(pk=backfill.job_id, state=Job.State.QUEUED,
                                                          wait_reason__startswith="replica lag").first(),
                               30, "the backfill to throttle on replica lag")
        assert not throttled.claimed_by and throttled.not_before is not None and not throttled.error
        assert re.fullmatch(r"replica lag: standby \S+ is \d+\.\d s behind \(limit 1 s\)", throttled.wait_reason)
        held = Backfill.objects.get(pk=backfill.pk)
        assert held.throttle_reason == throttled.wait_reason and held.rows_done == 0
        live = client_as("viewer").get(backfill.get_absolute_url(), HTTP_HX_REQUEST="true")
        assert live.status_code == 200 and f"waiting: {throttled.wait_reason}" in live.content.decode()
        assert _rows_by_n(fleet, name) == {(0, True): 18_000, (0, False): 2_000}
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")
        replica.close()
    # and once replay resumes it goes on by itself to the end.
    job = jobs.wait_for(backfill.job_id, timeout_s=60)
    assert job.state == Job.State.SUCCEEDED, (job.state, job.error, job.wait_reason)
    assert _rows_by_n(fleet, name) == {(1, True): 18_000, (0, False): 2_000}
    assert Backfill.objects.get(pk=backfill.pk).throttles >= 1


@pytest.mark.worker
def test_it_holds_off_while_vacuum_works_on_the_table_or_sessions_queue_for_a_lock_on_it(
        fleet, demo_targets, table, transactional_db, live_worker):
    name = table("bf_health", rows=20_000)
    ident = sql.Identifier(name)

    def held_off(backfill, reason):
        return wait_until(lambda: Job.objects.filter(pk=backfill.job_id, state=Job.State.QUEUED,
                                                     wait_reason__startswith=reason).first(), 30, reason)

    # Given a VACUUM of the table slowed down to a crawl by its cost delay,
    vacuuming = superuser(fleet)
    vacuuming.execute("SET vacuum_cost_delay = 100")
    vacuuming.execute("SET vacuum_cost_limit = 1")

    def vacuum_until_cancelled():
        with pytest.raises(psycopg.errors.QueryCanceled):
            vacuuming.execute(sql.SQL("VACUUM {}").format(ident))

    vacuum = threading.Thread(target=vacuum_until_cancelled)
    vacuum.start()
    try:
        with superuser(fleet) as watcher:
            (vacuum_pid, *_), = wait_for_backend(watcher, "query LIKE 'VACUUM%%' AND wait_event = 'VacuumDelay'",
                                                 what="the vacuum going slowly")
        # when a backfill starts, then it holds off while vacuum works on the table,
        first = _start(demo_targets, name, throttle_retry_s=1)
        waiting = held_off(first, "vacuum is working on")
        assert waiting.wait_reason == f"vacuum is working on public.{name} (client backend scanning heap)"
        assert Backfill.objects.get(pk=first.pk).rows_done == 0
    finally:
        with superuser(fleet) as admin:
            admin.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'VACUUM%%'"
                          " AND pid <> pg_backend_pid()", ())
        vacuum.join(timeout=30)
    # and goes on by itself once the vacuum is done.
    assert jobs.wait_for(first.job_id, timeout_s=60).state == Job.State.SUCCEEDED

    # Given a backfill allowing no lock waiter (checked while the table is free), and a session
    # queued for an ACCESS EXCLUSIVE lock behind a reader's open transaction,
    second = services.create_backfill(target=demo_targets["demo-primary"], table=name, set_column="n",
                                      set_expression="n + 10", max_lock_waiters=0, throttle_retry_s=1, enqueue=False)
    reader, altering = superuser(fleet), superuser(fleet)
    reader.execute("BEGIN")
    reader.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
    alter = threading.Thread(target=lambda: altering.execute(sql.SQL("ALTER TABLE {} ADD COLUMN extra int").format(ident)))
    alter.start()
    try:
        with superuser(fleet) as watcher:
            wait_for_backend(watcher, "query LIKE 'ALTER TABLE%%' AND wait_event_type = 'Lock'", what="the ALTER waiting")
        # when a backfill allowing no lock waiter starts, then it holds off, saying so,
        jobs.enqueue(second.job_id)
        waiting = held_off(second, "lock waiters")
        assert waiting.wait_reason == f"lock waiters: 1 session waiting for a lock on public.{name} (limit 0)"
    finally:
        reader.execute("ROLLBACK")
        alter.join(timeout=30)
    # and once the queue is gone it goes on: every row set once by each backfill.
    assert jobs.wait_for(second.job_id, timeout_s=60).state == Job.State.SUCCEEDED
    assert _rows_by_n(fleet, name) == {(11, True): 18_000, (10, False): 2_000}
    for conn in (vacuuming, reader, altering):
        conn.close()


# Pause, resume, cancel from the command line ---------------------------------------------------


@pytest.mark.worker
def test_it_pauses_resumes_and_cancels_from_the_command_line(fleet, demo_targets, table, transactional_db, worker_with):
    # (a worker taking batches of 100 keys and looking for a pause after each: a few seconds' work)
    worker_with({"BACKFILL_BATCH_MAX_ROWS": "100", "BACKFILL_PROGRESS_INTERVAL_S": "0"})
    name = table("bf_cli", rows=100_000)
    out = StringIO()
    call_command("backfill", "run", "--target", "demo-primary", "--table", name, "--column", "n", "--set", "n + 1",
                 "--where", "id % 10 <> 0", "--batch-target-ms", "20", stdout=out)
    backfill = Backfill.objects.get(table=name)
    assert f"backfill #{backfill.pk}" in out.getvalue() and '"n" = n + 1' in out.getvalue()
    wait_until(lambda: Backfill.objects.get(pk=backfill.pk).batches >= 2, 30, "two batches")
    call_command("backfill", "pause", str(backfill.pk), stdout=out)
    wait_until(lambda: Job.objects.get(pk=backfill.job_id).state == Job.State.PAUSED, 30, "the backfill paused")
    paused = Backfill.objects.get(pk=backfill.pk)
    # paused at a batch boundary: exactly the keys up to the last one done are set
    with superuser(fleet) as conn:
        set_rows = conn.execute(sql.SQL("SELECT count(*), max(id) FROM {} WHERE n = 1").format(sql.Identifier(name))
                                ).fetchone()
    assert set_rows[0] == paused.rows_done and set_rows[1] <= paused.last_pk
    call_command("backfill", "resume", str(backfill.pk), stdout=out)
    assert jobs.wait_for(backfill.job_id, timeout_s=60).state == Job.State.SUCCEEDED
    assert _rows_by_n(fleet, name) == {(1, True): 90_000, (0, False): 10_000}

    other = _start(demo_targets, table("bf_cancel", rows=10), enqueue=False)
    call_command("backfill", "cancel", str(other.pk), stdout=out)
    assert Job.objects.get(pk=other.job_id).state == Job.State.CANCELLED
    assert "Job cancelled." in out.getvalue()


# Pages ------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.worker
def test_it_runs_a_backfill_from_its_page_and_shows_it_live(page, users, fleet, demo_targets, table, live_worker,
                                                            artifacts):
    name = table("bf_page", rows=100_000)
    page.goto("/migrations/backfills/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pw-123")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Backfills")
    page.select_option("#id_target", label="demo-primary")
    page.fill("#id_table", name)
    page.fill("#id_set_column", "n")
    page.fill("#id_set_expression", "n + pg_sleep(1)::text::int")
    page.click("button:has-text('Run the backfill')")
    expect(page.locator("#id_set_expression ~ .error")).to_contain_text("may not contain a call to pg_sleep()")
    page.screenshot(path=str(artifacts / "backfill-refused.png"), full_page=True)
    assert not Backfill.objects.exists()

    # An application transaction holding a row half-way makes the backfill wait there for a while.
    holder = superuser(fleet)
    try:
        holder.execute("BEGIN")
        holder.execute(sql.SQL("SELECT 1 FROM {} WHERE id = 50001 FOR UPDATE").format(sql.Identifier(name)))
        page.fill("#id_set_expression", "n + 1")
        page.fill("#id_where", "id % 10 <> 0")
        page.fill("#id_batch_target_ms", "20")
        page.click("button:has-text('Run the backfill')")
        expect(page).to_have_url(re.compile(r"/migrations/backfills/\d+/$"))
        expect(page.locator("#backfill-statement")).to_contain_text(f'UPDATE "public"."{name}" SET "n" = n + 1')
        expect(page.locator("#backfill-batch")).to_contain_text("keys, last batch")
        expect(page.locator("#backfill-rate")).not_to_have_text("—")
        page.click("button:has-text('Pause')")
        expect(page.locator(".pill")).to_contain_text("pausing")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    expect(page.locator("#backfill-state")).to_have_text("Paused", timeout=30_000)
    expect(page.locator("#backfill-rows")).to_contain_text("of 90000")
    page.screenshot(path=str(artifacts / "backfill-paused.png"), full_page=True)
    page.click("button:has-text('Resume')")
    expect(page.locator("#backfill-state")).to_have_text("Succeeded", timeout=60_000)
    expect(page.locator("#backfill-rows")).to_contain_text("90000 of 90000 (100%)")
    page.reload()  # the rate chart (uPlot), drawn from the rows per second after each batch
    expect(page.locator("#chart-backfill-rate .chart-plot canvas")).to_have_count(1)
    expect(page.locator("#chart-backfill-rate")).not_to_have_attribute("data-samples", "0")
    rate = page.request.get(page.url + "rate/?window=15m").json()
    assert rate["unit"] == "rows/s" and rate["series"][0]["label"] == "rows per second"
    assert len(rate["t"]) >= 2 and max(v for v in rate["series"][0]["values"] if v is not None) > 0
    page.screenshot(path=str(artifacts / "backfill-done.png"), full_page=True)
    page.click("text=All backfills")
    expect(page.locator("#backfills")).to_contain_text(name)
    page.screenshot(path=str(artifacts / "backfill-list.png"), full_page=True)
    assert _rows_by_n(fleet, name) == {(1, True): 90_000, (0, False): 10_000}
