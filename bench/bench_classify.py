"""Compound-versus-grid classification at scale 1 and 10: set-based PostGIS SQL against vectorised shapely.

For each scale a district is generated into a fresh database; each implementation classifies every compound
against grids and against micro-grids `--repeat` times (median reported, and the ratio SQL / shapely). The end-to-end
run of the default implementation (compute, sensitivity and storing the results) is timed too: that is what the
targets (scale 1 under 2 s, scale 10 under 20 s, both levels together) apply to.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.common import console, fresh_database, report, timed
from demo.load import generate_and_load
from geo.classify import classification as gc

TARGET_S = {1.0: 2.0, 10.0: 20.0}


def _store_run(engine, rules) -> float:
    """Seconds for ensure_classification(force) of both levels with the default implementation (rolled back)."""
    with engine.connect() as conn:
        trans = conn.begin()
        t0 = time.perf_counter()
        for level in gc.LEVELS:
            gc.ensure_classification(conn, level, rules=rules, force=True)
        elapsed = time.perf_counter() - t0
        trans.rollback()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="1,10", help="comma-separated scales")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="runs per implementation and level (median)")
    args = parser.parse_args()
    rules = gc.get_rules()
    rows = []
    for scale in [float(s) for s in args.scales.split(",")]:
        with fresh_database("gridatlas_bench_classify") as engine:
            loaded = generate_and_load(engine, scale, args.seed)
            console.print(f"scale {scale}: {loaded['counts']} loaded in {sum(loaded['timings'].values()):.1f} s")
            repeat = max(1, args.repeat if scale <= 1 else max(3, args.repeat // 2))
            per_level = {}
            for level in gc.LEVELS:
                results, runs, parts = {}, {"sql": [], "shapely": []}, {}
                with engine.connect() as conn:
                    # Interleaved, so that load from other processes on this shared machine hits both alike.
                    for _ in range(repeat):
                        for impl in ("sql", "shapely"):
                            _, seconds, results[impl] = timed(
                                lambda impl=impl, level=level: gc.compute(
                                    conn, level, rules=rules, implementation=impl), 1)
                            runs[impl] += seconds
                            parts[impl] = {k: round(v, 3) for k, v in results[impl].timings.items()}
                medians = {impl: statistics.median(r) for impl, r in runs.items()}
                a, b = results["sql"].compounds, results["shapely"].compounds
                disagree = int((a["class"] != b["class"].reindex(a.index)).sum())
                counts = results[rules.implementation].counts()
                per_level[level] = medians
                rows.append({
                    "scale": scale, "level": level, "compounds": len(a),
                    "overlaps": len(results["shapely"].overlaps), "sql_s": medians["sql"],
                    "shapely_s": medians["shapely"], "sql/shapely": medians["sql"] / medians["shapely"],
                    "faster": min(medians, key=medians.get), "disagree": disagree,
                    **{c: counts[c] for c in gc.CLASSES},
                    "end_to_end_s": None, "target_s": None, "meets_target": None,
                    "load_avg_1m": round(os.getloadavg()[0], 1),
                })
                console.print(f"scale {scale} {level} runs sql {[round(x, 3) for x in runs['sql']]}, shapely "
                              f"{[round(x, 3) for x in runs['shapely']]}; stages of the last run: sql {parts['sql']}, "
                              f"shapely {parts['shapely']}; load average {os.getloadavg()[0]:.1f}")
            stored = statistics.median(_store_run(engine, rules) for _ in range(3))
            rows.append({
                "scale": scale, "level": "both, stored", "compounds": loaded["counts"].get("compounds"),
                "overlaps": None, "sql_s": sum(m["sql"] for m in per_level.values()),
                "shapely_s": sum(m["shapely"] for m in per_level.values()),
                "sql/shapely": sum(m["sql"] for m in per_level.values())
                / sum(m["shapely"] for m in per_level.values()),
                "faster": f"default={rules.implementation}", "disagree": None,
                **{c: None for c in gc.CLASSES},
                "end_to_end_s": stored, "target_s": TARGET_S.get(scale), "meets_target":
                    stored < TARGET_S.get(scale, float("inf")),
                "load_avg_1m": round(os.getloadavg()[0], 1),
            })
    report("classify", rows, "Classification: SQL (PostGIS) vs shapely, median seconds")


if __name__ == "__main__":
    main()
