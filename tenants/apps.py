from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"

    def ready(self):
        from tenants import runners  # noqa: F401  (registers the job runners)
