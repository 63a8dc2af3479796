"""Saving a backup policy: every change applies at once except a lower retention, which waits
for an approver other than the requester (console.approvals), bound to exactly the policy and the
retention the approver was shown; approving applies it."""

from __future__ import annotations

from console import approvals, audit
from monitors.drills.models import BackupPolicy, retention_text

RETENTION_APPROVAL = "drills.lower_retention"


def retention_shown(policy: BackupPolicy) -> dict:
    """What the approver of a lower retention is shown (and what voids it when it changes)."""
    proposed = policy.pending_retention or {}
    return {
        "action": "lower backup retention",
        "policy": str(policy),
        "destination": str(policy.directory()),
        "retention now": {"keep_count": policy.keep_count, "keep_days": policy.keep_days},
        "retention asked for": {"keep_count": proposed.get("keep_count"), "keep_days": proposed.get("keep_days")},
    }


def apply_retention_change(approval) -> None:
    """Once approved, in the transaction of the decision."""
    policy = BackupPolicy.objects.select_for_update().get(pk=approval.object_id)
    if not policy.pending_retention:
        raise approvals.ApprovalRefused("nothing waits to be applied any more", void=True)
    policy.keep_count = policy.pending_retention.get("keep_count")
    policy.keep_days = policy.pending_retention.get("keep_days")
    policy.pending_retention = None
    policy.save(update_fields=["keep_count", "keep_days", "pending_retention"])


approvals.register(RETENTION_APPROVAL, model=BackupPolicy, shown=retention_shown, on_approved=apply_retention_change)


def save(form, request) -> tuple[BackupPolicy, object | None]:
    """Save the form's policy; a lower retention is asked for instead of applied. Returns the
    policy and the approval request, if one was made (or already waits for this retention)."""
    policy: BackupPolicy = form.instance
    created = policy.pk is None
    wanted = {"keep_count": form.cleaned_data.get("keep_count"), "keep_days": form.cleaned_data.get("keep_days")}
    before = BackupPolicy.objects.get(pk=policy.pk) if not created else None
    lowers = before is not None and before.lowers_retention(**wanted)
    if lowers:
        policy.keep_count, policy.keep_days = before.keep_count, before.keep_days
        policy.pending_retention = wanted
    elif not created and wanted != {"keep_count": before.keep_count, "keep_days": before.keep_days}:
        policy.pending_retention = None  # a higher retention replaces a lower one that waited
    form.save()
    approval = None
    if lowers:
        approval = approvals.pending(RETENTION_APPROVAL, policy)
        if approval is None or approval.is_expired() or approval.digest != approvals.digest_of(retention_shown(policy)):
            summary = (f"Lower the retention of backups of {policy}: from {policy.retention_text()} "
                       f"to {retention_text(**wanted)}.")
            approval = approvals.request(RETENTION_APPROVAL, policy, retention_shown(policy), summary, request.user,
                                         http_request=request)
    audit.record(request, "drills.policy_save", policy, detail={
        "created": created, "schedule": policy.schedule_text(), "retention": policy.retention_text(),
        "retention_asked": retention_text(**wanted) if lowers else "", "approval": approval.pk if approval else None})
    return policy, approval
