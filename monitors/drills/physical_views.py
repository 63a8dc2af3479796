"""Physical backups and PITR drills pages: every policy (from the console DB), a target's physical
backups (read live from `pgbackrest info` and `pg_stat_archiver`, failures shown where the data
would be), a PITR drill run (its steps and recovery progress refreshed until it ends), and the
operator's buttons: a backup of a type, a drill to a moment."""

from datetime import datetime, timezone as dt_timezone

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from console import approvals, audit, jobs
from console.models import Job, Target
from console.roles import OPERATOR, action
from console.pg import pgbackrest
from monitors.drills import physical_policies, pitr, pitr_alerts
from monitors.drills.physical import PhysicalBackup, PhysicalBackupPolicy, PitrDrillRun
from monitors.drills.physical_forms import PhysicalPolicyForm


def physical_list(request):
    now = timezone.now()
    rows = []
    for policy in PhysicalBackupPolicy.objects.select_related("target").order_by("target__name"):
        newest = PhysicalBackup.objects.filter(target=policy.target, expired_at__isnull=True).first()
        rows.append({"policy": policy, "newest": newest,
                     "age_s": (now - newest.stopped_at).total_seconds() if newest else None,
                     "late": newest is None or (now - newest.stopped_at).total_seconds() > policy.max_backup_age_h * 3600,
                     "last_drill": PitrDrillRun.objects.filter(target=policy.target).first()})
    return render(request, "monitors/physical_list.html", {
        "rows": rows, "runs": PitrDrillRun.objects.select_related("target")[:20]})


def physical_backups(request, target_id):
    target = get_object_or_404(Target, pk=target_id)
    policy = PhysicalBackupPolicy.objects.filter(target=target).first()
    context = {"target": target, "policy": policy, "info": None, "info_error": "", "archiver": None,
               "runs": PitrDrillRun.objects.filter(target=target)[:20],
               "jobs": Job.objects.filter(target=target, kind__startswith="pitr.")[:10]}
    if policy is not None:
        try:
            context["info"] = pitr.sync_backups(policy)
        except (pgbackrest.PgBackRestFailed, ValueError) as exc:
            context["info_error"] = str(exc)
        context["archiver"] = pitr_alerts.archiver_state(target)
        context["approval"] = approvals.pending(physical_policies.RETENTION_APPROVAL, policy)
        context["default_moment"] = timezone.now() - policy.delay
    now = timezone.now()
    context["backups"] = [{"backup": b, "age_s": (now - b.stopped_at).total_seconds()}
                          for b in PhysicalBackup.objects.filter(target=target, expired_at__isnull=True)]
    context["expired"] = PhysicalBackup.objects.filter(target=target, expired_at__isnull=False).count()
    return render(request, "monitors/physical_backups.html", context)


@require_POST
@action("pitr.backup", OPERATOR)
def start_backup(request, target_id):
    policy = get_object_or_404(PhysicalBackupPolicy.objects.select_related("target"), target_id=target_id)
    kind = request.POST.get("type")
    if kind not in pgbackrest.BACKUP_TYPES:
        messages.error(request, f"Not started: a backup type is one of {', '.join(pgbackrest.BACKUP_TYPES)}.")
        return redirect("physical-backups", target_id)
    job, new = pitr.start_backup(policy.target, kind, user=request.user)
    if not new:
        messages.warning(request, f"Not started: a backup of {policy.target.name} is already running (#{job.pk}); "
                                  "pgBackRest backs a stanza up once at a time.")
        return redirect(job)
    audit.record(request, "pitr.backup", job, detail={"target": policy.target.name, "type": kind})
    return redirect(job)


@require_POST
@action("pitr.drill", OPERATOR)
def start_drill(request, target_id):
    """A PITR drill now: to the moment given (UTC), or to now minus the policy's delay."""
    policy = get_object_or_404(PhysicalBackupPolicy.objects.select_related("target"), target_id=target_id)
    params = {}
    given = (request.POST.get("target_at") or "").strip()
    if given:
        try:
            moment = datetime.fromisoformat(given)
        except ValueError:
            messages.error(request, f"Not started: {given!r} is not a moment (YYYY-MM-DD HH:MM:SS, UTC).")
            return redirect("physical-backups", target_id)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt_timezone.utc)
        if moment > timezone.now():
            messages.error(request, "Not started: the moment to recover to is in the future.")
            return redirect("physical-backups", target_id)
        oldest = (PhysicalBackup.objects.filter(target=policy.target, expired_at__isnull=True)
                  .order_by("stopped_at").values_list("stopped_at", flat=True).first())
        if oldest is None or moment < oldest:  # recovery can only start from a backup that ended before it
            since = f"the oldest ended {oldest:%Y-%m-%d %H:%M:%S} UTC" if oldest else "there is none yet: take one first"
            messages.error(request, f"Not started: no physical backup is older than that moment ({since}).")
            return redirect("physical-backups", target_id)
        params["target_at"] = moment.astimezone(dt_timezone.utc).isoformat()
    job = jobs.create("pitr.drill", user=request.user, target=policy.target, params=params)
    audit.record(request, "pitr.drill", job, detail={"target": policy.target.name, **params})
    return redirect(job)


def drill_run(request, run_id):
    run = get_object_or_404(PitrDrillRun.objects.select_related("target", "policy", "job"), pk=run_id)
    context = {"run": run}
    if request.htmx and request.GET.get("fragment") == "live":
        response = render(request, "monitors/pitr_run.html#pitr-live", context)
        if not run.running:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "monitors/pitr_run.html", context)


@action("pitr.policy_save", OPERATOR)
def policy_form(request, target_id):
    target = get_object_or_404(Target, pk=target_id)
    policy = PhysicalBackupPolicy.objects.filter(target=target).first()
    form = PhysicalPolicyForm(request.POST or None, instance=policy, target=target)
    if request.method == "POST" and form.is_valid():
        try:
            saved, approval = physical_policies.save(form, request)
        except approvals.ApprovalRefused as refusal:
            messages.error(request, f"Not saved: {refusal}.")
        else:
            if approval is not None:
                asked = saved.retention_text(**saved.pending_retention, asked=True)
                messages.warning(request, f"Saved, except the lower retention ({asked}): "
                                          "it waits for an approver other than you.")
            else:
                messages.success(request, f"Physical backup policy of {target.name} saved.")
            return redirect("physical-backups", target.pk)
    title = f"{'Edit the' if policy else 'New'} physical backup policy of {target.name}"
    return render(request, "monitors/physical_policy_form.html", {"form": form, "target": target, "title": title})
