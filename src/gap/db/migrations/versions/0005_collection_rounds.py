"""rounds of collection (collection_rounds) recorded on sessions and turns

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collection_rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("adapter", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection_rounds")),
    )
    with op.batch_alter_table("collection_rounds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_collection_rounds_started_at"), ["started_at"], unique=False)
    for table in ("sessions", "turns"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("collection_round", sa.Integer(), nullable=True))
            batch_op.create_index(
                batch_op.f(f"ix_{table}_collection_round"), ["collection_round"], unique=False
            )
            batch_op.create_foreign_key(
                batch_op.f(f"fk_{table}_collection_round_collection_rounds"),
                "collection_rounds",
                ["collection_round"],
                ["id"],
            )


def downgrade() -> None:
    for table in ("turns", "sessions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(
                batch_op.f(f"fk_{table}_collection_round_collection_rounds"), type_="foreignkey"
            )
            batch_op.drop_index(batch_op.f(f"ix_{table}_collection_round"))
            batch_op.drop_column("collection_round")
    with op.batch_alter_table("collection_rounds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_collection_rounds_started_at"))
    op.drop_table("collection_rounds")
