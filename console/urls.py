from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from console.views import approvals, audit, fleet, health, jobs

# 400, 403 and 404 are Django's own views rendering our templates; the 500 page shows the request id.
handler500 = "console.views.errors.server_error"

urlpatterns = [
    path("", RedirectView.as_view(url="/fleet/", permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("admin/", admin.site.urls),
    path("fleet/", fleet.fleet, name="fleet"),
    path("fleet/targets/new/", fleet.target_create, name="target-create"),
    path("fleet/targets/<int:target_id>/", fleet.target_detail, name="target-detail"),
    path("fleet/targets/<int:target_id>/edit/", fleet.target_edit, name="target-edit"),
    path("fleet/targets/<int:target_id>/delete/", fleet.target_delete, name="target-delete"),
    path("fleet/targets/<int:target_id>/test/", fleet.target_test, name="target-test"),
    path("jobs/", jobs.job_list, name="jobs"),
    path("jobs/selftest/", jobs.selftest_start, name="job-selftest"),
    path("jobs/rows/", jobs.job_rows, name="job-rows"),
    path("jobs/<int:job_id>/", jobs.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/pause/", jobs.job_pause, name="job-pause"),
    path("jobs/<int:job_id>/resume/", jobs.job_resume, name="job-resume"),
    path("jobs/<int:job_id>/cancel/", jobs.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/retry/", jobs.job_retry, name="job-retry"),
    path("audit/", audit.audit_list, name="audit"),
    path("audit/export.csv", audit.audit_export, name="audit-export"),
    path("approvals/", approvals.approval_list, name="approvals"),
    path("approvals/<int:approval_id>/", approvals.approval_detail, name="approval-detail"),
    path("approvals/<int:approval_id>/decide/", approvals.approval_decide, name="approval-decide"),
    path("approvals/<int:approval_id>/withdraw/", approvals.approval_withdraw, name="approval-withdraw"),
    path("tenants/", include("tenants.urls")),
    path("migrations/", include("migrations_ui.urls")),
    path("", include("monitors.urls")),  # the monitor actions on target pages, drills
]
