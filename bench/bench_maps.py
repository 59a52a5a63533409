"""Leaders' map pages on vector tiles: page weight and time to interactive in Chromium (coverage, classification,
heatmap) on a whole generated district, a filter's repaint time, and tile latency over a scripted pan.

    .venv/bin/python -m bench.bench_maps --scales 1

Targets (issue 15): first view of the whole district <= 1.5 MB transferred and interactive <= 3 s; a filter
change <= 300 ms. "Interactive" is the page's own `gaMap.ready`: its data loaded and every tile in view painted.
Tile latency: every tile of grids/buildings/compounds a pan across the district touches at zoom 10-16, fetched one
after another through HTTP (uvicorn, one process), as an admin (the whole district). The same tiles, by the same
client, from tipg (https://github.com/developmentseed/tipg) serving the same tables (`current_grids`, `compounds`,
`buildings`) from its own virtualenv (`GRIDATLAS_TIPG_PYTHON`, default /work/tipg-venv/bin/python; it is not a
dependency of the service), as ratios tipg / ours. tipg checks no jurisdiction and reads no boundary version per
request; ours does both.
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
    cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))
    t0 = time.perf_counter()
    page.goto(base + path, wait_until="domcontentloaded")
    page.wait_for_function("() => window.gaMap && window.gaMap.ready", timeout=120_000, polling=20)
    tti = time.perf_counter() - t0
    page.wait_for_load_state("networkidle")
    nav_tti = page.evaluate("() => performance.now()")  # upper bound of the page clock at the check
    if shot:
        page.screenshot(path=shot)
    filter_ms = None
    if filter_select and not page.locator(filter_select.split("=")[0]).count():
        filter_select = None  # a page without that filter (an older build): weight and TTI only
    if filter_select:
        select, value = filter_select.split("=")
        t1 = time.perf_counter()
        page.select_option(select, value)
        filter_ms = (time.perf_counter() - t1) * 1000
        inner = page.evaluate("() => window.gaMap.lastFilterMs")
        filter_ms = min(filter_ms, inner) if inner is not None else filter_ms
    out = {"bytes": sum(sizes.values()), "requests": len(sizes), "tti_s": tti, "page_clock_s": nav_tti / 1000,
           "filter_ms": filter_ms, "tiles": page.evaluate("() => window.gaMap.tilesLoaded"),
           "zoom": page.evaluate("() => window.gaMap.map.getZoom()")}
    context.close()
    return out


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


def _tile_latency(base: str, headers: dict, tiles: list[tuple[str, int, int, int]],
                  path: Callable[[str, int, int, int], str]) -> dict:
    """Fetch `tiles` one after another (one client, gzip accepted): p50/p99 ms, tiles/s, mean size, non-2xx."""
    with httpx.Client(base_url=base, headers=headers | {"Accept-Encoding": "gzip"}, timeout=60) as c:
        times, n_bytes, bad = [], 0, 0
        t0 = time.perf_counter()
        for layer, z, x, y in tiles:
            t1 = time.perf_counter()
            r = c.get(path(layer, z, x, y))
            times.append((time.perf_counter() - t1) * 1000)
            n_bytes += len(r.content)
            bad += r.status_code >= 300
        wall = time.perf_counter() - t0
    times.sort()
    return {"tiles": len(times), "p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1],
            "tiles_per_s": len(times) / wall, "mean_kb": n_bytes / len(times) / 1024, "errors": bad}


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
    """Our tiles and tipg's over the same pan, each server one process of its own."""
    from bench.bench_locate import server

    row: dict = {}
    with server(url, 1) as base:
        bbox = httpx.get(base + "/tiles/grids.json", headers=headers, timeout=60).json()["bounds"]
        tiles = _pan(bbox)
        _tile_latency(base, headers, tiles[:50], lambda la, z, x, y: f"/tiles/{la}/{z}/{x}/{y}.mvt")  # warm
        ours = _tile_latency(base, headers, tiles, lambda la, z, x, y: f"/tiles/{la}/{z}/{x}/{y}.mvt")
    console.print(f"tiles (ours): {ours}")
    row |= {"tile_" + k: round(v, 2) if isinstance(v, float) else v for k, v in ours.items()}
    with tipg_server(url) as tipg:
        if tipg is None:
            row["tipg"] = "not run"
            return row

        def tipg_path(layer: str, z: int, x: int, y: int) -> str:
            return f"/collections/{TIPG_COLLECTIONS[layer]}/tiles/WebMercatorQuad/{z}/{x}/{y}"

        _tile_latency(tipg, {}, tiles[:50], tipg_path)
        theirs = _tile_latency(tipg, {}, tiles, tipg_path)
    console.print(f"tiles (tipg): {theirs}")
    row |= {"tipg_tile_" + k: round(v, 2) if isinstance(v, float) else v for k, v in theirs.items()}
    row |= {"tipg_over_ours_p50": round(theirs["p50_ms"] / ours["p50_ms"], 2),
            "tipg_over_ours_p99": round(theirs["p99_ms"] / ours["p99_ms"], 2),
            "ours_over_tipg_tiles_per_s": round(ours["tiles_per_s"] / theirs["tiles_per_s"], 2)}
    return row


def run_scale(scale: float, seed: int, pages: tuple[str, ...] = ("coverage", "classification", "heatmap")) -> dict:
    from playwright.sync_api import sync_playwright

    from api.main import create_app
    from tests.browser import CHROMIUM_ARGS, serve

    with fresh_database() as engine:
        generate_and_load(engine, scale, seed)
        headers = {"Authorization": f"Bearer {_token(engine)}"}
        app = create_app(engine)
        with serve(app) as base:
            httpx.get(base + "/maps/classification/data", headers=headers, timeout=300)  # classify once
            row: dict = {"scale": scale}
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    for name, path, flt in (("coverage", "/maps/coverage", "#ga-role=building_head"),
                                            ("classification", "/maps/classification", None),
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
        row |= tiles_side_by_side(engine.url.render_as_string(hide_password=False), headers)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pages", default="coverage,classification,heatmap", help="pages measured in Chromium")
    args = ap.parse_args()
    pages = tuple(p.strip() for p in args.pages.split(","))
    rows = [run_scale(float(s), args.seed, pages) for s in args.scales.split(",")]
    table = [{"measure": k, **{f"scale {r['scale']:g}": r.get(k) for r in rows}} for k in rows[0]]
    report("maps", table, "Leaders' map pages on vector tiles (Chromium, 1366x768)")


if __name__ == "__main__":
    main()
