from django.conf import settings
from django.db.models import Q
from django.contrib import messages
from django.core.exceptions import ValidationError
from datetime import datetime
from datetime import timezone as dt_timezone

from django.http import Http404, JsonResponse
from django.utils import timezone
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from console import audit, jobs
from console.models import Job, Target
from console.roles import OPERATOR, action
from console.validators import validate_pg_name
from migrations_ui import changes, plans, rollouts, services
from monitors import charts
from monitors.panels import WINDOWS
from migrations_ui.forms import BackfillForm, ChangeForm
from migrations_ui.models import Backfill, Change, Rollout
from tenants import migrator, onboarding
from tenants.forms import MigrateForm
from tenants.models import Tenant

RATE_STEP_S = 5.0  # longer than any batch and its rest: a silence of two steps is a pause or a throttle
APP_PLAN_SCHEMA = "tenant"  # the version table's schema in the rendered SQL: any tenant's


MIGRATION_JOBS = Q(kind__startswith="migrations.") | Q(kind="tenants.migrate")


def migration_list(request):
    """Every migration-like thing: the application's staged changes, rollouts, console-authored
    changes, backfills, and the jobs of them all (tenants.migrate included)."""
    try:
        staged = [{"change": c, "at": rollouts.tenants_at(c)} for c in rollouts.staged_changes()]
        release, head, app_error = onboarding.release_revision(), migrator.head(), ""
    except migrator.MigratorError as exc:  # e.g. several heads: said here, the rest of the page still shown
        staged, release, head, app_error = [], "", "", str(exc)
    return render(request, "migrations_ui/migration_list.html", {
        "staged": staged, "app_error": app_error,
        "rollouts": Rollout.objects.select_related("job", "requested_by")[:20],
        "changes": Change.objects.select_related("target", "requested_by")[:50],
        "backfills": Backfill.objects.filter(rollout_cell__isnull=True).select_related("target", "job")[:20],
        "jobs": Job.objects.filter(MIGRATION_JOBS).select_related("target", "tenant", "requested_by")[:50],
        "release": release, "head": head,
    })


def migrate_all(request):
    """What "Migrate all to head" will do on a target, and its confirmation (it posts to tenants-migrate)."""
    form = MigrateForm(request.GET or None)
    plan, app_error = None, ""
    try:
        plan = rollouts.migrate_all_plan(form.cleaned_data["target"]) if form.is_valid() else None
    except migrator.MigratorError as exc:
        app_error = str(exc)
    return render(request, "migrations_ui/migrate_all.html", {"form": form, "plan": plan, "app_error": app_error})


# Backfills: pages read the console DB only; running one checks it against the target first.


def _backfills_page(request, form, status=200):
    backfills = list(Backfill.objects.filter(rollout_cell__isnull=True).select_related("target", "job", "requested_by")[:100])
    context = {"form": form, "backfills": backfills, "live": any(b.is_live for b in backfills)}
    if request.htmx:
        response = render(request, "migrations_ui/backfill_list.html#backfill-table", context)
        if not context["live"]:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "migrations_ui/backfill_list.html", context, status=status)


def backfill_list(request):
    return _backfills_page(request, BackfillForm())


@require_POST
@action("migrations.backfill", OPERATOR)
def backfill_run(request):
    form = BackfillForm(request.POST)
    if form.is_valid():
        data = dict(form.cleaned_data)
        try:
            backfill = services.create_backfill(user=request.user, **data)
        except services.BackfillRefused as exc:
            form.add_error(None, str(exc))
        else:
            audit.record(request, "migrations.backfill", backfill, detail={
                "target": backfill.target.name, "table": f"{backfill.schema}.{backfill.table}",
                "column": backfill.set_column, "set": backfill.set_expression, "where": backfill.where,
                "job": backfill.job_id})
            messages.success(request, f"Backfilling {backfill}: progress below, live.")
            return redirect(backfill)
    audit.record(request, "migrations.backfill", outcome="failed",
                 detail={"errors": [str(e)[:500] for errors in form.errors.values() for e in errors][:20]})
    return _backfills_page(request, form, status=400)


def backfill_detail(request, pk):
    backfill = get_object_or_404(Backfill.objects.select_related("target", "job", "requested_by"), pk=pk)
    context = {"backfill": backfill, "job": backfill.job, "statement": backfill.spec().render(),
               "rest_percent": round(settings.BACKFILL_REST_RATIO * 100),
               "lock_wait_percent": round(settings.BACKFILL_LOCK_WAIT_SHARE * 100),
               "record_interval_s": f"{settings.BACKFILL_PROGRESS_INTERVAL_S:g}"}
    if request.htmx:
        response = render(request, "migrations_ui/backfill_detail.html#backfill-progress", context)
        if not backfill.is_live:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "migrations_ui/backfill_detail.html", context)


def backfill_series(request, pk):
    """The backfill's rows per second after each batch, for static/charts.js; a pause or a
    throttled wait of more than two steps is a gap."""
    backfill = get_object_or_404(Backfill.objects.select_related("job"), pk=pk)
    window = request.GET.get("window") if request.GET.get("window") in WINDOWS else "1h"
    # The window, cut to the backfill's own life: a short one fills the chart.
    now = timezone.now() if backfill.is_live or not backfill.job else (backfill.job.finished_at or timezone.now())
    since = max(now - WINDOWS[window], backfill.created_at)
    rows = [(datetime.fromtimestamp(t, tz=dt_timezone.utc), "rate", rate) for t, rate in backfill.rates()
            if t >= since.timestamp()]
    data = charts.columns(rows, ["rate"], RATE_STEP_S, since, now, "rows/s", ["rows per second"])
    return JsonResponse({"name": "backfill-rate", "window": window, **data})


@require_POST
@action("migrations.backfill_control", OPERATOR)
def backfill_control(request, pk, verb):
    backfill = get_object_or_404(Backfill.objects.select_related("job"), pk=pk)
    if backfill.job is None:
        messages.error(request, "This backfill has no job any more.")
        return redirect(backfill)
    changed, message = jobs.control(backfill.job, verb, request, backfill=backfill.pk)
    (messages.info if changed else messages.error)(request, message)
    return redirect(backfill)


# Console-authored changes and plans. The pickers and the plan's table facts read the target
# (explicit, short timeouts, the monitor login); the plan itself is computed without it.

CHANGE_PICKED = ("target", "database", "kind", "table", "column", "new_column", "column_type",
                 "backfill_expression", "ref_table", "ref_column")


def _picked_target(value) -> Target | None:
    if not str(value or "").isdigit():
        return None
    return Target.objects.filter(pk=int(value), role=Target.Role.PRIMARY).first()


def _change_form(request) -> tuple[ChangeForm, str]:
    """The form, bound on POST, otherwise filled from the query (the pickers' hx-get), with the
    chosen target's tables; and why they could not be read, if so."""
    data = request.POST if request.method == "POST" else request.GET
    target, tables, catalog_error = _picked_target(data.get("target")), [], ""
    if target is not None:
        try:
            tables = changes.tables(target, data.get("database", "") if _valid_name(data.get("database")) else "")
        except changes.ChangeRefused as exc:
            catalog_error = f"The tables of {target.name} could not be read: {exc}"
    if request.method == "POST":
        return ChangeForm(data, tables=tables), catalog_error
    initial = {name: data.get(name) for name in CHANGE_PICKED if data.get(name)}
    initial["index_columns"] = data.getlist("index_columns")
    return ChangeForm(initial=initial, tables=tables), catalog_error


def _valid_name(value) -> bool:
    try:
        validate_pg_name(value or "")
    except ValidationError:
        return False
    return True


def _create_change(request, form: ChangeForm) -> Change | None:
    fields = form.change_fields()
    try:
        if fields.get("backfill_expression"):
            cast = fields.get("column_type") or form.tables[form.cleaned_data["table"]].column(fields["column"]).type
            changes.check_backfill(fields["target"], fields["database"], fields["schema"], fields["table"],
                                   fields["backfill_expression"], cast)
        return changes.create(user=request.user, **fields)
    except changes.ChangeRefused as exc:
        form.add_error(None, str(exc))
        return None


@action("migrations.change_create", OPERATOR)
def change_new(request):
    form, catalog_error = _change_form(request)
    context = {"form": form, "catalog_error": catalog_error}
    if request.method == "POST":
        change = _create_change(request, form) if form.is_valid() else None
        if change is not None:
            audit.record(request, "migrations.change_create", change, detail={
                "target": change.target.name, "table": f"{change.schema}.{change.table}", "kind": change.kind,
                "subject": change.subject, "backfill": change.backfill_expression})
            messages.success(request, f"Change #{change.pk} recorded: its plan below. Nothing has run.")
            return redirect(change)
        audit.record(request, "migrations.change_create", outcome="failed",
                     detail={"errors": [str(e)[:500] for errors in form.errors.values() for e in errors][:20]})
        return render(request, "migrations_ui/change_form.html", context, status=400)
    if request.htmx:
        return render(request, "migrations_ui/change_form.html#change-pickers", context)
    return render(request, "migrations_ui/change_form.html", context)


def _plan_context(change: Change) -> dict:
    stages, squawk_ran = plans.change_plan(change)
    return {"change": change, "stages": stages, "squawk_ran": squawk_ran,
            "flagged": [f for stage in stages for f in stage.flagged],
            "approvals": changes.stage_approvals(change), "lock_timeout_ms": settings.DDL_LOCK_TIMEOUT_MS}


def change_plan(request, pk):
    change = get_object_or_404(Change.objects.select_related("target", "requested_by", "override_by"), pk=pk)
    if request.GET.get("facts"):  # the explicit read of the table's size, loaded after the page
        context = {"change": change, "facts": changes.facts(change), "facts_read": True}
        if request.htmx:
            return render(request, "migrations_ui/change_plan.html#plan-facts", context)
        return render(request, "migrations_ui/change_plan.html", {**_plan_context(change), **context})
    return render(request, "migrations_ui/change_plan.html", _plan_context(change))


@require_POST
@action("migrations.change_override", OPERATOR)
def change_override(request, pk):
    change = get_object_or_404(Change, pk=pk)
    try:
        changes.record_override(change, request.POST.get("reason", ""), request.user)
    except changes.ChangeRefused as exc:
        audit.record(request, "migrations.change_override", change, outcome="failed", detail={"reason": str(exc)})
        messages.error(request, str(exc))
    else:
        audit.record(request, "migrations.change_override", change, detail={
            "override_reason": change.override_reason, "flagged": changes.flagged(change)})
        messages.success(request, "Override recorded: each stage's approval request will show it and its reason.")
    return redirect(change)


@require_POST
@action("migrations.stage_request", OPERATOR)
def change_stage_request(request, pk, stage):
    change = get_object_or_404(Change.objects.select_related("target", "override_by"), pk=pk)
    try:
        approval = changes.request_stage_approval(change, stage, request.user, http_request=request)
    except changes.ChangeRefused as exc:
        audit.record(request, "migrations.stage_request", change, outcome="failed",
                     detail={"stage": stage, "reason": str(exc)})
        messages.error(request, f"Approval of stage {stage} not requested: {exc}")
        return redirect(change)
    messages.success(request, f"Approval of stage {stage} requested (#{approval.pk}): someone else must approve it. "
                              "Once approved, a job runs it.")
    return redirect(change)


def app_plan(request):
    """The application's pending revisions (tenants/app_schema), linted revision by revision; for
    one tenant, from its version and with its tables' sizes (read from its target, explicitly)."""
    revisions = [r.revision for r in reversed(list(migrator.script_directory().walk_revisions()))]
    tenants = Tenant.objects.filter(state=Tenant.State.ACTIVE).select_related("target").order_by("slug")
    tenant = tenants.filter(pk=request.GET["tenant"]).first() if request.GET.get("tenant", "").isdigit() else None
    start = request.GET.get("from") or (tenant.schema_version if tenant else "")
    if start not in revisions:
        start = ""
    script = migrator.pending_sql(tenant.schema_name if tenant else APP_PLAN_SCHEMA, start)
    catalog = changes.tenant_catalog(tenant, script) if tenant else None
    staged = {r.revision: r for r in migrator.staged_revisions()}
    planned, squawk_ran = plans.app_plan(script, catalog, set(staged))
    for revision_plan in planned:
        revision_plan.staged = staged.get(revision_plan.revision.split("->")[-1].strip())
    return render(request, "migrations_ui/app_plan.html", {
        "revisions": revisions, "start": start, "planned": planned, "squawk_ran": squawk_ran,
        "tenants": tenants, "tenant": tenant, "catalog": catalog,
        "flagged": [f for r in planned for f in r.flagged]})


# The application's staged changes: rollouts of each stage over the tenants, a live grid.


class _AppUnreadable(Exception):
    pass


def _staged_change_or_404(name: str) -> rollouts.StagedChange:
    try:
        change = rollouts.staged_change(name)
    except migrator.MigratorError as exc:
        raise _AppUnreadable(str(exc)) from None
    if change is None:
        raise Http404(f"The application has no staged change {name!r}.")
    return change


def staged_change(request, name):
    try:
        change = _staged_change_or_404(name)
    except _AppUnreadable as exc:
        messages.error(request, f"The application's revisions cannot be read: {exc}")
        return redirect("migrations")
    stages, rows = rollouts.grid(change)
    live = any(stage["rollout"] is not None and stage["rollout"].is_live for stage in stages)  # as read for the page
    context = {"change": change, "stages": stages, "rows": rows, "live": live,
               "next_stage": rollouts.next_stage(stages, rows), "default_waves": ",".join(map(str, rollouts.DEFAULT_WAVES))}
    if request.htmx and request.GET.get("grid"):
        response = render(request, "migrations_ui/staged_change.html#rollout-live", context)
        if not context["live"]:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "migrations_ui/staged_change.html", context)


def _wave_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise rollouts.RolloutRefused(f"Wave sizes are whole numbers separated by commas, e.g. 2,10 — not {text!r}.") from None
    return sizes


@require_POST
@action("migrations.rollout_request", OPERATOR)
def rollout_request(request, name, stage):
    try:
        change = _staged_change_or_404(name)
        parallelism = int(request.POST.get("parallelism") or 4)
        rollout = rollouts.request(change, stage, request.user, canary=request.POST.get("canary", ""),
                                   wave_sizes=_wave_sizes(request.POST.get("waves", "")), parallelism=parallelism,
                                   http_request=request)
    except (rollouts.RolloutRefused, ValueError, _AppUnreadable, migrator.MigratorError) as exc:
        audit.record(request, "migrations.rollout_request", outcome="failed",
                     detail={"change": name, "stage": stage, "reason": str(exc)[:500]})
        messages.error(request, f"Rollout of {stage} not requested: {exc}")
        return redirect("staged-change", name)
    audit.record(request, "migrations.rollout_request", rollout, detail={
        "change": name, "stage": stage, "revision": rollout.revision, "tenants": len(rollout.units),
        "waves": rollout.waves, "parallelism": rollout.parallelism})
    messages.success(request, f"Rollout of {stage} ({rollout.revision}) over {len(rollout.units)} tenant(s) requested: "
                              "someone else approves it on the Approvals page, then the canary goes first.")
    return redirect("staged-change", name)


@require_POST
@action("migrations.rollout_control", OPERATOR)
def rollout_control(request, pk, verb):
    rollout = get_object_or_404(Rollout.objects.select_related("job"), pk=pk)
    if rollout.job is None:
        messages.error(request, "This rollout has not started: it waits for its approval.")
    else:
        changed, message = jobs.control(rollout.job, verb, request, rollout=rollout.pk)
        (messages.info if changed else messages.error)(request, message)
    return redirect("staged-change", rollout.change_name)
