"""Physical backups (`pitr.backup`) and point-in-time restore drills (`pitr.drill`) with pgBackRest,
the sweeper of what dead drills left, and the schedule.

A drill picks a moment (by default now minus the policy's delay), has pgBackRest check that the
WAL up to now is archived, restores the newest backup that had stopped by then into a fresh folder
with recovery pausing at the moment, starts PostgreSQL there on a free loopback port as the
unprivileged service user, watches recovery (LSN replayed of LSN to reach, saved as it moves),
then verifies the copy: the newest heartbeat row replayed (RPO = moment minus it), pg_amcheck
--heapallindexed, the smoke queries and the Alembic version of each tenant. RTO is drill start to
verified. The server is stopped and the folder deleted whatever happened (success, failure,
cancel); the sweeper does it for drills whose worker died. Each attempt of a job restores into a
folder of its own (run-<id>-a<attempt>); a re-delivered drill starts over.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from psycopg import sql

from console import jobs
from console.models import Job, Target
from console.pg import backup as pg_backup, pgbackrest, pitr_server
from console.pg.pitr_server import DrillServer, lsn_text, segment_start_lsn
from monitors.drills.physical import PhysicalBackup, PhysicalBackupPolicy, PitrDrillRun
from monitors.drills.restores import DrillFailed, _over, outcome_of, smoke_query_calls  # the logical drills' rules

log = logging.getLogger(__name__)

DRILL_STEPS = 10
ATTEMPT_DIR = re.compile(r"^run-(\d+)-a(\d+)$")


def policy_of(target: Target) -> PhysicalBackupPolicy:
    policy = PhysicalBackupPolicy.objects.filter(target=target).first()
    if policy is None:
        raise DrillFailed(f"{target.name} has no physical backup policy: name its pgBackRest stanza first")
    return policy


# Backups ---------------------------------------------------------------------------------------


def sync_backups(policy: PhysicalBackupPolicy) -> pgbackrest.StanzaInfo:
    """The stanza's backups as `pgbackrest info` lists them now: new ones recorded, gone ones
    marked expired (pgBackRest's retention removed them)."""
    info = pgbackrest.info(policy.stanza_ref())
    now = timezone.now()
    listed = set()
    for b in info.backups:
        listed.add(b.label)
        fields = {
            "policy": policy, "type": b.type, "prior": b.prior or "", "started_at": b.started_at,
            "stopped_at": b.stopped_at, "size_bytes": b.size_bytes, "delta_bytes": b.delta_bytes,
            "repo_size_bytes": b.repo_size_bytes, "repo_delta_bytes": b.repo_delta_bytes, "wal_start": b.wal_start,
            "wal_stop": b.wal_stop, "lsn_start": b.lsn_start, "lsn_stop": b.lsn_stop, "seen_at": now, "expired_at": None,
        }
        PhysicalBackup.objects.update_or_create(target=policy.target, label=b.label, defaults=fields)
    PhysicalBackup.objects.filter(target=policy.target, expired_at__isnull=True).exclude(label__in=listed).update(expired_at=now)
    return info


def unfinished_backup(target: Target) -> Job | None:
    """A pitr.backup job of the target not over yet: pgBackRest backs a stanza up once at a time."""
    return Job.objects.filter(kind="pitr.backup", target=target).exclude(state__in=Job.FINISHED_STATES).first()


def start_backup(target: Target, kind: str, user=None, claim=None) -> tuple[Job, bool]:
    """A pgBackRest backup of the target unless one is under way: (the job, whether it is new).
    Checked and created under one advisory lock, so two presses, or a press and the schedule,
    never start two; `claim()` (the schedule's conditional UPDATE) may still decline it."""
    with jobs.exclusively(f"pitr.backup:{target.pk}"):
        running = unfinished_backup(target)
        if running is not None:
            return running, False
        if claim is not None and not claim():
            return None, False
        return jobs.create("pitr.backup", user=user, target=target, params={"type": kind}), True


@jobs.runner("pitr.backup")
def run_backup(ctx: jobs.JobContext) -> dict:
    """One pgBackRest backup of the target's stanza (params: type full|diff|incr), with the
    policy's retention; then the backup list read back from pgbackrest info."""
    kind = ctx.params.get("type", "full")
    policy = policy_of(ctx.job.target)
    ctx.set_total(2, "steps")
    if "label" not in ctx.checkpoint_data:
        ctx.raise_if_stopped()
        ctx.log(f"pgbackrest backup --type={kind} of stanza {policy.stanza} (retention: {policy.retention_full} full"
                f"{f', {policy.retention_diff} diff' if policy.retention_diff else ''})")
        started = time.monotonic()
        pgbackrest.backup(policy.stanza_ref(), kind, retention_full=policy.retention_full,
                          retention_diff=policy.retention_diff, stop=lambda: ctx.raise_if_stopped() or False)
        info = sync_backups(policy)
        newest = info.newest()
        label = newest.label if newest else ""
        PhysicalBackup.objects.filter(target=policy.target, label=label).update(job=ctx.job)
        ctx.run_unit(lambda: None, 1, {"label": label, "seconds": round(time.monotonic() - started, 3)})
        ctx.log(f"backup {label} done in {ctx.checkpoint_data['seconds']:.1f} s")
    info = sync_backups(policy)
    ctx.run_unit(lambda: None, 2, ctx.checkpoint_data)
    backup = PhysicalBackup.objects.filter(target=policy.target, label=ctx.checkpoint_data["label"]).first()
    return {"label": ctx.checkpoint_data["label"], "type": kind, "size_bytes": backup.size_bytes if backup else None,
            "repo_size_bytes": backup.repo_size_bytes if backup else None, "backups": len(info.backups)}


# The drill ---------------------------------------------------------------------------------------


class _Steps:
    """Each step's start and duration, saved with a checkpoint as it ends (the page shows them live)."""

    def __init__(self, ctx: jobs.JobContext, run: PitrDrillRun):
        self.ctx, self.run, self.done = ctx, run, 0
        self.run.steps = []

    def __call__(self, name: str, work):
        self.ctx.raise_if_stopped()
        entry = {"name": name, "started_at": timezone.now().isoformat(), "seconds": None, "note": ""}
        self.run.steps.append(entry)
        PitrDrillRun.objects.filter(pk=self.run.pk).update(steps=list(self.run.steps))
        started = time.monotonic()
        try:
            result = work()
        finally:
            entry["seconds"] = round(time.monotonic() - started, 3)
        if isinstance(result, str):
            entry["note"] = result
        self.done += 1
        steps = list(self.run.steps)
        self.ctx.run_unit(lambda: PitrDrillRun.objects.filter(pk=self.run.pk).update(steps=steps), self.done,
                          {"pitr_drill_run_id": self.run.pk, "step": name})
        return result


def target_moment(job: Job, policy: PhysicalBackupPolicy, now) -> datetime:
    given = job.params.get("target_at")
    if given:
        moment = datetime.fromisoformat(given)
        if moment.tzinfo is None:
            raise DrillFailed(f"the target moment {given} has no time zone")
        if moment > now:
            raise DrillFailed(f"the target moment {given} is in the future")
        return moment
    delay_s = job.params.get("delay_s")
    return now - (timedelta(seconds=float(delay_s)) if delay_s is not None else policy.delay)


def attempt_directory(run: PitrDrillRun, attempt: int) -> Path:
    return Path(settings.PITR_DRILL_DIR) / f"run-{run.pk}-a{int(attempt)}"


def drill(ctx: jobs.JobContext) -> PitrDrillRun:
    job = ctx.job
    policy = policy_of(job.target)
    started_at = timezone.now()
    moment = target_moment(job, policy, started_at)
    run = PitrDrillRun.objects.filter(job=job).first() or PitrDrillRun.objects.create(
        target=job.target, policy=policy, job=job)
    server = DrillServer(attempt_directory(run, job.attempts), user=policy.run_as)
    PitrDrillRun.objects.filter(pk=run.pk).update(
        policy=policy, target_at=moment, directory=str(server.root), port=None, started_at=started_at,
        reached_at=None, verified_at=None, finished_at=None, removed_at=None, lsn_from="", lsn_to_reach="",
        lsn_replayed="", replayed_xact_at=None, heartbeat_at=None, rto_s=None, rpo_s=None, verification={},
        differences=[], passed=None, reason="", backup_label="")
    run.refresh_from_db()
    ctx.log(f"PITR drill {run.pk}: {job.target.name} (stanza {policy.stanza}) to {moment.isoformat()} in {server.root}")
    outcome: dict = {}
    try:
        with outcome_of(outcome, *job.target.known_passwords()):
            _run_steps(ctx, _Steps(ctx, run), run, policy, server, moment, outcome)
    finally:
        _finish(ctx, run, server, outcome)
    run.refresh_from_db()
    return run


def _update(run: PitrDrillRun, **fields) -> None:
    PitrDrillRun.objects.filter(pk=run.pk).update(**fields)
    for key, value in fields.items():
        setattr(run, key, value)


def _run_steps(ctx, step, run: PitrDrillRun, policy: PhysicalBackupPolicy, server: DrillServer, moment: datetime,
               outcome: dict) -> None:
    stanza = policy.stanza_ref()

    def stopped():  # a cancel or pause stops the restore and pg_amcheck at once, not when they end
        ctx.raise_if_stopped()
        return False

    def archive_check():
        try:
            pgbackrest.check(stanza, timeout_s=settings.PGBACKREST_INFO_TIMEOUT_S * 4)
        except pgbackrest.PgBackRestFailed as exc:
            raise DrillFailed(f"pgBackRest's check failed, so the WAL up to the target may not be in the repository: "
                              f"{exc}. Look at the target's archiving (pg_stat_archiver) and the stanza.") from exc
        return "the WAL up to now is archived"

    refused = pgbackrest.refusal(stanza)  # the form refused these; a policy saved otherwise is refused here
    try:
        pitr_server.check_settings(policy.server_settings)
    except ValueError as exc:
        refused = refused or f"the policy's settings of the drill's server: {exc}"
    if refused:
        raise DrillFailed(f"Not drilled: {refused}. Correct the physical backup policy, then drill again.")
    step("archive check", archive_check)

    def choose():
        info = sync_backups(policy)
        chosen = info.before(moment)
        if chosen is None:
            raise DrillFailed(f"No backup of stanza {policy.stanza} had finished by {moment:%Y-%m-%d %H:%M:%S} UTC: "
                              "take a backup, then drill a moment after it.")
        end = segment_start_lsn(info.wal_max) + pitr_server.SEGMENT_BYTES if info.wal_max else None
        _update(run, backup_label=chosen.label, lsn_from=chosen.lsn_start, lsn_to_reach=lsn_text(end),
                lsn_replayed=chosen.lsn_start)
        return f"{chosen.type} backup {chosen.label}, WAL {chosen.wal_start} to the archive's newest {info.wal_max}"

    step("choose backup", choose)

    def restore():
        server.prepare(run.pk)
        try:
            pgbackrest.restore(stanza, server.data_dir, moment, backup_label=run.backup_label, stop=stopped)
        except pgbackrest.PgBackRestFailed as exc:
            raise DrillFailed(f"The restore failed: {exc}") from exc
        return f"into {server.data_dir}"

    step("restore", restore)

    def start():
        server.start(policy.server_settings)
        _update(run, port=server.port)
        return f"127.0.0.1:{server.port}, as {server.user}"

    step("start server", start)
    step("recovery", lambda: _wait_for_target(ctx, run, server, moment))

    def heartbeat():
        with server.connect(run.target.dbname) as conn:  # the sampler beats in the target's database
            beat_at = pitr_server.newest_heartbeat(conn)
        if beat_at is None:
            return "no heartbeat row replayed (the sampler writes one on the primary every round): no RPO"
        _update(run, heartbeat_at=beat_at, rpo_s=(moment - beat_at).total_seconds())
        return f"newest heartbeat {beat_at.isoformat()}: RPO {run.rpo_s:.3f} s"

    step("heartbeat", heartbeat)
    step("promote", lambda: server.promote() or "recovery ended at the target: the copy is writable, amcheck can be installed")

    def amcheck():
        problems = pitr_server.pg_amcheck(server, jobs=settings.BACKUP_JOBS, timeout_s=settings.BACKUP_TOOL_TIMEOUT_S,
                                          stop=stopped)
        outcome.setdefault("verification", {})["amcheck"] = problems or ["no problems found"]
        outcome.setdefault("differences", []).extend(
            {"check": "amcheck", "object": "all databases", "expected": "no problems", "found": p} for p in problems)
        return f"{len(problems)} problems" if problems else "no problems found"

    step("amcheck", amcheck)
    step("smoke queries", lambda: _smoke(server, policy, outcome))
    step("alembic versions", lambda: _alembic(server, run, moment, outcome))
    differences = outcome.get("differences", [])
    if differences:
        first = differences[0]
        more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
        raise DrillFailed(f"The copy restored to {moment:%Y-%m-%d %H:%M:%S} UTC did not pass: {first['check']} "
                          f"{first['object']}: expected {first['expected']}, found {first['found']}{more}.")
    outcome.update(passed=True, reason="", verified_at=timezone.now())


def _wait_for_target(ctx, run: PitrDrillRun, server: DrillServer, moment: datetime) -> str:
    """Until recovery pauses at the target; the LSN replayed saved as it moves. A server that
    stops on the way (WAL missing from the repository, say) fails the drill with what it logged."""
    deadline = time.monotonic() + settings.PITR_RECOVERY_TIMEOUT_S
    last_saved = None
    while True:
        ctx.raise_if_stopped()
        alive = server.alive()
        state = server.recovery_state() if alive else {"connectable": False, "paused": False, "replayed_lsn": ""}
        lsn = state["replayed_lsn"] or run.lsn_replayed
        if lsn and lsn != last_saved:
            _update(run, lsn_replayed=lsn, replayed_xact_at=state.get("replayed_at"))
            last_saved = lsn
        if state["connectable"] and not state.get("in_recovery", True):
            raise DrillFailed(f"Recovery ended without pausing at {moment:%Y-%m-%d %H:%M:%S} UTC: the copy was promoted. "
                              "Check recovery_target_action in the stanza's restore options.")
        if state["paused"]:
            _update(run, reached_at=timezone.now())
            return f"paused at the target: LSN {lsn} replayed, last transaction {state.get('replayed_at')}"
        if not alive:
            raise DrillFailed(_stopped_reason(server, run, moment))
        if time.monotonic() > deadline:
            raise DrillFailed(f"Recovery had not reached the target after {settings.PITR_RECOVERY_TIMEOUT_S:g} s "
                              f"(LSN {lsn} replayed of {run.lsn_to_reach}).")
        time.sleep(0.25)


def next_segment(segment: str) -> str:
    timeline, log_id, seg = int(segment[:8], 16), int(segment[8:16], 16), int(segment[16:], 16) + 1
    per_log = 0x100000000 // pitr_server.SEGMENT_BYTES
    if seg >= per_log:
        log_id, seg = log_id + 1, 0
    return f"{timeline:08X}{log_id:08X}{seg:08X}"


def _stopped_reason(server: DrillServer, run: PitrDrillRun, moment: datetime) -> str:
    said = server.log_tail()
    last = server.last_restored_segment()
    when = f"{moment:%Y-%m-%d %H:%M:%S} UTC"
    if "recovery ended before configured recovery target was reached" in said and last:
        return (f"Recovery stopped before reaching {when}: the repository has no WAL segment {next_segment(last)} "
                f"(the last one restored was {last}, LSN {run.lsn_replayed} replayed). The archive has a gap, or the "
                "WAL after the target was not archived yet: every backup older than the gap is useless for moments "
                "after it. Take a new full backup and look at the target's archiving (pg_stat_archiver).")
    return f"The restored copy's server stopped during recovery to {when}. Its log: {said or 'empty'}"


def _smoke(server: DrillServer, policy: PhysicalBackupPolicy, outcome: dict) -> str:
    database = policy.database or policy.target.dbname
    results = []
    for query in policy.smoke_queries:
        try:
            functions = sorted(smoke_query_calls(query) - pg_backup.HARMLESS_VOLATILE)
            with server.connect(database) as conn, conn.transaction():
                # As the logical drills: the copy's catalog says which calls could do more than read.
                volatile = [r[0] for r in conn.execute(
                    "SELECT DISTINCT proname FROM pg_proc WHERE proname = ANY(%s) AND provolatile = 'v' ORDER BY 1",
                    [functions])] if functions else []
                if volatile:
                    raise ValueError(f"calls {', '.join(volatile)}, which can do more than read: "
                                     "a smoke query calls only immutable or stable functions")
                conn.execute("SET TRANSACTION READ ONLY")
                rows = len(conn.execute(query).fetchall())
            results.append({"query": query, "rows": rows, "error": ""})
        except (ValueError, psycopg.Error) as exc:
            results.append({"query": query, "rows": None, "error": str(exc).strip()})
    outcome.setdefault("verification", {})["smoke"] = results
    outcome.setdefault("differences", []).extend(
        {"check": "smoke query", "object": r["query"], "expected": "at least one row", "found": r["error"] or "no rows"}
        for r in results if r["error"] or not r["rows"])
    return f"{len(results)} queries in {database}"


def _alembic(server: DrillServer, run: PitrDrillRun, moment: datetime, outcome: dict) -> str:
    """Each tenant's Alembic version in the copy; a tenant active before the moment must have one."""
    from tenants.models import Tenant

    versions = {}
    tenants = Tenant.objects.filter(target=run.target).exclude(state__in=[Tenant.State.PENDING, Tenant.State.FAILED])
    for tenant in tenants:
        database = tenant.database_name or run.target.dbname
        found = None
        try:
            with server.connect(database) as conn:
                table = f"{tenant.schema_name}.alembic_version"
                if conn.execute("SELECT to_regclass(%s) IS NOT NULL", [sql.Identifier(tenant.schema_name).as_string(conn)
                                                                        + ".alembic_version"]).fetchone()[0]:
                    query = sql.SQL("SELECT version_num FROM {}.alembic_version ORDER BY 1").format(
                        sql.Identifier(tenant.schema_name))
                    found = [r[0] for r in conn.execute(query)]
        except psycopg.OperationalError:
            table = f"database {database}"
        versions[tenant.slug] = {"database": database, "schema": tenant.schema_name, "versions": found,
                                 "console": tenant.schema_version}
        existed = tenant.activated_at is not None and tenant.activated_at <= moment
        if existed and not found:
            outcome.setdefault("differences", []).append(
                {"check": "alembic version", "object": f"tenant {tenant.slug}", "expected": "a version",
                 "found": f"no {table} in the copy"})
    outcome.setdefault("verification", {})["alembic"] = versions
    return f"{len(versions)} tenants"


def _finish(ctx, run: PitrDrillRun, server: DrillServer, outcome: dict) -> None:
    """Stop the server and delete the folder (always), and write down what the drill found."""
    removed_at = None
    try:
        pitr_server.remove(server.root, server.user)
        removed_at = timezone.now() if not server.root.exists() else None
    except Exception as exc:  # the sweeper tries again
        log.warning("PITR drill %s: could not remove %s: %s", run.pk, server.root, exc)
    if removed_at is None:
        ctx.log(f"could not remove {server.root} (the sweeper will)", level="warning")
    verified_at = outcome.get("verified_at")
    _update(run, finished_at=timezone.now(), removed_at=removed_at, passed=outcome.get("passed"),
            reason=outcome.get("reason", ""), differences=outcome.get("differences", []),
            verification=outcome.get("verification", {}), verified_at=verified_at, steps=run.steps,
            rto_s=(verified_at - run.started_at).total_seconds() if verified_at else None)


@jobs.runner("pitr.drill")
def run_drill(ctx: jobs.JobContext) -> dict:
    ctx.set_total(DRILL_STEPS, "steps")
    run = drill(ctx)
    return {"pitr_drill_run_id": run.pk, "passed": run.passed, "rto_s": run.rto_s, "rpo_s": run.rpo_s,
            "backup_label": run.backup_label}


# The sweeper -------------------------------------------------------------------------------------


def sweep(now=None) -> dict:
    """Stop the servers and delete the folders that drills whose job is over, dead or on a later
    attempt left under PITR_DRILL_DIR (only folders with the drill marker)."""
    now = now or timezone.now()
    root = Path(settings.PITR_DRILL_DIR)
    removed, failed = [], []
    if not root.is_dir():
        return {"removed": removed, "failed": failed}
    found = {}
    for path in root.iterdir():
        match = ATTEMPT_DIR.match(path.name)
        if match and (path / pitr_server.MARKER).is_file():
            found[path] = (int(match.group(1)), int(match.group(2)))
    runs = {r.pk: r for r in PitrDrillRun.objects.filter(pk__in={i for i, _ in found.values()}).select_related("job", "policy")}
    for path, (run_id, attempt) in sorted(found.items()):
        run = runs.get(run_id)
        job = run.job if run else None
        superseded = job is not None and job.attempts > attempt
        if run is not None and not (_over(job, now) or superseded):
            continue
        try:
            pitr_server.remove(path, run.policy.run_as if run and run.policy else None)
        except Exception as exc:
            log.warning("PITR sweeper: could not remove %s: %s", path, exc)
        if path.exists():
            failed.append(str(path))
            continue
        if run is not None:
            PitrDrillRun.objects.filter(pk=run_id, removed_at__isnull=True).update(removed_at=timezone.now())
        removed.append(str(path))
    return {"removed": removed, "failed": failed}


# Schedule ----------------------------------------------------------------------------------------


def schedule_due(now=None) -> list[int]:
    """Start what each policy says is due; claimed with a conditional UPDATE (two beats never start it twice)."""
    now = now or timezone.now()
    started = []
    for policy in PhysicalBackupPolicy.objects.select_related("target"):
        for kind in policy.due(now):
            scheduled = {**policy.scheduled, kind: now.isoformat()}

            def claim(scheduled=scheduled):
                return PhysicalBackupPolicy.objects.filter(pk=policy.pk, scheduled=policy.scheduled).update(scheduled=scheduled)

            if kind == "drill":
                with transaction.atomic():
                    job = jobs.create("pitr.drill", target=policy.target) if claim() else None
            else:
                job, new = start_backup(policy.target, kind, claim=claim)
                if job is not None and not new:
                    continue  # a backup under way: due again at the next beat, once it is over
            if job is None:  # another beat claimed it
                break
            policy.scheduled = scheduled
            started.append(job.pk)
    return started
