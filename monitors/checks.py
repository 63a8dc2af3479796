"""The slow sampler: health checks of every database target (console/pg/checks.py), every
MONITOR_CHECKS_INTERVAL_S, stored per target (HealthCheckRun) for its page and the alerts.
A run that fails is recorded on the run and as the "checks" sampler's health; it never marks
a target down (the fast sampler does that)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy
from django.conf import settings
from django.utils import timezone

from console import engines
from console.models import Target
from console.pg import checks as pg_checks
from console.secrets import driver_message
from monitors import alerts, samplers
from monitors.models import HealthCheckRun, SamplerHealth


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    why: str
    columns: tuple[tuple[str, str], ...]  # (row key, heading)
    read: object  # (conn) -> rows
    informational: bool = False  # context to look at, not a problem to fix
    counted_if: str = ""  # a row's key that says it calls for attention; every row does without one

    def findings(self, rows: list[dict]) -> list[dict]:
        """The rows that call for attention (the counted ones)."""
        return [r for r in rows if r.get(self.counted_if)] if self.counted_if else rows


CHECKS = (
    Check("invalid_indexes", "Invalid indexes",
          "A CREATE or REINDEX ... CONCURRENTLY that failed leaves an INVALID index: every write still "
          "updates it, no query uses it, and a unique one enforces nothing. Rebuild it, or drop it (an index "
          "being built concurrently right now is invalid too, until it is done).",
          (("schema", "schema"), ("table_name", "table"), ("index_name", "index"), ("definition", "definition"),
           ("size_bytes", "size")),
          pg_checks.invalid_indexes),
    Check("duplicate_indexes", "Duplicate indexes",
          "An index whose columns are the leading columns of another index on the same table serves no "
          "query the other cannot: it only costs writes, space and vacuum time.",
          (("schema", "schema"), ("table_name", "table"), ("index_name", "index"), ("covered_by", "covered by"),
           ("size_bytes", "size")),
          pg_checks.duplicate_indexes),
    Check("unused_indexes", "Unused indexes",
          "Indexes never scanned since the statistics were last reset cost every write and take space. "
          "Scans on replicas are counted there, not here: check them before dropping one.",
          (("schema", "schema"), ("table_name", "table"), ("index_name", "index"), ("size_bytes", "size")),
          pg_checks.unused_indexes),
    Check("dead_tuples", "Dead tuples and vacuum",
          "Dead tuples are space that vacuum has not reclaimed yet: they bloat tables and slow scans. Old or "
          "missing (auto)vacuum and analyze times point at autovacuum falling behind or stale plans.",
          (("schema", "schema"), ("table_name", "table"), ("dead_tuples", "dead"), ("live_tuples", "live"),
           ("dead_pct", "dead %"), ("last_vacuum", "last vacuum"), ("last_autovacuum", "last autovacuum"),
           ("last_analyze", "last analyze"), ("last_autoanalyze", "last autoanalyze")),
          pg_checks.dead_tuples),
    Check("sequences", "Sequences near their limit",
          f"When a sequence (or the column it feeds) reaches its maximum, every insert fails. Listed from "
          f"{pg_checks.SEQUENCE_SHOWN_FROM_PCT:.0f}% used; the sequence_used_pct alert watches the fullest.",
          (("schema", "schema"), ("sequence_name", "sequence"), ("data_type", "type"), ("last_value", "last value"),
           ("upper_limit", "limit"), ("table_name", "table"), ("column_name", "column"), ("column_type", "column type"),
           ("used_pct", "used %")),
          pg_checks.sequences),
    Check("wraparound", "Transaction ID wraparound",
          "Each database may use 2^31 transaction IDs before its oldest unfrozen row stops it accepting "
          "writes. Past autovacuum_freeze_max_age, autovacuum runs aggressive vacuums; a high age means they "
          "cannot keep up (often a long transaction or an abandoned replication slot holds them back). Run "
          "the VACUUM in the database it names. Counted: databases past autovacuum_freeze_max_age.",
          (("database", "database"), ("xid_age", "xid age"), ("used_pct", "used %"), ("multixact_age", "multixact age"),
           ("past_freeze_max_age", "past freeze max age")),
          pg_checks.wraparound, counted_if="past_freeze_max_age"),
    Check("oldest_tables", "Tables with the oldest transaction IDs",
          "The tables of this database whose unfrozen rows are oldest: freezing them is what lowers the "
          "database's age. Counted: tables past autovacuum_freeze_max_age.",
          (("schema", "schema"), ("table_name", "table"), ("xid_age", "xid age"), ("used_pct", "used %"),
           ("total_bytes", "total size")),
          pg_checks.oldest_tables, counted_if="past_freeze_max_age"),
    Check("idle_in_transaction", "Long idle-in-transaction sessions",
          "A session idle inside a transaction holds its locks and keeps vacuum from removing rows newer than "
          "its snapshot, on every table. Set idle_in_transaction_session_timeout, or end the session.",
          (("pid", "pid"), ("username", "user"), ("database", "database"), ("application_name", "application"),
           ("idle_seconds", "idle s"), ("transaction_seconds", "transaction s"), ("last_query", "last query")),
          lambda conn: pg_checks.idle_in_transaction(conn, settings.MONITOR_LONG_RUNNING_S)),
    Check("largest_relations", "Tables and indexes by size",
          "Where the space goes: the largest tables (with their indexes and TOAST in total) and indexes.",
          (("schema", "schema"), ("name", "name"), ("kind", "kind"), ("size_bytes", "size"),
           ("total_bytes", "total size")),
          pg_checks.largest_relations, informational=True),
    Check("changed_settings", "Settings changed from their defaults",
          "What this server was told to do differently from a stock PostgreSQL, and where from: the first "
          "place to look when it behaves unlike another.",
          (("name", "name"), ("setting", "value"), ("unit", "unit"), ("default_value", "default"), ("source", "source")),
          pg_checks.changed_settings, informational=True),
)
BY_NAME = {check.name: check for check in CHECKS}
SIZE_COLUMNS = {"size_bytes", "total_bytes"}


def sample_checks_round(targets=None) -> dict:
    """Every database target's checks (PgBouncer has none), then the alerts. A target that is
    down is left until it is up again (its page keeps the last run, with its time)."""
    started = time.monotonic()
    if targets is None:
        targets = Target.objects.exclude(role=Target.Role.PGBOUNCER)
    targets = [t for t in targets if t.status != Target.Status.DOWN]
    summary = samplers._each_target(
        SamplerHealth.Sampler.CHECKS, sample_checks, targets, marks_down=False,
        return_connections=Target.objects.count() > settings.MONITOR_RETURN_CONNECTIONS_ABOVE,
    )
    alerts.evaluate(targets)
    summary["seconds"] = round(time.monotonic() - started, 3)
    return summary


class ChecksFailed(engines.TargetError):
    """Some checks failed (a timeout, a lock, a privilege); the others' rows were stored."""


def sample_checks(target: Target) -> None:
    """Run every check on the target's database and store the rows. A check that fails (in a
    savepoint of its own) leaves the others standing, as PgHero's rescue_timeout does; a run
    that fails as a whole keeps the previous findings. Either is recorded, and raised for the
    sampler's health."""
    now = timezone.now()
    findings, errors = {}, []
    try:
        with engines.connect(target, statement_timeout_ms=settings.MONITOR_CHECKS_STATEMENT_TIMEOUT_MS, rollback=True) as conn:
            for check in CHECKS:
                try:
                    with conn.begin_nested():
                        findings[check.name] = [_jsonable(row) for row in check.read(conn)]
                except sqlalchemy.exc.DBAPIError as exc:
                    if exc.connection_invalidated:
                        raise
                    errors.append(f"{check.title}: {driver_message(exc, *target.known_passwords(), with_type=True)}")
    except Exception as exc:
        HealthCheckRun.objects.update_or_create(
            target=target, defaults={"failed_at": now, "error": samplers._error_text(target, exc)})
        raise
    error = f"{target.name}: " + "; ".join(errors) if errors else ""
    HealthCheckRun.objects.update_or_create(
        target=target, defaults={"sampled_at": now, "findings": findings, "failed_at": now if errors else None, "error": error})
    if errors:
        raise ChecksFailed(error)


def _jsonable(row: dict) -> dict:
    def plain(value):
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        return value

    return {key: plain(value) for key, value in row.items()}


def cards(run: HealthCheckRun) -> list[dict]:
    """What the target page shows per check: its words, the rows as cells, and each row's fix."""
    shown = []
    for check in CHECKS:
        rows = run.findings.get(check.name)
        found = check.findings(rows or [])
        shown.append({
            "check": check,
            "failed": rows is None,  # this check failed in the last run (the run's error says why)
            "count": len(found),
            "attention": bool(found) and not check.informational,
            "headings": [heading for _, heading in check.columns],
            "rows": [{"cells": [_cell(key, row.get(key)) for key, _ in check.columns], "fix": row.get("fix", "")} for row in rows or []],
        })
    return shown


def _cell(key: str, value) -> dict:
    return {"value": value, "size": key in SIZE_COLUMNS and value is not None,
            "pct": key.endswith("_pct") and isinstance(value, float)}
