"""The alerts of physical backups, for monitors.alerts.evaluate (targets with a physical backup
policy only): the newest backup older than the policy allows, WAL waiting to be archived while the
newest archived segment is older than the policy allows (archiving stuck: the classic silent
failure), and archiving failing now (pg_stat_archiver's last failure after its last success)."""

from __future__ import annotations

import logging

from console import engines
from console.pg import archiver as pg_archiver
from monitors.drills.physical import PhysicalBackup, PhysicalBackupPolicy

log = logging.getLogger(__name__)

CRITICAL = "critical"


def archiver_state(target) -> dict | None:
    try:
        with engines.connect(target, rollback=True) as conn:
            return pg_archiver.archiver(conn)
    except Exception as exc:  # the target_down and sampler alerts say why
        log.info("pg_stat_archiver of %s unreadable: %s", target.name, exc)
        return None


def wanted(target, now, policies: dict | None = None) -> dict:
    """metric -> (level, value, threshold, message), as monitors.alerts._apply takes them."""
    policy = (policies or {}).get(target.pk) if policies is not None else \
        PhysicalBackupPolicy.objects.filter(target=target).first()
    if policy is None:
        return {}
    found = {}
    newest = PhysicalBackup.objects.filter(target=target, expired_at__isnull=True).order_by("-stopped_at").first()
    age_h = (now - newest.stopped_at).total_seconds() / 3600 if newest else None
    if newest is None or age_h > policy.max_backup_age_h:
        said = f"last physical backup {newest.label} {age_h:,.1f} h ago" if newest else "no physical backup yet"
        found["physical_backup_age_h"] = (CRITICAL, age_h if age_h is not None else -1.0, float(policy.max_backup_age_h),
                                          f"{said} (the policy allows {policy.max_backup_age_h} h): start one on the "
                                          f"target's physical backups page")
    state = archiver_state(target)
    if state is None:
        return found
    if state["failing"]:
        found["wal_archive_failing"] = (
            CRITICAL, float(state["failed_count"]), 0.0,
            f"WAL archiving failing: {state['failed_count']} failures, last {state['last_failed_wal']} at "
            f"{state['last_failed_time']:%Y-%m-%d %H:%M:%S} UTC (archive_command; the server's log says why)")
    last = state["last_archived_time"]
    waiting = state["segments_waiting"] or 0
    if waiting > 0 and last is not None and (now - last).total_seconds() > policy.max_wal_age_s:
        age_s = (now - last).total_seconds()
        found["archived_wal_age_s"] = (
            CRITICAL, age_s, float(policy.max_wal_age_s),
            f"newest archived WAL {state['last_archived_wal']} is {age_s:,.0f} s old with {waiting} segments waiting "
            f"(the policy allows {policy.max_wal_age_s} s): archiving is stuck")
    return found
