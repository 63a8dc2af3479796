"""The managed application (an Alembic project with a few revisions, its metadata equal to what
the revisions build, its location a setting) and the Tenant model."""

import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from sqlalchemy import text

from console import engines
from console.pg import tenancy
from tenants import migrator
from tenants.app_schema.metadata import metadata
from tenants.models import RESERVED_SLUGS, Tenant, validate_tenant_slug


@pytest.fixture
def fresh_migrator():
    for cached in (migrator.script_directory, migrator.metadata, migrator.metadata_in):
        cached.cache_clear()
    yield
    for cached in (migrator.script_directory, migrator.metadata, migrator.metadata_in):
        cached.cache_clear()


def test_it_ships_the_document_application_as_alembic_revisions():
    script = migrator.script_directory()
    revisions = [rev.revision for rev in script.walk_revisions()]
    assert revisions[-3:] == ["0003", "0002", "0001"] and migrator.head() == revisions[0]
    tables = metadata.tables
    assert set(tables) == {"tenants", "users", "folders", "documents", "document_versions"}
    documents = tables["documents"]
    assert {fk.target_fullname for fk in documents.foreign_keys} == {"tenants.tenant_id", "folders.id", "users.id"}
    assert {index.name for index in documents.indexes} >= {"ix_documents_active_title", "ix_documents_tenant_id_folder_id"}
    assert any(c.name == "uq_document_versions_document_id_version_number" for c in tables["document_versions"].constraints)
    assert all("tenant_id" in table.columns for table in tables.values())


def test_it_builds_exactly_the_metadata_with_the_revisions_and_from_the_command_line(db, demo_targets, fleet):
    """The revisions, run by the `alembic` command line (env.py), give a schema with no drift."""
    primary = demo_targets["demo-primary"]
    schema = f"tenant_cli_{uuid.uuid4().hex[:6]}"
    with engines.connect(primary, credential="change") as conn:
        tenancy.create_schema(conn, schema, "test")
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(fleet.port("primary")), "PGUSER": "fleet_owner",
           "PGPASSWORD": fleet.owner_password, "PGDATABASE": "demo"}
    subprocess.run([sys.executable, "-m", "alembic", "-c", "tenants/app_schema/alembic.ini", "-x", f"schema={schema}",
                    "upgrade", "head"], env=env, check=True, capture_output=True)
    with engines.connect(primary, credential="change", rollback=True) as conn:
        assert migrator.current_version(conn, schema) == migrator.head()  # staged revisions included
        assert migrator.drift(conn, schema) == []
    bad = subprocess.run([sys.executable, "-m", "alembic", "-c", "tenants/app_schema/alembic.ini", "-x",
                          "schema=x; DROP SCHEMA public", "upgrade", "head"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "plain lowercase identifier" in bad.stderr


def test_it_manages_another_application_from_the_script_location_setting(db, demo_targets, tmp_path, fresh_migrator):
    (tmp_path / "versions").mkdir()
    (tmp_path / "other_app_meta.py").write_text(textwrap.dedent("""
        from sqlalchemy import Column, Integer, MetaData, Table
        metadata = MetaData()
        Table("invoices", metadata, Column("id", Integer, primary_key=True))
    """))
    (tmp_path / "versions" / "a1_invoices.py").write_text(textwrap.dedent("""
        import sqlalchemy as sa
        from alembic import op
        revision, down_revision, branch_labels, depends_on = "a1", None, None, None
        def upgrade():
            op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True))
    """))
    sys.path.insert(0, str(tmp_path))
    schema = f"tenant_other_{uuid.uuid4().hex[:6]}"
    try:
        with override_settings(TENANT_ALEMBIC_SCRIPT_LOCATION=str(tmp_path), TENANT_ALEMBIC_METADATA="other_app_meta:metadata"):
            assert migrator.head() == "a1"
            with engines.connect(demo_targets["demo-primary"], credential="change") as conn:
                tenancy.create_schema(conn, schema, "test")
            with engines.session(demo_targets["demo-primary"]) as conn:
                tenancy.bind_session(conn, schema=schema, tenant_key=None)
                assert migrator.upgrade(conn, schema) == ("", "a1")
                assert tenancy.tables_in_schema(conn, schema) == ["alembic_version", "invoices"]
                assert migrator.drift(conn, schema) == []
    finally:
        sys.path.remove(str(tmp_path))
    with engines.connect(demo_targets["demo-primary"], credential="change") as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.mark.parametrize("slug", ["acme", "a", "acme_2026", "a" * 40, "t0_x"])
def test_it_accepts_plain_slugs(slug):
    validate_tenant_slug(slug)


def test_it_refuses_reserved_and_malformed_slugs():
    for slug in [*RESERVED_SLUGS, "pg_x", "a" * 41, "Acme", "_acme", "9lives", "a-b", "a b", "ä"]:
        with pytest.raises(ValidationError):
            validate_tenant_slug(slug)


def test_it_keeps_name_slug_target_strategy_state_and_creator(db, demo_targets, users):
    tenant = Tenant.objects.create(name="Acme Inc", slug="acme", target=demo_targets["demo-primary"],
                                   created_by=users["operator"])
    tenant.full_clean()
    assert tenant.strategy == Tenant.Strategy.SCHEMA and tenant.state == Tenant.State.PENDING
    assert set(Tenant.Strategy.values) == {"schema", "database", "shared"}
    assert set(Tenant.State.values) == {"pending", "provisioning", "active", "failed", "offboarding", "archived"}
    assert (tenant.schema_name, tenant.database_name) == ("tenant_acme", None)
    tenant.strategy = Tenant.Strategy.DATABASE
    assert (tenant.schema_name, tenant.database_name) == ("public", "tenant_acme")
    tenant.strategy = Tenant.Strategy.SHARED
    assert (tenant.schema_name, tenant.database_name) == ("tenant_shared", None)
    assert tenant.created_by == users["operator"]
