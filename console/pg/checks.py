"""Health checks of a target's database, as PgHero makes them: invalid, duplicate and unused
indexes, dead tuples and vacuum, sequences near their limit, transaction ID wraparound, sessions
idle in transaction, the largest relations and the settings changed from their defaults.

Each function sends one read (run as the monitor login, which has pg_monitor and
pg_read_all_data) and returns plain rows. Where a row has a fix, its `fix` is SQL text for an
operator to copy: the console never runs it. Names in it are quoted by psycopg (`sql.Identifier`),
never formatted by hand."""

from __future__ import annotations

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

XID_LIMIT = 2**31  # transaction IDs a database may use before wraparound stops it
BIGINT_MAX = 2**63 - 1
SEQUENCE_SHOWN_FROM_PCT = 50.0  # sequences less used than this are not listed
USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"

INVALID_INDEXES = text(
    f"""
    SELECT n.nspname AS schema, t.relname AS table_name, i.relname AS index_name,
           pg_get_indexdef(i.oid) AS definition, pg_relation_size(i.oid) AS size_bytes
      FROM pg_index x
      JOIN pg_class i ON i.oid = x.indexrelid
      JOIN pg_class t ON t.oid = x.indrelid
      JOIN pg_namespace n ON n.oid = i.relnamespace
     WHERE NOT x.indisvalid AND {USER_SCHEMAS}
     ORDER BY 1, 3
    """
)

# Index a is redundant when index b on the same table starts with the same columns (same operator
# classes, expressions and predicate, same access method): b serves every query a serves. A unique
# a is only redundant to a unique b on exactly its columns; indexes behind a constraint stay.
DUPLICATE_INDEXES = text(
    f"""
    WITH idx AS (
        SELECT x.indexrelid, x.indrelid, x.indisunique, i.relam, n.nspname AS schema,
               t.relname AS table_name, i.relname AS index_name,
               string_to_array(x.indkey::text, ' ') AS keys,
               string_to_array(x.indclass::text, ' ') AS classes,
               coalesce(pg_get_expr(x.indexprs, x.indrelid), '') AS expressions,
               coalesce(pg_get_expr(x.indpred, x.indrelid), '') AS predicate,
               EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) AS backs_constraint
          FROM pg_index x
          JOIN pg_class i ON i.oid = x.indexrelid
          JOIN pg_class t ON t.oid = x.indrelid
          JOIN pg_namespace n ON n.oid = i.relnamespace
         WHERE x.indisvalid AND x.indisready AND {USER_SCHEMAS}
    )
    SELECT DISTINCT ON (a.indexrelid)
           a.schema, a.table_name, a.index_name, pg_get_indexdef(a.indexrelid) AS definition,
           b.index_name AS covered_by, pg_get_indexdef(b.indexrelid) AS covered_by_definition,
           pg_relation_size(a.indexrelid) AS size_bytes
      FROM idx a
      JOIN idx b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid AND b.relam = a.relam
       AND b.expressions = a.expressions AND b.predicate = a.predicate
       AND b.keys[1:cardinality(a.keys)] = a.keys AND b.classes[1:cardinality(a.classes)] = a.classes
     WHERE NOT a.backs_constraint
       AND (NOT a.indisunique OR (b.indisunique AND b.keys = a.keys))
       AND (b.keys <> a.keys OR b.indisunique AND NOT a.indisunique
            OR b.indisunique = a.indisunique AND b.indexrelid < a.indexrelid)
     ORDER BY a.indexrelid, b.indisunique DESC, cardinality(b.keys)
    """
)

# Scans are counted where they happen: on a primary, its replicas' reads are not in idx_scan.
UNUSED_INDEXES = text(
    """
    SELECT s.schemaname AS schema, s.relname AS table_name, s.indexrelname AS index_name,
           pg_relation_size(s.indexrelid) AS size_bytes, s.idx_scan AS scans
      FROM pg_stat_user_indexes s
      JOIN pg_index x ON x.indexrelid = s.indexrelid
     WHERE s.idx_scan = 0 AND x.indisvalid AND NOT x.indisunique
       AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid)
     ORDER BY pg_relation_size(s.indexrelid) DESC, 1, 3
     LIMIT :limit
    """
)

DEAD_TUPLES = text(
    """
    SELECT schemaname AS schema, relname AS table_name, n_live_tup AS live_tuples, n_dead_tup AS dead_tuples,
           round(100.0 * n_dead_tup / nullif(n_live_tup + n_dead_tup, 0), 1)::float8 AS dead_pct,
           last_vacuum, last_autovacuum, last_analyze, last_autoanalyze
      FROM pg_stat_user_tables
     WHERE n_dead_tup > 0
     ORDER BY n_dead_tup DESC, 1, 2
     LIMIT :limit
    """
)

# The limit of a sequence that feeds a column is the smaller of its own and the column type's.
SEQUENCES = text(
    """
    WITH seq AS (
        SELECT s.schemaname AS schema, s.sequencename AS sequence_name, s.data_type::text AS data_type,
               s.last_value, s.min_value, s.max_value, s.increment_by, s.cycle,
               col.table_schema, col.table_name, col.column_name, col.column_type,
               CASE WHEN s.increment_by > 0 THEN least(s.max_value::numeric, col.type_max) ELSE s.max_value END AS upper_limit,
               CASE WHEN s.increment_by < 0 THEN greatest(s.min_value::numeric, -col.type_max - 1) ELSE s.min_value END AS lower_limit
          FROM pg_sequences s
          JOIN pg_namespace n ON n.nspname = s.schemaname
          JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
          LEFT JOIN LATERAL (
              SELECT tn.nspname AS table_schema, t.relname AS table_name, a.attname AS column_name,
                     format_type(a.atttypid, a.atttypmod) AS column_type,
                     CASE a.atttypid WHEN 'int2'::regtype THEN 32767 WHEN 'int4'::regtype THEN 2147483647
                                     ELSE 9223372036854775807 END::numeric AS type_max
                FROM pg_depend d
                JOIN pg_class t ON t.oid = d.refobjid
                JOIN pg_namespace tn ON tn.oid = t.relnamespace
                JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                 AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
               LIMIT 1
          ) col ON true
         WHERE s.last_value IS NOT NULL AND NOT s.cycle
    )
    SELECT *, round(CASE WHEN increment_by > 0
                         THEN 100 * (last_value - min_value) / nullif(upper_limit - min_value, 0)
                         ELSE 100 * (max_value - last_value) / nullif(max_value - lower_limit, 0) END, 2)::float8 AS used_pct
      FROM seq
     ORDER BY used_pct DESC NULLS LAST, 1, 2
    """
)

WRAPAROUND = text(
    """
    SELECT datname AS database, datallowconn AS allows_connections,
           age(datfrozenxid)::bigint AS xid_age, mxid_age(datminmxid)::bigint AS multixact_age,
           100 * age(datfrozenxid)::float8 / :xid_limit AS used_pct,
           age(datfrozenxid) > current_setting('autovacuum_freeze_max_age')::bigint AS past_freeze_max_age
      FROM pg_database
     ORDER BY age(datfrozenxid) DESC, 1
    """
)

# In the target's own database: the tables that hold its datfrozenxid back.
OLDEST_TABLES = text(
    """
    SELECT n.nspname AS schema, c.relname AS table_name, age(c.relfrozenxid)::bigint AS xid_age,
           100 * age(c.relfrozenxid)::float8 / :xid_limit AS used_pct,
           age(c.relfrozenxid) > current_setting('autovacuum_freeze_max_age')::bigint AS past_freeze_max_age,
           pg_total_relation_size(c.oid) AS total_bytes
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> '0'::xid
     ORDER BY age(c.relfrozenxid) DESC, 1, 2
     LIMIT :limit
    """
)

IDLE_IN_TRANSACTION = text(
    """
    SELECT pid, usename AS username, datname AS database, application_name, client_addr::text AS client_addr,
           state, EXTRACT(EPOCH FROM now() - xact_start)::float8 AS transaction_seconds,
           EXTRACT(EPOCH FROM now() - state_change)::float8 AS idle_seconds, left(query, 500) AS last_query
      FROM pg_stat_activity
     WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
       AND now() - state_change >= make_interval(secs => :min_idle_s)
     ORDER BY state_change, pid
    """
)

LARGEST_RELATIONS = text(
    f"""
    SELECT n.nspname AS schema, c.relname AS name,
           CASE WHEN c.relkind IN ('i', 'I') THEN 'index' ELSE 'table' END AS kind,
           pg_relation_size(c.oid) AS size_bytes,
           CASE WHEN c.relkind IN ('r', 'p', 'm') THEN pg_total_relation_size(c.oid) END AS total_bytes
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I') AND {USER_SCHEMAS}
     ORDER BY pg_relation_size(c.oid) DESC, 1, 2
     LIMIT :limit
    """
)

# Settings the server got from its configuration (file, ALTER SYSTEM, command line, per database
# or role), not this session's own (the console sets application_name and timeouts).
CHANGED_SETTINGS = text(
    """
    SELECT name, setting, unit, boot_val AS default_value, source, category, short_desc AS description
      FROM pg_settings
     WHERE source NOT IN ('default', 'override', 'client', 'session')
       AND setting IS DISTINCT FROM boot_val
     ORDER BY category, name
    """
)


def _rows(conn: Connection, statement, params: dict | None = None) -> list[dict]:
    return [dict(row) for row in conn.execute(statement, params or {}).mappings()]


def _sql(conn: Connection, composed: sql.Composable) -> str:
    return composed.as_string(conn.connection.driver_connection)


def invalid_indexes(conn: Connection) -> list[dict]:
    """Indexes left INVALID by a CREATE/REINDEX ... CONCURRENTLY that failed: written to, never read."""
    rows = _rows(conn, INVALID_INDEXES)
    for row in rows:
        name = sql.Identifier(row["schema"], row["index_name"])
        row["fix"] = _sql(conn, sql.SQL(
            "REINDEX INDEX CONCURRENTLY {name};\n"
            "-- or, if it cannot be built (a unique index over duplicate values), drop it:\n"
            "DROP INDEX CONCURRENTLY {name};"
        ).format(name=name))
    return rows


def duplicate_indexes(conn: Connection) -> list[dict]:
    rows = _rows(conn, DUPLICATE_INDEXES)
    for row in rows:
        row["fix"] = _drop_index(conn, row)
    return rows


def unused_indexes(conn: Connection, limit: int = 50) -> list[dict]:
    rows = _rows(conn, UNUSED_INDEXES, {"limit": limit})
    for row in rows:
        row["fix"] = _drop_index(conn, row)
    return rows


def _drop_index(conn: Connection, row: dict) -> str:
    return _sql(conn, sql.SQL("DROP INDEX CONCURRENTLY {};").format(sql.Identifier(row["schema"], row["index_name"])))


def dead_tuples(conn: Connection, limit: int = 20) -> list[dict]:
    rows = _rows(conn, DEAD_TUPLES, {"limit": limit})
    for row in rows:
        table = sql.Identifier(row["schema"], row["table_name"])
        row["fix"] = _sql(conn, sql.SQL("VACUUM (VERBOSE, ANALYZE) {};").format(table))
    return rows


def sequences(conn: Connection, shown_from_pct: float = SEQUENCE_SHOWN_FROM_PCT) -> list[dict]:
    """Sequences used at least `shown_from_pct` of the way to their limit (or their column's)."""
    rows = [r for r in _rows(conn, SEQUENCES) if (r["used_pct"] or 0) >= shown_from_pct]
    for row in rows:
        row["fix"] = _sequence_fix(conn, row)
    return rows


def _sequence_fix(conn: Connection, row: dict) -> str:
    sequence = sql.Identifier(row["schema"], row["sequence_name"])
    ascending = row["increment_by"] > 0
    if row["column_type"] not in ("smallint", "integer") and row["upper_limit" if ascending else "lower_limit"] in (BIGINT_MAX, -BIGINT_MAX - 1):
        return ("-- near the bigint limit itself: no wider type exists. Move the key to new values (uuid, or a\n"
                "-- new sequence), or RESTART/CYCLE only once the old values are no longer in use.")
    statements = []
    if row["column_type"] in ("smallint", "integer"):
        column = sql.Identifier(row["column_name"])
        statements.append(sql.SQL(
            "-- rewrites the table under an ACCESS EXCLUSIVE lock: plan it, or migrate to a new column\n"
            "ALTER TABLE {} ALTER COLUMN {} TYPE bigint;"
        ).format(sql.Identifier(row["table_schema"], row["table_name"]), column))
    limit = sql.SQL("NO MAXVALUE" if ascending else "NO MINVALUE")
    if row["data_type"] != "bigint":
        statements.append(sql.SQL("ALTER SEQUENCE {} AS bigint {};").format(sequence, limit))
    else:
        statements.append(sql.SQL("ALTER SEQUENCE {} {};").format(sequence, limit))
    return "\n".join(_sql(conn, s) for s in statements)


def wraparound(conn: Connection) -> list[dict]:
    """Each database's oldest unfrozen transaction ID against the 2^31 that stop it."""
    rows = _rows(conn, WRAPAROUND, {"xid_limit": XID_LIMIT})
    for row in rows:
        # Run in that database; template0 (no connections) is frozen already and never needs it.
        row["fix"] = "VACUUM (FREEZE, VERBOSE);" if row["allows_connections"] else ""
    return rows


def oldest_tables(conn: Connection, limit: int = 10) -> list[dict]:
    rows = _rows(conn, OLDEST_TABLES, {"xid_limit": XID_LIMIT, "limit": limit})
    for row in rows:
        table = sql.Identifier(row["schema"], row["table_name"])
        row["fix"] = _sql(conn, sql.SQL("VACUUM (FREEZE, VERBOSE) {};").format(table))
    return rows


def idle_in_transaction(conn: Connection, min_idle_s: float) -> list[dict]:
    rows = _rows(conn, IDLE_IN_TRANSACTION, {"min_idle_s": min_idle_s})
    for row in rows:
        row["fix"] = _sql(conn, sql.SQL("SELECT pg_terminate_backend({});").format(sql.Literal(row["pid"])))
    return rows


def largest_relations(conn: Connection, limit: int = 20) -> list[dict]:
    return _rows(conn, LARGEST_RELATIONS, {"limit": limit})


def changed_settings(conn: Connection) -> list[dict]:
    return _rows(conn, CHANGED_SETTINGS)
