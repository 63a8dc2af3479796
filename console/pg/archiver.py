"""WAL archiving as the server sees it (`pg_stat_archiver`), read with the monitor login
(pg_monitor): how many segments were archived and failed, the last of each and when, and whether
WAL is waiting (the segment written now is more than one past the last archived one)."""

from sqlalchemy import text
from sqlalchemy.engine import Connection

ARCHIVER = text(
    """
    SELECT a.archived_count, a.last_archived_wal, a.last_archived_time,
           a.failed_count, a.last_failed_wal, a.last_failed_time, a.stats_reset,
           current_setting('archive_mode') AS archive_mode,
           CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current_wal
      FROM pg_stat_archiver a
    """
)


def segment_number(name: str | None) -> int | None:
    """A WAL file name's position in the WAL (timeline left out); None for anything else."""
    if not name or len(name) < 24:
        return None
    try:
        return (int(name[8:16], 16) << 32) + int(name[16:24], 16)
    except ValueError:
        return None


def archiver(conn: Connection) -> dict:
    row = dict(conn.execute(ARCHIVER).mappings().one())
    current, archived = segment_number(row["current_wal"]), segment_number(row["last_archived_wal"])
    row["segments_waiting"] = max(0, current - archived - 1) if current is not None and archived is not None else None
    row["failing"] = bool(row["last_failed_time"] and (row["last_archived_time"] is None
                                                      or row["last_failed_time"] > row["last_archived_time"]))
    return row
