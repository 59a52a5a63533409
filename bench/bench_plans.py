"""Redraw plans at scale 1: live validation time per operation, and suggestions (ReCom) against spopt max-p.

A scale-1 district is generated into a fresh database. For `--communities` communities (default all) a plan is
drafted and a fixed script of operations is applied (move a building, move a compound, split, merge, replace a
geometry, create, retire, undo); after each the live validation is timed (median and p95 over all, per
operation type). Then for every community the suggestion (geo.suggest, ReCom) is timed and its quality measured:
largest deviation from the band's middle, compounds split, households moved, grids outside the band; spopt's
MaxPHeuristic runs in the same run on the same atoms, adjacency and band floor (max-p has no ceiling), in a
child process stopped after `--maxp-timeout` seconds (it takes minutes on some large communities).
Writes bench/results/plans.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import shapely
from shapely.geometry import mapping

from bench.common import console, fresh_database, report
from geo import plans
from geo.demo import generate_and_load
from geo.plan_validation import context_for, validate
from geo.settings import get_settings
from geo.suggest import adjacency, atoms_for, suggest_state


def _p95(xs):
    return float(np.percentile(xs, 95)) if xs else float("nan")


def _script(conn, pid, cid):
    """The operations applied to one plan: (name, op) pairs built from its current state."""
    state = plans.load_state(conn, pid)
    rows = state.live("grid")
    pairs = [(x, y) for i, x in enumerate(rows) for y in rows[i + 1:]
             if shapely.length(shapely.intersection(shapely.boundary(x["geom"]), shapely.boundary(y["geom"]))) > 1e-5]
    if not pairs:
        return []
    a, b = pairs[0]
    bf = plans.buildings_frame(conn, cid)
    pts = shapely.point_on_surface(bf["geom"])
    d = shapely.distance(pts, b["geom"])
    d[~shapely.covers(a["geom"], pts)] = np.inf
    ops = []
    if np.isfinite(d).any():
        ops.append(("move_buildings", {"type": "move_buildings", "building_ids": [int(bf["id"][np.argmin(d)])],
                                       "to": b["key"]}))
    comp = bf["compound_id"][np.isfinite(d) & (bf["compound_id"] >= 0)]
    if comp.size:
        ops.append(("move_compounds", {"type": "move_compounds", "compound_ids": [int(comp[0])], "to": b["key"]}))
    big = max(rows, key=lambda r: shapely.area(r["geom"]))
    minx, miny, maxx, maxy = shapely.bounds(big["geom"])
    mid = (minx + maxx) / 2
    ops.append(("split", {"type": "split", "key": big["key"],
                          "line": mapping(shapely.LineString([(mid, miny - 1e-3), (mid, maxy + 1e-3)]))}))
    ops.append(("undo", None))
    ops.append(("merge", {"type": "merge", "keys": [a["key"], b["key"]]}))
    ops.append(("undo", None))
    grown = shapely.union(a["geom"], shapely.intersection(b["geom"], shapely.buffer(a["geom"], 2e-4)))
    ops.append(("replace_geometry", {"type": "replace_geometry", "key": a["key"], "geometry": mapping(grown)}))
    ops.append(("create", {"type": "create", "level": "grid", "geometry": mapping(
        shapely.buffer(shapely.point_on_surface(big["geom"]), 5e-4))}))
    ops.append(("retire", {"type": "retire", "key": b["key"], "into": a["key"]}))
    return ops


def _maxp(state, ctx, lo, hi, seed):
    """spopt max-p-regions on the same atoms and adjacency; (seconds, households per region, compounds split)."""
    import geopandas as gpd
    from libpysal.weights import W
    from spopt.region import MaxPHeuristic

    comp = [r for r in state.live("grid") if (r.get("kind") or "comprehensive") == "comprehensive"]
    area = shapely.union_all([r["geom"] for r in comp])
    b = ctx.buildings
    keep = shapely.covers(area, ctx.b_pts) & (b["households"] > 0)
    bb = {k: v[keep] for k, v in b.items()}
    a = atoms_for(bb, ctx.compounds, hi, ctx.proj.metric)
    g = adjacency(a["x"], a["y"])
    n = len(a["label"])
    w = W({i: list(g.neighbors(i)) for i in range(n)}, silence_warnings=True)
    df = gpd.GeoDataFrame({"households": a["households"].astype(float), "x": a["x"], "y": a["y"]},
                          geometry=shapely.points(a["x"], a["y"]))
    np.random.seed(seed)
    t0 = time.perf_counter()
    model = MaxPHeuristic(df, w, ["x", "y"], "households", lo, top_n=2, max_iterations_construction=50)
    model.solve()
    elapsed = time.perf_counter() - t0
    labels = np.asarray(model.labels_)
    hh = np.array([a["households"][labels == lab].sum() for lab in np.unique(labels) if lab > 0])
    return elapsed, hh


def _maxp_worker(queue, state, ctx, lo, hi, seed):
    queue.put(_maxp(state, ctx, lo, hi, seed))


def _maxp_limited(state, ctx, lo, hi, seed, timeout_s):
    """max-p in a child process, stopped after `timeout_s` (it can run for minutes on a large community)."""
    import multiprocessing as mp

    mpc = mp.get_context("fork")
    queue = mpc.Queue()
    proc = mpc.Process(target=_maxp_worker, args=(queue, state, ctx, lo, hi, seed))
    proc.start()
    proc.join(timeout_s)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None
    return queue.get(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--communities", type=int, default=0, help="0 = all")
    parser.add_argument("--suggest-budget", type=float, default=1.0, help="seconds of ReCom search per community")
    parser.add_argument("--no-maxp", action="store_true")
    parser.add_argument("--maxp-timeout", type=float, default=8.0, help="seconds before max-p is stopped")
    args = parser.parse_args()
    rules = get_settings().rules
    lo, hi = rules.grid_households_min, rules.grid_households_max
    rows = []
    with fresh_database("gridatlas_bench_plans") as engine:
        loaded = generate_and_load(engine, args.scale, args.seed)
        console.print(f"scale {args.scale}: {loaded['counts']}")
        with engine.connect() as conn:
            trans = conn.begin()
            codes = conn.exec_driver_sql("SELECT code, id FROM communities ORDER BY code").all()
            if args.communities:
                codes = codes[: args.communities]
            times: dict[str, list[float]] = {}
            sug = []
            for code, cid in codes:
                pid = plans.create_plan(conn, code, "bench")
                context_for(conn, cid)  # the context is cached per community; the first read is not "live"
                for name, op in _script(conn, pid, cid):
                    if op is None:
                        plans.undo(conn, pid)
                    else:
                        try:
                            plans.apply_operation(conn, pid, op)
                        except plans.PlanError:
                            continue
                    t0 = time.perf_counter()
                    validate(conn, pid)
                    times.setdefault(name, []).append(time.perf_counter() - t0)
                # suggestion on a fresh copy of the published grids
                spid = plans.create_plan(conn, code, "bench")
                state = plans.load_state(conn, spid)
                ctx = context_for(conn, cid)
                t0 = time.perf_counter()
                s = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=args.seed,
                                  time_budget_s=args.suggest_budget)
                rec = {"community": code, "feasible": s["feasible"], "recom_s": time.perf_counter() - t0,
                       "atoms": s["atoms"], "households": s["households"]}
                if s["feasible"]:
                    hh = np.array(s["households_per_grid"])
                    rec.update({"recom_grids": len(hh), "recom_out_of_band": int(((hh < lo) | (hh > hi)).sum()),
                                "recom_max_dev": float(np.abs(hh - (lo + hi) / 2).max()),
                                "recom_compounds_split": s["fitting_compounds_split"],
                                "recom_households_moved": s["households_moved"]})
                if not args.no_maxp and s["atoms"] > 1:
                    try:
                        res = _maxp_limited(state, ctx, lo, hi, args.seed, args.maxp_timeout)
                        if res is None:
                            rec["maxp_timeout"] = args.maxp_timeout
                            raise TimeoutError(f"max-p stopped after {args.maxp_timeout} s")
                        el, mh = res
                        rec.update({"maxp_s": el, "maxp_grids": len(mh),
                                    "maxp_out_of_band": int(((mh < lo) | (mh > hi)).sum()),
                                    "maxp_max_dev": float(np.abs(mh - (lo + hi) / 2).max()) if len(mh) else None})
                    except Exception as exc:  # report, don't abort the run
                        rec["maxp_error"] = f"{type(exc).__name__}: {exc}"
                sug.append(rec)
                console.print(rec)
            trans.rollback()
    for name, xs in sorted(times.items()):
        rows.append({"what": f"validate after {name}", "n": len(xs), "median_ms": statistics.median(xs) * 1000,
                     "p95_ms": _p95(xs) * 1000, "max_ms": max(xs) * 1000})
    allv = [x for xs in times.values() for x in xs]
    rows.append({"what": "validate (all operations)", "n": len(allv), "median_ms": statistics.median(allv) * 1000,
                 "p95_ms": _p95(allv) * 1000, "max_ms": max(allv) * 1000})
    feas = [r for r in sug if r["feasible"]]

    def agg(key, fn=statistics.median, src=feas):
        vals = [r[key] for r in src if r.get(key) is not None]
        return float(fn(vals)) if vals else float("nan")

    rows.append({"what": "suggest ReCom (per community)", "n": len(sug), "median_ms": agg("recom_s", src=sug) * 1000,
                 "p95_ms": _p95([r["recom_s"] for r in sug]) * 1000, "max_ms": agg("recom_s", max, sug) * 1000})
    mp = [r for r in sug if "maxp_s" in r]
    if mp:
        rows.append({"what": "spopt max-p (per community)", "n": len(mp), "median_ms": agg("maxp_s", src=mp) * 1000,
                     "p95_ms": _p95([r["maxp_s"] for r in mp]) * 1000, "max_ms": agg("maxp_s", max, mp) * 1000})
    quality = {
        "communities": len(sug), "feasible": len(feas),
        "recom_grids_out_of_band": int(sum(r.get("recom_out_of_band", 0) for r in feas)),
        "recom_max_dev_median": agg("recom_max_dev"), "recom_max_dev_max": agg("recom_max_dev", max),
        "recom_fitting_compounds_split": int(sum(r.get("recom_compounds_split", 0) for r in feas)),
        "recom_households_moved_total": int(sum(r.get("recom_households_moved", 0) for r in feas)),
        "maxp_grids_out_of_band": int(sum(r.get("maxp_out_of_band", 0) for r in mp)),
        "maxp_max_dev_median": agg("maxp_max_dev", src=mp), "maxp_max_dev_max": agg("maxp_max_dev", max, mp),
        "maxp_errors": sum("maxp_error" in r and "maxp_timeout" not in r for r in sug),
        "maxp_timeouts": sum("maxp_timeout" in r for r in sug),
    }
    console.print(quality)
    for k, v in quality.items():
        rows.append({"what": f"quality: {k}", "n": len(sug), "median_ms": float(v), "p95_ms": float("nan"),
                     "max_ms": float("nan")})
    report("plans", rows, f"Redraw plans at scale {args.scale}")
    import json

    from bench.common import RESULTS

    data = json.loads((RESULTS / "plans.json").read_text())
    data["suggestions"] = sug
    data["quality"] = quality
    (RESULTS / "plans.json").write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
