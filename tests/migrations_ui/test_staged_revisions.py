"""The application's staged revisions (tenants/app_schema/staged.py): each stage one Alembic
revision running console/pg/ddl.py's lock-safe operations; the demo application ships two staged
changes pending after onboarding; the generator writes such revisions."""

import io
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from django.core.management import call_command
from django.test import override_settings
from sqlalchemy import text

from console import engines
from console.pg import tenancy
from tenants import migrator, onboarding

STATUS_STAGES = ["0004", "0005", "0006", "0007"]
FK_STAGES = ["0008", "0009"]


@pytest.fixture
def schema(demo_targets):
    """A schema tenant's location on the demo primary at the last unstaged revision, with rows."""
    primary = demo_targets["demo-primary"]
    name = f"tenant_stg_{uuid.uuid4().hex[:6]}"
    with engines.connect(primary, credential="change") as conn:
        tenancy.create_schema(conn, name, "test")
    onboarding.migrate_location(primary, None, name, "acme", revision="0003")
    with engines.connect(primary, credential="change") as conn:
        tenancy.bind(conn, schema=name, tenant_key="acme")
        conn.execute(text("INSERT INTO tenants (tenant_id, name) VALUES ('acme', 'Acme')"))
        conn.execute(text("INSERT INTO users (id, email, full_name) VALUES (1, 'a@example.com', 'A')"))
        conn.execute(text("INSERT INTO folders (id, name) VALUES (1, 'Root')"))
        conn.execute(text("INSERT INTO documents (id, folder_id, owner_id, title, deleted_at)"
                          " SELECT g, 1, 1, 'doc ' || g, CASE WHEN g % 3 = 0 THEN now() END FROM generate_series(1, 2500) g"))
    yield name
    with engines.connect(primary, credential="change") as conn:
        tenancy.drop_schema(conn, name)


def _facts(primary, schema):
    with engines.connect(primary, credential="change", rollback=True) as conn:
        def one(query, **params):
            return conn.execute(text(query), {"s": schema, **params}).all()
        return {
            "version": migrator.current_version(conn, schema),
            "status": one("SELECT attnotnull FROM pg_attribute WHERE attrelid = (:s || '.documents')::regclass"
                          " AND attname = 'status'"),
            "constraints": dict(one("SELECT conname, convalidated FROM pg_constraint WHERE conrelid IN"
                                    " ((:s || '.documents')::regclass, (:s || '.document_versions')::regclass)"
                                    " AND conname IN ('documents_status_not_null', 'fk_document_versions_reviewed_by_users')")),
            "statuses": dict(one(f'SELECT to_jsonb(d) ->> \'status\', count(*) FROM "{schema}".documents d GROUP BY 1')),
            "index_valid": one("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                               " JOIN pg_namespace n ON n.oid = c.relnamespace"
                               " WHERE n.nspname = :s AND c.relname = 'document_versions_reviewed_by_idx'"),
            "drift": migrator.drift(conn, schema),
        }


def test_it_ships_two_staged_changes_pending_after_the_unstaged_revisions():
    staged = migrator.staged_revisions()
    assert [(s.revision, s.stage) for s in staged] == [
        ("0004", "expand"), ("0005", "backfill"), ("0006", "validate"), ("0007", "contract"),
        ("0008", "expand"), ("0009", "validate")]
    assert {s.change_name for s in staged} == {"documents_status_add_not_null_column",
                                                "document_versions_reviewed_by_add_foreign_key"}
    assert migrator.head() == "0009"
    # Onboarding and "migrate all" stop before the first staged revision not rolled out everywhere.
    assert migrator.release_revision(set()) == "0003"
    assert migrator.release_revision({"0004", "0005"}) == "0005"
    assert migrator.release_revision(set(STATUS_STAGES + FK_STAGES)) == "0009"


def test_it_renders_each_stage_with_ddls_statements_and_the_autocommit_parts_outside_the_transaction():
    sql = migrator.pending_sql("tenant", "0003", "0009")
    assert 'ALTER TABLE "tenant"."documents" ADD COLUMN IF NOT EXISTS "status" varchar(20);' in sql
    validate = 'ALTER TABLE "tenant"."documents" VALIDATE CONSTRAINT "documents_status_not_null";'
    # VALIDATE and CREATE INDEX CONCURRENTLY sit after a COMMIT, outside the revision's transaction.
    concurrently = 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "document_versions_reviewed_by_idx"'
    for statement in (validate, concurrently):
        earlier = [line for line in sql.split(statement)[0].splitlines() if line in ("BEGIN;", "COMMIT;")]
        assert earlier[-1] == "COMMIT;", statement
    assert "NOT VALID;" in sql and 'SET NOT NULL;' in sql
    assert '"id" > $1 AND "id" <= $2 AND ("status" IS NULL)' in sql  # the backfill's batch


def test_it_runs_every_stage_in_turn_and_alembic_current_agrees(demo_targets, schema, fleet):
    primary = demo_targets["demo-primary"]
    assert _facts(primary, schema)["drift"] == []  # the pending staged changes are not drift
    seen = {}
    for revision in STATUS_STAGES + FK_STAGES:
        before, after, _ms, _pid = onboarding.migrate_location(primary, None, schema, revision=revision,
                                                               expected_from=str(int(revision) - 1).zfill(4))
        assert after == revision
        seen[revision] = _facts(primary, schema)
        assert seen[revision]["drift"] == [], revision
    assert seen["0004"]["status"] == [(False,)] and seen["0004"]["statuses"] == {None: 2500}
    assert seen["0005"]["statuses"] == {"active": 1667, "deleted": 833}
    assert seen["0006"]["constraints"] == {"documents_status_not_null": True}
    assert seen["0007"]["status"] == [(True,)] and seen["0007"]["constraints"] == {}
    assert seen["0008"]["index_valid"] == [(True,)]
    assert seen["0008"]["constraints"] == {"fk_document_versions_reviewed_by_users": False}
    assert seen["0009"]["constraints"] == {"fk_document_versions_reviewed_by_users": True}
    # Running a stage again does nothing: the schema is past it.
    assert onboarding.migrate_location(primary, None, schema, revision="0006")[:2] == ("0009", "0009")
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(fleet.port("primary")), "PGUSER": "fleet_owner",
           "PGPASSWORD": fleet.owner_password, "PGDATABASE": "demo"}
    current = subprocess.run([sys.executable, "-m", "alembic", "-c", "tenants/app_schema/alembic.ini", "-x",
                              f"schema={schema}", "current"], env=env, check=True, capture_output=True, text=True)
    assert current.stdout.split()[0] == "0009"


def test_it_refuses_a_stage_for_a_schema_not_right_before_it(demo_targets, schema):
    with pytest.raises(migrator.MigratorError, match="not at 0005"):
        onboarding.migrate_location(demo_targets["demo-primary"], None, schema, revision="0006", expected_from="0005")
    assert _facts(demo_targets["demo-primary"], schema)["version"] == "0003"


def test_it_writes_a_staged_change_as_one_revision_per_stage(tmp_path):
    app = tmp_path / "app_schema"
    shutil.copytree(migrator.settings.TENANT_ALEMBIC_SCRIPT_LOCATION, app, ignore=shutil.ignore_patterns("__pycache__"))
    migrator.script_directory.cache_clear()
    try:
        with override_settings(TENANT_ALEMBIC_SCRIPT_LOCATION=str(app)):
            out = io.StringIO()
            call_command("staged_revision", "set_not_null", "documents", "content", "--backfill", "''", stdout=out)
            assert "4 staged revision(s) after 0009" in out.getvalue()
            staged = migrator.staged_revisions()
            assert [(s.revision, s.stage) for s in staged[-4:]] == [
                ("0010", "expand"), ("0011", "backfill"), ("0012", "validate"), ("0013", "contract")]
            assert migrator.head() == "0013"
            sql = migrator.pending_sql("t", "0009", "0013")
            assert 'ADD CONSTRAINT "documents_content_not_null" CHECK ("content" IS NOT NULL) NOT VALID' in sql
            with pytest.raises(Exception, match="not one SQL expression"):
                call_command("staged_revision", "set_not_null", "documents", "title", "--backfill", "'x' 'y' z(")
    finally:
        migrator.script_directory.cache_clear()


def test_it_waits_at_most_lock_timeout_per_try_in_a_revision_and_names_the_blocker(demo_targets, schema, fleet):
    from django.test import override_settings

    from console.pg.lock_retry import LockRetriesExhausted
    from tests.servers import superuser

    primary = demo_targets["demo-primary"]
    with superuser(fleet) as holder:  # a reader in an open transaction: ADD COLUMN needs ACCESS EXCLUSIVE
        holder.autocommit = False
        holder.execute(f'SELECT count(*) FROM "{schema}".documents')
        pid = holder.info.backend_pid
        with override_settings(DDL_LOCK_TIMEOUT_MS=200, DDL_LOCK_RETRIES=1, DDL_LOCK_BACKOFF_S=0.05):
            with pytest.raises(LockRetriesExhausted, match=rf"gave up after 2 tries of 200 ms.*pid {pid}"):
                onboarding.migrate_location(primary, None, schema, revision="0004", expected_from="0003")
        assert _facts(primary, schema)["version"] == "0003" and _facts(primary, schema)["status"] == []
        holder.rollback()
    assert onboarding.migrate_location(primary, None, schema, revision="0004", expected_from="0003")[1] == "0004"
