"""The console's own PostgreSQL restarts under a running job: the job rides it out on its worker
and finishes exactly once; the worker and the pages carry on by themselves."""

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.db.models import F
from django.test import RequestFactory
from django.utils import timezone

from console import jobs, selftest
from console.models import Job, SelftestStep
from scripts import localfleet
from tests.waiting import wait_until

pytestmark = pytest.mark.worker


def _start(steps, step_seconds):
    return jobs.create(selftest.KIND, total=steps, params={"steps": steps, "step_seconds": step_seconds})


def _restart_console_db(fleet):
    """pg_ctl stop -m fast (every session terminated, open transactions rolled back), then start."""
    localfleet._pg_stop(fleet, "console")
    localfleet._pg_start(fleet, "console")


def _get_as_gunicorn_does(path: str, client) -> str:
    """The status of a GET through Django's WSGI handler, with the request signals that let Django
    drop a broken persistent connection (the test client leaves them out)."""
    cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
    statuses = []
    response = WSGIHandler()(RequestFactory(HTTP_COOKIE=cookies).get(path).environ,
                             lambda status, headers: statuses.append(status))
    response.close()
    return statuses[0]


def _steps(job):
    return list(SelftestStep.objects.filter(job=job).order_by("step").values_list("step", flat=True))


def test_it_finishes_a_checkpointing_job_exactly_once_across_a_console_db_restart(
    transactional_db, live_worker, fleet, client_as
):
    client = client_as("viewer")
    # The test's connection kept like a web process keeps its own (CONN_MAX_AGE), to prove that
    # a request after the restart reconnects by itself.
    connection.settings_dict["CONN_MAX_AGE"] = 60
    connection.close()
    try:
        # Given a job checkpointing every 0.1 s,
        job = _start(steps=30, step_seconds=0.1)
        wait_until(lambda: Job.objects.get(pk=job.pk).progress_done >= 5, 30, "five steps done")
        # when the console DB restarts under it (and no reaper runs),
        _restart_console_db(fleet)
        # then a page still renders, on a new connection,
        assert _get_as_gunicorn_does(job.get_absolute_url(), client) == "200 OK"
    finally:
        connection.settings_dict["CONN_MAX_AGE"] = 0
        connection.close()
    # the same attempt finishes the job, once, with every step done once,
    job = jobs.wait_for(job.pk, timeout_s=30)
    assert job.state == Job.State.SUCCEEDED and job.attempts == 1, (job.state, job.error)
    assert _steps(job) == list(range(30))
    assert list(job.log_lines.values_list("message", flat=True)).count("succeeded") == 1
    # and the worker takes the next job as before.
    assert jobs.wait_for(_start(steps=2, step_seconds=0.01).pk, timeout_s=30).state == Job.State.SUCCEEDED


def test_it_keeps_a_running_jobs_heartbeat_through_a_console_db_restart(transactional_db, live_worker, fleet):
    # Given a job in the middle of a long step (no checkpoint for a while),
    job = _start(steps=2, step_seconds=3)
    wait_until(lambda: Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, progress_done=0,
                                          heartbeat_at__gt=F("attempt_started_at")).exists(), 30, "a first heartbeat")
    # when the console DB restarts,
    _restart_console_db(fleet)
    connection.close()  # the test's own connection died with the server
    restarted_at = timezone.now()
    # then the heartbeat notices the outage, comes back with the server and keeps beating,
    wait_until(lambda: f"job {job.pk}: heartbeat: console DB back" in live_worker.log_text(), 30,
               "the heartbeat to come back")
    wait_until(lambda: Job.objects.filter(pk=job.pk, heartbeat_at__gt=restarted_at).exists(), 30,
               "a heartbeat after the restart")
    assert not Job.objects.get(pk=job.pk).is_stale()
    # and the job finishes on its first attempt.
    job = jobs.wait_for(job.pk, timeout_s=30)
    assert job.state == Job.State.SUCCEEDED and job.attempts == 1, (job.state, job.error)
    assert _steps(job) == [0, 1]
