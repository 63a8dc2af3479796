"""Replication lag, from both sides.

The primary's view (pg_stat_replication) is the one to trust: its lag times are measured on the
primary's clock from when it flushed WAL to when the standby reported replaying it, so an idle
primary is never counted as lag. A standby on its own cannot tell how much it is missing:
`now() - pg_last_xact_replay_timestamp()` grows for as long as the primary writes nothing. Its own
view therefore needs the heartbeat (console/pg/heartbeat.py).
"""

from sqlalchemy import text
from sqlalchemy.engine import Connection

# On a primary: one row per standby. replay_lag is what PostgreSQL computed at the standby's last
# reply (it keeps growing while replay is stuck and WAL flows); it is kept for a while after the
# standby caught up, hence 0 once the standby has replayed everything the primary has written.
STANDBYS = text(
    """
    SELECT application_name, client_addr::text AS client_addr, state, sync_state,
           EXTRACT(EPOCH FROM write_lag)::float8 AS write_lag_s,
           EXTRACT(EPOCH FROM flush_lag)::float8 AS flush_lag_s,
           CASE WHEN replay_lsn IS NULL THEN NULL
                WHEN replay_lsn >= pg_current_wal_lsn() THEN 0
                ELSE COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)
           END::float8 AS replay_lag_s,
           pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)::float8 AS sent_bytes_behind,
           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_bytes_behind,
           EXTRACT(EPOCH FROM now() - reply_time)::float8 AS reply_age_s
      FROM pg_stat_replication
     ORDER BY application_name
    """
)

# On a standby: its replay state, and what it knows of the primary's clock (the last replayed
# commit's timestamp). `replayed_all_received` with a streaming receiver means caught up.
STANDBY_STATUS = text(
    """
    SELECT pg_is_wal_replay_paused() AS replay_paused,
           pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 AS replay_bytes_pending,
           pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS replayed_all_received,
           pg_last_xact_replay_timestamp() AS last_replayed_commit_at,
           now() AS now,
           (SELECT status FROM pg_stat_wal_receiver) AS receiver_status
    """
)


def standbys(conn: Connection) -> list[dict]:
    return [dict(row) for row in conn.execute(STANDBYS).mappings()]


def standby_status(conn: Connection) -> dict:
    return dict(conn.execute(STANDBY_STATUS).mappings().one())

