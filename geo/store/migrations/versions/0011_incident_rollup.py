"""Incident rollups: monthly KPI counts and monthly hexagon counts, kept by statement-level triggers.

`incident_rollup` holds, per local month (Asia/Shanghai, `incident_rollup_tz()`) and per attribution (street,
community, grid), class and department — at three `level`s: every key (0), per street, class and department (12),
per street, community and grid (3) — the counts the KPIs of geo/kpi.py add up, each in the month of its moment:
- `received` (受理) in the month of reported_at, and `rejected` among them (state 'rejected');
- `registered` (立案) in the month of registered_at;
- `due` (应结案) in the month of least(due_at, closed_at), for cases with a deadline that are not cancelled or
  suspended, keyed also by the months of closed_at and handled_at (whether a case counts as closed or handled
  depends on the period's end), with `on_time` (closed_at ≤ due_at), `reworked` (rework_count > 0, counted with
  handled_month) and `extended` (extension_count > 0) among them.
`incident_heat_rollup` holds incidents per (hexagon size, local month of reported_at, axial q, r) for the sizes
registered in `incident_heat_sizes` with the metric frame they were binned in (geo/heatmap.py).

Both are maintained in the same transaction as every write to `incidents` (INSERT, COPY, UPDATE, DELETE, TRUNCATE)
by AFTER … FOR EACH STATEMENT triggers over the transition tables: one set-based upsert of the signed differences
per statement, so a million-row COPY costs one aggregate. `incident_rollup_refresh()` rebuilds both from scratch.
A key whose counts return to zero keeps a zero row until the next refresh (sums are unaffected).

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TZ = "Asia/Shanghai"
KEYS = "month, closed_month, handled_month, street_id, community_id, grid_id, class_code, department"
#: The three levels kept (`level` = GROUPING(community_id, grid_id, class_code, department)): 0 every key, 12 per
#: street, class and department (no community or grid), 3 per street, community and grid (no class or department).
#: A query reads the smallest level that has its grouping and filters.
_TIME = "month, closed_month, handled_month"
LEVELS = (f"({KEYS})", f"({_TIME}, street_id, class_code, department)", f"({_TIME}, street_id, community_id, grid_id)")
MEASURES = ("received", "rejected", "registered", "due", "on_time", "reworked", "extended")
SQRT3 = "1.7320508075688772"


def _kpi_rows(src: str, sign: str) -> str:
    """The signed KPI contributions of the rows of `src`: reported, registered and due, each in its month."""
    m = "date_trunc('month', {}, incident_rollup_tz())"
    units = "t.street_id, t.community_id, t.grid_id, t.class_code, t.department"
    return f"""
        SELECT {m.format('t.reported_at')} AS month, NULL::timestamptz AS closed_month,
               NULL::timestamptz AS handled_month, {units}, {sign} AS received,
               {sign} * (t.state = 'rejected')::int AS rejected, 0 AS registered, 0 AS due, 0 AS on_time,
               0 AS reworked, 0 AS extended
        FROM {src} t WHERE t.reported_at IS NOT NULL
        UNION ALL
        SELECT {m.format('t.registered_at')}, NULL, NULL, {units}, 0, 0, {sign}, 0, 0, 0, 0
        FROM {src} t WHERE t.registered_at IS NOT NULL
        UNION ALL
        SELECT {m.format('least(t.due_at, t.closed_at)')}, {m.format('t.closed_at')}, {m.format('t.handled_at')},
               {units}, 0, 0, 0, {sign}, {sign} * coalesce(t.closed_at <= t.due_at, false)::int,
               {sign} * (t.rework_count > 0)::int, {sign} * (t.extension_count > 0)::int
        FROM {src} t WHERE t.due_at IS NOT NULL AND t.state NOT IN ('cancelled', 'suspended')"""


def _heat_rows(src: str, sign: str) -> str:
    """The signed hexagon counts of the rows of `src` for every registered size (the formula of
    geo.incidents.hexagons.hex_axial_sql, the same float arithmetic)."""
    return f"""
        SELECT cell_m, month, (qq - rr)::int AS q, rr::int AS r, {sign} AS n
        FROM (SELECT cell_m, month, floor((floor(2.0 * a + 1.0) + t) / 3.0) AS qq,
                     floor((t + floor({SQRT3} * b - a + 1.0)) / 3.0) AS rr
              FROM (SELECT cell_m, month, a, b, floor(a + {SQRT3} * b + 1.0) AS t
                    FROM (SELECT s.cell_m, date_trunc('month', t.reported_at, incident_rollup_tz()) AS month,
                                 (t.lon - s.lon0) * s.kx / s.k AS a, (t.lat - s.lat0) * s.ky / s.k AS b
                          FROM {src} t CROSS JOIN incident_heat_sizes s
                          WHERE t.reported_at IS NOT NULL AND t.lon IS NOT NULL) ab) t) h"""


def _apply(parts: list[tuple[str, str]]) -> str:
    """Upsert the summed signed contributions of (source, sign) pairs into both rollups."""
    kpi = " UNION ALL ".join(_kpi_rows(s, g) for s, g in parts)
    heat = " UNION ALL ".join(_heat_rows(s, g) for s, g in parts)
    sums = ", ".join(f"sum({c})" for c in MEASURES)
    return f"""
        INSERT INTO incident_rollup AS r (level, {KEYS}, {", ".join(MEASURES)})
        SELECT GROUPING(community_id, grid_id, class_code, department), {KEYS}, {sums}
        FROM ({kpi}) d GROUP BY GROUPING SETS ({", ".join(LEVELS)})
        HAVING ({sums}) <> ({", ".join("0" for _ in MEASURES)})
        ORDER BY {", ".join(str(k) for k in range(1, 10))}  -- every writer locks rollup rows in one order
        ON CONFLICT (level, {KEYS}) DO UPDATE SET {", ".join(f"{c} = r.{c} + EXCLUDED.{c}" for c in MEASURES)};
        IF EXISTS (SELECT 1 FROM incident_heat_sizes) THEN
            INSERT INTO incident_heat_rollup AS r (cell_m, month, q, r, n)
            SELECT cell_m, month, q, r, sum(n) FROM ({heat}) d GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0
            ORDER BY 1, 2, 3, 4
            ON CONFLICT (cell_m, month, q, r) DO UPDATE SET n = r.n + EXCLUDED.n;
        END IF;"""


def upgrade() -> None:
    op.execute(f"CREATE FUNCTION incident_rollup_tz() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '{TZ}' $$")
    op.execute(
        """
        CREATE TABLE incident_rollup (
            level smallint NOT NULL CHECK (level IN (0, 3, 12)),
            month timestamptz NOT NULL,
            closed_month timestamptz,
            handled_month timestamptz,
            street_id integer,
            community_id integer,
            grid_id integer,
            class_code varchar(16),
            department varchar(100),
            received integer NOT NULL DEFAULT 0,
            rejected integer NOT NULL DEFAULT 0,
            registered integer NOT NULL DEFAULT 0,
            due integer NOT NULL DEFAULT 0,
            on_time integer NOT NULL DEFAULT 0,
            reworked integer NOT NULL DEFAULT 0,
            extended integer NOT NULL DEFAULT 0,
            CONSTRAINT incident_rollup_key UNIQUE NULLS NOT DISTINCT (level, month, closed_month, handled_month,
                street_id, community_id, grid_id, class_code, department)
        ) PARTITION BY LIST (level)"""
    )
    # one partition per level: a query reads only its level's rows
    for level in (0, 3, 12):
        # bulk writes rewrite many rows: vacuum and analyse after a small share of changes
        op.execute(f"CREATE TABLE incident_rollup_l{level} PARTITION OF incident_rollup FOR VALUES IN ({level}) "
                   f"WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02)")
    op.execute(
        """
        CREATE TABLE incident_heat_sizes (
            cell_m double precision PRIMARY KEY,
            lon0 double precision NOT NULL,
            lat0 double precision NOT NULL,
            kx double precision NOT NULL,
            ky double precision NOT NULL,
            k double precision NOT NULL,
            built_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute(
        """
        CREATE TABLE incident_heat_rollup (
            cell_m double precision NOT NULL REFERENCES incident_heat_sizes (cell_m) ON DELETE CASCADE,
            month timestamptz NOT NULL,
            q integer NOT NULL,
            r integer NOT NULL,
            n integer NOT NULL,
            PRIMARY KEY (cell_m, month, q, r)
        )"""
    )
    # A case due in a whole month of a period but closed (or handled) in the period's last, partial month counts
    # as closed: these partial indexes find such late cases without reading the month.
    op.execute("CREATE INDEX ix_incidents_late_closed ON incidents (closed_at) WHERE closed_at > due_at")
    op.execute("CREATE INDEX ix_incidents_late_handled ON incidents (handled_at) "
               "WHERE handled_at > least(due_at, closed_at)")
    # The deadline light of the open cases (from the incidents, it depends on now()) by an index-only scan.
    op.execute("CREATE INDEX ix_incidents_open_light ON incidents (due_at) INCLUDE (state, suspended_at, "
               "time_limit_hours, extended_hours, street_id, community_id, grid_id, micro_grid_id, class_code, "
               "department) WHERE state IN ('dispatched', 'handled', 'reported', 'suspended')")
    op.execute(
        f"""
        CREATE FUNCTION incident_rollup_apply() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {_apply([("new_rows", "1")])}
            ELSIF TG_OP = 'UPDATE' THEN
                {_apply([("new_rows", "1"), ("old_rows", "-1")])}
            ELSIF TG_OP = 'DELETE' THEN
                {_apply([("old_rows", "-1")])}
            END IF;
            RETURN NULL;
        END $$"""
    )
    op.execute(
        """
        CREATE FUNCTION incident_rollup_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            TRUNCATE incident_rollup, incident_heat_rollup;
            RETURN NULL;
        END $$"""
    )
    op.execute(
        f"""
        CREATE FUNCTION incident_rollup_refresh() RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            -- writers wait (and in-flight writers are waited for), so the rebuilt counts are the table's
            LOCK TABLE incidents IN SHARE MODE;
            TRUNCATE incident_rollup, incident_heat_rollup;
            {_apply([("incidents", "1")])}
        END $$"""
    )
    op.execute("CREATE TRIGGER incident_rollup_insert AFTER INSERT ON incidents REFERENCING NEW TABLE AS new_rows "
               "FOR EACH STATEMENT EXECUTE FUNCTION incident_rollup_apply()")
    op.execute("CREATE TRIGGER incident_rollup_update AFTER UPDATE ON incidents "
               "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
               "FOR EACH STATEMENT EXECUTE FUNCTION incident_rollup_apply()")
    op.execute("CREATE TRIGGER incident_rollup_delete AFTER DELETE ON incidents REFERENCING OLD TABLE AS old_rows "
               "FOR EACH STATEMENT EXECUTE FUNCTION incident_rollup_apply()")
    op.execute("CREATE TRIGGER incident_rollup_truncate AFTER TRUNCATE ON incidents "
               "FOR EACH STATEMENT EXECUTE FUNCTION incident_rollup_truncate()")
    op.execute("SELECT incident_rollup_refresh()")


def downgrade() -> None:
    for name in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS incident_rollup_{name} ON incidents")
    op.execute("DROP FUNCTION IF EXISTS incident_rollup_refresh()")
    op.execute("DROP FUNCTION IF EXISTS incident_rollup_truncate()")
    op.execute("DROP FUNCTION IF EXISTS incident_rollup_apply()")
    op.execute("DROP INDEX IF EXISTS ix_incidents_open_light")
    op.execute("DROP INDEX IF EXISTS ix_incidents_late_handled")
    op.execute("DROP INDEX IF EXISTS ix_incidents_late_closed")
    op.execute("DROP TABLE IF EXISTS incident_heat_rollup")
    op.execute("DROP TABLE IF EXISTS incident_heat_sizes")
    op.execute("DROP TABLE IF EXISTS incident_rollup")
    op.execute("DROP FUNCTION IF EXISTS incident_rollup_tz()")
