"""The backup job (`drills.backup`) and retention.

A backup is a directory-format pg_dump taken in a snapshot exported by a REPEATABLE READ
transaction held open for the whole dump; the manifest (exact row counts per table, Alembic
versions, extensions) is read in that same transaction, and a SHA-256 of every file is added
once the dump is written. A re-delivered job starts its backup over (same row, fresh directory).
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from console import jobs
from console.models import Job, Target
from console.pg import backup as pg_backup
from console.secrets import redact
from console.validators import validate_pg_name
from monitors.drills.models import Backup, BackupPolicy

log = logging.getLogger(__name__)


BACKUP_KINDS = ("drills.backup", "drills.backup_and_drill")


def backup_directory(backup: Backup) -> Path:
    root = backup.policy.directory() if backup.policy else Path(settings.BACKUP_DIR)
    scope = backup.target.name, backup.database, *([backup.schema] if backup.schema else [])
    return root.joinpath(*scope) / f"backup-{backup.pk}"


def scope_of(job) -> tuple[str, str | None, str | None]:
    """The database to back up; for a schema-per-tenant tenant its schema only; for a shared (RLS
    rows) tenant the shared schema and the tenant's key, whose rows alone are copied."""
    tenant = job.tenant
    database = (tenant.database_name if tenant else None) or job.params.get("database") or job.target.dbname
    validate_pg_name(database)  # it reaches pg_dump's --dbname, which would take a conninfo string
    schema = tenant.schema_name if tenant and not tenant.database_name else None
    shared = tenant is not None and tenant.strategy == tenant.Strategy.SHARED
    return database, schema, (tenant.slug if shared else None)


def _write_tenant_rows(snapshot, directory: Path) -> list[dict]:
    """A shared tenant's rows, table by table, copied in the backup's snapshot next to the
    schema-only dump; the files are in the manifest's checksums like the dump's own."""
    written = []
    for number, table in enumerate(snapshot.tables):
        name = f"tenant-rows-{number:03d}.copy"
        rows = pg_backup.copy_rows_out(snapshot.conn, table, directory / name)
        written.append({"schema": table["schema"], "table": table["table"], "file": name, "rows": rows})
    return written


def take_backup(ctx: jobs.JobContext, done: int = 1) -> Backup:
    """This job's backup: taken now, or the one an earlier attempt finished."""
    job = ctx.job
    database, schema, tenant_key = scope_of(job)
    backup = Backup.objects.filter(job=job).first()
    if backup is not None and backup.state == Backup.State.DONE:
        return backup
    if backup is None:
        policy = BackupPolicy.of(job.target, database, job.tenant)
        backup = Backup.objects.create(target=job.target, database=database, job=job, policy=policy,
                                       tenant=job.tenant, schema=schema or "")
    directory = backup_directory(backup)
    shutil.rmtree(directory, ignore_errors=True)  # what an earlier attempt left
    directory.parent.mkdir(parents=True, exist_ok=True)
    ctx.raise_if_stopped()
    rows_of = f" rows of tenant {tenant_key} in" if tenant_key else ""
    ctx.log(f"backing up{rows_of} {job.target.name}/{database}{f' schema {schema}' if schema else ''} into {directory}")
    started = time.monotonic()
    tenant_rows = None
    try:
        with pg_backup.exported_snapshot(job.target, database, schema, tenant_key) as snapshot:
            ctx.log(f"snapshot {snapshot.snapshot_id} exported at {snapshot.taken_at:%H:%M:%S}; "
                    f"{len(snapshot.tables)} tables counted in it")
            pg_backup.pg_dump_snapshot(job.target, database, snapshot.snapshot_id, directory, jobs=settings.BACKUP_JOBS,
                                       schema=schema, schema_only=tenant_key is not None)
            if tenant_key is not None:
                tenant_rows = _write_tenant_rows(snapshot, directory)
        files = pg_backup.file_checksums(directory)
    except Exception as exc:
        shutil.rmtree(directory, ignore_errors=True)
        Backup.objects.filter(pk=backup.pk).update(
            state=Backup.State.FAILED, error=redact(str(exc), *job.target.known_passwords())[:2000])
        raise
    manifest = {
        "snapshot_id": snapshot.snapshot_id,
        "tables": snapshot.tables,
        "alembic": snapshot.alembic,
        "extensions": snapshot.extensions,
        "files": files,
        **({"tenant_key": tenant_key, "tenant_rows": tenant_rows} if tenant_key else {}),
    }
    fields = {
        "state": Backup.State.DONE, "snapshot_at": snapshot.taken_at, "manifest": manifest, "path": str(directory),
        "size_bytes": sum(f["bytes"] for f in files.values()), "duration_s": time.monotonic() - started, "error": "",
    }
    ctx.run_unit(lambda: Backup.objects.filter(pk=backup.pk).update(**fields), done,
                 {**ctx.checkpoint_data, "backup_id": backup.pk})
    backup.refresh_from_db()
    ctx.log(f"backup {backup.pk}: {len(files)} files, {backup.size_bytes} bytes in {backup.duration_s:.1f} s")
    return backup


@jobs.on_abandoned(*BACKUP_KINDS)
def forget_unfinished_backups(job) -> None:
    """A backup job that ended without its runner (cancelled after its worker died): its backup
    will never finish, so it is failed and its files removed."""
    for backup in Backup.objects.filter(job=job, state=Backup.State.RUNNING):
        shutil.rmtree(backup_directory(backup), ignore_errors=True)
        Backup.objects.filter(pk=backup.pk, state=Backup.State.RUNNING).update(
            state=Backup.State.FAILED, error="its job was cancelled after its worker died: nothing of it is kept")


@jobs.runner("drills.backup")
def run_backup(ctx: jobs.JobContext) -> dict:
    ctx.set_total(1, "steps")
    backup = take_backup(ctx)
    removed = apply_retention(backup.policy) if backup.policy else []
    return {"backup_id": backup.pk, "size_bytes": backup.size_bytes, "removed_backups": removed}


# Retention -----------------------------------------------------------------------------------


def removable(policy: BackupPolicy, now=None) -> list[Backup]:
    """The policy's backups that retention may remove: outside keep_count and keep_days, and older
    than a verified backup that stays. The newest verified backup always stays, so there is never
    zero; with none verified yet, nothing goes."""
    now = now or timezone.now()
    done = list(Backup.restorable().filter(policy=policy).order_by("-snapshot_at", "-id"))
    verified = [b for b in done if b.verified_at is not None]
    if not verified or (policy.keep_count is None and policy.keep_days is None):
        return []
    newest_verified = verified[0]
    kept = {b.pk for b in done[: policy.keep_count]} if policy.keep_count is not None else set()
    if policy.keep_days is not None:
        kept |= {b.pk for b in done if b.snapshot_at >= now - timedelta(days=policy.keep_days)}
    kept.add(newest_verified.pk)
    return [b for b in done if b.pk not in kept and b.snapshot_at < newest_verified.snapshot_at]


def apply_retention(policy: BackupPolicy, now=None) -> list[int]:
    removed = []
    for backup in removable(policy, now):
        if backup.path:
            shutil.rmtree(backup.path, ignore_errors=True)
        Backup.objects.filter(pk=backup.pk, state=Backup.State.DONE).update(state=Backup.State.REMOVED)
        removed.append(backup.pk)
    if removed:
        log.info("retention of %s removed backups %s", policy, removed)
    return removed


# Schedules ---------------------------------------------------------------------------------


def start(kind: str, target, database: str, tenant=None, user=None, policy=None) -> tuple[Job, bool]:
    """A backup (and drill) of one database or tenant, unless one of the same is under way: (the
    job, whether it is new). Checked and created under one advisory lock, so two presses, or a press
    and the schedule, never start two. Started for a policy, it counts as the policy's run (its next
    scheduled one is an interval later)."""
    scope = f"{target.pk}:{database}:{tenant.pk if tenant else ''}"
    with jobs.exclusively(f"drills.backup:{scope}"):
        running = (Job.objects.filter(kind__in=BACKUP_KINDS, target=target, tenant=tenant, params__database=database)
                   .exclude(state__in=Job.FINISHED_STATES).first())
        if running is not None:
            return running, False
        if policy is not None:
            BackupPolicy.objects.filter(pk=policy.pk).update(scheduled_at=timezone.now())
        return jobs.create(kind, user=user, target=target, tenant=tenant, params={"database": database}), True


def schedule_due(now=None) -> list[int]:
    """Start the backup of every policy that is due: backed up and drilled (retention removes
    only backups a drill verified), or only backed up while there is no scratch server. A policy is
    claimed with a conditional UPDATE, so two beats never start it twice; one already under way (a
    press of "Backup and drill now") is not started again."""
    now = now or timezone.now()
    started = []
    has_scratch = Target.objects.filter(role=Target.Role.SCRATCH).exists()
    for policy in BackupPolicy.objects.live().select_related("target", "tenant"):
        if not policy.is_due(now):
            continue
        if not BackupPolicy.objects.filter(pk=policy.pk, scheduled_at=policy.scheduled_at).update(scheduled_at=now):
            continue
        kind = "drills.backup_and_drill" if has_scratch or policy.scratch_id else "drills.backup"
        job, new = start(kind, policy.target, policy.database, policy.tenant)
        if new:
            started.append(job.pk)
    return started
