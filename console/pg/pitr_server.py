"""The throwaway PostgreSQL server of a PITR drill: a data directory pgBackRest restored into a
folder of its own (`<PITR_DRILL_DIR>/run-<id>/data`), started as the unprivileged service user on
a free loopback port, watched while it recovers, checked, then stopped and deleted.

The folder is the service user's alone (0700), and so is the server's unix socket in it: the
drill connects through that socket as the copy's superuser with `trust` (the copy's pg_hba.conf
is replaced; TCP on loopback still asks for passwords). The server never archives (archive_mode
off): the copy must never push WAL into the repository it came from.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg
from django.conf import settings
from psycopg import sql

from console.pg.pgbackrest import PgBackRestFailed, as_user, run_tool

MARKER = "fleet-console-pitr-drill"
RUN_DIR = re.compile(r"^run-(\d+)$")
SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_.]{0,62}$")
HBA = "# fleet console PITR drill: the drill's own socket only\nlocal all all trust\n"
SEGMENT_RESTORED = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
SEGMENT_BYTES = 16 * 1024 * 1024


class ServerFailed(Exception):
    """The drill's server stopped or never became usable: the message says what its log said."""


def lsn_int(lsn: str | None) -> int | None:
    if not lsn:
        return None
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_text(value: int | None) -> str:
    return "" if value is None else f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_start_lsn(segment: str) -> int:
    return (int(segment[8:16], 16) << 32) + int(segment[16:24], 16) * SEGMENT_BYTES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_directory(run_id: int) -> Path:
    return Path(settings.PITR_DRILL_DIR) / f"run-{int(run_id)}"


def marked_directories() -> dict[int, Path]:
    """The drill folders under PITR_DRILL_DIR (named run-<id>, with the marker file): run id -> path."""
    root = Path(settings.PITR_DRILL_DIR)
    found = {}
    if not root.is_dir():
        return found
    for path in root.iterdir():
        match = RUN_DIR.match(path.name)
        if match and (path / MARKER).is_file():
            found[int(match.group(1))] = path
    return found


def _chown(path: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


# What an operator may set on the drill's server: resource settings only, each with a value of its
# kind. Anything else (commands, libraries, files, includes, logging places) could run code or
# reach files as the service user, so it is refused by the policy form and again before a start.
DRILL_OWN = ("archive_mode", "archive_command", "port", "listen_addresses", "unix_socket_directories")
MEMORY = re.compile(r"^\d{1,12}\s*(B|kB|MB|GB|TB)?$")
COUNT = re.compile(r"^\d{1,7}$")
DURATION = re.compile(r"^\d{1,9}\s*(us|ms|s|min|h|d)?$")
BOOLEAN = re.compile(r"^(on|off|true|false|yes|no|1|0)$", re.IGNORECASE)
ALLOWED_SETTINGS = {
    **dict.fromkeys(("shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size", "max_wal_size",
                     "min_wal_size", "temp_buffers", "wal_buffers", "autovacuum_work_mem",
                     "logical_decoding_work_mem"), MEMORY),
    **dict.fromkeys(("max_connections", "max_worker_processes", "max_parallel_workers",
                     "max_parallel_workers_per_gather", "max_parallel_maintenance_workers",
                     "effective_io_concurrency", "maintenance_io_concurrency", "max_locks_per_transaction",
                     "autovacuum_max_workers"), COUNT),
    **dict.fromkeys(("recovery_min_apply_delay", "checkpoint_timeout", "statement_timeout"), DURATION),
    **dict.fromkeys(("jit", "autovacuum", "parallel_leader_participation"), BOOLEAN),
    "recovery_prefetch": re.compile(r"^(try|on|off)$"),
    "hash_mem_multiplier": re.compile(r"^\d{1,4}(\.\d{1,3})?$"),
}


def check_settings(extra: dict) -> dict[str, str]:
    """Settings an operator gives the drill's server (a smaller drill host: shared_buffers...):
    only those of ALLOWED_SETTINGS, each with a value of its kind."""
    checked = {}
    for name, value in (extra or {}).items():
        name, value = str(name), str(value).strip()
        if not SETTING_NAME.match(name):
            raise ValueError(f"not a PostgreSQL setting name: {name!r}")
        if name in DRILL_OWN:
            raise ValueError(f"{name} is the drill's own setting: it cannot be changed")
        if name not in ALLOWED_SETTINGS:
            raise ValueError(f"{name} cannot be set on the drill's server: only resource settings can "
                             f"({', '.join(sorted(ALLOWED_SETTINGS))})")
        if not ALLOWED_SETTINGS[name].match(value):
            raise ValueError(f"{value!r} is not a value of {name}")
        checked[name] = value
    return checked


@dataclass
class DrillServer:
    root: Path
    port: int = 0
    user: str = ""

    def __post_init__(self):
        self.root = Path(self.root)
        self.user = self.user or settings.PITR_SERVICE_USER

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def prepare(self, run_id: int) -> None:
        """A fresh, empty folder for the restore (what an earlier attempt left is removed first)."""
        remove(self.root, self.user)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root.parent, 0o755)
        self.root.mkdir(mode=0o700)
        (self.root / MARKER).write_text(f"{run_id}\n")
        self.data_dir.mkdir(mode=0o700)
        for path in (self.root, self.root / MARKER, self.data_dir):
            _chown(path, self.user)

    def start(self, extra_settings: dict | None = None) -> None:
        """Start on a free loopback port without waiting: recovery is watched by `progress()`."""
        self.port = self.port or free_port()
        (self.data_dir / "pg_hba.conf").write_text(HBA)
        own = {"port": str(self.port), "listen_addresses": "127.0.0.1", "unix_socket_directories": str(self.root),
               "archive_mode": "off", "hot_standby": "on", "logging_collector": "off",
               **check_settings(extra_settings or {})}
        with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write("\n# fleet console PITR drill\n" + "".join(f"{k} = {_quote(v)}\n" for k, v in own.items()))
        for name in ("pg_hba.conf", "postgresql.auto.conf"):
            _chown(self.data_dir / name, self.user)
        args = as_user([str(Path(settings.PITR_PG_BIN) / "pg_ctl"), "start", "-W", "-D", str(self.data_dir),
                        "-l", str(self.log_file)], self.user)
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise ServerFailed(f"pg_ctl could not start the restored copy: {(result.stderr or result.stdout).strip()}"
                               f" {self.log_tail()}")
        deadline = time.monotonic() + 30
        while not self.alive():  # pg_ctl -W returns before the postmaster wrote its pid file
            if time.monotonic() > deadline:
                raise ServerFailed(f"the restored copy's server did not start: {self.log_tail() or 'no log'}")
            time.sleep(0.05)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        wanted = [line for line in text.splitlines() if re.search(r"(FATAL|ERROR|PANIC|could not|unable to)", line)]
        return " | ".join((wanted or text.splitlines())[-lines:])[:1500]

    def last_restored_segment(self) -> str | None:
        try:
            found = SEGMENT_RESTORED.findall(self.log_file.read_text(errors="replace"))
        except OSError:
            return None
        return found[-1] if found else None

    @contextmanager
    def connect(self, dbname: str = "postgres", timeout_s: float = 5) -> Iterator[psycopg.Connection]:
        with psycopg.connect(host=str(self.root), port=self.port, user=settings.PITR_SUPERUSER, dbname=dbname,
                             autocommit=True, connect_timeout=max(1, int(timeout_s))) as conn:
            yield conn

    def recovery_state(self) -> dict:
        """Where recovery is: {"connectable", "in_recovery", "paused", "replayed_lsn", "replayed_at"}.
        Before the copy is consistent nobody may connect: the server's log says which segment it
        restored last."""
        try:
            with self.connect() as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END,"
                    " pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()").fetchone()
        except psycopg.OperationalError:
            segment = self.last_restored_segment()
            return {"connectable": False, "in_recovery": True, "paused": False,
                    "replayed_lsn": lsn_text(segment_start_lsn(segment)) if segment else "", "replayed_at": None}
        return {"connectable": True, "in_recovery": row[0], "paused": row[1] == "paused",
                "replayed_lsn": row[2] or "", "replayed_at": row[3]}

    def promote(self, timeout_s: float = 60) -> None:
        """End the paused recovery: the copy becomes writable (amcheck can be installed in it)."""
        with self.connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
            deadline = time.monotonic() + timeout_s
            while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                if time.monotonic() > deadline:
                    raise ServerFailed(f"the restored copy did not leave recovery within {timeout_s:g} s")
                time.sleep(0.1)

    def databases(self) -> list[str]:
        with self.connect() as conn:
            return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")]

    def stop(self) -> None:
        """Stop at once (the copy is thrown away): pg_ctl, then SIGKILL if it is still there."""
        if not self.alive():
            return
        args = as_user([str(Path(settings.PITR_PG_BIN) / "pg_ctl"), "stop", "-w", "-t", "30", "-m", "immediate",
                        "-D", str(self.data_dir)], self.user)
        subprocess.run(args, capture_output=True, text=True, timeout=60)
        pid = self.postmaster_pid()
        if pid and self.alive():
            os.kill(pid, signal.SIGKILL)


def remove(root: Path, user: str | None = None) -> None:
    """Stop the server of a drill folder if one runs there, and delete the folder."""
    root = Path(root)
    if not root.exists():
        return
    DrillServer(root, user=user or "").stop()
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():  # files of the service user the worker may not delete itself
        subprocess.run(as_user(["rm", "-rf", "--", str(root)], user or settings.PITR_SERVICE_USER),
                       capture_output=True, timeout=600)


def pg_amcheck(server: DrillServer, *, jobs: int, timeout_s: float, stop=None) -> list[str]:
    """pg_amcheck --heapallindexed over every database of the copy, amcheck installed where it is
    missing (the copy is the drill's own); the problems it reported (none: clean)."""
    args = [settings.BACKUP_PG_AMCHECK, "--heapallindexed", "--install-missing", "--all", f"--jobs={jobs}",
            "--no-password", "--host", str(server.root), "--port", str(server.port),
            "--username", settings.PITR_SUPERUSER]
    try:
        result = run_tool(args, timeout_s, stop, what="pg_amcheck")
    except PgBackRestFailed as exc:  # its timeout: a problem of the check, said as one
        return [str(exc)]
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0 and not lines:
        lines = [f"pg_amcheck exited with status {result.returncode}"]
    return lines[:50] if result.returncode != 0 else []


def newest_heartbeat(conn: psycopg.Connection):
    """The newest console heartbeat in the copy (console/pg/heartbeat.py's table), or None."""
    from console.pg import heartbeat

    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{heartbeat.SCHEMA}.{heartbeat.TABLE}"]).fetchone()[0]
    if not exists:
        return None
    query = sql.SQL("SELECT max(beat_at) FROM {}.{}").format(sql.Identifier(heartbeat.SCHEMA), sql.Identifier(heartbeat.TABLE))
    return conn.execute(query).fetchone()[0]
