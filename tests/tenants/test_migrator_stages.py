"""The migrator runs stages: one transaction per revision, work outside any transaction in
Alembic's autocommit blocks, the pending SQL rendered offline exactly as it runs, one head only."""

import re
import sys
import textwrap
import uuid

import pytest
import sqlalchemy
from django.test import override_settings
from sqlalchemy import text

from console import engines
from console.pg import tenancy
from tenants import migrator, onboarding

REVISIONS = {
    "s1_items": '''
        import sqlalchemy as sa
        from alembic import op
        revision, down_revision, branch_labels, depends_on = "s1", None, None, None
        def upgrade():
            op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), sa.Column("owner_id", sa.Integer))
            op.execute("INSERT INTO items (id, owner_id) VALUES (1, 10), (2, NULL)")
    ''',
    "s2_concurrent_index": '''
        from alembic import op
        revision, down_revision, branch_labels, depends_on = "s2", "s1", None, None
        def upgrade():
            with op.get_context().autocommit_block():
                op.create_index("ix_items_owner_id", "items", ["owner_id"], postgresql_concurrently=True)
    ''',
    "s3_check_not_valid": '''
        from alembic import op
        revision, down_revision, branch_labels, depends_on = "s3", "s2", None, None
        def upgrade():
            op.execute("ALTER TABLE items ADD CONSTRAINT ck_items_owner_id_not_null CHECK (owner_id IS NOT NULL) NOT VALID")
    ''',
    "s4_validate": '''
        from alembic import op
        revision, down_revision, branch_labels, depends_on = "s4", "s3", None, None
        def upgrade():
            with op.get_context().autocommit_block():
                op.execute("ALTER TABLE items VALIDATE CONSTRAINT ck_items_owner_id_not_null")
    ''',
}
META = '''
    from sqlalchemy import Column, Integer, MetaData, Table
    metadata = MetaData()
    Table("items", metadata, Column("id", Integer, primary_key=True), Column("owner_id", Integer))
'''


@pytest.fixture
def staged_app(tmp_path):
    """A small managed application whose revisions need stages; s4 fails while a row is NULL."""
    (tmp_path / "versions").mkdir()
    module = f"staged_meta_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(META))
    for name, body in REVISIONS.items():
        (tmp_path / "versions" / f"{name}.py").write_text(textwrap.dedent(body))
    sys.path.insert(0, str(tmp_path))
    caches = (migrator.script_directory, migrator.metadata, migrator.metadata_in)
    for cached in caches:
        cached.cache_clear()
    try:
        with override_settings(TENANT_ALEMBIC_SCRIPT_LOCATION=str(tmp_path), TENANT_ALEMBIC_METADATA=f"{module}:metadata"):
            yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for cached in caches:
            cached.cache_clear()


_MADE: list[tuple[str | None, str]] = []


@pytest.fixture(autouse=True)
def _drop_locations(demo_targets):
    """Leave the demo database as it was: other tests count its tables."""
    yield
    primary = demo_targets["demo-primary"]
    while _MADE:
        database, schema = _MADE.pop()
        if database:
            engines.forget(primary.pk, database)
            with engines.autocommit(primary) as conn:
                tenancy.drop_database(conn, database)
        else:
            with engines.connect(primary, credential="change") as conn:
                tenancy.drop_schema(conn, schema)


def _location(kind: str, primary):
    """A fresh place to migrate: (database, schema) for a schema, a database or a shared tenant."""
    suffix = uuid.uuid4().hex[:6]
    if kind == "database":
        database = f"tenant_stg_{suffix}"
        with engines.autocommit(primary) as conn:
            tenancy.create_database(conn, database)
        _MADE.append((database, "public"))
        return database, "public"
    schema = f"tenant_stg_{suffix}" if kind == "schema" else f"shared_stg_{suffix}"
    with engines.connect(primary, credential="change") as conn:
        tenancy.create_schema(conn, schema, "test")
    _MADE.append((None, schema))
    return None, schema


def _index_valid(primary, database, schema) -> bool | None:
    with engines.connect(primary, credential="change", database=database, rollback=True) as conn:
        return conn.execute(text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'ix_items_owner_id' AND n.nspname = :s"
        ), {"s": schema}).scalar()


@pytest.mark.parametrize("kind", ["schema", "database", "shared"])
def test_it_commits_each_revision_and_runs_concurrent_work_outside_transactions(db, demo_targets, staged_app, kind):
    primary = demo_targets["demo-primary"]
    database, schema = _location(kind, primary)
    tenant_key = "acme" if kind == "shared" else None
    # s4 cannot validate while a row is NULL: s1..s3 stay done and recorded, s4 fails alone.
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="ck_items_owner_id_not_null"):
        onboarding.migrate_location(primary, database, schema, tenant_key)
    with engines.connect(primary, credential="change", database=database, rollback=True) as conn:
        assert migrator.current_version(conn, schema) == "s3"
    assert _index_valid(primary, database, schema) is True  # built CONCURRENTLY, outside any transaction
    with engines.connect(primary, credential="change", database=database) as conn:
        conn.execute(text(f'UPDATE "{schema}".items SET owner_id = 20 WHERE owner_id IS NULL'))
    before, after, _ms, _pid = onboarding.migrate_location(primary, database, schema, tenant_key)
    assert (before, after) == ("s3", "s4")
    with engines.connect(primary, credential="change", database=database, rollback=True) as conn:
        assert conn.execute(text("SELECT convalidated FROM pg_constraint WHERE conname = 'ck_items_owner_id_not_null'"
                                 " AND connamespace = CAST(:s AS regnamespace)"), {"s": schema}).scalar_one() is True
    # The session went back to the pool as it came: no search_path, no advisory lock left.
    with engines.session(primary, database=database) as conn:
        assert conn.execute(text("SHOW search_path")).scalar_one() == '"$user", public'
        assert conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")).scalar_one() == 0


def test_it_renders_the_pending_sql_offline_exactly_as_it_runs(db, demo_targets, staged_app):
    primary = demo_targets["demo-primary"]
    _database, schema = _location("schema", primary)
    preview = migrator.pending_sql(schema, "s1")
    assert "CREATE INDEX CONCURRENTLY ix_items_owner_id ON items (owner_id)" in preview
    assert "VALIDATE CONSTRAINT ck_items_owner_id_not_null" in preview
    # The concurrent index sits between transactions, not inside one.
    before_index = preview.split("CREATE INDEX CONCURRENTLY")[0]
    assert before_index.count("BEGIN;") == before_index.count("COMMIT;")
    with engines.session(primary) as conn:
        tenancy.bind_session(conn, schema=schema, tenant_key=None)
        migrator.upgrade(conn, schema, "s1")
    ran = []
    engine = engines.engine_for(primary, credential="change")
    listener = lambda conn, cursor, statement, params, context, many: ran.append(statement)  # noqa: E731
    sqlalchemy.event.listen(engine, "before_cursor_execute", listener)
    try:
        with engines.connect(primary, credential="change") as conn:
            conn.execute(text(f'UPDATE "{schema}".items SET owner_id = 20 WHERE owner_id IS NULL'))
        onboarding.migrate_location(primary, None, schema)
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", listener)
    assert _statements(preview) == [s for s in map(_normal, ran) if s in _statements(preview)]
    assert [s for s in _statements(preview) if not s.startswith("UPDATE")] == [
        s for s in map(_normal, ran) if s.startswith(("CREATE INDEX", "ALTER TABLE"))]


def _normal(statement: str) -> str:
    without_comments = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--"))
    return re.sub(r"\s+", " ", without_comments).strip().rstrip(";")


def _statements(rendered: str) -> list[str]:
    wanted = ("CREATE", "ALTER", "UPDATE", "INSERT")
    return [_normal(s) for s in rendered.split(";\n") if _normal(s).startswith(wanted) and "alembic_version" not in s]


def test_it_refuses_an_application_with_several_heads_clearly(db, staged_app):
    (staged_app / "versions" / "s2b_other_branch.py").write_text(textwrap.dedent('''
        revision, down_revision, branch_labels, depends_on = "s2b", "s1", None, None
        def upgrade():
            pass
    '''))
    migrator.script_directory.cache_clear()
    with pytest.raises(migrator.MigratorError, match=r"2 heads \(s2b, s4\).*alembic merge"):
        migrator.head()


def test_it_gives_a_session_its_own_timeouts_and_resets_them(demo_targets):
    primary = demo_targets["demo-primary"]
    primary.pool_size, primary.max_overflow = 1, 0  # the same pooled connection every time
    with engines.autocommit(primary, statement_timeout_ms=1234, lock_timeout_ms=567) as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "1234ms"
        assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "567ms"
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with engines.autocommit(primary) as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "5s"
