"""The shared-edge rule in one place: ``{level}_covering(ts, p)``, the unit of a level covering a point.

A point on a shared edge or vertex is covered by several units; it belongs to the one with the smallest code,
compared as text in C collation (byte order, the order of Python's ``str`` and of the in-memory locate index).
Locate's PostGIS reference and the building-to-grid lookups of the staff register used to spell the rule out each
(one with ``COLLATE "C"``, one without); both now call these functions. Each is a single STABLE SQL ``SELECT``, so
the planner inlines it as a lateral subquery and the GiST index on the boundaries still finds the candidates.

This revision also merges the two heads (0011 incident rollups, 0013 change notifications).

Revision ID: 0014
Revises: 0011, 0013
"""

from alembic import op

revision = "0014"
down_revision = ("0011", "0013")
branch_labels = None
depends_on = None

#: The versioned levels, each with its `{level}_at(ts)` function and `{level}_history` row type (migration 0001).
LEVELS = ("streets", "communities", "grids", "micro_grids")


def upgrade() -> None:
    for level in LEVELS:
        # Not STRICT and not VOLATILE: either would stop the planner inlining the function.
        op.execute(
            f"CREATE FUNCTION {level}_covering(ts timestamptz, p geometry) RETURNS SETOF {level}_history "
            f"LANGUAGE sql STABLE PARALLEL SAFE AS $$ "
            f"SELECT * FROM {level}_at(ts) u WHERE ST_Covers(u.geom, p) ORDER BY u.code COLLATE \"C\" LIMIT 1 $$"
        )
        op.execute(
            f"COMMENT ON FUNCTION {level}_covering(timestamptz, geometry) IS "
            f"'the unit in force at ts covering point p; on a shared edge or vertex the smallest code (C collation)'"
        )


def downgrade() -> None:
    for level in LEVELS:
        op.execute(f"DROP FUNCTION IF EXISTS {level}_covering(timestamptz, geometry)")
