"""Compound-versus-grid classification results, stored per boundary version and level.

`classification_runs` holds one row per (boundary version, level): when it was computed, by which
implementation, with which thresholds, a fingerprint of the inputs (so a changed boundary or compound is noticed
and the run recomputed) and the threshold sensitivity. `compound_classifications` holds one row per compound with
its measures and class; `compound_overlaps` one row per compound and overlapped grid (or micro-grid).

Revision ID: 0004
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

_KEY = ["version_id", "level"]


def upgrade() -> None:
    op.create_table(
        "classification_runs",
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("boundary_versions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("implementation", sa.String(16), nullable=False),
        sa.Column("epsg", sa.Integer(), nullable=False),
        sa.Column("inputs_hash", sa.String(32), nullable=False),
        sa.Column("thresholds", postgresql.JSONB(), nullable=False),
        sa.Column("sensitivity", postgresql.JSONB(), nullable=False),
        sa.Column("n_compounds", sa.Integer(), nullable=False),
        sa.Column("elapsed_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(*_KEY),
        sa.CheckConstraint("level IN ('grid', 'micro_grid')", name="classification_runs_level"),
    )
    op.create_table(
        "compound_classifications",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("compound_id", sa.Integer(), sa.ForeignKey("compounds.id", ondelete="CASCADE"), nullable=False),
        sa.Column("class", sa.String(16), nullable=False),
        sa.Column("community_id", sa.Integer(), sa.ForeignKey("communities.id", ondelete="SET NULL")),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("main_unit_id", sa.Integer()),
        sa.Column("main_code", sa.String(18)),
        sa.Column("main_overlap_m2", sa.Float(), nullable=False),
        sa.Column("main_unit_area_m2", sa.Float()),
        sa.Column("coverage", sa.Float(), nullable=False),
        sa.Column("fill", sa.Float()),
        sa.Column("iou", sa.Float()),
        sa.Column("hausdorff_m", sa.Float()),
        sa.Column("n_units", sa.Integer(), nullable=False),
        sa.Column("n_contained", sa.Integer(), nullable=False),
        sa.Column("repaired", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("fragile", postgresql.ARRAY(sa.String(32)), nullable=False, server_default="{}"),
        sa.PrimaryKeyConstraint(*_KEY, "compound_id"),
        sa.ForeignKeyConstraint(_KEY, [f"classification_runs.{c}" for c in _KEY], ondelete="CASCADE"),
        sa.CheckConstraint("class IN ('same', 'larger', 'smaller', 'straddling', 'outside')",
                           name="compound_classifications_class"),
    )
    op.create_index("ix_compound_classifications_community", "compound_classifications",
                    [*_KEY, "community_id"])
    op.create_index("ix_compound_classifications_compound", "compound_classifications", ["compound_id"])
    op.create_table(
        "compound_overlaps",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("compound_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("unit_code", sa.String(18), nullable=False),
        sa.Column("overlap_m2", sa.Float(), nullable=False),
        sa.Column("width_m", sa.Float(), nullable=False),
        sa.Column("unit_area_m2", sa.Float(), nullable=False),
        sa.Column("significant", sa.Boolean(), nullable=False),
        sa.Column("contained", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, "compound_id", "unit_id"),
        # Keyed to the run, not to compound_classifications: checking 30,000 rows against a table filled in the
        # same transaction (no statistics yet) took 40 s at scale 10; against the run's single row it is instant.
        sa.ForeignKeyConstraint(_KEY, [f"classification_runs.{c}" for c in _KEY], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["compound_id"], ["compounds.id"], ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("compound_overlaps")
    op.drop_index("ix_compound_classifications_compound", table_name="compound_classifications")
    op.drop_index("ix_compound_classifications_community", table_name="compound_classifications")
    op.drop_table("compound_classifications")
    op.drop_table("classification_runs")
