"""players.signup_ip_hash: a keyed hash of the sign-up IP, for the many-accounts flag

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 02:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("players", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signup_ip_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_players_signup_ip_hash"), ["signup_ip_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("players", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_players_signup_ip_hash"))
        batch_op.drop_column("signup_ip_hash")
