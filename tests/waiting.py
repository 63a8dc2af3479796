"""Waiting for a state of the real servers: poll it until a deadline, never sleep a fixed time.

The deadline only bounds a broken run; a test asserts on the state it waited for, not on time."""

import time

from psycopg import sql


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    """The first truthy value of `predicate()`; an AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def wait_for_backend(conn, condition: str, params=(), *, what: str, timeout_s: float = 15) -> list[tuple]:
    """Rows (pid, state, wait_event_type, wait_event) of pg_stat_activity matching `condition`,
    polled on `conn` (autocommit, so each poll reads a fresh snapshot) until one matches."""
    query = sql.SQL(
        "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND ({})"
    ).format(sql.SQL(condition))
    return wait_until(lambda: conn.execute(query, params).fetchall(), timeout_s, what)
