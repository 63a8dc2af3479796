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


def apply_pending_retention(model, fields: tuple[str, ...]):
    """What applies a policy's approved `pending_retention` (its `fields`), once approved, in the
    transaction of the decision."""
    def apply(approval) -> None:
        policy = model.objects.select_for_update().get(pk=approval.object_id)
        if not policy.pending_retention:
            raise approvals.ApprovalRefused("nothing waits to be applied any more", void=True)
        for name in fields:
            setattr(policy, name, policy.pending_retention.get(name))
        policy.pending_retention = None
        policy.save(update_fields=[*fields, "pending_retention"])

    return apply


RETENTION_FIELDS = ("keep_count", "keep_days")
approvals.register(RETENTION_APPROVAL, model=BackupPolicy, shown=retention_shown,
                   on_approved=apply_pending_retention(BackupPolicy, RETENTION_FIELDS))


def save_holding_lower_retention(form, request, *, kind: str, fields: tuple[str, ...], shown, summary):
    """Save the form's policy, its retention `fields` too unless they lower retention
    (`policy.lowers_retention(**wanted)`): then they wait in `pending_retention` for an approval
    of `kind`, asked for (`summary(policy, wanted)`) unless the same one already waits.
    Returns (policy, approval or None, created, wanted, lowers)."""
    policy = form.instance
    created = policy.pk is None
    wanted = {name: form.cleaned_data.get(name) for name in fields}
    before = type(policy).objects.get(pk=policy.pk) if not created else None
    lowers = before is not None and before.lowers_retention(**wanted)
    if lowers:
        for name in fields:
            setattr(policy, name, getattr(before, name))
        policy.pending_retention = wanted
    elif not created and wanted != {name: getattr(before, name) for name in fields}:
        policy.pending_retention = None  # a higher retention replaces a lower one that waited
    policy = form.save()
    approval = None
    if lowers:
        approval = approvals.pending(kind, policy)
        if approval is None or approval.is_expired() or approval.digest != approvals.digest_of(shown(policy)):
            approval = approvals.request(kind, policy, shown(policy), summary(policy, wanted), request.user,
                                         http_request=request)
    return policy, approval, created, wanted, lowers


def save(form, request) -> tuple[BackupPolicy, object | None]:
    """Save the form's policy; a lower retention is asked for instead of applied. Returns the
    policy and the approval request, if one was made (or already waits for this retention)."""
    policy, approval, created, wanted, lowers = save_holding_lower_retention(
        form, request, kind=RETENTION_APPROVAL, fields=RETENTION_FIELDS, shown=retention_shown,
        summary=lambda policy, wanted: (f"Lower the retention of backups of {policy}: from {policy.retention_text()} "
                                        f"to {retention_text(**wanted)}."))
    audit.record(request, "drills.policy_save", policy, detail={
        "created": created, "schedule": policy.schedule_text(), "retention": policy.retention_text(),
        "retention_asked": retention_text(**wanted) if lowers else "", "approval": approval.pk if approval else None})
    return policy, approval
