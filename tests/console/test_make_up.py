"""`make up` end to end, on its own ports and folder: started twice, used, stopped."""

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scripts import localfleet

ROOT = Path(__file__).resolve().parents[2]


def _get(url):
    return _get_with_headers(url)[:2]


def _get_with_headers(url, **headers):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


@pytest.fixture
def up_env(tmp_path):
    base_port = localfleet.free_base_port()
    web_port = localfleet.free_base_port()
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
        "FLEET_DIR": str(tmp_path / "fleet"), "FLEET_BASE_PORT": str(base_port), "CONSOLE_PORT": str(web_port),
        "DEMO_PASSWORD": "make-up-test-pw",
    }
    yield env
    subprocess.run(["bash", "scripts/down.sh"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    subprocess.run([sys.executable, "scripts/localfleet.py", "destroy", "--root", env["FLEET_DIR"]],
                   cwd=ROOT, capture_output=True, timeout=120)


def test_it_starts_the_console_and_its_fleet_twice_harmlessly_and_stops_it(up_env):
    first = subprocess.run(["bash", "scripts/up.sh"], cwd=ROOT, env=up_env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    web = f"http://127.0.0.1:{up_env['CONSOLE_PORT']}"
    assert f"Fleet Console is running: {web}/" in first.stdout
    assert "admin, operator, approver, viewer" in first.stdout
    assert first.stdout.count("up, PostgreSQL 15") == 4  # the demo fleet, registered and reachable

    second = subprocess.run(["bash", "scripts/up.sh"], cwd=ROOT, env=up_env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "already running" in second.stdout and "web started" not in second.stdout

    assert _get(f"{web}/healthz") == (200, "ok\n")
    status, body = _get(f"{web}/readyz")
    assert status == 200 and '"ready": true' in body
    status, body = _get(f"{web}/accounts/login/")
    assert status == 200 and "Log in" in body
    status, metrics = _get(f"{web}/metrics")
    assert 'fleet_target_up{role="replica",target="demo-replica"} 1.0' in metrics
    fleet = localfleet.load_or_create(up_env["FLEET_DIR"], None)
    owner = fleet.path("pg", "primary").stat().st_uid
    if os.geteuid() == 0:
        assert owner != 0, "PostgreSQL clusters never run as root"

    # Every process logs to .fleet/log; a 500 leaves its traceback under the id its page shows.
    logs = Path(up_env["FLEET_DIR"], "log")
    assert "ready." in (logs / "worker.log").read_text()
    assert "beat: Starting" in (logs / "beat.log").read_text()
    localfleet._pg_stop(fleet, "console")  # a session then cannot be read: every page fails
    try:
        status, body, headers = _get_with_headers(f"{web}/fleet/", Cookie="sessionid=unreadable")
    finally:
        localfleet._pg_start(fleet, "console")
    request_id = headers["X-Request-ID"]
    assert status == 500 and f'<code id="request-id">{request_id}</code>' in body
    web_log = (logs / "web.log").read_text()
    assert f"ERROR django.request [{request_id}] Internal Server Error: /fleet/" in web_log
    assert "Traceback (most recent call last)" in web_log and "OperationalError" in web_log

    down = subprocess.run(["bash", "scripts/down.sh"], cwd=ROOT, env=up_env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{web}/healthz", timeout=2)
    for port in range(int(up_env["FLEET_BASE_PORT"]), int(up_env["FLEET_BASE_PORT"]) + 6):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"
