"""Fleet Console benchmarks.

`python -m bench` runs every module `bench/bench_*.py`; `python -m bench NAME ...` runs only those
(NAME is the module name without `bench_`). One throw-away local fleet (scripts/localfleet.py,
fast mode) serves the whole run: its environment is exported before Django is set up, the console
DB is migrated, each module's `run(ctx) -> dict[str, float]` is called, the figures are merged into
bench/results.json and printed, and the fleet is destroyed at the end, whatever happened.

Nothing here imports Django or the console at import time: benchmark modules are imported only
after django.setup(), so they may import console code at module level.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pkgutil
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_PATH = BENCH_DIR / "results.json"
MODULE_PREFIX = "bench_"

if str(REPO_ROOT) not in sys.path:  # `scripts` and `console` live at the repository root
    sys.path.insert(0, str(REPO_ROOT))

from scripts import localfleet  # noqa: E402  (standard library only)


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


@dataclass(frozen=True)
class Context:
    """What a benchmark gets: the run's fleet, and how to reach its servers.

    The fleet's environment (FLEET_*, CONSOLE_DB_*, REDIS_URL) is already in os.environ, Django is
    set up and the console DB is migrated.
    """

    fleet: localfleet.Fleet
    host: str = "127.0.0.1"
    superuser: str = "postgres"
    # Environment variable holding the superuser password: use it as a Target's password_env.
    password_env: str = "FLEET_PG_PASSWORD"
    # The fleet's monitor login (pg_monitor, not a superuser; on every server), as real targets use it.
    monitor_user: str = "fleet_monitor"
    monitor_password_env: str = "FLEET_MONITOR_PASSWORD"

    @property
    def password(self) -> str:
        return self.fleet.superuser_password

    @property
    def root(self) -> Path:
        return Path(self.fleet.root)

    def port(self, name: str) -> int:
        """Port of one of localfleet.PORT_NAMES: console, primary, replica, scratch, bouncer, redis."""
        return self.fleet.port(name)

    def conninfo(self, server: str = "primary", dbname: str = "postgres", **params) -> str:
        """A libpq connection string for a raw psycopg connection as the superuser."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port(server),
            dbname=dbname,
            user=self.superuser,
            password=self.password,
            **params,
        )

    def ensure_databases(self, server: str, names: list[str]) -> None:
        """CREATE DATABASE (as the superuser) each of `names` that the server does not have yet."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.conninfo(server), autocommit=True) as admin:
            existing = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def log(self, message: str) -> None:
        log(message)


def available() -> list[str]:
    """Benchmark names, from the file names (nothing is imported)."""
    return sorted(
        info.name[len(MODULE_PREFIX):]
        for info in pkgutil.iter_modules([str(BENCH_DIR)])
        if info.name.startswith(MODULE_PREFIX) and not info.ispkg
    )


def _checked_figures(name: str, figures) -> dict[str, float]:
    if not isinstance(figures, dict):
        raise TypeError(f"bench_{name}.run() returned {type(figures).__name__}, not a dict")
    for key, value in figures.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"bench_{name}.run(): figure name {key!r} is not a non-empty string")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"bench_{name}.run(): figure {key} = {value!r} is not a finite number")
    return dict(figures)


def load_results(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log(f"warning: {path} is unreadable ({exc}); starting it afresh")
        return {}
    if not isinstance(data, dict):
        log(f"warning: {path} does not hold a JSON object; starting it afresh")
        return {}
    return data


def merge_results(path: Path, figures: dict[str, float]) -> dict[str, float]:
    """Keep figures of other benchmarks, overwrite the re-measured ones; atomic write."""
    merged = {**load_results(path), **figures}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(merged.items())), indent=2) + "\n")
    os.replace(tmp, path)
    return merged


def _raise_system_exit(signum, _frame):
    raise SystemExit(128 + signum)


def _setup_django(fleet: localfleet.Fleet) -> None:
    os.environ.update(fleet.env())
    os.environ["DJANGO_SETTINGS_MODULE"] = "console.settings"
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    connections.close_all()


def _close_connections() -> None:
    """Let go of the fleet's servers before they are stopped (best effort)."""
    engines = sys.modules.get("console.engines")
    if engines is not None:
        try:
            engines.dispose_all()
        except Exception as exc:  # noqa: BLE001
            log(f"warning: disposing engines failed: {exc}")
    if "django.db" in sys.modules:
        try:
            from django.db import connections

            connections.close_all()
        except Exception as exc:  # noqa: BLE001
            log(f"warning: closing Django connections failed: {exc}")


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (pid 1 may be slow to reap it)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _teardown(fleet: localfleet.Fleet) -> None:
    """localfleet.down(), then make sure no PostgreSQL server of the fleet survived it (signals as
    a last resort: the directories are about to go), then localfleet.destroy()."""
    postmasters = {name: _postmaster_pid(fleet.path("pg", name)) for name in ("replica", "primary", "scratch", "console")}
    try:
        localfleet.down(fleet)
    except Exception as exc:  # noqa: BLE001
        log(f"warning: stopping the fleet failed: {exc}")
    for name, pid in postmasters.items():
        if pid is None:
            continue
        for signum in (None, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            if signum is not None:
                log(f"warning: {name}: postmaster {pid} still running; sending {signal.Signals(signum).name}")
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
            if _wait_gone(pid, 5.0):
                break
        else:
            log(f"warning: {name}: postmaster {pid} is still running")
    localfleet.destroy(fleet)


def run(names: list[str], results_path: Path = RESULTS_PATH) -> int:
    """Run the named benchmarks against one throw-away fleet; 0 if all of them succeeded."""
    # SIGTERM (and SIGHUP) must unwind through the finally below, like Ctrl-C does.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_system_exit)
    root = tempfile.mkdtemp(prefix="fleet-bench-")
    fleet = None
    figures: dict[str, float] = {}
    failed: list[str] = []
    try:
        fleet = localfleet.load_or_create(root, None, fast=True)
        started = time.perf_counter()
        localfleet.up(fleet, demo_data=False)
        _setup_django(fleet)
        log(f"fleet ready under {root} in {time.perf_counter() - started:.1f}s")
        ctx = Context(fleet)
        for name in names:
            log(f"{name}: running")
            started = time.perf_counter()
            try:
                module = importlib.import_module(f"bench.{MODULE_PREFIX}{name}")
                measured = _checked_figures(name, module.run(ctx))
            except Exception:  # noqa: BLE001  (report, go on with the others, fail at the end)
                traceback.print_exc()
                log(f"{name}: FAILED after {time.perf_counter() - started:.1f}s")
                failed.append(name)
                continue
            for key in measured.keys() & figures.keys():
                log(f"warning: figure {key} measured again by {name}; keeping the latest")
            figures.update(measured)
            log(f"{name}: done in {time.perf_counter() - started:.1f}s")
    finally:
        # A second SIGTERM must not cut the teardown short (Ctrl-C still can).
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        _close_connections()
        if fleet is not None:
            _teardown(fleet)
        else:
            shutil.rmtree(root, ignore_errors=True)

    if figures:
        merge_results(results_path, figures)
        width = max(len(key) for key in figures)
        print()
        for key, value in sorted(figures.items()):
            print(f"  {key:<{width}}  {value:g}")
        print(f"\n(merged into {results_path})")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(names)}")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH, help="results file (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(names))
        return 0
    unknown = [name for name in args.names if name not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names) or 'none'}")
    selected = list(dict.fromkeys(args.names)) or names
    if not selected:
        log("no benchmarks found")
        return 1
    return run(selected, args.results)
