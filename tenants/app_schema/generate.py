"""Writing staged revisions: one Alembic revision file per stage of a change, chained after the
application's head (`manage.py staged_revision`). The files call the helpers of staged.py, so
what they run is decided there, not in the generated text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from migrations_ui import staging
from tenants.app_schema import staged

NUMBERED = re.compile(r"^\d{4,}$")
SLUG = re.compile(r"[^a-z0-9]+")

TEMPLATE = '''"""{title}: stage {number} of {count}, {stage}

Revision ID: {revision}
Revises: {down_revision}
Staged change: {change_name} (tenants/app_schema/staged.py); rolled out stage by stage by the console.
"""

from tenants.app_schema import staged

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None

CHANGE = {call}
STAGE = {stage!r}


def upgrade():
    staged.upgrade(CHANGE, STAGE)


def downgrade():
    staged.downgrade(CHANGE, STAGE)
'''


@dataclass(frozen=True)
class Written:
    revision: str
    stage: str
    path: Path


def helper_call(kind: str, table: str, columns: list[str], *, column_type: str = "", backfill: str = "",
                references: str = "", pk: str = "id") -> tuple[str, staging.Definition]:
    """The helper call as Python source, and the change it makes (built now: a bad name, type
    or expression is refused before any file is written)."""
    if kind == staging.ADD_NOT_NULL_COLUMN:
        args = [table, _one(columns), column_type]
        kwargs = {"backfill": backfill, **({"pk": pk} if pk != "id" else {})}
    elif kind == staging.SET_NOT_NULL:
        args, kwargs = [table, _one(columns)], {"backfill": backfill, **({"pk": pk} if pk != "id" else {})}
    elif kind == staging.ADD_FOREIGN_KEY:
        ref_table, _, ref_column = references.partition(".")
        if not ref_table or not ref_column:
            raise ValueError("--references TABLE.COLUMN names what the foreign key points to, e.g. users.id")
        args = [table, _one(columns), ref_table, ref_column]
        kwargs = {"column_type": column_type} if column_type else {}
    elif kind == staging.ADD_INDEX:
        if not columns:
            raise ValueError("name at least one column of the index")
        args, kwargs = [table, *columns], {}
    else:
        raise ValueError(f"no kind of staged change {kind!r}; known: {', '.join(staging.KINDS)}")
    definition = getattr(staged, "add_index" if kind == staging.ADD_INDEX else kind)(*args, **kwargs)
    for stage in definition.stages("public"):  # every operation validates its names now
        for each in stage.ops:
            staged.ddl.render(each)
    source = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    helper = "add_index" if kind == staging.ADD_INDEX else kind
    return f"staged.{helper}({source})", definition


def _one(columns: list[str]) -> str:
    if len(columns) != 1:
        raise ValueError(f"this kind of change is on one column, not {len(columns)}")
    return columns[0]


def next_revisions(existing: list[str], count: int) -> list[str]:
    """Numbered like the application's revisions (0001, 0002, ...), after the highest number."""
    highest = max((int(r) for r in existing if NUMBERED.match(r)), default=0)
    width = max([4, *(len(r) for r in existing if NUMBERED.match(r))])
    return [str(highest + n).zfill(width) for n in range(1, count + 1)]


def write(versions_dir: Path, head: str, existing: list[str], call: str, definition: staging.Definition) -> list[Written]:
    stages = [s.name for s in definition.stages("public")]
    revisions = next_revisions(existing, len(stages))
    change_name = SLUG.sub("_", f"{definition.table} {definition.column or '_'.join(definition.index_columns)} "
                                f"{definition.kind}".lower()).strip("_")
    written, down = [], head or None
    for number, (stage, revision) in enumerate(zip(stages, revisions), start=1):
        path = versions_dir / f"{revision}_{change_name}_{stage}.py"
        if path.exists():
            raise ValueError(f"{path} exists already")
        source = TEMPLATE.format(title=definition.title(), number=number, count=len(stages), stage=stage,
                                 revision=revision, down_revision=down, change_name=change_name, call=call)
        try:  # the arguments reach the source through repr() only; checked once more before it is written
            compile(source, str(path), "exec")
        except SyntaxError as exc:
            for each in written:
                each.path.unlink(missing_ok=True)
            raise ValueError(f"the revision for stage {stage} would not be valid Python ({exc}); nothing written") from None
        path.write_text(source)
        written.append(Written(revision, stage, path))
        down = revision
    return written
