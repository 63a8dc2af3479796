"""Lock-safe DDL: named, idempotent operations, each looking in the catalog first.

NOT NULL on a big table: `add_column_nullable` → a batched backfill (console/pg/backfill.py) →
`add_not_null_check_not_valid` → `validate_constraint` (its own transaction, SHARE UPDATE
EXCLUSIVE: reads and writes go on) → `set_not_null`, which refuses unless a validated
CHECK (c IS NOT NULL) exists, so PostgreSQL proves the column from it instead of scanning the
table under ACCESS EXCLUSIVE → `drop_constraint`.
Foreign key: `create_index_concurrently` on the referencing column (an INVALID leftover of an
earlier try dropped first) → `add_foreign_key_not_valid` → `validate_constraint`.

Every statement runs through console/pg/lock_retry.py under DDL_LOCK_TIMEOUT_MS, retried on
55P03. Each operation returns "done" or "already done", so a stage made of them can run again.
Identifiers are validated (validate_pg_name) and quoted by psycopg (`sql.Identifier`); catalog
lookups bind their values. `render(op)` is the SQL text `apply(op)` runs, from the same code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

from console.pg import lock_retry
from console.validators import validate_pg_name

DONE = "done"
ALREADY_DONE = "already done"
# A column type as an operator writes it: words, an optional (precision[, scale]), optional [].
TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]{0,62}(\(\s*\d{1,4}\s*(,\s*\d{1,4}\s*)?\))?(\[\])?$")


class DdlRefused(ValueError):
    """The operation cannot run as asked (bad name, missing prerequisite); nothing was changed."""


@dataclass(frozen=True)
class Op:
    """One DDL operation on `schema.table`. Which fields matter depends on `kind`."""

    kind: str
    schema: str
    table: str
    column: str = ""
    column_type: str = ""
    constraint: str = ""
    index: str = ""
    columns: tuple[str, ...] = ()
    ref_schema: str = ""
    ref_table: str = ""
    ref_column: str = ""

    def __post_init__(self):
        object.__setattr__(self, "columns", tuple(self.columns))
        if self.kind not in OPERATIONS:
            raise DdlRefused(f"no DDL operation {self.kind!r}; known: {', '.join(OPERATIONS)}")
        for name in OPERATIONS[self.kind].names:
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                try:
                    validate_pg_name(value)
                except ValidationError as exc:
                    raise DdlRefused(f"{self.kind}: {name} {value!r}: {' '.join(exc.messages)}") from None

    def describe(self) -> str:
        subject = self.constraint or self.index or self.column
        return f"{self.kind} {self.schema}.{self.table}" + (f" ({subject})" if subject else "")


@dataclass(frozen=True)
class Result:
    op: Op
    outcome: str  # DONE or ALREADY_DONE
    statements: list[str] = field(default_factory=list)  # what ran


@dataclass(frozen=True)
class _Operation:
    names: tuple[str, ...]  # fields that are identifiers
    statements: Callable[[Op], list[sql.Composable]]
    done: Callable[[Connection, Op], bool]
    autocommit: bool = False  # outside a transaction (CONCURRENTLY) or in one of its own (VALIDATE)


def _table(op: Op) -> sql.Composable:
    return sql.Identifier(op.schema, op.table)


def _column_type(op: Op) -> sql.Composable:
    """The type, parsed by PostgreSQL's parser and written back by pglast, never as typed."""
    if not TYPE_RE.fullmatch(op.column_type or ""):
        raise DdlRefused(f"add_column_nullable: {op.column_type!r} is not a column type (e.g. bigint, text, "
                         "varchar(20), numeric(10,2), timestamptz, integer[])")
    try:
        select = parse_sql("SELECT NULL::" + op.column_type)[0].stmt
    except ParseError as exc:
        raise DdlRefused(f"add_column_nullable: type {op.column_type!r}: {exc}") from None
    cast = select.targetList[0].val
    if len(select.targetList) != 1 or not isinstance(cast, ast.TypeCast):
        raise DdlRefused(f"add_column_nullable: {op.column_type!r} is not one column type")
    return sql.SQL(RawStream()(cast.typeName))


# Catalog checks: what is already there ----------------------------------------------------------

_COLUMN = text(
    """
    SELECT a.attnotnull AS not_null, format_type(a.atttypid, a.atttypmod) AS type
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = :schema AND c.relname = :table AND a.attname = :column
       AND a.attnum > 0 AND NOT a.attisdropped
    """
)
_CONSTRAINT = text(
    """
    SELECT k.contype AS type, k.convalidated AS validated
      FROM pg_constraint k
      JOIN pg_class c ON c.oid = k.conrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = :schema AND c.relname = :table AND k.conname = :constraint
    """
)
# A validated CHECK that says exactly "column IS NOT NULL": what lets SET NOT NULL skip its scan.
_VALID_NOT_NULL_CHECK = text(
    """
    SELECT k.conname
      FROM pg_constraint k
      JOIN pg_class c ON c.oid = k.conrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = :column
     WHERE n.nspname = :schema AND c.relname = :table AND k.contype = 'c' AND k.convalidated
       AND k.conkey = ARRAY[a.attnum]
       AND pg_get_constraintdef(k.oid) = 'CHECK ((' || quote_ident(:column) || ' IS NOT NULL))'
     ORDER BY k.conname
     LIMIT 1
    """
)
_INDEX = text(
    """
    SELECT i.indisvalid AS valid, t.relname AS table
      FROM pg_class ic
      JOIN pg_namespace n ON n.oid = ic.relnamespace
      JOIN pg_index i ON i.indexrelid = ic.oid
      JOIN pg_class t ON t.oid = i.indrelid
     WHERE n.nspname = :schema AND ic.relname = :index
    """
)


def _column(conn: Connection, op: Op) -> dict | None:
    row = conn.execute(_COLUMN, {"schema": op.schema, "table": op.table, "column": op.column}).mappings().first()
    return dict(row) if row else None


def _constraint(conn: Connection, op: Op) -> dict | None:
    params = {"schema": op.schema, "table": op.table, "constraint": op.constraint}
    row = conn.execute(_CONSTRAINT, params).mappings().first()
    return dict(row) if row else None


def index_state(conn: Connection, schema: str, index: str) -> dict | None:
    row = conn.execute(_INDEX, {"schema": schema, "index": index}).mappings().first()
    return dict(row) if row else None


def valid_not_null_check(conn: Connection, schema: str, table: str, column: str) -> str | None:
    """The name of a validated CHECK (column IS NOT NULL) on the table, if there is one."""
    params = {"schema": schema, "table": table, "column": column}
    return conn.execute(_VALID_NOT_NULL_CHECK, params).scalar()


def _column_added(conn: Connection, op: Op) -> bool:
    return _column(conn, op) is not None


def _constraint_exists(conn: Connection, op: Op) -> bool:
    return _constraint(conn, op) is not None


def _constraint_validated(conn: Connection, op: Op) -> bool:
    found = _constraint(conn, op)
    if found is None:
        raise DdlRefused(f"validate_constraint: {op.schema}.{op.table} has no constraint {op.constraint}")
    return found["validated"]


def _constraint_gone(conn: Connection, op: Op) -> bool:
    return _constraint(conn, op) is None


def _not_null_set(conn: Connection, op: Op) -> bool:
    column = _column(conn, op)
    if column is None:
        raise DdlRefused(f"set_not_null: {op.schema}.{op.table} has no column {op.column}")
    if column["not_null"]:
        return True
    if valid_not_null_check(conn, op.schema, op.table, op.column) is None:
        raise DdlRefused(
            f"set_not_null: {op.schema}.{op.table}.{op.column} has no validated CHECK ({op.column} IS NOT NULL), "
            "so SET NOT NULL would scan the whole table under ACCESS EXCLUSIVE. Add one NOT VALID "
            "(add_not_null_check_not_valid), validate it (validate_constraint), then set NOT NULL."
        )
    return False


def _index_valid(conn: Connection, op: Op) -> bool:
    found = index_state(conn, op.schema, op.index)
    if found is not None and found["table"] != op.table:
        raise DdlRefused(f"create_index_concurrently: {op.schema}.{op.index} already exists on another table, "
                         f"{found['table']}")
    return bool(found and found["valid"])


# Statements: what runs, and what render() shows -------------------------------------------------


def _add_column(op: Op) -> list[sql.Composable]:
    return [sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        _table(op), sql.Identifier(op.column), _column_type(op))]


def _add_not_null_check(op: Op) -> list[sql.Composable]:
    return [sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID").format(
        _table(op), sql.Identifier(op.constraint), sql.Identifier(op.column))]


def _validate(op: Op) -> list[sql.Composable]:
    return [sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(_table(op), sql.Identifier(op.constraint))]


def _set_not_null(op: Op) -> list[sql.Composable]:
    return [sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(_table(op), sql.Identifier(op.column))]


def _drop_constraint(op: Op) -> list[sql.Composable]:
    return [sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(_table(op), sql.Identifier(op.constraint))]


def _drop_invalid_index(op: Op) -> sql.Composable:
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(op.schema, op.index))


def _create_index(op: Op) -> list[sql.Composable]:
    return [sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
        sql.Identifier(op.index), _table(op), sql.SQL(", ").join(map(sql.Identifier, op.columns)))]


def _add_foreign_key(op: Op) -> list[sql.Composable]:
    return [sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) NOT VALID").format(
        _table(op), sql.Identifier(op.constraint), sql.Identifier(op.column),
        sql.Identifier(op.ref_schema, op.ref_table), sql.Identifier(op.ref_column))]


OPERATIONS: dict[str, _Operation] = {
    "add_column_nullable": _Operation(("schema", "table", "column"), _add_column, _column_added),
    "add_not_null_check_not_valid": _Operation(("schema", "table", "column", "constraint"), _add_not_null_check,
                                               _constraint_exists),
    "validate_constraint": _Operation(("schema", "table", "constraint"), _validate, _constraint_validated,
                                      autocommit=True),
    "set_not_null": _Operation(("schema", "table", "column"), _set_not_null, _not_null_set),
    "drop_constraint": _Operation(("schema", "table", "constraint"), _drop_constraint, _constraint_gone),
    "create_index_concurrently": _Operation(("schema", "table", "index", "columns"), _create_index, _index_valid,
                                            autocommit=True),
    "add_foreign_key_not_valid": _Operation(("schema", "table", "column", "constraint", "ref_schema", "ref_table",
                                             "ref_column"), _add_foreign_key, _constraint_exists),
}


def _sql_text(statement: sql.Composable) -> str:
    return statement.as_string(None)


def render(op: Op) -> str:
    """The SQL `apply(op)` runs, one statement a line (each under the lock timeout)."""
    lines = [_sql_text(s) + ";" for s in OPERATIONS[op.kind].statements(op)]
    if op.kind == "create_index_concurrently":
        lines.insert(0, f"-- only if an INVALID index {op.index} is left over from an earlier try:\n"
                        f"{_sql_text(_drop_invalid_index(op))};")
    return "\n".join(lines)


def run_on(conn: Connection, op: Op, *, log: Callable[..., None] | None = None) -> Result:
    """`op` on a connection the caller holds, unless the catalog says it is done: in the caller's
    transaction, or (an autocommit operation) on a session outside any transaction. No retry
    here: `apply` and the application's staged revisions (tenants/app_schema/staged.py) wrap it
    in console/pg/lock_retry.py."""
    statements = OPERATIONS[op.kind].statements(op)  # refuses a bad type before touching anything
    ran: list[str] = []
    # In a transaction, the check and the statement see the same catalog; a CONCURRENTLY or
    # VALIDATE session checks just before (IF NOT EXISTS covers a race for the index).
    if OPERATIONS[op.kind].done(conn, op):
        return Result(op, ALREADY_DONE, ran)
    if op.kind == "create_index_concurrently" and index_state(conn, op.schema, op.index):
        _execute(conn, _drop_invalid_index(op), ran)
        if log:
            log(f"{op.describe()}: dropped the INVALID index {op.index} left over from an earlier try")
    for statement in statements:
        _execute(conn, statement, ran)
    return Result(op, DONE, ran)


def apply(target, op: Op, *, database: str | None = None, log: Callable[..., None] | None = None,
          lock_timeout_ms: int | None = None, retries: int | None = None) -> Result:
    """Run `op` on the target (its own database or `database`) as the change login, unless the
    catalog says it is done. Raises DdlRefused (nothing changed) or lock_retry.LockRetriesExhausted."""
    operation = OPERATIONS[op.kind]
    operation.statements(op)  # refuses a bad type before connecting
    result = lock_retry.run(
        target, lambda conn: run_on(conn, op, log=log), what=op.describe(), schema=op.schema, table=op.table,
        database=database, autocommit=operation.autocommit, lock_timeout_ms=lock_timeout_ms, retries=retries,
        log=log, statement_timeout_ms=settings.DDL_STATEMENT_TIMEOUT_MS,
    )
    if log:
        log(f"{op.describe()}: {result.outcome}")
    return result


def _execute(conn: Connection, statement: sql.Composable, ran: list[str]) -> None:
    rendered = _sql_text(statement)
    conn.exec_driver_sql(rendered)
    ran.append(rendered)


def column_type_sql(column_type: str) -> str:
    """`column_type` as PostgreSQL's parser read it, written back by pglast (what
    add_column_nullable sends); DdlRefused if it is not one column type."""
    return _sql_text(_column_type(Op("add_column_nullable", "public", "t", "c", column_type=column_type)))
