"""The suite's own real fleet: console PostgreSQL, demo primary + streaming replica + PgBouncer,
scratch server, Redis, and (for the tests that need it) a real Celery worker, all on free
loopback ports in a temporary directory, so the suite also runs beside `make up`."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts import localfleet  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"
JOB_STALE_AFTER_S = 3
JOB_HEARTBEAT_INTERVAL_S = 0.5
# Playwright's sync API keeps an event loop in the test thread; the ORM calls are still sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# The test process publishes pool figures only when a test asks (pools.publish_once()); the
# worker subprocess publishes on its own, like any console process.
os.environ["POOL_PUBLISHER_ENABLED"] = "false"


@pytest.fixture(scope="session")
def fleet():
    root = tempfile.mkdtemp(prefix="fleet-test-")
    fleet = localfleet.load_or_create(root, None, fast=True)
    try:
        localfleet.up(fleet)
        yield fleet
    finally:
        localfleet.destroy(fleet)


def console_env(fleet) -> dict[str, str]:
    return {
        **fleet.env(),
        "JOB_STALE_AFTER_S": str(JOB_STALE_AFTER_S),
        "JOB_HEARTBEAT_INTERVAL_S": str(JOB_HEARTBEAT_INTERVAL_S),
        "POOL_PUBLISHER_ENABLED": "true",
        "POOL_PUBLISH_INTERVAL_S": "1",
    }


@pytest.fixture(scope="session")
def django_db_setup(fleet, django_db_blocker):
    """Point the console at the suite's own console cluster and migrate it."""
    from django.conf import settings
    from django.core.management import call_command

    from console.celery import app

    env = console_env(fleet)
    os.environ.update(env)
    settings.DATABASES["default"].update(
        HOST=env["CONSOLE_DB_HOST"],
        PORT=env["CONSOLE_DB_PORT"],
        NAME=env["CONSOLE_DB_NAME"],
        USER=env["CONSOLE_DB_USER"],
        PASSWORD=env["CONSOLE_DB_PASSWORD"],
        CONN_MAX_AGE=0,
    )
    settings.REDIS_URL = settings.CELERY_BROKER_URL = env["REDIS_URL"]
    app.conf.broker_url = env["REDIS_URL"]
    settings.JOB_STALE_AFTER_S = JOB_STALE_AFTER_S
    settings.JOB_HEARTBEAT_INTERVAL_S = JOB_HEARTBEAT_INTERVAL_S
    # Tests keep their backups in their own temporary directories.
    settings.BACKUP_ROOTS = [settings.BACKUP_DIR, tempfile.gettempdir()]
    # The suite's pgBackRest configuration is one a physical backup policy may name.
    settings.PITR_PGBACKREST_CONFIGS = [*settings.PITR_PGBACKREST_CONFIGS, env["PGBACKREST_CONFIG"]]
    # Test users need no slow password hashing.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Django may have been set up before this module set POOL_PUBLISHER_ENABLED: make sure the
    # test process publishes pool figures only when a test asks (pools.publish_once()).
    from console import engines

    engines.pool_publisher = None
    with django_db_blocker.unblock():
        call_command("migrate", verbosity=0)


class Worker:
    """A real Celery worker process (prefork) on one queue, which a test may SIGKILL and start again."""

    def __init__(self, fleet, logdir: Path, queue: str = "jobs", env: dict | None = None):
        self.env = {**os.environ, **console_env(fleet), **(env or {})}
        self.logdir = logdir
        self.queue = queue
        self.proc = None
        self.generation = 0

    def start(self, timeout_s: float = 60) -> None:
        self.generation += 1
        self.logfile = self.logdir / f"{self.queue}-worker-{self.generation}.log"
        with open(self.logfile, "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "console", "worker", "-P", "prefork", "-c", "2",
                    "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", self.queue,
                    "-n", f"test-{self.queue}{self.generation}@%h", "-l", "INFO",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "ready." in self.logfile.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"worker did not start:\n{self.logfile.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: no chance to ack, clean up or say goodbye."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.logfile.read_text()


@pytest.fixture(scope="session")
def worker(fleet, django_db_setup, tmp_path_factory):
    """The suite's job worker (queue "jobs")."""
    worker = Worker(fleet, tmp_path_factory.mktemp("worker"))
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def live_worker(worker):
    """The session's job worker, started again if a test killed it."""
    if worker.proc.poll() is not None:
        worker.start()
    return worker


@pytest.fixture
def worker_with(fleet, live_worker, tmp_path):
    """worker_with(env): the session's job worker swapped, for this test, for one whose settings
    (from its environment) are changed by `env`; the session's is back afterwards."""
    swapped = []

    def start(env: dict) -> Worker:
        live_worker.stop()
        worker = Worker(fleet, tmp_path, env=env)
        swapped.append(worker)
        worker.start()
        return worker

    yield start
    for worker in swapped:
        worker.stop()
    if swapped:
        live_worker.start()


@pytest.fixture
def monitor_worker(fleet, django_db_setup, tmp_path):
    """A worker on the monitor queue (samplers, alerts, the reaper), for the tests that need one."""
    worker = Worker(fleet, tmp_path, queue="monitor")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def users(db):
    from django.contrib.auth.models import Group, User

    from console import roles

    roles.ensure_groups()
    made = {}
    for role in roles.ROLES:
        user = User.objects.create_user(role, password=f"{role}-pw-123")
        user.groups.add(Group.objects.get(name=role))
        made[role] = user
    made["nobody"] = User.objects.create_user("nobody", password="nobody-pw-123")
    return made


@pytest.fixture
def demo_targets(db, fleet):
    """The demo fleet registered the way `make up` does, keyed by name."""
    from console.management.commands.bootstrap_demo import demo_targets as specs
    from console.models import Target

    made = {}
    for spec in specs(fleet.env()):
        upstream = made.get(spec.pop("upstream", None))
        made[spec["name"]] = Target.objects.create(**spec, upstream=upstream)
    return made


@pytest.fixture
def client_as(client, users):
    def login(role):
        client.force_login(users[role])
        return client

    return login


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def page(live_server):
    """A page of Debian's Chromium (never a downloaded browser) on the live console."""
    from playwright.sync_api import sync_playwright

    from django.db import connections

    with sync_playwright() as playwright:
        # Playwright runs an event loop in this thread, and Django keeps separate connections for
        # that context: one opened by an earlier browser test may have died since (a test that
        # restarts the console's PostgreSQL). Start this test on fresh ones.
        connections.close_all()
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900}, base_url=live_server.url)
        page.set_default_timeout(15_000)
        yield page
        browser.close()


@pytest.fixture
def running_session(fleet):
    """An ordinary role's session busy in pg_sleep on the demo primary: its pid. Ended afterwards."""
    import threading

    from tests.servers import application, superuser
    from tests.waiting import wait_for_backend

    session = application(fleet)
    pid = session.info.backend_pid
    thread = threading.Thread(target=lambda: _ignore_errors(session.execute, "SELECT pg_sleep(60)"), daemon=True)
    thread.start()
    with superuser(fleet) as observer:
        wait_for_backend(observer, "pid = %s AND wait_event = 'PgSleep'", [pid], what="the session to be in pg_sleep")
        yield pid
        observer.execute("SELECT pg_terminate_backend(%s)", [pid])
    thread.join(timeout=10)
    session.close()


@pytest.fixture
def blocked_session(fleet):
    """A session holding a row lock of pgbench_branches in an open transaction and another waiting
    for it: (blocker pid, waiter pid). Both ended afterwards."""
    import threading

    from tests.servers import application, superuser
    from tests.waiting import wait_for_backend

    blocker, waiter = application(fleet, autocommit=False), application(fleet)
    blocker.execute("UPDATE pgbench_branches SET filler = filler WHERE bid = 1")
    thread = threading.Thread(
        target=lambda: _ignore_errors(waiter.execute, "UPDATE pgbench_branches SET filler = filler WHERE bid = 1"),
        daemon=True,
    )
    thread.start()
    with superuser(fleet) as observer:
        wait_for_backend(observer, "pid = %s AND wait_event_type = 'Lock'", [waiter.info.backend_pid],
                         what="the second UPDATE to wait for the first one's lock")
        yield blocker.info.backend_pid, waiter.info.backend_pid
        blocker.rollback()
        thread.join(timeout=10)
    blocker.close()
    waiter.close()


def _ignore_errors(call, *args):
    try:
        call(*args)
    except Exception:  # the fixture ends the session on purpose
        pass


@pytest.fixture
def run_here():
    """Run a job in this process (the claim lets only one runner through, so the suite's worker
    taking it as well is fine) and return it once it has finished."""
    from console import jobs

    def run(job):
        jobs.execute(job.pk)
        return jobs.wait_for(job.pk)

    return run
