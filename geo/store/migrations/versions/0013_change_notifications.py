"""Change notifications: every write to what the locate index or the staff directory holds sends a NOTIFY.

Each process serving locate keeps its index in memory; a statement-level trigger on the tables it is built from
sends ``NOTIFY gridatlas_changes`` with payload ``boundaries`` (or ``staff``) when the writing transaction commits,
whoever wrote (a publish, an import, a demo load, psql), so every process learns at once and rebuilds.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

CHANNEL = "gridatlas_changes"
WATCHED = {
    "boundaries": ("streets", "communities", "grids", "micro_grids", "street_boundaries", "community_boundaries",
                   "grid_boundaries", "micro_grid_boundaries", "compounds", "buildings"),
    "staff": ("people", "staff_assignments"),
}


def upgrade() -> None:
    op.execute(f"""
        CREATE FUNCTION gridatlas_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- delivered when the transaction commits; repeats within one transaction are folded into one
            PERFORM pg_notify('{CHANNEL}', TG_ARGV[0]);
            RETURN NULL;
        END $$
    """)
    for payload, tables in WATCHED.items():
        for table in tables:
            op.execute(f"CREATE TRIGGER {table}_notify_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                       f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION gridatlas_notify_change('{payload}')")


def downgrade() -> None:
    for tables in WATCHED.values():
        for table in tables:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_change ON {table}")
    op.execute("DROP FUNCTION IF EXISTS gridatlas_notify_change()")
