"""user_templates: templates users save from their results, private or shared

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('user_templates',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('title_zh', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('description_zh', sa.Text(), nullable=False),
    sa.Column('tab', sa.String(length=20), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('negative_prompt', sa.Text(), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('shared', sa.Boolean(), nullable=False),
    sa.Column('preview_hash', sa.String(length=64), nullable=False),
    sa.Column('source_asset_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['source_asset_id'], ['assets.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('owner_id', 'name', name='uq_user_template_name')
    )
    with op.batch_alter_table('user_templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_templates_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_user_templates_shared'), ['shared'], unique=False)
        batch_op.create_index(batch_op.f('ix_user_templates_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('user_templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_templates_created_at'))
        batch_op.drop_index(batch_op.f('ix_user_templates_shared'))
        batch_op.drop_index(batch_op.f('ix_user_templates_owner_id'))
    op.drop_table('user_templates')
