"""What a target database holds, for the console's pickers and plans: its tables with their
columns, types and primary keys, a table's size and estimated rows, and which functions are
volatile. Read with the monitor login (pg_read_all_data, pg_monitor); every value is bound."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

from console.pg.heartbeat import SCHEMA as CONSOLE_SCHEMA


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    primary_key: bool


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def primary_key(self) -> list[str]:
        return [c.name for c in self.columns if c.primary_key]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


_TABLES = text(
    """
    SELECT n.nspname AS schema, c.relname AS table, a.attname AS column,
           format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
           coalesce(a.attnum = ANY(pk.conkey), false) AS primary_key
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', :console_schema)
       AND n.nspname NOT LIKE 'pg\\_%'
     ORDER BY n.nspname, c.relname, a.attnum
    """
)


def tables(conn: Connection) -> list[Table]:
    """Every ordinary table of the database (not the system's, not the console's own)."""
    found: dict[tuple[str, str], Table] = {}
    for row in conn.execute(_TABLES, {"console_schema": CONSOLE_SCHEMA}).mappings():
        table = found.setdefault((row["schema"], row["table"]), Table(row["schema"], row["table"]))
        table.columns.append(Column(row["column"], row["type"], row["not_null"], row["primary_key"]))
    return list(found.values())


_STATS = text(
    """
    SELECT pg_total_relation_size(c.oid)::bigint AS size_bytes,
           pg_relation_size(c.oid)::bigint AS heap_bytes,
           CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS estimated_rows,
           s.n_live_tup::bigint AS live_rows,
           greatest(s.last_analyze, s.last_autoanalyze) AS analyzed_at
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
     WHERE n.nspname = :schema AND c.relname = :table
    """
)
_NULL_FRACTION = text(
    "SELECT null_frac::float8 FROM pg_stats WHERE schemaname = :schema AND tablename = :table AND attname = :column"
)


@dataclass(frozen=True)
class TableStats:
    size_bytes: int
    heap_bytes: int
    estimated_rows: int | None  # the planner's estimate (pg_class.reltuples); None: never analyzed
    live_rows: int | None  # pg_stat_user_tables.n_live_tup
    analyzed_at: object | None

    @property
    def rows(self) -> int | None:
        """The best estimate there is of the table's rows."""
        return self.estimated_rows if self.estimated_rows is not None else self.live_rows


def table_stats(conn: Connection, schema: str, table: str) -> TableStats | None:
    row = conn.execute(_STATS, {"schema": schema, "table": table}).mappings().first()
    return TableStats(**row) if row else None


def null_fraction(conn: Connection, schema: str, table: str, column: str) -> float | None:
    """The planner's share of NULLs in the column (pg_stats), None before the first ANALYZE."""
    return conn.execute(_NULL_FRACTION, {"schema": schema, "table": table, "column": column}).scalar()


_VOLATILE = text(
    """
    SELECT DISTINCT p.proname FROM pg_proc p
     WHERE p.proname = ANY(:names) AND p.provolatile = 'v'
    """
)


def volatile_functions(conn: Connection, names: list[str]) -> set[str]:
    """Which of these function names are volatile in this database (any overload)."""
    if not names:
        return set()
    return set(conn.execute(_VOLATILE, {"names": sorted(set(names))}).scalars())


def plan_expression(conn: Connection, expression_sql: str, schema: str, table: str, cast_to: str = "") -> None:
    """Let PostgreSQL plan `EXPLAIN SELECT (expr)[::cast_to] FROM table` (nothing is read), so an
    unknown column or function, or a value that cannot become the column's type, is refused.
    `expression_sql` is pglast's deparse of a checked expression, `cast_to` a type as pglast
    wrote it back; both are parse-tree output, not operator text. Raises psycopg.Error."""
    value = sql.SQL("({})").format(sql.SQL(expression_sql.replace("%", "%%")))
    if cast_to:
        value = sql.SQL("{}::{}").format(value, sql.SQL(cast_to))
    statement = sql.SQL("EXPLAIN SELECT {} FROM {}").format(value, sql.Identifier(schema, table))
    conn.connection.driver_connection.cursor().execute(statement)


_SCHEMA_COLUMN_TYPES = text(
    """
    SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
    """
)


def schema_column_types(conn: Connection, schema: str) -> dict[tuple[str, str], str]:
    """Each column's type in one schema, by (table, column)."""
    rows = conn.execute(_SCHEMA_COLUMN_TYPES, {"schema": schema}).mappings()
    return {(row["table"], row["column"]): row["type"] for row in rows}


_SCHEMA_ROWS = text(
    """
    SELECT c.relname AS table, CASE WHEN c.reltuples < 0 THEN s.n_live_tup ELSE c.reltuples END::bigint AS rows
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
     WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
    """
)


def schema_rows(conn: Connection, schema: str) -> dict[str, int | None]:
    """Estimated rows of each table of one schema, by table name."""
    return {row["table"]: row["rows"] for row in conn.execute(_SCHEMA_ROWS, {"schema": schema}).mappings()}
