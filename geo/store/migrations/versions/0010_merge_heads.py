"""Merge the access-control, classification, incidents and plans branches into one head.

Revision ID: 0010
Revises: 0002, 0004, 0006, 0009
"""

revision = "0010"
down_revision = ("0002", "0004", "0006", "0009")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
