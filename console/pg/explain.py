"""EXPLAIN of one statement an operator typed: plan only unless ANALYZE is asked for, always in a
READ ONLY transaction that is rolled back, as the target's monitor role.

Defence in depth, each layer enough on its own against a second statement:
- PostgreSQL's own parser (pglast, libpg_query) must find exactly one statement of a kind EXPLAIN
  takes; ANALYZE (which runs the statement) only for a plain query;
- the statement goes over the extended query protocol, where the server itself refuses a second;
- the monitor role cannot read server files, run programs or write (and the transaction is
  READ ONLY and rolled back).
"""

import hashlib
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor
from sqlalchemy import text
from sqlalchemy.engine import Connection

EXPLAINABLE = {
    ast.SelectStmt: "SELECT",  # also VALUES, TABLE and WITH ... SELECT
    ast.InsertStmt: "INSERT",
    ast.UpdateStmt: "UPDATE",
    ast.DeleteStmt: "DELETE",
    ast.MergeStmt: "MERGE",
}
WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
# The monitor role holds pg_signal_backend for the console's own cancel/terminate buttons (which
# are audited and can be switched off): EXPLAIN ANALYZE must not become a way around them.
REFUSED_UNDER_ANALYZE = frozenset({"pg_cancel_backend", "pg_terminate_backend"})
AUDIT_PREVIEW_CHARS = 2000


class NotOneStatement(ValueError):
    """The text is not exactly one statement EXPLAIN (or EXPLAIN ANALYZE) may run."""


@dataclass(frozen=True)
class Statement:
    text: str
    kind: str


class _Found(Visitor):
    def __init__(self):
        self.writes, self.functions, self.select_into = [], set(), False

    def visit(self, ancestors, node):
        if isinstance(node, WRITES):
            self.writes.append(type(node).__name__)
        elif isinstance(node, ast.FuncCall):
            self.functions.add(node.funcname[-1].sval.lower())
        elif isinstance(node, ast.SelectStmt) and node.intoClause is not None:
            self.select_into = True


def check(sql_text: str, analyze: bool = False) -> Statement:
    """The one statement in `sql_text`, or NotOneStatement saying what is wrong with it."""
    if "\x00" in sql_text:
        raise NotOneStatement("The statement contains a NUL byte: remove it.")
    try:
        parsed = parse_sql(sql_text)
    except ParseError as exc:
        raise NotOneStatement(f"PostgreSQL cannot parse this: {exc}.") from None
    if not parsed:
        raise NotOneStatement("Enter a statement to explain.")
    if len(parsed) > 1:
        raise NotOneStatement(f"Only one statement can be explained at a time (found {len(parsed)}).")
    raw = parsed[0]
    kind = EXPLAINABLE.get(type(raw.stmt))
    if kind is None:
        name = type(raw.stmt).__name__.removesuffix("Stmt")
        raise NotOneStatement(
            f"EXPLAIN takes SELECT, VALUES, TABLE, INSERT, UPDATE, DELETE, MERGE or WITH; this is {name}."
        )
    found = _Found()
    found(raw.stmt)
    if found.select_into:
        raise NotOneStatement("SELECT INTO creates a table: explain the SELECT without INTO.")
    if analyze:
        if kind != "SELECT" or found.writes:
            raise NotOneStatement(
                "EXPLAIN ANALYZE runs the statement, so it is offered for queries only (SELECT, VALUES, "
                "TABLE, or WITH of them). Untick ANALYZE to see the plan of a write."
            )
        if refused := sorted(found.functions & REFUSED_UNDER_ANALYZE):
            raise NotOneStatement(f"EXPLAIN ANALYZE would call {', '.join(refused)}: use the session buttons.")
    return Statement(text=_statement_text(sql_text, raw), kind=kind)


def _statement_text(sql_text: str, raw) -> str:
    """The statement itself, without the trailing semicolon (locations are byte offsets)."""
    encoded = sql_text.encode()
    start = raw.stmt_location or 0
    end = start + raw.stmt_len if raw.stmt_len else len(encoded)
    return encoded[start:end].decode().strip()


def explain(conn: Connection, sql_text: str, analyze: bool = False) -> list[str]:
    statement = check(sql_text, analyze)
    conn.execute(text("SET TRANSACTION READ ONLY"))
    options = "ANALYZE, BUFFERS, VERBOSE" if analyze else "VERBOSE"
    # binary=True makes psycopg use the extended protocol even without parameters (the simple
    # protocol runs every statement of a string); no parameters, so the text is sent as it is.
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN ({options}) {statement.text}", binary=True)
        return [row[0] for row in cursor.fetchall()]


def audit_detail(sql_text: str) -> dict:
    """What the audit keeps of an operator's statement: all of it, with its SHA-256, so padding
    cannot hide a payload (JSON cannot hold NUL: shown as \\x00)."""
    return {
        "sql": sql_text.replace("\x00", "\\x00"),
        "sql_sha256": hashlib.sha256(sql_text.encode("utf-8", "surrogateescape")).hexdigest(),
        "sql_chars": len(sql_text),
    }
