from django.urls import path, register_converter

from monitors import views
from monitors.drills import physical_views, views as drill_views


class SignedIntConverter:
    """pg_stat_statements query ids are signed 64-bit integers."""

    regex = r"-?[0-9]{1,20}"

    def to_python(self, value):
        return int(value)

    def to_url(self, value):
        return str(value)


register_converter(SignedIntConverter, "sint")

urlpatterns = [
    path("fleet/targets/<int:target_id>/explain/", views.explain, name="target-explain"),
    path("fleet/targets/<int:target_id>/sessions/<int:pid>/<str:verb>/", views.session_action, name="target-session"),
    path("fleet/targets/<int:target_id>/queries/", views.slow_queries, name="slow-queries"),
    path("fleet/targets/<int:target_id>/queries/<sint:queryid>/", views.query_history, name="query-history"),
    path("fleet/targets/<int:target_id>/queries/<sint:queryid>/series/<str:name>.json", views.statement_series,
         name="statement-series"),
    path("fleet/targets/<int:target_id>/series/<str:name>.json", views.target_series, name="target-series"),
    path("fleet/targets/<int:target_id>/alerts/", views.alert_thresholds, name="target-alerts"),
    path("fleet/targets/<int:target_id>/alerts/save/", views.alert_threshold_save, name="target-alerts-save"),
    path("drills/", drill_views.drill_list, name="drills"),
    path("drills/run/", drill_views.drill_run, name="drill-run"),
    path("drills/backups/", drill_views.backup_list, name="drill-backups"),
    path("drills/backups/<int:backup_id>/drill/", drill_views.backup_drill, name="drill-backup"),
    path("drills/policies/new/", drill_views.policy_form, name="drill-policy-new"),
    path("drills/policies/<int:policy_id>/", drill_views.policy_detail, name="drill-policy"),
    path("drills/policies/<int:policy_id>/edit/", drill_views.policy_form, name="drill-policy-edit"),
    path("drills/policies/<int:policy_id>/trend.json", drill_views.policy_series, name="drill-policy-series"),
    path("drills/runs/<int:run_id>/", drill_views.run_detail, name="drill-run-detail"),
    # Physical backups and PITR drills (pgBackRest): monitors/drills/physical_views.py.
    path("drills/physical/", physical_views.physical_list, name="physical-list"),
    path("drills/pitr/<int:run_id>/", physical_views.drill_run, name="pitr-drill"),
    path("fleet/targets/<int:target_id>/physical-backups/", physical_views.physical_backups, name="physical-backups"),
    path("fleet/targets/<int:target_id>/physical-backups/backup/", physical_views.start_backup,
         name="physical-backup-start"),
    path("fleet/targets/<int:target_id>/physical-backups/drill/", physical_views.start_drill, name="pitr-drill-start"),
    path("fleet/targets/<int:target_id>/physical-backups/policy/", physical_views.policy_form, name="physical-policy"),
]
