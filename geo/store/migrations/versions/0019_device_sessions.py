"""Device sessions: a login from a phone names its device and when it was last used, so an admin can list and
revoke it (the family's refresh tokens rotate for GRIDATLAS_DEVICE_SESSION_DAYS).

Revision ID: 0019_device_sessions
Revises: 0018_basemaps
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_device_sessions"
down_revision = "0018_basemaps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("token_families", sa.Column("device", sa.String(200), nullable=True))
    op.add_column("token_families", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("token_families", "last_used_at")
    op.drop_column("token_families", "device")
