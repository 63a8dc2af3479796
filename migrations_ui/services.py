"""Backfills: checking and creating one, and the loop a `migrations.backfill` job runs.

The loop is GitLab's batched background migration in small: before each batch the health
indicators (replica lag of the target's standbys, sessions waiting on locks, vacuum on the
table) may say Stop, and then the job throttles (queued again, no worker held, the reason on its
page) instead of failing; each batch is one short transaction on the target that also moves the
backfill's progress row there (console/pg/backfill.py), so a batch is never applied twice, then
a checkpoint in the console DB; the batch size steers towards `batch_target_ms`, and after each
batch it rests BACKFILL_REST_RATIO of the batch's time, so writers on the table get it to themselves.
The same loop runs a console-authored change's backfill stage and, per tenant, a rollout's
backfill stage (migrations_ui/rollouts.py, with the rollout job's context for that tenant).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from console import engines, jobs
from console.jobs import ClaimLost, JobCancelled, JobContext
from console.models import Job, Target
from console.pg import backfill as pg
from console.pg import lock_retry
from console.pg.backfill import BackfillRefused
from console.validators import validate_pg_name
from migrations_ui.models import Backfill

log = logging.getLogger(__name__)

KIND = "migrations.backfill"
MIN_BATCH_ROWS = 10
CHECK_STATEMENT_TIMEOUT_MS = 5000
HEALTH_STATEMENT_TIMEOUT_MS = 2000


def limits_from_settings() -> dict:
    return {
        "batch_target_ms": settings.BACKFILL_BATCH_TARGET_MS,
        "max_replica_lag_s": settings.BACKFILL_MAX_REPLICA_LAG_S,
        "max_lock_waiters": settings.BACKFILL_MAX_LOCK_WAITERS,
        "throttle_retry_s": settings.BACKFILL_THROTTLE_RETRY_S,
    }


def fields_of(spec: pg.Spec) -> dict:
    """A Backfill row's fields for a backfill stage's spec, the engine's limits from the settings."""
    return {"schema": spec.schema, "table": spec.table, "pk_column": spec.pk, "set_column": spec.column,
            "set_expression": spec.set_sql, "where": spec.where_sql, **limits_from_settings()}


def create_backfill(*, target: Target, table: str, set_column: str, set_expression: str, where: str = "",
                    schema: str = "public", database: str = "", user=None, enqueue: bool = True,
                    **limits) -> Backfill:
    """Check the backfill against the target (names, expressions, primary key, and PostgreSQL's
    plan of the UPDATE: nothing runs), then record it and its job, sent to the workers unless
    `enqueue` is False (to run it in this process). BackfillRefused says what is wrong; nothing
    is created then."""
    if target.role not in (Target.Role.PRIMARY, Target.Role.PGBOUNCER):
        raise BackfillRefused(f"{target.name} is a {target.get_role_display().lower()}: backfill on a primary.")
    for label, name in (("schema", schema), ("table", table), ("column", set_column), ("database", database)):
        if label == "database" and not name:
            continue
        try:
            validate_pg_name(name)
        except ValidationError as exc:
            raise BackfillRefused(f"The {label} name {name!r}: {' '.join(exc.messages)}") from None
    set_sql = pg.parse_expression(set_expression, "SET expression")
    where_sql = pg.parse_expression(where, "WHERE filter") if where.strip() else ""
    try:
        with engines.connect(target, credential="change", database=database or None, rollback=True,
                             statement_timeout_ms=CHECK_STATEMENT_TIMEOUT_MS) as conn:
            pk = pg.primary_key(conn, schema, table, set_column)
            spec = pg.Spec(schema, table, pk, set_column, set_sql, where_sql)
            pg.check_statement(conn, spec)
    except engines.TargetError as exc:
        raise BackfillRefused(str(exc)) from None
    with transaction.atomic():
        backfill = Backfill.objects.create(
            target=target, database=database, schema=schema, table=table, pk_column=pk, set_column=set_column,
            set_expression=set_sql, where=where_sql, requested_by=user if user and user.is_authenticated else None,
            **{**limits_from_settings(), **{k: v for k, v in limits.items() if v is not None}},
        )
        params = {"backfill_id": backfill.pk}
        if enqueue:
            backfill.job = jobs.create(KIND, user=user, target=target, unit="rows", params=params)
        else:
            backfill.job = Job.objects.create(kind=KIND, requested_by=backfill.requested_by, target=target,
                                              progress_unit="rows", params=params)
        backfill.save(update_fields=["job"])
    return backfill


# Once a batch has held sessions up for too long the batches grow by at most this factor each.
CONTENDED_GROWTH = 1.2


@dataclass
class BatchSizer:
    """How many keys the next batch takes. Towards `target_ms` a batch, by at most a factor of two
    either way: the target bounds how long a session can wait on a batch's row locks. Then how
    many do wait: after a batch whose locks held sessions up for more than BACKFILL_LOCK_WAIT_SHARE
    of its time, added up (`Batch.waited_s`), the next is half as big, and from then on each grows
    by at most CONTENDED_GROWTH (AIMD), so the size settles where sessions seldom wait. (A writer
    updating random rows of a 2,000,000-row table waits on one statement in a hundred once a
    batch locks some 20,000 rows, however short the batch.)"""

    target_ms: float
    size: int
    contended: bool = False

    def next(self, elapsed_ms: float, waited_s: float) -> int:
        if elapsed_ms > 0 and waited_s * 1000 / elapsed_ms > settings.BACKFILL_LOCK_WAIT_SHARE:
            factor, self.contended = 0.5, True
        else:
            factor = 2.0 if elapsed_ms <= 0 else min(2.0, max(0.5, self.target_ms / elapsed_ms))
            if self.contended:
                factor = min(factor, CONTENDED_GROWTH)
        self.size = int(min(settings.BACKFILL_BATCH_MAX_ROWS, max(MIN_BATCH_ROWS, self.size * factor)))
        return self.size

    def as_checkpoint(self) -> dict:
        return {"batch_size": self.size, "contended": self.contended}


def row_lock_reason(waiters: int, batch_rows: int, *, max_lock_waiters: int) -> str | None:
    """Why the backfill must hold off after a batch whose row locks `waiters` sessions waited on.
    Those waits end with the batch's COMMIT, and the next batch is smaller for them (BatchSizer):
    holding off only helps once batches cannot get smaller, at MIN_BATCH_ROWS. (Sessions queued
    for a lock on the table itself, the health query's, hold it off at any size.)"""
    if batch_rows > MIN_BATCH_ROWS:
        return None
    return pg.batch_waiters_reason(waiters, max_lock_waiters=max_lock_waiters)


class _Run:
    """One attempt of a backfill job, from where the target says it got to."""

    def __init__(self, ctx: JobContext, backfill: Backfill):
        self.ctx, self.backfill = ctx, backfill
        self.target, self.spec = backfill.target, backfill.spec()
        self.database = backfill.database or None
        self.health_due = 0.0  # time.monotonic() of the next health query
        self.sizer: BatchSizer | None = None
        # Where the batches got to, and what the console has not recorded of them yet.
        self.after: int | None = None
        self.done = 0
        self.unrecorded = 0
        self.last: tuple[int, float] = (0, 0.0)  # the last batch's size and milliseconds
        self.record_due = 0.0

    def _on_target(self, work, what: str):
        """`work(conn)` in one transaction of the change login, under the lock timeout and retried."""
        return lock_retry.run(self.target, work, what=what, schema=self.spec.schema, table=self.spec.table,
                              database=self.database, statement_timeout_ms=settings.BACKFILL_STATEMENT_TIMEOUT_MS,
                              log=self._log)

    def _log(self, message: str, level: str = "info") -> None:
        """lock_retry's reports. A warning says a try timed out on a lock (rolled back, the next
        one not begun): the page shows what is done meanwhile, and a pause or a cancel asked for
        while the batch waits is honoured now, at the batch boundary, rather than once the lock
        is granted, or never if its tries run out and the job fails."""
        self.ctx.log(message, level)
        if level == "warning":
            self.record()
            self.ctx.raise_if_stopped()

    def begin(self) -> None:
        """The position from the target (`start`), the batch size from the console's checkpoint."""
        self.after, self.done = self.start()
        data = self.ctx.checkpoint_data
        self.sizer = BatchSizer(self.backfill.batch_target_ms,
                                int(data.get("batch_size") or settings.BACKFILL_BATCH_INITIAL_ROWS),
                                bool(data.get("contended")))
        self.record_due = time.monotonic() + settings.BACKFILL_PROGRESS_INTERVAL_S
        # The rate chart's first point of this attempt (stored with its first record): the first
        # interval is then this attempt's work, and the pause or throttled wait before it a gap,
        # even when the attempt ends before a second record (BACKFILL_PROGRESS_INTERVAL_S apart).
        self.backfill.rate_samples = self.backfill.with_sample(time.time(), self.done, new_point=True)

    def start(self) -> tuple[int | None, int]:
        """(last key done, rows done), the target's progress row being the truth; (None, rows)
        when there is nothing left to do."""
        ctx, backfill, spec = self.ctx, self.backfill, self.spec
        console_after = ctx.checkpoint_data.get("after")

        def where_it_got_to(conn):
            pg.ensure_progress_table(conn)
            stored = pg.progress(conn, spec.key)
            if stored is None and console_after is None:
                first = pg.first_key(conn, spec)
                if first is not None:
                    pg.start_progress(conn, spec.key, first)
                    stored = {"last_pk": first, "rows_done": 0}
            if stored is not None and backfill.rows_total is None:
                return stored, stored["rows_done"] + pg.rows_to_do(conn, spec, stored["last_pk"])
            return stored, backfill.rows_total

        stored, rows_total = self._on_target(where_it_got_to, "backfill start")
        if stored is None and console_after is not None:
            # A batch was checkpointed, so the row existed: only the end removes it.
            ctx.log("the target's progress row is gone, so this backfill had reached its end (the worker "
                    "stopped before it could say so): nothing is run again", level="warning")
            return None, backfill.rows_done
        if stored is None:
            return None, 0  # an empty table
        if backfill.rows_total is None:
            backfill.rows_total = rows_total
            Backfill.objects.filter(pk=backfill.pk).update(rows_total=rows_total)
        if console_after is None and stored.get("batches"):
            ctx.log(f"the target had committed {stored['batches']} batches, up to key {stored['last_pk']}, before "
                    f"the console recorded any (the worker stopped first): going on from {stored['last_pk']}, "
                    "those batches are not run again", level="warning")
        elif console_after is not None and stored["last_pk"] != console_after:
            ctx.log(f"the target had committed the batches up to key {stored['last_pk']}, past the console's "
                    f"checkpoint at {console_after} (the worker stopped before recording them): going on from "
                    f"{stored['last_pk']}, those batches are not run again", level="warning")
        ctx.set_total(backfill.rows_total, "rows")
        return stored["last_pk"], stored["rows_done"]

    def stop_reason(self, batch_waiters: int = 0) -> str | None:
        """The last batch's waiters every batch (see `row_lock_reason`); the target's health
        indicators (one query) before the first batch and then at most every
        BACKFILL_HEALTH_INTERVAL_S, as they move in seconds."""
        backfill = self.backfill
        reason = row_lock_reason(batch_waiters, self.last[0], max_lock_waiters=backfill.max_lock_waiters)
        if reason or time.monotonic() < self.health_due:
            return reason
        with engines.connect(self.target, database=self.database, statement_timeout_ms=HEALTH_STATEMENT_TIMEOUT_MS) as conn:
            health = pg.health(conn, backfill.schema, backfill.table)
        self.health_due = time.monotonic() + settings.BACKFILL_HEALTH_INTERVAL_S
        return health.stop_reason(backfill.schema, backfill.table, max_replica_lag_s=backfill.max_replica_lag_s,
                                  max_lock_waiters=backfill.max_lock_waiters)

    def throttle(self, reason: str) -> None:
        """The job back to the queue (no worker held) until the retry time, saying why; the
        batches done so far recorded first."""
        self.record()
        Backfill.objects.filter(pk=self.backfill.pk).update(
            throttle_reason=reason, throttled_at=timezone.now(), throttles=F("throttles") + 1)
        self.ctx.throttle(reason, self.backfill.throttle_retry_s)

    def batch(self) -> pg.Batch:
        """The next batch of `sizer.size` keys; the run's position moved past it."""
        size, started = self.sizer.size, time.perf_counter()
        try:
            batch = self._on_target(lambda conn: pg.run_batch(conn, self.spec, self.after, size),
                                    f"backfill batch of {size} keys after {self.after}")
        except pg.ConcurrentRun as exc:  # the job was taken over: stop without writing, like a lost claim
            raise ClaimLost(str(exc)) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        if batch.upto is not None:
            self.after, self.done, self.unrecorded = batch.upto, self.done + batch.rows, self.unrecorded + 1
            self.last = (size, elapsed_ms)
            self.sizer.next(elapsed_ms, batch.waited_s)
        return batch

    def record_if_due(self) -> bool:
        if time.monotonic() < self.record_due:
            return False
        self.record()
        return True

    def record(self) -> None:
        """The console's record of the batches since the last (the target's progress row moved in
        each batch's own transaction already): rows, rate, sizes, and where to resume."""
        self.record_due = time.monotonic() + settings.BACKFILL_PROGRESS_INTERVAL_S
        if not self.unrecorded:
            return
        done, upto, batches, (size, elapsed_ms) = self.done, self.after, self.unrecorded, self.last
        samples = self.backfill.with_sample(time.time(), done)

        def save():
            Backfill.objects.filter(pk=self.backfill.pk).update(
                rows_done=done, last_pk=upto, batches=F("batches") + batches, batch_size=size,
                last_batch_ms=elapsed_ms, rate_samples=samples)
            self.backfill.rate_samples = samples

        self.ctx.run_unit(save, done, {"after": upto, **self.sizer.as_checkpoint()})
        self.unrecorded = 0

    def record_on_failure(self) -> None:
        """The batches the target committed since the last record, on the way out of a failure
        (a batch's error, a lock never granted): the failed job's page says how far the backfill
        really got, not where it was up to BACKFILL_PROGRESS_INTERVAL_S earlier. The failure is
        what the job reports, so an error recording it is only logged."""
        try:
            self.record()
        except Exception:  # the console DB gone too, or the claim lost: the target's row stays the truth
            log.exception("backfill %s: could not record its progress after a failure", self.backfill.pk)

    def finish(self, done: int) -> dict:
        """The target's progress row removed, and the total made what was done: rows_total was
        counted at the start, and rows deleted (or inserted, or changed out of or into the filter)
        since make it wrong; a succeeded backfill must not say "2700 of 4500 (60%)"."""
        self._on_target(lambda conn: pg.forget_progress(conn, self.spec.key), "backfill end")
        counted = self.backfill.rows_total
        if counted is not None and counted != done:
            self.ctx.log(f"{abs(counted - done)} rows {'fewer' if done < counted else 'more'} than counted at its "
                         f"start ({counted}): rows changed, came or went meanwhile; its total is the {done} it set")
        Backfill.objects.filter(pk=self.backfill.pk).update(rows_done=done, rows_total=done)
        self.ctx.set_total(done)
        return {"rows": done, "table": f"{self.spec.schema}.{self.spec.table}", "column": self.spec.column}


def rest(batch_ms: float) -> None:
    """Leave the table to the application for a while in proportion to the batch just done."""
    if settings.BACKFILL_REST_RATIO > 0:
        time.sleep(batch_ms / 1000 * settings.BACKFILL_REST_RATIO)


def _batches(run: _Run) -> None:
    """Batch after batch to the last key, holding off when the health indicators say so."""
    while run.after is not None:
        batch = run.batch()
        if batch.upto is None:
            break
        if reason := run.stop_reason(batch.waiters):
            run.throttle(reason)
        if run.record_if_due():
            run.ctx.raise_if_stopped()
        rest(run.last[1])


def run_backfill(ctx: JobContext, backfill: Backfill) -> dict:
    """The batches from where the target says this backfill got to. The console records them (and
    looks for a pause or a cancel) every BACKFILL_PROGRESS_INTERVAL_S, before a throttle, while a
    batch waits for a lock, and at the end."""
    run = _Run(ctx, backfill)
    if reason := run.stop_reason():
        run.throttle(reason)
    run.begin()
    try:
        _batches(run)
    except (ClaimLost, JobCancelled):  # paused, throttled, cancelled (recorded first) or taken over (not ours to record)
        raise
    except Exception:
        run.record_on_failure()
        raise
    run.record()
    done = run.done
    ctx.log(f"every key done: {done} rows set")
    return run.finish(done)
