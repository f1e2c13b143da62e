"""model artifacts: a KAN ensemble run's members beside its model

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_artifacts") as batch:
        batch.add_column(sa.Column("ensemble", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_artifacts") as batch:
        batch.drop_column("ensemble")
