from django.urls import path

from tenants import views

urlpatterns = [
    path("", views.tenant_list, name="tenants"),
    path("onboard/", views.tenant_onboard, name="tenant-onboard"),
    path("migrate/", views.tenants_migrate, name="tenants-migrate"),
    path("health/", views.tenants_refresh_health, name="tenants-refresh-health"),
    path("<int:tenant_id>/", views.tenant_detail, name="tenant-detail"),
    path("<int:tenant_id>/retry/", views.tenant_retry, name="tenant-retry"),
    path("<int:tenant_id>/health/", views.tenant_refresh_health, name="tenant-refresh-health"),
    path("<int:tenant_id>/offboard/", views.tenant_offboard_request, name="tenant-offboard-request"),
    path("<int:tenant_id>/offboard/approve/", views.tenant_offboard_approve, name="tenant-offboard-approve"),
    path("<int:tenant_id>/offboard/reject/", views.tenant_offboard_reject, name="tenant-offboard-reject"),
]
