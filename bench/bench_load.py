"""Load test on loopback (wrk): locate, vector tiles, coverage and incident writes at 16 and 64 connections.

For each mix, wrk runs for a bounded time against a fresh uvicorn process serving a generated district, every
request authenticated as an admin (bearer token); the table has
requests/s, p50 and p99 latency, errors (non-2xx answers and socket errors) and the server's resident memory after
the run. Nothing leaves the machine.

    .venv/bin/python -m bench.bench_load --scale 1 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import text

from bench.bench_locate import _ms, make_token, sample_points, server
from bench.common import fresh_database, report
from demo.load import generate_and_load
from geo.locate.index import LocateIndex


def _lua(requests: list[tuple[str, str, str | None]], headers: dict[str, str]) -> str:
    """A wrk script cycling through (method, path, body) requests with the given headers."""
    lines = ["local reqs = {}"]
    for method, path, body in requests:
        # bodies as Lua long strings: LuaJIT reads no \\u escapes, and the bodies carry Chinese text
        lines.append(f"reqs[#reqs + 1] = {{{json.dumps(method)}, {json.dumps(path)}, "
                     f"{'[==[' + body + ']==]' if body else 'nil'}}}")
    lines.append("local i = 0")
    for k, v in headers.items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    lines.append("request = function()\n  i = i % #reqs + 1\n  local r = reqs[i]\n"
                 "  return wrk.format(r[1], r[2], nil, r[3])\nend")
    return "\n".join(lines) + "\n"


def run_wrk(base: str, requests: list, headers: dict, seconds: int, connections: int) -> dict:
    """wrk over `requests` for `seconds` at `connections`: requests/s, p50/p99 ms, errors."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "mix.lua"
        script.write_text(_lua(requests, headers))
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
                              "-s", str(script), base], capture_output=True, text=True).stdout
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests_per_s": float(rps.group(1)) if rps else 0.0, "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(g) for g in sock.groups()) if sock else 0}


def server_rss_mb(port: int) -> float | None:
    """Resident memory (MB) of the process listening on `port` (via /proc; None when it cannot be found)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    pid = re.search(r"pid=(\d+)", out)
    if not pid:
        return None
    for line in Path(f"/proc/{pid.group(1)}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def tile_paths(lon: np.ndarray, lat: np.ndarray, z: int) -> list[str]:
    """Building and grid tile paths covering the sample points at zoom `z`."""
    n = 2 ** z
    x = ((lon + 180) / 360 * n).astype(int)
    y = ((1 - np.log(np.tan(np.radians(lat)) + 1 / np.cos(np.radians(lat))) / np.pi) / 2 * n).astype(int)
    tiles = sorted(set(zip(x.tolist(), y.tolist(), strict=True)))
    return [f"/tiles/{layer}/{z}/{tx}/{ty}.mvt" for tx, ty in tiles for layer in ("grids", "buildings")]


def warm_up(base: str, request: tuple[str, str, str | None], headers: dict) -> None:
    """Send one request of the mix and wait for its answer (the locate index builds on the first lookup: at scale
    10 that takes longer than a row lasts, and a row must measure serving, not the build)."""
    method, path, body = request
    with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
        client.request(method, path, content=body.encode() if body else None,
                       headers={"Content-Type": "application/json"} if body else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--mixes", default="", help="comma-separated mix names (default: all), e.g. coverage")
    parser.add_argument("--name", default="load", help="results file bench/results/<name>.json")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (scripts/bench installs it as root: apt-get install wrk)")
    rows = []
    with fresh_database("gridatlas_bench_load") as engine:
        generate_and_load(engine, args.scale, args.seed)
        url = engine.url.render_as_string(hide_password=False)
        headers = make_token(engine)
        with engine.connect() as conn:
            index = LocateIndex.from_db(conn)
            grid_codes = list(conn.execute(text("SELECT code FROM current_grids ORDER BY code LIMIT 200")).scalars())
        lon, lat = sample_points(index, 400, args.seed, inside_only=True)
        mixes = {
            "locate": [("GET", f"/v1/locate?lon={x:.6f}&lat={y:.6f}", None) for x, y in zip(lon, lat, strict=True)],
            "tiles z14": [("GET", p, None) for p in tile_paths(lon, lat, 14)],
            "coverage (one grid)": [("GET", f"/v1/coverage?grid={c}", None) for c in grid_codes],
            "incident writes": [("POST", "/v1/incidents", json.dumps(
                {"lon": round(float(x), 6), "lat": round(float(y), 6), "class_code": "A01", "source": "patrol",
                 "description": "压力测试"}, ensure_ascii=False)) for x, y in zip(lon[:100], lat[:100], strict=True)],
        }
        wanted = [m.strip() for m in args.mixes.split(",") if m.strip()]
        for name, requests in mixes.items():
            if wanted and not any(name.startswith(w) for w in wanted):
                continue
            # a fresh process per mix: a slow mix's backlog must not be charged to the next one
            with server(url, 1) as base:
                port = int(base.rsplit(":", 1)[1])
                warm_up(base, requests[0], headers)
                for c in (int(v) for v in args.connections.split(",")):
                    result = run_wrk(base, requests, headers, args.seconds, c)
                    rows.append({"scale": args.scale, "mix": name, "connections": c, **result,
                                 "server_rss_mb": server_rss_mb(port)})
    report(args.name, rows, f"Load on loopback (wrk, {args.seconds} s per row, one API process)")


if __name__ == "__main__":
    main()
