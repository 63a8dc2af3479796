"""Jobs on a real Celery worker: success, cancel, retry, and a SIGKILLed worker."""

from datetime import timedelta

import pytest
from django.utils import timezone

from console import jobs, selftest
from console.models import Job, SelftestStep
from tests.waiting import wait_until

pytestmark = pytest.mark.worker


def _start(steps, step_seconds):
    return jobs.create(selftest.KIND, total=steps, params={"steps": steps, "step_seconds": step_seconds})


def test_it_runs_a_job_to_success_on_a_real_worker(transactional_db, live_worker):
    job = _start(steps=5, step_seconds=0.05)
    job = jobs.wait_for(job.pk, timeout_s=30)
    assert job.state == Job.State.SUCCEEDED
    assert job.progress_done == job.progress_total == 5
    assert job.result == {"steps": 5, "resumed_from": 0}
    assert job.attempts == 1 and job.started_at and job.finished_at
    assert sorted(SelftestStep.objects.filter(job=job).values_list("step", flat=True)) == [0, 1, 2, 3, 4]
    assert [line.message for line in job.log_lines.all()][-1] == "succeeded"


def test_it_finishes_exactly_once_from_its_checkpoint_after_the_worker_is_killed(transactional_db, live_worker):
    job = _start(steps=12, step_seconds=0.4)
    wait_until(lambda: Job.objects.get(pk=job.pk).progress_done >= 4, 30, "four steps done")
    live_worker.kill()  # SIGKILL the worker and its pool: mid-step, no ack, no goodbye
    done_at_kill = Job.objects.get(pk=job.pk).progress_done
    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING

    live_worker.start()
    # The heartbeat goes stale; the reaper (a beat task in production) re-queues the job.
    reaped = wait_until(jobs.reap_stale, 30, "the reaper to re-queue the job", poll_s=0.5)
    assert job.pk in reaped
    job = jobs.wait_for(job.pk, timeout_s=60)

    assert job.state == Job.State.SUCCEEDED
    assert job.attempts == 2
    assert job.result["resumed_from"] >= done_at_kill >= 4
    steps = list(SelftestStep.objects.filter(job=job).order_by("step").values_list("step", flat=True))
    assert steps == list(range(12)), "every step exactly once"
    workers = set(SelftestStep.objects.filter(job=job).values_list("worker", flat=True))
    assert len({w.split(":")[1] for w in workers}) >= 2, "the steps were done by two processes"
    messages = [line.message for line in job.log_lines.all()]
    assert any("re-queued" in m for m in messages)
    assert any(m.startswith("attempt 2") and "resuming from checkpoint" in m for m in messages)


def test_it_runs_a_duplicate_delivery_only_once(transactional_db, live_worker):
    job = _start(steps=3, step_seconds=0.2)
    jobs.enqueue(job.pk)  # the same job id delivered twice, as after a redelivery
    jobs.enqueue(job.pk)
    job = jobs.wait_for(job.pk, timeout_s=30)
    wait_until(lambda: live_worker.log_text().count(f"job {job.pk}: not claimable") == 2, 30,
               "the worker to turn both duplicate deliveries away")
    assert job.state == Job.State.SUCCEEDED and Job.objects.get(pk=job.pk).attempts == 1
    assert SelftestStep.objects.filter(job=job).count() == 3


def test_it_cancels_a_running_job_at_its_next_checkpoint(transactional_db, live_worker):
    job = _start(steps=50, step_seconds=0.2)
    wait_until(lambda: Job.objects.get(pk=job.pk).progress_done >= 2, 30, "two steps done")
    assert jobs.request_cancel(Job.objects.get(pk=job.pk)) == "cancelling"
    job = jobs.wait_for(job.pk, timeout_s=30)
    assert job.state == Job.State.CANCELLED and job.progress_done < 50
    assert "cancelled by an operator" in job.error


def test_it_retries_a_cancelled_job_from_its_checkpoint(transactional_db, live_worker):
    job = _start(steps=6, step_seconds=0.2)
    wait_until(lambda: Job.objects.get(pk=job.pk).progress_done >= 2, 30, "two steps done")
    jobs.request_cancel(job)
    job = jobs.wait_for(job.pk, timeout_s=30)
    stopped_at = job.progress_done
    assert jobs.retry(job)
    job = jobs.wait_for(job.pk, timeout_s=30)
    assert job.state == Job.State.SUCCEEDED and job.result["resumed_from"] == stopped_at
    assert SelftestStep.objects.filter(job=job).count() == 6


def test_it_cancels_a_queued_job_at_once(db):
    job = Job.objects.create(kind=selftest.KIND)
    assert jobs.request_cancel(job) == "cancelled"
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and job.finished_at
    assert jobs.claim(job.pk, "someone") is None


def test_it_claims_a_job_only_once(db):
    job = Job.objects.create(kind=selftest.KIND)
    assert jobs.claim(job.pk, "worker-a") is not None
    assert jobs.claim(job.pk, "worker-b") is None
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert Job.objects.get(pk=job.pk).is_stale()
    taken_over = jobs.claim(job.pk, "worker-b")
    assert taken_over.claimed_by == "worker-b" and taken_over.attempts == 2


def test_it_shows_progress_rate_and_eta_on_the_job_page(client_as, db):
    started = timezone.now() - timedelta(seconds=10)
    job = Job.objects.create(kind=selftest.KIND, state=Job.State.RUNNING, progress_done=25, progress_total=100,
                             rate_per_s=2.5, started_at=started, heartbeat_at=timezone.now())
    client = client_as("viewer")
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "25 of 100 steps (25%)" in page and "2.50 steps/s" in page and "30 s" in page
    assert 'hx-trigger="every 1s"' in page
    fragment = client.get(f"/jobs/{job.pk}/?fragment=progress", HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200 and "<html" not in fragment.content.decode()
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED, progress_done=100, finished_at=timezone.now())
    finished = client.get(f"/jobs/{job.pk}/?fragment=progress", HTTP_HX_REQUEST="true")
    assert finished.status_code == 286  # htmx stops polling
    assert "hx-trigger" not in finished.content.decode()


def test_it_lists_jobs_with_filters(client_as, db):
    Job.objects.create(kind=selftest.KIND, state=Job.State.FAILED)
    Job.objects.create(kind="tenants.onboard", state=Job.State.SUCCEEDED)
    client = client_as("viewer")
    page = client.get("/jobs/?state=failed").content.decode()
    assert "console.selftest" in page and "tenants.onboard" not in page
    page = client.get("/jobs/?kind=tenants").content.decode()
    assert "tenants.onboard" in page and "console.selftest" not in page
