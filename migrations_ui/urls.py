from django.urls import path

from migrations_ui import views

urlpatterns = [
    path("", views.migration_list, name="migrations"),
    path("backfills/", views.backfill_list, name="backfills"),
    path("backfills/run/", views.backfill_run, name="backfill-run"),
    path("backfills/<int:pk>/", views.backfill_detail, name="backfill-detail"),
    *(path(f"backfills/<int:pk>/{verb}/", views.backfill_control, {"verb": verb}, name=f"backfill-{verb}")
      for verb in ("pause", "resume", "cancel")),
]
