"""Four eyes, one way for everything that needs them (tenant offboarding, a stage of a staged
change, ...).

`request()` stores exactly what the approver will be shown and its digest; `decide()` lets an
approver other than the requester (admins included) approve or reject exactly that; the action
calls `use()` right before it runs, which refuses, and voids the approval, unless what it is about
to do has the approved digest. Every step is an audit row about the approval, refusals included.

A kind registers the model its objects are, what an approver of one of them would be shown now
(so a decision on something that changed since the request voids it) and what starts once
approved. Call these functions outside a transaction: a refusal is recorded, then raised.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from console import audit
from console.models import Approval, AuditEvent
from console.roles import APPROVER, has_role

Decision = Approval.Decision


class ApprovalRefused(Exception):
    """The step cannot be taken; the message says why. `outcome` is the audit row's."""

    def __init__(self, message: str, *, outcome: str = AuditEvent.Outcome.FAILED, void: bool = False):
        super().__init__(message)
        self.outcome = outcome
        self.void = void


@dataclass(frozen=True)
class Kind:
    model: type
    shown: Callable[[object], dict]  # what an approver of this object would be shown now
    on_approved: Callable[[Approval], None] | None = None  # runs in the transaction of the decision


KINDS: dict[str, Kind] = {}


def register(kind: str, *, model: type, shown: Callable[[object], dict],
             on_approved: Callable[[Approval], None] | None = None) -> None:
    KINDS[kind] = Kind(model, shown, on_approved)


def canonical_json(shown: dict) -> str:
    """One text for one content: sorted keys, no spaces. Anything JSON cannot hold is refused."""
    return json.dumps(shown, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest_of(shown: dict) -> str:
    return hashlib.sha256(canonical_json(shown).encode()).hexdigest()


# Reading -----------------------------------------------------------------------------------------


def for_object(kind: str, obj):
    return Approval.objects.filter(kind=kind, object_type=obj._meta.model_name, object_id=str(obj.pk))


def latest(kind: str, obj) -> Approval | None:
    return for_object(kind, obj).select_related("requested_by", "decided_by").first()


def pending(kind: str, obj) -> Approval | None:
    return for_object(kind, obj).filter(decision=Decision.PENDING).select_related("requested_by").first()


def waiting(kind: str):
    """Pending and not expired, of one kind."""
    return Approval.objects.filter(kind=kind, decision=Decision.PENDING, expires_at__gt=timezone.now())


def waiting_for(user):
    """What this approver can decide: others' pending requests, not expired. Empty for others."""
    if not has_role(user, APPROVER):
        return Approval.objects.none()
    return (Approval.objects.filter(decision=Decision.PENDING, expires_at__gt=timezone.now())
            .exclude(requested_by=user).select_related("requested_by"))


def asked_by(user):
    return Approval.objects.filter(requested_by=user).select_related("requested_by", "decided_by")


def decided():
    return Approval.objects.exclude(decision=Decision.PENDING).select_related("requested_by", "decided_by")


def can_decide(approval: Approval, user) -> bool:
    """For pages: whether to offer Approve and Reject to this user."""
    return (approval.decision == Decision.PENDING and not approval.is_expired()
            and has_role(user, APPROVER) and approval.requested_by_id != user.pk)


def changed_since_request(approval: Approval) -> bool:
    """Whether a pending approval's object would now be shown differently (approving would void it)."""
    kind = KINDS.get(approval.kind)
    if approval.decision != Decision.PENDING or kind is None:
        return False
    obj = kind.model._default_manager.filter(pk=approval.object_id).first()
    return obj is None or digest_of(kind.shown(obj)) != approval.digest


def history(approval: Approval):
    """The approval's audit rows, oldest first."""
    return AuditEvent.objects.filter(object_type="approval", object_id=str(approval.pk)).order_by("created_at", "id")


# The steps ---------------------------------------------------------------------------------------


def request(kind: str, obj, shown: dict, summary: str, user, expires_in: timedelta | None = None, *,
            http_request=None) -> Approval:
    """Ask for approval of `shown` on `obj`. A pending request for the same kind and object with
    other content is voided (one pending approval per object); the same content still waiting is
    refused."""
    shown = json.loads(canonical_json(shown))  # stored exactly as digested
    digest = digest_of(shown)
    expires_in = expires_in if expires_in is not None else timedelta(hours=settings.APPROVAL_EXPIRY_H)
    try:
        with transaction.atomic():
            # One request at a time per object: two at once could both find nothing pending.
            type(obj)._default_manager.select_for_update().filter(pk=obj.pk).first()
            for old in for_object(kind, obj).filter(decision=Decision.PENDING).select_for_update():
                if old.digest == digest and not old.is_expired():
                    raise ApprovalRefused(f"the same request is already waiting for approval (#{old.pk}, asked by "
                                          f"{old.requested_by.get_username()})")
                _void(old, "superseded by a new request" if not old.is_expired() else "expired; asked again",
                      user, http_request)
            approval = Approval.objects.create(
                kind=kind, object_type=obj._meta.model_name, object_id=str(obj.pk), object_repr=str(obj)[:200],
                summary=summary, shown=shown, digest=digest, requested_by=user,
                expires_at=timezone.now() + expires_in,
            )
            _audit("approval.request", approval, user, http_request, summary=summary[:500],
                   expires_at=approval.expires_at.isoformat())
    except ApprovalRefused as refusal:
        _audit_refusal("approval.request", None, user, http_request, refusal, kind=kind, obj=obj)
        raise
    return approval


def decide(approval: Approval, user, approve: bool, comment: str = "", shown_digest: str = "", *,
           http_request=None) -> Approval:
    """Approve or reject. `shown_digest` is the digest of what the decider was shown: it must be the
    approval's. Row-locked, so of two deciders at once the second finds it decided."""
    action = "approval.approve" if approve else "approval.reject"
    try:
        with transaction.atomic():
            locked = Approval.objects.select_for_update().select_related("requested_by").get(pk=approval.pk)
            _check_decidable(locked, user, shown_digest)
            if approve:
                _check_unchanged(locked)
            locked.decision = Decision.APPROVED if approve else Decision.REJECTED
            locked.decided_by, locked.decided_at, locked.comment = user, timezone.now(), comment
            locked.save(update_fields=["decision", "decided_by", "decided_at", "comment"])
            kind = KINDS.get(locked.kind)
            if approve and kind is not None and kind.on_approved is not None:
                kind.on_approved(locked)
            _audit(action, locked, user, http_request, comment=comment[:500])
    except ApprovalRefused as refusal:
        if refusal.void:
            _void(approval, str(refusal), user, http_request)
        _audit_refusal(action, approval, user, http_request, refusal)
        raise
    return locked


def use(kind: str, obj, current_shown: dict, *, user=None, then: Callable[[Approval], None] | None = None,
        detail: dict | None = None) -> Approval:
    """Called by the action right before it runs: the latest approval of `kind` on `obj` must be
    approved, unexpired, unused and of exactly `current_shown`. It is then marked used and
    `then(approval)` runs in the same transaction (a checkpoint, so a resumed job does not ask
    twice). Otherwise an approved one is voided, and this refuses."""
    digest = digest_of(current_shown)
    with transaction.atomic():
        approval = for_object(kind, obj).select_for_update().first()
        refusal = _use_refusal(approval, digest)
        if refusal is None:
            approval.decision, approval.used_at = Decision.USED, timezone.now()
            approval.save(update_fields=["decision", "used_at"])
            _audit("approval.use", approval, user, None, **(detail or {}))
            if then is not None:
                then(approval)
            return approval
        if refusal.void:
            _void(approval, str(refusal), user, None)
        _audit_refusal("approval.use", approval, user, None, refusal, kind=kind, obj=obj, digest_now=digest,
                       **(detail or {}))
    raise refusal


def withdraw(approval: Approval, user, *, http_request=None) -> Approval:
    """The requester takes a pending request back."""
    try:
        with transaction.atomic():
            locked = Approval.objects.select_for_update().get(pk=approval.pk)
            if locked.requested_by_id != user.pk:
                raise ApprovalRefused("only the requester can withdraw a request", outcome=AuditEvent.Outcome.DENIED)
            if locked.decision != Decision.PENDING:
                raise ApprovalRefused(f"it is no longer waiting: {locked.get_decision_display().lower()}")
            locked.decision, locked.decided_at = Decision.WITHDRAWN, timezone.now()
            locked.save(update_fields=["decision", "decided_at"])
            _audit("approval.withdraw", locked, user, http_request)
    except ApprovalRefused as refusal:
        _audit_refusal("approval.withdraw", approval, user, http_request, refusal)
        raise
    return locked


# Checks ------------------------------------------------------------------------------------------


def _check_decidable(approval: Approval, user, shown_digest: str) -> None:
    denied = AuditEvent.Outcome.DENIED
    if approval.requested_by_id == user.pk:
        raise ApprovalRefused("you asked for this: someone else must decide (admins included)", outcome=denied)
    if not has_role(user, APPROVER):
        raise ApprovalRefused("deciding needs the approver role", outcome=denied)
    if approval.decision != Decision.PENDING:
        by = f" by {approval.decided_by.get_username()}" if approval.decided_by_id else ""
        raise ApprovalRefused(f"it is no longer waiting: {approval.get_decision_display().lower()}{by}")
    if approval.is_expired():
        raise ApprovalRefused(f"it expired at {_when(approval.expires_at)}: ask again")
    if shown_digest != approval.digest:
        raise ApprovalRefused("what you were shown is not what waits for approval: look at it again")


def _check_unchanged(approval: Approval) -> None:
    if changed_since_request(approval):
        raise ApprovalRefused(f"{approval.object_repr} changed since the request (or is gone): what would be "
                              "approved is not what was asked for; ask again", void=True)


def _use_refusal(approval: Approval | None, digest: str) -> ApprovalRefused | None:
    if approval is None:
        return ApprovalRefused("nothing was approved")
    if approval.decision == Decision.USED:
        return ApprovalRefused(f"the approval was already used at {_when(approval.used_at)}")
    if approval.decision != Decision.APPROVED:
        return ApprovalRefused(f"it is not approved: {approval.get_decision_display().lower()}")
    if approval.is_expired():
        return ApprovalRefused(f"the approval expired at {_when(approval.expires_at)}", void=True)
    if digest != approval.digest:
        return ApprovalRefused("what is about to be done is not what was approved (it changed since): "
                               "the approval is void; ask again", void=True)
    return None


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


# Recording ---------------------------------------------------------------------------------------


def _void(approval: Approval, reason: str, user, http_request) -> None:
    voided = Approval.objects.filter(pk=approval.pk, decision__in=[Decision.PENDING, Decision.APPROVED]).update(
        decision=Decision.VOIDED)
    if voided:
        approval.decision = Decision.VOIDED
        _audit("approval.void", approval, user, http_request, reason=reason)


def _audit(action: str, approval: Approval, user, http_request, *, outcome=AuditEvent.Outcome.OK, **detail):
    return audit.record(http_request, action, approval, user=user, outcome=outcome, detail={
        "kind": approval.kind, "object_type": approval.object_type, "object_id": approval.object_id,
        "object": approval.object_repr, "digest": approval.digest, **detail,
    })


def _audit_refusal(action, approval, user, http_request, refusal: ApprovalRefused, *, kind=None, obj=None, **detail):
    if approval is not None:
        return _audit(action, approval, user, http_request, outcome=refusal.outcome, reason=str(refusal), **detail)
    return audit.record(http_request, action, user=user, outcome=refusal.outcome, detail={
        "kind": kind, "object_type": obj._meta.model_name, "object_id": str(obj.pk), "object": str(obj)[:200],
        "reason": str(refusal), **detail,
    })
