from django.apps import AppConfig


class MonitorsConfig(AppConfig):
    name = "monitors"

    def ready(self):
        from django.conf import settings

        from console import engines, metrics
        from monitors import metrics as monitor_metrics
        from monitors import pools, slow
        from monitors.drills import links  # noqa: F401  (the job page's links to drill runs and backups)

        engines.slow_statement_sink = slow.record
        metrics.register_families(monitor_metrics.families)
        if settings.POOL_PUBLISHER_ENABLED:
            engines.pool_publisher = pools.publish_forever
