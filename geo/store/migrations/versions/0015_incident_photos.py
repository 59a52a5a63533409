"""Incident photos (事件照片): the pictures a grid worker takes when reporting a case, and later as evidence of its
handling (处置). The bytes live in files under the data directory (``var/photos``), the rows here say which case,
which stage, what type, how big, the content hash and when it was taken and uploaded.

Revision ID: 0015_incident_photos
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_incident_photos"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident_photos",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("incident_id", sa.BigInteger, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False, server_default="report"),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("uploaded_by", sa.String(100), nullable=True),
        sa.CheckConstraint("stage IN ('report','handling')", name="incident_photos_stage"),
        sa.CheckConstraint("size_bytes > 0", name="incident_photos_size"),
        sa.UniqueConstraint("incident_id", "sha256", name="incident_photos_incident_sha256"),
    )
    op.create_index("ix_incident_photos_incident_id", "incident_photos", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_incident_photos_incident_id", table_name="incident_photos")
    op.drop_table("incident_photos")
