from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from console import audit, jobs
from console.models import Job
from console.roles import OPERATOR, action
from migrations_ui import services
from migrations_ui.forms import BackfillForm
from migrations_ui.models import Backfill


def migration_list(request):
    jobs = Job.objects.filter(kind__startswith="migrations.")[:50]
    return render(request, "migrations_ui/migration_list.html", {"jobs": jobs})


# Backfills: pages read the console DB only; running one checks it against the target first.


def _backfills_page(request, form, status=200):
    backfills = list(Backfill.objects.select_related("target", "job", "requested_by")[:100])
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
    context = {"backfill": backfill, "job": backfill.job, "statement": backfill.spec().render()}
    if request.htmx:
        response = render(request, "migrations_ui/backfill_detail.html#backfill-progress", context)
        if not backfill.is_live:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "migrations_ui/backfill_detail.html", context)


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
