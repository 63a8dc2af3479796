"""NOT NULL column documents.status varchar(20), backfilled: stage 4 of 4, contract

Revision ID: 0007
Revises: 0006
Staged change: documents_status_add_not_null_column (tenants/app_schema/staged.py); rolled out stage by stage by the console.
"""

from tenants.app_schema import staged

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CHANGE = staged.add_not_null_column('documents', 'status', 'varchar(20)', backfill="CASE WHEN deleted_at IS NULL THEN 'active' ELSE 'deleted' END")
STAGE = 'contract'


def upgrade():
    staged.upgrade(CHANGE, STAGE)


def downgrade():
    staged.downgrade(CHANGE, STAGE)
