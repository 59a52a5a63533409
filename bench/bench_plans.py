"""Redraw plans at scale 1: live validation time per operation, and suggestions (ReCom) against spopt max-p.

A scale-1 district is generated into a fresh database. For `--communities` communities (default all) a plan is
drafted and a fixed script of operations is applied (move a building, move a compound, split, merge, replace a
geometry, create, retire, undo); after each the live validation is timed (median and p95 over all, per
operation type). The same script runs in street plans (one per street, in up to two of its communities): the live
validation there re-validates only the community an operation touched; a full street validation (no reuse of
results) is timed too, first with the street's community contexts not cached, then cached (`--repeat` times each).
`--only street` runs the street part alone (no community script, no suggestions) into
bench/results/plans_street.json.

The browser part (`--only browser` alone, and after a full run): the editor in headless Chromium at
`--browser-scales` (default 1), each in a fresh database: page weight and time to interactive of a community plan
and a whole-street plan, and edit-to-feedback latency (panel figures, map, diff) p50/p95 over `--edits` (50)
scripted edits; bench/results/plans_browser.json.

Then for every community both suggestion methods run on the same input (atoms = whole compounds that fit the
band, else buildings; their Delaunay adjacency; the current grids): ours (geo.plans.suggest, ReCom with networkx) and
spopt's MaxPHeuristic (floor = the band's minimum; max-p has no ceiling). Each runs in a forked child stopped
after `--timeout` seconds; a community where a method times out, fails or finds no solution is counted and named.
Per method: time (median, p95), largest deviation from the band's middle, grids out of band, compounds split,
households moved (regions matched to the current grids by most households). Where ReCom leaves grids out of band,
geo.plans.suggest's exact CP-SAT step runs within the same method and time limit: the communities it repaired, and those
where it proved the band infeasible, are named. Writes bench/results/plans.json; `--codes` runs only the named
communities (into bench/results/plans_selected.json).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import shapely
from shapely.geometry import mapping

from bench.common import console, fresh_database, report
from demo.load import generate_and_load
from geo.plans import drafts as plans
from geo.plans.suggest import _match_labels, _Objective, adjacency, atoms_for, suggest_state
from geo.plans.validation import context_for, validate
from geo.settings import get_settings


def _p95(xs):
    return float(np.percentile(xs, 95)) if xs else float("nan")


def _script(conn, pid, cid):
    """The operations applied to one plan: (name, op) pairs built from its current state."""
    state = plans.load_state(conn, pid).sub(cid)
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


def _inputs(state, ctx, hi):
    """The suggestion's input for both methods: atoms (whole compounds that fit, else buildings), their Delaunay
    adjacency, each atom's current grid, and per building the current grid (as geo.plans.suggest.suggest_state)."""
    comp = [r for r in state.live("grid") if (r.get("kind") or "comprehensive") == "comprehensive"]
    area = shapely.union_all([r["geom"] for r in comp])
    b = ctx.buildings
    keep = shapely.covers(area, ctx.b_pts) & (b["households"] > 0)
    bb = {k: v[keep] for k, v in b.items()}
    a = atoms_for(bb, ctx.compounds, hi, ctx.proj.metric)
    owner = plans.owner_of_points(shapely.point_on_surface(bb["geom"]), comp)
    cur = np.full(len(a["label"]), -1)
    for ai in range(len(a["label"])):
        m = a["of_building"] == ai
        o, h = owner[m], bb["households"][m]
        if (o >= 0).any():
            cur[ai] = int(np.bincount(o[o >= 0], weights=h[o >= 0]).argmax())
    return bb, a, owner, cur


def _quality(bb, a, owner, cur, atom_labels, lo, hi):
    """Grids, households per grid, out of band, largest deviation from the band's middle, compounds split (all /
    fitting the band), households moved (regions matched to current grids by most households, as ReCom does)."""
    regions = [np.flatnonzero(atom_labels == lab) for lab in np.unique(atom_labels)]
    obj = _Objective(a["households"], a["x"], a["y"], cur, lo, hi)
    matched = _match_labels(regions, obj, sorted(set(cur[cur >= 0].tolist())))
    atom_to = np.empty(len(atom_labels), dtype=np.int64)
    for r, lab in zip(regions, matched, strict=True):
        atom_to[r] = lab
    bassign = atom_to[a["of_building"]]
    hh = np.array([int(bb["households"][bassign == lab].sum()) for lab in matched])
    split = [c for c in a["compound_households"] if len(set(bassign[bb["compound_id"] == c].tolist())) > 1]
    fitting = [c for c in split if a["compound_households"][c] <= hi]
    return {"grids": len(hh), "out_of_band": int(((hh < lo) | (hh > hi)).sum()),
            "max_dev": float(np.abs(hh - (lo + hi) / 2).max()) if len(hh) else None,
            "compounds_split": len(split), "fitting_compounds_split": len(fitting),
            "households_moved": int(bb["households"][bassign != owner].sum())}


def _recom(state, ctx, lo, hi, seed, budget, repair_budget=None):
    """Our suggestion (geo.plans.suggest, ReCom with networkx, then CP-SAT where ReCom leaves grids out of band) on the
    community; (seconds, quality or infeasibility)."""
    t0 = time.perf_counter()
    s = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=seed, time_budget_s=budget,
                      repair_budget=repair_budget)
    elapsed = time.perf_counter() - t0
    if not s["feasible"]:
        return elapsed, {"status": "infeasible", "reasons": s["reasons"]}
    bb, a, owner, cur = _inputs(state, ctx, hi)
    # the suggestion's regions are lists of building ids: back to atoms through the buildings
    lab_of_b = np.full(len(bb["id"]), -1)
    for i, r in enumerate(s["regions"]):
        lab_of_b[np.isin(bb["id"], r["building_ids"])] = i
    atom_labels = np.array([lab_of_b[a["of_building"] == ai][0] for ai in range(len(a["label"]))])
    q = _quality(bb, a, owner, cur, atom_labels, lo, hi)
    # the suggestion's own count of moved households is the reference (building level, same matching)
    q["households_moved"] = s["households_moved"]
    q["reproducible"] = s.get("reproducible", True)
    repair = s["search"].get("repair")
    if repair is not None:  # ReCom left grids out of band: what the exact (CP-SAT) step decided
        q["repair"] = {"repaired": s["method"] != "recom", "band_infeasible": repair["band_infeasible"],
                       "packable_k": [c["k"] for c in repair["band_checks"] if c["status"] != "infeasible"],
                       "contiguous": [{k: c[k] for k in ("k", "status", "deterministic_time", "wall_s")}
                                      for c in repair["contiguous"]]}
        if s.get("band_reasons"):
            q["band_reasons"] = s["band_reasons"]
    return elapsed, {"status": "ok", **q}


def _maxp(state, ctx, lo, hi, seed):
    """spopt max-p-regions on the same atoms and adjacency (floor = band minimum; max-p has no ceiling)."""
    import geopandas as gpd
    from libpysal.weights import W
    from spopt.region import MaxPHeuristic

    t0 = time.perf_counter()
    bb, a, owner, cur = _inputs(state, ctx, hi)
    g = adjacency(a["x"], a["y"])
    n = len(a["label"])
    w = W({i: list(g.neighbors(i)) for i in range(n)}, silence_warnings=True)
    df = gpd.GeoDataFrame({"households": a["households"].astype(float), "x": a["x"], "y": a["y"]},
                          geometry=shapely.points(a["x"], a["y"]))
    np.random.seed(seed)
    model = MaxPHeuristic(df, w, ["x", "y"], "households", lo, top_n=2, max_iterations_construction=50)
    model.solve()
    elapsed = time.perf_counter() - t0
    labels = np.asarray(model.labels_)
    if not (labels > 0).any():
        return elapsed, {"status": "infeasible", "reasons": ["max-p found no region reaching the band's floor"]}
    # atoms max-p leaves unassigned (label 0: the floor could not be met with them) join no region: count them
    unassigned = int(a["households"][labels <= 0].sum())
    q = _quality(bb, a, owner, cur, np.where(labels > 0, labels, -1), lo, hi)
    return elapsed, {"status": "ok", "unassigned_households": unassigned, **q}


def _worker(queue, fn, args):
    try:
        queue.put(("done", fn(*args)))
    except Exception as exc:  # reported as a failure of this community, named
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def _limited(fn, args, timeout_s):
    """Run fn(*args) in a forked child stopped after `timeout_s`; ("done", result) | ("error", msg) | ("timeout",)."""
    import multiprocessing as mp
    import queue as q

    mpc = mp.get_context("fork")
    queue = mpc.Queue()
    proc = mpc.Process(target=_worker, args=(queue, fn, args))
    proc.start()
    try:
        out = queue.get(timeout=timeout_s)
    except q.Empty:
        out = ("timeout",)
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    return out


def _run_method(fn, args, timeout_s):
    out = _limited(fn, args, timeout_s)
    if out[0] == "timeout":
        return {"status": "timeout", "limit_s": timeout_s}
    if out[0] == "error":
        return {"status": "error", "error": out[1]}
    elapsed, res = out[1]
    return {"seconds": elapsed, **res}


def _street_bench(conn, times_street, full_street, street_rows, limit=0, cold_street=None, repeat=1):
    """Street plans: for each street, a plan over all its communities; the operation script in up to two of its
    communities; after each operation the live validation (re-validates the touched community only) is timed, and
    once per street a full validation with no reuse of results: first with the communities' contexts (boundary,
    buildings, compounds) not cached (`cold_street`), then with them cached (`full_street`)."""
    from geo.plans import validation as plan_validation
    from geo.plans.validation import contexts_for, validate_plan_state

    streets = conn.exec_driver_sql("SELECT code, id FROM streets ORDER BY code").all()
    if limit:
        streets = streets[:limit]
    for scode, _sid in streets:
        pid = plans.create_plan(conn, scode, "bench")
        state = plans.load_state(conn, pid)
        colds = []
        for _ in range(repeat):
            # nothing cached: drop the contexts of this street's communities (whatever an earlier step built)
            for key in [k for k in plan_validation._CONTEXTS if k[1] in state.communities]:
                del plan_validation._CONTEXTS[key]
            t0 = time.perf_counter()
            validate_plan_state(conn, state, cache=False)
            colds.append(time.perf_counter() - t0)
        if cold_street is not None:
            cold_street += colds
        contexts_for(conn, list(state.communities))
        for _ in range(repeat):
            t0 = time.perf_counter()
            full = validate_plan_state(conn, state, cache=False)
            full_street.append(time.perf_counter() - t0)
        validate(conn, pid)  # the first live validation of every community (then only touched ones)
        done = 0
        for cid in list(state.communities):
            if done >= 2:
                break
            script = _script(conn, pid, cid)
            if not script:
                continue
            done += 1
            for name, op in script:
                if op is None:
                    plans.undo(conn, pid)
                else:
                    try:
                        plans.apply_operation(conn, pid, op)
                    except plans.PlanError:
                        continue
                t0 = time.perf_counter()
                validate(conn, pid)
                times_street.setdefault(name, []).append(time.perf_counter() - t0)
        street_rows.append({"street": scode, "communities": len(state.communities), "grids": len(state.live("grid")),
                            "full_validation_ms": round(statistics.median(full_street[-repeat:]) * 1000, 1),
                            "first_validation_cold_ms": round(statistics.median(colds) * 1000, 1),
                            "errors_at_start": full["errors"]})
        console.print(street_rows[-1])


def _summary(sug, key):
    """Per method: completed/infeasible/timeouts/errors (named), time median/p95, quality totals."""
    recs = [(r["community"], r[key]) for r in sug]
    ok = [(c, m) for c, m in recs if m.get("status") == "ok"]
    secs = [m["seconds"] for _, m in recs if "seconds" in m]

    def names(status):
        return [c for c, m in recs if m.get("status") == status]

    devs = [m["max_dev"] for _, m in ok if m.get("max_dev") is not None]
    return {
        "communities": len(recs), "completed": len(ok),
        "infeasible": names("infeasible"), "timeouts": names("timeout"), "errors": names("error"),
        "time_median_s": statistics.median(secs) if secs else None, "time_p95_s": _p95(secs) if secs else None,
        "time_max_s": max(secs) if secs else None,
        "max_dev_from_middle_median": statistics.median(devs) if devs else None,
        "max_dev_from_middle_max": max(devs) if devs else None,
        "grids": int(sum(m["grids"] for _, m in ok)),
        "grids_out_of_band": int(sum(m["out_of_band"] for _, m in ok)),
        "communities_all_in_band": int(sum(m["out_of_band"] == 0 for _, m in ok)),
        "repaired_by_cp_sat": [c for c, m in ok if m.get("repair", {}).get("repaired")],
        "band_proven_infeasible": [c for c, m in ok if m.get("repair", {}).get("band_infeasible")],
        "cut_by_time_guard": [c for c, m in ok if m.get("reproducible") is False],
        "compounds_split": int(sum(m["compounds_split"] for _, m in ok)),
        "fitting_compounds_split": int(sum(m["fitting_compounds_split"] for _, m in ok)),
        "households_moved": int(sum(m["households_moved"] for _, m in ok)),
        "households_total": int(sum(r["households"] for r in sug if r[key].get("status") == "ok")),
    }


def browser_part(engine, scale: float, edits: int = 50) -> dict:
    """The editor in headless Chromium on a loaded database: page weight and time to interactive for a community
    plan and a whole-street plan (the community with the most comprehensive grids, and its street), then the
    edit-to-feedback latency over a scripted sequence of `edits` edits (tests.test_plan_editor.edit_latency:
    buildings painted across a border and back, lasso and brush strokes, undo and redo), p50/p95."""
    from playwright.sync_api import sync_playwright
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from api.main import create_app
    from geo.access.users import create_user
    from tests.browser import CHROMIUM, CHROMIUM_ARGS, serve
    from tests.test_plan_editor import PASSWORD, _api, _login, edit_latency, page_weight, summarise

    with engine.connect() as conn:
        code = conn.execute(text("""
            SELECT c.code FROM communities c JOIN grids g ON g.community_id = c.id
            WHERE g.kind = 'comprehensive' GROUP BY c.id ORDER BY count(*) DESC, c.code LIMIT 1
        """)).scalar_one()
    user = f"bench_planner_{int(time.time())}"
    with Session(engine) as s:
        create_user(s, user, PASSWORD, "planner", code[:9])
        s.commit()
    out: dict = {"scale": scale, "community": code, "street": code[:9], "edits": edits}
    with serve(create_app(engine)) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            api = _api(base, user)
            plan = api.post("/v1/plans", json={"community_code": code}).json()
            street = api.post("/v1/plans", json={"street_code": code[:9]}).json()
            res, context = _login(browser, base, user, "/plans")
            try:
                page_weight(context, base, plan["id"])  # warm the server's caches once; not counted
                out["community_page"] = page_weight(context, base, plan["id"])
                out["street_page"] = page_weight(context, base, street["id"])
                latencies, _ = edit_latency(res.page, plan, edits)
                out["latency"] = summarise(latencies)
                out["records"] = latencies
            finally:
                context.close()
        finally:
            browser.close()
    return out


def _browser_rows(b: dict) -> list[dict]:
    rows = []
    for what in ("community_page", "street_page"):
        p = b[what]
        rows.append({"what": f"scale {b['scale']}: open {what.split('_')[0]} plan ({p['grids']} grids, "
                             f"{p['buildings']} buildings)", "n": 1,
                     "median_ms": p["interactive_ms"], "p95_ms": None, "max_ms": None,
                     "kb": round(p["total_bytes"] / 1024, 1)})
    names = {"figures_ms": "panel figures", "map_ms": "map redrawn", "diff_ms": "diff"}
    for key, label in names.items():
        q = b["latency"].get(key)
        if q:
            rows.append({"what": f"scale {b['scale']}: edit → {label} ({q['n']} edits)", "n": q["n"],
                         "median_ms": q["p50"], "p95_ms": q["p95"],
                         "max_ms": max(r[key] for r in b["records"] if r.get(key) is not None), "kb": None})
    return rows


def run_browser(scales: list[float], seed: int, edits: int) -> None:
    """The browser part at each scale (a fresh database each), table printed, bench/results/plans_browser.json."""
    import json

    from bench.common import RESULTS

    parts, rows = [], []
    for scale in scales:
        t0 = time.perf_counter()
        with fresh_database("gridatlas_bench_plans_browser") as engine:
            loaded = generate_and_load(engine, scale, seed)
            console.print(f"scale {scale}: {loaded['counts']} in {time.perf_counter() - t0:.0f} s")
            b = browser_part(engine, scale, edits)
        b["generate_and_load_s"] = round(time.perf_counter() - t0, 1)
        parts.append(b)
        rows += _browser_rows(b)
    report("plans_browser", rows, "Plan editor in Chromium: time to interactive (median_ms, with kb), "
                                  "edit-to-feedback latency")
    data = json.loads((RESULTS / "plans_browser.json").read_text())
    data.update({"seed": seed, "runs": parts, "note": "one run per scale on a shared machine: noisy"})
    (RESULTS / "plans_browser.json").write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--communities", type=int, default=0, help="0 = all")
    parser.add_argument("--codes", nargs="+", default=None, metavar="CODE",
                        help="only these communities (12-digit codes); results go to bench/results/"
                             "plans_selected.json, leaving plans.json as the full run wrote it")
    parser.add_argument("--suggest-budget", type=float, default=30.0,
                        help="wall-clock guard of ReCom's search per community (it normally ends by its step count, "
                             "so the seed reproduces it; communities the guard cut are counted)")
    parser.add_argument("--repair-budget", type=float, default=None,
                        help="CP-SAT deterministic work units for the exact step "
                             "(default: geo.plans.suggest.REPAIR_BUDGET)")
    parser.add_argument("--no-maxp", action="store_true")
    parser.add_argument("--streets", type=int, default=0, help="street plans over this many streets (0 = all)")
    parser.add_argument("--no-streets", action="store_true")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="per-community time limit (s) for each suggestion method, in a child process")
    parser.add_argument("--repeat", type=int, default=1,
                        help="street plans: time each street's full validations (cold and cached) this many times")
    parser.add_argument("--only", choices=("all", "street", "browser"), default="all",
                        help="street: only the street plans (no community script, no suggestions); results go to "
                             "bench/results/plans_street.json, leaving plans.json as the full run wrote it; "
                             "browser: only the editor in Chromium (bench/results/plans_browser.json)")
    parser.add_argument("--browser-scales", type=float, nargs="+", default=[1.0],
                        help="the browser part's scales (each in a fresh database)")
    parser.add_argument("--edits", type=int, default=50, help="the browser part's scripted edits")
    args = parser.parse_args()
    if args.only == "browser":
        run_browser(args.browser_scales, args.seed, args.edits)
        return
    result_name = "plans" if args.only == "all" else "plans_street"
    if args.codes and args.only == "all":
        result_name = "plans_selected"
    rules = get_settings().rules
    lo, hi = rules.grid_households_min, rules.grid_households_max
    rows = []
    t_start = time.perf_counter()
    with fresh_database("gridatlas_bench_plans") as engine:
        loaded = generate_and_load(engine, args.scale, args.seed)
        console.print(f"scale {args.scale}: {loaded['counts']}")
        with engine.connect() as conn:
            trans = conn.begin()
            codes = conn.exec_driver_sql("SELECT code, id FROM communities ORDER BY code").all()
            if args.codes:
                missing = sorted(set(args.codes) - {c for c, _ in codes})
                if missing:
                    raise SystemExit(f"no such community: {', '.join(missing)}")
                codes = [(c, i) for c, i in codes if c in set(args.codes)]
            if args.communities:
                codes = codes[: args.communities]
            if args.only == "street":
                codes = []
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
                # suggestion on a fresh copy of the published grids, both methods on the same input
                spid = plans.create_plan(conn, code, "bench")
                state = plans.load_state(conn, spid)
                ctx = context_for(conn, cid)
                rec = {"community": code, "households": int(ctx.buildings["households"].sum()),
                       "recom": _run_method(_recom, (state, ctx, lo, hi, args.seed, args.suggest_budget,
                                                     args.repair_budget), args.timeout)}
                rec["maxp"] = ({"status": "skipped"} if args.no_maxp else
                               _run_method(_maxp, (state, ctx, lo, hi, args.seed), args.timeout))
                sug.append(rec)
                console.print(rec)
            times_street: dict[str, list[float]] = {}
            full_street: list[float] = []
            cold_street: list[float] = []
            street_rows: list[dict] = []
            if not args.no_streets or args.only == "street":
                _street_bench(conn, times_street, full_street, street_rows, args.streets, cold_street,
                              args.repeat)
            trans.rollback()
    for label, tt in (("community", times), ("street", times_street)):
        for name, xs in sorted(tt.items()):
            rows.append({"what": f"{label} plan: validate after {name}", "n": len(xs),
                         "median_ms": statistics.median(xs) * 1000, "p95_ms": _p95(xs) * 1000,
                         "max_ms": max(xs) * 1000})
        allv = [x for xs in tt.values() for x in xs]
        if allv:
            rows.append({"what": f"{label} plan: validate (all operations)", "n": len(allv),
                         "median_ms": statistics.median(allv) * 1000, "p95_ms": _p95(allv) * 1000,
                         "max_ms": max(allv) * 1000})
    if full_street:
        rows.append({"what": "street plan: full validation, no reuse", "n": len(full_street),
                     "median_ms": statistics.median(full_street) * 1000, "p95_ms": _p95(full_street) * 1000,
                     "max_ms": max(full_street) * 1000})
    if cold_street:
        rows.append({"what": "street plan: first validation, contexts not cached", "n": len(cold_street),
                     "median_ms": statistics.median(cold_street) * 1000, "p95_ms": _p95(cold_street) * 1000,
                     "max_ms": max(cold_street) * 1000})
    methods = {}
    if args.only == "all":
        methods["recom"] = _summary(sug, "recom")
        if not args.no_maxp:
            methods["maxp"] = _summary(sug, "maxp")
    for m, q in methods.items():
        label = {"recom": "suggest ReCom (networkx)", "maxp": "spopt max-p-regions"}[m]
        if q["time_median_s"] is not None:
            rows.append({"what": f"{label}: time per community", "n": q["completed"],
                         "median_ms": q["time_median_s"] * 1000, "p95_ms": q["time_p95_s"] * 1000,
                         "max_ms": q["time_max_s"] * 1000})
        console.print(label, q)
    title = f"Redraw plans at scale {args.scale}" + (" (street plans only)" if args.only == "street" else "")
    report(result_name, rows, title)
    import json

    from bench.common import RESULTS

    data = json.loads((RESULTS / f"{result_name}.json").read_text())
    data.update({"scale": args.scale, "seed": args.seed, "band": [lo, hi], "per_community_limit_s": args.timeout,
                 "recom_budget_s": args.suggest_budget, "repair_budget": args.repair_budget,
                 "codes": args.codes, "methods": methods, "suggestions": sug,
                 "streets": street_rows, "wall_s": round(time.perf_counter() - t_start, 1)})
    (RESULTS / f"{result_name}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    if args.only == "all" and not args.codes:
        run_browser(args.browser_scales, args.seed, args.edits)


if __name__ == "__main__":
    main()
