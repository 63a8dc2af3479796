"""soft delete of documents, author of each version

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("documents", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    # Lists show live documents by title: a partial index keeps deleted ones out of it.
    op.create_index(
        "ix_documents_active_title", "documents", ["tenant_id", "title"], postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.add_column("document_versions", sa.Column("created_by", sa.BigInteger, nullable=True))
    op.create_foreign_key("fk_document_versions_created_by", "document_versions", "users", ["created_by"], ["id"])


def downgrade():
    op.drop_constraint("fk_document_versions_created_by", "document_versions", type_="foreignkey")
    op.drop_column("document_versions", "created_by")
    op.drop_index("ix_documents_active_title", table_name="documents")
    op.drop_column("documents", "deleted_at")
