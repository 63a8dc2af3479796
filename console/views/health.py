"""Liveness, readiness and Prometheus metrics: reachable without a login."""

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST

from console import metrics
from console.secrets import driver_message


@login_not_required
@never_cache
def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain")


def _check_console_db() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"console database unreachable: {driver_message(exc, with_type=True)}"
    return None


def _check_redis() -> str | None:
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
    except Exception as exc:
        return f"redis unreachable: {exc.__class__.__name__}: {exc}"
    return None


@login_not_required
@never_cache
def readyz(request):
    problems = [p for p in (_check_console_db(), _check_redis()) if p]
    status = 503 if problems else 200
    return JsonResponse({"ready": not problems, "problems": problems}, status=status)


@login_not_required
@never_cache
def metrics_view(request):
    return HttpResponse(metrics.render(), content_type=CONTENT_TYPE_LATEST)
