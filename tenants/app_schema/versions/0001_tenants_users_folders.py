"""tenants, users and folders

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
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
        "tenants",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenants"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, nullable=False),
        _tenant_id(),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("tenant_id", "email", name="uq_users_tenant_id_email"),
        _tenant_fk("users"),
    )
    op.create_table(
        "folders",
        sa.Column("id", sa.BigInteger, nullable=False),
        _tenant_id(),
        sa.Column("parent_id", sa.BigInteger, nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_folders"),
        _tenant_fk("folders"),
        sa.ForeignKeyConstraint(["parent_id"], ["folders.id"], name="fk_folders_parent_id", ondelete="CASCADE"),
    )
    op.create_index("ix_folders_tenant_id_parent_id", "folders", ["tenant_id", "parent_id"])


def downgrade():
    op.drop_table("folders")
    op.drop_table("users")
    op.drop_table("tenants")
