"""documents and their versions

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TENANT_DEFAULT = sa.text("NULLIF(current_setting('app.tenant_id', true), '')")


def _tenant_id():
    return sa.Column("tenant_id", sa.String(40), nullable=False, server_default=TENANT_DEFAULT)


def _tenant_fk(table):
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.tenant_id"], name=f"fk_{table}_tenant_id", ondelete="CASCADE"
    )


def upgrade():
    op.create_table(
        "documents",
        sa.Column("id", sa.BigInteger, nullable=False),
        _tenant_id(),
        sa.Column("folder_id", sa.BigInteger, nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        _tenant_fk("documents"),
        sa.ForeignKeyConstraint(["folder_id"], ["folders.id"], name="fk_documents_folder_id", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_documents_owner_id"),
    )
    op.create_index("ix_documents_tenant_id_folder_id", "documents", ["tenant_id", "folder_id"])
    op.create_index("ix_documents_owner_id", "documents", ["owner_id"])
    op.create_table(
        "document_versions",
        sa.Column("id", sa.BigInteger, nullable=False),
        _tenant_id(),
        sa.Column("document_id", sa.BigInteger, nullable=False),
        sa.Column("version_number", sa.Integer, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_document_versions"),
        sa.UniqueConstraint("document_id", "version_number", name="uq_document_versions_document_id_version_number"),
        _tenant_fk("document_versions"),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name="fk_document_versions_document_id", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_document_versions_tenant_id", "document_versions", ["tenant_id"])


def downgrade():
    op.drop_table("document_versions")
    op.drop_table("documents")
