"""Tenants: the list, one tenant, onboarding (one or many), fan-out migration, health refresh,
retry, and offboarding with four eyes (console.approvals). Pages read the console DB only; work is
a job."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, F, Q, When
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling, trigger_client_event

from console import approvals, audit, jobs
from console.listing import Column, SortedPage
from console.models import Job
from console.roles import APPROVER, OPERATOR, action
from console.views.approvals import attempt, decide_from_post
from tenants import migrator, offboarding, onboarding, runners
from tenants.forms import MigrateForm, OnboardForm, TenantFilterForm
from tenants.models import OFFBOARD_APPROVAL, Tenant


def _tenant(tenant_id) -> Tenant:
    return get_object_or_404(Tenant.objects.select_related("target", "last_health", "created_by"), pk=tenant_id)


def _tenant_jobs(tenant: Tenant, kind: str):
    """Jobs of one kind that worked on this tenant: its own, and bulk or fan-out ones."""
    if kind == runners.MIGRATE:
        return Job.objects.filter(kind=kind, target=tenant.target)
    return Job.objects.filter(Q(tenant=tenant) | Q(params__contains={"tenant_ids": [tenant.pk]}), kind=kind)


TENANTS_PER_PAGE = 50


def _measured(field: str):
    """A health figure to sort by; none for an archived tenant (its page shows none either)."""
    return Case(When(state=Tenant.State.ARCHIVED, then=None), default=F(f"last_health__{field}"))


TENANT_COLUMNS = [
    Column("tenant", "Tenant", ("slug",)),
    Column("target", "Target", ("target__name", "slug")),
    Column("strategy", "Strategy", ("strategy", "slug")),
    Column("state", "State", ("state", "slug")),
    Column("version", "Version", ("schema_version", "slug")),
    Column("drift", "Drift", (_measured("drift_count"), "slug"), title="differences from the application's metadata"),
    Column("size", "Size", (_measured("size_bytes"), "slug"), numeric=True),
    Column("rows", "Rows", numeric=True, title="estimated, from the last measurement"),
    Column("measured", "Measured", (_measured("measured_at"), "slug")),
]


def tenant_list(request):
    form = TenantFilterForm(request.GET or None)
    listing = SortedPage(request, form.filter(Tenant.objects.select_related("target", "last_health")),
                         TENANT_COLUMNS, default="tenant", per_page=TENANTS_PER_PAGE)
    tenants = Tenant.note_offboarding_requests(list(listing.page))
    context = {
        "form": form,
        "listing": listing,
        "tenants": tenants,
        "head": migrator.head(),
        "live": any(tenant.is_busy for tenant in tenants),
        "migrate_form": MigrateForm(),
    }
    if request.htmx:
        response = render(request, "tenants/tenant_list.html#tenant-table", context)
        if not context["live"]:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "tenants/tenant_list.html", context)


def tenant_detail(request, tenant_id):
    """The page, or one of its regions: `jobs` polls while a job or the tenant is changing and,
    once nothing is, stops polling and tells the page to refresh `summary` (state badge, actions,
    alerts, health, offboarding), which that job may have changed."""
    tenant = _tenant(tenant_id)
    context = _detail_context(request, tenant)
    fragment = request.GET.get("fragment") if request.htmx else None
    if fragment == "summary":
        return render(request, "tenants/tenant_detail.html#tenant-summary", context)
    if fragment == "jobs":  # the onboarding steps come along, out of band
        response = render(request, "tenants/tenant_detail.html#tenant-jobs", {**context, "steps_oob": True})
        if not context["live"]:
            response.status_code = HttpResponseStopPolling.status_code
            trigger_client_event(response, TENANT_CHANGED)
        return response
    return render(request, "tenants/tenant_detail.html", context)


TENANT_CHANGED = "tenant-changed"  # the htmx event the summary region refreshes on


def _detail_context(request, tenant: Tenant) -> dict:
    offboarding = tenant.offboarding_approval()
    job_lists = {
        "onboarding_jobs": list(_tenant_jobs(tenant, runners.ONBOARD)[:5]),
        "migration_jobs": list(_tenant_jobs(tenant, runners.MIGRATE)[:5]),
        "health_jobs": list(_tenant_jobs(tenant, runners.HEALTH)[:3]),
        "offboarding_jobs": list(Job.objects.filter(tenant=tenant, kind=runners.OFFBOARD)[:3]),
    }
    working = any(not job.is_finished for listed in job_lists.values() for job in listed)
    measuring = any(not job.is_finished for job in job_lists["health_jobs"])
    return {
        "tenant": tenant,
        "health": tenant.health(),
        "head": migrator.head(),
        **job_lists,
        "live": tenant.is_busy or working,
        "measuring": measuring,
        "offboarding": offboarding,
        "can_decide_offboarding": offboarding is not None and approvals.can_decide(offboarding, request.user),
        "alerts": tenant_alerts(tenant),
    }


def tenant_alerts(tenant: Tenant) -> list[str]:
    """Open alerts that concern the tenant, from what the console DB already knows."""
    alerts = []
    if tenant.target.status == tenant.target.Status.DOWN:
        alerts.append(f"target {tenant.target.name} is down: {tenant.target.last_error}")
    health = tenant.health()
    if health and not health.ok:
        alerts.append(f"last health measurement failed: {health.error}")
    if health and health.ok and not health.at_head:
        alerts.append(f"schema at {health.version or 'no version'}, application head is {health.head}")
    if health and health.has_drift:
        alerts.append(f"schema drift: {health.drift_count} difference(s) from the application's metadata")
    if tenant.state == Tenant.State.FAILED:
        alerts.append(f"onboarding failed at {tenant.failed_step}")
    return alerts


@action("tenant.onboard", OPERATOR)
def tenant_onboard(request):
    form = OnboardForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and not form.is_valid():
        audit.record(request, "tenant.onboard", outcome="failed", detail={"errors": _form_errors(form)})
    elif request.method == "POST":
        specs = form.cleaned_data["specs"]
        try:
            with transaction.atomic():
                tenants = onboarding.create_tenants(specs, form.cleaned_data["target"], request.user)
                job = onboarding.start_onboarding(tenants, user=request.user)
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error(None, message)
            audit.record(request, "tenant.onboard", outcome="failed", detail={"errors": exc.messages[:20]})
        else:
            audit.record(request, "tenant.onboard", job, detail={"tenants": [t.slug for t in tenants],
                                                                 "target": form.cleaned_data["target"].name})
            if len(tenants) == 1:
                messages.success(request, f"Onboarding {tenants[0].slug}: each step shows below as it completes.")
                return redirect(tenants[0])
            messages.success(request, f"Onboarding {len(tenants)} tenants in one job.")
            return redirect(job)
    return render(request, "tenants/tenant_onboard.html", {"form": form})


def _form_errors(form) -> list[str]:
    """The form's errors for an audit row: a few, short, with anything unprintable escaped (a
    refused value may be echoed in its message, and may hold what the console DB cannot store)."""
    def printable(text):
        return "".join(char if char.isprintable() else f"\\u{ord(char):04x}" for char in text[:300])

    return [printable(f"{field}: {message}") for field, messages in form.errors.items() for message in messages][:20]


@require_POST
@action("tenant.retry", OPERATOR)
def tenant_retry(request, tenant_id):
    tenant = _tenant(tenant_id)
    with transaction.atomic():
        claimed = Tenant.objects.filter(pk=tenant.pk, state=Tenant.State.FAILED).update(state=Tenant.State.PENDING)
        if claimed:
            job = onboarding.start_onboarding([tenant], user=request.user)
    if not claimed:
        messages.error(request, "Only a tenant whose onboarding failed can be retried.")
        return redirect(tenant)
    audit.record(request, "tenant.retry", tenant, detail={"job": job.pk, "from_step": tenant.next_step()})
    messages.success(request, f"Onboarding of {tenant.slug} resumes at {tenant.next_step()}.")
    return redirect(tenant)


@require_POST
@action("tenants.migrate", OPERATOR)
def tenants_migrate(request):
    form = MigrateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a primary or PgBouncer target.")
        return redirect("tenants")
    target = form.cleaned_data["target"]
    if request.POST.get("confirmed") != "yes":  # first what it will do (the Migrations page), then confirmed
        return redirect(f"{reverse('migrate-all')}?target={target.pk}")
    job = jobs.create(runners.MIGRATE, user=request.user, target=target, params={"target_id": target.pk})
    audit.record(request, "tenants.migrate", job, detail={"target": target.name, "head": migrator.head(),
                                                          "to": onboarding.release_revision()})
    return redirect(job)


@require_POST
@action("tenants.refresh_health", OPERATOR)
def tenants_refresh_health(request):
    job = jobs.create(runners.HEALTH, user=request.user, params={})
    audit.record(request, "tenants.refresh_health", job)
    return redirect(job)


@require_POST
@action("tenant.refresh_health", OPERATOR)
def tenant_refresh_health(request, tenant_id):
    tenant = _tenant(tenant_id)
    job = jobs.create(runners.HEALTH, user=request.user, target=tenant.target, tenant=tenant,
                      params={"tenant_ids": [tenant.pk]})
    audit.record(request, "tenant.refresh_health", tenant, detail={"job": job.pk})
    messages.info(request, "Measuring: the figures below update when the job is done.")
    return redirect(tenant)


@require_POST
@action("tenant.offboard_request", OPERATOR)
def tenant_offboard_request(request, tenant_id):
    tenant = _tenant(tenant_id)
    if tenant.state != Tenant.State.ACTIVE:
        messages.error(request, "Only an active tenant can be offboarded.")
        audit.record(request, "tenant.offboard_request", tenant, outcome="failed", detail={"state": tenant.state})
        return redirect(tenant)
    if attempt(request, "Not requested", offboarding.request_offboarding, tenant, request.user, http_request=request):
        messages.success(request, "Offboarding requested: an approver other than you must approve it.")
    return redirect(tenant)


def _decide_offboarding(request, tenant_id, approve: bool):
    tenant = _tenant(tenant_id)
    waiting = approvals.pending(OFFBOARD_APPROVAL, tenant)
    if waiting is None:
        messages.error(request, "There is no pending offboarding request to decide.")
    else:
        decide_from_post(request, waiting, approve=approve)
    return redirect(tenant)


@require_POST
@action("tenant.offboard_approve", APPROVER)
def tenant_offboard_approve(request, tenant_id):
    return _decide_offboarding(request, tenant_id, approve=True)


@require_POST
@action("tenant.offboard_reject", APPROVER)
def tenant_offboard_reject(request, tenant_id):
    return _decide_offboarding(request, tenant_id, approve=False)
