"""Incidents and their rollups partitioned by month (按月分区), with a default partition each.

- `incidents` by RANGE (reported_at), `incident_events` by RANGE (at), `incident_rollup` and
  `incident_heat_rollup` by RANGE (month); months are local (Asia/Shanghai, `incident_rollup_tz()`), partitions are
  named `<table>_pYYYYMM`, rows outside every month land in `<table>_default`.
- A primary key of a partitioned table must hold the partition key: `incidents` is keyed by (id, reported_at),
  `incident_events` by (id, at). The ids stay unique (one sequence each) but the database can no longer say so.
- References to an incident (`incident_events`, `incident_photos`, any table with a foreign key to incidents(id)
  when this runs) become composite foreign keys (incident_id, incident_reported_at) → incidents (id, reported_at)
  with their ON DELETE action and ON UPDATE CASCADE: the database keeps enforcing integrity (a trigger could not
  lock the referenced row as reliably). `incident_reported_at` is filled by a BEFORE trigger
  (`incident_ref_fill`) from the incident, so writers keep naming the incident by its id alone.
- JIT is switched off for the database: it compiles every partition's expressions again (see `_JIT_OFF`).
- `incident_partitions_ensure(lo, hi)` creates the missing months in [lo, hi) for all four tables, moving rows that
  arrived in a default partition meanwhile (moved with triggers and reference checks off, so rollup counts and
  references are unchanged; only a role allowed to set `session_replication_role` can move them, others skip
  that month with a notice). It runs here (from the oldest stored month, at least 12 months back, to 3 ahead)
  and from `gridatlas incidents retention` (`geo.incidents.retention`).

The rebuild is generic over columns, indexes, constraints and triggers (read from the catalog), so columns other
migrations add to these tables are carried over whichever runs first.

Revision ID: 0022_incident_partitions
Revises: 0021_incident_history
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0022_incident_partitions"
down_revision = "0021_incident_history"
branch_labels = None
depends_on = None

#: (table, partition key) of the partitioned tables, parents first.
PARTITIONED = (("incidents", "reported_at"), ("incident_events", "at"), ("incident_rollup", "month"),
               ("incident_heat_rollup", "month"))
#: Rollups rewrite many rows per write: vacuum and analyse their partitions after a small share of changes.
ROLLUP_OPTIONS = "autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02"
MONTHS_BACK, MONTHS_AHEAD = 12, 3

_ENSURE = f"""
CREATE FUNCTION incident_partitions_ensure(lo timestamptz, hi timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    tz constant text := incident_rollup_tz();
    may_move constant boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                                 OR has_parameter_privilege('session_replication_role', 'SET');
    m timestamp;
    b0 timestamptz;
    b1 timestamptz;
    spec record;
    g record;
    part text;
    dflt text;
    cols text;
    cond text;
    opts text;
    has_rows boolean;
    created integer := 0;
BEGIN
    m := date_trunc('month', lo AT TIME ZONE tz);
    WHILE (m AT TIME ZONE tz) < hi LOOP
        b0 := m AT TIME ZONE tz;
        b1 := (m + interval '1 month') AT TIME ZONE tz;
        FOR spec IN SELECT * FROM (VALUES {", ".join(f"('{t}', '{k}')" for t, k in PARTITIONED)}) v (tbl, key) LOOP
            part := spec.tbl || '_p' || to_char(m, 'YYYYMM');
            CONTINUE WHEN to_regclass(part) IS NOT NULL;
            dflt := spec.tbl || '_default';
            cond := format('%I >= %L AND %I < %L', spec.key, b0, spec.key, b1);
            opts := CASE WHEN spec.tbl LIKE 'incident%rollup' THEN ' WITH ({ROLLUP_OPTIONS})' ELSE '' END;
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(spec.tbl)
                                      AND partstrat = 'r');
            has_rows := false;
            IF to_regclass(dflt) IS NOT NULL THEN
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %s)', dflt, cond) INTO STRICT has_rows;
            END IF;
            IF has_rows THEN
                IF NOT may_move THEN
                    RAISE NOTICE '% has rows of %: left there (moving them needs a superuser)',
                        dflt, to_char(m, 'YYYY-MM');
                    CONTINUE;
                END IF;
                -- replica role: no trigger (rollup counts, lifecycle) and no reference check fires for rows that
                -- only change partition
                PERFORM set_config('session_replication_role', 'replica', true);
                SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols FROM pg_attribute
                WHERE attrelid = spec.tbl::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
                EXECUTE format('CREATE TEMP TABLE incident_partition_move ON COMMIT DROP AS SELECT %s FROM %I WHERE %s',
                               cols, dflt, cond);
                EXECUTE format('DELETE FROM %I WHERE %s', dflt, cond);
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)%s',
                               part, spec.tbl, b0, b1, opts);
                EXECUTE format('INSERT INTO %I (%s) SELECT %s FROM incident_partition_move', part, cols, cols);
                DROP TABLE incident_partition_move;
                PERFORM set_config('session_replication_role', 'origin', true);
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)%s',
                               part, spec.tbl, b0, b1, opts);
            END IF;
            -- the parent's grants (the service's group), for statements that name a partition or lock them all
            FOR g IN SELECT a.grantee::regrole::text AS who, a.privilege_type AS what
                     FROM pg_class c, aclexplode(c.relacl) a
                     WHERE c.oid = spec.tbl::regclass AND a.grantee NOT IN (0, c.relowner) LOOP
                EXECUTE format('GRANT %s ON %I TO %s', g.what, part, g.who);
            END LOOP;
            created := created + 1;
        END LOOP;
        m := m + interval '1 month';
    END LOOP;
    RETURN created;
END $$
"""

_REF_FILL = """
CREATE FUNCTION incident_ref_fill() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ref bigint := (to_jsonb(NEW) ->> TG_ARGV[0])::bigint;
    ts timestamptz;
BEGIN
    -- TG_ARGV: the column naming the incident's id, the column copying its reported_at (the partition key)
    IF ref IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT i.reported_at INTO ts FROM incidents i WHERE i.id = ref;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING MESSAGE = format(
            'insert or update on table "%s" violates foreign key: incident %s does not exist', TG_TABLE_NAME, ref);
    END IF;
    RETURN jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[1], ts));
END $$
"""


def _rows(sql: str, **params) -> list:
    return list(op.get_bind().execute(text(sql), params))


def _x(sql: str) -> None:
    op.get_bind().exec_driver_sql(sql.replace("%", "%%"))  # the driver reads % as a placeholder


def _insertable(table: str) -> list[str]:
    return [r[0] for r in _rows(
        "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", t=table)]


def _incoming(table: str) -> list:
    """Foreign keys from other tables to `table`: (constraint, referencing table, its columns, ON DELETE code)."""
    return _rows(
        "SELECT c.conname, c.conrelid::regclass::text, "
        "array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k (n, o) "
        "      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o)::text[], "
        "c.confdeltype FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid "
        "WHERE c.contype = 'f' AND c.confrelid = CAST(:t AS regclass) AND c.conrelid <> c.confrelid "
        "AND NOT r.relispartition AND c.conparentid = 0", t=table)


def _definitions(table: str) -> tuple[list[str], list[tuple[str, str]], list[str], str | None]:
    """Index definitions (not the primary key's), constraints to re-add (foreign and unique keys: name, body),
    trigger definitions, and the sequence owned by `id` of `table`."""
    indexes = [r[0] for r in _rows(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid "
        "AND c.conrelid = i.indrelid WHERE i.indrelid = CAST(:t AS regclass) AND NOT i.indisprimary "
        "AND (c.contype IS NULL OR c.contype NOT IN ('u', 'x'))", t=table)]
    constraints = [(r[0], r[1]) for r in _rows(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) "
        "AND contype IN ('f', 'u', 'x') AND conparentid = 0 ORDER BY conname", t=table)]
    triggers = [r[0] for r in _rows(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal "
        "AND tgparentid = 0 ORDER BY tgname", t=table)]
    seq = _rows("SELECT pg_get_serial_sequence(:t, 'id')", t=table)[0][0] if _rows(
        "SELECT 1 FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attname = 'id' AND NOT attisdropped",
        t=table) else None
    return indexes, constraints, triggers, seq


def _ensure_months(table: str, key: str) -> None:
    """Monthly partitions for the window (12 months back, 3 ahead) and for every older or later month `table`
    holds rows of (sparse: no empty partitions for the years between)."""
    _x(f"SELECT incident_partitions_ensure(now() - interval '{MONTHS_BACK} months', "
       f"now() + interval '{MONTHS_AHEAD} months')")
    for (month,) in _rows(
            f"SELECT DISTINCT date_trunc('month', {key}, incident_rollup_tz()) FROM {table} "
            f"WHERE {key} < now() - interval '{MONTHS_BACK} months' "
            f"OR {key} >= now() + interval '{MONTHS_AHEAD} months'"):
        op.get_bind().execute(text("SELECT incident_partitions_ensure(:m, :m + interval '1 month')"), {"m": month})


def _rebuild(table: str, partition_by: str, primary_key: str, *, options: str = "") -> None:
    """Rebuild `table` with the same columns, defaults, checks, indexes, keys and triggers, partitioned by
    `partition_by` (RANGE: monthly partitions and a default; LIST (level): the three level partitions; '' a
    plain table), keyed by `primary_key`."""
    indexes, constraints, triggers, seq = _definitions(table)
    old = f"{table}_unpartitioned_old"
    _x(f"ALTER TABLE {table} RENAME TO {old}")
    like = ("INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING IDENTITY INCLUDING STORAGE "
            "INCLUDING COMMENTS")
    with_options = f" WITH ({options})" if options else ""
    if partition_by:
        _x(f"CREATE TABLE {table} (LIKE {old} {like}) PARTITION BY {partition_by}")
    else:
        _x(f"CREATE TABLE {table} (LIKE {old} {like}){with_options}")
    if partition_by.startswith("RANGE"):
        _x(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT{with_options}")
        key = partition_by.split("(")[1].rstrip(")")
        _ensure_months(old, key)
    elif partition_by.startswith("LIST"):
        for level in (0, 3, 12):
            _x(f"CREATE TABLE {table}_l{level} PARTITION OF {table} FOR VALUES IN ({level}){with_options}")
    cols = ", ".join(_insertable(table))
    _x(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {old}")
    if seq:
        _x(f"ALTER SEQUENCE {seq} OWNED BY {table}.id")
    _x(f"DROP TABLE {old}")
    if primary_key:
        _x(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({primary_key})")
    for sql in indexes:
        _x(sql)
    for name, body in constraints:
        _x(f"ALTER TABLE {table} ADD CONSTRAINT {name} {body}")
    for sql in triggers:
        _x(sql)
    _x(f"ANALYZE {table}")


_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


#: JIT compiles every partition's expressions again (per parallel worker): an 8,500-case heat tile over 30
#: partitions spent 11 s compiling for 4 s of work (0.25 s unpartitioned); without JIT it takes 30–60 ms. Off for
#: the database, where the schema owner may set it.
_JIT_OFF = """
DO $$ BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'MEMBER') THEN
        EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
    END IF;
END $$"""


def upgrade() -> None:
    _x(_JIT_OFF)
    _x(_ENSURE)
    _x(_REF_FILL)
    _x("REVOKE ALL ON FUNCTION incident_partitions_ensure(timestamptz, timestamptz) FROM PUBLIC")
    # references to incidents: dropped now, re-added as composite keys once incidents is rebuilt
    refs = _incoming("incidents")
    for name, tbl, _cols, _del in refs:
        _x(f"ALTER TABLE {tbl} DROP CONSTRAINT {name}")
    _rebuild("incidents", "RANGE (reported_at)", "id, reported_at")
    _rebuild("incident_events", "RANGE (at)", "id, at")
    _rebuild("incident_rollup", "RANGE (month)", "", options=ROLLUP_OPTIONS)
    _rebuild("incident_heat_rollup", "RANGE (month)", "cell_m, month, q, r", options=ROLLUP_OPTIONS)
    for name, tbl, cols, deltype in refs:
        (col,) = cols
        at = "incident_reported_at" if col == "incident_id" else f"{col}_reported_at"
        _x(f"ALTER TABLE {tbl} ADD COLUMN {at} timestamptz")
        _x(f"UPDATE {tbl} t SET {at} = i.reported_at FROM incidents i WHERE i.id = t.{col}")
        notnull = _rows("SELECT attnotnull FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attname = :c",
                        t=tbl, c=col)[0][0]
        if notnull:
            _x(f"ALTER TABLE {tbl} ALTER COLUMN {at} SET NOT NULL")
        # archiving a month finds its cases' events, photos … by it
        _x(f"CREATE INDEX ix_{tbl}_{at} ON {tbl} ({at})")
        _x(f"CREATE TRIGGER {tbl}_{col}_ref BEFORE INSERT OR UPDATE OF {col} ON {tbl} "
           f"FOR EACH ROW EXECUTE FUNCTION incident_ref_fill('{col}', '{at}')")
        _x(f"ALTER TABLE {tbl} ADD CONSTRAINT {name} FOREIGN KEY ({col}, {at}) REFERENCES incidents (id, reported_at) "
           f"ON DELETE {_ACTIONS[deltype]} ON UPDATE CASCADE")


def downgrade() -> None:
    refs = _incoming("incidents")
    for name, tbl, _cols, _del in refs:
        _x(f"ALTER TABLE {tbl} DROP CONSTRAINT {name}")
    _rebuild("incident_heat_rollup", "", "cell_m, month, q, r")
    _rebuild("incident_rollup", "LIST (level)", "", options=ROLLUP_OPTIONS)
    _rebuild("incident_events", "", "id")
    _rebuild("incidents", "", "id")
    for name, tbl, cols, deltype in refs:
        col, at = cols
        _x(f"DROP TRIGGER IF EXISTS {tbl}_{col}_ref ON {tbl}")
        _x(f"DROP INDEX IF EXISTS ix_{tbl}_{at}")
        _x(f"ALTER TABLE {tbl} DROP COLUMN {at}")
        _x(f"ALTER TABLE {tbl} ADD CONSTRAINT {name} FOREIGN KEY ({col}) REFERENCES incidents (id) "
           f"ON DELETE {_ACTIONS[deltype]}")
    _x(_JIT_OFF.replace("SET jit = off", "RESET jit"))
    _x("DROP FUNCTION IF EXISTS incident_ref_fill()")
    _x("DROP FUNCTION IF EXISTS incident_partitions_ensure(timestamptz, timestamptz)")
