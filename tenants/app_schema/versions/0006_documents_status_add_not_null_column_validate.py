"""NOT NULL column documents.status varchar(20), backfilled: stage 3 of 4, validate

Revision ID: 0006
Revises: 0005
Staged change: documents_status_add_not_null_column (tenants/app_schema/staged.py); rolled out stage by stage by the console.
"""

from tenants.app_schema import staged

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

CHANGE = staged.add_not_null_column('documents', 'status', 'varchar(20)', backfill="CASE WHEN deleted_at IS NULL THEN 'active' ELSE 'deleted' END")
STAGE = 'validate'


def upgrade():
    staged.upgrade(CHANGE, STAGE)


def downgrade():
    staged.downgrade(CHANGE, STAGE)
