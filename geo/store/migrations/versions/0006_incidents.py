"""Incidents' closed loop: lifecycle timestamps and counters, the state table, Open311 fields, KPI indexes.

The states are data (data/incident_states.csv), seeded into `incident_states` and enforced by foreign keys.
Rows written without a lifecycle (bulk loads that give only `state`, `due_at`, `closed_at`) get the timestamps
that state implies from a BEFORE INSERT trigger, so the KPI queries need no special case for imported data.

Revision ID: 0006
Revises: 0001
"""

import csv

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)

_INCIDENT_COLUMNS: list[sa.Column] = [
    sa.Column("registered_at", _TS, nullable=True),  # 立案
    sa.Column("dispatched_at", _TS, nullable=True),  # 派遣: the deadline clock starts
    sa.Column("handled_at", _TS, nullable=True),  # 处置
    sa.Column("feedback_at", _TS, nullable=True),  # 处理反馈
    sa.Column("evaluated_at", _TS, nullable=True),  # 综合评价
    sa.Column("updated_at", _TS, nullable=True),
    #: The class's limit when dispatched (a later edit of the class table does not move old deadlines).
    sa.Column("time_limit_hours", sa.Double(), nullable=True),
    sa.Column("extended_hours", sa.Double(), server_default="0", nullable=False),  # 延时
    sa.Column("extension_count", sa.Integer(), server_default="0", nullable=False),
    sa.Column("rework_count", sa.Integer(), server_default="0", nullable=False),  # 返工
    sa.Column("return_count", sa.Integer(), server_default="0", nullable=False),  # 回退
    sa.Column("suspended_at", _TS, nullable=True),  # 挂账: the clock is paused since then
    sa.Column("suspended_from", sa.String(32), nullable=True),
    sa.Column("evaluation", sa.SmallInteger(), nullable=True),  # 1 (poor) … 5 (very good)
    sa.Column("created_by", sa.String(100), nullable=True),
    sa.Column("reporter_email", sa.String(200), nullable=True),
    sa.Column("address", sa.Text(), nullable=True),
    sa.Column("media_url", sa.Text(), nullable=True),
    #: The point as the reporter sent it (GCJ-02 / BD-09 phones), before conversion to WGS-84.
    sa.Column("reported_lon", sa.Double(), nullable=True),
    sa.Column("reported_lat", sa.Double(), nullable=True),
    sa.Column("reported_coordsys", sa.String(16), nullable=True),
]

_FILL_LIFECYCLE = """
CREATE FUNCTION incidents_fill_lifecycle() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lim double precision;
BEGIN
    -- Only fills what is missing: rows written by the state machine carry their own timestamps.
    IF NEW.state IN ('collected', 'rejected') THEN
        NEW.updated_at := coalesce(NEW.updated_at, NEW.reported_at);
        RETURN NEW;
    END IF;
    NEW.registered_at := coalesce(NEW.registered_at, NEW.reported_at);
    IF NEW.due_at IS NOT NULL OR NEW.state IN ('dispatched', 'handled', 'reported', 'closed', 'evaluated',
                                               'suspended') THEN
        lim := coalesce(NEW.time_limit_hours,
                        (SELECT c.time_limit_hours FROM incident_classes c WHERE c.code = NEW.class_code));
        IF NEW.due_at IS NULL THEN
            NEW.dispatched_at := coalesce(NEW.dispatched_at, NEW.registered_at);
            NEW.due_at := NEW.dispatched_at + make_interval(secs => (lim + NEW.extended_hours) * 3600);
        ELSIF NEW.dispatched_at IS NULL THEN
            NEW.dispatched_at := greatest(NEW.registered_at,
                                          NEW.due_at - make_interval(secs => (lim + NEW.extended_hours) * 3600));
        END IF;
        -- The limit that makes (dispatched_at, due_at) consistent when the loader's deadline differs.
        NEW.time_limit_hours := coalesce(NEW.time_limit_hours,
            extract(epoch FROM NEW.due_at - NEW.dispatched_at) / 3600.0 - NEW.extended_hours);
    END IF;
    IF NEW.state IN ('handled', 'reported', 'closed', 'evaluated') THEN
        -- Unknown handling time: no later than closing; for open cases, known as of this write.
        NEW.handled_at := coalesce(NEW.handled_at, NEW.closed_at, clock_timestamp());
    END IF;
    IF NEW.state IN ('reported', 'closed', 'evaluated') THEN
        NEW.feedback_at := coalesce(NEW.feedback_at, NEW.closed_at, NEW.handled_at);
    END IF;
    IF NEW.state = 'evaluated' THEN
        NEW.evaluated_at := coalesce(NEW.evaluated_at, NEW.closed_at);
    END IF;
    IF NEW.state = 'suspended' THEN
        NEW.suspended_from := coalesce(NEW.suspended_from, 'dispatched');
    END IF;
    NEW.updated_at := coalesce(NEW.updated_at,
        greatest(NEW.reported_at, NEW.registered_at, NEW.dispatched_at, NEW.handled_at, NEW.feedback_at,
                 NEW.closed_at, NEW.evaluated_at, NEW.suspended_at));
    RETURN NEW;
END $$;
"""


def _seed_states() -> None:
    from data import DATA_DIR

    path = DATA_DIR / "incident_states.csv"
    with path.open(encoding="utf-8") as f:
        rows = [
            {**r, "rank": int(r["rank"]), "is_open": r["is_open"].strip().lower() == "true"}
            for r in csv.DictReader(f)
        ]
    table = sa.table(
        "incident_states",
        sa.column("code", sa.String), sa.column("name", sa.String), sa.column("rank", sa.Integer),
        sa.column("is_open", sa.Boolean), sa.column("clock", sa.String), sa.column("open311_status", sa.String),
    )
    op.bulk_insert(table, rows)


def upgrade() -> None:
    op.create_table(
        "incident_states",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("clock", sa.String(16), nullable=False),
        sa.Column("open311_status", sa.String(16), nullable=False),
        sa.CheckConstraint("clock IN ('none','running','paused','stopped')", name="incident_states_clock"),
        sa.CheckConstraint("open311_status IN ('open','closed')", name="incident_states_open311"),
    )
    _seed_states()
    for col in _INCIDENT_COLUMNS:
        op.add_column("incidents", col)
    op.create_check_constraint("incidents_evaluation_range", "incidents",
                               "evaluation IS NULL OR evaluation BETWEEN 1 AND 5")
    op.create_check_constraint("incidents_counters_nonnegative", "incidents",
                               "extended_hours >= 0 AND extension_count >= 0 AND rework_count >= 0 "
                               "AND return_count >= 0")
    op.create_foreign_key("incidents_state_fkey", "incidents", "incident_states", ["state"], ["code"])
    op.add_column("incident_events", sa.Column("action", sa.String(32), nullable=True))
    op.add_column("incident_events", sa.Column("detail", postgresql.JSONB(), nullable=True))
    op.create_foreign_key("incident_events_to_state_fkey", "incident_events", "incident_states",
                          ["to_state"], ["code"])
    # KPI indexes: a case is due in the period holding least(due_at, closed_at) (see geo/kpi.py).
    op.execute("CREATE INDEX ix_incidents_due_moment ON incidents ((least(due_at, closed_at)))")
    op.create_index("ix_incidents_registered_at", "incidents", ["registered_at"])
    op.create_index("ix_incidents_department", "incidents", ["department"])
    op.execute("CREATE INDEX ix_incidents_open_due ON incidents (due_at) "
               "WHERE state IN ('dispatched','handled','reported','suspended')")
    op.create_index("ix_incident_events_incident_at", "incident_events", ["incident_id", "at"])
    # The point's coordinates as plain numbers: heatmap binning reads them without decoding a geometry per row,
    # and the covering index lets a period's points be read by an index-only scan.
    op.execute("ALTER TABLE incidents ADD COLUMN lon double precision GENERATED ALWAYS AS (ST_X(geom)) STORED, "
               "ADD COLUMN lat double precision GENERATED ALWAYS AS (ST_Y(geom)) STORED")
    op.execute("CREATE INDEX ix_incidents_heat ON incidents (reported_at) "
               "INCLUDE (lon, lat, class_code, street_id, community_id, grid_id)")
    op.execute(_FILL_LIFECYCLE)
    # Rows already stored get the same treatment as future bulk loads.
    op.execute("CREATE TRIGGER incidents_fill_lifecycle_backfill BEFORE UPDATE ON incidents "
               "FOR EACH ROW EXECUTE FUNCTION incidents_fill_lifecycle()")
    op.execute("UPDATE incidents SET id = id")
    op.execute("DROP TRIGGER incidents_fill_lifecycle_backfill ON incidents")
    op.execute("CREATE TRIGGER incidents_fill_lifecycle BEFORE INSERT ON incidents "
               "FOR EACH ROW EXECUTE FUNCTION incidents_fill_lifecycle()")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS incidents_fill_lifecycle ON incidents")
    op.execute("DROP FUNCTION IF EXISTS incidents_fill_lifecycle()")
    op.execute("DROP INDEX IF EXISTS ix_incidents_heat")
    op.drop_column("incidents", "lat")
    op.drop_column("incidents", "lon")
    op.drop_index("ix_incident_events_incident_at", table_name="incident_events")
    op.execute("DROP INDEX IF EXISTS ix_incidents_open_due")
    op.drop_index("ix_incidents_department", table_name="incidents")
    op.drop_index("ix_incidents_registered_at", table_name="incidents")
    op.execute("DROP INDEX IF EXISTS ix_incidents_due_moment")
    op.drop_constraint("incident_events_to_state_fkey", "incident_events", type_="foreignkey")
    op.drop_column("incident_events", "detail")
    op.drop_column("incident_events", "action")
    op.drop_constraint("incidents_state_fkey", "incidents", type_="foreignkey")
    op.drop_constraint("incidents_counters_nonnegative", "incidents", type_="check")
    op.drop_constraint("incidents_evaluation_range", "incidents", type_="check")
    for col in reversed(_INCIDENT_COLUMNS):
        op.drop_column("incidents", col.name)
    op.drop_table("incident_states")
