from django.apps import AppConfig


class MigrationsUiConfig(AppConfig):
    name = "migrations_ui"

    def ready(self):
        from migrations_ui import changes, runners  # noqa: F401  (register the stage approvals, the job runners)
