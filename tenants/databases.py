"""Connections to database-per-tenant databases, and the one way tenant code reaches a tenant.

A tenant database lives on its target's server but is not the target's database, so it gets an
engine of its own: per process, created lazily under a lock, with a pool of one (a server has room
for few idle connections per database) that grows by the target's overflow while busy. The
target's credentials and connect arguments are reused; statement and lock timeouts are set per
transaction, as for every target connection.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from console import engines
from console.secrets import SecretUnavailable

_lock = threading.Lock()
_engines: dict[tuple[int, str], tuple[str, Engine]] = {}


def engine_for(target, database: str) -> Engine:
    """The engine for one tenant database (never the target's own: use console.engines)."""
    fingerprint = target.connection_fingerprint()
    key = (target.pk, database)
    with _lock:
        current = _engines.get(key)
        if current and current[0] == fingerprint:
            return current[1]
        if current:
            current[1].dispose()
        url = engines.engine_for(target).url.set(database=database)
        engine = sqlalchemy.create_engine(
            url,
            pool_size=1,
            max_overflow=target.max_overflow,
            pool_timeout=target.pool_timeout_s,
            pool_recycle=target.pool_recycle_s,
            pool_pre_ping=True,
            connect_args=engines._connect_args(target),
            logging_name=f"{target.name}/{database}",
            hide_parameters=True,
        )
        _engines[key] = (fingerprint, engine)
        return engine


def forget(target_id: int, database: str) -> None:
    with _lock:
        current = _engines.pop((target_id, database), None)
    if current:
        current[1].dispose()


def dispose_all(close: bool = True) -> None:
    with _lock:
        found = [engine for _fp, engine in _engines.values()]
        _engines.clear()
    for engine in found:
        engine.dispose(close=close)


@contextmanager
def connect(target, database: str | None = None, *, statement_timeout_ms: int | None = None,
            lock_timeout_ms: int | None = None, rollback: bool = False,
            isolation_level: str | None = None) -> Iterator[Connection]:
    """Like engines.connect(target), into `database` on the target's server when given, and with
    another isolation level when asked (a dump reads every table in one snapshot)."""
    if database is None and isolation_level is None:
        with engines.connect(target, statement_timeout_ms=statement_timeout_ms,
                             lock_timeout_ms=lock_timeout_ms, rollback=rollback) as conn:
            yield conn
        return
    from django.conf import settings

    try:
        engine = engines.engine_for(target) if database is None else engine_for(target, database)
        conn = engine.connect()
    except (sqlalchemy.exc.SQLAlchemyError, SecretUnavailable, OSError) as exc:
        raise engines._explain(target, exc) from exc
    with conn:
        if isolation_level:
            conn = conn.execution_options(isolation_level=isolation_level)
        transaction = conn.begin()
        try:
            conn.execute(
                text("SELECT set_config('statement_timeout', :st, true), set_config('lock_timeout', :lt, true)"),
                {"st": f"{statement_timeout_ms or settings.TARGET_STATEMENT_TIMEOUT_MS}ms",
                 "lt": f"{lock_timeout_ms or settings.TARGET_LOCK_TIMEOUT_MS}ms"},
            )
            yield conn
        except BaseException:
            transaction.rollback()
            raise
        if rollback:
            transaction.rollback()
        else:
            transaction.commit()


@contextmanager
def autocommit(target) -> Iterator[Connection]:
    """A connection to the target's database outside any transaction (CREATE/DROP DATABASE)."""
    try:
        conn = engines.engine_for(target).connect()
    except (sqlalchemy.exc.SQLAlchemyError, SecretUnavailable, OSError) as exc:
        raise engines._explain(target, exc) from exc
    with conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def connect_tenant(tenant, **options):
    """A transaction where the tenant lives: its own database, or its target's."""
    return connect(tenant.target, tenant.database_name, **options)
