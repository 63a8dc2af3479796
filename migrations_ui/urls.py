from django.urls import path

from migrations_ui import views

urlpatterns = [
    path("", views.migration_list, name="migrations"),
    path("app/", views.app_plan, name="app-plan"),
    path("migrate-all/", views.migrate_all, name="migrate-all"),
    path("changes/new/", views.change_new, name="change-new"),
    path("changes/<int:pk>/", views.change_plan, name="change-plan"),
    path("changes/<int:pk>/override/", views.change_override, name="change-override"),
    path("changes/<int:pk>/stages/<str:stage>/request/", views.change_stage_request, name="change-stage-request"),
    path("staged/<str:name>/", views.staged_change, name="staged-change"),
    path("staged/<str:name>/<str:stage>/rollout/", views.rollout_request, name="rollout-request"),
    *(path(f"rollouts/<int:pk>/{verb}/", views.rollout_control, {"verb": verb}, name=f"rollout-{verb}")
      for verb in ("pause", "resume", "cancel", "retry")),
    path("backfills/", views.backfill_list, name="backfills"),
    path("backfills/run/", views.backfill_run, name="backfill-run"),
    path("backfills/<int:pk>/", views.backfill_detail, name="backfill-detail"),
    path("backfills/<int:pk>/rate/", views.backfill_series, name="backfill-series"),
    *(path(f"backfills/<int:pk>/{verb}/", views.backfill_control, {"verb": verb}, name=f"backfill-{verb}")
      for verb in ("pause", "resume", "cancel")),
]
