"""The demo district: generate it (demo.synth), write it to a GeoPackage and load it into an empty database."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, text

from geo.store.load import BOUNDARY_TABLES, database_is_empty, load_district
from geo.store.transactions import dry_run_transaction

#: Tables holding a district's data (not users, keys or the audit log), children first.
DISTRICT_TABLES = (
    "incident_events", "incidents", "staff_assignments", "people", "units", "buildings", "compounds",
    "micro_grid_boundaries", "micro_grids", "grid_boundaries", "grids", "community_boundaries", "communities",
    "street_boundaries", "streets", "boundary_versions",
)


def clear_district(engine: Engine) -> None:
    """Delete every district table's rows in one transaction (users, keys and audit stay)."""
    with engine.begin() as conn:
        existing = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
        tables = [t for t in DISTRICT_TABLES if t in existing]
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def generate_and_load(engine: Engine | None, scale: float, seed: int, gpkg: Path | None = None,
                      replace: bool = False) -> dict:
    """Generate a district; write it to `gpkg` and/or the database; return counts and timings in seconds."""
    from demo.synth import generate_district

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    district = generate_district(scale=scale, seed=seed)
    timings["generate_s"] = time.perf_counter() - t0
    if gpkg is not None:
        t0 = time.perf_counter()
        gpkg.parent.mkdir(parents=True, exist_ok=True)
        gpkg.unlink(missing_ok=True)
        district.to_gpkg(gpkg)
        timings["gpkg_s"] = time.perf_counter() - t0
    if engine is not None:
        if replace:
            clear_district(engine)
        t0 = time.perf_counter()
        load_district(engine, district)
        timings["load_s"] = time.perf_counter() - t0
    return {"counts": district.counts(), "timings": timings, "fingerprint": district.fingerprint()}


def load_demo_if_empty(engine: Engine, scale: float = 1.0, seed: int = 1) -> dict | None:
    """Load the demo district when the database holds none; None when data was already there."""
    if not database_is_empty(engine):
        return None
    return generate_and_load(engine, scale, seed)


#: Who creates the demo district's boundary version (geo.store.load.load_district).
DEMO_CREATOR = "gridatlas demo"
#: Rows of these tables that hang on a removed demo unit are the demo's own and go with it; any other table's
#: nullable reference to a removed row is set to NULL instead (a real row is never deleted for the demo's sake).
_DEMO_CONTENT = {"compounds", "buildings", "units", "people", "staff_assignments", "incidents", "incident_events",
                 "street_boundaries", "community_boundaries", "grid_boundaries", "micro_grid_boundaries"}


def _references(conn, table: str) -> list[tuple[str, str, bool]]:
    """(referencing table, its column, whether the column is nullable) for every one-column foreign key to table.id."""
    rows = conn.execute(text("""
        SELECT cl.relname, att.attname, NOT att.attnotnull
        FROM pg_constraint c
        JOIN pg_class cl ON cl.oid = c.conrelid
        JOIN pg_attribute att ON att.attrelid = c.conrelid AND att.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.confrelid = CAST(:t AS regclass) AND array_length(c.conkey, 1) = 1
    """), {"t": table}).all()
    return [(r[0], r[1], r[2]) for r in rows]


def _delete(conn, table: str, ids: list[int], counts: dict[str, int]) -> None:
    """Delete rows by id, first what refers to them (demo content deleted, other nullable references set NULL)."""
    if not ids:
        return
    for ref_table, column, nullable in _references(conn, table):
        if ref_table == table:
            continue
        if nullable and ref_table not in _DEMO_CONTENT:
            conn.execute(text(f'UPDATE "{ref_table}" SET "{column}" = NULL WHERE "{column}" = ANY(:ids)'),
                         {"ids": ids})
            continue
        has_id = conn.execute(text("SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = :t "
                                   "AND column_name = 'id')"), {"t": ref_table}).scalar()
        if has_id:
            child = list(conn.execute(text(f'SELECT id FROM "{ref_table}" WHERE "{column}" = ANY(:ids)'),
                                      {"ids": ids}).scalars())
            _delete(conn, ref_table, child, counts)
        else:
            n = conn.execute(text(f'DELETE FROM "{ref_table}" WHERE "{column}" = ANY(:ids)'), {"ids": ids}).rowcount
            counts[ref_table] = counts.get(ref_table, 0) + n
    n = conn.execute(text(f'DELETE FROM "{table}" WHERE id = ANY(:ids)'), {"ids": ids}).rowcount
    counts[table] = counts.get(table, 0) + n


def remove_demo(engine: Engine, dry_run: bool = False) -> dict:
    """Remove the demo district from a database that also holds real data (`gridatlas demo remove`).

    The demo is told apart by its boundary version (created by "gridatlas demo") and its district code: its
    streets, communities, grids and micro-grids are those with boundaries in that version only. Everything that
    hangs on them (compounds, buildings, units, staff, incidents, boundaries) goes with them; any other row that
    refers to one keeps its place with the reference set to NULL. Units with boundaries of other versions too (real
    data imported over demo codes) are kept, and said so. One transaction; `dry_run` counts and rolls back.
    """
    from demo.district import DISTRICT_CODE

    counts: dict[str, int] = {}
    with dry_run_transaction(engine, dry_run) as conn:
        versions = list(conn.execute(text("SELECT id FROM boundary_versions WHERE created_by = :c"),
                                     {"c": DEMO_CREATOR}).scalars())
        kept: list[str] = []
        for level in ("micro_grids", "grids", "communities", "streets"):
            btable, fk = BOUNDARY_TABLES[level]
            rows = conn.execute(text(f"""
                SELECT u.id, u.code, bool_and(b.version_id = ANY(:v)) AS demo_only
                FROM {level} u JOIN {btable} b ON b.{fk} = u.id
                WHERE u.code LIKE :prefix GROUP BY u.id, u.code
            """), {"v": versions, "prefix": DISTRICT_CODE + "%"}).all()
            doomed = [r.id for r in rows if r.demo_only]
            kept += [r.code for r in rows if not r.demo_only]
            _delete(conn, level, doomed, counts)
        leftover = list(conn.execute(text("""
            SELECT v.id FROM boundary_versions v WHERE v.id = ANY(:v)
              AND NOT EXISTS (SELECT 1 FROM street_boundaries b WHERE b.version_id = v.id)
              AND NOT EXISTS (SELECT 1 FROM community_boundaries b WHERE b.version_id = v.id)
              AND NOT EXISTS (SELECT 1 FROM grid_boundaries b WHERE b.version_id = v.id)
              AND NOT EXISTS (SELECT 1 FROM micro_grid_boundaries b WHERE b.version_id = v.id)"""),
            {"v": versions}).scalars())
        _delete(conn, "boundary_versions", leftover, counts)
    return {"removed": {k: v for k, v in sorted(counts.items()) if v}, "kept_units": kept, "dry_run": dry_run}
