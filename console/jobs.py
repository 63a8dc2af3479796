"""Jobs: enqueue, claim, heartbeat, checkpoint, pause, throttle, finish, reap.

A job is a row; a Celery message only carries its id. A worker claims the job with a
conditional UPDATE (queued and due, or running with a dead heartbeat), so a duplicate or
re-delivered message does nothing. Runners report progress through a JobContext, whose
`checkpoint` stores where to resume in the same transaction as the work the runner asks it to
commit. A runner hands its job back (paused, or throttled until later) by raising from the
context; the job resumes from its checkpoint. The console DB may restart under a running job:
the context rides out a short outage instead of failing the job.
"""

from __future__ import annotations

import base64
from contextlib import contextmanager
import json
import logging
import os
import random
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Callable

import kombu.exceptions
import redis.exceptions
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from console import audit
from console.celery import app as celery_app
from console.models import AuditEvent, Job, JobLogLine
from console.secrets import redact

log = logging.getLogger(__name__)

RUN_JOB_TASK = "console.run_job"  # console/tasks.py; sent by name
RUNNERS: dict[str, Callable[["JobContext"], dict | None]] = {}
# What the console DB raises while it restarts or fails over; the same call works once it is back.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


class JobCancelled(Exception):
    pass


class ClaimLost(Exception):
    """Another worker took this job over (ours was presumed dead): stop without writing."""


# Pausing and throttling stop the runner like a lost claim (its code writes nothing more and
# leaves its work resumable); `execute` then hands the job back instead of abandoning it.
class JobPaused(ClaimLost):
    """An operator paused the job: the runner stops before its next unit."""


class JobThrottled(ClaimLost):
    """The runner asked to wait (`ctx.throttle`): back to the queue, due again in `retry_after_s`."""

    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


def runner(kind: str):
    def decorator(func):
        RUNNERS[kind] = func
        return func

    return decorator


# What to tidy up when a job ends without its runner (cancelled after its worker died, or while it
# waited to run again): kind -> function(job), registered by the app whose runner leaves such state.
ABANDONED: dict[str, Callable[[Job], None]] = {}


def on_abandoned(*kinds: str):
    def decorator(func):
        for kind in kinds:
            ABANDONED[kind] = func
        return func

    return decorator


def _abandoned(job_id: int) -> None:
    job = Job.objects.filter(pk=job_id).first()
    handler = ABANDONED.get(job.kind) if job else None
    if handler is None:
        return
    try:
        handler(job)
    except Exception:  # the sweepers are still there for what this leaves
        log.exception("job %s: tidying up after it ended without its runner failed", job_id)


# What a job works on, for its page: functions job -> [(label, url)], registered by the apps
# that make such jobs (a drill's run page, a rollout's grid, a backfill's page).
SUBJECT_LINKS: list[Callable[[Job], list[tuple[str, str]]]] = []


def subject_links(func):
    SUBJECT_LINKS.append(func)
    return func


def subjects_of(job: Job) -> list[tuple[str, str]]:
    return [link for links in SUBJECT_LINKS for link in links(job)]


@contextmanager
def exclusively(key: str):
    """A console DB transaction that no other holder of `key` runs at the same time (an advisory
    lock), so that "is one under way? if not, start one" cannot pass twice for two requests at once."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])
        yield


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def create(kind: str, *, user=None, target=None, tenant=None, total=None, unit="steps", params=None,
           send: bool = True) -> Job:
    """A new queued job, sent to the workers once the transaction commits (send=False: a
    management command runs it here, or sends it itself with run_from_command)."""
    if kind not in RUNNERS:
        raise ValueError(f"no runner for job kind {kind!r}")
    job = Job.objects.create(
        kind=kind,
        requested_by=user if user is not None and user.is_authenticated else None,
        target=target,
        tenant=tenant,
        progress_total=total,
        progress_unit=unit,
        params=params or {},
    )
    if send:
        transaction.on_commit(lambda: enqueue(job.pk))
    return job


def enqueue(job_id: int, eta: datetime | None = None) -> bool:
    """Send the job's id to the workers (held until `eta` if given). With the broker away the job
    stays queued, unsent, and the reaper sends it once the broker is back: nothing is lost, the
    page says what happens. Sent by task name (routed to the jobs queue), so this module never
    imports console.tasks, which imports it."""
    try:
        celery_app.send_task(RUN_JOB_TASK, args=(job_id,), eta=eta)
    except kombu.exceptions.OperationalError as exc:
        log.warning("job %s: broker unreachable, left queued: %s", job_id, exc)
        Job.objects.filter(pk=job_id).update(enqueued_at=None)
        JobLogLine.objects.create(
            job_id=job_id, level="warning",
            message="The broker (Redis) is unreachable: the job stays queued and is sent as soon as it is back.",
        )
        return False
    Job.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    return True


def _due_by(moment) -> Q:
    """Queued jobs that may run at `moment`: not throttled, or their wait is over by then."""
    return Q(not_before__isnull=True) | Q(not_before__lte=moment)


def claim(job_id: int, me: str) -> Job | None:
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.JOB_STALE_AFTER_S)
    claimable = (Q(state=Job.State.QUEUED) & _due_by(now)) | Q(state=Job.State.RUNNING, heartbeat_at__lt=stale_before)
    claimed = Job.objects.filter(claimable, pk=job_id, cancel_requested=False, pause_requested=False).update(
        state=Job.State.RUNNING,
        claimed_by=me,
        heartbeat_at=now,
        not_before=None,
        wait_reason="",
        attempts=F("attempts") + 1,
        attempt_started_at=now,
        attempt_start_done=F("progress_done"),
    )
    if claimed != 1:
        # Cancelled or paused while it waited (re-queued by the reaper, or throttled): it ends or
        # pauses now, without running again.
        if Job.objects.filter(pk=job_id, state=Job.State.QUEUED, cancel_requested=True).update(
                state=Job.State.CANCELLED, finished_at=now, error="cancelled while it waited to run again", **_NO_REQUESTS):
            _abandoned(job_id)
        Job.objects.filter(pk=job_id, state=Job.State.QUEUED, pause_requested=True).update(
            state=Job.State.PAUSED, pause_requested=False
        )
        return None
    Job.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return Job.objects.get(pk=job_id)


def _through_outage(job_id: int, what: str, func):
    """`func()`, called again while the console DB is briefly away (a restart, a failover): the
    broken connection is closed and the call retried with backoff until JOB_DB_RETRY_FOR_S.
    Inside a transaction nothing can be retried on its own: the error goes to whoever retries
    the whole transaction (`JobContext.run_unit`)."""
    deadline = time.monotonic() + settings.JOB_DB_RETRY_FOR_S
    backoff_s = 0.1
    failed_since = None
    while True:
        try:
            result = func()
        except TRANSIENT_DB_ERRORS as exc:
            if connection.in_atomic_block or time.monotonic() + backoff_s > deadline:
                raise
            if failed_since is None:
                failed_since = time.monotonic()
                log.warning("job %s: %s: console DB unreachable, retrying: %s", job_id, what, exc)
            connection.close()
            time.sleep(backoff_s * random.uniform(0.5, 1.5))
            backoff_s = min(backoff_s * 2, 2.0)
            continue
        if failed_since is not None:
            log.warning("job %s: %s: console DB back after %.1f s", job_id, what, time.monotonic() - failed_since)
        return result


class JobContext:
    """What a runner sees: its job, the checkpoint to resume from, and ways to report."""

    def __init__(self, job: Job, me: str):
        self.job = job
        self.me = me
        self.checkpoint_data = dict(job.checkpoint or {})
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{job.pk}", daemon=True)

    # Lifecycle ------------------------------------------------------------------------------

    def __enter__(self):
        self._beat.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._beat.join(timeout=settings.JOB_HEARTBEAT_INTERVAL_S + 5)

    def _heartbeat_loop(self):
        """Every interval, for as long as the job runs here: through a console DB outage too (the
        broken connection is dropped and the next beat reconnects), until the claim is lost."""
        outage_started = None
        try:
            while not self._stop.wait(settings.JOB_HEARTBEAT_INTERVAL_S):
                try:
                    alive = self._mine().update(heartbeat_at=timezone.now())
                except TRANSIENT_DB_ERRORS as exc:
                    if outage_started is None:
                        outage_started = time.monotonic()
                        log.warning("job %s: heartbeat: console DB unreachable, trying again every %g s: %s",
                                    self.job.pk, settings.JOB_HEARTBEAT_INTERVAL_S, exc)
                    connection.close()
                    continue
                if outage_started is not None:
                    log.warning("job %s: heartbeat: console DB back after %.1f s",
                                self.job.pk, time.monotonic() - outage_started)
                    outage_started = None
                if not alive:
                    self._lost.set()
                    return
        except Exception:  # a bug, not an outage: the reaper takes the job over once it goes stale
            log.exception("job %s: heartbeat failed", self.job.pk)
        finally:
            connection.close()

    def _mine(self):
        return Job.objects.filter(pk=self.job.pk, claimed_by=self.me, state=Job.State.RUNNING)

    # Reporting ------------------------------------------------------------------------------

    def log(self, message: str, level: str = "info") -> None:
        _through_outage(self.job.pk, "log", lambda: self._log(message, level))

    def _log(self, message: str, level: str) -> None:
        JobLogLine.objects.create(job_id=self.job.pk, level=level, message=message[:2000])
        excess = JobLogLine.objects.filter(job_id=self.job.pk).order_by("-id")[settings.JOB_LOG_MAX_LINES:][:1]
        oldest_kept = excess.values_list("id", flat=True).first()
        if oldest_kept:
            JobLogLine.objects.filter(job_id=self.job.pk, id__lte=oldest_kept).delete()

    def set_total(self, total: int, unit: str | None = None) -> None:
        fields = {"progress_total": total}
        if unit:
            fields["progress_unit"] = unit
        _through_outage(self.job.pk, "set total", lambda: self._mine().update(**fields))
        self.job.progress_total = total

    def raise_if_stopped(self) -> None:
        """Stop here if the job was cancelled, paused or taken over. Runners call it before each
        unit, so a pause lets the unit in hand finish and checkpoint first."""
        if self._lost.is_set():
            raise ClaimLost()
        state = _through_outage(self.job.pk, "stop check", lambda: Job.objects.filter(pk=self.job.pk).values_list(
            "cancel_requested", "pause_requested", "claimed_by").first())
        if state is None:
            raise JobCancelled("the job was deleted")
        cancel_requested, pause_requested, claimed_by = state
        if claimed_by != self.me:
            raise ClaimLost()
        if cancel_requested:
            raise JobCancelled("cancelled by an operator")
        if pause_requested:
            raise JobPaused()

    def throttle(self, reason: str, retry_after_s: float) -> None:
        """Wait `retry_after_s` without holding a worker slot: the job goes back to the queue
        with `reason` on its page and resumes from its last checkpoint once due. Call it between
        units, outside their transaction."""
        if connection.in_atomic_block:
            raise RuntimeError("throttle between units, not inside a unit's transaction")
        raise JobThrottled(reason, retry_after_s)

    def checkpoint(self, done: int, data: dict | None = None) -> None:
        """Record progress and where to resume. Call inside the transaction of the work it covers
        (`with transaction.atomic(): work(); ctx.checkpoint(...)`, or `ctx.run_unit`) to make the
        two atomic: the update only succeeds while this worker holds the claim."""
        now = timezone.now()
        if data is not None:
            self.checkpoint_data = dict(data)
        job = self.job
        elapsed_s = (now - job.attempt_started_at).total_seconds() if job.attempt_started_at else 0
        rate = (done - job.attempt_start_done) / elapsed_s if elapsed_s > 0 else None
        updated = self._mine().update(
            progress_done=done, checkpoint=self.checkpoint_data, heartbeat_at=now, rate_per_s=rate
        )
        if updated != 1:
            raise ClaimLost()
        job.progress_done = done

    def run_unit(self, work: Callable[[], object], done: int, data: dict | None = None) -> None:
        """`work()` and its checkpoint in one transaction. If the console DB drops the connection
        the whole transaction runs again, until JOB_DB_RETRY_FOR_S; a COMMIT cut off by the
        outage may have landed, so a retry first looks at the stored checkpoint and does not do
        the unit twice (the checkpoint must tell units apart)."""
        wanted = dict(data if data is not None else self.checkpoint_data)
        attempts = 0

        def attempt():
            nonlocal attempts
            attempts += 1
            if attempts > 1 and self._stored_checkpoint_is(done, wanted):
                return
            with transaction.atomic():
                work()
                self.checkpoint(done, wanted)

        _through_outage(self.job.pk, "checkpoint", attempt)

    def _stored_checkpoint_is(self, done: int, data: dict) -> bool:
        row = Job.objects.filter(pk=self.job.pk).values_list("claimed_by", "state", "progress_done", "checkpoint").first()
        if row is None or row[0] != self.me or row[1] != Job.State.RUNNING:
            raise ClaimLost()
        if (row[2], row[3]) != (done, data):
            return False
        self.checkpoint_data = dict(data)
        self.job.progress_done = done
        return True

    @property
    def params(self) -> dict:
        return self.job.params


# Fields a job sheds whenever it leaves the hands of a worker, or a wait ends.
_NO_REQUESTS = {"pause_requested": False, "not_before": None, "wait_reason": ""}


def _release(job_id: int, me: str, state: str, **fields) -> bool:
    """This worker's last word on the job, if it still holds the claim (through a DB outage too)."""
    mine = Job.objects.filter(pk=job_id, claimed_by=me, state=Job.State.RUNNING)
    return bool(_through_outage(job_id, state, lambda: mine.update(state=state, heartbeat_at=timezone.now(), **fields)))


def _finish(job_id: int, me: str, state: str, **fields) -> bool:
    return _release(job_id, me, state, finished_at=timezone.now(), **{**_NO_REQUESTS, **fields})


def _hand_back(job_id: int, me: str, state: str, **fields) -> bool:
    """Give the job back with its checkpoint (paused, or queued to wait), freeing this worker."""
    return _release(job_id, me, state, claimed_by="", **fields)


def execute(job_id: int) -> str | None:
    """Run one job until it ends or is handed back, if this worker can claim it. Returns the
    state it left the job in."""
    close_old_connections()
    me = worker_id()
    job = _through_outage(job_id, "claim", lambda: claim(job_id, me))
    if job is None:
        log.info("job %s: not claimable (finished, cancelled, paused, not due or running elsewhere)", job_id)
        return None
    run = RUNNERS.get(job.kind)
    ctx = JobContext(job, me)
    with ctx:
        if job.attempts > 1:
            ctx.log(f"attempt {job.attempts} on {me}: resuming from checkpoint at {job.progress_done} {job.progress_unit}")
        else:
            ctx.log(f"started on {me}")
        try:
            if run is None:
                raise RuntimeError(f"no runner for job kind {job.kind!r}; is this worker up to date?")
            result = run(ctx) or {}
        except JobPaused:
            if _hand_back(job_id, me, Job.State.PAUSED, pause_requested=False):
                ctx.log(f"paused at {ctx.job.progress_done} {job.progress_unit}: resume to go on from there")
                return Job.State.PAUSED
            return None
        except JobThrottled as exc:
            return _throttle(ctx, exc)
        except ClaimLost:
            log.warning("job %s: claim lost to another worker; stopping", job_id)
            return None
        except JobCancelled as exc:
            ctx.log(f"cancelled: {exc}", level="warning")
            _finish(job_id, me, Job.State.CANCELLED, error=str(exc))
            return Job.State.CANCELLED
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}")
            log.exception("job %s failed", job_id)
            ctx.log(f"failed: {message}", level="error")
            _finish(job_id, me, Job.State.FAILED, error=message)
            return Job.State.FAILED
        ctx.log("succeeded")
        _finish(job_id, me, Job.State.SUCCEEDED, result=result)
        return Job.State.SUCCEEDED


def _throttle(ctx: JobContext, exc: JobThrottled) -> str | None:
    """Back to the queue, due at `not_before`, its message held by the broker until then."""
    not_before = timezone.now() + timedelta(seconds=exc.retry_after_s)
    reason = exc.reason[:2000]
    if not _hand_back(ctx.job.pk, ctx.me, Job.State.QUEUED, not_before=not_before, wait_reason=reason):
        return None
    ctx.log(f"throttled: {reason}; tries again at {not_before:%H:%M:%S}", level="warning")
    enqueue(ctx.job.pk, eta=not_before)
    return Job.State.QUEUED


def request_cancel(job: Job) -> str:
    """Queued and paused jobs are cancelled at once; running ones stop at their next checkpoint."""
    now = timezone.now()
    for state, error in ((Job.State.QUEUED, "cancelled before it started"), (Job.State.PAUSED, "cancelled while paused")):
        if Job.objects.filter(pk=job.pk, state=state).update(
            state=Job.State.CANCELLED, cancel_requested=True, finished_at=now, error=error, **_NO_REQUESTS
        ):
            return "cancelled"
    if Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(cancel_requested=True):
        return "cancelling"
    return "finished"


def request_pause(job: Job) -> str:
    """Queued jobs are paused at once; running ones finish their unit, checkpoint and stop."""
    if Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(state=Job.State.PAUSED, **_NO_REQUESTS):
        return "paused"
    if Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(pause_requested=True):
        return "pausing"
    state = Job.objects.filter(pk=job.pk).values_list("state", flat=True).first()
    return "already paused" if state == Job.State.PAUSED else "finished"


def _requeue(job: Job, from_states: list[str], **fields) -> bool:
    """Back to the queue, sent once the caller's transaction commits; counted as sent from now,
    so the reaper leaves it to that message."""
    updated = Job.objects.filter(pk=job.pk, state__in=from_states).update(
        state=Job.State.QUEUED, claimed_by="", enqueued_at=timezone.now(), **_NO_REQUESTS, **fields
    )
    if updated:
        transaction.on_commit(lambda: _send_unless_waiting(job.pk))
    return bool(updated)


def _send_unless_waiting(job_id: int) -> None:
    """Send the job, unless its earlier message still waits in the broker's queue (it was paused
    or cancelled before a worker took it): that one will do, one message per job."""
    try:
        waiting = job_id in _job_ids_in_broker(delivered_since=timezone.now())
    except (kombu.exceptions.OperationalError, redis.exceptions.RedisError):
        waiting = False  # enqueue says what happens with the broker away
    if not waiting:
        enqueue(job_id)


def resume(job: Job) -> bool:
    """A paused job goes back to the queue and resumes from its checkpoint."""
    return _requeue(job, [Job.State.PAUSED])


def retry(job: Job) -> bool:
    """Failed or cancelled jobs go back to the queue and resume from their checkpoint."""
    return _requeue(job, [Job.State.FAILED, Job.State.CANCELLED], cancel_requested=False, error="", finished_at=None)


# What an operator's request did: (whether it changed anything, what to tell them).
OUTCOMES = {
    "cancelled": (True, "Job cancelled."),
    "cancelling": (True, "Cancelling: the job stops at its next checkpoint."),
    "finished": (False, "The job had already finished."),
    "paused": (True, "Job paused: resume it to go on from its last checkpoint."),
    "pausing": (True, "Pausing: the job finishes the step in hand, checkpoints and frees its worker."),
    "already paused": (False, "The job is already paused."),
    "resumed": (True, "Job resumed: it goes on from its last checkpoint."),
    "not paused": (False, "Only paused jobs can be resumed."),
    "retried": (True, "Job re-queued: it resumes from its last checkpoint."),
    "not retryable": (False, "Only failed or cancelled jobs can be retried."),
}
CONTROLS: dict[str, Callable[[Job], str]] = {
    "pause": request_pause,
    "resume": lambda job: "resumed" if resume(job) else "not paused",
    "cancel": request_cancel,
    "retry": lambda job: "retried" if retry(job) else "not retryable",
}


def control(job: Job, verb: str, request=None, **detail) -> tuple[bool, str]:
    """Pause, resume, cancel or retry `job` as an operator asks (its page, `manage.py job`),
    audited as `job.<verb>`: whether it changed anything, and what to tell them."""
    outcome = CONTROLS[verb](job)
    changed, message = OUTCOMES[outcome]
    audit.record(request, f"job.{verb}", job, outcome=AuditEvent.Outcome.OK if changed else AuditEvent.Outcome.FAILED,
                 detail={"result": outcome, **detail})
    return changed, message


def reap_stale(now=None) -> list[int]:
    """Re-queue running jobs whose worker died (or end them, if cancelled meanwhile), and send
    queued jobs whose message is lost; their ids. A job merely waiting in the broker behind others,
    or throttled until later, is left alone."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.JOB_STALE_AFTER_S)
    reaped, ended = _lost_messages(now), []
    for job in Job.objects.filter(state=Job.State.RUNNING, heartbeat_at__lt=stale_before):
        if job.cancel_requested:  # cancelled after its worker died: nothing is left to stop it
            if Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, heartbeat_at=job.heartbeat_at).update(
                    state=Job.State.CANCELLED, finished_at=now, claimed_by="", **_NO_REQUESTS,
                    error=f"cancelled; its worker {job.claimed_by} had gone silent since {job.heartbeat_at:%H:%M:%S}"):
                JobLogLine.objects.create(job=job, level="warning", message="cancelled after its worker died")
                _abandoned(job.pk)
                ended.append(job.pk)
            continue
        requeued = Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, heartbeat_at=job.heartbeat_at).update(
            state=Job.State.QUEUED, claimed_by=""
        )
        if requeued:
            JobLogLine.objects.create(
                job=job, level="warning",
                message=f"worker {job.claimed_by} silent since {job.heartbeat_at:%H:%M:%S}; re-queued",
            )
            reaped.append(job.pk)
    for job_id in reaped:
        enqueue(job_id)
    return reaped + ended


def _lost_messages(now) -> list[int]:
    """Queued jobs with no message on its way: never sent (the broker was away), or sent and due
    for longer than a worker needs to take a message, yet neither waiting in the broker's queue
    nor lately handed to a worker."""
    due_before = now - timedelta(seconds=settings.JOB_STALE_AFTER_S)
    never_sent = Q(enqueued_at__isnull=True, created_at__lt=now - timedelta(seconds=settings.JOB_RESEND_AFTER_S)) & _due_by(now)
    sent_and_due = Q(enqueued_at__lt=due_before) & _due_by(due_before)
    queued = Job.objects.filter(never_sent | sent_and_due, state=Job.State.QUEUED, cancel_requested=False)
    candidates = dict(queued.values_list("pk", "enqueued_at"))
    lost = [pk for pk, enqueued_at in candidates.items() if enqueued_at is None]
    sent = [pk for pk, enqueued_at in candidates.items() if enqueued_at is not None]
    if sent:
        try:
            on_their_way = _job_ids_in_broker(delivered_since=due_before)
        except (kombu.exceptions.OperationalError, redis.exceptions.RedisError) as exc:
            log.warning("reaper: cannot read the broker's queue, no queued job sent again: %s", exc)
            return lost
        lost += [pk for pk in sent if pk not in on_their_way]
    return lost


def _job_ids_in_broker(delivered_since: datetime) -> set[int]:
    """Jobs whose message waits in the broker's job queue (Redis lists, one per priority), or was
    handed to a worker since `delivered_since` and not yet acknowledged (a message delivered
    earlier to a worker that never took its job belongs to a dead worker: Redis would only hand
    it out again after the visibility timeout)."""

    queue = celery_app.amqp.router.route({}, RUN_JOB_TASK)["queue"].name
    with celery_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.default_channel
        client = channel.client
        payloads = [json.loads(raw) for priority in channel.priority_steps
                    for raw in client.lrange(channel._q_for_pri(queue, priority), 0, -1)]
        delivered = client.zrangebyscore(channel.unacked_index_key, delivered_since.timestamp(), "+inf")
        if delivered:
            payloads += [json.loads(raw)[0] for raw in client.hmget(channel.unacked_key, delivered) if raw]
    return {job_id for job_id in map(_job_id_of, payloads) if job_id is not None}


def _job_id_of(payload: dict) -> int | None:
    """The job id a Celery message for console.run_job carries (task protocol 2)."""
    if (payload.get("headers") or {}).get("task") != RUN_JOB_TASK:
        return None
    body = payload.get("body", "")
    if payload.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return int(args[0]) if args else None


def run_from_command(job_id: int, *, run_here: bool, wait: bool) -> Job | None:
    """For management commands: run the job in this process, or send it to the workers and, if
    asked, wait for it. Returns the finished job, or None when it was only sent."""
    if run_here:
        execute(job_id)
    else:
        enqueue(job_id)
        if not wait:
            return None
    return wait_for(job_id, timeout_s=24 * 3600)


def wait_for(job_id: int, timeout_s: float = 60, poll_s: float = 0.2) -> Job:
    """Block until the job ends (management commands and tests)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = Job.objects.get(pk=job_id)
        if job.is_finished or time.monotonic() > deadline:
            return job
        time.sleep(poll_s)
