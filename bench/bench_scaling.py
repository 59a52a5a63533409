"""How each cost grows with scale (issue 18): the district generated at scale 1 and tiled (demo.scale) to 10 (or
more), with incidents multiplied, measuring at each scale:

- locate index: build time and memory (a fresh process each: resident memory before and after the build);
- locate throughput per process: a vectorised batch, and one point per call (what a request costs before HTTP);
- tile latency (ST_AsMVT): grids at z14 and incident heat cells at z12, warm, median of 5;
- incident writes: seconds per million added (COPY-like INSERT … SELECT with the rollup triggers);
- KPI and heatmap queries for the last 3 whole months (rollup path) and a mid-month span (raw path), on the
  partitioned incidents and on an unpartitioned copy of the same rows (schema `flat`, same indexes);
- batch locate on Dask with 1, 2 and 4 workers.

The machine is small and shared: read the numbers as per-unit costs, not as a statement of capacity. Writes
bench/results/scaling.json; docs/SCALING.md projects a province from them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time

from sqlalchemy import text

from bench.common import fresh_database, report

_INDEX_PROBE = r"""
import json, os, sys, time
import numpy as np
def rss():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS')) / 1024
from geo.store import db
from geo.locate.index import LocateIndex, read_frames
engine = db.make_engine(sys.argv[1])
import geo.locate.index, shapely, geopandas  # noqa: imports paid by every process
before = rss()
t0 = time.perf_counter()
with engine.connect() as conn:
    frames = read_frames(conn)
read_s = time.perf_counter() - t0
t0 = time.perf_counter()
index = LocateIndex(frames)
build_s = time.perf_counter() - t0
del frames
after = rss()
b = [float(v) for v in sys.argv[2].split(',')]
rng = np.random.default_rng(1)
lon = rng.uniform(b[0], b[2], 200_000); lat = rng.uniform(b[1], b[3], 200_000)
index.locate_many(lon[:1000], lat[:1000])
t0 = time.perf_counter(); index.locate_many(lon, lat); batch_s = time.perf_counter() - t0
t0 = time.perf_counter()
for i in range(1000):
    index.locate_many(lon[i:i + 1], lat[i:i + 1])
single_s = (time.perf_counter() - t0) / 1000
print(json.dumps({"read_s": read_s, "build_s": build_s, "rss_before_mb": before, "rss_after_mb": after,
                  "index_mb": index.nbytes / 2**20,
                  "batch_points_per_s": len(lon) / batch_s, "single_point_ms": single_s * 1000}))
"""


def _median(fn, repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def _bbox(engine, base_only: bool = False) -> list[float]:
    where = "WHERE street_id IN (SELECT id FROM streets WHERE code LIKE '430602%')" if base_only else ""
    with engine.connect() as conn:
        r = conn.execute(text(f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                              f"(SELECT ST_Extent(geom) AS e FROM street_boundaries {where}) s")).one()
    return [float(v) for v in r]


def _index_probe(url: str, bbox: list[float]) -> dict:
    out = subprocess.run([sys.executable, "-c", _INDEX_PROBE, url, ",".join(map(str, bbox))], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    import math

    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def _tiles(engine, bbox: list[float]) -> dict:
    from geo.features.collections import When
    from geo.features.tiles import tile

    lon, lat = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    out = {}
    with engine.connect() as conn:
        for layer, z in (("grids", 14), ("incidents", 12)):
            x, y = _tile_xy(lon, lat, z)
            tile(conn, layer, z, x, y, When(), None)
            out[f"tile_{layer}_z{z}_ms"] = _median(lambda layer=layer, z=z, x=x, y=y:
                                                  tile(conn, layer, z, x, y, When(), None)) * 1000
        conn.rollback()
    return out


def _flat_copy(engine) -> float:
    """An unpartitioned copy of the incidents (schema flat, same indexes): seconds to build it."""
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS flat CASCADE"))
        conn.execute(text("CREATE SCHEMA flat"))
        conn.execute(text("CREATE TABLE flat.incidents (LIKE public.incidents INCLUDING DEFAULTS INCLUDING GENERATED "
                          "INCLUDING CONSTRAINTS INCLUDING INDEXES)"))
        cols = ", ".join(conn.execute(text(
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = 'public.incidents'::regclass "
            "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum")).scalars())
        conn.execute(text(f"INSERT INTO flat.incidents ({cols}) SELECT {cols} FROM public.incidents"))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE flat.incidents"))
    return time.perf_counter() - t0


def _queries(engine, schema: str) -> dict:
    from geo.incidents import heatmap as hm
    from geo.incidents.kpi import KpiQuery, compute_kpis

    cst = dt.timezone(dt.timedelta(hours=8))
    with engine.connect() as conn:
        end = conn.execute(text("SELECT date_trunc('month', max(reported_at), 'Asia/Shanghai') FROM incidents")
                           ).scalar_one().astimezone(cst)
    start = (end - dt.timedelta(days=80)).replace(day=1)
    mid = (start + dt.timedelta(days=14), end - dt.timedelta(days=9))
    out = {}
    with engine.connect() as conn:
        conn.execute(text(f"SET search_path = {schema}, public"))
        whole, raw = KpiQuery(start, end, by="grid"), KpiQuery(*mid, by="grid")
        out["kpi_3_months_rollup_ms"] = _median(lambda: compute_kpis(conn, whole), 3) * 1000
        out["kpi_mid_month_raw_ms"] = _median(lambda: compute_kpis(conn, raw), 3) * 1000
        heat = hm.HeatmapQuery(start=mid[0], end=mid[1], cell_m=150.0, permutations=0, use_rollup=False)
        out["heatmap_mid_month_raw_ms"] = _median(lambda: hm.build_heatmap(conn, heat, with_grids=False,
                                                                           with_hotspots=False), 3) * 1000
        n = conn.execute(text("SELECT count(*) FROM incidents WHERE reported_at >= :a AND reported_at < :b"),
                         {"a": mid[0], "b": mid[1]}).scalar_one()
        out["incidents_in_mid_span"] = n
        conn.rollback()
    return out


def _dask(engine, bbox: list[float], workers: list[int], points: int, memory_limit: str = "4GiB") -> dict:
    import numpy as np

    from geo.batch.cluster import dask_client
    from geo.batch.locate import locate_points
    from geo.locate.index import read_frames

    rng = np.random.default_rng(2)
    lon, lat = rng.uniform(bbox[0], bbox[2], points), rng.uniform(bbox[1], bbox[3], points)
    with engine.connect() as conn:
        frames = read_frames(conn)
    out = {}
    for n in workers:
        try:
            with dask_client(workers=n, processes=True, memory_limit=memory_limit) as client:
                t0 = time.perf_counter()
                locate_points(client, frames, lon, lat)
                out[f"dask_{n}w_locate_s"] = time.perf_counter() - t0
        except Exception as exc:  # a worker lost (e.g. the index outgrew its memory limit) is a finding, not a crash
            out[f"dask_{n}w_locate_failed"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="1,10", help="scales as multiples of the scale-1 district (tiled)")
    parser.add_argument("--incidents-per-scale", type=int, default=100_000,
                        help="incidents per unit of scale (the scale-1 year holds 12,000)")
    parser.add_argument("--dask-workers", default="1,2,4")
    parser.add_argument("--dask-points", type=int, default=500_000)
    parser.add_argument("--dask-memory", default="4GiB", help="memory limit per Dask worker (the index is copied "
                        "to every worker: ~35 MiB per unit of scale)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from demo.load import generate_and_load
    from demo.scale import add_incidents, tile_district

    scales = sorted(int(s) for s in args.scales.split(","))
    rows = []
    with fresh_database("gridatlas_bench_scaling") as engine:
        t0 = time.perf_counter()
        generate_and_load(engine, 1.0, args.seed)
        base_s = time.perf_counter() - t0
        url = engine.url.render_as_string(hide_password=False)
        tiles_now = 1
        for scale in scales:
            row: dict = {"scale": scale}
            t0 = time.perf_counter()
            if scale > tiles_now:
                if tiles_now > 1:
                    raise SystemExit("tiling starts from the original district: give at most two scales, 1 and N")
                tile_district(engine, scale)
                tiles_now = scale
            row["tile_s"] = time.perf_counter() - t0 if scale > 1 else base_s
            with engine.connect() as conn:
                row["grids"] = conn.execute(text("SELECT count(*) FROM grids")).scalar_one()
                row["buildings"] = conn.execute(text("SELECT count(*) FROM buildings")).scalar_one()
                have = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
            want = args.incidents_per_scale * scale
            if want > have:
                # the writers' path (triggers, reference checks) on a slice, the bulk path for the rest
                r = add_incidents(engine, min(20_000, want - have), seed=args.seed, bulk=False)
                row["incident_write_triggers_s_per_million"] = r["s_per_million"]
                if want - have > 20_000:
                    r = add_incidents(engine, want - have - 20_000, seed=args.seed + scale)
                    row["incident_write_bulk_s_per_million"] = r["s_per_million"]
            with engine.connect() as conn:
                row["incidents"] = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
            bbox = _bbox(engine)
            probe = _index_probe(url, bbox)
            row.update({f"index_{k}": v for k, v in probe.items()})
            row.update(_tiles(engine, _bbox(engine, base_only=True)))
            part = _queries(engine, "public")
            row["flat_copy_s"] = _flat_copy(engine)
            flat = _queries(engine, "flat")
            row.update({f"partitioned_{k}": v for k, v in part.items()})
            row.update({f"unpartitioned_{k}": v for k, v in flat.items() if k != "incidents_in_mid_span"})
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA flat CASCADE"))
            row.update(_dask(engine, bbox, [int(w) for w in args.dask_workers.split(",")], args.dask_points,
                             args.dask_memory))
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
    # one row per measure, one column per scale: easier to read than 30 columns
    measures = [k for k in rows[0] if k != "scale"]
    table = [{"measure": m, **{f"scale {r['scale']}": r.get(m) for r in rows}} for m in measures]
    report("scaling", table, "Cost by scale (scale 1 generated, larger scales tiled from it; shared 2-core machine)")


if __name__ == "__main__":
    main()
