"""Approvals: what waits for me, what I asked for, what was decided; one approval with exactly
what was asked for, approved or rejected there by an approver other than the requester."""

import json

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from console import approvals
from console.forms import _filtered
from console.models import Approval
from console.roles import APPROVER, VIEWER, action

FINAL = {Approval.Decision.REJECTED, Approval.Decision.VOIDED, Approval.Decision.WITHDRAWN, Approval.Decision.USED}


def _settled(approval: Approval) -> bool:
    """Nothing will change any more (a pending one that expired stays as it is)."""
    return approval.decision in FINAL or approval.is_expired()


class DecidedFilterForm(forms.Form):
    kind = forms.CharField(required=False, max_length=64)
    decision = forms.ChoiceField(required=False, choices=[("", "any decision"), *[
        choice for choice in Approval.Decision.choices if choice[0] != Approval.Decision.PENDING]])
    requester = forms.CharField(required=False, max_length=150)
    since = forms.DateTimeField(required=False, label="Asked since",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    LOOKUPS = {"kind": "kind__icontains", "decision": "decision", "requester": "requested_by__username__icontains",
               "since": "requested_at__gte"}

    def filter(self, queryset):
        return _filtered(self, queryset)


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(required=False, choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(required=False, max_length=2000)
    digest = forms.CharField(required=False, max_length=64)


def approval_list(request):
    form = DecidedFilterForm(request.GET or None)
    decided = Paginator(form.filter(approvals.decided()), 50).get_page(request.GET.get("page"))
    waiting = approvals.waiting_for(request.user)
    context = {"form": form, "decided": decided, "waiting": waiting,
               "asked": approvals.asked_by(request.user)[:20]}
    if request.htmx and request.GET.get("fragment") == "waiting":
        return render(request, "console/approvals.html#approvals-waiting", context)
    if request.htmx:
        return render(request, "console/approvals.html#approvals-decided", context)
    return render(request, "console/approvals.html", context)


def approval_detail(request, approval_id):
    approval = get_object_or_404(Approval.objects.select_related("requested_by", "decided_by"), pk=approval_id)
    context = {"approval": approval, "can_decide": approvals.can_decide(approval, request.user),
               "changed": approvals.changed_since_request(approval), "history": approvals.history(approval),
               "shown_rows": _shown_rows(approval.shown), "live": not _settled(approval)}
    if request.htmx and request.GET.get("fragment") == "state":
        response = render(request, "console/approval_detail.html#approval-state", context)
        if _settled(approval):
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "console/approval_detail.html", context)


def _shown_rows(shown: dict) -> list[tuple[str, str, bool]]:
    """(key, text, nested) for each key of what was shown: a list of texts (SQL statements, tenant
    keys) a line each, other nested values as indented JSON."""
    rows = []
    for key, value in sorted(shown.items()):
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            rows.append((key, "\n".join(value) or "—", True))
        elif isinstance(value, (dict, list)):
            rows.append((key, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False), True))
        else:
            rows.append((key, "—" if value is None else str(value), False))
    return rows


def decide_from_post(request, approval: Approval, approve: bool | None = None) -> Approval | None:
    """Approve or reject from a posted form (decision unless `approve` says, comment, digest of what
    was shown); the outcome, or the refusal, as a message. Shared with pages that decide in place."""
    form = DecisionForm(request.POST)
    if not form.is_valid() or (approve is None and not form.cleaned_data["decision"]):
        messages.error(request, "Choose approve or reject; a comment is at most 2000 characters.")
        return None
    if approve is None:
        approve = form.cleaned_data["decision"] == "approve"
    decided = attempt(request, f"Not {'approved' if approve else 'rejected'}", approvals.decide, approval,
                      request.user, approve, form.cleaned_data["comment"], form.cleaned_data["digest"],
                      http_request=request)
    if decided is not None:
        messages.success(request, f"{'Approved' if approve else 'Rejected'}: {decided.summary}")
    return decided


def attempt(request, refused: str, step, *args, **kwargs):
    """`step(*args, **kwargs)`, or None with its refusal as an error message after `refused`."""
    try:
        return step(*args, **kwargs)
    except approvals.ApprovalRefused as refusal:
        messages.error(request, f"{refused}: {refusal}.")
        return None


@require_POST
@action("approvals.decide", APPROVER)
def approval_decide(request, approval_id):
    approval = get_object_or_404(Approval, pk=approval_id)
    decide_from_post(request, approval)
    return redirect(approval)


@require_POST
@action("approvals.withdraw", VIEWER)
def approval_withdraw(request, approval_id):
    approval = get_object_or_404(Approval, pk=approval_id)
    if attempt(request, "Not withdrawn", approvals.withdraw, approval, request.user, http_request=request):
        messages.info(request, "Request withdrawn.")
    return redirect(approval)
