"""The fleet registry: list, show, add, edit, remove and test targets."""

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import ProtectedError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console import audit, engines, services
from console.forms import TargetForm
from console.models import Job, Target
from console.roles import ADMIN, OPERATOR, action
from console.validators import TAG_RE
from monitors import panels


def fleet(request):
    targets = Target.objects.all()
    tag, tag_error = request.GET.get("tag", "").strip(), ""
    if tag and not TAG_RE.fullmatch(tag):
        tag, tag_error = "", "That is not a tag: tags are short lowercase words (letters, digits, '_', '.', ':', '-'). Showing every target."
    if tag:
        targets = targets.filter(tags__contains=[tag])
    sort = request.GET.get("sort", "name")
    # Sorted over the whole fleet, shown a page at a time: a thousand rows is no overview.
    page = Paginator(panels.overview_rows(targets, sort), settings.FLEET_OVERVIEW_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "rows": page.object_list,
        "page": page,
        "tag": tag,
        "tag_error": tag_error,
        "sort": sort,
        "sorts": panels.SORTS,
        "all_tags": sorted({t for tags in Target.objects.values_list("tags", flat=True) for t in tags}),
        "slow_ms": settings.MONITOR_SLOW_QUERY_MS,
    }
    if request.htmx:
        return render(request, "console/fleet.html#overview", context)
    return render(request, "console/fleet.html", context)


def target_detail(request, target_id):
    target = get_object_or_404(Target.objects.select_related("upstream"), pk=target_id)
    context = {"target": target, **panels.live_context(target, request.GET)}
    if request.htmx and request.GET.get("fragment") == "live":
        return render(request, "console/target_detail.html#live", context)
    context.update(downstream=target.downstream.all(), jobs=Job.objects.filter(target=target)[:10])
    return render(request, "console/target_detail.html", context)


def _save_target(request, form, verb):
    target, probe = services.save_target(form, save_unreachable=form.cleaned_data["save_unreachable"])
    if target is None:
        form.add_error(
            None,
            f"Connection test failed: {probe.error}. Fix the settings, or tick "
            "'Save even if the connection test fails' to register it anyway.",
        )
        audit.record(request, f"target.{verb}", outcome="failed", detail={"name": form.cleaned_data["name"], "error": probe.error})
        return None
    audit.record(request, f"target.{verb}", target, detail={"reachable": probe.ok})
    messages.success(request, f"Target {target.name} {verb}d" + ("" if probe.ok else " (unreachable for now)"))
    return target


@action("target.create", ADMIN)
def target_create(request):
    form = TargetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if target := _save_target(request, form, "create"):
            return redirect(target)
    return render(request, "console/target_form.html", {"form": form, "title": "Add a target"})


@action("target.update", ADMIN)
def target_edit(request, target_id):
    target = get_object_or_404(Target, pk=target_id)
    form = TargetForm(request.POST or None, instance=target)
    if request.method == "POST" and form.is_valid():
        if saved := _save_target(request, form, "update"):
            return redirect(saved)
    return render(request, "console/target_form.html", {"form": form, "target": target, "title": f"Edit {target.name}"})


@require_POST
@action("target.delete", ADMIN)
def target_delete(request, target_id):
    target = get_object_or_404(Target, pk=target_id)
    try:
        target.delete()
    except ProtectedError as exc:
        names = ", ".join(sorted(str(obj) for obj in exc.protected_objects))
        audit.record(request, "target.delete", target, outcome="failed", detail={"in_use_by": names})
        messages.error(request, f"{target.name} is still used by {names}: remove or move those first.")
        return redirect(target)
    engines.forget(target_id)
    audit.record(request, "target.delete", detail={"name": target.name, "id": target_id})
    messages.success(request, f"Target {target.name} removed")
    return redirect("fleet")


@require_POST
@action("target.test", OPERATOR)
def target_test(request, target_id):
    target = get_object_or_404(Target, pk=target_id)
    probe = services.probe_target(target)
    outcome = "ok" if probe.ok else "failed"
    audit.record(request, "target.test", target, outcome=outcome, detail={"error": probe.error} if probe.error else {})
    context = {"target": target, "probe": probe}
    return render(request, "console/target_detail.html#probe-result", context)
