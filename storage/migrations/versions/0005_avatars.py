"""avatars and avatar_photos: the photo studio's digital avatars

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 20:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('avatars',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('subject', sa.String(length=80), nullable=False),
    sa.Column('profile', sa.String(length=80), nullable=False),
    sa.Column('identity', sa.JSON(), nullable=True),
    sa.Column('check_job_id', sa.String(length=32), nullable=True),
    sa.Column('lora_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['lora_id'], ['trained_models.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('avatars', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_avatars_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_avatars_created_at'), ['created_at'], unique=False)
    op.create_table('avatar_photos',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('avatar_id', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('file_hash', sa.String(length=64), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('problems', sa.JSON(), nullable=False),
    sa.Column('crop_hash', sa.String(length=64), nullable=True),
    sa.Column('embedding', sa.JSON(), nullable=True),
    sa.Column('face_box', sa.JSON(), nullable=True),
    sa.Column('sharpness', sa.Float(), nullable=True),
    sa.Column('similarity', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['avatar_id'], ['avatars.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('avatar_photos', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_avatar_photos_avatar_id'), ['avatar_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('avatar_photos', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_avatar_photos_avatar_id'))
    op.drop_table('avatar_photos')
    with op.batch_alter_table('avatars', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_avatars_created_at'))
        batch_op.drop_index(batch_op.f('ix_avatars_owner_id'))
    op.drop_table('avatars')
