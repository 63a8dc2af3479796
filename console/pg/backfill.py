"""Backfills on a target: `UPDATE t SET c = <expr> WHERE pk > :after AND pk <= :upto AND (<where>)`
in keyset batches over an integer primary key, each its own short transaction, and the health
indicators that say when to hold off (replica lag, lock waiters, vacuum on the table).

The SET expression and the WHERE filter are operator SQL. PostgreSQL's own parser (pglast) must
find exactly one expression in each, with no parameter, no writing subquery, no row locking and
no call to a function of DENY_FUNCTIONS; the statement is then built by psycopg from the
identifiers (`sql.Identifier`) and the expression as pglast writes it back from its parse tree,
never from the text as typed. Values (bounds, batch size) are bound.

Exactly once: each batch also moves this backfill's row in `fleet_console.backfill_progress` on
the target, from `last_pk = :after` to `:upto`, in the batch's own transaction. The console's
checkpoint lives in another database, so a worker killed between the batch's COMMIT and the
checkpoint's leaves the console one batch behind the target: on resume the target's row is the
truth and the batch is not run again. The same compare-and-set refuses a second runner: a batch
whose `:after` is not the stored one changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream
from pglast.visitors import Visitor
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

from console.pg.heartbeat import SCHEMA as CONSOLE_SCHEMA
from console.secrets import driver_message

PROGRESS_TABLE = "backfill_progress"
INTEGER_TYPES = ("smallint", "integer", "bigint")
# Functions an expression may not call: they sleep, signal or end sessions, read or write server
# files, reach other servers, run SQL given as text, take advisory locks or change settings.
DENY_FUNCTIONS = frozenset({
    "pg_sleep", "pg_sleep_for", "pg_sleep_until", "pg_terminate_backend", "pg_cancel_backend",
    "pg_reload_conf", "pg_rotate_logfile", "pg_promote", "pg_switch_wal", "pg_create_restore_point",
    "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_logical_emit_message", "set_config",
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export",
    "lo_unlink", "lo_from_bytea", "lo_put", "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
    "schema_to_xml", "database_to_xml", "ts_stat", "pg_notify", "pg_import_system_collations",
})
DENY_PREFIXES = ("dblink", "pg_advisory", "pg_try_advisory", "pg_file_", "pg_ls_", "pg_replication_",
                 "pg_drop_replication", "pg_create_", "pg_copy_", "pg_stat_reset")
WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


class BackfillRefused(ValueError):
    """The backfill cannot run as asked; the message says why. Nothing was changed."""


class ConcurrentRun(RuntimeError):
    """Another runner moved this backfill's progress row: this batch was rolled back."""


# Operator SQL ------------------------------------------------------------------------------------


class _Found(Visitor):
    def __init__(self):
        self.problems: list[str] = []

    def visit(self, ancestors, node):
        if isinstance(node, WRITES):
            self.problems.append(f"a subquery that writes ({type(node).__name__.removesuffix('Stmt').upper()})")
        elif isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval.lower()
            if name in DENY_FUNCTIONS or name.startswith(DENY_PREFIXES):
                self.problems.append(f"a call to {name}()")
        elif isinstance(node, ast.ParamRef):
            self.problems.append(f"a parameter (${node.number})")
        elif isinstance(node, ast.SelectStmt) and (node.lockingClause or node.intoClause):
            self.problems.append("a subquery that locks rows or creates a table (FOR UPDATE/SHARE, INTO)")
        elif isinstance(node, ast.ColumnRef) and any(isinstance(f, ast.A_Star) for f in node.fields):
            self.problems.append("a * column reference")


def parse_expression(source: str, what: str) -> str:
    """One SQL expression, as pglast writes it back from PostgreSQL's parse tree; BackfillRefused
    saying what is wrong otherwise (`what` names the field: "SET expression", "WHERE filter")."""
    if "\x00" in source:
        raise BackfillRefused(f"The {what} contains a NUL byte.")
    if not source.strip():
        raise BackfillRefused(f"Enter the {what}.")
    try:
        parsed = parse_sql("SELECT " + source)
    except ParseError as exc:
        raise BackfillRefused(f"The {what} is not one SQL expression: {exc}.") from None
    if len(parsed) != 1:
        raise BackfillRefused(f"The {what} must be one expression, without semicolons.")
    select = parsed[0].stmt
    extra = [name for name in select.__slots__ if name != "targetList" and getattr(select, name)
             not in (None, False, 0)]
    if extra or len(select.targetList or ()) != 1 or select.targetList[0].name:
        raise BackfillRefused(f"The {what} must be exactly one expression (no list, alias, FROM, WHERE, ...).")
    found = _Found()
    found(select.targetList[0].val)
    if found.problems:
        raise BackfillRefused(f"The {what} may not contain {', '.join(sorted(set(found.problems)))}.")
    return RawStream()(select.targetList[0].val)


# The backfill ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One backfill: identifiers already validated, expressions as `parse_expression` returns them."""

    schema: str
    table: str
    pk: str
    column: str
    set_sql: str
    where_sql: str = ""
    key: str = ""  # this backfill's row in fleet_console.backfill_progress

    def _table(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)

    def _expression(self, source: str) -> sql.Composable:
        # pglast's output of a parse tree, not operator text; %% because psycopg reads % as a placeholder.
        return sql.SQL(source.replace("%", "%%"))

    def update_statement(self) -> sql.Composable:
        pk = sql.Identifier(self.pk)
        statement = sql.SQL("UPDATE {table} SET {column} = {value} WHERE {pk} > {after} AND {pk} <= {upto}").format(
            table=self._table(), column=sql.Identifier(self.column), value=self._expression(self.set_sql),
            pk=pk, after=sql.Placeholder("after"), upto=sql.Placeholder("upto"))
        if self.where_sql:
            statement += sql.SQL(" AND ({})").format(self._expression(self.where_sql))
        return statement

    def bounds_statement(self) -> sql.Composable:
        """The batch's upper key: `size` keys past `after`, read from the primary key's index."""
        return sql.SQL("SELECT max({pk}) FROM (SELECT {pk} FROM {table} WHERE {pk} > {after} ORDER BY {pk} "
                       "LIMIT {size}) AS batch").format(pk=sql.Identifier(self.pk), table=self._table(),
                                                        after=sql.Placeholder("after"), size=sql.Placeholder("size"))

    def count_statement(self) -> sql.Composable:
        statement = sql.SQL("SELECT count(*) FROM {} WHERE {} > {}").format(
            self._table(), sql.Identifier(self.pk), sql.Placeholder("after"))
        if self.where_sql:
            statement += sql.SQL(" AND ({})").format(self._expression(self.where_sql))
        return statement

    def render(self) -> str:
        """The batch's UPDATE as it is sent (%(after)s and %(upto)s bound per batch)."""
        return self.update_statement().as_string(None).replace("%%", "%")


def _execute(conn: Connection, statement: sql.Composable, params: dict | None = None):
    """Run a psycopg-composed statement on the SQLAlchemy connection's driver connection, inside
    its transaction; values stay bound."""
    cursor = conn.connection.driver_connection.cursor()
    cursor.execute(statement, params or {})
    return cursor


_TABLE_COLUMNS = text(
    """
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
           a.attnum = ANY(i.indkey) AND i.indnatts = 1 AS single_pk
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
     WHERE n.nspname = :schema AND c.relname = :table AND c.relkind IN ('r', 'p')
    """
)


def primary_key(conn: Connection, schema: str, table: str, column: str) -> str:
    """The table's single-column integer primary key, checking that `column` exists; refuses
    anything else with a clear message."""
    columns = conn.execute(_TABLE_COLUMNS, {"schema": schema, "table": table}).mappings().all()
    if not columns:
        raise BackfillRefused(f"There is no table {schema}.{table} (or the change login cannot see it).")
    if column not in {c["name"] for c in columns}:
        raise BackfillRefused(f"{schema}.{table} has no column {column}.")
    keys = [c for c in columns if c["single_pk"]]
    if not keys:
        raise BackfillRefused(f"{schema}.{table} has no single-column primary key to batch over.")
    if keys[0]["type"] not in INTEGER_TYPES:
        raise BackfillRefused(f"{schema}.{table}'s primary key {keys[0]['name']} is {keys[0]['type']}: batches "
                              "need an integer key (smallint, integer or bigint).")
    if keys[0]["name"] == column:
        raise BackfillRefused(f"{column} is the primary key the batches walk: backfill another column.")
    return keys[0]["name"]


def check_statement(conn: Connection, spec: Spec) -> None:
    """Let PostgreSQL plan the batch's UPDATE (EXPLAIN only: nothing runs), so that an unknown
    column or a type mismatch is refused before the job starts."""
    try:
        _execute(conn, sql.SQL("EXPLAIN ") + spec.update_statement(), {"after": 0, "upto": 0})
    except psycopg.errors.LockNotAvailable:
        raise BackfillRefused(f"{spec.schema}.{spec.table} is locked right now (a session holds or waits for a "
                              "conflicting lock), so the backfill could not be checked: try again shortly.") from None
    except psycopg.Error as exc:  # with PostgreSQL's message
        raise BackfillRefused(f"PostgreSQL refuses the backfill's UPDATE: {driver_message(exc)}") from None


def first_key(conn: Connection, spec: Spec) -> int | None:
    """One below the smallest key: where the first batch starts (None: the table is empty)."""
    smallest = _execute(conn, sql.SQL("SELECT min({}) FROM {}").format(sql.Identifier(spec.pk), spec._table()))
    value = smallest.fetchone()[0]
    return None if value is None else value - 1


def rows_to_do(conn: Connection, spec: Spec, after: int) -> int:
    return _execute(conn, spec.count_statement(), {"after": after}).fetchone()[0]


# Progress on the target, in the batches' own transactions ---------------------------------------

_PROGRESS = sql.Identifier(CONSOLE_SCHEMA, PROGRESS_TABLE)


def ensure_progress_table(conn: Connection) -> None:
    """Create the progress table if missing (the change login, like the heartbeat's schema)."""
    exists = conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"),
                          {"name": f"{CONSOLE_SCHEMA}.{PROGRESS_TABLE}"}).scalar_one()
    if exists:
        return
    _execute(conn, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CONSOLE_SCHEMA)))
    _execute(conn, sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (backfill text PRIMARY KEY, last_pk bigint NOT NULL,"
        " rows_done bigint NOT NULL DEFAULT 0, batches bigint NOT NULL DEFAULT 0,"
        " updated_at timestamptz NOT NULL DEFAULT now())").format(_PROGRESS))
    _execute(conn, sql.SQL("COMMENT ON TABLE {} IS {}").format(_PROGRESS, sql.Literal(
        "Fleet Console backfills: the last key each one committed, moved in the batch's own transaction.")))


def progress(conn: Connection, key: str) -> dict | None:
    cursor = _execute(conn, sql.SQL("SELECT last_pk, rows_done, batches FROM {} WHERE backfill = {}").format(
        _PROGRESS, sql.Placeholder("key")), {"key": key})
    row = cursor.fetchone()
    return None if row is None else {"last_pk": row[0], "rows_done": row[1], "batches": row[2]}


def start_progress(conn: Connection, key: str, last_pk: int) -> None:
    _execute(conn, sql.SQL("INSERT INTO {} (backfill, last_pk) VALUES ({}, {}) ON CONFLICT (backfill) DO NOTHING").format(
        _PROGRESS, sql.Placeholder("key"), sql.Placeholder("last_pk")), {"key": key, "last_pk": last_pk})


def forget_progress(conn: Connection, key: str) -> None:
    _execute(conn, sql.SQL("DELETE FROM {} WHERE backfill = {}").format(_PROGRESS, sql.Placeholder("key")),
             {"key": key})


@dataclass(frozen=True)
class Batch:
    after: int
    upto: int | None  # None: no key left past `after`, the backfill is done
    rows: int = 0  # rows the UPDATE changed (those the filter let through)
    waiters: int = 0  # sessions waiting on this batch's locks just before it committed
    waited_s: float = 0.0  # how long they had waited, added up


_WAITERS = sql.SQL(
    "WITH counted AS (UPDATE {} SET rows_done = rows_done + {rows} WHERE backfill = {key})"
    " SELECT count(*), COALESCE(sum(EXTRACT(EPOCH FROM clock_timestamp() - waitstart)), 0)::float8"
    " FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
).format(_PROGRESS, rows=sql.Placeholder("rows"), key=sql.Placeholder("key"))


def _move_statement(spec: Spec) -> sql.Composable:
    """The batch's upper key (`size` keys past `after`, from the primary key's index) and the
    progress row moved there from `after`, in one statement; no row when either is not so."""
    return sql.SQL(
        "WITH batch (upto) AS ({bounds}) UPDATE {progress} SET last_pk = batch.upto, batches = batches + 1,"
        " updated_at = now() FROM batch WHERE backfill = {key} AND last_pk = {after} AND batch.upto IS NOT NULL"
        " RETURNING batch.upto"
    ).format(bounds=spec.bounds_statement(), progress=_PROGRESS, key=sql.Placeholder("key"),
             after=sql.Placeholder("after"))


def run_batch(conn: Connection, spec: Spec, after: int, size: int) -> Batch:
    """One batch in the caller's transaction (the caller commits): the progress row moved from
    `after` to the batch's upper key, the UPDATE, and who waits on its locks (and how long).
    The progress row is taken first: a second runner waits there, then finds it moved and stops."""
    moved = _execute(conn, _move_statement(spec), {"after": after, "size": size, "key": spec.key}).fetchone()
    if moved is None:
        if _execute(conn, spec.bounds_statement(), {"after": after, "size": size}).fetchone()[0] is None:
            return Batch(after, None)
        raise ConcurrentRun(f"backfill {spec.key}: the target's progress row is no longer at {after}; "
                            "another runner took this batch")
    upto = moved[0]
    rows = _execute(conn, spec.update_statement(), {"after": after, "upto": upto}).rowcount
    waiters, waited_s = _execute(conn, _WAITERS, {"rows": rows, "key": spec.key}).fetchone()
    return Batch(after, upto, rows, waiters, waited_s)


# Health indicators (the monitor login: it may read every standby's and vacuum's figures) --------

HEALTH = text(
    """
    WITH t AS (
        SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = :schema AND c.relname = :table
    ), standby AS (
        SELECT application_name,
               CASE WHEN replay_lsn IS NULL THEN NULL
                    WHEN replay_lsn >= pg_current_wal_lsn() THEN 0
                    ELSE COALESCE(EXTRACT(EPOCH FROM replay_lag), 0) END::float8 AS lag_s,
               pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS lag_bytes
          FROM pg_stat_replication
    )
    SELECT (SELECT application_name FROM standby ORDER BY lag_s DESC NULLS LAST LIMIT 1) AS worst_standby,
           (SELECT max(lag_s) FROM standby) AS replica_lag_s,
           (SELECT max(lag_bytes) FROM standby) AS replica_lag_bytes,
           (SELECT string_agg(a.backend_type || ' ' || v.phase, ', ')
              FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a ON a.pid = v.pid
             WHERE v.relid = (SELECT oid FROM t)) AS vacuum,
           (SELECT count(*) FROM pg_locks l
             WHERE l.locktype = 'relation' AND NOT l.granted AND l.relation = (SELECT oid FROM t))::int AS waiting_on_table
    """
)


@dataclass(frozen=True)
class Health:
    worst_standby: str | None
    replica_lag_s: float | None
    replica_lag_bytes: float | None
    vacuum: str | None  # e.g. "autovacuum worker scanning heap"
    waiting_on_table: int

    def stop_reason(self, schema: str, table: str, *, max_replica_lag_s: float, max_lock_waiters: int) -> str | None:
        """Why the backfill must hold off now (GitLab's Stop), or None (Normal)."""
        if self.replica_lag_s is not None and self.replica_lag_s > max_replica_lag_s:
            return (f"replica lag: standby {self.worst_standby} is {self.replica_lag_s:.1f} s behind "
                    f"(limit {max_replica_lag_s:g} s)")
        if self.vacuum:
            return f"vacuum is working on {schema}.{table} ({self.vacuum})"
        if self.waiting_on_table > max_lock_waiters:
            return (f"lock waiters: {_sessions(self.waiting_on_table)} waiting for a lock on {schema}.{table} "
                    f"(limit {max_lock_waiters})")
        return None

    def as_dict(self) -> dict:
        return asdict(self)


def batch_waiters_reason(waiters: int, *, max_lock_waiters: int) -> str | None:
    """Why the backfill must hold off after a batch that `waiters` sessions waited on, or None."""
    if waiters > max_lock_waiters:
        return f"lock waiters: {_sessions(waiters)} waited on the last batch's row locks (limit {max_lock_waiters})"
    return None


def _sessions(count: int) -> str:
    return f"{count} session{'' if count == 1 else 's'}"


def health(conn: Connection, schema: str, table: str) -> Health:
    return Health(**conn.execute(HEALTH, {"schema": schema, "table": table}).mappings().one())
