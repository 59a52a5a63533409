"""The phone's place search (地点搜索) by name or address: pack size and search latency per jurisdiction.

A district is generated at each scale into a fresh database. For a grid worker, a community, a street and the whole
district (an admin) it reports the offline pack (`GET /v1/mobile/places`: compounds and buildings with a point and
address) as compact JSON and gzipped, how many building addresses travel as ``true`` (rebuilt on the phone from the
compound's), and the median time of `search_places` over queries by address ("巴陵东路129号", "…3栋2单元", a
road's first characters) and by name, each run `--repeat` times.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time

from sqlalchemy import text

from bench.common import console, fresh_database, report
from demo.load import generate_and_load
from geo.features.places import jurisdiction_places, search_places


def _queries(conn, prefix: str | None) -> dict[str, str]:
    """Queries a worker of `prefix` would type, taken from a compound of that jurisdiction."""
    row = conn.execute(text(
        "SELECT k.name, k.address FROM compounds k JOIN current_grids g ON ST_Intersects(g.geom, k.geom) "
        "WHERE k.address IS NOT NULL AND (CAST(:p AS text) IS NULL OR starts_with(g.code, :p)) "
        "ORDER BY k.id LIMIT 1"), {"p": prefix}).one()
    return {"address": row.address, "address+unit": f"{row.address}3栋2单元", "road prefix": row.address[:2],
            "name": row.name, "name 3栋": f"{row.name} 3栋"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="1", help="comma-separated scales")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7, help="runs per query (median)")
    args = parser.parse_args()
    rows = []
    for scale in [float(s) for s in args.scales.split(",")]:
        with fresh_database("gridatlas_bench_places") as engine:
            loaded = generate_and_load(engine, scale, args.seed)
            console.print(f"scale {scale}: {loaded['counts']} loaded in {sum(loaded['timings'].values()):.1f} s")
            with engine.connect() as conn:
                grid = conn.execute(text("SELECT g.code FROM compounds k JOIN current_grids g "
                                         "ON ST_Intersects(g.geom, ST_PointOnSurface(k.geom)) "
                                         "WHERE k.address IS NOT NULL ORDER BY k.id LIMIT 1")).scalar_one()
                for scope, prefix in (("grid", grid), ("community", grid[:12]), ("street", grid[:9]),
                                      ("district", None)):
                    t0 = time.perf_counter()
                    pack = jurisdiction_places(conn, prefix)
                    pack_s = time.perf_counter() - t0
                    raw = json.dumps(pack, ensure_ascii=False, separators=(",", ":")).encode()
                    addressed = [b for b in pack["buildings"] if b[5] is not None]
                    row = {"scale": scale, "scope": scope, "compounds": len(pack["compounds"]),
                           "buildings": len(pack["buildings"]), "pack_kb": len(raw) / 1024,
                           "pack_gz_kb": len(gzip.compress(raw)) / 1024,
                           "addresses_rebuilt": sum(1 for b in addressed if b[5] is True) / max(1, len(addressed)),
                           "pack_s": pack_s}
                    for label, q in _queries(conn, prefix).items():
                        runs = []
                        for _ in range(args.repeat):
                            t0 = time.perf_counter()
                            search_places(conn, q, prefix)
                            runs.append(time.perf_counter() - t0)
                        row[f"{label}_ms"] = statistics.median(runs) * 1000
                    row["load_avg_1m"] = round(os.getloadavg()[0], 1)
                    rows.append(row)
    report("places", rows, "Place search by name or address: pack size and search latency (median ms)")


if __name__ == "__main__":
    main()
