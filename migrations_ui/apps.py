from django.apps import AppConfig


class MigrationsUiConfig(AppConfig):
    name = "migrations_ui"

    def ready(self):
        from migrations_ui import runners  # noqa: F401  (registers the job runners)
