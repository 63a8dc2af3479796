"""Samplers on the real worker, scheduled by a real Celery beat; hung targets cost their timeout."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from console.models import Target
from monitors import pools, samplers
from monitors.models import EnginePool, TargetState
from tests.conftest import ROOT, console_env

pytestmark = pytest.mark.worker


def _wait(predicate, timeout_s=30, poll_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


def test_it_samples_on_beats_schedule_and_workers_publish_their_pools(transactional_db, monitor_worker, demo_targets, fleet, tmp_path):
    env = {**os.environ, **console_env(fleet), "MONITOR_FAST_INTERVAL_S": "1", "MONITOR_STATEMENTS_INTERVAL_S": "2"}
    with open(tmp_path / "beat.log", "w") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "console", "beat", "-l", "INFO", "--schedule", str(tmp_path / "schedule")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        sampled = _wait(lambda: TargetState.objects.filter(sampled_at__isnull=False).count() == 4, timeout_s=40)
        assert sampled, (tmp_path / "beat.log").read_text()[-2000:]
        assert _wait(lambda: TargetState.objects.filter(statements_sampled_at__isnull=False).count() >= 3, timeout_s=40)
        # The worker's pool processes published their own engines' figures.
        assert _wait(lambda: EnginePool.fresh().exclude(process=pools.process_name()).filter(
            target=demo_targets["demo-primary"]).exists(), timeout_s=20)
        totals = pools.totals(demo_targets["demo-primary"].pk)
        assert totals["processes"] >= 1 and totals["size"] >= 5 and totals["checkouts"] >= 1
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=15)


def test_it_bounds_a_round_with_hung_targets_to_their_connect_timeout(transactional_db, demo_targets, settings):
    """Targets whose server takes the connection and never answers (a hung server) are waited
    for side by side, each for its connect timeout, while the live targets are still sampled."""
    settings.MONITOR_SAMPLER_CONCURRENCY = 8
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    accepted_at, held = [], []

    def accept_and_say_nothing():  # a hung server: it takes the connection and never speaks
        hung.settimeout(30)
        while len(accepted_at) < 4:
            try:
                conn, _ = hung.accept()
            except OSError:
                return
            accepted_at.append(time.monotonic())
            held.append(conn)

    server = threading.Thread(target=accept_and_say_nothing, daemon=True)
    server.start()
    try:
        port = hung.getsockname()[1]
        dead = [Target.objects.create(name=f"hung-{i}", host="127.0.0.1", port=port, dbname="x", username="x",
                                      password_env="FLEET_MONITOR_PASSWORD", connect_timeout_s=2) for i in range(4)]
        summary = samplers.sample_fast_round()
        server.join(timeout=5)
    finally:
        hung.close()
        for conn in held:
            conn.close()
    assert summary["ok"] == 4 and summary["failed"] == 4
    # Side by side: every hung target was being waited for before the first wait ran out (one
    # after another, they would come connect_timeout_s apart).
    assert len(accepted_at) == 4 and max(accepted_at) - min(accepted_at) < 2
    for target in dead:
        target.refresh_from_db()
        assert target.status == Target.Status.DOWN and "timeout" in target.last_error.lower()
    assert Target.objects.get(name="demo-primary").status == Target.Status.UP
