"""Least privilege towards targets: a monitor login for reading, a change login for changing, no
way to read other environment variables through a target, no password sent in clear."""

import os
import socket
import struct
import threading

import pytest
from sqlalchemy import text

from console import engines
from console.models import AuditEvent, Target
from tests.console.test_registry import _form


def test_it_reads_as_the_monitor_role_and_changes_as_the_owner(demo_targets):
    primary = demo_targets["demo-primary"]
    with engines.connect(primary, rollback=True) as conn:
        monitor = conn.execute(text("SELECT current_user, current_setting('is_superuser'),"
                                    " pg_has_role('pg_monitor', 'USAGE')")).one()
    with engines.connect(primary, credential="change", rollback=True) as conn:
        change = conn.execute(text("SELECT current_user, current_setting('is_superuser')")).one()
    assert tuple(monitor) == ("fleet_monitor", "off", True)
    assert tuple(change) == ("fleet_owner", "off")


def test_it_refuses_change_work_on_a_target_without_a_change_login(demo_targets):
    primary = demo_targets["demo-primary"]
    primary.change_username = ""
    with pytest.raises(engines.TargetUnavailable, match="no change credential is set for this target"):
        with engines.connect(primary, credential="change"):
            pass


def test_it_warns_on_the_target_page_when_the_monitor_login_is_a_superuser(transactional_db, client_as, demo_targets, fleet):
    powerful = Target.objects.create(name="too-powerful", host="127.0.0.1", port=fleet.port("primary"), dbname="demo",
                                     username="postgres", password_env="FLEET_PG_PASSWORD")
    client = client_as("operator")
    for target in (powerful, demo_targets["demo-primary"]):
        client.post(f"/fleet/targets/{target.pk}/test/", HTTP_HX_REQUEST="true")
    assert "The monitor login postgres is a superuser" in client.get(f"/fleet/targets/{powerful.pk}/").content.decode()
    assert "monitor-superuser-warning" not in client.get(f"/fleet/targets/{demo_targets['demo-primary'].pk}/").content.decode()


def test_it_refuses_password_variables_without_the_fleet_prefix(db, client_as, demo_targets, fleet):
    response = client_as("admin").post("/fleet/targets/new/", _form(fleet, password_env="CONSOLE_SECRET_KEY"))
    assert response.status_code == 200
    assert "Password variables must start with FLEET_" in response.content.decode()
    assert not Target.objects.filter(name="extra-primary").exists()
    assert not AuditEvent.objects.filter(action="target.create", outcome="ok").exists()


class CleartextImpostor:
    """A server on loopback that asks every client for its password in clear and keeps what it gets."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.captured: list[bytes] = []
        self.asked = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(20)
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._speak(conn)
                except (OSError, struct.error):
                    pass

    def _speak(self, conn):
        conn.settimeout(5)
        while True:
            length, code = struct.unpack("!II", _recv(conn, 8))
            _recv(conn, length - 8)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: no
                conn.sendall(b"N")
                continue
            break
        self.asked += 1  # before the request: the client may hang up as soon as it reads it
        conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
        kind = _recv(conn, 1)
        if kind == b"p":
            (length,) = struct.unpack("!I", _recv(conn, 4))
            self.captured.append(_recv(conn, length - 4))

    def close(self):
        self.sock.close()


def _recv(conn, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


@pytest.fixture
def impostor():
    server = CleartextImpostor()
    yield server
    server.close()


def test_it_never_sends_a_password_to_a_server_that_asks_for_it_in_clear(db, impostor, monkeypatch):
    monkeypatch.setenv("FLEET_IMPOSTOR_TEST_PASSWORD", "do-not-hand-this-out")
    target = Target(name="impostor", host="127.0.0.1", port=impostor.port, dbname="x", username="fleet_monitor",
                    password_env="FLEET_IMPOSTOR_TEST_PASSWORD", connect_timeout_s=3)
    probe = engines.probe(target)
    assert not probe.ok and "authentication method requirement" in probe.error and "TARGET_REQUIRE_AUTH" in probe.error
    assert impostor.asked >= 1 and impostor.captured == []


def test_it_never_reads_a_non_fleet_variable_even_from_a_row_saved_before_the_rule(db, impostor):
    # The attack: an admin points a target at CONSOLE_SECRET_KEY and a server asking in clear.
    os.environ.setdefault("CONSOLE_SECRET_KEY", "the-console-secret-for-test")
    target = Target(name="old-row", host="127.0.0.1", port=impostor.port, dbname="x", username="x",
                    password_env="CONSOLE_SECRET_KEY")
    probe = engines.probe(target)
    assert not probe.ok and "not one the console reads passwords from" in probe.error
    assert impostor.asked == 0 and impostor.captured == []
