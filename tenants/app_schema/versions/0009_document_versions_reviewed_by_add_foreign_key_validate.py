"""foreign key document_versions.reviewed_by -> users.id: stage 2 of 2, validate

Revision ID: 0009
Revises: 0008
Staged change: document_versions_reviewed_by_add_foreign_key (tenants/app_schema/staged.py); rolled out stage by stage by the console.
"""

from tenants.app_schema import staged

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

CHANGE = staged.add_foreign_key('document_versions', 'reviewed_by', 'users', 'id', column_type='bigint')
STAGE = 'validate'


def upgrade():
    staged.upgrade(CHANGE, STAGE)


def downgrade():
    staged.downgrade(CHANGE, STAGE)
