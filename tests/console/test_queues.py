"""Jobs and monitor work on queues of their own: long jobs holding every job slot never delay the
samplers."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.utils import timezone

from console import jobs, selftest
from console.models import Job
from monitors.models import TargetState
from tests.conftest import ROOT, console_env
from tests.waiting import wait_until

pytestmark = pytest.mark.worker

INTERVAL_S = 2.0


def test_it_keeps_the_sampling_cadence_while_long_jobs_hold_every_job_slot(
    transactional_db, live_worker, monitor_worker, demo_targets, fleet, tmp_path
):
    # Given both slots of the job worker held by long jobs,
    long_jobs = [jobs.create(selftest.KIND, params={"steps": 60, "step_seconds": 0.5}) for _ in range(2)]
    wait_until(lambda: Job.objects.filter(pk__in=[j.pk for j in long_jobs], state=Job.State.RUNNING).count() == 2,
               timeout_s=30, what="both long jobs to hold a job slot")
    # when beat schedules the samplers every INTERVAL_S,
    env = {**os.environ, **console_env(fleet), "MONITOR_FAST_INTERVAL_S": str(INTERVAL_S)}
    with open(tmp_path / "beat.log", "w") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "console", "beat", "-l", "INFO", "--schedule", str(tmp_path / "schedule")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until(lambda: TargetState.objects.filter(sampled_at__isnull=False).count() == len(demo_targets),
                   timeout_s=30, what="a first sample of every target")
        # then, for a while, no target's latest sample is ever older than two intervals.
        worst_age_s, deadline = 0.0, time.monotonic() + 5 * INTERVAL_S
        while time.monotonic() < deadline:
            now = timezone.now()
            ages = [(now - s).total_seconds() for s in TargetState.objects.values_list("sampled_at", flat=True)]
            worst_age_s = max(worst_age_s, *ages)
            time.sleep(0.2)
        assert worst_age_s <= 2 * INTERVAL_S, (tmp_path / "beat.log").read_text()[-2000:]
        assert Job.objects.filter(pk__in=[j.pk for j in long_jobs], state=Job.State.RUNNING).count() == 2
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=15)
        for job in long_jobs:
            jobs.request_cancel(job)
