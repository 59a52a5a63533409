"""Measure what docs/SCALING.md reports: resident memory of one API process at a scale, and the Dask batch jobs'
throughput with 1 and 2 workers against the in-process paths. Loads a synthetic district into a scratch database
(dropped at the end) on the project's local cluster (or DATABASE_URL's server).

    .venv/bin/python deploy/measure.py --scale 1 --points 1000000 --out var/scaling/scale-1.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from geo.store import db  # noqa: E402

_spec = importlib.util.spec_from_file_location("gridatlas_deploy_cluster", Path(__file__).with_name("cluster.py"))
assert _spec and _spec.loader
cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster)


def scratch_database() -> str:
    base = make_url(db.admin_database_url(start_local=True))
    name = f"gridatlas_scale_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(base.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    u = make_url(url)
    with psycopg.connect(u.set(database="postgres", drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def measure_api(service_url: str, lon: np.ndarray, lat: np.ndarray, requests: int) -> dict:
    port = cluster.free_port()
    proc = cluster.start_api(port, {"DATABASE_URL": service_url}, Path("/tmp") / f"gridatlas-measure-{port}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        cluster.wait_ready(f"{base}/readyz", timeout=120, proc=proc)
        out = {"rss_mb_started": cluster.rss_mb(proc.pid)}
        with httpx.Client(timeout=120) as client:
            t0 = time.perf_counter()
            client.get(f"{base}/v1/locate", params={"lon": lon[0], "lat": lat[0]})
            out["first_locate_s"] = round(time.perf_counter() - t0, 2)
            out["rss_mb_index_built"] = cluster.rss_mb(proc.pid)
            t0 = time.perf_counter()
            for i in range(requests):
                client.get(f"{base}/v1/locate", params={"lon": lon[i % len(lon)], "lat": lat[i % len(lat)]})
            out["sequential_locate_per_s"] = round(requests / (time.perf_counter() - t0))
            out["rss_mb_after_requests"] = cluster.rss_mb(proc.pid)
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}
    finally:
        cluster.stop([proc])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", default=None)
    ap.add_argument("--api-only", action="store_true", help="only the API process's memory and first build")
    args = ap.parse_args()

    from demo.synth import generate_district
    from geo.store.load import load_district

    report: dict = {"scale": args.scale, "seed": args.seed, "cores": os.cpu_count()}
    district, report["generate_s"] = timed(generate_district, scale=args.scale, seed=args.seed)
    url = scratch_database()
    try:
        db.migrate(url)
        service_url = db.service_url_for(url)
        engine = db.make_engine(service_url)
        _, report["load_s"] = timed(load_district, engine, district)
        with engine.connect() as conn:
            report["counts"] = dict(conn.execute(text(
                "SELECT (SELECT count(*) FROM current_grids) AS grids, (SELECT count(*) FROM compounds) AS compounds,"
                " (SELECT count(*) FROM buildings) AS buildings, (SELECT count(*) FROM incidents) AS incidents"
            )).mappings().one())
            minx, miny, maxx, maxy = conn.execute(text(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                "(SELECT ST_Extent(geom) AS e FROM current_grids) g")).one()
            rng = np.random.default_rng(1)
            lon, lat = rng.uniform(minx, maxx, args.points), rng.uniform(miny, maxy, args.points)
        if not args.api_only:
            measure_batch(report, engine, args, lon, lat)
        engine.dispose()
        report["api_process"] = measure_api(service_url, lon, lat, args.requests)
    finally:
        drop_database(url)
    text_out = json.dumps(report, indent=2, default=str)
    print(text_out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text_out)
    return 0


def measure_batch(report: dict, engine, args, lon: np.ndarray, lat: np.ndarray) -> None:
    """In-process and Dask timings of the three batch jobs, into `report`."""
    from geo.batch.attribute import attribute_incidents_dask
    from geo.batch.classify import classify_compounds_dask
    from geo.batch.cluster import dask_client
    from geo.batch.locate import locate_frame_in_process, locate_points
    from geo.classify.classification import measure_shapely
    from geo.incidents.attribution import attribution_sql
    from geo.locate.index import LocateIndex, read_frames

    with engine.connect() as conn:
        frames, read_s = timed(read_frames, conn)
        index, build_s = timed(LocateIndex, frames)
        report["index"] = {"read_s": round(read_s, 2), "build_s": round(build_s, 2),
                           "approx_mb": index.summary()["approx_mb"]}
        del index
        _, t = timed(locate_frame_in_process, conn, lon, lat)
        report["locate_points_in_process"] = {"points": args.points, "s": round(t, 2),
                                              "points_per_s": round(args.points / t)}
        # a sum over the owners, so PostgreSQL evaluates every owner subquery (count(*) would skip them)
        owners = f"SELECT sum(coalesce(grid_id, 0) + coalesce(building_id, 0)) FROM ({attribution_sql()}) a"
        _, t = timed(lambda: conn.execute(text(owners)).scalar_one())
        report["attribute_sql_s"] = round(t, 2)
        _, t = timed(measure_shapely, conn, "grid")
        report["classify_in_process_s"] = round(t, 2)
        runs = []
        for processes in (False, True):
            for n in [int(w) for w in args.workers.split(",")]:
                with dask_client(workers=n, processes=processes) as client:
                    run: dict = {"workers": n, "processes": processes}
                    _, t = timed(locate_points, client, frames, lon, lat)
                    run["locate_points_s"] = round(t, 2)
                    run["locate_points_per_s"] = round(args.points / t)
                    _, t = timed(attribute_incidents_dask, client, conn)
                    run["attribute_s"] = round(t, 2)
                    _, t = timed(classify_compounds_dask, client, conn, "grid")
                    run["classify_s"] = round(t, 2)
                    runs.append(run)
                    print(run, flush=True)
        report["dask"] = runs


if __name__ == "__main__":
    sys.exit(main())
