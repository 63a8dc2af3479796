import csv
import json

from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render

from console.forms import AuditFilterForm
from console.models import AuditEvent
from console.roles import bad_request

EXPORT_COLUMNS = ("id", "created_at", "actor_username", "action", "object_type", "object_id", "object_repr",
                  "outcome", "detail", "remote_addr")
# A spreadsheet runs a cell starting with one of these as a formula; audited values can be typed by anyone.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def audit_list(request):
    form = AuditFilterForm(request.GET or None)
    events = form.filter(AuditEvent.objects.all())
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    filters = request.GET.copy()
    filters.pop("page", None)
    return render(request, "console/audit.html", {"form": form, "page": page, "filters": filters.urlencode()})


def audit_export(request):
    """The filtered view as CSV, streamed: every column, the detail as JSON, a row per event."""
    form = AuditFilterForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        return bad_request(request, "The audit filter is not valid: nothing exported.")
    events = form.filter(AuditEvent.objects.all()).iterator(chunk_size=500)
    writer = csv.writer(_Echo())
    rows = (writer.writerow(row) for row in _export_rows(events))
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="audit.csv"'
    return response


class _Echo:
    def write(self, value):
        return value


def _export_rows(events):
    yield EXPORT_COLUMNS
    for event in events:
        yield [_cell(value) for value in (
            event.pk, event.created_at.isoformat(), event.actor_username, event.action, event.object_type,
            event.object_id, event.object_repr, event.outcome, json.dumps(event.detail, sort_keys=True),
            event.remote_addr or "",
        )]


def _cell(value):
    text = str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text
