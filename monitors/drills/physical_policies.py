"""Saving a physical backup policy: every change applies at once except a lower pgBackRest
retention (repo1-retention-full or -diff), which waits for an approver other than the requester
(console.approvals), bound to exactly the stanza and the retention the approver was shown: the
expire after the next backup would remove the older backups and the WAL of their PITR window."""

from __future__ import annotations

from console import approvals, audit
from monitors.drills import policies
from monitors.drills.physical import PhysicalBackupPolicy

RETENTION_APPROVAL = "pitr.lower_retention"


def retention_shown(policy: PhysicalBackupPolicy) -> dict:
    """What the approver of a lower retention is shown (and what voids it when it changes)."""
    proposed = policy.pending_retention or {}
    return {
        "action": "lower pgBackRest retention",
        "policy": str(policy),
        "configuration": policy.config,
        "retention now": {"retention_full": policy.retention_full, "retention_diff": policy.retention_diff},
        "retention asked for": {"retention_full": proposed.get("retention_full"),
                                "retention_diff": proposed.get("retention_diff")},
    }


RETENTION_FIELDS = ("retention_full", "retention_diff")
approvals.register(RETENTION_APPROVAL, model=PhysicalBackupPolicy, shown=retention_shown,
                   on_approved=policies.apply_pending_retention(PhysicalBackupPolicy, RETENTION_FIELDS))


def save(form, request) -> tuple[PhysicalBackupPolicy, object | None]:
    """Save the form's policy; a lower retention is asked for instead of applied. Returns the
    policy and the approval request, if one was made (or already waits for this retention)."""
    saved, approval, created, wanted, lowers = policies.save_holding_lower_retention(
        form, request, kind=RETENTION_APPROVAL, fields=RETENTION_FIELDS, shown=retention_shown,
        summary=lambda policy, wanted: (f"Lower the pgBackRest retention of {policy}: from {policy.retention_text()} "
                                        f"to {policy.retention_text(**wanted, asked=True)}."))
    audit.record(request, "pitr.policy_save", saved, detail={
        "target": saved.target.name, "stanza": saved.stanza, "created": created, "retention": saved.retention_text(),
        "retention_asked": saved.retention_text(**wanted, asked=True) if lowers else "",
        "approval": approval.pk if approval else None})
    return saved, approval
