"""NOT NULL column documents.status varchar(20), backfilled: stage 2 of 4, backfill

Revision ID: 0005
Revises: 0004
Staged change: documents_status_add_not_null_column (tenants/app_schema/staged.py); rolled out stage by stage by the console.
"""

from tenants.app_schema import staged

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

CHANGE = staged.add_not_null_column('documents', 'status', 'varchar(20)', backfill="CASE WHEN deleted_at IS NULL THEN 'active' ELSE 'deleted' END")
STAGE = 'backfill'


def upgrade():
    staged.upgrade(CHANGE, STAGE)


def downgrade():
    staged.downgrade(CHANGE, STAGE)
