"""Vector tile throughput alone: the tile part of `bench_maps` (ours and tipg over the same scripted pan, one
client, one server process each), without the pages, at each scale. A first pass cuts every tile; a second finds
ours in the process's tile cache (tipg has none and cuts them again).

    .venv/bin/python -m bench.bench_tiles --scales 1,10
    .venv/bin/python -m bench.bench_tiles --scales 10 --database-url postgresql://…   (a district already loaded)

Writes bench/results/tiles.json. The machine's other load shows in every figure: say whether it was quiet.
"""

from __future__ import annotations

import argparse

from bench.bench_maps import _token, district_database, tiles_side_by_side
from bench.common import console, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,10")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--database-url", action="append", default=[],
                    help="a database holding the district of each scale, in order (else one is generated)")
    args = ap.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    urls = args.database_url + [None] * (len(scales) - len(args.database_url))
    rows = []
    for scale, url in zip(scales, urls, strict=True):
        with district_database(scale, args.seed, url, keep=False) as engine:
            headers = {"Authorization": f"Bearer {_token(engine)}"}
            row = {"scale": scale} | tiles_side_by_side(engine.url.render_as_string(hide_password=False), headers)
        console.print(row)
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = [{"measure": k, **{f"scale {r['scale']:g}": r.get(k) for r in rows}} for k in keys]
    report("tiles", table, "Vector tiles over a scripted pan, zoom 10-16: ours and tipg (one client, sequential)")


if __name__ == "__main__":
    main()
