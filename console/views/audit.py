from django.core.paginator import Paginator
from django.shortcuts import render

from console.forms import AuditFilterForm
from console.models import AuditEvent


def audit_list(request):
    form = AuditFilterForm(request.GET or None)
    events = form.filter(AuditEvent.objects.all())
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    return render(request, "console/audit.html", {"form": form, "page": page})
