"""Jobs: the list, one job live, pause, resume, cancel, retry, and the self-test."""

import math

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling, trigger_client_event

from console import audit, jobs, selftest
from console.forms import JobFilterForm
from console.listing import Column, SortedPage
from console.models import Job
from console.roles import OPERATOR, action

SELFTEST_STEPS = forms.IntegerField(min_value=1, max_value=1000)


JOBS_PER_PAGE = 50
JOB_COLUMNS = [
    Column("job", "Job", ("pk",)),
    Column("kind", "Kind", ("kind",)),
    Column("state", "State", ("state",)),
    Column("progress", "Progress"),
    Column("requested_by", "Requested by", ("requested_by__username",)),
    Column("created", "Created", ("created_at",)),
]


def job_list(request):
    """The list; its table polls while a job shown is unfinished, and stops once none is."""
    form = JobFilterForm(request.GET or None)
    listing = SortedPage(request, form.filter(Job.objects.select_related("target", "requested_by")),
                         JOB_COLUMNS, default="-created", per_page=JOBS_PER_PAGE)
    live = any(not job.is_finished for job in listing.page)
    context = {"form": form, "listing": listing, "page": listing.page, "live": live}
    if not request.htmx:
        return render(request, "console/jobs.html", context)
    response = render(request, "console/jobs.html#job-table", context)
    if not live:
        response.status_code = HttpResponseStopPolling.status_code
    return response


MAX_JOB_ROWS = 100
JOBS_ENDED = "jobs-ended"  # the htmx event a page may refresh its other regions on


def job_rows(request):
    """The rows of some jobs (?ids=3,5), for a region of another page that shows them (a target's
    recent jobs, the Migrations and Drills pages): it polls this while one is unfinished; the
    answer once none is stops the polling (286) and triggers `jobs-ended`."""
    ids = request.GET.get("ids", "").split(",")
    if not 0 < len(ids) <= MAX_JOB_ROWS or not all(i.isascii() and i.isdigit() for i in ids):
        return HttpResponseBadRequest(f"ids: up to {MAX_JOB_ROWS} job ids separated by commas")
    found = Job.objects.select_related("requested_by").in_bulk([int(i) for i in ids])
    shown = [found[int(i)] for i in ids if int(i) in found]
    response = render(request, "console/_job_rows.html", {"jobs": shown})
    if all(job.is_finished for job in shown):
        response.status_code = HttpResponseStopPolling.status_code
        trigger_client_event(response, JOBS_ENDED)
    return response


def job_detail(request, job_id):
    job = get_object_or_404(Job.objects.select_related("target", "tenant", "requested_by"), pk=job_id)
    context = {"job": job, "log_lines": job.log_tail(), "retry_in_s": _seconds_until(job.not_before),
               "subjects": jobs.subjects_of(job)}
    if request.htmx and request.GET.get("fragment") == "progress":
        response = render(request, "console/job_detail.html#job-progress", context)
        if job.is_finished:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "console/job_detail.html", context)


def _seconds_until(moment) -> int | None:
    return None if moment is None else max(0, math.ceil((moment - timezone.now()).total_seconds()))


def _control(request, job_id, verb):
    job = get_object_or_404(Job, pk=job_id)
    changed, message = jobs.control(job, verb, request)
    (messages.info if changed else messages.error)(request, message)
    return HttpResponseClientRedirect(job.get_absolute_url()) if request.htmx else redirect(job)


@require_POST
@action("job.pause", OPERATOR)
def job_pause(request, job_id):
    return _control(request, job_id, "pause")


@require_POST
@action("job.resume", OPERATOR)
def job_resume(request, job_id):
    return _control(request, job_id, "resume")


@require_POST
@action("job.cancel", OPERATOR)
def job_cancel(request, job_id):
    return _control(request, job_id, "cancel")


@require_POST
@action("job.retry", OPERATOR)
def job_retry(request, job_id):
    return _control(request, job_id, "retry")


@require_POST
@action("job.selftest", OPERATOR)
def selftest_start(request):
    try:
        steps = SELFTEST_STEPS.clean(request.POST.get("steps", 10))
    except ValidationError as exc:
        audit.record(request, "job.selftest", outcome="failed", detail={"errors": exc.messages})
        messages.error(request, f"Self-test steps: {' '.join(exc.messages)}")
        return redirect("jobs")
    job = jobs.create(selftest.KIND, user=request.user, total=steps, params={"steps": steps, "step_seconds": 0.5})
    audit.record(request, "job.selftest", job, detail={"steps": steps})
    return redirect(job)
