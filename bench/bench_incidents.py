"""Incident heatmap, KPIs and page size at scale 10 (~120,000 incidents) and with 1,000,000 incidents.

A scale-10 district is generated into a fresh database. Measured there, then again after synthetic incidents are
added (a vectorised generator resampling the district's own incidents with 40 m jitter and ±15 days, COPY) until
the table holds `--million` rows:

- heatmap aggregation (targets: under 2 s): hexagon counts per month in SQL, the cells, grid households and
  incidents per grid; Getis-Ord Gi* with its permutations is timed separately;
- KPI queries (target: under 500 ms) for one month and for the whole year, by district, street, community,
  grid, department and month (median of `--repeat`);
- both through the rollups of migration 0011 (whole months from incident_rollup / incident_heat_rollup, kept by
  triggers; the default) and from the incidents alone ("raw"), in the same run, with a check that both give the
  same numbers; the first rollup request of a hexagon size registers and builds it (timed on its own), and the
  rollups' full rebuild is timed once;
- the heatmap page: bytes and seconds to build and render;
- the naive approach in the same run: every incident as a point in folium's HeatMap plugin (HTML bytes, seconds);
- filtered heatmap aggregation (target: under 2 s), the way a leader looks at part of the district: by the busiest
  major class, the busiest street, the busiest community, and that street and class together, over the whole
  period (about a year) and over one whole month, through the default path and from the incidents alone, checked
  equal; with the hexagon rollup's storage (rows and bytes per size) at each set.

`--only filtered` measures just the filtered heatmaps (and an unfiltered reference) and writes
bench/results/incidents_filtered.json. `--db NAME` keeps the data in database NAME on the configured server instead
of a throw-away one: a later run with the same NAME migrates it to the newest schema and reuses what it holds
(no district generated when it has incidents; no scale-set measurements when it already holds the large set).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from contextlib import contextmanager

import numpy as np
import pandas as pd
import psycopg
import shapely
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import console, fresh_database, report, timed
from demo.load import generate_and_load
from geo.incidents import heatmap as hm
from geo.incidents.hotspots import getis_ord
from geo.incidents.kpi import GROUPS, KpiQuery, compute_kpis
from geo.store import db
from geo.store.load import copy_rows

HEATMAP_TARGET_S = 2.0
KPI_TARGET_S = 0.5
PAGE_LIMIT_BYTES = 3 * 1024 * 1024
TZ = dt.timezone(dt.timedelta(hours=8))

#: Columns copied from a resampled incident (timestamps are shifted together, so its lifecycle is kept).
_TIME_COLS = ("reported_at", "registered_at", "dispatched_at", "due_at", "handled_at", "feedback_at", "closed_at",
              "evaluated_at", "updated_at")
_OTHER_COLS = ("class_code", "source", "state", "description", "reporter", "department", "time_limit_hours",
               "extended_hours", "extension_count", "rework_count", "return_count", "suspended_from", "version_id")


def period(conn) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    """(start of the first full month, end of the data, start of the last full month) of the incidents."""
    lo, hi = conn.execute(text("SELECT min(reported_at), max(reported_at) FROM incidents")).one()
    lo, hi = lo.astimezone(TZ), hi.astimezone(TZ)
    start = lo.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = hi + dt.timedelta(microseconds=1)
    last_month = (end - dt.timedelta(days=1)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, end, last_month


def add_incidents(engine, target: int, seed: int = 2) -> dict:
    """Top the incidents table up to `target` rows by resampling its own rows (vectorised), attributed with an
    STRtree over the current boundaries (smallest code on shared edges, as geo.incidents.attribution), loaded by
    COPY."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with engine.connect() as conn:
        have = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
        need = target - have
        if need <= 0:
            return {"added": 0}
        cols = ", ".join(_TIME_COLS + _OTHER_COLS)
        pool = pd.read_sql(text(f"SELECT lon, lat, {cols} FROM incidents"), conn)
        frame = hm.district_frame(conn)
        area = hm.study_area(conn, hm.HeatmapQuery(), frame)
        levels = {}
        for level, fk in (("streets", "street_id"), ("communities", "community_id"), ("grids", "grid_id")):
            df = pd.read_sql(text(f"SELECT id, code, ST_AsBinary(geom) AS wkb FROM {level}_at(now()) ORDER BY code"),
                             conn)
            levels[fk] = (df["id"].to_numpy(), frame.to_metric(shapely.from_wkb(df["wkb"].map(bytes).to_numpy())))
    px, py = frame.forward(pool["lon"].to_numpy(), pool["lat"].to_numpy())
    pick = rng.integers(0, len(pool), need)
    x, y = px[pick].copy(), py[pick].copy()
    todo = np.arange(need)
    shapely.prepare(area)
    for _ in range(5):  # jitter, and jitter again those that left the district
        x[todo] = px[pick[todo]] + rng.normal(0, 40.0, todo.size)
        y[todo] = py[pick[todo]] + rng.normal(0, 40.0, todo.size)
        todo = todo[~shapely.contains_xy(area, x[todo], y[todo])]
        if not todo.size:
            break
    x[todo], y[todo] = px[pick[todo]], py[pick[todo]]
    pts = shapely.points(x, y)
    out = pool.iloc[pick].reset_index(drop=True)
    lo, hi = pool["reported_at"].min(), pool["reported_at"].max()
    shift = pd.to_timedelta(rng.uniform(-15, 15, need) * 86400, unit="s")
    inside = ((out["reported_at"] + shift) >= lo) & ((out["reported_at"] + shift) <= hi)
    shift = shift.where(inside.to_numpy(), pd.Timedelta(0))
    for c in _TIME_COLS:
        out[c] = out[c] + shift
    for fk, (ids, polys) in levels.items():
        tree = shapely.STRtree(polys)
        pi, gi = tree.query(pts, predicate="covered_by")
        # polygons are in code order, so the first hit per point is the smallest code
        first = np.full(need, -1)
        order = np.lexsort((gi, pi))
        pi, gi = pi[order], gi[order]
        keep = np.r_[True, pi[1:] != pi[:-1]] if pi.size else np.array([], bool)
        first[pi[keep]] = gi[keep]
        out[fk] = np.where(first >= 0, ids[np.maximum(first, 0)], None)
    lon, lat = frame.inverse(x, y)
    out["geom"] = shapely.to_wkb(shapely.set_srid(shapely.points(lon, lat), 4326), hex=True, include_srid=True)
    gen_s = time.perf_counter() - t0
    columns = ["geom", *_TIME_COLS, *_OTHER_COLS, "street_id", "community_id", "grid_id"]
    t0 = time.perf_counter()

    def rows():
        data = [out[c].astype(object).where(out[c].notna(), None).tolist() for c in columns]
        return zip(*data, strict=True)

    with engine.begin() as conn:
        copy_rows(conn, "incidents", columns, rows())
    copy_s = time.perf_counter() - t0
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE incidents, incident_rollup, incident_heat_rollup"))
    return {"added": need, "generate_s": round(gen_s, 2), "copy_s": round(copy_s, 2)}


def rebuild_rollups(engine) -> float:
    """Seconds to rebuild every rollup from the incidents (incident_rollup_refresh(), one transaction)."""
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("SELECT incident_rollup_refresh()"))
    seconds = time.perf_counter() - t0
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE incident_rollup, incident_heat_rollup"))
    return seconds


def naive_heatmap(engine) -> dict:
    """Every incident as a point in folium's HeatMap plugin: the page's bytes and the seconds to build it."""
    import folium.plugins

    from maps.assets import offline_map, render_page

    t0 = time.perf_counter()
    with engine.connect() as conn:
        xy = np.array(conn.execute(text("SELECT ST_Y(geom), ST_X(geom) FROM incidents")).all(), dtype=float)
    m = offline_map(location=(float(xy[:, 0].mean()), float(xy[:, 1].mean())), zoom_start=13)
    folium.plugins.HeatMap(xy.tolist(), radius=12).add_to(m)
    page = render_page(m, "事件热力图（逐点）")
    return {"points": len(xy), "bytes": len(page.encode()), "s": time.perf_counter() - t0}


@contextmanager
def kept_database(name: str):
    """Database `name` on the configured server, created when missing, migrated to heads, kept afterwards."""
    base = make_url(db.admin_database_url(start_local=True))
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    db.migrate(url)
    engine = db.make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        console.print(f"kept database {name!r} (reuse with --db {name}; drop it with DROP DATABASE)")


def heat_rollup_storage(conn) -> dict:
    """The hexagon rollup's cost: rows per registered size, all rows, and the table's bytes with its indexes."""
    per_size = conn.execute(text("SELECT cell_m, count(*) FROM incident_heat_rollup GROUP BY 1 ORDER BY 1")).all()
    return {"rows_per_size": {f"{c:g}": int(k) for c, k in per_size},
            "rows": int(sum(k for _, k in per_size)),
            "bytes": int(conn.execute(text("SELECT pg_total_relation_size('incident_heat_rollup')")).scalar_one())}


def filtered_cases(conn) -> list[tuple[str, dict]]:
    """The filters a leader uses, each at its heaviest: the busiest major class, street and community, and the
    busiest street with the busiest major class."""
    major = conn.execute(text(
        "SELECT coalesce(c.major_code, c.code), count(*) FROM incidents i JOIN incident_classes c "
        "ON c.code = i.class_code GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1")).scalar_one()
    street, community = (conn.execute(text(
        f"SELECT u.code FROM incidents i JOIN {table} u ON u.id = i.{fk} GROUP BY u.code ORDER BY count(*) DESC, "
        f"u.code LIMIT 1")).scalar_one() for table, fk in (("streets", "street_id"), ("communities", "community_id")))
    return [(f"class {major}", {"class_code": major}), (f"street {street}", {"street": street}),
            (f"community {community}", {"community": community}),
            (f"street {street} + class {major}", {"street": street, "class_code": major})]


def measure_filtered(engine, label: str, repeat: int) -> list[dict]:
    """Filtered heatmap aggregation (hexagons per month + grids, no Gi*), the default path and the incidents alone
    in the same run, each checked equal; an unfiltered reference first (it registers the hexagon size)."""
    rows = []
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
        start, end, last_month = period(conn)
        # the last whole month of the data (the one before the month holding its end)
        month = ((last_month - dt.timedelta(days=1)).replace(day=1), last_month)
        spans = (("whole period", (start, end)), (f"one month {month[0]:%Y-%m}", month))

        def build(flt: dict, span: tuple, use_rollup: bool) -> hm.Heatmap:
            q = hm.HeatmapQuery(start=span[0], end=span[1], cell_m=150.0, use_rollup=use_rollup, **flt)
            h = hm.build_heatmap(conn, q, with_grids=True, with_hotspots=False)
            conn.commit()  # a first request may register a hexagon size
            return h

        def first(flt: dict, span: tuple, use_rollup: bool) -> float:
            """Seconds of a first request (it may register and build a hexagon size), kept apart from the runs."""
            t0 = time.perf_counter()
            build(flt, span, use_rollup)
            return round(time.perf_counter() - t0, 3)

        for span_label, span in spans:
            first_s = first({}, span, True)
            med, runs, h = timed(lambda span=span: build({}, span, True), repeat)
            rows.append({"set": label, "incidents": n, "measure": f"heatmap aggregation, unfiltered, {span_label} "
                         "(reference)", "median_s": med, "max_s": max(runs), "target_s": HEATMAP_TARGET_S,
                         "meets": max(runs) < HEATMAP_TARGET_S,
                         "detail": {k: round(v, 3) for k, v in h.timings.items()}
                         | {"counted": h.incident_count, "cells": len(h.cells), "cell_m": h.cell_m,
                            "first_request_s": first_s}})
        cases = filtered_cases(conn)
        console.print(f"[{label}] filtered cases: {[c for c, _ in cases]}")
        for case, flt in cases:
            for span_label, span in spans:
                results = {}
                for path, use in (("default path", True), ("raw", False)):
                    first_s = first(flt, span, use)
                    med, runs, h = timed(lambda flt=flt, span=span, use=use: build(flt, span, use), repeat)
                    results[path] = h
                    rows.append({"set": label, "incidents": n,
                                 "measure": f"heatmap aggregation, {case}, {span_label}, {path}",
                                 "median_s": med, "max_s": max(runs), "target_s": HEATMAP_TARGET_S,
                                 "meets": max(runs) < HEATMAP_TARGET_S,
                                 "detail": {k: round(v, 3) for k, v in h.timings.items()}
                                 | {"counted": h.incident_count, "cells": len(h.cells), "grids": len(h.grids),
                                    "months": len(h.months), "cell_m": h.cell_m, "first_request_s": first_s}})
                a, b = results["default path"], results["raw"]
                if not (a.months == b.months and np.array_equal(a.monthly, b.monthly)
                        and a.cells[["q", "r", "in_area"]].equals(b.cells[["q", "r", "in_area"]])
                        and a.grids[["code", "incidents"]].equals(b.grids[["code", "incidents"]])
                        and a.incident_count > 0):
                    raise AssertionError(f"[{label}] {case}, {span_label}: the default path differs from the raw path")
        storage = heat_rollup_storage(conn)
        rows.append({"set": label, "incidents": n, "measure": "hexagon rollup storage (incident_heat_rollup)",
                     "median_s": None, "max_s": None, "target_s": None, "meets": None, "detail": storage})
        console.print(f"[{label}] incident_heat_rollup: {storage}")
    return rows


def measure(engine, label: str, repeat: int, permutations: int) -> list[dict]:
    from maps.heatmap import heatmap_page

    rows = []
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
        start, end, last_month = period(conn)
        console.print(f"[{label}] {n:,} incidents, {start:%Y-%m-%d} … {end:%Y-%m-%d}")

        # heatmap aggregation: SQL hexagons per month, cells, grids (no Gi*), then Gi* alone; the rollup path
        # (default) and the incidents alone, in the same run
        def q(use_rollup: bool = True):
            return hm.HeatmapQuery(start=start, end=end, cell_m=150.0, permutations=permutations,
                                   use_rollup=use_rollup)

        conn.execute(text("DELETE FROM incident_heat_sizes"))  # the first request below registers its size
        conn.commit()
        t0 = time.perf_counter()
        first = hm.build_heatmap(conn, q(), with_grids=True, with_hotspots=False)
        conn.commit()
        rows.append({"set": label, "incidents": n, "measure": "heatmap, first request of a hexagon size "
                     "(registers and builds its rollup)", "median_s": time.perf_counter() - t0, "max_s": None,
                     "target_s": None, "meets": None,
                     "detail": {k: round(v, 3) for k, v in first.timings.items()} | {"cell_m": first.cell_m}})
        results = {}
        for path, use in (("raw", False), ("rollup", True)):
            med, runs, h = timed(lambda use=use: hm.build_heatmap(conn, q(use), with_grids=True, with_hotspots=False),
                                 repeat)
            results[path] = h
            parts = {k: round(v, 3) for k, v in h.timings.items()}
            rows.append({"set": label, "incidents": n, "measure": f"heatmap aggregation (hex per month + grids), "
                         f"{path}", "median_s": med, "max_s": max(runs), "target_s": HEATMAP_TARGET_S,
                         "meets": max(runs) < HEATMAP_TARGET_S,
                         "detail": parts | {"cells": len(h.cells), "months": len(h.months)}})
            med, runs, hq = timed(lambda use=use: hm.build_heatmap(conn, q(use), with_grids=False,
                                                                  with_hotspots=False),
                                  repeat)
            rows.append({"set": label, "incidents": n, "measure": f"heatmap hexagons per month only, {path}",
                         "median_s": med, "max_s": max(runs), "target_s": HEATMAP_TARGET_S,
                         "meets": max(runs) < HEATMAP_TARGET_S,
                         "detail": {k: round(v, 3) for k, v in hq.timings.items()}})
        raw, h = results["raw"], results["rollup"]
        if not (np.array_equal(raw.monthly, h.monthly) and raw.cells[["q", "r"]].equals(h.cells[["q", "r"]])
                and raw.grids["incidents"].equals(h.grids["incidents"])):
            raise AssertionError(f"[{label}] the heatmap rollup path differs from the raw path")
        t0 = time.perf_counter()
        z, p, cls = getis_ord(h.cells["total"].to_numpy(), h.cells["q"].to_numpy(), h.cells["r"].to_numpy(),
                                 permutations, seed=1)
        gi_s = time.perf_counter() - t0
        rows.append({"set": label, "incidents": n, "measure": f"Getis-Ord Gi* ({permutations} permutations)",
                     "median_s": gi_s, "max_s": gi_s, "target_s": None, "meets": None,
                     "detail": {"cells": len(cls), "hot": int((cls > 0).sum()), "cold": int((cls < 0).sum())}})

        # the page: build (aggregation + Gi*) and render
        t0 = time.perf_counter()
        full = hm.build_heatmap(conn, q(), with_grids=True, with_hotspots=True)
        page = heatmap_page(hm.compact(full), {})
        page_s = time.perf_counter() - t0
        size = len(page.encode())
        rows.append({"set": label, "incidents": n, "measure": "heatmap page (aggregate + Gi* + render)",
                     "median_s": page_s, "max_s": page_s, "target_s": None, "meets": size < PAGE_LIMIT_BYTES,
                     "detail": {"bytes": size, "cells": len(full.cells), "grids": len(full.grids),
                                "months": len(full.months), "cell_m": round(full.cell_m, 1)}})

        # KPIs: one month and the whole period, every grouping; raw and rollup paths in the same run
        for span, (s, e) in (("last month", (last_month, end)), ("whole period", (start, end))):
            for by in GROUPS:
                outs = {}
                for path, use in (("raw", False), ("rollup", True)):
                    med, runs, out = timed(lambda s=s, e=e, by=by, use=use: compute_kpis(
                        conn, KpiQuery(start=s, end=e, by=by), use_rollup=use), repeat)
                    outs[path] = out
                    t = out["total"]
                    rows.append({"set": label, "incidents": n, "measure": f"KPI by {by}, {span}, {path}",
                                 "median_s": med, "max_s": max(runs), "target_s": KPI_TARGET_S,
                                 "meets": max(runs) < KPI_TARGET_S,
                                 "detail": {"groups": len(out["groups"]), "due": t["due"],
                                            "closure_rate_pct": t["closure_rate_pct"],
                                            "on_time_rate_pct": t["on_time_rate_pct"]}})
                if outs["raw"]["groups"] != outs["rollup"]["groups"] or \
                        {k: v for k, v in outs["raw"]["total"].items() if not k.startswith("open_")} != \
                        {k: v for k, v in outs["rollup"]["total"].items() if not k.startswith("open_")}:
                    raise AssertionError(f"[{label}] KPI by {by}, {span}: the rollup path differs from the raw path")
    naive = naive_heatmap(engine)
    rows.append({"set": label, "incidents": n, "measure": "naive: every point in folium HeatMap",
                 "median_s": naive["s"], "max_s": naive["s"], "target_s": None,
                 "meets": naive["bytes"] < PAGE_LIMIT_BYTES, "detail": {"bytes": naive["bytes"]}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--million", type=int, default=1_000_000,
                        help="incident count of the large set (0: the scale set alone)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--permutations", type=int, default=999)
    parser.add_argument("--only", choices=("all", "filtered"), default="all",
                        help="all: every measurement (bench/results/incidents.json); filtered: the filtered "
                             "heatmaps only (bench/results/incidents_filtered.json)")
    parser.add_argument("--db", metavar="NAME",
                        help="keep the data in database NAME (created when missing, migrated to heads, reused by "
                             "the next run) instead of a throw-away database")
    parser.add_argument("--results", metavar="NAME", help="write bench/results/NAME.json (default: incidents, "
                        "or incidents_filtered with --only filtered)")
    args = parser.parse_args()
    everything = args.only == "all"
    name = args.results or ("incidents" if everything else "incidents_filtered")
    rows: list[dict] = []
    if everything:
        t0 = time.perf_counter()
        import esda  # noqa: F401  (imported lazily by geo.incidents.heatmap: the first hot-spot request of a process pays this)

        rows.append({"set": "-", "incidents": None, "measure": "import esda (once per process)",
                     "median_s": time.perf_counter() - t0, "max_s": None, "target_s": None, "meets": None,
                     "detail": {}})
    big = f"{args.million:,} incidents"
    with (kept_database(args.db) if args.db else fresh_database("gridatlas_bench_incidents")) as engine:
        with engine.connect() as conn:
            have = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
        if not have:
            loaded = generate_and_load(engine, args.scale, args.seed)
            console.print(f"scale {args.scale}: {loaded['counts']} in "
                          f"{ {k: round(v, 1) for k, v in loaded['timings'].items()} }")
            with engine.connect() as conn:  # the loader vacuums the incidents; the rollups its writes kept likewise
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                    text("VACUUM ANALYZE incident_rollup, incident_heat_rollup"))
        else:
            console.print(f"reusing database {args.db!r}: {have:,} incidents")
        if have < args.million or not args.million:
            if everything:
                rows += measure(engine, f"scale {args.scale:g}", args.repeat, args.permutations)
            rows += measure_filtered(engine, f"scale {args.scale:g}", args.repeat)
            if args.million:
                report(name, rows, "Incidents: heatmap, KPIs, page size, naive HeatMap (so far)")
        else:
            console.print(f"the database already holds the large set: scale {args.scale:g} not measured")
        if not args.million:
            report(name, rows, "Incidents: filtered heatmap aggregation" if not everything else
                   "Incidents: heatmap, KPIs, page size, naive HeatMap")
            return
        added = add_incidents(engine, args.million)
        console.print(f"added {added}")
        if added["added"]:
            rows.append({"set": big, "incidents": args.million,
                         "measure": "COPY the extra incidents (rollups kept by the statement triggers)",
                         "median_s": added.get("copy_s"), "max_s": None, "target_s": None, "meets": None,
                         "detail": added})
        if everything:
            rebuild_s = rebuild_rollups(engine)
            rows.append({"set": big, "incidents": args.million,
                         "measure": "rebuild the rollups from the incidents (incident_rollup_refresh)",
                         "median_s": rebuild_s, "max_s": None, "target_s": None, "meets": None, "detail": {}})
            rows += measure(engine, big, args.repeat, args.permutations)
        rows += measure_filtered(engine, big, args.repeat)
    report(name, rows, "Incidents: heatmap, KPIs, page size, naive HeatMap" if everything
           else "Incidents: filtered heatmap aggregation")


if __name__ == "__main__":
    main()
