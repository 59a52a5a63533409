"""Street-wide redraw plans (街道改划方案): a plan covers one community or one street.

``plans.street_id`` (new, nullable) names the street of a street plan; ``plans.community_id`` becomes nullable and
exactly one of the two is set. ``plan_units.community_id`` (new, nullable) records the community each grid (and
micro-grid, through its grid) belongs to, so a street plan keeps every grid inside one community.

Revision ID: 0012
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("plans", sa.Column("street_id", sa.Integer(), sa.ForeignKey("streets.id"), nullable=True))
    op.create_index("ix_plans_street_id", "plans", ["street_id"])
    op.alter_column("plans", "community_id", existing_type=sa.Integer(), nullable=True)
    op.create_check_constraint("plans_one_scope", "plans", "num_nonnulls(community_id, street_id) = 1")
    op.add_column("plan_units", sa.Column("community_id", sa.Integer(), sa.ForeignKey("communities.id"),
                                          nullable=True))
    # existing plans are community plans: their units belong to the plan's community
    op.execute("UPDATE plan_units u SET community_id = p.community_id FROM plans p WHERE p.id = u.plan_id")


def downgrade() -> None:
    # a street plan cannot be expressed without the new columns: it is dropped with its units and operations
    op.execute("DELETE FROM plans WHERE street_id IS NOT NULL")
    op.drop_column("plan_units", "community_id")
    op.drop_constraint("plans_one_scope", "plans", type_="check")
    op.alter_column("plans", "community_id", existing_type=sa.Integer(), nullable=False)
    op.drop_index("ix_plans_street_id", table_name="plans")
    op.drop_column("plans", "street_id")
