"""Every web and worker process publishes its own engines' pool figures to the console DB;
pages add them up. Published from a daemon thread started with the process's first engine."""

import logging
import os
import socket
import time

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Max, Sum
from django.utils import timezone

from console import engines
from console.models import Target
from monitors.models import EnginePool

log = logging.getLogger(__name__)

_started_at = None
_last: dict[int, tuple[float, dict]] = {}


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def publish_once() -> int:
    """Upsert this process's figures; returns how many engines were published."""
    global _started_at
    _started_at = _started_at or timezone.now()
    now_mono = time.monotonic()
    rows = []
    all_figures = engines.pool_figures()
    existing = set(Target.objects.filter(pk__in=list(all_figures)).values_list("pk", flat=True))
    for target_id, figures in all_figures.items():
        if target_id not in existing:  # removed meanwhile: its engine goes with it
            engines.forget(target_id)
            continue
        previous_at, previous = _last.get(target_id, (None, None))
        recent = {"recent_checkout_wait_ms": 0.0, "recent_timeouts_per_min": 0.0, "recent_checkouts_per_s": 0.0}
        if previous is not None and now_mono > previous_at:
            elapsed_s = now_mono - previous_at
            checkouts = figures["checkouts_total"] - previous["checkouts_total"]
            wait_s = figures["checkout_wait_s_total"] - previous["checkout_wait_s_total"]
            timeouts = figures["checkout_timeouts_total"] - previous["checkout_timeouts_total"]
            recent = {
                "recent_checkout_wait_ms": 1000 * wait_s / checkouts if checkouts > 0 else 0.0,
                "recent_timeouts_per_min": 60 * timeouts / elapsed_s,
                "recent_checkouts_per_s": checkouts / elapsed_s,
            }
        _last[target_id] = (now_mono, figures)
        rows.append(EnginePool(process=process_name(), target_id=target_id, started_at=_started_at,
                               updated_at=timezone.now(), **figures, **recent))
    fields = [f for f in rows[0].__dict__ if f not in ("_state", "id", "process", "target_id")] if rows else []
    EnginePool.objects.bulk_create(rows, update_conflicts=True, unique_fields=["process", "target"], update_fields=fields)
    return len(rows)


def publish_forever() -> None:
    while True:
        time.sleep(settings.POOL_PUBLISH_INTERVAL_S)
        try:
            close_old_connections()
            publish_once()
        except Exception:  # a target removed meanwhile, the console DB away: try again next time
            log.warning("publishing pool figures failed", exc_info=True)


def totals(target_id: int) -> dict:
    """The console's own engines for one target, added up over every live process."""
    fresh = EnginePool.fresh().filter(target_id=target_id)
    agg = fresh.aggregate(
        size=Sum("size"), max_overflow=Sum("max_overflow"), checked_in=Sum("checked_in"),
        checked_out=Sum("checked_out"), overflow=Sum("overflow"), checkouts=Sum("checkouts_total"),
        timeouts=Sum("checkout_timeouts_total"), wait_ms_recent=Max("recent_checkout_wait_ms"),
        wait_s_max=Max("checkout_wait_s_max"), timeouts_per_min=Sum("recent_timeouts_per_min"),
        checkouts_per_s=Sum("recent_checkouts_per_s"), hold_s_total=Sum("hold_s_total"),
    )
    agg["processes"] = fresh.count()
    return agg


def totals_by_target() -> dict[int, dict]:
    rows = (
        EnginePool.fresh().values("target_id")
        .annotate(size=Sum("size"), max_overflow=Sum("max_overflow"), checked_out=Sum("checked_out"), overflow=Sum("overflow"),
                  wait_ms_recent=Max("recent_checkout_wait_ms"), timeouts_per_min=Sum("recent_timeouts_per_min"),
                  timeouts_total=Sum("checkout_timeouts_total"))
    )
    return {row["target_id"]: row for row in rows}
