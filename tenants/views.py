from django.shortcuts import render

from tenants.models import Tenant


def tenant_list(request):
    tenants = Tenant.objects.select_related("target")
    return render(request, "tenants/tenant_list.html", {"tenants": tenants})
