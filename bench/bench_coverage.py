"""Staff coverage report and steward planning on whole generated districts (targets: report at scale 1 < 2 s;
planning at scale 1 < 60 s and at scale 10 < 10 min). Each scale is generated into a fresh database.

The report is timed for the whole district computed afresh and reused (the process's report cache, after a
commit-order sync with the database), and for one grid and one community computed afresh (medians over several
of them): a narrow request should cost in proportion to what it covers.

    .venv/bin/python -m bench.bench_coverage --scales 1,10 [--no-plan]
"""

from __future__ import annotations

import argparse
import statistics
import time

from sqlalchemy import text

from bench.common import console, fresh_database, report, timed
from demo.load import generate_and_load
from geo.staff import coverage as cov
from geo.staff.coverage import coverage_report
from geo.staff.stewards import plan_stewards

REPORT_TARGET_S = {1.0: 2.0}
PLAN_TARGET_S = {1.0: 60.0, 10.0: 600.0}


def _fresh(conn, prefix: str):
    """A report computed afresh (the process's cache emptied first, when there is one)."""
    cache = getattr(cov, "REPORTS", None)
    if cache is not None:
        cache.clear()
    return coverage_report(conn, prefix)


def _median_over(conn, prefixes: list[str]) -> float:
    runs = []
    for p in prefixes:
        t0 = time.perf_counter()
        _fresh(conn, p)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def run_scale(scale: float, seed: int, repeat: int, allow_move: bool, time_limit_s: float, processes: int,
              plan: bool = True) -> dict:
    """Generate, load, report and plan one district; the figures of one row."""
    with fresh_database() as engine:
        t0 = time.perf_counter()
        loaded = generate_and_load(engine, scale, seed)
        load_s = time.perf_counter() - t0
        with engine.connect() as conn:
            report_s, runs, rep = timed(lambda: _fresh(conn, ""), repeat=repeat)
            conn.rollback()
            coverage_report(conn, "")
            cached_s, _, _ = timed(lambda: coverage_report(conn, ""), repeat=repeat)
            t = rep.totals
            grids = conn.execute(text("SELECT code FROM current_grids ORDER BY md5(code) LIMIT 20")).scalars().all()
            communities = conn.execute(text("SELECT code FROM communities ORDER BY md5(code) LIMIT 5")).scalars().all()
            grid_s = _median_over(conn, grids)
            community_s = _median_over(conn, communities)
            console.print(f"scale {scale}: whole district {report_s:.3f} s afresh (median of {runs}), "
                          f"{cached_s:.4f} s reused; one grid {grid_s:.3f} s, one community {community_s:.3f} s")
            row = {
                "scale": scale, "seed": seed, "load_s": load_s,
                "buildings": loaded["counts"].get("buildings"), "units": loaded["counts"].get("units"),
                "households": t["households"], "stewards": t["stewards"],
                "report_s": report_s, "report_target_s": REPORT_TARGET_S.get(scale),
                "report_ok": report_s < REPORT_TARGET_S.get(scale, float("inf")),
                "report_reused_s": cached_s, "report_one_grid_s": grid_s, "report_one_community_s": community_s,
                "share_fulltime": t["share_grids_with_fulltime_worker"],
                "share_building_heads": t["share_buildings_with_head"], "share_unit_heads": t["share_units_with_head"],
                "share_stewarded": t["share_households_with_steward"],
                "stewards_over": t["stewards_over"], "stewards_under": t["stewards_under"],
            }
            if not plan:
                return row
            t0 = time.perf_counter()
            p = plan_stewards(conn, "", allow_move=allow_move, time_limit_s=time_limit_s, processes=processes)
            plan_s = time.perf_counter() - t0
        s = p.summary()
        for c in p.communities:
            if not c.feasible:
                console.print(f"[yellow]{c.explanation}[/yellow]")
        return row | {
            "allow_move": allow_move, "processes": processes, "split_budget_s": time_limit_s, "plan_s": plan_s,
            "plan_target_s": PLAN_TARGET_S.get(scale),
            "plan_ok": plan_s < PLAN_TARGET_S.get(scale, float("inf")),
            "plan_load_s": s["load_s"], "plan_solve_s": s["solve_s"],
            "communities": s["communities"], "feasible": s["feasible"],
            "distance_km": s["distance_m"] / 1000, "greedy_km": s["greedy_distance_m"] / 1000,
            "gap_to_greedy": s["gap_to_greedy"], "greedy_stewards_under": s["greedy_stewards_under"],
            "greedy_unserved": s["greedy_unserved"], "unit_splits": s["splits"],
            "flow_splits": s["flow_splits"], "splits_lower_bound": s["splits_lower_bound"],
            "communities_splits_proven": s["communities_splits_proven"],
            "splits_proven_optimal": s["splits_proven_optimal"],
            "max_community_solve_s": max((c.solve_s for c in p.communities), default=0.0),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1,10", help="comma-separated scales")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="coverage report runs (median)")
    parser.add_argument("--keep", action="store_true", help="keep existing assignments (default: re-plan all)")
    parser.add_argument("--time-limit", type=float, default=0.25, help="CP-SAT seconds per community (splits)")
    parser.add_argument("--processes", type=int, default=1, help="communities solved in parallel processes")
    parser.add_argument("--no-plan", action="store_true", help="time the report only")
    parser.add_argument("--name", default="coverage", help="results file bench/results/<name>.json")
    args = parser.parse_args()
    results = []
    for s in args.scales.split(","):
        results.append(run_scale(float(s), args.seed, args.repeat, not args.keep, args.time_limit, args.processes,
                                 plan=not args.no_plan))
        console.print({k: round(v, 3) if isinstance(v, float) else v for k, v in results[-1].items()})
    # One row per measure, one column per scale: readable in a terminal whatever the number of measures.
    rows = [{"measure": k, **{f"scale {r['scale']:g}": r[k] for r in results}} for k in results[0]]
    report(args.name, rows, "Staff coverage report and steward planning")


if __name__ == "__main__":
    main()
