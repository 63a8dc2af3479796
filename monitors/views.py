"""Live target regions, query history, EXPLAIN, cancel/terminate, alert thresholds."""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from console import audit, engines
from console.models import Target
from console.pg import activity, explain as pg_explain
from console.roles import ADMIN, OPERATOR, action, bad_request, forbidden
from monitors import alerts, charts, panels, series
from monitors.forms import ThresholdForm
from monitors.models import AlertThreshold, StatementCounter, TargetState


PG_INT4_MAX = 2**31 - 1


def _window(request, default: str) -> str:
    return request.GET.get("window") if request.GET.get("window") in panels.WINDOWS else default


def query_history(request, target_id, queryid):
    target = get_object_or_404(Target, pk=target_id)
    window_name = _window(request, "24h")
    deltas = series.statement_history(target, queryid, timezone.now() - panels.WINDOWS[window_name])
    text = StatementCounter.objects.filter(target=target, queryid=queryid).values_list("query", flat=True).first()
    if text is None and not deltas:
        raise Http404("No such statement on this target")
    context = {
        "target": target, "queryid": queryid, "query": text or "", "deltas": deltas[-200:], "window": window_name,
        "windows": list(panels.WINDOWS),
        "mean_chart": charts.sparkline([(d["window_end"], d["mean_ms"]) for d in deltas], width=640, height=80, unit=" ms"),
        "calls_chart": charts.sparkline([(d["window_end"], d["calls"]) for d in deltas], width=640, height=80),
    }
    return render(request, "monitors/query_history.html", context)


def slow_queries(request, target_id):
    """pg_stat_statements over a window, from the stored deltas; the table is a partial for htmx."""
    target = get_object_or_404(Target, pk=target_id)
    if target.role == Target.Role.PGBOUNCER:
        raise Http404("PgBouncer has no pg_stat_statements")
    window_name = _window(request, "1h")
    filters = {"show_own": request.GET.get("own") == "shown", "database": request.GET.get("database", ""),
               "user": request.GET.get("user", "")}
    shown = {"window": window_name, "own": "shown" if filters["show_own"] else "", "database": filters["database"],
             "user": filters["user"]}
    context = {"target": target, "window": window_name, "show_own": filters["show_own"],
               "selected_database": filters["database"], "selected_user": filters["user"],  # "user" is the login's
               "window_links": [(w, _query(shown, window=w)) for w in panels.WINDOWS],
               "own_toggle": _query(shown, own="" if filters["show_own"] else "shown"),
               "state": TargetState.objects.filter(target=target).first(),
               **panels.slow_query_page(target, panels.WINDOWS[window_name], **filters)}
    return render(request, "monitors/slow_queries.html#table" if request.htmx else "monitors/slow_queries.html", context)


def _query(params: dict, **changes) -> str:
    return "?" + urlencode({k: v for k, v in {**params, **changes}.items() if v})


def target_series(request, target_id, name):
    """A target chart's points for static/charts.js, from the console's samples only."""
    target = get_object_or_404(Target, pk=target_id)
    if name not in charts.TARGET_CHARTS:
        raise Http404("No such chart")
    unit, shown = charts.TARGET_CHARTS[name]
    window_name, now = _window(request, "1h"), timezone.now()
    metrics = [metric for metric, _label in shown]
    rows, step_s = series.points(target.pk, metrics, panels.WINDOWS[window_name], now)
    data = charts.columns(rows, metrics, step_s, now - panels.WINDOWS[window_name], now, unit, [label for _m, label in shown])
    return JsonResponse({"name": name, "window": window_name, **data})


def statement_series(request, target_id, queryid, name):
    """A statement's calls or mean time per pg_stat_statements snapshot, for static/charts.js."""
    target = get_object_or_404(Target, pk=target_id)
    if name not in charts.STATEMENT_CHARTS:
        raise Http404("No such chart")
    unit, ((metric, label),) = charts.STATEMENT_CHARTS[name]
    window_name, now = _window(request, "24h"), timezone.now()
    since = now - panels.WINDOWS[window_name]
    rows = [(d["window_end"], metric, d[metric]) for d in series.statement_history(target, queryid, since)]
    data = charts.columns(rows, [metric], settings.MONITOR_STATEMENTS_INTERVAL_S, since, now, unit, [label])
    return JsonResponse({"name": name, "window": window_name, **data})


@require_POST
@action("monitors.explain", OPERATOR)
def explain(request, target_id):
    target = get_object_or_404(Target, pk=target_id)
    sql_text = request.POST.get("sql", "")
    analyze = request.POST.get("analyze") == "on"
    context = {"target": target, "sql": sql_text, "analyze": analyze}
    try:
        pg_explain.check(sql_text, analyze)  # refused input never reaches the target
        with engines.connect(target, statement_timeout_ms=settings.EXPLAIN_STATEMENT_TIMEOUT_MS, rollback=True) as conn:
            context["plan"] = pg_explain.explain(conn, sql_text, analyze=analyze)
        outcome = "ok"
    except (pg_explain.NotOneStatement, engines.TargetError) as exc:
        context["error"], outcome = str(exc), "failed"
    except Exception as exc:  # the operator's SQL failed: show why
        context["error"], outcome = _explain_error(target, exc), "failed"
    audit.record(request, "monitors.explain", target, outcome=outcome,
                 detail={"analyze": analyze, **pg_explain.audit_detail(sql_text), "error": context.get("error", "")})
    return render(request, "monitors/explain_result.html" if request.htmx else "monitors/explain_page.html", context)


def _explain_error(target, exc) -> str:
    original = getattr(exc, "orig", None) or exc
    message = f"{type(original).__name__}: {str(original).strip()}"
    if getattr(original, "sqlstate", None) == "42501":  # insufficient_privilege
        message += (
            f" (EXPLAIN runs as {target.username}, the target's monitor role: it reads statistics and "
            "tables, and cannot read server files, run programs or change anything)"
        )
    return message


@require_POST
@action("monitors.session", OPERATOR)
def session_action(request, target_id, pid, verb):
    target = get_object_or_404(Target, pk=target_id)
    allowed = {"cancel": settings.MONITOR_ALLOW_CANCEL, "terminate": settings.MONITOR_ALLOW_TERMINATE}
    if verb not in allowed:
        raise Http404()
    if not 0 < pid <= PG_INT4_MAX:
        audit.record(request, f"monitors.{verb}", target, outcome="failed", detail={"pid": str(pid), "why": "no such pid"})
        return bad_request(request, f"{pid} is not a backend process id (they are between 1 and {PG_INT4_MAX}).")
    if not allowed[verb]:
        audit.record(request, f"monitors.{verb}", target, outcome="denied", detail={"pid": pid, "why": "switched off"})
        return forbidden(request, f"{verb.capitalize()} is switched off on this console (MONITOR_ALLOW_{verb.upper()}).")
    try:
        with engines.connect(target, statement_timeout_ms=2000) as conn:
            done = (activity.cancel if verb == "cancel" else activity.terminate)(conn, pid)
    except engines.TargetError as exc:
        done, error = False, str(exc)
    else:
        error = "" if done else f"no backend with pid {pid} (it may have finished)"
    audit.record(request, f"monitors.{verb}", target, outcome="ok" if done else "failed", detail={"pid": pid, "error": error})
    if done:
        messages.success(request, f"{verb.capitalize()} sent to backend {pid} on {target.name}.")
    else:
        messages.error(request, f"Could not {verb} backend {pid}: {error}")
    return redirect(target)


def alert_thresholds(request, target_id):
    target = get_object_or_404(Target, pk=target_id)
    current = alerts.thresholds(target)
    overridden = set(AlertThreshold.objects.filter(target=target).values_list("metric", flat=True))
    rows = [{"metric": m, "label": alerts.LABELS[m], "warning": w, "critical": c, "default": settings.ALERT_DEFAULTS[m],
             "overridden": m in overridden} for m, (w, c) in current.items()]
    return render(request, "monitors/alert_thresholds.html", {"target": target, "rows": rows, "form": ThresholdForm()})


@require_POST
@action("monitors.thresholds", ADMIN)
def alert_threshold_save(request, target_id):
    target = get_object_or_404(Target, pk=target_id)
    form = ThresholdForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("target-alerts", target.pk)
    metric = form.cleaned_data["metric"]
    if form.cleaned_data["reset"]:
        AlertThreshold.objects.filter(target=target, metric=metric).delete()
    else:
        AlertThreshold.objects.update_or_create(target=target, metric=metric, defaults={
            "warning": form.cleaned_data["warning"], "critical": form.cleaned_data["critical"]})
    audit.record(request, "monitors.thresholds", target, detail=form.cleaned_data)
    messages.success(request, f"Thresholds for {alerts.LABELS[metric][0]} saved; they apply from the next sample.")
    return redirect("target-alerts", target.pk)
