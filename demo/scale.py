"""Scale simulation (规模模拟): the synthetic district tiled to a province's size, and years of incidents, cheaply.

`tile_district(engine, tiles)` copies the district already loaded (`demo.load`) `tiles − 1` times on a square
lattice, in PostGIS and set-based: one INSERT … SELECT per table for all copies, geometries translated in metres
(UTM 49N), ids offset per copy, codes given the copy's own 6-digit district prefix (43xxxx). Scale 1 tiled 100
times is scale 100: ~98,000 grids, ~820,000 buildings. Nothing passes through Python, so memory stays flat.

`add_incidents(engine, n, …)` streams `n` more incidents the same way: copies of the loaded year of incidents,
each copy put in one tile and shifted back by whole years, attribution carried over (a copy of a case in a copy of
its grid), one statement per year of history, so a batch is bounded by the tiles × the base year. In bulk mode
(the default) per-row triggers and reference checks are off and the rollups are rebuilt once at the end; otherwise
every statement goes through the writers' triggers (the lifecycle fill, nine reference checks, the rollups).
100 M incidents from a scale-1 year (12,000): ~8,300 copies. The monthly partitions of every year written are
created first.

The columns are read from the catalog and the foreign keys decide which ids are offset, so tables and columns
added later are carried along.
"""

from __future__ import annotations

import datetime as dt
import math
import time

from sqlalchemy import Connection, Engine, text

from demo.district import DISTRICT_CODE, METRIC_EPSG

#: The tables a district's copy is written to, parents first (incidents come by add_incidents).
TILED = ("streets", "street_boundaries", "communities", "community_boundaries", "grids", "grid_boundaries",
         "micro_grids", "micro_grid_boundaries", "compounds", "buildings", "units", "people", "staff_assignments")
#: Space between two copies, metres.
GAP_M = 500.0


def _columns(conn: Connection, table: str) -> list[str]:
    return list(conn.execute(text(
        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped "
        "AND attgenerated = '' ORDER BY attnum"), {"t": table}).scalars())


def _references(conn: Connection, table: str) -> dict[str, str]:
    """Single-column foreign keys of `table`: column → referenced table."""
    rows = conn.execute(text("""
        SELECT a.attname, c.confrelid::regclass::text FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.conrelid = CAST(:t AS regclass) AND cardinality(c.conkey) = 1"""),
        {"t": table}).all()
    return {col: ref for col, ref in rows}


def lattice(n: int, width: float, height: float) -> list[tuple[int, float, float]]:
    """(copy number, dx, dy) in metres of copies 1 … n − 1 on a square lattice (copy 0 is the original)."""
    cols = math.ceil(math.sqrt(n))
    return [(k, (k % cols) * (width + GAP_M), (k // cols) * (height + GAP_M)) for k in range(1, n)]


def tile_district(engine: Engine, tiles: int) -> dict[str, float]:
    """Copy the loaded district `tiles − 1` times beside itself (see the module docstring); timings in seconds."""
    timings: dict[str, float] = {}
    if tiles <= 1:
        return timings
    with engine.begin() as conn:
        ext = conn.execute(text(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(ST_Transform(geom, "
            f"{METRIC_EPSG})) AS e FROM street_boundaries) s")).one()
        copies = lattice(tiles, ext[2] - ext[0], ext[3] - ext[1])
        offsets = {t: int(conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {t}")).scalar_one()) for t in TILED}
        conn.execute(text("CREATE TEMP TABLE scale_tiles (k integer, dx double precision, dy double precision) "
                          "ON COMMIT DROP"))
        conn.execute(text("INSERT INTO scale_tiles SELECT * FROM unnest(CAST(:k AS int[]), CAST(:dx AS float8[]), "
                          "CAST(:dy AS float8[]))"),
                     {"k": [c[0] for c in copies], "dx": [c[1] for c in copies], "dy": [c[2] for c in copies]})
        for table in TILED:
            t0 = time.perf_counter()
            refs = _references(conn, table)
            exprs = []
            for col in _columns(conn, table):
                if col == "id":
                    exprs.append(f"b.id + t.k * {offsets[table]}")
                elif refs.get(col) in offsets:
                    exprs.append(f"b.{col} + t.k * {offsets[refs[col]]}")
                elif col == "code":
                    # the copy's own district prefix: every level's code starts with it
                    exprs.append(f"'43' || lpad(({DISTRICT_CODE[2:]} + t.k)::text, 4, '0') || substr(b.code, 7)")
                elif col == "geom":
                    exprs.append(f"ST_Transform(ST_Translate(ST_Transform(b.geom, {METRIC_EPSG}), t.dx, t.dy), 4326)")
                else:
                    exprs.append(f"b.{col}")
            cols = ", ".join(_columns(conn, table))
            conn.execute(text(f"INSERT INTO {table} ({cols}) SELECT {', '.join(exprs)} FROM {table} b "
                              f"CROSS JOIN scale_tiles t WHERE b.id <= {offsets[table]} ORDER BY t.k, b.id"))
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT max(id) FROM {table}))"))
            timings[f"tile_{table}_s"] = time.perf_counter() - t0
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in TILED:
            conn.execute(text(f"ANALYZE {table}"))
    return timings


def add_incidents(engine: Engine, n: int, seed: int = 1, *, bulk: bool = True) -> dict[str, float]:
    """Write `n` more incidents as shifted copies of the loaded ones (see the module docstring): rows written,
    seconds, and seconds per million. `bulk`: with per-row triggers and reference checks off (the copies of valid
    rows are valid by construction; needs the schema owner on the local cluster) and the rollups rebuilt once at
    the end; `bulk=False` goes through the writers' path (what bench/bench_scaling.py compares)."""
    t_start = time.perf_counter()
    with engine.begin() as conn:
        # the loaded year (the originals): every copy lies at least a year before it
        last, first = conn.execute(text("SELECT max(reported_at), min(reported_at) FROM incidents")).one()
        if last is None:
            raise ValueError("no incidents to copy: load a district first")
        since = last - dt.timedelta(days=365)
        base = int(conn.execute(text("SELECT count(*) FROM incidents WHERE reported_at > :s"),
                                {"s": since}).scalar_one())
        # years already written by an earlier call: go on further back
        done_years = max(0, math.ceil((since - first) / dt.timedelta(days=365)))
        tiles = int(conn.execute(text(
            "SELECT count(DISTINCT substr(code, 1, 6)) FROM streets")).scalar_one())
        ext = conn.execute(text(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(ST_Transform(geom, "
            f"{METRIC_EPSG})) AS e FROM street_boundaries WHERE street_id IN (SELECT id FROM streets "
            f"WHERE code LIKE '{DISTRICT_CODE}%')) s")).one()
        offsets = {t: int(conn.execute(text(f"SELECT coalesce(max(id), 0) / :n FROM {t}"), {"n": tiles}).scalar_one())
                   for t in ("streets", "communities", "grids", "micro_grids", "compounds", "buildings")}
        span = (since, last)
        copies_needed = math.ceil(n / base)
        years = math.ceil(copies_needed / tiles)
    for y in range(done_years + 1, done_years + years + 1):
        # a year of months per transaction: each new partition and its indexes hold locks until the commit
        with engine.begin() as conn:
            conn.execute(text("SELECT incident_partitions_ensure("
                              "CAST(:lo AS timestamptz) - make_interval(years => :y), "
                              "CAST(:hi AS timestamptz) - make_interval(years => :y))"),
                         {"lo": span[0], "hi": span[1], "y": y})
    copies = lattice(max(tiles, 1), ext[2] - ext[0], ext[3] - ext[1])
    all_tiles = [(0, 0.0, 0.0), *copies][:tiles]
    cols = ["geom", "reported_at", "class_code", "source", "state", "description", "reporter", "department",
            "due_at", "closed_at", "version_id", "street_id", "community_id", "grid_id", "micro_grid_id",
            "compound_id", "building_id", "registered_at", "dispatched_at", "handled_at", "feedback_at",
            "evaluated_at", "updated_at", "time_limit_hours", "extended_hours", "extension_count", "rework_count",
            "return_count", "suspended_at", "suspended_from", "evaluation"]
    shifted = {"reported_at", "due_at", "closed_at", "registered_at", "dispatched_at", "handled_at", "feedback_at",
               "evaluated_at", "updated_at", "suspended_at"}
    written = 0
    per_statement = []
    year = done_years + 1
    while written < n:
        take = min(n - written, base * tiles)
        exprs = []
        for c in cols:
            if c == "geom":
                exprs.append(f"ST_Transform(ST_Translate(ST_Transform(b.geom, {METRIC_EPSG}), t.dx, t.dy), 4326)")
            elif c in shifted:
                exprs.append(f"b.{c} - make_interval(years => {year})")
            elif c in {"street_id", "community_id", "grid_id", "micro_grid_id", "compound_id", "building_id"}:
                table = {"micro_grid_id": "micro_grids", "community_id": "communities"}.get(c, c[:-3] + "s")
                exprs.append(f"b.{c} + t.k * {offsets[table]}")
            else:
                exprs.append(f"b.{c}")
        t0 = time.perf_counter()
        with engine.begin() as conn:
            if bulk:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("CREATE TEMP TABLE scale_tiles (k integer, dx double precision, dy double precision) "
                              "ON COMMIT DROP"))
            conn.execute(text("INSERT INTO scale_tiles SELECT * FROM unnest(CAST(:k AS int[]), "
                              "CAST(:dx AS float8[]), CAST(:dy AS float8[]))"),
                         {"k": [c[0] for c in all_tiles], "dx": [c[1] for c in all_tiles],
                          "dy": [c[2] for c in all_tiles]})
            # the originals only, in a seeded order so a partial batch is a fair sample
            conn.execute(text(f"""
                INSERT INTO incidents ({", ".join(cols)})
                SELECT {", ".join(exprs)} FROM (
                    SELECT b.*, row_number() OVER (ORDER BY md5(b.id::text || :seed)) AS rn
                    FROM incidents b WHERE b.reported_at > :since) b
                JOIN scale_tiles t ON true
                WHERE (b.rn - 1) * :tiles + t.k < :take"""),
                {"seed": str(seed), "since": since, "tiles": tiles, "take": take})
        per_statement.append(time.perf_counter() - t0)
        written += take
        year += 1
    if bulk:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL jit = off"))
            conn.execute(text("SELECT incident_rollup_refresh()"))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE incidents"))
    total = time.perf_counter() - t_start
    return {"rows": float(written), "seconds": total, "s_per_million": total / written * 1e6,
            "statements": float(len(per_statement))}


def main() -> None:
    """`python -m demo.scale --tiles 100 --incidents 10000000`: the demo district (loaded first into an empty
    database) tiled and its incidents multiplied, in the configured database as the schema owner."""
    import argparse

    from demo.load import load_demo_if_empty
    from geo.store import db

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--tiles", type=int, default=10, help="copies of the scale-1 district (100 ≈ a province)")
    parser.add_argument("--incidents", type=int, default=0, help="incidents to add (copies of the loaded year)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--writers-path", action="store_true", help="through the triggers, not the bulk path")
    args = parser.parse_args()
    engine = db.make_engine(db.admin_database_url(start_local=True))
    load_demo_if_empty(engine, 1.0, args.seed)
    with engine.connect() as conn:
        tiled = conn.execute(text("SELECT count(DISTINCT substr(code, 1, 6)) FROM streets")).scalar_one()
    if tiled > 1:
        raise SystemExit(f"the database holds {tiled} copies already; tile an untiled district")
    print(tile_district(engine, args.tiles))
    if args.incidents:
        print(add_incidents(engine, args.incidents, args.seed, bulk=not args.writers_path))


if __name__ == "__main__":
    main()
