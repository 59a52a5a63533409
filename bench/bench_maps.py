"""Leaders' map pages on vector tiles: page weight and time to interactive in Chromium (coverage, classification,
heatmap) on a whole generated district, a filter's repaint time, and tile latency over a scripted pan.

    .venv/bin/python -m bench.bench_maps --scales 1,10
    .venv/bin/python -m bench.bench_maps --scales 10 --keep          # keeps the district's database (URL printed)
    .venv/bin/python -m bench.bench_maps --scales 1,10 --database-url URL1,URL2   # on those districts

Targets (issue 15): first view of the whole district <= 1.5 MB transferred and interactive <= 3 s; a filter
change <= 300 ms. "Interactive" is the page's own `gaMap.ready`: its data loaded and every tile in view painted.
The weight counts every request until the network is idle, the heatmap's hot spots (asked for after the first
view) included; each page's console line breaks it down (tiles by layer and zoom, the page's JSON, assets) and
names the requests that ended last.
Tile latency: every tile of grids/buildings/compounds a pan across the district touches at zoom 10-16, fetched one
after another through HTTP (uvicorn, one process), as an admin (the whole district), twice: first view (every tile
cut) and again (ours from its tile cache). The same tiles, by the same client, interleaved tile by tile (so other
load on the machine slows both alike), from tipg (https://github.com/developmentseed/tipg) serving the same
tables (`current_grids`, `compounds`, `buildings`) from its own virtualenv (`GRIDATLAS_TIPG_PYTHON`, default
/work/tipg-venv/bin/python; it is not a dependency of the service), as ratios tipg / ours. tipg checks no
jurisdiction and reads no boundary version per request; ours does both.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import httpx

from bench.common import console, fresh_database, report
from demo.load import generate_and_load

CHROMIUM = os.environ.get("GRIDATLAS_CHROMIUM", "/usr/bin/chromium")
TIPG_PYTHON = os.environ.get("GRIDATLAS_TIPG_PYTHON", "/work/tipg-venv/bin/python")
#: Our tile layer -> the table or view tipg publishes with the same features.
TIPG_COLLECTIONS = {"grids": "public.current_grids", "compounds": "public.compounds", "buildings": "public.buildings"}
WEIGHT_TARGET_B = 1_500_000
TTI_TARGET_S = 3.0
FILTER_TARGET_MS = 300.0


def _token(engine) -> str:
    from sqlalchemy.orm import Session

    from api.auth import issue_token
    from geo.access.users import create_user

    with Session(engine) as s:
        user = create_user(s, f"bench-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, "admin", None)
        s.commit()
        return issue_token(user)


def _page(browser, base: str, path: str, headers: dict, filter_select: str | None, shot: str | None = None) -> dict:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, extra_http_headers=headers)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    sizes: dict[str, int] = {}
    urls: dict[str, str] = {}
    cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
    cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))
    t0 = time.perf_counter()
    page.goto(base + path, wait_until="domcontentloaded")
    page.wait_for_function("() => window.gaMap && window.gaMap.ready", timeout=120_000, polling=20)
    tti = time.perf_counter() - t0
    page.wait_for_load_state("networkidle")
    # the heatmap's hot spots come after the first view (not in its time), but their bytes count
    page.wait_for_function("() => !window.gaMap.heat || window.gaMap.heat.hotReady", timeout=300_000, polling=50)
    page.wait_for_load_state("networkidle")
    nav_tti = page.evaluate("() => performance.now()")  # upper bound of the page clock at the check
    if shot:
        page.screenshot(path=shot)
    filter_ms = None
    # "#select=value" picks an option; "click:selector" clicks (a legend entry: the class filter)
    target = None if not filter_select else filter_select.removeprefix("click:") \
        if filter_select.startswith("click:") else filter_select.split("=")[0]
    if target and not page.locator(target).count():
        filter_select = None  # a page without that filter (an older build): weight and TTI only
    if filter_select:
        t1 = time.perf_counter()
        if filter_select.startswith("click:"):
            page.click(filter_select.removeprefix("click:"))
        else:
            select, value = filter_select.split("=")
            page.select_option(select, value)
        filter_ms = (time.perf_counter() - t1) * 1000
        inner = page.evaluate("() => window.gaMap.lastFilterMs")
        filter_ms = min(filter_ms, inner) if inner is not None else filter_ms
    by_kind: dict[str, int] = {}
    for rid, n in sizes.items():
        kind = _request_kind(urls.get(rid, ""), base)
        by_kind[kind] = by_kind.get(kind, 0) + n
    breakdown = {k: round(v / 1024, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}
    # the requests that ended last (a slow answer holding up the first view), ms on the page clock
    last = page.evaluate("""() => performance.getEntriesByType('resource').map(e => [e.name.split('?')[0]
        .replace(location.origin, ''), Math.round(e.startTime), Math.round(e.responseEnd)])
        .sort((a, b) => b[2] - a[2]).slice(0, 3)""")
    out = {"bytes": sum(sizes.values()), "requests": len(sizes), "by_kind_kb": breakdown, "last": last, "tti_s": tti,
           "page_clock_s": nav_tti / 1000,
           "filter_ms": filter_ms, "tiles": page.evaluate("() => window.gaMap.tilesLoaded"),
           "zoom": page.evaluate("() => window.gaMap.map.getZoom()")}
    context.close()
    return out


def _request_kind(url: str, base: str) -> str:
    """What a request of a page is, for the weight breakdown: tiles by layer and zoom, the page's JSON, assets."""
    path = url.removeprefix(base).split("?")[0]
    if path.startswith("/tiles/"):
        layer, z = path.split("/")[2:4]
        return f"tiles {layer} z{z}"
    if path.startswith("/static/"):
        return "assets"
    return path or url


def _tiles_for(bbox: list[float], z: int) -> list[tuple[int, int, int]]:
    def tx(lon: float) -> int:
        return int((lon + 180) / 360 * 2 ** z)

    def ty(lat: float) -> int:
        r = math.radians(lat)
        return int((1 - math.log(math.tan(r) + 1 / math.cos(r)) / math.pi) / 2 * 2 ** z)

    x0, x1, y0, y1 = tx(bbox[0]), tx(bbox[2]), ty(bbox[3]), ty(bbox[1])
    # a pan: a 6 x 4 tile screen sliding along the district's diagonal, 8 steps
    out = []
    for step in range(8):
        cx = x0 + (x1 - x0) * step / 7
        cy = y0 + (y1 - y0) * step / 7
        for dx in range(-3, 3):
            for dy in range(-2, 2):
                t = (z, int(cx) + dx, int(cy) + dy)
                if t not in out:
                    out.append(t)
    return out


def _pan(bbox: list[float]) -> list[tuple[str, int, int, int]]:
    """(layer, z, x, y) of the scripted pan, zoom 10 to 16 (compounds from 12, buildings from 14)."""
    out = []
    for z in range(10, 17):
        for layer, minz in (("grids", 10), ("compounds", 12), ("buildings", 14)):
            if z >= minz:
                out += [(layer, tz, x, y) for tz, x, y in _tiles_for(bbox, z)]
    return out


def _stats(times: list[float], n_bytes: int, bad: int) -> dict:
    """p50/p99 ms, tiles/s (one sequential client: 1000 / mean ms), mean size, non-2xx of one server's requests."""
    times = sorted(times)
    return {"tiles": len(times), "p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1],
            "tiles_per_s": len(times) / (sum(times) / 1000), "mean_kb": n_bytes / len(times) / 1024, "errors": bad}


def _tile_latency(servers: dict[str, tuple[str, dict, Callable[[str, int, int, int], str]]],
                  tiles: list[tuple[str, int, int, int]]) -> dict[str, dict]:
    """Fetch `tiles` one after another from each server (base URL, headers, path), interleaved tile by tile in
    alternating order, so a machine shared with other work slows both alike (gzip accepted); `_stats` per server."""
    clients = {name: (httpx.Client(base_url=base, headers=headers | {"Accept-Encoding": "gzip"}, timeout=60), path)
               for name, (base, headers, path) in servers.items()}
    seen: dict[str, tuple[list[float], list[int], list[int]]] = {name: ([], [0], [0]) for name in clients}
    try:
        for i, (layer, z, x, y) in enumerate(tiles):
            order = list(clients) if i % 2 == 0 else list(reversed(clients))
            for name in order:
                c, path = clients[name]
                t1 = time.perf_counter()
                r = c.get(path(layer, z, x, y))
                seen[name][0].append((time.perf_counter() - t1) * 1000)
                seen[name][1][0] += len(r.content)
                seen[name][2][0] += r.status_code >= 300
    finally:
        for c, _ in clients.values():
            c.close()
    return {name: _stats(times, n[0], bad[0]) for name, (times, n, bad) in seen.items()}


@contextlib.contextmanager
def tipg_server(url: str) -> Iterator[str | None]:
    """tipg (its own virtualenv) serving the database at `url` in a subprocess; yields its base URL, or None when
    it is not installed or does not start (the reason printed)."""
    from bench.bench_locate import free_port

    if not os.path.exists(TIPG_PYTHON):
        console.print(f"[yellow]tipg: no {TIPG_PYTHON} (python -m venv /work/tipg-venv && "
                      "/work/tipg-venv/bin/pip install tipg uvicorn)[/yellow]")
        yield None
        return
    port = free_port()
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": plain, "TIPG_DB_SCHEMAS": '["public"]',
           "TIPG_DB_TABLES": '["' + '","'.join(TIPG_COLLECTIONS.values()) + '"]'}
    proc = subprocess.Popen([TIPG_PYTHON, "-m", "uvicorn", "tipg.main:app", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "warning", "--no-access-log"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/collections", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode()[-1500:] if proc.poll() is not None else "timeout"
                console.print(f"[yellow]tipg did not start: {err}[/yellow]")
                yield None
                return
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def tiles_side_by_side(url: str, headers: dict) -> dict:
    """Our tiles and tipg's over the same pan, each server one process of its own, requests interleaved: the pan
    once ("first view": every tile cut, none in our tile cache; both servers warmed on the same tiles first, ours
    under another `at=` so none of them is cached) and again ("again": ours from its cache, tipg cutting anew)."""
    from bench.bench_locate import server

    def ours_path(layer: str, z: int, x: int, y: int) -> str:
        return f"/tiles/{layer}/{z}/{x}/{y}.mvt"

    def tipg_path(layer: str, z: int, x: int, y: int) -> str:
        return f"/collections/{TIPG_COLLECTIONS[layer]}/tiles/WebMercatorQuad/{z}/{x}/{y}"

    row: dict = {}
    with server(url, 1) as base, tipg_server(url) as tipg:
        bbox = httpx.get(base + "/tiles/grids.json", headers=headers, timeout=60).json()["bounds"]
        tiles = _pan(bbox)
        servers = {"ours": (base, headers, ours_path)}
        if tipg is not None:
            servers["tipg"] = (tipg, {}, tipg_path)
        # the database's caches and plans warmed, our tile cache not: the same tiles under another key
        _tile_latency(servers | {"ours": (base, headers, lambda *t: ours_path(*t) + "?at=2100-01-01")}, tiles[:50])
        first = _tile_latency(servers, tiles)
        again = _tile_latency(servers, tiles)
    for name, prefix in (("ours", "tile_"), ("tipg", "tipg_tile_")):
        if name not in first:
            row["tipg"] = "not run"
            return row
        console.print(f"tiles ({name}): {first[name]}\ntiles again ({name}): {again[name]}")
        row |= {prefix + k: round(v, 2) if isinstance(v, float) else v for k, v in first[name].items()}
        row |= {prefix + "again_" + k: round(again[name][k], 2) for k in ("p50_ms", "p99_ms", "tiles_per_s")}
    ours, theirs = first["ours"], first["tipg"]
    row |= {"tipg_over_ours_p50": round(theirs["p50_ms"] / ours["p50_ms"], 2),
            "tipg_over_ours_p99": round(theirs["p99_ms"] / ours["p99_ms"], 2),
            "ours_over_tipg_tiles_per_s": round(ours["tiles_per_s"] / theirs["tiles_per_s"], 2),
            "again_ours_over_tipg_tiles_per_s": round(again["ours"]["tiles_per_s"] / again["tipg"]["tiles_per_s"],
                                                      2)}
    return row


def _new_database(prefix: str) -> str:
    """A new migrated database on the configured server, left in place; its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    from geo.store import db

    base = make_url(db.admin_database_url(start_local=True))
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(base.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    db.migrate(url)
    return url


@contextlib.contextmanager
def district_database(scale: float, seed: int, url: str | None, keep: bool) -> Iterator:
    """An engine on a database holding a generated district: `url` as it is when it already has grids (else the
    district is loaded into it), or a fresh database, dropped afterwards unless `keep` (its URL is printed)."""
    from sqlalchemy import text

    from geo.store import db

    if url:
        engine = db.make_engine(url)
        try:
            with engine.connect() as conn:
                tables = conn.execute(text("SELECT to_regclass('grids') IS NOT NULL")).scalar()
            if not tables:  # an empty database: the schema first
                db.migrate(url)
            with engine.connect() as conn:
                loaded = conn.execute(text("SELECT count(*) FROM grids")).scalar()
            if not loaded:
                generate_and_load(engine, scale, seed)
            else:
                console.print(f"reusing {engine.url.database}: {loaded} grids (scale and seed as loaded)")
            yield engine
        finally:
            engine.dispose()
        return
    if keep:
        url = _new_database(f"gridatlas_maps_s{scale:g}")
        console.print(f"keeping the district for later runs: --database-url '{url}'")
        engine = db.make_engine(url)
        try:
            generate_and_load(engine, scale, seed)
            yield engine
        finally:
            engine.dispose()
        return
    with fresh_database() as engine:
        generate_and_load(engine, scale, seed)
        yield engine


def run_scale(scale: float, seed: int, pages: tuple[str, ...] = ("coverage", "classification", "heatmap"),
              url: str | None = None, keep: bool = False, tiles: bool = True) -> dict:
    from playwright.sync_api import sync_playwright

    from api.main import create_app
    from tests.browser import CHROMIUM_ARGS, serve

    with district_database(scale, seed, url, keep) as engine:
        headers = {"Authorization": f"Bearer {_token(engine)}"}
        app = create_app(engine)
        with serve(app) as base:
            httpx.get(base + "/maps/classification/data", headers=headers, timeout=300)  # classify once
            row: dict = {"scale": scale}
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    for name, path, flt in (("coverage", "/maps/coverage", "#ga-role=building_head"),
                                            # the class filter: a legend entry hidden (dots repainted)
                                            ("classification", "/maps/classification",
                                             "click:#ga-legend li[data-key=smaller]"),
                                            # the heatmap: the class filter adds the cube up again in the page
                                            ("heatmap", "/maps/heatmap", "#ga-class=A")):
                        if name not in pages:
                            continue
                        _page(browser, base, path, headers, flt)  # warm the server (first queries, plans)
                        m = _page(browser, base, path, headers, flt, f"/tmp/bench_{name}_scale{scale:g}.png")
                        console.print(f"{name}: {m}")
                        row |= {f"{name}_kb": round(m["bytes"] / 1024), f"{name}_requests": m["requests"],
                                f"{name}_tti_s": round(m["tti_s"], 2), f"{name}_zoom": m["zoom"],
                                f"{name}_weight_ok": m["bytes"] <= WEIGHT_TARGET_B,
                                f"{name}_tti_ok": m["tti_s"] <= TTI_TARGET_S}
                        if m["filter_ms"] is not None:
                            row[f"{name}_filter_ms"] = round(m["filter_ms"], 1)
                            row[f"{name}_filter_ok"] = m["filter_ms"] <= FILTER_TARGET_MS
                finally:
                    browser.close()
        if tiles:
            row |= tiles_side_by_side(engine.url.render_as_string(hide_password=False), headers)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pages", default="coverage,classification,heatmap", help="pages measured in Chromium")
    ap.add_argument("--database-url", help="databases already holding a district, one per scale (comma-separated, "
                                           "in the order of --scales): reused as they are, or the district loaded "
                                           "into one that has no grids")
    ap.add_argument("--keep", action="store_true", help="keep each generated district's database (URL printed)")
    ap.add_argument("--no-tiles", action="store_true", help="pages only: skip the tile latency and tipg runs")
    args = ap.parse_args()
    pages = tuple(p.strip() for p in args.pages.split(","))
    scales = args.scales.split(",")
    urls = args.database_url.split(",") if args.database_url else [None] * len(scales)
    if len(urls) != len(scales):
        ap.error("--database-url: one database per scale")
    rows = [run_scale(float(s), args.seed, pages, u, args.keep, not args.no_tiles) for s, u in zip(scales, urls,
                                                                                                   strict=True)]
    table = [{"measure": k, **{f"scale {r['scale']:g}": r.get(k) for r in rows}} for k in rows[0]]
    report("maps", table, "Leaders' map pages on vector tiles (Chromium, 1366x768)")


if __name__ == "__main__":
    main()
