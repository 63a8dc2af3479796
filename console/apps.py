import atexit

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Fleet Console"

    def ready(self):
        from console import engines, selftest  # noqa: F401  (job runners register on import)

        atexit.register(engines.dispose_all)
