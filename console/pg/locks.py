"""The table lock a statement takes, read from its parse tree (pglast, PostgreSQL's own parser).

The levels are those of PostgreSQL's "Explicit Locking" table (13.3.1): which lock each command
acquires, and so which other sessions' work it blocks while it waits and while it holds it.
`brief` says the lock is held only for a catalog change (no scan, no rewrite), so with a short
lock_timeout it costs the application a blink; otherwise it is held while the table is scanned or
rewritten. Nothing here connects to a database.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.parser import ParseError

ACCESS_SHARE = "ACCESS SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
NONE = "none"

# What each level blocks of ordinary application work.
BLOCKS = {
    NONE: "nothing",
    ACCESS_SHARE: "only ACCESS EXCLUSIVE (DDL that rewrites or drops)",
    ROW_EXCLUSIVE: "SHARE and stronger (CREATE INDEX, ...); reads and writes go on",
    SHARE_UPDATE_EXCLUSIVE: "other schema changes and VACUUM; reads and writes go on",
    SHARE: "writes (INSERT, UPDATE, DELETE); reads go on",
    SHARE_ROW_EXCLUSIVE: "writes and other schema changes; reads go on",
    ACCESS_EXCLUSIVE: "everything, reads included",
}
# Strength order, for "the strongest lock of a statement".
ORDER = [NONE, ACCESS_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE]
STRONG = frozenset({SHARE, SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE})  # they block writes


@dataclass(frozen=True)
class Lock:
    level: str
    what: str  # the command, e.g. "ALTER TABLE ... VALIDATE CONSTRAINT"
    table: str = ""  # schema.table or table, as written
    brief: bool = False  # held only for a catalog change

    @property
    def blocks(self) -> str:
        return BLOCKS[self.level]

    def describe(self) -> str:
        return f"{self.level}{' (brief)' if self.brief else ''}"


def _name(relation) -> str:
    if relation is None:
        return ""
    return f"{relation.schemaname}.{relation.relname}" if relation.schemaname else relation.relname


def _alter_cmd(cmd: ast.AlterTableCmd) -> tuple[str, str, bool]:
    """(level, what, brief) of one ALTER TABLE subcommand."""
    subtype = AlterTableType(cmd.subtype)
    if subtype == AlterTableType.AT_AddColumn:
        return ACCESS_EXCLUSIVE, "ADD COLUMN", True  # brief unless a volatile default rewrites (checked apart)
    if subtype == AlterTableType.AT_AddConstraint:
        constraint = cmd.def_
        kind = ConstrType(constraint.contype)
        not_valid = bool(constraint.skip_validation)
        if kind == ConstrType.CONSTR_FOREIGN:
            # On both tables; NOT VALID skips the scan of existing rows.
            return SHARE_ROW_EXCLUSIVE, "ADD FOREIGN KEY" + (" NOT VALID" if not_valid else ""), not_valid
        label = {ConstrType.CONSTR_CHECK: "CHECK", ConstrType.CONSTR_UNIQUE: "UNIQUE",
                 ConstrType.CONSTR_PRIMARY: "PRIMARY KEY"}.get(kind, kind.name.removeprefix("CONSTR_"))
        return ACCESS_EXCLUSIVE, f"ADD CONSTRAINT {label}" + (" NOT VALID" if not_valid else ""), not_valid
    if subtype == AlterTableType.AT_ValidateConstraint:
        return SHARE_UPDATE_EXCLUSIVE, "VALIDATE CONSTRAINT", False
    if subtype == AlterTableType.AT_SetNotNull:
        return ACCESS_EXCLUSIVE, "ALTER COLUMN SET NOT NULL", False  # brief only with a validated CHECK (checked apart)
    if subtype == AlterTableType.AT_DropNotNull:
        return ACCESS_EXCLUSIVE, "ALTER COLUMN DROP NOT NULL", True
    if subtype == AlterTableType.AT_DropConstraint:
        return ACCESS_EXCLUSIVE, "DROP CONSTRAINT", True
    if subtype == AlterTableType.AT_AlterColumnType:
        return ACCESS_EXCLUSIVE, "ALTER COLUMN TYPE", False
    if subtype == AlterTableType.AT_ColumnDefault:
        return ACCESS_EXCLUSIVE, "ALTER COLUMN SET/DROP DEFAULT", True
    if subtype == AlterTableType.AT_DropColumn:
        return ACCESS_EXCLUSIVE, "DROP COLUMN", True
    if subtype in (AlterTableType.AT_SetStatistics, AlterTableType.AT_SetRelOptions, AlterTableType.AT_ResetRelOptions,
                   AlterTableType.AT_ClusterOn, AlterTableType.AT_DropCluster):
        return SHARE_UPDATE_EXCLUSIVE, subtype.name.removeprefix("AT_"), True
    if subtype in (AlterTableType.AT_EnableTrig, AlterTableType.AT_DisableTrig):
        return SHARE_ROW_EXCLUSIVE, subtype.name.removeprefix("AT_"), True
    return ACCESS_EXCLUSIVE, subtype.name.removeprefix("AT_"), False


def lock_of(stmt) -> Lock:
    """The strongest table lock one parsed statement takes."""
    if isinstance(stmt, ast.AlterTableStmt):
        found = [_alter_cmd(cmd) for cmd in stmt.cmds or ()]
        level, what, brief = max(found, key=lambda f: ORDER.index(f[0])) if found else (ACCESS_EXCLUSIVE, "", False)
        return Lock(level, "ALTER TABLE " + ", ".join(f[1] for f in found), _name(stmt.relation),
                    all(f[2] for f in found))
    if isinstance(stmt, ast.IndexStmt):
        if stmt.concurrent:
            return Lock(SHARE_UPDATE_EXCLUSIVE, "CREATE INDEX CONCURRENTLY", _name(stmt.relation))
        return Lock(SHARE, "CREATE INDEX", _name(stmt.relation))
    if isinstance(stmt, ast.DropStmt):
        what = "DROP " + ObjectType(stmt.removeType).name.removeprefix("OBJECT_")
        if stmt.concurrent:
            return Lock(SHARE_UPDATE_EXCLUSIVE, what + " CONCURRENTLY", brief=True)
        return Lock(ACCESS_EXCLUSIVE, what, brief=True)
    if isinstance(stmt, (ast.UpdateStmt, ast.InsertStmt, ast.DeleteStmt, ast.MergeStmt)):
        return Lock(ROW_EXCLUSIVE, type(stmt).__name__.removesuffix("Stmt").upper(), _name(stmt.relation))
    if isinstance(stmt, ast.SelectStmt):
        return Lock(ACCESS_SHARE, "SELECT")
    if isinstance(stmt, ast.CreateStmt):
        return Lock(NONE, "CREATE TABLE (a new table: nobody uses it yet)", _name(stmt.relation))
    if isinstance(stmt, ast.VacuumStmt):
        return Lock(SHARE_UPDATE_EXCLUSIVE, "VACUUM / ANALYZE")
    if isinstance(stmt, (ast.TransactionStmt, ast.VariableSetStmt, ast.CommentStmt, ast.CreateSchemaStmt)):
        return Lock(NONE, type(stmt).__name__.removesuffix("Stmt"))
    return Lock(ACCESS_EXCLUSIVE, type(stmt).__name__.removesuffix("Stmt") + " (assumed)")


@dataclass(frozen=True)
class Parsed:
    text: str  # the statement's own text, without its semicolon
    stmt: object  # its pglast parse tree
    lock: Lock
    line: int  # 0-based line of the script where it starts


def parse(script: str) -> list[Parsed]:
    """Every statement of `script` with its lock and where it starts. ParseError if PostgreSQL's
    parser refuses the script."""
    encoded = script.encode()
    statements = []
    for raw in parse_sql(script):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(encoded)
        chunk = encoded[start:end].decode()
        # The location includes comments and blank lines before the statement itself.
        leading = len(chunk) - len(chunk.lstrip())
        body = chunk.strip()
        while body.startswith("--"):
            _comment, _, rest = body.partition("\n")
            leading += len(body) - len(rest)
            body = rest.lstrip()
            leading += len(rest) - len(body)
        line = encoded[:start].decode().count("\n") + chunk[:leading].count("\n")
        statements.append(Parsed(body, raw.stmt, lock_of(raw.stmt), line))
    return statements


def locks_in(script: str) -> list[Lock]:
    """The lock of each statement of `script`; [] when it does not parse."""
    try:
        return [p.lock for p in parse(script)]
    except ParseError:
        return []
