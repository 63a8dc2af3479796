"""Work that takes a lock on a table, tried under a short `lock_timeout` and tried again.

A DDL statement waiting for its lock queues every later query on the table behind it: waiting at
most `lock_timeout` (DDL_LOCK_TIMEOUT_MS, 1 s) bounds how long application traffic can be held
up. On SQLSTATE 55P03 (lock_not_available) the work is tried again after an exponential backoff
with jitter, DDL_LOCK_RETRIES times, then given up with a message naming what held the lock
(GitLab's with_lock_retries.rb is the model).

While a try waits, a watcher on another connection (the monitor login, which may read every
session's query) polls `pg_blocking_pids()` of the waiting backend, so each wait is reported
with the pids and queries that blocked it. If the wait ended before the watcher looked, the
holders of locks on the table are read from pg_locks right after the timeout.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import psycopg
import sqlalchemy.exc
from django.conf import settings
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

from console import engines

LOCK_NOT_AVAILABLE = "55P03"
BACKOFF_MAX_S = 10.0
QUERY_PREVIEW_CHARS = 200
T = TypeVar("T")

BLOCKERS = text(
    """
    SELECT a.pid, a.usename AS user, a.state, left(a.query, :chars) AS query,
           EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS xact_age_s
      FROM pg_stat_activity a
     WHERE a.pid = ANY(pg_blocking_pids(:pid))
     ORDER BY a.pid
    """
)
# After the timeout: who holds a lock on the table (the waiter is gone, its blockers may not be).
HOLDERS = text(
    """
    SELECT DISTINCT a.pid, a.usename AS user, a.state, left(a.query, :chars) AS query,
           EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS xact_age_s
      FROM pg_locks l
      JOIN pg_class c ON c.oid = l.relation
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.granted AND n.nspname = :schema AND c.relname = :table AND l.pid <> :pid
     ORDER BY a.pid
    """
)


class LockRetriesExhausted(Exception):
    """Every try timed out waiting for its lock; the message says who held it."""


@dataclass(frozen=True)
class Blocker:
    pid: int
    user: str | None
    state: str | None
    query: str | None
    xact_age_s: float | None

    def describe(self) -> str:
        age = f", in a transaction for {self.xact_age_s:.1f} s" if self.xact_age_s is not None else ""
        return f"pid {self.pid} ({self.user or '?'}, {self.state or '?'}{age}): {self.query or '?'}"


def is_lock_timeout(exc: BaseException) -> bool:
    original = getattr(exc, "orig", exc)
    return getattr(original, "sqlstate", None) == LOCK_NOT_AVAILABLE


def backoff_s(attempt: int, base_s: float | None = None) -> float:
    """Sleep before try `attempt + 1`: doubling from `base_s`, capped, with ±50 % jitter so that
    several waiting consoles do not come back at once."""
    base_s = settings.DDL_LOCK_BACKOFF_S if base_s is None else base_s
    return min(BACKOFF_MAX_S, base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


class _Watcher:
    """Polls the blockers of one backend from another connection while the work runs."""

    def __init__(self, target, database: str | None, pid: int, interval_s: float):
        self.target, self.database, self.pid, self.interval_s = target, database, pid, interval_s
        self.blockers: list[Blocker] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lock-watch-{pid}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with engines.connect(self.target, database=self.database, statement_timeout_ms=1000) as conn:
                    found = _blockers(conn, BLOCKERS, pid=self.pid)
            except (engines.TargetError, sqlalchemy.exc.SQLAlchemyError):
                continue  # the report is a courtesy: never let it break the work
            if found:
                self.blockers = found

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5)


def _blockers(conn: Connection, query, **params) -> list[Blocker]:
    rows = conn.execute(query, {"chars": QUERY_PREVIEW_CHARS, **params}).mappings()
    return [Blocker(**row) for row in rows]


def _holders(target, database: str | None, schema: str, table: str, pid: int) -> list[Blocker]:
    try:
        with engines.connect(target, database=database, statement_timeout_ms=1000) as conn:
            return _blockers(conn, HOLDERS, schema=schema, table=table, pid=pid)
    except (engines.TargetError, sqlalchemy.exc.SQLAlchemyError):
        return []


@contextmanager
def connection(target, *, database: str | None, autocommit: bool, lock_timeout_ms: int,
               statement_timeout_ms: int | None = None) -> Iterator[Connection]:
    """A connection of the change login with these timeouts: in a transaction committed at the
    end, or (autocommit) a session where every statement commits on its own."""
    if autocommit:
        with engines.autocommit(target, database=database, lock_timeout_ms=lock_timeout_ms,
                                statement_timeout_ms=statement_timeout_ms) as conn:
            yield conn
    else:
        with engines.connect(target, credential="change", database=database, lock_timeout_ms=lock_timeout_ms,
                             statement_timeout_ms=statement_timeout_ms) as conn:
            yield conn


def run(
    target,
    work: Callable[[Connection], T],
    *,
    what: str,
    schema: str,
    table: str,
    database: str | None = None,
    autocommit: bool = False,
    lock_timeout_ms: int | None = None,
    statement_timeout_ms: int | None = None,
    retries: int | None = None,
    log: Callable[..., None] | None = None,
) -> T:
    """`work(conn)` on a fresh connection per try (see `connection`), each try waiting at most
    `lock_timeout_ms` for a lock, retried on 55P03 up to `retries` times. `log(message, level)`
    hears of each wait with its blockers, and of the giving up."""
    lock_timeout_ms = lock_timeout_ms or settings.DDL_LOCK_TIMEOUT_MS
    retries = settings.DDL_LOCK_RETRIES if retries is None else retries
    tries = retries + 1
    log = log or (lambda message, level="info": None)
    interval_s = max(0.05, min(0.25, lock_timeout_ms / 1000 / 4))
    blockers: list[Blocker] = []
    for attempt in range(1, tries + 1):
        pid = None
        try:
            with connection(target, database=database, autocommit=autocommit, lock_timeout_ms=lock_timeout_ms,
                            statement_timeout_ms=statement_timeout_ms) as conn:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
                with _Watcher(target, database, pid, interval_s) as watcher:
                    try:
                        return work(conn)
                    finally:
                        blockers = watcher.blockers
        except (sqlalchemy.exc.DBAPIError, psycopg.Error) as exc:  # through SQLAlchemy, or psycopg's own cursor
            if not is_lock_timeout(exc):
                raise
            blockers = blockers or _holders(target, database, schema, table, pid or 0)
        held_by = "; ".join(b.describe() for b in blockers) or "no session could be seen holding it"
        if attempt == tries:
            break
        sleep_s = backoff_s(attempt)
        log(f"{what}: lock not granted within {lock_timeout_ms} ms (try {attempt} of {tries}), "
            f"blocked by {held_by}; trying again in {sleep_s:.1f} s", "warning")
        time.sleep(sleep_s)
    message = (f"{what}: gave up after {tries} tries of {lock_timeout_ms} ms each waiting for a lock on "
               f"{schema}.{table}, blocked by {held_by}. Nothing was changed by the failed tries; run it "
               f"again once that session is done (or end it).")
    log(message, "error")
    raise LockRetriesExhausted(message)


def run_here(
    conn: Connection,
    work: Callable[[Connection], T],
    *,
    what: str,
    schema: str,
    table: str,
    autocommit: bool,
    lock_timeout_ms: int,
    retries: int,
    backoff_base_s: float,
    log: Callable[..., None] | None = None,
) -> T:
    """`work(conn)` on a connection the caller holds (an Alembic revision's), each try waiting at
    most `lock_timeout_ms` for a lock, retried on 55P03 like `run`. In a transaction each try is
    a SAVEPOINT rolled back on the timeout (the revision's earlier work stays); on an autocommit
    session (Alembic's autocommit_block) each statement is its own transaction anyway. The
    session's own lock_timeout is put back afterwards."""
    log = log or (lambda message, level="info": None)
    setting = sql.SQL("SET LOCAL lock_timeout = {}" if not autocommit else "SET lock_timeout = {}")
    previous = conn.exec_driver_sql("SHOW lock_timeout").scalar_one()
    conn.exec_driver_sql(setting.format(sql.Literal(f"{int(lock_timeout_ms)}ms")).as_string(None))
    tries = retries + 1
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    try:
        for attempt in range(1, tries + 1):
            savepoint = None if autocommit else conn.begin_nested()
            try:
                result = work(conn)
            except (sqlalchemy.exc.DBAPIError, psycopg.Error) as exc:
                if savepoint is not None:
                    savepoint.rollback()
                if not is_lock_timeout(exc):
                    raise
                blockers = _blockers(conn, HOLDERS, schema=schema, table=table, pid=pid)
            else:
                if savepoint is not None:
                    savepoint.commit()
                return result
            held_by = "; ".join(b.describe() for b in blockers) or "no session could be seen holding it"
            if attempt == tries:
                break
            sleep_s = backoff_s(attempt, backoff_base_s)
            log(f"{what}: lock not granted within {lock_timeout_ms} ms (try {attempt} of {tries}), "
                f"blocked by {held_by}; trying again in {sleep_s:.1f} s", "warning")
            time.sleep(sleep_s)
    finally:
        if autocommit:
            conn.exec_driver_sql(sql.SQL("SET lock_timeout = {}").format(sql.Literal(previous)).as_string(None))
    message = (f"{what}: gave up after {tries} tries of {lock_timeout_ms} ms each waiting for a lock on "
               f"{schema}.{table}, blocked by {held_by}. Nothing was changed by the failed tries; run it "
               f"again once that session is done (or end it).")
    log(message, "error")
    raise LockRetriesExhausted(message)
