"""Login sessions: refresh-token families (rotation with reuse detection, logout revokes the session's tokens).

Revision ID: 0016_token_families
Revises: 0015_incident_photos
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_token_families"
down_revision = "0015_incident_photos"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_families",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("current_jti", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(40), nullable=True),
    )
    op.create_index("ix_token_families_username", "token_families", ["username"])
    op.create_index("ix_token_families_expires_at", "token_families", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_token_families_expires_at", table_name="token_families")
    op.drop_index("ix_token_families_username", table_name="token_families")
    op.drop_table("token_families")
