"""The console's own slow statements, from SQLAlchemy cursor events on every target engine."""

import logging

from monitors.models import SlowStatement
from monitors.pools import process_name

log = logging.getLogger(__name__)


def record(target_id: int, duration_ms: float, statement: str) -> None:
    try:
        SlowStatement.objects.create(
            target_id=target_id, duration_ms=round(duration_ms, 2), statement=statement[:4000], process=process_name()
        )
    except Exception:  # never break the statement being measured
        log.warning("could not record a slow statement on target %s", target_id, exc_info=True)
    log.warning("slow statement on target %s: %.0f ms: %s", target_id, duration_ms, statement[:200])
