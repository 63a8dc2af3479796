"""A thousand targets: full fast sampling rounds through the real dispatcher and real Celery monitor
workers (one, then two), the console's connections per server meanwhile against the server's
cap, and the fleet overview over the thousand sampled targets."""

import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import psycopg
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from bench import REPO_ROOT
from bench.bench_monitors import _overview_timings_ms, _p95
from console.models import Target
from monitors import tasks
from monitors.models import SamplerHealth, SamplingRound

TARGETS = 1000
DATABASES_PER_SERVER = 40
SERVERS = ("primary", "replica", "scratch")  # the replica streams the primary's databases
# Workers per phase, alternated so that the shared machine's drifting load hits both alike; each
# phase times ROUNDS_PER_PHASE rounds, after a warm-up round when a worker has just started.
PHASES = (1, 2, 1, 2)
ROUNDS_PER_PHASE = 2
OVERVIEW_REQUESTS = 40
WORKER_CONCURRENCY = 1  # pool processes per worker (see bench/README.md)
ROUND_TIMEOUT_S = 120


def _database(i: int) -> str:
    return f"bench_f1k_{i:02d}"


def _register_targets(ctx) -> list[Target]:
    """1,000 targets, the servers taking turns in id order (so every chunk spans all three), about
    eight per database, with the monitor login."""
    names = [_database(i) for i in range(DATABASES_PER_SERVER)]
    for server in ("primary", "scratch"):
        ctx.ensure_databases(server, names)
    with psycopg.connect(ctx.conninfo("replica"), autocommit=True) as replica:
        deadline = time.monotonic() + 60
        while replica.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'bench_f1k_%'").fetchone()[0] < len(names):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not replay the new databases within 60 s")
            time.sleep(0.2)
    Target.objects.filter(name__startswith="bench-f1k-").delete()
    specs = [(SERVERS[i % 3], (i // 3) % DATABASES_PER_SERVER) for i in range(TARGETS)]
    return Target.objects.bulk_create([
        Target(name=f"bench-f1k-{n:04d}", role=Target.Role.REPLICA if server == "replica" else Target.Role.PRIMARY,
               host=ctx.host, port=ctx.port(server), dbname=_database(db), username=ctx.monitor_user,
               password_env=ctx.monitor_password_env, tags=["bench-f1k"])
        for n, (server, db) in enumerate(specs)
    ])


class MonitorWorker:
    """A real Celery worker on the monitor queue, as a subprocess of the benchmark."""

    def __init__(self, ctx, name: str):
        self.logfile = ctx.root / f"bench-{name}.log"
        with open(self.logfile, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "console", "worker", "-P", "prefork", "-c", str(WORKER_CONCURRENCY),
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", settings.MONITOR_QUEUE,
                 "-n", f"bench-{name}@%h", "-l", "INFO"],
                cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while "ready." not in self.logfile.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"monitor worker {name} did not start:\n{self.logfile.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class ConnectionWatch:
    """Polls pg_stat_activity on every server for the console's client sessions; keeps the max."""

    COUNT = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
             " AND application_name LIKE %s")

    def __init__(self, ctx):
        self.conns = {server: psycopg.connect(ctx.conninfo(server, application_name="bench-watch"), autocommit=True)
                      for server in SERVERS}
        self.cap = {}
        for server, conn in self.conns.items():
            limits = conn.execute("SELECT current_setting('max_connections')::int,"
                                  " current_setting('superuser_reserved_connections')::int").fetchone()
            self.cap[server] = limits[0] - limits[1]
        self.max = dict.fromkeys(SERVERS, 0)
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pattern = f"{settings.ENGINE_APPLICATION_NAME}%"
        while not self._stop.wait(0.02):
            for server, conn in self.conns.items():
                self.max[server] = max(self.max[server], conn.execute(self.COUNT, (pattern,)).fetchone()[0])
            self.polls += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for conn in self.conns.values():
            conn.close()


def _timed_round() -> float:
    """Seconds from the dispatch of one fast round to its last chunk done (the console DB's clock)."""
    sent = tasks.dispatch_round(SamplerHealth.Sampler.FAST)
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while True:
        sampling_round = SamplingRound.objects.get(pk=sent["round"])
        if sampling_round.finished_at:
            failed = sum(c.failed or 0 for c in sampling_round.chunks.all())
            if failed:
                raise RuntimeError(f"{failed} targets failed in round {sampling_round.pk}")
            return sampling_round.seconds
        if time.monotonic() > deadline:
            raise RuntimeError(f"round {sampling_round.pk} did not finish within {ROUND_TIMEOUT_S} s")
        time.sleep(0.05)


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def _process_cpu_s(pids) -> float:
    """User + system CPU seconds of these processes and their pool children, from /proc."""
    hz, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in os.scandir("/proc"):
        if not stat.name.isdigit():
            continue
        try:
            fields = open(f"/proc/{stat.name}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.name) in pids or int(fields[1]) in pids:
            total += (int(fields[11]) + int(fields[12])) / hz
    return total


def _phase(ctx, workers, warm_up: bool) -> list[float]:
    warm = _timed_round() if warm_up else None  # a new worker process makes its engines
    pids = {w.proc.pid for w in workers}
    cpu_before, machine_before = _process_cpu_s(pids), _machine_cpu()
    timed = [_timed_round() for _ in range(ROUNDS_PER_PHASE)]
    cpu_s, machine = _process_cpu_s(pids) - cpu_before, _machine_cpu()
    busy_pct = 100 * (machine[0] - machine_before[0]) / max(1e-9, machine[1] - machine_before[1])
    ctx.log(f"fleet1000: {len(workers)} worker(s): {f'warm-up {warm:.2f} s, ' if warm else ''}"
            f"rounds {[round(t, 2) for t in timed]} s; workers' CPU {cpu_s / ROUNDS_PER_PHASE:.1f} s per round;"
            f" the machine's {os.cpu_count()} cores {busy_pct:.0f}% busy (every process on it, load average"
            f" {os.getloadavg()[0]:.1f})")
    return timed


def run(ctx) -> dict[str, float]:
    figures = {}
    targets = _register_targets(ctx)
    # Chunks must not expire while one worker is still on the round: it is what is measured.
    settings.MONITOR_FAST_INTERVAL_S = ROUND_TIMEOUT_S
    assert len(targets) > settings.MONITOR_RETURN_CONNECTIONS_ABOVE
    ctx.log(f"fleet1000: {len(targets)} targets over {DATABASES_PER_SERVER} databases on each of {', '.join(SERVERS)};"
            f" chunks of {settings.MONITOR_CHUNK_SIZE}, {WORKER_CONCURRENCY} process per worker")
    workers, watch, rounds = [], ConnectionWatch(ctx), {1: [], 2: []}
    try:
        for phase, count in enumerate(PHASES):
            started = len(workers) < count
            while len(workers) < count:
                workers.append(MonitorWorker(ctx, f"monitor{len(workers) + 1}-{phase}"))
            while len(workers) > count:
                workers.pop().stop()
            rounds[count] += _phase(ctx, workers, warm_up=started)
    finally:
        watch.close()
        for worker in workers:
            worker.stop()
    one, two = statistics.median(rounds[1]), statistics.median(rounds[2])
    figures["sampler_round_s_1000_targets_1_worker"] = round(one, 3)
    figures["sampler_round_s_1000_targets_2_workers"] = round(two, 3)
    figures["sampler_scaling_1_to_2_workers"] = round(one / two, 3)
    figures["console_connections_per_server_max"] = max(watch.max.values())
    figures["console_connections_per_server_cap"] = min(watch.cap.values())
    ctx.log(f"fleet1000: console connections at most {watch.max} per server (caps {watch.cap}; {watch.polls} polls)")

    user, _ = User.objects.get_or_create(username="bench-f1k-viewer", defaults={"is_superuser": True})
    client = Client()
    client.force_login(user)
    _overview_timings_ms(client, 3)  # warm-up
    timings = _overview_timings_ms(client, OVERVIEW_REQUESTS)
    figures["overview_ms_p95_1000_targets"] = round(_p95(timings), 2)
    figures["overview_ms_median_1000_targets"] = round(statistics.median(timings), 2)
    ctx.log(f"fleet1000: overview median {figures['overview_ms_median_1000_targets']} ms,"
            f" p95 {figures['overview_ms_p95_1000_targets']} ms")
    Target.objects.filter(pk__in=[t.pk for t in targets]).delete()
    return figures
