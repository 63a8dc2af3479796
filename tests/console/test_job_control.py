"""Job control: pause, resume, throttle, from the page and the command line, audited; and a
reaper that re-sends only what is lost, never a job merely waiting behind others."""

import json
import re
from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
import redis
from django.core.management import CommandError, call_command
from django.utils import timezone

from console import jobs, selftest
from console.models import AuditEvent, Job, SelftestStep
from tests.waiting import wait_until


def _start(steps, step_seconds, **params):
    return jobs.create(selftest.KIND, total=steps, params={"steps": steps, "step_seconds": step_seconds, **params})


def _state(job):
    return Job.objects.get(pk=job.pk).state


def _steps(job):
    return list(SelftestStep.objects.filter(job=job).order_by("step").values_list("step", flat=True))


def _messages_per_job(broker) -> Counter:
    """console.run_job messages waiting in any of the broker's queues (Redis lists), by argsrepr."""
    waiting = Counter()
    for key in broker.scan_iter(_type="LIST"):
        for raw in broker.lrange(key, 0, -1):
            headers = json.loads(raw).get("headers") or {}
            if headers.get("task") == "console.run_job":
                waiting[headers["argsrepr"]] += 1
    return waiting


# Pause and resume on a real worker -----------------------------------------------------------


@pytest.mark.worker
def test_it_pauses_running_jobs_after_their_step_freeing_their_workers_and_resumes_them(transactional_db, live_worker):
    # Given both worker slots held by long jobs and a short job waiting behind them,
    long_jobs = [_start(steps=20, step_seconds=0.2) for _ in range(2)]
    wait_until(lambda: all(Job.objects.get(pk=j.pk).progress_done >= 2 for j in long_jobs), 30, "both long jobs going")
    waiting = _start(steps=2, step_seconds=0.05)
    # when both are paused,
    assert [jobs.request_pause(job) for job in long_jobs] == ["pausing", "pausing"]
    wait_until(lambda: all(_state(j) == Job.State.PAUSED for j in long_jobs), 30, "both long jobs paused")
    # then the waiting job gets a worker and runs while they stay paused,
    assert jobs.wait_for(waiting.pk, timeout_s=30).state == Job.State.SUCCEEDED
    paused = [Job.objects.get(pk=j.pk) for j in long_jobs]
    assert all(j.state == Job.State.PAUSED and not j.pause_requested and not j.claimed_by for j in paused)
    for job in paused:  # every step done before the pause is checkpointed, none half done
        assert _steps(job) == list(range(job.progress_done)) and job.checkpoint["next_step"] == job.progress_done
        assert "paused at" in job.log_lines.last().message
    # and once resumed they go on from their checkpoints, every step exactly once.
    assert all(jobs.resume(job) for job in paused)
    for job in paused:
        finished = jobs.wait_for(job.pk, timeout_s=30)
        assert finished.state == Job.State.SUCCEEDED and finished.attempts == 2
        assert finished.result["resumed_from"] == job.progress_done
        assert _steps(job) == list(range(20))


@pytest.mark.worker
def test_it_resumes_a_job_paused_while_it_waited_in_the_queue_without_a_second_message(
    transactional_db, live_worker, fleet
):
    broker = redis.Redis.from_url(fleet.env()["REDIS_URL"])
    # Given a job waiting in the broker's queue behind two long ones,
    long_jobs = [_start(steps=10, step_seconds=0.3) for _ in range(2)]
    wait_until(lambda: Job.objects.filter(pk__in=[j.pk for j in long_jobs], state=Job.State.RUNNING).count() == 2,
               30, "both long jobs running")
    job = _start(steps=2, step_seconds=0.01)
    assert _messages_per_job(broker)[f"({job.pk},)"] == 1
    # when it is paused and resumed before a worker takes it,
    assert jobs.request_pause(job) == "paused"
    assert jobs.resume(job)
    # then its one message still does: none is added, and it runs once.
    assert _messages_per_job(broker)[f"({job.pk},)"] == 1
    job = jobs.wait_for(job.pk, timeout_s=30)
    assert job.state == Job.State.SUCCEEDED and job.attempts == 1 and _steps(job) == [0, 1]


@pytest.mark.worker
def test_it_pauses_a_job_resumed_after_its_worker_was_sigkilled(transactional_db, live_worker):
    # Given a job resumed on a new worker after its first one was SIGKILLed,
    job = _start(steps=14, step_seconds=0.3)
    wait_until(lambda: Job.objects.get(pk=job.pk).progress_done >= 3, 30, "three steps done")
    live_worker.kill()
    done_at_kill = Job.objects.get(pk=job.pk).progress_done
    live_worker.start()
    wait_until(lambda: job.pk in jobs.reap_stale(), 30, "the reaper to re-queue the job", poll_s=0.5)
    wait_until(lambda: Job.objects.filter(pk=job.pk, attempts=2, state=Job.State.RUNNING,
                                          progress_done__gt=done_at_kill).exists(), 30, "the second attempt going")
    # when it is paused,
    assert jobs.request_pause(Job.objects.get(pk=job.pk)) == "pausing"
    wait_until(lambda: _state(job) == Job.State.PAUSED, 30, "the job paused")
    paused = Job.objects.get(pk=job.pk)
    assert paused.attempts == 2 and _steps(job) == list(range(paused.progress_done))
    # then it resumes from that checkpoint and finishes with every step done exactly once.
    assert jobs.resume(paused)
    job = jobs.wait_for(job.pk, timeout_s=60)
    assert job.state == Job.State.SUCCEEDED and job.attempts == 3
    assert job.result["resumed_from"] == paused.progress_done
    assert _steps(job) == list(range(14))


def test_it_pauses_a_queued_job_at_once_and_cancels_a_paused_one(db):
    job = Job.objects.create(kind=selftest.KIND)
    assert jobs.request_pause(job) == "paused"
    assert _state(job) == Job.State.PAUSED and jobs.claim(job.pk, "worker-a") is None
    assert jobs.request_pause(job) == "already paused"
    assert not jobs.retry(job), "retry stays for failed and cancelled jobs"

    assert jobs.resume(job) and _state(job) == Job.State.QUEUED
    assert not jobs.resume(job)
    assert jobs.request_pause(job) == "paused"
    assert jobs.request_cancel(job) == "cancelled"
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and job.finished_at and job.error == "cancelled while paused"


def test_it_pauses_a_job_asked_to_pause_while_it_waited_to_be_taken_over(db):
    # A running job asked to pause whose worker died is re-queued by the reaper; it must pause, not run.
    job = Job.objects.create(kind=selftest.KIND, state=Job.State.RUNNING, claimed_by="dead",
                             heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert jobs.request_pause(job) == "pausing"
    assert jobs.claim(job.pk, "worker-b") is None
    Job.objects.filter(pk=job.pk).update(state=Job.State.QUEUED, claimed_by="")
    assert jobs.claim(job.pk, "worker-b") is None
    job.refresh_from_db()
    assert job.state == Job.State.PAUSED and not job.pause_requested and job.attempts == 0


# Throttle -------------------------------------------------------------------------------------


@pytest.mark.worker
def test_it_throttles_a_job_off_its_worker_and_runs_it_again_once_due(transactional_db, live_worker, client_as):
    # Given a job that asks, before its third step, to wait 5 s,
    job = _start(steps=4, step_seconds=0.05, throttle_before_step=2, throttle_s=5)
    # when it throttles,
    wait_until(lambda: Job.objects.filter(pk=job.pk, state=Job.State.QUEUED, not_before__isnull=False).exists(),
               30, "the job to throttle")
    waiting = Job.objects.get(pk=job.pk)
    # then it waits queued, off its worker, with its reason and when it tries again on its page,
    assert waiting.wait_reason == "self-test: asked to wait" and not waiting.claimed_by
    assert waiting.progress_done == 2 and _steps(job) == [0, 1]
    wait_until(lambda: "'queued'" in live_worker.log_text(), 30, "the worker's task to end, freeing its slot")
    page = client_as("viewer").get(job.get_absolute_url()).content.decode()
    tries_at = timezone.localtime(waiting.not_before).strftime("%H:%M:%S")
    assert re.search(rf"Waiting: self-test: asked to wait; tries again at {tries_at} UTC \(in [0-5] s\)", page)
    # no worker may take it before then,
    if timezone.now() < waiting.not_before:
        assert jobs.claim(job.pk, "impatient-worker") is None
    # the reaper, running all along, never takes it for lost (it waits longer than JOB_STALE_AFTER_S),
    sent_again: list[int] = []
    wait_until(lambda: sent_again.extend(jobs.reap_stale()) or Job.objects.get(pk=job.pk).is_finished, 30,
               "the job to finish", poll_s=0.2)
    assert job.pk not in sent_again
    # and once due it runs on from its checkpoint, every step exactly once.
    job = Job.objects.get(pk=job.pk)
    assert job.state == Job.State.SUCCEEDED and job.attempts == 2
    assert job.not_before is None and job.wait_reason == ""
    assert _steps(job) == [0, 1, 2, 3]
    second_start = job.log_lines.get(message__startswith="attempt 2").at
    assert second_start >= waiting.not_before


# The job page and the command line ------------------------------------------------------------


def test_it_pauses_and_resumes_from_the_job_page_audited(client_as, db):
    job = Job.objects.create(kind=selftest.KIND, state=Job.State.RUNNING, heartbeat_at=timezone.now())
    url = job.get_absolute_url()
    assert "/pause/" not in client_as("viewer").get(url).content.decode()
    operator = client_as("operator")
    assert f'action="/jobs/{job.pk}/pause/"' in operator.get(url).content.decode()

    assert operator.post(f"/jobs/{job.pk}/pause/").status_code == 302
    assert Job.objects.get(pk=job.pk).pause_requested
    page = operator.get(url).content.decode()
    assert "pausing…" in page and "/pause/" not in page
    assert AuditEvent.objects.get(action="job.pause", actor_username="operator", outcome="ok").detail == {"result": "pausing"}

    Job.objects.filter(pk=job.pk).update(state=Job.State.PAUSED, pause_requested=False, progress_done=3)
    page = operator.get(url).content.decode()
    assert "Paused at its last checkpoint (3 steps)" in page and f'action="/jobs/{job.pk}/resume/"' in page
    assert operator.post(f"/jobs/{job.pk}/resume/").status_code == 302
    assert _state(job) == Job.State.QUEUED
    assert AuditEvent.objects.filter(action="job.resume", actor_username="operator", outcome="ok").exists()

    assert operator.post(f"/jobs/{job.pk}/resume/").status_code == 302  # not paused any more: refused, audited
    assert AuditEvent.objects.get(action="job.resume", outcome="failed").detail == {"result": "not paused"}


def test_it_controls_jobs_from_the_command_line_audited(db):
    running = Job.objects.create(kind=selftest.KIND, state=Job.State.RUNNING, heartbeat_at=timezone.now())
    out = StringIO()
    call_command("job", "pause", str(running.pk), stdout=out)
    assert "Pausing" in out.getvalue() and Job.objects.get(pk=running.pk).pause_requested

    paused = Job.objects.create(kind=selftest.KIND, state=Job.State.PAUSED)
    call_command("job", "resume", str(paused.pk), stdout=out)
    assert _state(paused) == Job.State.QUEUED
    call_command("job", "cancel", str(paused.pk), stdout=out)
    assert _state(paused) == Job.State.CANCELLED
    call_command("job", "retry", str(paused.pk), stdout=out)
    assert _state(paused) == Job.State.QUEUED

    with pytest.raises(CommandError, match="Only paused jobs can be resumed"):
        call_command("job", "resume", str(running.pk))
    with pytest.raises(CommandError, match="no job #999999"):
        call_command("job", "pause", "999999")

    done = AuditEvent.objects.filter(object_type="job").order_by("id")
    assert [(e.action, e.outcome, e.actor_username) for e in done] == [
        ("job.pause", "ok", ""), ("job.resume", "ok", ""), ("job.cancel", "ok", ""), ("job.retry", "ok", ""),
        ("job.resume", "failed", ""),
    ]
    assert all(e.detail["via"] == "manage.py" for e in done)


# The reaper and the broker --------------------------------------------------------------------


@pytest.mark.worker
def test_it_runs_jobs_queued_behind_long_ones_once_without_sending_them_again(transactional_db, live_worker, fleet):
    broker = redis.Redis.from_url(fleet.env()["REDIS_URL"])
    # Given both worker slots held by jobs longer than JOB_STALE_AFTER_S, and 20 short jobs behind
    # them, plus one job whose message was really lost,
    long_jobs = [_start(steps=6, step_seconds=1.0) for _ in range(2)]
    wait_until(lambda: Job.objects.filter(pk__in=[j.pk for j in long_jobs], state=Job.State.RUNNING).count() == 2,
               30, "both long jobs running")
    short_jobs = [_start(steps=1, step_seconds=0.01) for _ in range(20)]
    lost = Job.objects.create(kind=selftest.KIND, params={"steps": 1, "step_seconds": 0.01},
                              enqueued_at=timezone.now() - timedelta(seconds=10))
    every_job = [*long_jobs, *short_jobs, lost]
    sent_again: list[int] = []
    most_messages = Counter()

    def all_succeeded():
        sent_again.extend(jobs.reap_stale())  # what beat does every JOB_REAPER_INTERVAL_S
        for argsrepr, count in _messages_per_job(broker).items():
            most_messages[argsrepr] = max(most_messages[argsrepr], count)
        return Job.objects.filter(pk__in=[j.pk for j in every_job], state=Job.State.SUCCEEDED).count() == len(every_job)

    # when the reaper runs all along, the jobs behind the long ones wait longer than it would wait
    # for a lost message,
    wait_until(all_succeeded, 60, "every job to succeed", poll_s=0.2)
    # then none of them was sent again, only the lost one; the queue never held two messages of
    # one job, and each job ran exactly once.
    assert sent_again == [lost.pk]
    assert {f"({j.pk},)" for j in short_jobs} <= set(most_messages), "the short jobs were seen waiting"
    assert max(most_messages.values()) == 1, most_messages.most_common(3)
    for job in every_job:
        job.refresh_from_db()
        assert job.attempts == 1 and SelftestStep.objects.filter(job=job).count() == job.params["steps"]
