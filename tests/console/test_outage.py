"""A Redis outage loses nothing: jobs requested meanwhile stay queued and run once it is back."""

import pytest

from console import jobs
from console.models import Job, SelftestStep
from scripts import localfleet
from tests.waiting import wait_until

pytestmark = pytest.mark.worker


def test_it_keeps_a_job_requested_during_a_redis_outage_and_runs_it_after(transactional_db, live_worker, client_as, fleet, settings):
    settings.JOB_RESEND_AFTER_S = 1
    client = client_as("operator")
    localfleet._stop_pidfile(fleet.path("redis", "redis.pid"), "redis")
    try:
        response = client.post("/jobs/selftest/", {"steps": 3})
        assert response.status_code == 302, "requesting a job must not fail while Redis is away"
        job = Job.objects.get()
        assert job.state == Job.State.QUEUED and job.enqueued_at is None
        assert "broker (Redis) is unreachable" in job.log_lines.get().message
        assert "is unreachable" in client.get(job.get_absolute_url()).content.decode()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["problems"][0].startswith("redis unreachable")
    finally:
        localfleet.start_redis(fleet)
    wait_until(lambda: job.pk in jobs.reap_stale(), 30, "the reaper to send the queued job", poll_s=0.5)
    job = jobs.wait_for(job.pk, timeout_s=60)  # the worker reconnected by itself
    assert job.state == Job.State.SUCCEEDED
    assert SelftestStep.objects.filter(job=job).count() == 3
