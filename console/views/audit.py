from django.core.paginator import Paginator
from django.shortcuts import render

from console.forms import AuditFilterForm
from console.models import AuditEvent


def audit_list(request):
    form = AuditFilterForm(request.GET or None)
    events = AuditEvent.objects.all()
    if form.is_valid():
        data = form.cleaned_data
        if data["actor"]:
            events = events.filter(actor_username__icontains=data["actor"])
        if data["action"]:
            events = events.filter(action__icontains=data["action"])
        if data["outcome"]:
            events = events.filter(outcome=data["outcome"])
        if data["object_type"]:
            events = events.filter(object_type__icontains=data["object_type"])
        if data["since"]:
            events = events.filter(created_at__gte=data["since"])
        if data["until"]:
            events = events.filter(created_at__lte=data["until"])
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    return render(request, "console/audit.html", {"form": form, "page": page})
