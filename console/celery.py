"""The one Celery app, configured from Django settings (namespace CELERY)."""

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _fresh_engines_after_fork(**_kwargs):
    # Pooled connections inherited from the parent must never be shared with it.
    from console import engines

    engines.dispose_all(close=False)


@worker_process_shutdown.connect
def _close_engines(**_kwargs):
    from console import engines

    engines.dispose_all()
