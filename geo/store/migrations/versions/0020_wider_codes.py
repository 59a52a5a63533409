"""Codes as found and attributes kept: 16-digit grid codes, 10-digit community (village) codes, and the source
file's unmapped columns stored per boundary version (``attributes`` jsonb).

`grids.code` grows from 15 to 16 characters. PostgreSQL refuses to change a column type under a view, so the
objects built on `grids_history` (`grids_at`, `grids_covering`, `current_grids`) are dropped and recreated from their
own definitions as the database holds them (whatever later migrations made of them), without CASCADE: anything
else built on them makes this migration fail loudly rather than vanish. Which lengths a deployment accepts is the
code scheme's decision (data/code_schemes); the checks here only bound what the columns can hold.

Revision ID: 0020_wider_codes
Revises: 0019_device_sessions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0020_wider_codes"
down_revision = "0019_device_sessions"
branch_labels = None
depends_on = None

BOUNDARY_TABLES = ("street_boundaries", "community_boundaries", "grid_boundaries", "micro_grid_boundaries")


def _rebuild_grid_views(width: int, level: str = "grids") -> None:
    """Drop what depends on <level>.code, retype it to varchar(width), and recreate the same objects (also used by
    0024 for micro_grids)."""
    conn = op.get_bind()
    history = conn.execute(sa.text(f"SELECT pg_get_viewdef('{level}_history'::regclass)")).scalar_one()
    current = conn.execute(sa.text(f"SELECT pg_get_viewdef('current_{level}'::regclass)")).scalar_one()
    at_fn = conn.execute(sa.text(
        f"SELECT pg_get_functiondef('{level}_at(timestamptz)'::regprocedure)")).scalar_one()
    covering_fn = conn.execute(sa.text(
        f"SELECT pg_get_functiondef('{level}_covering(timestamptz, geometry)'::regprocedure)")).scalar_one()
    op.execute(f"DROP VIEW current_{level}")
    op.execute(f"DROP FUNCTION {level}_covering(timestamptz, geometry)")
    op.execute(f"DROP FUNCTION {level}_at(timestamptz)")
    op.execute(f"DROP VIEW {level}_history")
    op.alter_column(level, "code", type_=sa.String(width), existing_nullable=False)
    op.execute(f"CREATE VIEW {level}_history AS {history}")
    op.execute(at_fn)
    op.execute(covering_fn)
    op.execute(f"CREATE VIEW current_{level} AS {current}")


def _code_check(table: str, pattern: str) -> None:
    op.drop_constraint(f"{table}_code_format", table, type_="check")
    op.create_check_constraint(f"{table}_code_format", table, f"code ~ '{pattern}'")


def upgrade() -> None:
    _rebuild_grid_views(16)
    _code_check("grids", "^[0-9]{15,16}$")
    _code_check("communities", "^[0-9]{10,12}$")
    for table in BOUNDARY_TABLES:
        op.add_column(table, sa.Column("attributes", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    conn = op.get_bind()
    odd = conn.execute(sa.text(
        "SELECT (SELECT count(*) FROM grids WHERE length(code) <> 15) "
        "+ (SELECT count(*) FROM communities WHERE length(code) <> 12)")).scalar_one()
    if odd:
        raise RuntimeError(f"{odd} grid or community code(s) are not 15/12 digits long: the narrower columns of "
                           "0016 cannot hold them; change or remove them first")
    for table in BOUNDARY_TABLES:
        op.drop_column(table, "attributes")
    _code_check("communities", "^[0-9]{12}$")
    _code_check("grids", "^[0-9]{15}$")
    _rebuild_grid_views(15)
