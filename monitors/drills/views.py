"""Backups and restore drills pages: the drills list (per policy: last result, last RTO and RPO,
next run, overdue), a policy's page (run history, RTO/RPO trend), a drill run's page (live steps,
the verification table), the backups per target and tenant, and the policy form. Pages read the
console DB only."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Max
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from console import approvals, audit, jobs
from console.models import Job, Target
from console.roles import OPERATOR, action
from monitors import charts, panels
from monitors.drills import backups, policies, restores  # noqa: F401  (restores registers the drill job runners)
from monitors.drills.forms import PolicyForm
from monitors.drills.models import Backup, BackupPolicy, DrillRun


def _sources():
    return Target.objects.exclude(role__in=[Target.Role.SCRATCH, Target.Role.PGBOUNCER]).order_by("name")


def drill_list(request):
    now = timezone.now()
    rows = [(policy, policy.status(now)) for policy in BackupPolicy.objects.select_related("target", "scratch", "tenant")
            .order_by("target__name", "database", "tenant__slug")]
    context = {"policies": rows, "scratch_targets": Target.objects.filter(role=Target.Role.SCRATCH),
               "sources": _sources(), "jobs": Job.objects.filter(kind__startswith="drills.")[:20],
               "drill_runs": DrillRun.objects.select_related("backup__target", "backup__tenant", "scratch")[:20]}
    return render(request, "monitors/drill_list.html", context)


def _id(value) -> int:
    """A posted object id, or 0 (matches nothing) for anything that is not one."""
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 19 else 0


@require_POST
@action("drills.run", OPERATOR)
def drill_run(request):
    """Backup and drill now: of a policy's database, or of the chosen target's own database."""
    policy = BackupPolicy.objects.select_related("target").filter(pk=_id(request.POST.get("policy"))).first()
    target = policy.target if policy else _sources().filter(pk=_id(request.POST.get("target"))).first()
    if target is None or not Target.objects.filter(role=Target.Role.SCRATCH).exists():
        why = "choose a target to back up" if target is None else "no scratch server to restore into"
        audit.record(request, "drills.run", outcome="failed", detail={"why": why})
        messages.error(request, f"Backup and drill: {why}.")
        return redirect(policy or "drills")
    database = policy.database if policy else target.dbname
    tenant = policy.tenant if policy else None
    job, new = backups.start("drills.backup_and_drill", target, database, tenant, user=request.user, policy=policy)
    if not new:  # a second press, a second operator, or the schedule: one backup at a time
        messages.info(request, f"A backup of {target.name}/{database} is already under way: job #{job.pk}.")
        return redirect(job)
    audit.record(request, "drills.run", job, detail={"target": target.name, "database": database,
                                                     "tenant": tenant.slug if tenant else ""})
    return redirect(job)


@require_POST
@action("drills.drill_backup", OPERATOR)
def backup_drill(request, backup_id):
    """Drill this backup (not the latest): restored and verified on a scratch server."""
    backup = get_object_or_404(Backup.objects.select_related("target", "tenant", "policy"), pk=backup_id)
    back = backup.policy or "drill-backups"
    if backup.state != Backup.State.DONE or not Target.objects.filter(role=Target.Role.SCRATCH).exists():
        why = (f"backup #{backup.pk} is {backup.get_state_display().lower()}, it cannot be restored"
               if backup.state != Backup.State.DONE else "no scratch server to restore into")
        audit.record(request, "drills.drill_backup", backup, outcome="failed", detail={"why": why})
        messages.error(request, f"Drill: {why}.")
        return redirect(back)
    job = jobs.create("drills.drill", user=request.user, target=backup.target, tenant=backup.tenant,
                      params={"backup_id": backup.pk})
    audit.record(request, "drills.drill_backup", job, detail={"backup": backup.pk, "target": backup.target.name})
    return redirect(job)


def policy_detail(request, policy_id):
    policy = get_object_or_404(BackupPolicy.objects.select_related("target", "scratch", "tenant"), pk=policy_id)
    runs = Paginator(policy.drill_runs().select_related("backup", "scratch"), 50).get_page(request.GET.get("page"))
    waiting = approvals.pending(policies.RETENTION_APPROVAL, policy)
    context = {"policy": policy, "status": policy.status(), "runs": runs, "approval": waiting,
               "backups": policy.backups_of().exclude(state=Backup.State.REMOVED)[:20],
               "removed_backups": policy.backups_of().filter(state=Backup.State.REMOVED).count()}
    return render(request, "monitors/drill_policy.html", context)


def policy_series(request, policy_id):
    """RTO and RPO of the policy's drills over a window, for static/charts.js."""
    policy = get_object_or_404(BackupPolicy, pk=policy_id)
    window_name = request.GET.get("window") if request.GET.get("window") in panels.WINDOWS else "7d"
    now = timezone.now()
    since = now - panels.WINDOWS[window_name]
    rows = []
    for run in policy.drill_runs().filter(started_at__gte=since).order_by("started_at"):
        rows += [(run.started_at, "rto_s", run.rto_s), (run.started_at, "rpo_s", run.rpo_s)]
    # Drills are far apart: no gap markers between them (a step as long as the window).
    data = charts.columns(rows, ["rto_s", "rpo_s"], panels.WINDOWS[window_name].total_seconds(), since, now, "s",
                          ["RTO (start to verified)", "RPO (drill start minus snapshot)"])
    return JsonResponse({"name": "drill-trend", "window": window_name, **data})


def run_detail(request, run_id):
    run = get_object_or_404(DrillRun.objects.select_related("backup__target", "backup__tenant", "backup__policy",
                                                            "scratch", "job"), pk=run_id)
    context = {"run": run, "policy": run.backup.policy if run.backup else None}
    if request.htmx and request.GET.get("fragment") == "live":
        response = render(request, "monitors/drill_run.html#drill-run-live", context)
        if run.is_over:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "monitors/drill_run.html", context)


def backup_list(request):
    """Per target database and per tenant: the last backup, its size and age, verified or not."""
    now = timezone.now()
    scopes = (Backup.objects.exclude(state=Backup.State.REMOVED)
              .values("target_id", "database", "schema", "tenant_id").annotate(last_id=Max("id")))
    last = {b.pk: b for b in Backup.objects.filter(pk__in=[s["last_id"] for s in scopes])
            .select_related("target", "tenant", "policy")}
    verified = {}
    for b in Backup.objects.filter(verified_at__isnull=False).order_by("snapshot_at"):
        verified[(b.target_id, b.database, b.schema, b.tenant_id)] = b
    rows = sorted(({"backup": last[s["last_id"]], "verified": verified.get(
        (s["target_id"], s["database"], s["schema"], s["tenant_id"]))} for s in scopes),
        key=lambda r: (r["backup"].target.name, r["backup"].database, r["backup"].schema))
    for row in rows:
        at = row["backup"].snapshot_at or row["backup"].created_at
        row["age_s"] = (now - at).total_seconds()
    context = {"rows": rows, "recent": Backup.objects.select_related("target", "tenant")[:50]}
    return render(request, "monitors/backup_list.html", context)


@action("drills.policy_save", OPERATOR)
def policy_form(request, policy_id=None):
    policy = get_object_or_404(BackupPolicy, pk=policy_id) if policy_id else None
    initial = {} if policy else {"tenant": request.GET.get("tenant")}  # from the tenant page's link
    form = PolicyForm(request.POST or None, instance=policy, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            saved, approval = policies.save(form, request)
        except approvals.ApprovalRefused as refusal:
            messages.error(request, f"Not saved: {refusal}.")
        else:
            if approval is not None:
                messages.warning(request, f"Saved, except the lower retention ({saved.pending_retention_text()}): "
                                          "it waits for an approver other than you.")
            else:
                messages.success(request, f"Backup policy of {saved} saved.")
            return redirect(saved)
    title = f"Edit the backup policy of {policy}" if policy else "New backup policy"
    return render(request, "monitors/drill_policy_form.html", {"form": form, "policy": policy, "title": title})
