"""batched settlement (sessions.settled_at) and stored quality fits

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_sessions_settled_at"), ["settled_at"], unique=False)
    op.create_table(
        "quality_fits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_fits")),
    )
    with op.batch_alter_table("quality_fits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quality_fits_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("quality_fits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quality_fits_created_at"))
    op.drop_table("quality_fits")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_settled_at"))
        batch_op.drop_column("settled_at")
