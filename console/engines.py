"""One SQLAlchemy engine per target per process.

Engines are created lazily under a lock, ping a connection before use only when it may be dead
(idle for long, or with bytes waiting on its socket), recycle connections, give up on a checkout
after the target's pool timeout and on a connect after its connect timeout. The default statement
and lock timeouts are the session's own on direct connections; other values are set per use,
inside the transaction, and behind PgBouncer in transaction mode (where prepared statements are
turned off) always. A changed target gets a new engine;
worker processes dispose of inherited engines after fork.
"""

from __future__ import annotations

import os
import select
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import sqlalchemy
from django.conf import settings
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool

from console.secrets import SecretUnavailable, driver_message, redact


class TargetError(Exception):
    """Something went wrong talking to a target; the message says what to do next."""


class PoolExhausted(TargetError):
    pass


class TargetUnavailable(TargetError):
    pass


_lock = threading.Lock()
# (target id, database, credential): database None is the target's own; others are databases on
# the same server (database-per-tenant). credential is "monitor" or "change" (see Target.credential).
_engines: dict[tuple[int, str | None, str], tuple[str, Engine]] = {}
_one_connection_per_target = False  # see keep_one_connection_per_target()


@dataclass
class PoolCounters:
    """What this process's engine for one target went through since it started."""

    target_name: str
    checkouts: int = 0
    checkout_timeouts: int = 0
    checkout_wait_s_total: float = 0.0
    checkout_wait_s_max: float = 0.0
    hold_s_total: float = 0.0


_counters: dict[int, PoolCounters] = {}
_counters_lock = threading.Lock()

# Set by the monitors app: called with (target_id, duration_ms, statement) for slow statements,
# and started once per process to publish pool figures.
slow_statement_sink = None
pool_publisher = None
_publisher_pid = None


def _count(target, **changes) -> None:
    with _counters_lock:
        counters = _counters.setdefault(target.pk, PoolCounters(target.name))
        for name, value in changes.items():
            if name == "checkout_wait_s_max":
                counters.checkout_wait_s_max = max(counters.checkout_wait_s_max, value)
            else:
                setattr(counters, name, getattr(counters, name) + value)


def pool_figures() -> dict[int, dict]:
    """Pool state and counters of every engine of this process, by target id."""
    figures = {}
    for target_id, engine in engines_snapshot().items():
        pool = engine.pool
        counters = _counters.get(target_id) or PoolCounters("")
        figures[target_id] = {
            "size": pool.size(),
            "max_overflow": pool._max_overflow,
            "checked_in": pool.checkedin(),
            "checked_out": pool.checkedout(),
            "overflow": max(0, pool.overflow()),
            "checkouts_total": counters.checkouts,
            "checkout_timeouts_total": counters.checkout_timeouts,
            "checkout_wait_s_total": counters.checkout_wait_s_total,
            "checkout_wait_s_max": counters.checkout_wait_s_max,
            "hold_s_total": counters.hold_s_total,
        }
    return figures


def _start_publisher() -> None:
    global _publisher_pid
    if pool_publisher is None or _publisher_pid == os.getpid():
        return
    _publisher_pid = os.getpid()
    threading.Thread(target=pool_publisher, name="pool-publisher", daemon=True).start()


def _watch_slow_statements(engine: Engine, target) -> None:
    target_id = target.pk
    threshold_s = settings.CONSOLE_SLOW_STATEMENT_MS / 1000

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def _started(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("statement_started", []).append(time.perf_counter())

    @sqlalchemy.event.listens_for(engine, "after_cursor_execute")
    def _finished(conn, cursor, statement, parameters, context, executemany):
        started = conn.info["statement_started"].pop()
        elapsed_s = time.perf_counter() - started
        if elapsed_s >= threshold_s and slow_statement_sink is not None:
            slow_statement_sink(target_id, elapsed_s * 1000, statement)


def _url(target, database: str | None = None, credential: str = "monitor") -> URL:
    login = target.credential(credential)
    return URL.create(
        "postgresql+psycopg",
        username=login.username,
        password=login.password(),
        host=target.host,
        port=target.port,
        database=database or target.dbname,
    )


def _connect_args(target) -> dict:
    args = {
        "connect_timeout": target.connect_timeout_s or settings.TARGET_CONNECT_TIMEOUT_S,
        "application_name": f"{settings.ENGINE_APPLICATION_NAME}:{target.name}"[:63],
        "require_auth": settings.TARGET_REQUIRE_AUTH,
    }
    if target.behind_pgbouncer:
        # Transaction pooling hands each transaction any server connection: no prepared statements,
        # and no session defaults (PgBouncer refuses startup options; a SET would leak).
        args["prepare_threshold"] = None
    else:
        # The default timeouts are the session's own, so a use that keeps them sends nothing.
        statement_timeout_ms, lock_timeout_ms = _session_timeouts(target)
        args["options"] = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={lock_timeout_ms}"
    return args


def _ping_only_when_in_doubt(engine: Engine) -> None:
    """Pre-ping a pooled connection only when it may be dead: idle for longer than
    ENGINE_PING_AFTER_IDLE_S, or with bytes waiting on its socket while no query is in flight (a
    terminated backend says goodbye that way; so does a server reloading its settings, harmlessly).
    A failed ping makes the pool replace the connection before anyone uses it."""
    idle_s = settings.ENGINE_PING_AFTER_IDLE_S

    @sqlalchemy.event.listens_for(engine, "connect")
    def _fresh(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "checkin")
    def _returned(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, proxy):
        idle_since = record.info.get("idle_since", 0.0)
        if time.monotonic() - idle_since <= idle_s and not _bytes_waiting(dbapi_conn):
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise sqlalchemy.exc.DisconnectionError(f"pre-ping failed: {exc}") from exc
        if not alive:
            raise sqlalchemy.exc.DisconnectionError("pre-ping failed")


def _bytes_waiting(dbapi_conn) -> bool:
    try:
        readable, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _create_engine(target, database: str | None = None, credential: str = "monitor") -> Engine:
    engine = sqlalchemy.create_engine(
        _url(target, database, credential),
        # A server has room for few idle connections per extra database: keep one, grow while busy.
        # The target's own database keeps its pool, for each login (jobs fan out over tenants on
        # the change login: each thread keeps its connection for all its tenants).
        pool_size=1 if _one_connection_per_target or database else target.pool_size,
        max_overflow=0 if _one_connection_per_target else target.max_overflow,
        pool_timeout=target.pool_timeout_s,
        pool_recycle=target.pool_recycle_s,
        pool_use_lifo=True,
        connect_args=_connect_args(target),
        logging_name=f"{target.name}/{database or target.dbname}/{credential}",
        hide_parameters=True,
    )
    _ping_only_when_in_doubt(engine)
    _watch_slow_statements(engine, target)
    engine.session_timeouts_ms = _session_timeouts(target)
    return engine


def engine_for(target, database: str | None = None, credential: str = "monitor") -> Engine:
    """The engine for the target's database, or for another database on the same server, logged
    in with the target's monitor or change credential."""
    key = (target.pk, database, credential)
    fingerprint = target.connection_fingerprint()
    current = _engines.get(key)
    if current and current[0] == fingerprint:
        return current[1]
    with _lock:
        current = _engines.get(key)
        if current and current[0] == fingerprint:
            return current[1]
        if current:
            current[1].dispose()
        engine = _create_engine(target, database, credential)
        _engines[key] = (fingerprint, engine)
    _start_publisher()
    return engine


def keep_one_connection_per_target(on: bool) -> None:
    """For a process that samples a large fleet: from now on its engines hold at most one
    connection each (pool_size 1, no overflow), and `release()` closes it after use. Engines of the
    other shape are let go when this changes."""
    global _one_connection_per_target
    if on != _one_connection_per_target:
        dispose_all()
        _one_connection_per_target = on


def release(target_id: int) -> None:
    """Close the idle connections of a target's engines, keeping the engines (and their counters):
    the next use connects again. Only for connections nobody else in the process is using."""
    with _lock:
        engines = [engine for key, (_fp, engine) in _engines.items() if key[0] == target_id]
    for engine in engines:
        engine.dispose()


def forget(target_id: int, database: str | None = None) -> None:
    """Drop the engine of one database of a target, or (no database given) all of them."""
    with _lock:
        keys = [k for k in _engines if k[0] == target_id and (database is None or k[1] == database)]
        dropped = [_engines.pop(k)[1] for k in keys]
    for engine in dropped:
        engine.dispose()


def dispose_all(close: bool = True) -> None:
    """close=False after fork: drop the parent's connections without touching their sockets."""
    with _lock:
        engines = [engine for _fp, engine in _engines.values()]
        _engines.clear()
    with _counters_lock:
        _counters.clear()
    for engine in engines:
        engine.dispose(close=close)


def engines_snapshot() -> dict[int, Engine]:
    """The monitor engines of the targets' own databases (what pages and samplers use), by target id."""
    return {
        target_id: engine
        for (target_id, database, credential), (_fp, engine) in list(_engines.items())
        if database is None and credential == "monitor"
    }


def _explain(target, exc: Exception) -> TargetError:
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return PoolExhausted(
            f"{target.name}: no connection free after {target.pool_timeout_s:g} s "
            f"(pool_size {target.pool_size} + max_overflow {target.max_overflow} all checked out). "
            "Raise the pool size or find what holds connections."
        )
    if isinstance(exc, SecretUnavailable):
        return TargetUnavailable(f"{target.name}: {exc}")
    message = driver_message(exc)
    if "authentication method requirement" in message:
        message += (
            f" (the console accepts only {settings.TARGET_REQUIRE_AUTH}, TARGET_REQUIRE_AUTH: give this "
            "role a SCRAM password and a scram-sha-256 line in pg_hba.conf)"
        )
    return TargetUnavailable(f"{target.name}: {redact(message, *target.known_passwords())}")


def _session_timeouts(target) -> tuple[int, int] | None:
    """The timeouts a direct connection starts its sessions with (None behind PgBouncer)."""
    if target.behind_pgbouncer:
        return None
    return int(settings.TARGET_STATEMENT_TIMEOUT_MS), int(settings.TARGET_LOCK_TIMEOUT_MS)


def _set_timeouts(
    conn: Connection, statement_timeout_ms: int | None, lock_timeout_ms: int | None,
    session_timeouts: tuple[int, int] | None = None,
) -> None:
    """The transaction's timeouts: nothing to send when they are the session's own."""
    wanted = (statement_timeout_ms or settings.TARGET_STATEMENT_TIMEOUT_MS, lock_timeout_ms or settings.TARGET_LOCK_TIMEOUT_MS)
    if session_timeouts is not None and tuple(wanted) == session_timeouts:
        return
    conn.execute(
        text(
            "SELECT set_config('statement_timeout', :statement_timeout, true),"
            " set_config('lock_timeout', :lock_timeout, true)"
        ),
        {"statement_timeout": f"{wanted[0]}ms", "lock_timeout": f"{wanted[1]}ms"},
    )


def _checkout(target, database: str | None = None, credential: str = "monitor") -> Connection:
    try:
        return engine_for(target, database, credential).connect()
    except (sqlalchemy.exc.SQLAlchemyError, SecretUnavailable, OSError) as exc:
        if isinstance(exc, sqlalchemy.exc.TimeoutError):
            _count(target, checkout_timeouts=1)
        raise _explain(target, exc) from exc


@contextmanager
def connect(
    target,
    *,
    credential: str = "monitor",
    database: str | None = None,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    rollback: bool = False,
    isolation_level: str | None = None,
) -> Iterator[Connection]:
    """A pooled connection in a transaction with its own timeouts; rolled back if asked.
    `credential` is "monitor" (pages, samplers, EXPLAIN: the default) or "change" (jobs that change
    schema or data); `database` reaches another database on the target's server; `isolation_level`
    changes the transaction's (a dump reads every table in one REPEATABLE READ snapshot)."""
    started = time.perf_counter()
    conn = _checkout(target, database, credential)
    checked_out = time.perf_counter()
    wait_s = checked_out - started
    _count(target, checkouts=1, checkout_wait_s_total=wait_s, checkout_wait_s_max=wait_s)
    try:
        with conn:
            if isolation_level:
                conn = conn.execution_options(isolation_level=isolation_level)
            transaction = conn.begin()
            try:
                _set_timeouts(conn, statement_timeout_ms, lock_timeout_ms, conn.engine.session_timeouts_ms)
                yield conn
            except BaseException:
                transaction.rollback()
                raise
            if rollback:
                transaction.rollback()
            else:
                transaction.commit()
    finally:
        _count(target, hold_s_total=time.perf_counter() - checked_out)


@contextmanager
def session(
    target,
    *,
    credential: str = "change",
    database: str | None = None,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
) -> Iterator[Connection]:
    """A pooled connection of its own server session, outside any transaction: the caller begins
    and commits (Alembic, one transaction per revision; CREATE INDEX CONCURRENTLY between them).
    Never through PgBouncer's transaction pool (a session there is any server connection): a
    PgBouncer target's work goes to its primary. The timeouts hold for the whole session; whatever
    the session set (search_path, settings, advisory locks) is reset before the connection goes back."""
    server = target.upstream if target.behind_pgbouncer and target.upstream_id else target
    with _checkout(server, database, credential) as conn:
        try:
            _set_session_timeouts(conn, statement_timeout_ms, lock_timeout_ms)
            conn.commit()
            yield conn
        finally:
            _reset_session(conn)


@contextmanager
def autocommit(target, *, credential: str = "change", database: str | None = None,
               statement_timeout_ms: int | None = None, lock_timeout_ms: int | None = None) -> Iterator[Connection]:
    """A session where every statement commits on its own (CREATE/DROP DATABASE, CREATE INDEX
    CONCURRENTLY, VALIDATE CONSTRAINT in its own transaction), with its own timeouts."""
    with session(target, credential=credential, database=database, statement_timeout_ms=statement_timeout_ms,
                 lock_timeout_ms=lock_timeout_ms) as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def _set_session_timeouts(conn: Connection, statement_timeout_ms: int | None, lock_timeout_ms: int | None) -> None:
    if statement_timeout_ms is None and lock_timeout_ms is None:
        return
    conn.execute(
        text("SELECT set_config('statement_timeout', :statement_timeout, false), set_config('lock_timeout', :lock_timeout, false)"),
        {
            "statement_timeout": f"{statement_timeout_ms or settings.TARGET_STATEMENT_TIMEOUT_MS}ms",
            "lock_timeout": f"{lock_timeout_ms or settings.TARGET_LOCK_TIMEOUT_MS}ms",
        },
    )


def _reset_session(conn: Connection) -> None:
    """Back to the session's start: settings (RESET ALL keeps the startup options) and locks."""
    if conn.invalidated or conn.closed:
        return
    try:
        if conn.in_transaction():
            conn.rollback()
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("RESET ALL"))
        conn.execute(text("SELECT pg_advisory_unlock_all()"))
    except sqlalchemy.exc.SQLAlchemyError:
        conn.invalidate()  # whatever state it is in, it must not serve anyone else


@dataclass
class Probe:
    ok: bool
    latency_ms: float | None = None
    connect_ms: float | None = None
    server_version: str = ""
    in_recovery: bool | None = None
    is_superuser: bool | None = None
    change_error: str = ""
    error: str = ""


def _probe_once(target, credential: str) -> tuple[dict, float, float]:
    from console.pg import server

    started = time.perf_counter()
    engine = sqlalchemy.create_engine(
        _url(target, credential=credential), poolclass=NullPool, connect_args=_connect_args(target)
    )
    try:
        with engine.connect() as conn:
            connected = time.perf_counter()
            with conn.begin():
                _set_timeouts(conn, 2000, 1000)
                info = server.identity(conn)
                finished = time.perf_counter()
    finally:
        engine.dispose()
    return info, connected - started, finished - connected


def probe(target) -> Probe:
    """Fresh connections (not the pool's), so that the test proves the network and the logins:
    the monitor credential's always, the change credential's when the target has one."""
    errors = (sqlalchemy.exc.SQLAlchemyError, SecretUnavailable, OSError)
    try:
        info, connect_s, query_s = _probe_once(target, "monitor")
    except errors as exc:
        return Probe(ok=False, error=str(_explain(target, exc)))
    change_error = ""
    if target.change_username:
        try:
            _probe_once(target, "change")
        except errors as exc:
            change_error = f"change credential: {_explain(target, exc)}"
    return Probe(
        ok=True,
        latency_ms=round(query_s * 1000, 2),
        connect_ms=round(connect_s * 1000, 2),
        server_version=info["server_version"],
        in_recovery=info["in_recovery"],
        is_superuser=info["is_superuser"],
        change_error=change_error,
    )
