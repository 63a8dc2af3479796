"""Restore drills (`drills.drill`, `drills.backup_and_drill`) and the sweeper of scratch databases.

A drill restores an existing backup into a fresh database on a scratch server, checks the files
against the manifest first, verifies the restored copy (the same tables, row counts exactly as the
manifest, the same Alembic versions, smoke queries, pg_amcheck --heapallindexed), records each
step's time, RTO and RPO, and drops the scratch database whatever happened. A re-delivered drill
starts over in a fresh database (same run). The sweeper drops marked databases whose drill's job
is over or dead (its worker died before the `finally`).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from django.conf import settings
from django.utils import timezone
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor

from console import engines, jobs
from console.models import Job, Target
from console.pg import backup as pg_backup, tenancy
from console.secrets import driver_message, redact
from monitors.drills.backups import apply_retention, take_backup
from monitors.drills.models import Backup, DrillRun

log = logging.getLogger(__name__)

DRILL_STEPS = 7


class DrillFailed(Exception):
    """A drill (logical or PITR) ran and the copy did not pass: the message says why, for an operator."""


@contextmanager
def outcome_of(outcome: dict, *passwords: str | None):
    """Records in `outcome` (passed, reason) how a drill's steps ended, in words an operator can
    act on, and lets the exception go on; anything unforeseen becomes a DrillFailed, its message
    with `passwords` redacted. Shared by the logical and the PITR drills."""
    try:
        yield
    except DrillFailed as exc:
        outcome.update(passed=False, reason=str(exc))
        raise
    except jobs.JobCancelled:
        outcome.update(passed=False, reason="Cancelled by an operator before the drill finished: nothing was verified.")
        raise
    except jobs.ClaimLost:
        outcome.update(passed=None, reason="Handed back before it finished (paused or taken over): it starts over.")
        raise
    except Exception as exc:
        message = redact(driver_message(exc) if hasattr(exc, "orig") else str(exc), *passwords)
        outcome.update(passed=False, reason=f"The drill could not finish: {message}")
        raise DrillFailed(outcome["reason"]) from exc


class _Calls(Visitor):
    """The functions a statement calls, and whether a WITH of it changes data."""

    def __init__(self):
        self.functions: set[str] = set()
        self.changes_data = False

    def visit_FuncCall(self, parent, node):
        self.functions.add(node.funcname[-1].sval.lower())

    def visit_CommonTableExpr(self, parent, node):
        self.changes_data |= not isinstance(node.ctequery, ast.SelectStmt)


def smoke_query_calls(query: str) -> set[str]:
    """Exactly one SELECT that changes nothing (PostgreSQL's own parser), or ValueError saying why
    not; the names of the functions it calls (checked against the restored copy's catalog: none
    may be volatile, see pg_backup.volatile_functions)."""
    try:
        statements = parse_sql(query)
    except ParseError as exc:
        raise ValueError(f"not valid SQL: {exc}") from exc
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        raise ValueError("a smoke query is exactly one SELECT statement")
    calls = _Calls()
    calls(statements[0])
    if calls.changes_data:
        raise ValueError("a smoke query only reads: no INSERT, UPDATE or DELETE in its WITH")
    return calls.functions


def check_smoke_query(query: str) -> None:
    smoke_query_calls(query)


def chosen_backup(job: Job) -> Backup:
    backup_id = job.params.get("backup_id")
    if backup_id:
        backup = Backup.objects.filter(pk=backup_id).first()
        if backup is None or backup.state != Backup.State.DONE:
            raise DrillFailed(f"backup {backup_id} cannot be restored: it is missing, failed or removed by retention")
        return backup
    backups = Backup.restorable().filter(target=job.target)
    if job.tenant_id:
        backups, what = backups.filter(tenant_id=job.tenant_id), f"tenant {job.tenant.slug}"
    else:
        database = job.params.get("database") or job.target.dbname
        backups, what = backups.filter(database=database, schema=""), f"{job.target.name}/{database}"
    backup = backups.order_by("-snapshot_at", "-id").first()
    if backup is None:
        raise DrillFailed(f"{what} has no backup to restore: take one first")
    return backup


def scratch_for(job: Job, backup: Backup) -> Target:
    scratch_id = job.params.get("scratch_id") or (backup.policy.scratch_id if backup.policy else None)
    scratches = Target.objects.filter(role=Target.Role.SCRATCH)
    scratch = scratches.filter(pk=scratch_id).first() if scratch_id else scratches.order_by("name").first()
    if scratch is None:
        raise DrillFailed("no scratch server to restore into: register a target of role scratch")
    return scratch


# Verification ---------------------------------------------------------------------------------


def checksum_differences(backup: Backup) -> list[dict]:
    directory = Path(backup.path)
    if not directory.is_dir():
        return [{"check": "file", "object": str(directory), "expected": "the backup's directory", "found": "missing"}]
    expected = backup.manifest.get("files", {})
    found = pg_backup.file_checksums(directory)
    differences = []
    for name in sorted(set(expected) | set(found)):
        want, got = expected.get(name), found.get(name)
        if want is None:
            differences.append({"check": "file", "object": name, "expected": "not in the manifest", "found": "present"})
        elif got is None:
            differences.append({"check": "file", "object": name, "expected": want["sha256"], "found": "missing"})
        elif got["sha256"] != want["sha256"]:
            differences.append({"check": "file", "object": name, "expected": want["sha256"], "found": got["sha256"]})
    return differences


def table_differences(manifest: dict, tables: list[dict], alembic: dict) -> list[dict]:
    expected = {(t["schema"], t["table"]): t["rows"] for t in manifest.get("tables", [])}
    found = {(t["schema"], t["table"]): t["rows"] for t in tables}
    differences = []
    for key in sorted(set(expected) | set(found)):
        name = f"{key[0]}.{key[1]}"
        if key not in found:
            differences.append({"check": "table", "object": name, "expected": "present", "found": "missing"})
        elif key not in expected:
            differences.append({"check": "table", "object": name, "expected": "absent", "found": "present"})
        elif expected[key] != found[key]:
            differences.append({"check": "rows", "object": name, "expected": expected[key], "found": found[key]})
    want_versions = manifest.get("alembic", {})
    for schema in sorted(set(want_versions) | set(alembic)):
        if want_versions.get(schema) != alembic.get(schema):
            differences.append({"check": "alembic version", "object": schema,
                                "expected": ", ".join(want_versions.get(schema) or []) or "none",
                                "found": ", ".join(alembic.get(schema) or []) or "none"})
    return differences


def _reason(differences: list[dict]) -> str:
    kinds = {d["check"] for d in differences}
    first = differences[0]
    shown = f"{first['check']} {first['object']}: expected {first['expected']}, found {first['found']}"
    more = f" (and {len(differences) - 1} more differences)" if len(differences) > 1 else ""
    if kinds == {"file"}:
        return (f"The backup's files do not match its manifest ({shown}{more}): the backup is damaged or was "
                "changed after it was taken. Do not rely on it; take a new backup and drill it.")
    return (f"The restored copy differs from the backup's manifest ({shown}{more}). "
            "The backup does not restore what was dumped: see the differences, take a new backup and drill it.")


# The drill ------------------------------------------------------------------------------------


class _Steps:
    """Each step's start and duration, saved with a checkpoint as it ends."""

    def __init__(self, ctx: jobs.JobContext, run: DrillRun, done_before: int):
        self.ctx, self.run, self.done = ctx, run, done_before
        self.run.steps = []

    def __call__(self, name: str, work):
        self.ctx.raise_if_stopped()
        started_at, started = timezone.now(), time.monotonic()
        entry = {"name": name, "started_at": started_at.isoformat(), "seconds": None, "note": ""}
        self.run.steps.append(entry)
        try:
            result = work()
        finally:
            entry["seconds"] = round(time.monotonic() - started, 3)
        if isinstance(result, str):
            entry["note"] = result
        self.done += 1
        steps = list(self.run.steps)
        self.ctx.run_unit(lambda: DrillRun.objects.filter(pk=self.run.pk).update(steps=steps), self.done,
                          {**self.ctx.checkpoint_data, "drill_run_id": self.run.pk, "step": name})
        return result


def drill(ctx: jobs.JobContext, backup: Backup, done_before: int = 0) -> DrillRun:
    job = ctx.job
    scratch = scratch_for(job, backup)
    run = DrillRun.objects.filter(job=job).first() or DrillRun.objects.create(backup=backup, scratch=scratch, job=job)
    name = pg_backup.drill_database_name(run.pk)
    started_at = timezone.now()
    DrillRun.objects.filter(pk=run.pk).update(
        backup=backup, scratch=scratch, database_name=name, started_at=started_at, verified_at=None, finished_at=None,
        dropped_at=None, differences=[], verification={}, passed=None, reason="", rto_s=None,
        rpo_s=(started_at - backup.snapshot_at).total_seconds(), bytes_restored=None)
    run.refresh_from_db()
    ctx.log(f"drill {run.pk}: restoring backup {backup.pk} into {scratch.name}/{name}")
    step = _Steps(ctx, run, done_before)
    outcome: dict = {}
    try:
        with outcome_of(outcome, *backup.target.known_passwords(), *scratch.known_passwords()):
            _verify(step, run, backup, scratch, name, outcome)
    finally:
        _record(ctx, run, scratch, name, outcome)
    if outcome.get("passed"):
        Backup.objects.filter(pk=backup.pk).update(verified_at=run.verified_at)
        if backup.policy:
            apply_retention(backup.policy)
    run.refresh_from_db()
    return run


def _verify(step, run: DrillRun, backup: Backup, scratch: Target, name: str, outcome: dict) -> None:
    manifest = backup.manifest
    differences = step("checksums", lambda: checksum_differences(backup))
    if differences:
        outcome["differences"] = differences
        raise DrillFailed(_reason(differences))
    step("create database", lambda: pg_backup.create_scratch_database(scratch, name, run.pk))

    def extensions():
        missing = pg_backup.ensure_extensions(scratch, name, manifest.get("extensions", []))
        return f"not installed on {scratch.name} (needs a superuser there): {', '.join(missing)}" if missing else ""

    step("extensions", extensions)

    tenant_key = manifest.get("tenant_key")  # a shared tenant: a schema-only dump and its rows

    def restore():
        with TemporaryDirectory(prefix="fleet-drill-") as tmp:
            list_file = Path(tmp) / "restore.list"
            pg_backup.restore_list(Path(backup.path), list_file)
            if tenant_key is None:
                pg_backup.pg_restore(scratch, name, Path(backup.path), jobs=settings.BACKUP_JOBS, list_file=list_file)
                return ""
            pg_backup.pg_restore(scratch, name, Path(backup.path), jobs=settings.BACKUP_JOBS, list_file=list_file,
                                 section="pre-data")
            outcome["foreign_rows"] = _load_tenant_rows(scratch, name, backup, tenant_key)
            pg_backup.pg_restore(scratch, name, Path(backup.path), jobs=settings.BACKUP_JOBS, list_file=list_file,
                                 section="post-data")
            return f"rows of tenant {tenant_key} only: {sum(t['rows'] for t in manifest['tenant_rows'])} rows loaded"

    try:
        step("restore", restore)
    except pg_backup.ToolFailed as exc:
        raise DrillFailed(f"The backup did not restore: {exc}") from exc

    def compare():
        with engines.connect(scratch, credential="change", database=name,
                             statement_timeout_ms=settings.BACKUP_STATEMENT_TIMEOUT_MS, rollback=True) as conn:
            if tenant_key is not None:  # the restored tables force row-level security again
                pg_backup.bind_tenant(conn, tenant_key)
            tables = pg_backup.exact_counts(conn, backup.schema or None, tenant_rows=tenant_key is not None)
            alembic = pg_backup.alembic_versions(conn, tables)
            outcome["bytes_restored"] = pg_backup.database_size_bytes(conn)
        outcome["verification"] = {"tables": [{**t, "expected": _expected_rows(manifest, t)} for t in tables],
                                   "alembic": alembic}
        return outcome.pop("foreign_rows", []) + table_differences(manifest, tables, alembic)

    differences = step("compare tables", compare)

    def smoke():
        results = []
        queries = backup.policy.smoke_queries if backup.policy else []
        for query in queries:
            try:
                functions = smoke_query_calls(query)
                with engines.connect(scratch, credential="change", database=name, rollback=True) as conn:
                    volatile = pg_backup.volatile_functions(conn, functions)
                    if volatile:  # pg_terminate_backend, pg_sleep, set_config, nextval, dblink...
                        raise ValueError(f"calls {', '.join(volatile)}, which can do more than read: "
                                         "a smoke query calls only immutable or stable functions")
                    if backup.schema:  # as the tenant's application sees its tables
                        tenancy.bind(conn, schema=backup.schema, tenant_key=tenant_key)
                    rows = pg_backup.run_smoke_query(conn, query)
                results.append({"query": query, "rows": rows, "error": ""})
            except Exception as exc:
                results.append({"query": query, "rows": None, "error": driver_message(exc) if hasattr(exc, "orig") else str(exc)})
        outcome.setdefault("verification", {})["smoke"] = results
        return [{"check": "smoke query", "object": r["query"], "expected": "at least one row",
                 "found": r["error"] or "no rows"} for r in results if r["error"] or not r["rows"]]

    differences += step("smoke queries", smoke)

    def amcheck():
        problems = pg_backup.pg_amcheck(scratch, name, jobs=settings.BACKUP_JOBS)
        outcome.setdefault("verification", {})["amcheck"] = problems or ["no problems found"]
        return [{"check": "amcheck", "object": name, "expected": "no problems", "found": p} for p in problems]

    differences += step("amcheck", amcheck)
    outcome["differences"] = differences
    if differences:
        if all(d["check"] == "amcheck" for d in differences):
            said = differences[0]["found"]
            hint = (" The scratch server's change login may not run amcheck: a superuser installs it in template1 and"
                    " grants EXECUTE on its functions (docs/deployment.md)." if ("permission denied" in said
                    or ("amcheck" in said and "not installed" in said)) else
                    " The restored copy is corrupt: do not rely on this backup; take a new one and drill it.")
            raise DrillFailed(f"pg_amcheck --heapallindexed found problems in the restored copy: {said}.{hint}")
        raise DrillFailed(_reason(differences))
    outcome.update(passed=True, reason="", verified_at=timezone.now())


def _load_tenant_rows(scratch: Target, name: str, backup: Backup, tenant_key: str) -> list[dict]:
    """Load a shared tenant's rows between the pre-data and post-data sections (no constraint or
    row-level security yet); the differences: rows in them that are not the tenant's."""
    foreign = []
    for entry in backup.manifest["tenant_rows"]:
        pg_backup.copy_rows_in(scratch, name, entry["schema"], entry["table"], Path(backup.path) / entry["file"])
    with engines.connect(scratch, credential="change", database=name, rollback=True,
                         statement_timeout_ms=settings.BACKUP_STATEMENT_TIMEOUT_MS) as conn:
        for table in backup.manifest["tables"]:
            if table.get("tenant_rows"):
                others = pg_backup.other_tenants_rows(conn, table["schema"], table["table"], tenant_key)
                if others:
                    foreign.append({"check": "other tenants' rows", "object": f"{table['schema']}.{table['table']}",
                                    "expected": 0, "found": others})
    return foreign


def _expected_rows(manifest: dict, table: dict):
    for t in manifest.get("tables", []):
        if (t["schema"], t["table"]) == (table["schema"], table["table"]):
            return t["rows"]
    return None


def _record(ctx, run: DrillRun, scratch: Target, name: str, outcome: dict) -> None:
    """Drop the scratch database (always) and write down what the drill found."""
    dropped_at = None
    try:
        pg_backup.drop_scratch_database(scratch, name)
        dropped_at = timezone.now()
    except Exception as exc:  # the sweeper tries again
        log.warning("drill %s: could not drop %s on %s: %s", run.pk, name, scratch.name, exc)
        ctx.log(f"could not drop {name} on {scratch.name} (the sweeper will): {redact(str(exc), *scratch.known_passwords())}",
                level="warning")
    verified_at = outcome.get("verified_at")
    fields = {
        "finished_at": timezone.now(), "dropped_at": dropped_at, "passed": outcome.get("passed"),
        "reason": outcome.get("reason", ""), "differences": outcome.get("differences", []),
        "verification": outcome.get("verification", {}), "bytes_restored": outcome.get("bytes_restored"),
        "verified_at": verified_at, "steps": run.steps,
        "rto_s": (verified_at - run.started_at).total_seconds() if verified_at else None,
    }
    DrillRun.objects.filter(pk=run.pk).update(**fields)
    for key, value in fields.items():
        setattr(run, key, value)


def _result(run: DrillRun) -> dict:
    return {"drill_run_id": run.pk, "passed": run.passed, "rto_s": run.rto_s, "rpo_s": run.rpo_s,
            "bytes_restored": run.bytes_restored}


@jobs.runner("drills.drill")
def run_drill(ctx: jobs.JobContext) -> dict:
    ctx.set_total(DRILL_STEPS, "steps")
    return _result(drill(ctx, chosen_backup(ctx.job)))


@jobs.runner("drills.backup_and_drill")
def run_backup_and_drill(ctx: jobs.JobContext) -> dict:
    ctx.set_total(1 + DRILL_STEPS, "steps")
    backup = take_backup(ctx, done=1)
    return {"backup_id": backup.pk, **_result(drill(ctx, backup, done_before=1))}


# The sweeper ----------------------------------------------------------------------------------


def _over(job: Job | None, now) -> bool:
    """The drill's job will not drop its database any more: finished, gone, or its worker silent."""
    if job is None or job.state in Job.FINISHED_STATES:
        return True
    stale_before = now - timedelta(seconds=settings.JOB_STALE_AFTER_S)
    return job.state == Job.State.RUNNING and job.heartbeat_at is not None and job.heartbeat_at < stale_before


def sweep(now=None) -> dict:
    """Drop the drill databases left on scratch servers by drills that will not drop them."""
    now = now or timezone.now()
    dropped, failed = [], []
    for scratch in Target.objects.filter(role=Target.Role.SCRATCH):
        try:
            found = pg_backup.marked_drill_databases(scratch)
        except Exception as exc:
            log.warning("drill sweeper: %s unreachable: %s", scratch.name, exc)
            failed.append(scratch.name)
            continue
        runs = {r.pk: r for r in DrillRun.objects.filter(pk__in=found.values()).select_related("job")}
        for name, run_id in found.items():
            run = runs.get(run_id)
            if run is not None and not _over(run.job, now):
                continue
            try:
                pg_backup.drop_scratch_database(scratch, name)
            except Exception as exc:
                log.warning("drill sweeper: could not drop %s on %s: %s", name, scratch.name, exc)
                failed.append(f"{scratch.name}/{name}")
                continue
            DrillRun.objects.filter(pk=run_id, dropped_at__isnull=True).update(dropped_at=timezone.now())
            dropped.append(f"{scratch.name}/{name}")
    return {"dropped": dropped, "failed": failed}
