"""Name history: each grid and micro-grid boundary version keeps the unit's name while it was in force.

Names lived only on the identity rows (``grids.name``), so a rollback restored the old geometry under the new
name. ``grid_boundaries.name`` and ``micro_grid_boundaries.name`` record the name with each boundary version: a
publish writes it (a rename starts a new version, as a boundary change does) and a rollback restores it. A row
inserted without one (an import, a demo load, psql) takes its unit's name at that moment (a BEFORE INSERT trigger),
so every writer keeps the history. Rows written before this revision get their unit's current name: the names they
had then were never stored.

Revision ID: 0017_grid_name_history
Revises: 0016_token_families
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_grid_name_history"
down_revision = "0016_token_families"
branch_labels = None
depends_on = None

#: boundary table → (unit column, identity table)
TABLES = {"grid_boundaries": ("grid_id", "grids"), "micro_grid_boundaries": ("micro_grid_id", "micro_grids")}


def upgrade() -> None:
    for table, (unit, identity) in TABLES.items():
        op.add_column(table, sa.Column("name", sa.String(100), nullable=True))
        op.execute(f"UPDATE {table} b SET name = u.name FROM {identity} u WHERE u.id = b.{unit}")
        op.execute(f"""
            CREATE FUNCTION {table}_default_name() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.name IS NULL THEN
                    SELECT u.name INTO NEW.name FROM {identity} u WHERE u.id = NEW.{unit};
                END IF;
                RETURN NEW;
            END $$
        """)
        op.execute(f"CREATE TRIGGER {table}_default_name BEFORE INSERT ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {table}_default_name()")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_default_name ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_default_name()")
        op.drop_column(table, "name")
