"""Locate: the in-memory index against PostGIS, over HTTP, at scale 1 (and 10).

For each scale a district is generated into a fresh database (or `--url` names one already loaded). Measured:

- index build time (median of 3) and memory (resident-set growth of the first build, and the index's own estimate);
- agreement: 100,000 points (uniform over the district and a margin outside, on boundary vertices, on boundary
  edges) located by the index and by the PostGIS reference (`ST_Covers` + GiST); disagreements are counted;
- index throughput in process (`locate_many`, 1,000,000 points);
- PostGIS per-point path (one reference query per point) and set-based path (one query for 100,000 points);
- over HTTP on loopback, uvicorn in a subprocess: single lookups under `wrk` (if installed, else an asyncio httpx
  load generator) for p50/p99 latency and requests/s, the handler's own time from the Server-Timing header, and a
  1,000,000-point CSV batch streamed through `POST /v1/locate/batch` (points/s, the median of `--batch-repeat`
  runs, and the ratio to PostGIS per point). The machine's load average is recorded with the figures.

Batch and PostGIS points are uniform over the area the grids cover; the index alone is also timed over the
bounding box (where a third of the points fall outside every grid and take the nearest-grid path).

Targets (issue 5, scale 1, this 2-core machine): p50 < 2 ms server-side, >= 1,500 requests/s, batch >= 500,000
points/s and >= 20x the PostGIS per-point path. Load generator, server and PostgreSQL share the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from bench.common import console, fresh_database, report, timed
from geo.store import db

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"p50_ms": 2.0, "requests_per_s": 1500, "batch_points_per_s": 500_000, "batch_vs_postgis": 20}


def rss_mb() -> float:
    """This process's resident set size (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_server_options() -> list[str]:
    """uvicorn's C HTTP parser and event loop, named explicitly when installed (uvicorn's `auto` picks them too)."""
    import importlib.util

    options = []
    if importlib.util.find_spec("httptools"):
        options += ["--http", "httptools"]
    if importlib.util.find_spec("uvloop"):
        options += ["--loop", "uvloop"]
    return options


@contextmanager
def server(url: str, workers: int):
    """uvicorn serving the app on the database at `url` in a subprocess; yields its base URL."""
    import httpx

    port = free_port()
    env = {**os.environ, "DATABASE_URL": url}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1", "--port",
           str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log", *fast_server_options()]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def sample_points(index, n: int, seed: int, inside_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points over the grid layer's extent; with `inside_only`, only those some grid answers."""
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = index.bounds
    xs, ys = [], []
    have = 0
    while have < n:
        x = rng.uniform(minx, maxx, n * 2)
        y = rng.uniform(miny, maxy, n * 2)
        if inside_only:
            keep = index.locate_many(x, y, 0.0).match > 0
            x, y = x[keep], y[keep]
        xs.append(x)
        ys.append(y)
        have += len(x)
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(base: str, paths: list[str], seconds: int, connections: int) -> dict:
    """wrk with a Lua script cycling through `paths`: requests/s and latency percentiles (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "paths.txt"
        listing.write_text("\n".join(paths) + "\n")
        script = Path(tmp) / "paths.lua"
        script.write_text(
            f'local paths = {{}}\nfor line in io.lines("{listing}") do paths[#paths + 1] = line end\n'
            "local i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n")
        subprocess.run(["wrk", "-t1", f"-c{connections}", "-d3s", "-s", str(script), base], capture_output=True)
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                              base], capture_output=True, text=True).stdout
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"tool": "wrk", "requests_per_s": rps, "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def run_httpx_load(base: str, paths: list[str], seconds: int, connections: int) -> dict:
    """A bounded asyncio httpx load generator (when wrk is absent): requests/s and latency percentiles (ms)."""
    import httpx

    async def worker(client, k, lat, stop):
        i = k
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            await client.get(paths[i % len(paths)])
            lat.append((time.perf_counter() - t0) * 1000)
            i += connections

    async def main():
        lat: list[float] = []
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            stop = time.monotonic() + seconds
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(client, k, lat, stop) for k in range(connections)))
            elapsed = time.perf_counter() - t0
        return lat, elapsed

    lat, elapsed = asyncio.run(main())
    q = np.percentile(lat, [50, 99])
    return {"tool": "httpx", "requests_per_s": len(lat) / elapsed, "p50_ms": float(q[0]), "p99_ms": float(q[1]),
            "non_2xx": None}


def server_timing(base: str, paths: list[str]) -> dict:
    """Sequential requests: the handler's own time (Server-Timing) and the round trip, p50/p99 in ms."""
    import httpx

    handler, trip = [], []
    with httpx.Client(base_url=base, timeout=30) as client:
        for path in paths:
            t0 = time.perf_counter()
            r = client.get(path)
            trip.append((time.perf_counter() - t0) * 1000)
            m = re.search(r"dur=([\d.]+)", r.headers.get("server-timing", ""))
            if m:
                handler.append(float(m.group(1)))
    return {"handler_p50_ms": float(np.percentile(handler, 50)), "handler_p99_ms": float(np.percentile(handler, 99)),
            "roundtrip_p50_ms": float(np.percentile(trip, 50)), "roundtrip_p99_ms": float(np.percentile(trip, 99))}


def csv_body(lon: np.ndarray, lat: np.ndarray) -> bytes:
    """The points as a CSV request body (lon,lat header, 7 decimals)."""
    return ("lon,lat\n" + "".join(f"{a:.7f},{b:.7f}\n" for a, b in zip(lon.tolist(), lat.tolist(), strict=True))
            ).encode()


def batch_over_http(base: str, headers: dict, lon: np.ndarray, lat: np.ndarray) -> dict:
    """Stream a CSV of the points through POST /v1/locate/batch; points/s from first byte sent to last received."""
    import httpx

    body = csv_body(lon, lat)
    step = 1 << 20

    def chunks():
        for i in range(0, len(body), step):
            yield body[i:i + step]

    rows = 0
    t0 = time.perf_counter()
    with httpx.Client(base_url=base, timeout=600) as client, \
            client.stream("POST", "/v1/locate/batch", content=chunks(),
                          headers={**headers, "Content-Type": "text/csv"}) as r:
        r.raise_for_status()
        for piece in r.iter_bytes():
            rows += piece.count(b"\n")
    elapsed = time.perf_counter() - t0
    return {"points": len(lon), "rows_out": rows - 1, "seconds": elapsed, "points_per_s": len(lon) / elapsed,
            "mb_in": len(body) / 2**20}


def batch_in_process(index, lon: np.ndarray, lat: np.ndarray) -> dict:
    """The batch pipeline without HTTP (CSV parse, locate, render), for where the time goes."""
    from geo.locate.batch import BatchFormatter, CsvReader, locate_chunk

    body = csv_body(lon, lat)
    formatter = BatchFormatter(index, "csv", version=None, staff=None, staff_day=None)
    t0 = time.perf_counter()
    reader = CsvReader(len(lon) + 1)
    chunks = []
    for i in range(0, len(body), 1 << 20):
        chunks += reader.feed(body[i:i + (1 << 20)])
    chunks += reader.close()
    t_parse = time.perf_counter() - t0
    out = sum(len(formatter.render(*locate_chunk(index, c, "wgs84", 30.0))) for c in chunks)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "parse_s": t_parse, "points_per_s": len(lon) / elapsed, "bytes_out": out}


def make_token(engine) -> dict:
    """An admin's bearer headers (the server signs with the same var/jwt_secret)."""
    import uuid

    from api.auth import issue_token
    from geo.access.users import create_user

    with db.session_scope(engine) as session:
        user = create_user(session, f"bench-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, "admin")
        token = issue_token(user)
    return {"Authorization": f"Bearer {token}"}


def bench_scale(engine, url: str, scale: float, args) -> list[dict]:
    from geo.locate.index import LocateIndex
    from geo.locate.reference import (
        agreement_points,
        compare_with_reference,
        locate_sql,
        locate_sql_many,
        reference_epsg,
    )

    rows = []
    before = rss_mb()
    with engine.connect() as conn:
        t0 = time.perf_counter()
        index = LocateIndex.from_db(conn)
        first_build = time.perf_counter() - t0
    grown = rss_mb() - before
    with engine.connect() as conn:
        build_s, _, _ = timed(lambda: LocateIndex.from_db(conn), 3)
    summary = index.summary()
    console.print(f"scale {scale}: index {summary}")
    row = {"scale": scale, "compare_points": None, "disagreements": None, "disagreements_by_level": None,
           "compare_kinds": None, "compare_s": None, "units": summary["units"], "build_s": build_s,
           "first_build_s": first_build,
           "index_rss_mb": grown, "index_estimate_mb": summary["approx_mb"], "cell_m": summary["cell_m"]}

    if scale <= args.compare_up_to:
        with engine.connect() as conn:
            lon, lat = agreement_points(index, args.compare_points)
            t0 = time.perf_counter()
            agreement = compare_with_reference(index, conn, lon, lat)
            row["compare_s"] = time.perf_counter() - t0
        kinds = agreement.pop("kinds")
        row["compare_points"] = args.compare_points
        row["disagreements"] = sum(agreement.values())
        row["disagreements_by_level"] = agreement
        row["compare_kinds"] = kinds
        console.print(f"agreement on {args.compare_points:,} points: {agreement} (kinds {kinds})")

    # Batch points: uniform over the area the grids cover (a batch of addresses or incidents lies in the
    # district); the index alone is also timed on points uniform over the bounding box (a third fall outside).
    blon, blat = sample_points(index, args.batch_points, 5, inside_only=False)
    med, _, _ = timed(lambda: index.locate_many(blon, blat, 30.0), 3)
    row["index_points_per_s_bbox"] = len(blon) / med
    lon, lat = sample_points(index, args.batch_points, 7, inside_only=True)
    med, _, _ = timed(lambda: index.locate_many(lon, lat, 30.0), 3)
    row["index_points_per_s"] = len(lon) / med

    with engine.connect() as conn:
        epsg = reference_epsg(conn)
        n = args.sql_points
        t0 = time.perf_counter()
        for a, b in zip(lon[:n].tolist(), lat[:n].tolist(), strict=True):
            locate_sql(conn, a, b, accuracy_m=30.0, epsg=epsg, unbounded=False)
        row["postgis_per_point_points_per_s"] = n / (time.perf_counter() - t0)
        m = min(len(lon), 100_000)
        t0 = time.perf_counter()
        locate_sql_many(conn, lon[:m], lat[:m], accuracy_m=30.0, epsg=epsg)
        row["postgis_set_points_per_s"] = m / (time.perf_counter() - t0)
    inproc = sorted((batch_in_process(index, lon, lat) for _ in range(3)), key=lambda b: b["points_per_s"])[1]
    row["batch_in_process_points_per_s"] = inproc["points_per_s"]
    console.print(f"in process: locate_many {row['index_points_per_s']:,.0f} pts/s, pipeline {inproc}")

    ilon, ilat = sample_points(index, 20_000, 3, inside_only=True)
    paths = [f"/v1/locate?lon={a:.7f}&lat={b:.7f}" for a, b in zip(ilon.tolist(), ilat.tolist(), strict=True)]
    headers = make_token(engine)
    for workers in args.workers:
        r = dict(row)
        r["workers"] = workers
        with server(url, workers) as base:
            import httpx

            for _ in range(4 * workers):  # every worker builds its index on first use
                httpx.get(base + paths[0], timeout=300)
            timing = server_timing(base, paths[:args.timing_requests])
            load = (run_wrk if shutil.which("wrk") and not args.httpx else run_httpx_load)(
                base, paths, args.seconds, args.connections)
            runs = [batch_over_http(base, headers, lon, lat) for _ in range(args.batch_repeat)]
        # The median run (by points/s) of the repeats: the machine is shared, single runs vary.
        batch = sorted(runs, key=lambda b: b["points_per_s"])[len(runs) // 2]
        r.update({f"single_{k}": v for k, v in load.items()})
        r.update(timing)
        r["batch_points_per_s"] = batch["points_per_s"]
        r["batch_seconds"] = batch["seconds"]
        r["batch_rows_out"] = batch["rows_out"]
        r["batch_runs_points_per_s"] = [round(b["points_per_s"]) for b in runs]
        r["load_avg_1m_after"] = os.getloadavg()[0]
        r["batch_vs_postgis_per_point"] = batch["points_per_s"] / row["postgis_per_point_points_per_s"]
        r["meets"] = {
            "p50_ms<2 (handler)": timing["handler_p50_ms"] < TARGETS["p50_ms"],
            "p50_ms<2 (round trip, c=1)": timing["roundtrip_p50_ms"] < TARGETS["p50_ms"],
            "req/s>=1500": load["requests_per_s"] >= TARGETS["requests_per_s"],
            "batch>=500k/s": batch["points_per_s"] >= TARGETS["batch_points_per_s"],
            "batch>=20x postgis": r["batch_vs_postgis_per_point"] >= TARGETS["batch_vs_postgis"],
        }
        console.print(r)
        rows.append(r)
    return rows


# ------------------------------------------------------------------ incremental updates (issue 17 item 10)

def _publish_split(engine, code: str, rng: np.random.Generator) -> tuple[int, float, float]:
    """Publish a plan splitting the largest grid of community `code`; (version id, seconds the commit took: this
    process's holders patch the change in inside it, `perf_counter` when the commit began)."""
    import shapely
    from shapely.geometry import mapping

    from geo.plans import drafts as plans
    from geo.plans.publish import publish

    with db.session_scope(engine) as session:
        conn = session.connection()
        plan_id = plans.create_plan(conn, code, "bench")
        state = plans.load_state(conn, plan_id)
        big = max(state.live("grid"), key=lambda r: shapely.area(r["geom"]))
        minx, miny, maxx, maxy = shapely.bounds(big["geom"])
        x = minx + (maxx - minx) * rng.uniform(0.35, 0.65)
        line = shapely.LineString([(x, miny - 0.001), (x, maxy + 0.001)])
        plans.apply_operation(conn, plan_id, {"type": "split", "key": big["key"], "line": mapping(line)})
        out = publish(conn, plan_id, "bench", allow_errors=True)
        t0 = time.perf_counter()
        session.commit()
        return out["version_id"], time.perf_counter() - t0, t0


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def bench_incremental(engine, scale: float, rounds: int = 5) -> list[dict]:
    """Publish → new answer in this process (patched inside the commit) and in another holder (from the database's
    notification), the patch's own time, and lookup latency while a large change is rebuilt in the background."""
    from sqlalchemy import text

    from geo.locate import holder as holder_module
    from geo.locate.holder import IndexHolder

    rng = np.random.default_rng(5)
    same = IndexHolder.for_engine(engine, poll_seconds=None, listen=None)
    t0 = time.perf_counter()
    same.index_for()
    build_s = time.perf_counter() - t0
    with engine.connect() as conn:
        codes = conn.execute(text("SELECT code FROM communities ORDER BY code")).scalars().all()
    chosen = [codes[i] for i in rng.choice(len(codes), 2 * rounds, replace=False)]
    commit_ms, same_ms, other_ms, patch_ms, other_patch_ms = [], [], [], [], []
    # the writer's process: patched inside the commit
    for code in chosen[:rounds]:
        version, commit_s, t0 = _publish_split(engine, code, rng)
        index = same.peek()
        same_ms.append((time.perf_counter() - t0) * 1000 if index is not None and version in index.versions
                       else float("nan"))
        commit_ms.append(commit_s * 1000)
        patch_ms.append(same.index_for().build_seconds * 1000)
    # another process: a holder the commit does not patch (nor this one: no second patch competing for the GIL),
    # told by the database's notification
    holder_module._HOLDERS.discard(same)
    other = IndexHolder.for_engine(engine, poll_seconds=None)
    holder_module._HOLDERS.discard(other)
    other.index_for()
    for code in chosen[rounds:]:
        version, _, t0 = _publish_split(engine, code, rng)
        deadline = time.monotonic() + 120
        while version not in other.index_for().versions and time.monotonic() < deadline:
            time.sleep(0.0005)
        other_ms.append((time.perf_counter() - t0) * 1000)
        other_patch_ms.append(other.index_for().build_seconds * 1000)
    other.close()
    holder_module._HOLDERS.add(same)
    same.catch_up()
    rows = [{"scale": scale, "metric": "full index build", "value": build_s * 1000, "unit": "ms"},
            {"scale": scale, "metric": "patch (publish: split one grid), median", "value": float(np.median(patch_ms)),
             "unit": "ms"},
            {"scale": scale, "metric": "publish commit (this process's patch runs inside it), median",
             "value": float(np.median(commit_ms)), "unit": "ms"},
            {"scale": scale, "metric": "commit start → new answer in this process, median",
             "value": float(np.nanmedian(same_ms)), "unit": "ms"},
            {"scale": scale, "metric": "commit start → new answer in another holder (NOTIFY, as another process), "
             "median", "value": float(np.median(other_ms)), "unit": "ms"},
            {"scale": scale, "metric": "patch in that other holder, median", "value": float(np.median(other_patch_ms)),
             "unit": "ms"},
            {"scale": scale, "metric": "patches / full builds (same process)", "value": f"{same.patches}/{same.swaps}",
             "unit": ""}]

    # lookups while a large change is rebuilt in the background (a change over max_patch_units)
    index = same.index_for()
    lon, lat = sample_points(index, 2000, 9, inside_only=True)

    def lookups(stop) -> list[float]:
        out, i = [], 0
        while not stop():
            t = time.perf_counter()
            same.index_for().locate(float(lon[i % len(lon)]), float(lat[i % len(lat)]))
            out.append((time.perf_counter() - t) * 1000)
            i += 1
        return out

    quiet_until = time.perf_counter() + 2.0
    quiet = lookups(lambda: time.perf_counter() > quiet_until)
    same.max_patch_units = 0
    swaps = same.swaps
    _publish_split(engine, codes[int(rng.integers(len(codes)))], rng)
    t0 = time.perf_counter()
    during = lookups(lambda: same.swaps > swaps or time.perf_counter() - t0 > 300)
    rebuild_s = time.perf_counter() - t0
    old_answers = len(during)  # every lookup before the swap answered from the previous index
    for name, ms in (("lookup (index_for + locate), no rebuild", quiet),
                     ("lookup during the background rebuild of a large change", during)):
        p = _percentiles(ms)
        for k in ("p50_ms", "p99_ms", "max_ms"):
            rows.append({"scale": scale, "metric": f"{name} {k[:-3]}", "value": p[k], "unit": "ms"})
        rows.append({"scale": scale, "metric": f"{name}: lookups", "value": p["n"], "unit": ""})
    rows.append({"scale": scale, "metric": "background rebuild (lookups answered meanwhile from the previous index)",
                 "value": rebuild_s * 1000, "unit": f"ms ({old_answers} lookups)"})
    rows.append({"scale": scale, "metric": "machine load average (1 min; 2 cores shared with other work)",
                 "value": os.getloadavg()[0], "unit": ""})
    same.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1", help="comma-separated scales (1,10 takes long)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="benchmark this already-loaded database instead of generating one")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to try")
    parser.add_argument("--seconds", type=int, default=15, help="duration of the single-lookup load")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--timing-requests", type=int, default=2000)
    parser.add_argument("--batch-points", type=int, default=1_000_000)
    parser.add_argument("--batch-repeat", type=int, default=3, help="batches over HTTP per server (median kept)")
    parser.add_argument("--sql-points", type=int, default=2000, help="points for the PostGIS per-point path")
    parser.add_argument("--compare-points", type=int, default=100_000)
    parser.add_argument("--compare-up-to", type=float, default=1.0, help="largest scale for the agreement check")
    parser.add_argument("--httpx", action="store_true", help="use the httpx load generator even if wrk exists")
    parser.add_argument("--part", choices=("all", "main", "incremental"), default="all",
                        help="incremental: only publish → new answer and lookups during a rebuild")
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    rows: list[dict] = []
    incremental: list[dict] = []
    for scale in [float(s) for s in args.scales.split(",")]:
        ctx = nullcontext(db.make_engine(args.url)) if args.url else fresh_database("gridatlas_bench_locate")
        with ctx as engine:
            url = args.url or engine.url.render_as_string(hide_password=False)
            if not args.url:
                from demo.load import generate_and_load

                loaded = generate_and_load(engine, scale, args.seed)
                console.print(f"scale {scale}: {loaded['counts']} loaded in {sum(loaded['timings'].values()):.1f} s")
            if args.part in ("all", "main"):
                rows += bench_scale(engine, url, scale, args)
            if args.part in ("all", "incremental"):
                incremental += bench_incremental(engine, scale)
    if rows:
        report("locate", long_rows(rows), "Locate: in-memory index vs PostGIS, single lookups and batch over HTTP")
    if incremental:
        report("locate_incremental", incremental,
               "Locate: a boundary change reaching the index (patched in), lookups during a full rebuild")


#: (measured key, label, unit, target, whether larger is better); the rest of a row is listed as detail.
METRICS = (
    ("build_s", "index build (median of 3)", "s", None, None),
    ("index_rss_mb", "index memory (RSS growth of first build)", "MB", None, None),
    ("index_estimate_mb", "index memory (own estimate)", "MB", None, None),
    ("disagreements", "index vs PostGIS disagreements", "points", 0, False),
    ("index_points_per_s", "index locate_many, points in the district", "points/s", None, None),
    ("index_points_per_s_bbox", "index locate_many, points over the bounding box", "points/s", None, None),
    ("postgis_per_point_points_per_s", "PostGIS reference, one query per point", "points/s", None, None),
    ("postgis_set_points_per_s", "PostGIS reference, one query for 100,000 points", "points/s", None, None),
    ("batch_in_process_points_per_s", "batch pipeline in process (parse, locate, CSV; median of 3)", "points/s", None,
     None),
    ("single_requests_per_s", "GET /v1/locate requests/s (load generator, c=16)", "req/s", 1500, True),
    ("single_p50_ms", "GET /v1/locate p50 under that load", "ms", None, None),
    ("single_p99_ms", "GET /v1/locate p99 under that load", "ms", None, None),
    ("handler_p50_ms", "GET /v1/locate p50 server-side (Server-Timing)", "ms", 2.0, False),
    ("handler_p99_ms", "GET /v1/locate p99 server-side (Server-Timing)", "ms", None, None),
    ("roundtrip_p50_ms", "GET /v1/locate p50 round trip, one client", "ms", 2.0, False),
    ("roundtrip_p99_ms", "GET /v1/locate p99 round trip, one client", "ms", None, None),
    ("batch_points_per_s", "POST /v1/locate/batch 1,000,000 CSV points (median run)", "points/s", 500_000, True),
    ("batch_vs_postgis_per_point", "batch / PostGIS per-point", "x", 20, True),
    ("load_avg_1m_after", "machine load average (1 min) after the batches (2 cores, shared)", "", None, None),
)


def long_rows(rows: list[dict]) -> list[dict]:
    """One row per (scale, workers, metric): a narrow table; the run's other facts go in 'detail'."""
    out = []
    for r in rows:
        for key, label, unit, target, larger in METRICS:
            value = r.get(key)
            meets = None
            if target is not None and value is not None:
                meets = value >= target if larger else value <= target if key == "disagreements" else value < target
            out.append({"scale": r["scale"], "workers": r.get("workers"), "metric": label, "value": value,
                        "unit": unit, "target": target, "meets": meets})
        detail = {k: v for k, v in r.items() if k not in {m[0] for m in METRICS} | {"meets"}}
        out.append({"scale": r["scale"], "workers": r.get("workers"), "metric": "detail", "value": detail,
                    "unit": None, "target": None, "meets": None})
    return out


if __name__ == "__main__":
    main()
