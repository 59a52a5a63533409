"""Mixed load on the multi-process setup (wrk on loopback, bounded in time): locate, vector tiles and incident
writes at once, through haproxy, with 1 and 2 API processes, then 2 processes with a hot standby serving the
tiles, and the same with PgBouncer in front of the primary (when installed).

Three wrk processes run side by side against the same front for `--seconds` (after a short warm-up): one per
kind of request, each with its own connections, so the mix hits the server together and every kind gets its
own throughput, p50/p99 and errors (non-2xx answers and socket errors). Every request is authenticated (an admin's
bearer token). A scratch database on the project's local cluster holds a generated district (dropped at the end);
a standby the benchmark had to make is removed at the end too. Nothing leaves the machine.

    scripts/bench mixed                 # or: .venv/bin/python -m bench.bench_mixed --scale 1 --seconds 20
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.bench_load import tile_paths
from bench.bench_locate import _ms, make_token
from bench.common import fresh_database, report
from demo.load import generate_and_load
from geo.store import db, localdb

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gridatlas_deploy_cluster", ROOT / "deploy" / "cluster.py")
assert _spec and _spec.loader
cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster)


#: wrk Lua: answers counted by status (which errors they were), printed at the end as "status <code> <count>".
COUNT_STATUSES = r"""
statuses = {}
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
response = function(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
done = function(summary, latency, requests)
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do io.write("status " .. code .. " " .. n .. "\n") end
  end
end
"""


def _script(requests: list[tuple[str, str, str | None]], headers: dict[str, str]) -> str:
    """A wrk Lua script cycling through (method, path, body)."""
    lines = ["local reqs = {}"]
    for method, path, body in requests:
        lines.append(f"reqs[#reqs + 1] = {{{json.dumps(method)}, {json.dumps(path)}, "
                     f"{'[==[' + body + ']==]' if body else 'nil'}}}")
    lines.append("local i = 0")
    for k, v in {**headers, "Content-Type": "application/json"}.items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    lines.append("request = function()\n  i = i % #reqs + 1\n  local r = reqs[i]\n"
                 "  return wrk.format(r[1], r[2], nil, r[3])\nend")
    lines.append(COUNT_STATUSES)
    return "\n".join(lines) + "\n"


def _parse(out: str) -> dict:
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    statuses = {int(c): int(n) for c, n in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    return {"requests_per_s": round(float(rps.group(1)), 1) if rps else 0.0,
            "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0),
            "error_statuses": " ".join(f"{c}×{n}" for c, n in sorted(statuses.items()) if c >= 400) or "-",
            "socket_errors": "connect {} read {} write {} timeout {}".format(*sock.groups()) if sock else "-"}


def run_mix(base: str, mix: dict[str, tuple[list, int]], headers: dict, seconds: int, workdir: Path) -> dict:
    """One wrk per kind of request, all at once for `seconds` (after a 3 s warm-up): {kind: figures}."""
    scripts = {}
    for kind, (requests, _) in mix.items():
        scripts[kind] = workdir / f"{kind}.lua"
        scripts[kind].write_text(_script(requests, headers))

    def launch(duration: int, latency: bool) -> dict[str, subprocess.Popen]:
        return {kind: subprocess.Popen(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
                                        *(["--latency"] if latency else []), "-s", str(scripts[kind]), base],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for kind, (_, conns) in mix.items()}

    for p in launch(3, False).values():
        p.communicate()
    runs = launch(seconds, True)
    return {kind: {"connections": mix[kind][1], **_parse(p.communicate()[0])} for kind, p in runs.items()}


def requests_for(engine, n: int, seed: int) -> dict[str, list]:
    """Locate GETs, tile GETs (grids and buildings, zoom 15) and incident POSTs at points inside the district."""
    with engine.connect() as conn:
        pts = conn.execute(text(
            "SELECT ST_X(g), ST_Y(g) FROM (SELECT (ST_Dump(ST_GeneratePoints(ST_Union(geom), :n, :seed))).geom g "
            "FROM current_grids) s"), {"n": n, "seed": seed}).all()
    lon, lat = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    locate = [("GET", f"/v1/locate?lon={x:.6f}&lat={y:.6f}", None) for x, y in zip(lon, lat, strict=True)]
    tiles = [("GET", path, None) for path in tile_paths(lon, lat, 15)]
    writes = [("POST", "/v1/incidents", json.dumps({"lon": round(x, 6), "lat": round(y, 6), "class_code": "A01",
                                                    "source": "patrol", "description": f"压测 {i}"},
                                                   ensure_ascii=False))
              for i, (x, y) in enumerate(zip(lon[:200], lat[:200], strict=True))]
    return {"locate": locate, "tiles": tiles, "writes": writes}


def topology(n: int, env: dict[str, str], workdir: Path, headers: dict, warm_path: str):
    """`n` API processes behind haproxy, each with its locate index built (`warm_path`, a first locate, outside
    the measured time): (front URL, processes)."""
    import httpx

    ports = [cluster.free_port() for _ in range(n)]
    procs = [cluster.start_api(p, env, workdir / f"api-{p}.log") for p in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            cluster.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=180, proc=proc)
            httpx.get(f"http://127.0.0.1:{port}{warm_path}", headers=headers, timeout=300).raise_for_status()
        front = cluster.free_port()
        procs.append(cluster.start_haproxy(front, ports, workdir))
        cluster.wait_ready(f"http://127.0.0.1:{front}/readyz", timeout=30)
        time.sleep(2.5)  # every process passes its first health check
    except BaseException:
        cluster.stop(procs)
        raise
    return f"http://127.0.0.1:{front}", procs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", default="16,8,4", help="locate,tiles,writes connections")
    ap.add_argument("--pgbouncer", action=argparse.BooleanOptionalAction, default=localdb.PGBOUNCER.exists(),
                    help="also a setup with PgBouncer in front of the primary (default: when installed)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    conns = [int(c) for c in args.connections.split(",")]
    primary, standby = cluster.local_pair()
    made_standby = not (standby.data / "PG_VERSION").exists()
    rows: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="gridatlas-bench-mixed-"))
    try:
        with fresh_database("gridatlas_bench_mixed") as owner:
            generate_and_load(owner, args.scale, args.seed)
            name = make_url(str(owner.url)).database or ""
            service_url = db.service_url_for(owner.url.render_as_string(hide_password=False))
            engine = db.make_engine(service_url)
            headers = make_token(engine)
            reqs = requests_for(engine, 2000, args.seed)
            engine.dispose()
            localdb.standby_up(primary, standby)
            configs = [("1 process", 1, {}), ("2 processes", 2, {}),
                       ("2 processes, standby reads", 2, {"GRIDATLAS_READ_DATABASE_URL": standby.service_url(name)})]
            if args.pgbouncer:
                localdb.pgbouncer_up(primary)
                configs.append(("2 processes, standby reads, PgBouncer", 2, {
                    "GRIDATLAS_READ_DATABASE_URL": standby.service_url(name),
                    "DATABASE_URL": localdb.pgbouncer_url(primary, name),
                    "GRIDATLAS_DATABASE_TRANSACTION_POOLING": "1", "GRIDATLAS_DIRECT_DATABASE_URL": service_url}))
            for label, n, extra in configs:
                env = {"DATABASE_URL": service_url, **extra}
                log = workdir / "haproxy.log"
                seen = log.stat().st_size if log.exists() else 0
                base, procs = topology(n, env, workdir, headers, reqs["locate"][0][1])
                try:
                    mix = {"locate": (reqs["locate"], conns[0]), "tiles": (reqs["tiles"], conns[1]),
                           "writes": (reqs["writes"], conns[2])}
                    figures = run_mix(base, mix, headers, args.seconds, workdir)
                    rss = sum(cluster.rss_mb(p.pid) for p in procs[:n])
                finally:
                    cluster.stop(procs)
                # a process haproxy took out of rotation (failed /readyz checks) turns into fast 503s
                with log.open("rb") as f:
                    f.seek(seen)
                    down = f.read().count(b" is DOWN")
                for kind, f in figures.items():
                    rows.append({"setup": label, "kind": kind, **f, "api_rss_mb": round(rss), "backend_down": down})
                print(json.dumps(rows[-3:], ensure_ascii=False), flush=True)
    finally:
        if args.pgbouncer:
            localdb.pgbouncer_down(primary)
        if made_standby:
            localdb.standby_remove(primary, standby)
        shutil.rmtree(workdir, ignore_errors=True)
    report("mixed", rows, f"mixed load through haproxy, scale {args.scale:g}, {args.seconds} s per setup "
                          f"(connections locate/tiles/writes {args.connections})")


if __name__ == "__main__":
    main()
