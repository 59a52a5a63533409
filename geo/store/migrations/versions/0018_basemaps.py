"""Basemaps kept by admins (底图配置): the basemap layers the pages draw, replacing GRIDATLAS_BASEMAPS once saved.

One row (id 1) holds the whole ordered list as JSON (bottom layer first), its revision and who saved it; no row
means the settings' layers apply.

Revision ID: 0018_basemaps
Revises: 0017_grid_name_history
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0018_basemaps"
down_revision = "0017_grid_name_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "basemap_config",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("layers", postgresql.JSONB, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False, server_default="1"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_by", sa.String(100), nullable=True),
        sa.CheckConstraint("id = 1", name="basemap_config_single_row"),
        sa.CheckConstraint("jsonb_typeof(layers) = 'array'", name="basemap_config_layers_array"),
    )


def downgrade() -> None:
    op.drop_table("basemap_config")
