"""trained_models: style LoRAs trained here or uploaded

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 19:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('trained_models',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('profile', sa.String(length=80), nullable=False),
    sa.Column('base_model', sa.String(length=500), nullable=False),
    sa.Column('trigger', sa.String(length=80), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_note', sa.Text(), nullable=True),
    sa.Column('file_hash', sa.String(length=64), nullable=True),
    sa.Column('file_size', sa.BigInteger(), nullable=True),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('dataset', sa.JSON(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('default_weight', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('trained_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trained_models_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_trained_models_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_trained_models_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_trained_models_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('trained_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trained_models_created_at'))
        batch_op.drop_index(batch_op.f('ix_trained_models_state'))
        batch_op.drop_index(batch_op.f('ix_trained_models_kind'))
        batch_op.drop_index(batch_op.f('ix_trained_models_owner_id'))
    op.drop_table('trained_models')
