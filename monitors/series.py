"""Time series of each target: raw points (24 h) and per-minute aggregates (7 days)."""

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from monitors.models import Alert, EnginePool, MetricMinute, MetricPoint, SlowStatement, StatementCounter, StatementDelta

UPSERT_MINUTE = """
    INSERT INTO monitors_metricminute (target_id, metric, minute, count, total, maximum)
    VALUES (%s, %s, %s, 1, %s, %s)
    ON CONFLICT (target_id, metric, minute) DO UPDATE
       SET count = monitors_metricminute.count + 1,
           total = monitors_metricminute.total + EXCLUDED.total,
           maximum = GREATEST(monitors_metricminute.maximum, EXCLUDED.maximum)
"""


def record(target, values: dict, at=None) -> None:
    at = at or timezone.now()
    minute = at.replace(second=0, microsecond=0)
    present = {name: float(value) for name, value in values.items() if value is not None}
    MetricPoint.objects.bulk_create(
        [MetricPoint(target_id=target.pk, metric=name, at=at, value=value) for name, value in present.items()]
    )
    with connection.cursor() as cursor:
        cursor.executemany(UPSERT_MINUTE, [(target.pk, name, minute, value, value) for name, value in present.items()])


def recent(target_id: int, metric: str, minutes: int = 30) -> list[tuple]:
    """(at, value) pairs: raw points for short spans, minute averages beyond the raw retention."""
    since = timezone.now() - timedelta(minutes=minutes)
    if minutes <= settings.MONITOR_RAW_RETENTION_H * 60 and minutes <= 180:
        return list(
            MetricPoint.objects.filter(target_id=target_id, metric=metric, at__gte=since)
            .order_by("at")
            .values_list("at", "value")
        )
    return [
        (m.minute, m.average)
        for m in MetricMinute.objects.filter(target_id=target_id, metric=metric, minute__gte=since).order_by("minute")
    ]


def cleanup(now=None) -> dict:
    now = now or timezone.now()
    raw_before = now - timedelta(hours=settings.MONITOR_RAW_RETENTION_H)
    minute_before = now - timedelta(days=settings.MONITOR_MINUTE_RETENTION_D)
    raw, _ = MetricPoint.objects.filter(at__lt=raw_before).delete()
    minutes, _ = MetricMinute.objects.filter(minute__lt=minute_before).delete()
    StatementDelta.objects.filter(window_end__lt=minute_before).delete()
    StatementCounter.objects.filter(seen_at__lt=minute_before).delete()
    SlowStatement.objects.filter(at__lt=minute_before).delete()
    Alert.objects.filter(closed_at__lt=minute_before).delete()
    EnginePool.objects.filter(updated_at__lt=now - timedelta(days=1)).delete()  # processes long gone
    return {"raw_deleted": raw, "minutes_deleted": minutes}
