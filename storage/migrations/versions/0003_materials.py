"""materials: the material library and product masks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 18:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('materials',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('file_hash', sa.String(length=64), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('has_alpha', sa.Boolean(), nullable=False),
    sa.Column('notes', sa.JSON(), nullable=False),
    sa.Column('mask_hash', sa.String(length=64), nullable=True),
    sa.Column('mask_source', sa.String(length=20), nullable=True),
    sa.Column('mask_note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('materials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_materials_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_materials_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_materials_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('materials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_materials_created_at'))
        batch_op.drop_index(batch_op.f('ix_materials_kind'))
        batch_op.drop_index(batch_op.f('ix_materials_owner_id'))
    op.drop_table('materials')
