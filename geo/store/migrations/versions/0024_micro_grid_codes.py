"""19-digit micro-grid codes: a 16-digit dedicated grid's micro-grids are 16 + 2 or 16 + 3 = 18–19 digits.

`micro_grids.code` grows from 18 to 19 characters (format 17–19 digits), and so does every column that can hold a
micro-grid code: users' and audit entries' `jurisdiction_code`, `plan_units.code`, the classification runs'
`compound_classifications.main_code` and `compound_overlaps.unit_code`. The objects built on `micro_grids_history`
(`micro_grids_at`, `micro_grids_covering`, `current_micro_grids`) are dropped and recreated from the definitions the
database holds, with migration 0020's helper. Which lengths a deployment accepts is its code scheme's decision
(data/code_schemes: the default scheme keeps 17–18); the checks here only bound what the columns can hold.

Revision ID: 0024_micro_grid_codes
Revises: 0022_incident_partitions
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0024_micro_grid_codes"
down_revision = "0023_addresses"
branch_labels = None
depends_on = None

#: (table, column) of the plain columns that may hold a micro-grid code (nothing is built on them).
CODE_COLUMNS = (("users", "jurisdiction_code"), ("audit_log", "jurisdiction_code"), ("plan_units", "code"),
                ("compound_classifications", "main_code"), ("compound_overlaps", "unit_code"))


def _wider_codes() -> ModuleType:
    """Migration 0020 as a module (its file name is no identifier): its view rebuild and format check helpers."""
    path = Path(__file__).with_name("0020_wider_codes.py")
    spec = importlib.util.spec_from_file_location("gridatlas_migration_0020", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The recreated function whose comment (migration 0014's shared-edge rule) is carried over.
COVERING = "micro_grids_covering(timestamptz, geometry)"


def _retype(width: int) -> None:
    m0020 = _wider_codes()
    conn = op.get_bind()
    comment = conn.execute(sa.text(f"SELECT obj_description('{COVERING}'::regprocedure, 'pg_proc')")).scalar()
    m0020._rebuild_grid_views(width, level="micro_grids")
    if comment is not None:
        quoted = comment.replace("'", "''")
        conn.exec_driver_sql(f"COMMENT ON FUNCTION {COVERING} IS '{quoted}'")
    m0020._code_check("micro_grids", f"^[0-9]{{17,{width}}}$")
    for table, column in CODE_COLUMNS:
        op.alter_column(table, column, type_=sa.String(width))


def upgrade() -> None:
    _retype(19)


def downgrade() -> None:
    conn = op.get_bind()
    longest = " + ".join(f"(SELECT count(*) FROM {t} WHERE length({c}) > 18)"
                         for t, c in (("micro_grids", "code"), *CODE_COLUMNS))
    odd = conn.execute(sa.text(f"SELECT {longest}")).scalar_one()
    if odd:
        raise RuntimeError(f"{odd} micro-grid or jurisdiction code(s) have 19 digits: the narrower columns of 0022 "
                           "cannot hold them; change or remove them first")
    _retype(18)
