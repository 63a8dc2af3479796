"""Plans: the statements of a change or of the application's pending revisions, the lock each
takes (console/pg/locks.py, from its parse tree) and what is unsafe about them, by squawk-cli
(a linter for PostgreSQL migrations, run on the rendered SQL) and by the console's own checks,
which know what the console runs (lock_timeout, idempotent operations) and, when given, the
target's catalog (table sizes, volatile functions).

A finding is `unsafe` when it can hold up application traffic or rewrite a table; others are
advice. An unsafe finding not `covered` by how the console runs the statement flags it: it
proceeds only with an explicit override and a written reason (Change.override_reason).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from pglast import ast
from pglast.enums import AlterTableType, ConstrType
from pglast.parser import ParseError
from pglast.visitors import Visitor

from console.pg import ddl, locks

LARGE_TABLE_ROWS = 10_000  # above this, a scan under a strong lock is felt by the application
SQUAWK_TIMEOUT_S = 30
# squawk's rules that are advice about style or reruns, not about locks or rewrites.
SQUAWK_ADVICE = frozenset({
    "prefer-robust-stmts", "prefer-identity", "prefer-text-field", "prefer-timestamp-tz", "prefer-timestamptz",
    "prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-big-int", "ban-char-field",
    "require-statement-timeout", "require-table-schema",
})
# Functions whose default rewrites the table on ADD COLUMN, when the catalog cannot be asked.
KNOWN_VOLATILE = frozenset({"random", "clock_timestamp", "timeofday", "gen_random_uuid", "uuid_generate_v4",
                            "uuid_generate_v1", "nextval", "txid_current", "setseed"})
SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


@dataclass
class Finding:
    source: str  # "squawk" or "console"
    rule: str
    message: str
    help: str = ""
    unsafe: bool = True
    covered: str = ""  # why it does not hold up this statement here, if it does not

    @property
    def flags(self) -> bool:
        return self.unsafe and not self.covered

    def describe(self) -> str:
        return f"{self.source} {self.rule}: {self.message}"


@dataclass
class Statement:
    sql: str
    locks: list[locks.Lock]
    findings: list[Finding] = field(default_factory=list)
    note: str = ""

    @property
    def flagged(self) -> list[Finding]:
        return [f for f in self.findings if f.flags]


@dataclass
class StagePlan:
    name: str
    statements: list[Statement]
    note: str = ""

    @property
    def flagged(self) -> list[tuple[Statement, Finding]]:
        return [(s, f) for s in self.statements for f in s.flagged]

    @property
    def sql(self) -> list[str]:
        return [s.sql for s in self.statements]


@dataclass
class Catalog:
    """What the checks may know of the target; empty when it was not read."""

    rows: dict[str, int | None] = field(default_factory=dict)  # "schema.table" or "table" -> estimated rows
    volatile: set[str] = field(default_factory=set)  # volatile function names among those asked
    valid_not_null: set[tuple[str, str]] = field(default_factory=set)  # (table, column) with a validated CHECK
    column_types: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, column) -> format_type
    read: bool = False


# squawk ------------------------------------------------------------------------------------------


def squawk_path() -> str | None:
    beside = Path(sys.executable).parent / "squawk"  # installed in the same virtualenv
    return str(beside) if beside.exists() else shutil.which("squawk")


def squawk(script: str) -> list[dict] | None:
    """squawk's findings on `script` (its JSON reporter: file, line (0-based), rule_name, message,
    help, level), or None when squawk-cli is not installed."""
    path = squawk_path()
    if path is None:
        return None
    done = subprocess.run([path, "--reporter=json", "--stdin-filepath=plan.sql"], input=script, text=True,
                          capture_output=True, timeout=SQUAWK_TIMEOUT_S, check=False)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"squawk failed (exit {done.returncode}): {done.stderr.strip()[:500]}")
    return json.loads(done.stdout)


def _squawk_findings(found: list[dict]) -> list[tuple[int, Finding]]:
    return [(f["line"], Finding("squawk", f["rule_name"], f["message"], f.get("help") or "",
                                unsafe=f["rule_name"] not in SQUAWK_ADVICE)) for f in found]


# The console's own checks ------------------------------------------------------------------------


class _Functions(Visitor):
    def __init__(self):
        self.names = set()

    def visit(self, ancestors, node):
        if isinstance(node, ast.FuncCall):
            self.names.add(node.funcname[-1].sval.lower())


def functions_in(node) -> set[str]:
    found = _Functions()
    found(node)
    return found.names


def functions_in_script(script: str) -> set[str]:
    """The names of the functions a script calls anywhere ('' if it does not parse)."""
    try:
        return set().union(*(functions_in(p.stmt) for p in locks.parse(script)))
    except ParseError:
        return set()


def _relation_keys(relation) -> list[str]:
    if relation is None:
        return []
    return [f"{relation.schemaname}.{relation.relname}", relation.relname] if relation.schemaname else [relation.relname]


@dataclass
class _Context:
    catalog: Catalog
    lock_timeout: bool  # statements run under a lock_timeout (the console's DDL always does)
    size_unknown: str = "its size unknown here"
    new_tables: set[str] = field(default_factory=set)
    checks_added: dict[str, tuple[str, str]] = field(default_factory=dict)  # constraint -> (table, column)
    valid_not_null: set[tuple[str, str]] = field(default_factory=set)

    def is_new(self, relation) -> bool:
        return relation is not None and any(k in self.new_tables for k in _relation_keys(relation))

    def rows(self, relation) -> int | None:
        for key in _relation_keys(relation):
            if key in self.catalog.rows:
                return self.catalog.rows[key]
        return None

    def size_words(self, relation) -> str:
        rows = self.rows(relation)
        return f"about {rows:,} rows" if rows is not None else self.size_unknown

    def large(self, relation) -> bool:
        rows = self.rows(relation)
        return rows is None or rows > LARGE_TABLE_ROWS


def _column_of_not_null_check(constraint) -> str | None:
    """The column of a CHECK (column IS NOT NULL), else None."""
    expr = constraint.raw_expr
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == 1 and isinstance(expr.arg, ast.ColumnRef):
        return expr.arg.fields[-1].sval
    return None


def _console_checks(parsed: locks.Parsed, ctx: _Context) -> list[Finding]:
    stmt, found = parsed.stmt, []
    if isinstance(stmt, ast.VariableSetStmt) and stmt.name == "lock_timeout":
        ctx.lock_timeout = True
    if isinstance(stmt, ast.CreateStmt):
        ctx.new_tables.update(_relation_keys(stmt.relation))
        return found
    relation = getattr(stmt, "relation", None)
    existing = relation is not None and not ctx.is_new(relation)
    if isinstance(stmt, ast.IndexStmt) and not stmt.concurrent and existing:
        found.append(Finding("console", "non-concurrent-index",
                             f"CREATE INDEX without CONCURRENTLY holds SHARE on {relation.relname} "
                             f"({ctx.size_words(relation)}) while it builds: every write waits.",
                             "Use CREATE INDEX CONCURRENTLY, outside a transaction."))
    if isinstance(stmt, ast.AlterTableStmt):
        for cmd in stmt.cmds or ():
            found += _alter_checks(cmd, relation, existing, ctx)
    lock = parsed.lock
    if existing and lock.level in locks.STRONG and not ctx.lock_timeout:
        found.append(Finding("console", "no-lock-timeout",
                             f"{lock.what} waits for {lock.level} on {relation.relname} with no lock_timeout: while "
                             "it waits, every later query on the table queues behind it.",
                             "SET lock_timeout first (the console's own DDL runs under it and retries)."))
    return found


def _alter_checks(cmd, relation, existing: bool, ctx: _Context) -> list[Finding]:
    subtype, found, table = AlterTableType(cmd.subtype), [], relation.relname
    if subtype == AlterTableType.AT_AddConstraint:
        constraint = cmd.def_
        kind = ConstrType(constraint.contype)
        if kind == ConstrType.CONSTR_CHECK and (column := _column_of_not_null_check(constraint)):
            ctx.checks_added[constraint.conname or ""] = (table, column)
            if not constraint.skip_validation:
                ctx.valid_not_null.add((table, column))
        if kind in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK) and not constraint.skip_validation and existing:
            what = "FOREIGN KEY" if kind == ConstrType.CONSTR_FOREIGN else "CHECK"
            level = locks.SHARE_ROW_EXCLUSIVE if kind == ConstrType.CONSTR_FOREIGN else locks.ACCESS_EXCLUSIVE
            found.append(Finding("console", "constraint-without-not-valid",
                                 f"ADD {what} without NOT VALID scans {table} ({ctx.size_words(relation)}) under "
                                 f"{level}" + (" (and the referenced table)" if what == "FOREIGN KEY" else "") + ".",
                                 "Add it NOT VALID, then VALIDATE CONSTRAINT in its own transaction."))
    elif subtype == AlterTableType.AT_ValidateConstraint and cmd.name in ctx.checks_added:
        ctx.valid_not_null.add(ctx.checks_added[cmd.name])
    elif subtype == AlterTableType.AT_SetNotNull and existing:
        proven = (table, cmd.name) in ctx.valid_not_null or (table, cmd.name) in ctx.catalog.valid_not_null
        if not proven and ctx.large(relation):
            found.append(Finding("console", "set-not-null-scan",
                                 f"SET NOT NULL on {table}.{cmd.name} without a validated CHECK ({cmd.name} IS NOT "
                                 f"NULL) scans {table} ({ctx.size_words(relation)}) under ACCESS EXCLUSIVE.",
                                 "Add CHECK (column IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL."))
    elif subtype == AlterTableType.AT_AddColumn and existing:
        column = cmd.def_
        type_name = column.typeName.names[-1].sval.lower() if column.typeName else ""
        defaults = [c.raw_expr for c in column.constraints or () if ConstrType(c.contype) == ConstrType.CONSTR_DEFAULT]
        called = set().union(*(functions_in(d) for d in defaults)) if defaults else set()
        volatile = called & (ctx.catalog.volatile | KNOWN_VOLATILE)
        if type_name in SERIAL_TYPES:
            volatile.add(f"nextval (the default of {type_name})")
        if volatile:
            found.append(Finding("console", "volatile-default",
                                 f"ADD COLUMN {column.colname} with a volatile default ({', '.join(sorted(volatile))}) "
                                 f"rewrites {table} ({ctx.size_words(relation)}) under ACCESS EXCLUSIVE.",
                                 "Add the column without a default (or with a constant one) and backfill it."))
    elif subtype == AlterTableType.AT_AlterColumnType and existing and not _widens(cmd, table, ctx.catalog):
        found.append(Finding("console", "type-change-rewrites",
                             f"ALTER COLUMN {cmd.name} TYPE rewrites {table} ({ctx.size_words(relation)}) and its "
                             "indexes under ACCESS EXCLUSIVE, unless the new type is binary-compatible (e.g. a "
                             "longer varchar, or text).",
                             "Add a new column, backfill it, switch readers, then drop the old one."))
    return found


_VARCHAR = re.compile(r"^character varying(?:\((\d+)\))?$")


def _widens(cmd, table: str, catalog: Catalog) -> bool:
    """Whether ALTER COLUMN TYPE only widens a varchar (or makes it text) without USING: PostgreSQL
    then changes the catalog and rewrites nothing. Needs the column's type from the catalog."""
    current = _VARCHAR.match(catalog.column_types.get((table, cmd.name), ""))
    column = cmd.def_
    if current is None or column.raw_default is not None or column.typeName is None:
        return False
    new_type = column.typeName.names[-1].sval
    if new_type == "text":
        return True
    if new_type != "varchar":
        return False
    if not column.typeName.typmods:
        return True
    if current.group(1) is None:
        return False  # unbounded to bounded: every row is checked
    return column.typeName.typmods[0].val.ival >= int(current.group(1))


# Plans -------------------------------------------------------------------------------------------


def lint(script: str, *, catalog: Catalog | None = None, lock_timeout: bool = False,
         covered: dict[str, str] | None = None, size_unknown: str = "") -> tuple[list[Statement], bool]:
    """Every statement of `script` with its locks and findings; and whether squawk ran.
    `covered` maps a squawk rule to why it does not apply to how this script runs."""
    parsed = locks.parse(script)
    ctx = _Context(catalog or Catalog(), lock_timeout)
    if size_unknown:
        ctx.size_unknown = size_unknown
    statements = [Statement(p.text, [p.lock], _console_checks(p, ctx)) for p in parsed]
    for statement in statements:
        for finding in statement.findings:
            if covered and finding.rule in covered:
                finding.covered = covered[finding.rule]
    found = squawk(script)
    for line, finding in _squawk_findings(found or []):
        index = max([i for i, p in enumerate(parsed) if p.line <= line] or [0])
        if covered and finding.rule in covered:
            finding.covered = covered[finding.rule]
        elif parsed and ctx.is_new(getattr(parsed[index].stmt, "relation", None)):
            finding.covered = "the table is created by the same revision: nobody uses it yet"
        if statements:
            statements[index].findings.append(finding)
    return statements, found is not None


# What the console's DDL runs under makes some of squawk's rules moot for a change's statements.
CHANGE_COVERED = {
    "prefer-robust-stmts": "each operation looks in the catalog first and does nothing twice (console/pg/ddl.py)",
    "ban-drop-constraint": "it drops the helper CHECK only, once SET NOT NULL holds the same guarantee",
    "require-lock-timeout": "the console runs it under lock_timeout and retries",
}


def _preamble() -> str:
    # What lock_retry sets for every DDL statement: squawk should see it too.
    return (f"SET lock_timeout = '{int(settings.DDL_LOCK_TIMEOUT_MS)}ms';\n"
            f"SET statement_timeout = '{int(settings.DDL_STATEMENT_TIMEOUT_MS)}ms';\n")


def _backfill_statement(spec) -> Statement:
    rendered = spec.render()
    sample = rendered.replace("%(after)s", "0").replace("%(upto)s", "0")
    return Statement(rendered, locks.locks_in(sample), note=(
        "in keyset batches over the primary key, each its own short transaction (%(after)s and %(upto)s "
        "bound per batch); row locks on one batch at a time"))


def change_plan(change) -> tuple[list[StagePlan], bool]:
    """The change's stages with each statement as console/pg/ddl.py renders it (the text apply()
    runs), its locks and its findings; and whether squawk ran."""
    stages = change.stages()
    script, owners = _preamble(), []
    for index, stage in enumerate(stages):
        for op in stage.ops:
            owners.append((index, op, script.count("\n")))
            script += ddl.render(op) + "\n"
    # Without the target's catalog, so that what an approver is shown does not move with the
    # table's size (the page shows the size apart); the plan's own steps prove SET NOT NULL.
    parsed_statements, squawk_ran = lint(script, lock_timeout=True, covered=CHANGE_COVERED,
                                         size_unknown="its size: see the table now")
    parsed = locks.parse(script)
    plans = [StagePlan(stage.name, []) for stage in stages]
    for index, stage in enumerate(stages):
        if stage.backfill is not None:
            plans[index].statements.append(_backfill_statement(stage.backfill))
            plans[index].note = "the backfill engine's job (pages under /migrations/backfills/)"
    for index, op, first_line in owners:
        next_lines = [line for _i, _op, line in owners if line > first_line]
        last_line = min(next_lines) if next_lines else 10**9
        mine = [s for s, p in zip(parsed_statements, parsed) if first_line <= p.line < last_line]
        rendered = ddl.render(op)
        plans[index].statements.append(Statement(
            rendered, [lk for s in mine for lk in s.locks], [f for s in mine for f in s.findings],
            note=_op_note(op)))
    return plans, squawk_ran


def _op_note(op) -> str:
    if ddl.OPERATIONS[op.kind].autocommit:
        return "in a session of its own, outside a transaction; under lock_timeout, retried on 55P03"
    return "in one short transaction, under lock_timeout, retried on 55P03"


@dataclass
class RevisionPlan:
    revision: str  # "0002 -> 0003"
    statements: list[Statement]
    staged: object = None  # tenants.migrator.StagedRevision, when the revision is a stage of a staged change

    @property
    def flagged(self) -> list[tuple[Statement, Finding]]:
        return [(s, f) for s in self.statements for f in s.flagged]


# A staged revision (tenants/app_schema/staged.py) runs console/pg/ddl.py's operations, as a change does.
STAGED_COVERED = {
    **CHANGE_COVERED,
    "set-not-null-scan": "a staged revision's SET NOT NULL runs only once a validated CHECK (column IS NOT NULL) "
                         "proves the column: console/pg/ddl.py refuses it otherwise",
    "adding-not-nullable-field": "a validated CHECK (column IS NOT NULL) proves the column first, so SET NOT NULL "
                                 "does not scan the table",
}


def app_plan(script: str, catalog: Catalog | None = None, staged: set[str] | None = None) -> tuple[list[RevisionPlan], bool]:
    """The application's pending SQL (tenants.migrator.pending_sql) split per revision, each
    linted apart: a table created by an earlier revision already holds the tenant's rows. The
    `staged` revisions are linted as they run: under lock_timeout, retried, idempotent."""
    revisions, squawk_ran = [], False
    for name, chunk in _revisions(script):
        is_staged = name.split("->")[-1].strip() in (staged or set())
        try:
            statements, ran = lint(chunk, catalog=catalog, lock_timeout=is_staged,
                                   covered=STAGED_COVERED if is_staged else None)
        except ParseError as exc:
            statements, ran = [Statement(chunk, [], [Finding("console", "parse-error", str(exc))])], False
        squawk_ran = squawk_ran or ran
        revisions.append(RevisionPlan(name, statements))
    return revisions, squawk_ran


def _revisions(script: str) -> list[tuple[str, str]]:
    """(name, SQL) per revision, from Alembic's "-- Running upgrade A -> B" markers."""
    marker = "-- Running upgrade "
    parts, name, lines = [], "", []
    for line in script.splitlines():
        if line.startswith(marker):
            if name and any(s.strip() for s in lines):
                parts.append((name, "\n".join(lines)))
            name, lines = line.removeprefix(marker).strip(), []
            continue
        if name and line.strip() in ("BEGIN;", "COMMIT;"):
            continue  # each revision's own transaction; Alembic prints them between the markers
        lines.append(line)
    if name and any(s.strip() for s in lines):
        parts.append((name, "\n".join(lines)))
    return parts
