"""Replication lag, from both sides."""

from sqlalchemy import text
from sqlalchemy.engine import Connection

# On a primary: one row per standby. Lag intervals are NULL once a standby has caught up and the
# primary is idle; bytes behind are measured from the primary's current WAL position.
STANDBYS = text(
    """
    SELECT application_name, client_addr::text AS client_addr, state, sync_state,
           EXTRACT(EPOCH FROM write_lag)::float8 AS write_lag_s,
           EXTRACT(EPOCH FROM flush_lag)::float8 AS flush_lag_s,
           EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag_s,
           pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)::float8 AS sent_bytes_behind,
           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_bytes_behind
      FROM pg_stat_replication
     ORDER BY application_name
    """
)

# On a standby: seconds since the last replayed transaction, reported as 0 when everything
# received has been replayed (an idle primary is not lag).
STANDBY_STATUS = text(
    """
    SELECT pg_is_wal_replay_paused() AS replay_paused,
           pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 AS replay_bytes_pending,
           CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
           END::float8 AS replay_lag_s,
           (SELECT status FROM pg_stat_wal_receiver) AS receiver_status
    """
)


def standbys(conn: Connection) -> list[dict]:
    return [dict(row) for row in conn.execute(STANDBYS).mappings()]


def standby_status(conn: Connection) -> dict:
    return dict(conn.execute(STANDBY_STATUS).mappings().one())
