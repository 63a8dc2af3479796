"""Time series of each target: raw points (24 h) and per-minute aggregates (7 days)."""

from datetime import timedelta

from django.conf import settings
from django.contrib.postgres.aggregates import BoolOr
from django.db import connection
from django.db.models import F, Min, Sum
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


def per_second(target_id: int, counter_metric: str, value, at=None) -> float | None:
    """The rate of a cumulative counter since its previous point; None for the first point or after
    the counter went back (a stats reset, a restart)."""
    if value is None:
        return None
    at = at or timezone.now()
    previous = MetricPoint.objects.filter(target_id=target_id, metric=counter_metric, at__lt=at).order_by("-at").first()
    if previous is None or value < previous.value or at <= previous.at:
        return None
    return (float(value) - previous.value) / (at - previous.at).total_seconds()


def raw_for(window: timedelta) -> bool:
    """Whether a chart of this window reads raw points (short windows) or minute aggregates."""
    return window <= min(timedelta(hours=6), timedelta(hours=settings.MONITOR_RAW_RETENTION_H))


def points(target_id: int, metrics, window: timedelta, now=None) -> tuple[list[tuple], float]:
    """(at, metric, value) rows of a window, oldest first, and the spacing they were sampled at (s)."""
    since = (now or timezone.now()) - window
    if raw_for(window):
        rows = (MetricPoint.objects.filter(target_id=target_id, metric__in=metrics, at__gte=since)
                .order_by("at").values_list("at", "metric", "value"))
        return list(rows), settings.MONITOR_FAST_INTERVAL_S
    minutes = MetricMinute.objects.filter(target_id=target_id, metric__in=metrics, minute__gte=since).order_by("minute")
    return [(m.minute, m.metric, m.average) for m in minutes], 60.0


def statement_history(target, queryid: int, since) -> list[dict]:
    """One row per pg_stat_statements snapshot of a statement: a statement that also ran nested has
    a top-level and a nested row, summed here."""
    return list(
        StatementDelta.objects.filter(target=target, queryid=queryid, window_end__gte=since)
        .values("window_end")
        .annotate(window_start=Min("window_start"), calls=Sum("calls"), total_exec_ms=Sum("total_exec_ms"),
                  rows=Sum("rows"), after_reset=BoolOr("after_reset"))
        .annotate(mean_ms=F("total_exec_ms") / F("calls"))
        .order_by("window_end")
    )


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
