"""eFlows4HPC: short-lived login tokens (tokens.expires) and where a build's step came from (builds.source).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires", sa.Float, nullable=True))
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("source", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("expires")
