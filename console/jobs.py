"""Jobs: enqueue, claim, heartbeat, checkpoint, finish, reap.

A job is a row; a Celery message only carries its id. A worker claims the job with a
conditional UPDATE (queued, or running with a dead heartbeat), so a duplicate or re-delivered
message does nothing. Runners report progress through a JobContext, whose `checkpoint` stores
where to resume in the same transaction as the work the runner asks it to commit.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Callable

import kombu.exceptions
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from console.models import Job, JobLogLine
from console.secrets import redact

log = logging.getLogger(__name__)

RUNNERS: dict[str, Callable[["JobContext"], dict | None]] = {}


class JobCancelled(Exception):
    pass


class ClaimLost(Exception):
    """Another worker took this job over (ours was presumed dead): stop without writing."""


def runner(kind: str):
    def decorator(func):
        RUNNERS[kind] = func
        return func

    return decorator


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def create(kind: str, *, user=None, target=None, tenant=None, total=None, unit="steps", params=None) -> Job:
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
    transaction.on_commit(lambda: enqueue(job.pk))
    return job


def enqueue(job_id: int) -> bool:
    """Send the job's id to the workers. With the broker away the job stays queued, unsent, and
    the reaper sends it once the broker is back: nothing is lost, the page says what happens."""
    from console.tasks import run_job

    try:
        run_job.delay(job_id)
    except kombu.exceptions.OperationalError as exc:
        log.warning("job %s: broker unreachable, left queued: %s", job_id, exc)
        JobLogLine.objects.create(
            job_id=job_id, level="warning",
            message="The broker (Redis) is unreachable: the job stays queued and is sent as soon as it is back.",
        )
        return False
    Job.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    return True


def claim(job_id: int, me: str) -> Job | None:
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.JOB_STALE_AFTER_S)
    claimable = Q(state=Job.State.QUEUED) | Q(state=Job.State.RUNNING, heartbeat_at__lt=stale_before)
    claimed = Job.objects.filter(claimable, pk=job_id, cancel_requested=False).update(
        state=Job.State.RUNNING,
        claimed_by=me,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
        attempt_started_at=now,
        attempt_start_done=F("progress_done"),
    )
    if claimed != 1:
        return None
    Job.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return Job.objects.get(pk=job_id)


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
        try:
            while not self._stop.wait(settings.JOB_HEARTBEAT_INTERVAL_S):
                alive = self._mine().update(heartbeat_at=timezone.now())
                if not alive:
                    self._lost.set()
                    return
        except Exception:  # the console DB may be briefly away; the next checkpoint will tell
            log.exception("job %s: heartbeat failed", self.job.pk)
        finally:
            connection.close()

    def _mine(self):
        return Job.objects.filter(pk=self.job.pk, claimed_by=self.me, state=Job.State.RUNNING)

    # Reporting ------------------------------------------------------------------------------

    def log(self, message: str, level: str = "info") -> None:
        JobLogLine.objects.create(job_id=self.job.pk, level=level, message=message[:2000])
        excess = JobLogLine.objects.filter(job_id=self.job.pk).order_by("-id")[settings.JOB_LOG_MAX_LINES:][:1]
        oldest_kept = excess.values_list("id", flat=True).first()
        if oldest_kept:
            JobLogLine.objects.filter(job_id=self.job.pk, id__lte=oldest_kept).delete()

    def set_total(self, total: int, unit: str | None = None) -> None:
        fields = {"progress_total": total}
        if unit:
            fields["progress_unit"] = unit
        self._mine().update(**fields)
        self.job.progress_total = total

    def raise_if_stopped(self) -> None:
        if self._lost.is_set():
            raise ClaimLost()
        state = Job.objects.filter(pk=self.job.pk).values_list("cancel_requested", "claimed_by").first()
        if state is None:
            raise JobCancelled("the job was deleted")
        cancel_requested, claimed_by = state
        if claimed_by != self.me:
            raise ClaimLost()
        if cancel_requested:
            raise JobCancelled("cancelled by an operator")

    def checkpoint(self, done: int, data: dict | None = None) -> None:
        """Record progress and where to resume. Call inside the transaction of the work it covers
        (`with transaction.atomic(): work(); ctx.checkpoint(...)`) to make the two atomic."""
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

    @property
    def params(self) -> dict:
        return self.job.params


def _finish(job_id: int, me: str, state: str, **fields) -> bool:
    return bool(
        Job.objects.filter(pk=job_id, claimed_by=me, state=Job.State.RUNNING).update(
            state=state, finished_at=timezone.now(), heartbeat_at=timezone.now(), **fields
        )
    )


def execute(job_id: int) -> str | None:
    """Run one job to its end, if this worker can claim it. Returns the final state."""
    close_old_connections()
    me = worker_id()
    job = claim(job_id, me)
    if job is None:
        log.info("job %s: not claimable (finished, cancelled or running elsewhere)", job_id)
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


def request_cancel(job: Job) -> str:
    """Queued jobs are cancelled at once; running ones stop at their next checkpoint."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(
        state=Job.State.CANCELLED, cancel_requested=True, finished_at=now, error="cancelled before it started"
    ):
        return "cancelled"
    if Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(cancel_requested=True):
        return "cancelling"
    return "finished"


def retry(job: Job) -> bool:
    """Failed or cancelled jobs go back to the queue and resume from their checkpoint."""
    updated = Job.objects.filter(pk=job.pk, state__in=[Job.State.FAILED, Job.State.CANCELLED]).update(
        state=Job.State.QUEUED, cancel_requested=False, error="", finished_at=None, claimed_by=""
    )
    if updated:
        transaction.on_commit(lambda: enqueue(job.pk))
    return bool(updated)


def reap_stale(now=None) -> list[int]:
    """Re-queue running jobs whose worker died, and queued jobs whose message was lost."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.JOB_STALE_AFTER_S)
    reaped = []
    for job in Job.objects.filter(state=Job.State.RUNNING, heartbeat_at__lt=stale_before):
        requeued = Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, heartbeat_at=job.heartbeat_at).update(
            state=Job.State.QUEUED, claimed_by=""
        )
        if requeued:
            JobLogLine.objects.create(
                job=job, level="warning",
                message=f"worker {job.claimed_by} silent since {job.heartbeat_at:%H:%M:%S}; re-queued",
            )
            reaped.append(job.pk)
    never_sent_before = now - timedelta(seconds=settings.JOB_RESEND_AFTER_S)
    lost = Job.objects.filter(state=Job.State.QUEUED, cancel_requested=False).filter(
        Q(enqueued_at__lt=stale_before) | Q(enqueued_at__isnull=True, created_at__lt=never_sent_before)
    )
    reaped += list(lost.values_list("pk", flat=True))
    for job_id in reaped:
        enqueue(job_id)
    return reaped


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
