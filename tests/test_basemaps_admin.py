"""The basemap admin page (/admin/basemaps) at a laptop's 1366×768: every column and action reachable, and the
preview drawing the district's street, community and grid outlines (/v1/basemaps/outlines) over the basemap being
edited, shifted for GCJ-02 / BD-09 so that they land on the basemap within a pixel."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import text

from api.problems import PROBLEM_MEDIA_TYPE
from geo.spatial import coords
from tests import staff_data as sd
from tests.browser import SCREENSHOT_DIR
from tests.test_basemap import EDGE_LAT, MAGENTA, ZOOM, _edge_lon, _TileServer


def _vertices(feature) -> list[tuple[float, float]]:
    g = feature["geometry"]
    polys = g["coordinates"] if g["type"] == "MultiPolygon" else [g["coordinates"]]
    return [tuple(p) for poly in polys for ring in poly for p in ring]


def test_outlines_for_the_preview(client, make_user, admin_headers, db_session):
    r = client.get("/v1/basemaps/outlines", headers=admin_headers)
    assert r.status_code == 200, r.text
    wgs = r.json()
    counts = db_session.execute(text(
        "SELECT (SELECT count(*) FROM current_streets), (SELECT count(*) FROM current_communities), "
        "(SELECT count(*) FROM current_grids)")).one()
    levels = [f["properties"]["level"] for f in wgs["features"]]
    assert (levels.count("street"), levels.count("community"), levels.count("grid")) == tuple(counts)
    assert all(f["properties"]["name"] for f in wgs["features"])
    # GCJ-02 and BD-09: every vertex where the pages' formula places it (the same simplified shapes)
    for sys, forward in (("gcj02", coords.wgs84_to_gcj02), ("bd09", coords.wgs84_to_bd09)):
        shifted = client.get("/v1/basemaps/outlines", params={"coordsys": sys}, headers=admin_headers).json()
        assert shifted["coordsys"] == sys and len(shifted["features"]) == len(wgs["features"])
        for a, b in zip(wgs["features"][:5], shifted["features"][:5], strict=True):
            assert a["properties"] == b["properties"]
            for (x, y), (sx, sy) in zip(_vertices(a), _vertices(b), strict=True):
                ex, ey = forward(x, y)
                assert abs(ex - sx) < 2e-6 and abs(ey - sy) < 2e-6
                assert abs(sx - x) + abs(sy - y) > 1e-3  # hundreds of metres off: the shift is applied
    assert client.get("/v1/basemaps/outlines", params={"coordsys": "cgcs2000"},
                      headers=admin_headers).json()["features"] == wgs["features"]
    r = client.get("/v1/basemaps/outlines", params={"coordsys": "mars"}, headers=admin_headers)
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    street = db_session.execute(text("SELECT code FROM current_streets ORDER BY code LIMIT 1")).scalar_one()
    r = client.get("/v1/basemaps/outlines", headers=make_user("leader", street)["headers"])
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)


def test_outlines_of_an_empty_district(migrated_engine):
    from geo.features.outlines import preview_outlines

    with migrated_engine.connect() as conn:
        assert preview_outlines(conn, "gcj02") == {"type": "FeatureCollection", "coordsys": "gcj02", "features": []}


@pytest.mark.browser
@pytest.mark.parametrize("coordsys", ["gcj02", "bd09"])
def test_admin_page_at_1366_and_the_preview_outlines_line_up(migrated_engine, live_server, browser, coordsys):
    """Three layers (one with a long URL) at 1366×768: the page is not wider than the screen, every ↑ ↓ 删除 is
    inside the viewport and the table's scroll box; the preview draws the outline layer, and with the base layer in
    GCJ-02 / BD-09 the community's west edge lands on a test tile server's mark of that edge within 1 px."""
    from api.main import create_app

    server = _TileServer(_edge_lon(coordsys))
    sd.build_staffed(migrated_engine)
    headers = sd.bearer_headers(migrated_engine, {"admin": ("admin", None)})
    base = live_server(create_app(migrated_engine))
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                  extra_http_headers=headers["admin"], device_scale_factor=1)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(base + "/admin/basemaps", wait_until="networkidle")
        page.wait_for_function("() => window.gaBasemapOutlines.loads >= 1")
        assert page.evaluate("() => window.gaBasemapOutlines.coordsys") == "wgs84"
        for _ in range(3):
            page.click("#bm-add")
        rows = page.locator("#bm-table tbody tr")
        rows.nth(0).locator("input[name=url]").fill(server.base + "/base/{z}/{x}/{y}.png")
        rows.nth(0).locator("input[name=name]").fill("测试底图")
        rows.nth(1).locator("select[name=kind]").select_option("labels")
        rows.nth(1).locator("input[name=url]").fill(server.base + "/labels/{z}/{x}/{y}.png?style=" + "x" * 120)
        rows.nth(2).locator("input[name=attribution]").fill("很长的版权说明" * 6)

        # layout: nothing wider than the screen; every action button inside the viewport and the scroll box
        assert page.evaluate("document.documentElement.scrollWidth") <= 1366
        scroll = page.locator("#bm-scroll").bounding_box()
        buttons = page.locator("#bm-table td.ops button")
        assert buttons.count() == 9
        for i in range(buttons.count()):
            b = buttons.nth(i).bounding_box()
            assert b and b["x"] >= scroll["x"] - 0.5 and b["x"] + b["width"] <= scroll["x"] + scroll["width"] + 0.5
            assert b["x"] + b["width"] <= 1366 and b["y"] + b["height"] <= 768, (i, b)
            assert buttons.nth(i).is_visible()
        # every column is reachable: scrolled to the end, the last field's input is inside the box
        page.evaluate("document.getElementById('bm-scroll').scrollLeft = 1e6")
        last = rows.nth(2).locator("input[name=attribution]").bounding_box()
        assert last["width"] >= 120  # wide enough to read, not squeezed to fit
        assert last["x"] + last["width"] <= scroll["x"] + scroll["width"] + 0.5
        ops = page.locator("#bm-table td.ops").first.bounding_box()
        assert last["x"] + last["width"] <= ops["x"] + 0.5  # not under the pinned actions column
        page.screenshot(path=str(SCREENSHOT_DIR / f"basemaps_admin_1366_scrolled_{coordsys}.png"))
        page.evaluate("document.getElementById('bm-scroll').scrollLeft = 0")

        # the outline layer: streets, communities and grids, placed for the base layer's coordinate system
        rows.nth(0).locator("select[name=coordsys]").select_option(coordsys)
        page.wait_for_function(f"() => window.gaBasemapOutlines.coordsys === '{coordsys}' && "
                               "window.gaBasemapOutlines.loads >= 2")
        drawn = page.locator(".leaflet-gaOutlines-pane path")
        assert drawn.count() == page.evaluate("() => window.gaBasemapOutlines.features") >= 3
        assert coordsys.upper().replace("GCJ02", "GCJ-02").replace("BD09", "BD-09") in page.inner_text(
            "#bm-outline-note")
        forward = coords.wgs84_to_gcj02 if coordsys == "gcj02" else coords.wgs84_to_bd09
        lon, lat = forward(sd.X0, EDGE_LAT)  # where the basemap draws the edge's point
        page.evaluate(f"""() => window.gaBasemapOutlines.map.setView(L.latLng({lat}, {lon}), {ZOOM},
                                                                     {{animate: false}})""")
        page.wait_for_timeout(400)
        page.wait_for_load_state("networkidle")
        assert any(p.startswith(f"/base/{ZOOM}/") for p in server.requests), "the preview loaded no tile"
        box = page.locator("#bm-map").bounding_box()
        y = box["y"] + box["height"] // 2

        def row_pixels() -> list[tuple[int, int, int]]:
            shot = Image.open(io.BytesIO(page.screenshot(clip={"x": box["x"], "y": y, "width": box["width"],
                                                               "height": 1}))).convert("RGB")
            return [shot.getpixel((x, 0)) for x in range(shot.width)]

        # the outlines alone (tiles hidden): the first strong stroke from the left is the west edge
        page.evaluate("document.querySelector('#bm-map .leaflet-tile-pane').style.visibility = 'hidden'")
        px = row_pixels()
        strong = [x for x, p in enumerate(px) if max(abs(a - b) for a, b in zip(p, px[0], strict=True)) > 90]
        if not strong:
            page.screenshot(path=str(SCREENSHOT_DIR / f"basemaps_admin_debug_{coordsys}.png"))
        assert strong, "no outline in view"
        run = [strong[0]]
        for x in strong[1:]:
            if x != run[-1] + 1:
                break
            run.append(x)
        outline_edge = (run[0] + run[-1] + 1) / 2
        # the basemap alone: the magenta column's centre
        page.evaluate("""() => { document.querySelector('#bm-map .leaflet-tile-pane').style.visibility = '';
                                 document.querySelector('.leaflet-gaOutlines-pane').style.visibility = 'hidden'; }""")
        cols = [x for x, p in enumerate(row_pixels()) if p == MAGENTA]
        assert cols, "the basemap's mark is not in view"
        basemap_edge = (cols[0] + cols[-1] + 1) / 2
        print(coordsys, "outline edge", outline_edge, "basemap edge", basemap_edge)
        assert abs(outline_edge - basemap_edge) <= 1.0, (outline_edge, basemap_edge)
        page.evaluate("document.querySelector('.leaflet-gaOutlines-pane').style.visibility = ''")
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / f"basemaps_admin_1366_{coordsys}.png"))
        # the unshifted drawing (WGS-84) sits far from the mark: the test can tell
        rows.nth(0).locator("select[name=coordsys]").select_option("wgs84")
        page.wait_for_function("() => window.gaBasemapOutlines.coordsys === 'wgs84' && "
                               "window.gaBasemapOutlines.loads >= 3")
        unshifted = page.evaluate(f"""() => window.gaBasemapOutlines.map.latLngToContainerPoint(
            L.latLng({EDGE_LAT}, {sd.X0})).x""")
        assert abs(unshifted - basemap_edge) > 100
        assert errors == []
    finally:
        context.close()
        server.close()
