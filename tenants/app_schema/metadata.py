"""The application's tables as SQLAlchemy metadata, at head (staged revisions included: a schema
that has not had them yet differs only as they will change it, see migrator.drift). The reference for schema drift
(alembic.autogenerate.compare_metadata); keep it equal to what the revisions build."""

from sqlalchemy import (
    BigInteger, Column, DateTime, ForeignKey, Index, Integer, MetaData, String,
    Table, Text, UniqueConstraint, func, text,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Every row names its tenant; the default is the tenant the transaction is bound to, so an insert
# outside a tenant-bound transaction fails on NOT NULL instead of landing nowhere in particular.
TENANT_DEFAULT = text("NULLIF(current_setting('app.tenant_id', true), '')")


def _tenant_column() -> Column:
    return Column(
        "tenant_id", String(40), ForeignKey("tenants.tenant_id", ondelete="CASCADE"),
        nullable=False, server_default=TENANT_DEFAULT,
    )


tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

users = Table(
    "users",
    metadata,
    Column("id", BigInteger, primary_key=True),
    _tenant_column(),
    Column("email", String(320), nullable=False),
    Column("full_name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("tenant_id", "email"),
)

folders = Table(
    "folders",
    metadata,
    Column("id", BigInteger, primary_key=True),
    _tenant_column(),
    Column("parent_id", BigInteger, ForeignKey("folders.id", ondelete="CASCADE"), nullable=True),
    Column("name", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index(None, "tenant_id", "parent_id"),
)

documents = Table(
    "documents",
    metadata,
    Column("id", BigInteger, primary_key=True),
    _tenant_column(),
    Column("folder_id", BigInteger, ForeignKey("folders.id", ondelete="CASCADE"), nullable=False),
    Column("owner_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("title", String(500), nullable=False),
    Column("content", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    # Staged (0004-0007): added nullable, backfilled, CHECK validated, then NOT NULL.
    Column("status", String(20), nullable=False),
    Index(None, "tenant_id", "folder_id"),
    Index(None, "owner_id"),
    Index("ix_documents_active_title", "tenant_id", "title", postgresql_where=text("deleted_at IS NULL")),
)

document_versions = Table(
    "document_versions",
    metadata,
    Column("id", BigInteger, primary_key=True),
    _tenant_column(),
    Column("document_id", BigInteger, ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("version_number", Integer, nullable=False),
    Column("content", Text, nullable=False),
    Column("created_by", BigInteger, ForeignKey("users.id"), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Staged (0008-0009): the column and its index (CONCURRENTLY), the key NOT VALID, then validated.
    Column("reviewed_by", BigInteger, ForeignKey("users.id", name="fk_document_versions_reviewed_by_users"),
           nullable=True),
    UniqueConstraint("document_id", "version_number"),
    Index(None, "tenant_id"),
    Index("document_versions_reviewed_by_idx", "reviewed_by"),
)

# The order rows depend on each other, parents first.
TABLES_IN_ORDER = [t.name for t in metadata.sorted_tables]
