from django.apps import AppConfig


class MonitorsConfig(AppConfig):
    name = "monitors"

    def ready(self):
        from django.conf import settings

        from console import engines
        from monitors import pools, slow

        engines.slow_statement_sink = slow.record
        if settings.POOL_PUBLISHER_ENABLED:
            engines.pool_publisher = pools.publish_forever
