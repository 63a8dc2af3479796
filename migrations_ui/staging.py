"""The stages of a staged change, for both ways of authoring one: a change written in the console
(migrations_ui.models.Change) and a staged Alembic revision of the managed application
(tenants/app_schema/staged.py). One builder, so both run the same lock-safe operations of
console/pg/ddl.py in the same order (DESIGN.md, Staged migrations).

Plain Python, no Django models: the application's revisions import it under the `alembic`
command line too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from pglast import ast, parse_sql
from psycopg import sql

from console.pg import ddl
from console.pg.backfill import BackfillRefused, Spec, parse_expression
from console.validators import validate_pg_name

STAGES = ("expand", "backfill", "validate", "contract")
ADD_NOT_NULL_COLUMN = "add_not_null_column"
SET_NOT_NULL = "set_not_null"
ADD_FOREIGN_KEY = "add_foreign_key"
ADD_INDEX = "add_index"
KINDS = (ADD_NOT_NULL_COLUMN, SET_NOT_NULL, ADD_FOREIGN_KEY, ADD_INDEX)


@dataclass(frozen=True)
class Stage:
    """One stage of a change: DDL operations (console/pg/ddl.py), or a batched backfill."""

    name: str  # expand, backfill, validate, contract
    ops: tuple[ddl.Op, ...] = ()
    backfill: Spec | None = None


def not_null_backfill(source: str) -> str:
    """The backfill expression of a NOT NULL change, as parse_expression returns it; refused when it
    is a constant NULL, with or without casts (every row would stay NULL and VALIDATE fail later)."""
    expression = parse_expression(source, "backfill expression")
    node = parse_sql("SELECT " + expression)[0].stmt.targetList[0].val
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const) and node.isnull:
        raise BackfillRefused("The backfill of a NOT NULL column cannot be NULL: give the value each row "
                              "should get (e.g. a constant, or an expression over the row's other columns).")
    return expression


def derived_name(*parts: str, suffix: str) -> str:
    """A constraint or index name from its table and columns, at most 63 bytes (PostgreSQL's
    NAMEDATALEN - 1): cut, with a short hash of the whole, when longer."""
    whole = "_".join((*parts, suffix))
    if len(whole) <= 63:
        return whole
    return f"{whole[:54]}_{hashlib.sha1(whole.encode()).hexdigest()[:8]}"


def quoted(name: str) -> str:
    return sql.Identifier(name).as_string(None)


@dataclass(frozen=True)
class Definition:
    """What a staged change is, independent of where it runs (the schema is given per run)."""

    kind: str
    table: str
    column: str = ""
    column_type: str = ""  # add_not_null_column; add_foreign_key: the new column's type, if it is new
    backfill_expression: str = ""  # as pglast writes it back
    pk_column: str = "id"
    ref_table: str = ""
    ref_column: str = ""
    ref_schema: str = ""  # empty: the same schema as the table
    index_columns: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ddl.DdlRefused(f"no kind of staged change {self.kind!r}; known: {', '.join(KINDS)}")
        object.__setattr__(self, "index_columns", tuple(self.index_columns))
        names = {"table": self.table, "column": self.column, "pk": self.pk_column, "ref_table": self.ref_table,
                 "ref_column": self.ref_column, "ref_schema": self.ref_schema,
                 **{f"index column {n}": c for n, c in enumerate(self.index_columns, start=1)}}
        for label, name in names.items():
            if name:  # each, as ddl.Op checks its own: the backfill's key column is no Op's
                try:
                    validate_pg_name(name)
                except ValidationError as exc:
                    raise ddl.DdlRefused(f"{self.kind}: {label} {name!r}: {' '.join(exc.messages)}") from None

    @property
    def check_name(self) -> str:
        return derived_name(self.table, self.column, suffix="not_null")

    @property
    def index_name(self) -> str:
        columns = self.index_columns if self.kind == ADD_INDEX else (self.column,)
        return derived_name(self.table, *columns, suffix="idx")

    @property
    def foreign_key_name(self) -> str:
        return derived_name("fk", self.table, self.column, suffix=self.ref_table)

    def backfill_spec(self, schema: str, key: str = "") -> Spec:
        return Spec(schema=schema, table=self.table, pk=self.pk_column, column=self.column,
                    set_sql=self.backfill_expression, where_sql=f"{quoted(self.column)} IS NULL", key=key)

    def stages(self, schema: str, backfill_key: str = "") -> list[Stage]:
        """The ordered stages in `schema`, each only if it has work: the lock-safe sequences."""

        def op(kind: str, **fields) -> ddl.Op:
            return ddl.Op(kind, schema, self.table, **fields)

        check = dict(column=self.column, constraint=self.check_name)
        if self.kind == ADD_NOT_NULL_COLUMN:
            return [
                Stage("expand", (op("add_column_nullable", column=self.column, column_type=self.column_type),)),
                Stage("backfill", backfill=self.backfill_spec(schema, backfill_key)),
                Stage("validate", (op("add_not_null_check_not_valid", **check),
                                   op("validate_constraint", constraint=self.check_name))),
                Stage("contract", (op("set_not_null", column=self.column),
                                   op("drop_constraint", constraint=self.check_name))),
            ]
        if self.kind == SET_NOT_NULL:
            # The CHECK first, so no new NULL arrives while the old ones are backfilled.
            return [
                Stage("expand", (op("add_not_null_check_not_valid", **check),)),
                Stage("backfill", backfill=self.backfill_spec(schema, backfill_key)),
                Stage("validate", (op("validate_constraint", constraint=self.check_name),)),
                Stage("contract", (op("set_not_null", column=self.column),
                                   op("drop_constraint", constraint=self.check_name))),
            ]
        if self.kind == ADD_FOREIGN_KEY:
            added = (op("add_column_nullable", column=self.column, column_type=self.column_type),) if self.column_type else ()
            return [
                Stage("expand", (*added,
                                 op("create_index_concurrently", index=self.index_name, columns=(self.column,)),
                                 op("add_foreign_key_not_valid", column=self.column, constraint=self.foreign_key_name,
                                    ref_schema=self.ref_schema or schema, ref_table=self.ref_table,
                                    ref_column=self.ref_column))),
                Stage("validate", (op("validate_constraint", constraint=self.foreign_key_name),)),
            ]
        return [Stage("expand", (op("create_index_concurrently", index=self.index_name, columns=self.index_columns),))]

    def stage(self, schema: str, name: str) -> Stage:
        found = next((s for s in self.stages(schema) if s.name == name), None)
        if found is None:
            raise ddl.DdlRefused(f"a {self.kind} change has no stage {name!r}; it has "
                                 f"{', '.join(s.name for s in self.stages(schema))}")
        return found

    def title(self) -> str:
        """What the change is, from its validated names and type only (no SQL expression): safe
        to write into a generated revision's docstring."""
        return self._what(", backfilled")

    def describe(self) -> str:
        return self._what(f" (backfill: {self.backfill_expression})")

    def _what(self, backfill: str) -> str:
        if self.kind == ADD_INDEX:
            return f"index on {self.table} ({', '.join(self.index_columns)})"
        if self.kind == ADD_FOREIGN_KEY:
            return f"foreign key {self.table}.{self.column} -> {self.ref_table}.{self.ref_column}"
        if self.kind == ADD_NOT_NULL_COLUMN:
            return f"NOT NULL column {self.table}.{self.column} {self.column_type}{backfill}"
        return f"NOT NULL on {self.table}.{self.column}{backfill}"
