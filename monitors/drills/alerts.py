"""The backup alerts of a policy, raised with the other alerts of its target (monitors.alerts):
no backup younger than backup_max_age_h (warning), no verified backup (one a drill restored and
verified) younger than drill_max_age_h (critical)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.db.models import Max, Q

from monitors.drills.models import Backup, BackupPolicy

METRIC_MAX_CHARS = 48  # Alert.metric


def metric_name(kind: str, policy: BackupPolicy) -> str:
    name = f"{kind}:tenant:{policy.tenant.slug}" if policy.tenant_id else f"{kind}:{policy.database}"
    return name if len(name) <= METRIC_MAX_CHARS else f"{kind}:policy{policy.pk}"


def wanted(target_ids, now) -> dict[int, dict[str, tuple]]:
    """{target id: {metric: (level, value, threshold, message)}} for the policies of these targets."""
    policies = list(BackupPolicy.objects.live().filter(target_id__in=target_ids).select_related("tenant"))
    ages = {"backup_at": Max("snapshot_at", filter=Q(state=Backup.State.DONE)),
            "verified_at": Max("snapshot_at", filter=Q(verified_at__isnull=False, state=Backup.State.DONE))}
    whole = Backup.objects.filter(target_id__in=target_ids, schema="", tenant__isnull=True)
    latest = {(row["target_id"], row["database"]): row for row in whole.values("target_id", "database").annotate(**ages)}
    by_tenant = {row["tenant_id"]: row for row in Backup.objects.filter(
        tenant_id__in=[p.tenant_id for p in policies if p.tenant_id]).values("tenant_id").annotate(**ages)}
    found: dict[int, dict[str, tuple]] = defaultdict(dict)
    for policy in policies:
        row = by_tenant.get(policy.tenant_id, {}) if policy.tenant_id else latest.get((policy.target_id, policy.database), {})
        for kind, at, max_age_h, level, what in (
                ("backup_age", row.get("backup_at"), policy.backup_max_age_h, "warning", "backup"),
                ("verified_backup_age", row.get("verified_at"), policy.drill_max_age_h, "critical", "verified backup")):
            if at is not None and now - at <= timedelta(hours=max_age_h):
                continue
            age_h = (now - at).total_seconds() / 3600 if at is not None else 0.0
            since = f"the last one was taken {age_h:,.0f} h ago" if at is not None else "there has never been one"
            found[policy.target_id][metric_name(kind, policy)] = (
                level, age_h, float(max_age_h),
                f"No {what} of {_scope(policy)} younger than {max_age_h} h: {since}"
                + (" (run a drill: only a drill verifies a backup)" if kind == "verified_backup_age" else ""))
    return found


def _scope(policy: BackupPolicy) -> str:
    return f"tenant {policy.tenant.slug}" if policy.tenant_id else policy.database
