"""Time series of each target: raw points (24 h) and per-minute aggregates (7 days)."""

from datetime import timedelta

from django.conf import settings
from django.contrib.postgres.aggregates import BoolOr
from django.db import connection
from django.db.models import F, Min, Sum
from django.utils import timezone

from monitors.models import Alert, EnginePool, MetricMinute, MetricPoint, SlowStatement, StatementCounter, StatementDelta

# One statement for any number of points: their per-minute aggregates, merged into the stored ones.
UPSERT_MINUTES = """
    INSERT INTO monitors_metricminute (target_id, metric, minute, count, total, maximum)
    SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::timestamptz[], %s::int[], %s::float8[], %s::float8[])
    ON CONFLICT (target_id, metric, minute) DO UPDATE
       SET count = monitors_metricminute.count + EXCLUDED.count,
           total = monitors_metricminute.total + EXCLUDED.total,
           maximum = GREATEST(monitors_metricminute.maximum, EXCLUDED.maximum)
"""


def _points(target_id: int, values: dict, at=None) -> list[MetricPoint]:
    at = at or timezone.now()
    return [MetricPoint(target_id=target_id, metric=name, at=at, value=float(value))
            for name, value in values.items() if value is not None]


def _write(points: list[MetricPoint]) -> None:
    if not points:
        return
    MetricPoint.objects.bulk_create(points)
    minutes = {}
    for point in points:
        key = (point.target_id, point.metric, point.at.replace(second=0, microsecond=0))
        count, total, maximum = minutes.get(key, (0, 0.0, point.value))
        minutes[key] = (count + 1, total + point.value, max(maximum, point.value))
    keys = sorted(minutes)  # the same order in every writer: no deadlock between two workers' batches
    with connection.cursor() as cursor:
        cursor.execute(UPSERT_MINUTES, [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                                        *(list(column) for column in zip(*(minutes[k] for k in keys)))])


def record(target, values: dict, at=None) -> None:
    """Store one sample's values (None: not measured) as raw points and in the minute aggregates."""
    _write(_points(target.pk, values, at))


class Batch:
    """The points of many samples (a sampling chunk's targets, sampled by several threads), written
    together in two statements by `flush`."""

    def __init__(self):
        self._points: list[MetricPoint] = []

    def record(self, target, values: dict, at=None) -> None:
        self._points.extend(_points(target.pk, values, at))  # list.extend: one step under the GIL

    def flush(self) -> None:
        points, self._points = self._points, []
        _write(points)


def latest(target_ids, metric: str) -> dict[int, tuple]:
    """Each target's newest (at, value) point of `metric`, in one query."""
    rows = (MetricPoint.objects.filter(target_id__in=list(target_ids), metric=metric)
            .order_by("target_id", "-at").distinct("target_id").values_list("target_id", "at", "value"))
    return {target_id: (at, value) for target_id, at, value in rows}


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


def rate(previous: tuple | None, value, at) -> float | None:
    """The per-second rate of a cumulative counter at `value` since its `previous` (at, value) point
    (as `latest` returns it); None for the first point or after the counter went back (a stats
    reset, a restart)."""
    if value is None or previous is None or value < previous[1] or at <= previous[0]:
        return None
    return (float(value) - previous[1]) / (at - previous[0]).total_seconds()


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
