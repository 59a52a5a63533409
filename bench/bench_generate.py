"""Generation and loading of the synthetic district at scale 1 and 10 (targets: 60 s and 10 min)."""

from __future__ import annotations

import argparse

from bench.common import fresh_database, report
from demo.load import generate_and_load

TARGET_S = {1.0: 60.0, 10.0: 600.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="1,10", help="comma-separated scales")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for scale in [float(s) for s in args.scales.split(",")]:
        with fresh_database() as engine:
            result = generate_and_load(engine, scale, args.seed)
        t = result["timings"]
        total = t["generate_s"] + t["load_s"]
        c = result["counts"]
        rows.append({
            "scale": scale, "generate_s": t["generate_s"], "load_s": t["load_s"], "total_s": total,
            "target_s": TARGET_S.get(scale, float("nan")), "meets_target": total < TARGET_S.get(scale, float("inf")),
            "compounds": c.get("compounds"), "grids": c.get("grids"), "micro_grids": c.get("micro_grids"),
            "buildings": c.get("buildings"), "units": c.get("units"), "incidents": c.get("incidents"),
        })
    report("generate", rows, "Synthetic district: generation + load into PostGIS")


if __name__ == "__main__":
    main()
