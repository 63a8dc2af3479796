"""pgBackRest, driven by the console: backups (full, diff, incr, with pgBackRest's own retention
options), `info --output=json` parsed, `check`, and `restore --type=time` into a fresh data
directory. The console never writes a backup tool of its own.

Every call is an argument list (never a shell), run as the stanza's system user: the one that owns
the data directory and the repository (`runuser` when the worker runs as root). pgBackRest reaches
PostgreSQL through its unix socket with peer authentication, so no password is involved; what it
prints is still cut to its ERROR/WARN lines and redacted before it reaches a page or a job log.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from django.conf import settings

from console.secrets import redact

BACKUP_TYPES = ("full", "diff", "incr")
# A stanza is a name pgBackRest keeps in its repository's paths.
STANZA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LABEL = re.compile(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$")


class PgBackRestFailed(Exception):
    """pgBackRest exited with an error: the message is its own ERROR lines, for an operator."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Stanza:
    """Where pgBackRest finds a target's stanza on the worker's host: its configuration file, the
    stanza's name and the system user that runs it."""

    config: str
    name: str
    run_as: str = ""

    def __post_init__(self):
        if not STANZA_NAME.match(self.name or ""):
            raise ValueError(f"not a pgBackRest stanza name: {self.name!r}")
        if not os.path.isabs(self.config or ""):
            raise ValueError(f"the pgBackRest configuration must be an absolute path, not {self.config!r}")


def refusal(stanza: Stanza) -> str:
    """Why the console will not run pgBackRest for this stanza ("" when it may): its configuration
    must be one of PITR_PGBACKREST_CONFIGS, and its user one of PITR_RUN_AS_USERS, never root."""
    if os.path.normpath(stanza.config) not in {os.path.normpath(c) for c in settings.PITR_PGBACKREST_CONFIGS}:
        return (f"{stanza.config} is not one of the pgBackRest configurations the console may use "
                f"({', '.join(settings.PITR_PGBACKREST_CONFIGS)}; the PITR_PGBACKREST_CONFIGS setting)")
    user = stanza.run_as or settings.PITR_SERVICE_USER
    if user == "root" or (stanza.run_as and stanza.run_as not in settings.PITR_RUN_AS_USERS):
        return (f"pgBackRest does not run as {stanza.run_as!r}: leave it empty ({settings.PITR_SERVICE_USER}) or name one "
                f"of {', '.join(u for u in settings.PITR_RUN_AS_USERS if u != 'root')} (the PITR_RUN_AS_USERS setting)")
    return ""


def as_user(args: list[str], user: str) -> list[str]:
    """args run as `user` when this process is root (PostgreSQL and its files refuse root)."""
    if os.geteuid() == 0 and user and user != "root":
        return ["runuser", "-u", user, "--", *args]
    return list(args)


def command(stanza: Stanza, verb: str, *options: str) -> list[str]:
    return as_user([settings.PGBACKREST_BIN, f"--config={stanza.config}", f"--stanza={stanza.name}", *options, verb],
                   stanza.run_as or settings.PITR_SERVICE_USER)


# pgBackRest quotes the lines of a file it cannot parse as its configuration: never shown.
PARSE_ERROR = re.compile(r"\[0(29|31|32|37)\]|found outside of section|at line \d+|unable to (load|parse)", re.IGNORECASE)
NOT_A_CONFIGURATION = "the file is not a pgBackRest configuration"


def said(output: str) -> str:
    """pgBackRest's ERROR and WARN lines (its console log), or the last lines when it has none;
    an error about parsing its configuration is said without the text it quotes."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    wanted = [line for line in lines if re.match(r"^(P\d+\s+)?(ERROR|WARN|ASSERT)", line)]
    if any(PARSE_ERROR.search(line) for line in lines):
        return NOT_A_CONFIGURATION
    return "\n".join(wanted or lines[-5:])[:2000]


class Stopped(Exception):
    """`stop()` said to stop: the tool was killed (its whole process group)."""


def run_tool(args: list[str], timeout_s: float, stop=None, what: str = "") -> subprocess.CompletedProcess:
    """args run to the end, or killed with its process group at the timeout or as soon as
    `stop()` returns true (polled every half second; it may raise instead, e.g. a job's
    raise_if_stopped)."""
    import signal
    import time

    what = what or os.path.basename(args[0])
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise PgBackRestFailed(f"{what} could not be started ({exc}): is it installed?") from None
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=0.5)
                return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise PgBackRestFailed(f"{what} did not finish within {timeout_s:g} s")
            if stop is not None and stop():
                raise Stopped(f"{what} stopped")
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.communicate()


def run(stanza: Stanza, verb: str, *options: str, timeout_s: float | None = None, stop=None) -> subprocess.CompletedProcess:
    refused = refusal(stanza)
    if refused:
        raise PgBackRestFailed(refused)
    timeout_s = timeout_s or settings.PGBACKREST_TIMEOUT_S
    result = run_tool(command(stanza, verb, *options), timeout_s, stop, what=f"pgbackrest {verb}")
    result.stdout, result.stderr = redact(result.stdout), redact(result.stderr)
    if result.returncode != 0:
        message = said(result.stderr + "\n" + result.stdout) or f"exit status {result.returncode}"
        raise PgBackRestFailed(f"pgbackrest {verb} failed: {message}", result.returncode)
    return result


# Backups ---------------------------------------------------------------------------------------


def backup(stanza: Stanza, kind: str, *, retention_full: int | None = None, retention_diff: int | None = None,
           timeout_s: float | None = None, stop=None) -> None:
    """One backup; pgBackRest expires what its retention options no longer keep right after it."""
    if kind not in BACKUP_TYPES:
        raise ValueError(f"a pgBackRest backup type is one of {', '.join(BACKUP_TYPES)}, not {kind!r}")
    options = [f"--type={kind}"]
    if retention_full:
        options += ["--repo1-retention-full-type=count", f"--repo1-retention-full={int(retention_full)}"]
    if retention_diff:
        options.append(f"--repo1-retention-diff={int(retention_diff)}")
    run(stanza, "backup", *options, timeout_s=timeout_s, stop=stop)


def check(stanza: Stanza, timeout_s: float | None = None) -> None:
    """pgBackRest's own check: the configuration, the repository, and a WAL switch archived now
    (so every commit made until now can be replayed from the repository)."""
    run(stanza, "check", timeout_s=timeout_s)


@dataclass
class BackupInfo:
    label: str
    type: str
    started_at: datetime
    stopped_at: datetime
    size_bytes: int  # of the database
    delta_bytes: int  # what this backup copied
    repo_size_bytes: int  # in the repository (compressed)
    repo_delta_bytes: int
    wal_start: str
    wal_stop: str
    lsn_start: str
    lsn_stop: str
    prior: str | None
    error: bool


@dataclass
class StanzaInfo:
    name: str
    status_code: int
    status: str
    backups: list[BackupInfo] = field(default_factory=list)
    wal_min: str | None = None
    wal_max: str | None = None
    system_id: int | None = None  # the db-system-id of the stanza's current database

    def newest(self) -> BackupInfo | None:
        return self.backups[-1] if self.backups else None

    def before(self, moment: datetime) -> BackupInfo | None:
        """The newest backup that had stopped by `moment`: what a restore to that moment starts from."""
        done = [b for b in self.backups if b.stopped_at <= moment and not b.error]
        return done[-1] if done else None


def _moment(epoch: int) -> datetime:
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc)


def parse_info(document: list[dict], name: str) -> StanzaInfo:
    entry = next((s for s in document if s.get("name") == name), None)
    if entry is None:
        return StanzaInfo(name=name, status_code=-1, status="the stanza is not in pgbackrest info's output")
    backups = []
    for b in entry.get("backup", []):
        info = b.get("info", {})
        repository = info.get("repository", {})
        backups.append(BackupInfo(
            label=b["label"], type=b["type"],
            started_at=_moment(b["timestamp"]["start"]), stopped_at=_moment(b["timestamp"]["stop"]),
            size_bytes=int(info.get("size") or 0), delta_bytes=int(info.get("delta") or 0),
            repo_size_bytes=int(repository.get("size") or 0), repo_delta_bytes=int(repository.get("delta") or 0),
            wal_start=(b.get("archive") or {}).get("start") or "", wal_stop=(b.get("archive") or {}).get("stop") or "",
            lsn_start=(b.get("lsn") or {}).get("start") or "", lsn_stop=(b.get("lsn") or {}).get("stop") or "",
            prior=b.get("prior"), error=bool(b.get("error")),
        ))
    backups.sort(key=lambda b: (b.stopped_at, b.label))
    archives = [a for a in entry.get("archive", []) if a.get("min")]
    status = entry.get("status", {})
    databases = sorted(entry.get("db") or [], key=lambda d: d.get("id") or 0)
    current = databases[-1] if databases else {}
    return StanzaInfo(
        name=name, status_code=int(status.get("code", -1)), status=status.get("message", ""), backups=backups,
        wal_min=min((a["min"] for a in archives), default=None), wal_max=max((a["max"] for a in archives), default=None),
        system_id=int(current["system-id"]) if current.get("system-id") else None,
    )


def system_identifier(conn) -> int:
    """The server's system identifier (a streaming replica has its primary's): what a stanza's
    db-system-id must be for the stanza to be that server's."""
    from sqlalchemy import text

    return int(conn.execute(text("SELECT system_identifier FROM pg_control_system()")).scalar_one())


def info(stanza: Stanza) -> StanzaInfo:
    import json

    result = run(stanza, "info", "--output=json", timeout_s=settings.PGBACKREST_INFO_TIMEOUT_S)
    try:
        document = json.loads(result.stdout)
    except ValueError as exc:
        raise PgBackRestFailed(f"pgbackrest info printed no JSON: {exc}") from None
    return parse_info(document, stanza.name)


# Restores --------------------------------------------------------------------------------------


def restore(stanza: Stanza, data_dir: Path, target: datetime, *, backup_label: str | None = None,
            timeout_s: float | None = None, stop=None) -> None:
    """Restore into `data_dir` (empty, owned by the stanza's user), recovering to `target` and
    pausing there (recovery_target_action=pause): a hot standby a drill can look at."""
    if target.tzinfo is None:
        raise ValueError("a recovery target needs a time zone")
    if backup_label is not None and not LABEL.match(backup_label):
        raise ValueError(f"not a pgBackRest backup label: {backup_label!r}")
    options = [f"--pg1-path={data_dir}", "--type=time", f"--target={target.astimezone(timezone.utc).isoformat(sep=' ')}",
               "--target-action=pause", f"--process-max={settings.PITR_RESTORE_PROCESSES}"]
    if backup_label:
        options.append(f"--set={backup_label}")
    run(stanza, "restore", *options, timeout_s=timeout_s, stop=stop)


def wal_segment(name: str) -> bool:
    return bool(re.fullmatch(r"[0-9A-F]{24}", name or ""))
