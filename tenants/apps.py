from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"

    def ready(self):
        from celery.signals import worker_process_init, worker_process_shutdown

        from tenants import databases, runners  # noqa: F401  (registers the job runners)

        # Tenant database pools, like the targets' own, are never shared with a forked child.
        worker_process_init.connect(lambda **_: databases.dispose_all(close=False), weak=False)
        worker_process_shutdown.connect(lambda **_: databases.dispose_all(), weak=False)
