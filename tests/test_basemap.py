"""Basemaps (GRIDATLAS_BASEMAPS): base + labels layers, their coordinate system, and overlays that line up.

A tiny local tile server stands in for an AMap/Tencent (GCJ-02) or Baidu-style (BD-09, on the standard matrix)
intranet basemap: each tile it serves is white with a 1 px magenta column exactly where the community's west edge
(WGS-84 lon 120.600) lies in that coordinate system. In Chromium the coverage page's overlay edge must land on that
column within 1 px (it would be hundreds of pixels off without the shift).
"""

from __future__ import annotations

import io
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image
from sqlalchemy import text

from geo.spatial import coords
from tests import staff_data as sd

pytestmark = pytest.mark.browser

EDGE_LAT = sd.Y0 + 0.0012
ZOOM = 18
MAGENTA = (255, 0, 255)


def _edge_lon(coordsys: str) -> float:
    if coordsys == "gcj02":
        return coords.wgs84_to_gcj02(sd.X0, EDGE_LAT)[0]
    return coords.wgs84_to_bd09(sd.X0, EDGE_LAT)[0]


class _TileServer:
    """Serves /{kind}/{z}/{x}/{y}.png: white tiles with a magenta column at `lon` (the labels layer: transparent)."""

    def __init__(self, lon: float):
        self.lon = lon
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                kind, z, x, y = self.path.strip("/").removesuffix(".png").split("/")
                z, x = int(z), int(x)
                labels = kind == "labels"
                img = Image.new("RGBA", (256, 256), (0, 0, 0, 0) if labels else (255, 255, 255, 255))
                if not labels:
                    col = (outer.lon + 180.0) / 360.0 * 256 * 2 ** z - x * 256
                    if 0 <= col < 256:
                        for row in range(256):
                            img.putpixel((int(math.floor(col)), row), (*MAGENTA, 255))
                buf = io.BytesIO()
                img.save(buf, "PNG")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(buf.tell()))
                self.end_headers()
                self.wfile.write(buf.getvalue())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def basemap_app(migrated_engine, monkeypatch, request):
    """The hand-made community, a tile server marking its west edge in `coordsys`, and an app configured with it."""
    from api.main import create_app
    from geo.settings import get_settings

    coordsys = request.param
    server = _TileServer(_edge_lon(coordsys))
    layers = [{"url": server.base + "/base/{z}/{x}/{y}.png", "name": "测试底图", "coordsys": coordsys,
               "max_native_zoom": 18, "attribution": "测试底图"},
              {"url": server.base + "/labels/{z}/{x}/{y}.png", "kind": "labels", "coordsys": coordsys,
               "max_native_zoom": 18}]
    monkeypatch.setenv("GRIDATLAS_BASEMAPS", json.dumps(layers))
    get_settings.cache_clear()
    try:
        sd.build_staffed(migrated_engine)
        headers = sd.bearer_headers(migrated_engine, {"leader": ("leader", sd.COMMUNITY)})
        yield create_app(migrated_engine), headers["leader"], server, coordsys
    finally:
        server.close()
        monkeypatch.undo()
        get_settings.cache_clear()


def test_settings_read_layers_and_fall_back_to_tile_url(monkeypatch):
    from geo.settings import Settings

    monkeypatch.delenv("GRIDATLAS_BASEMAPS", raising=False)
    assert Settings(tile_url=None).basemap_layers() == []
    one = Settings(tile_url="http://tiles.intra/{z}/{x}/{y}.png").basemap_layers()
    assert [(b.url, b.coordsys, b.kind) for b in one] == [("http://tiles.intra/{z}/{x}/{y}.png", "wgs84", "base")]
    monkeypatch.setenv("GRIDATLAS_BASEMAPS", json.dumps([
        {"url": "http://t{s}.tdt.intra/vec/{z}/{x}/{y}", "subdomains": "01234567", "coordsys": "cgcs2000",
         "max_native_zoom": 18, "attribution": "天地图"},
        {"url": "http://t{s}.tdt.intra/cva/{z}/{x}/{y}", "kind": "labels", "subdomains": "01234567"}]))
    two = Settings().basemap_layers()
    assert [b.kind for b in two] == ["base", "labels"] and two[0].attribution == "天地图"
    from api.security import content_security_policy

    assert "img-src 'self' data: blob: http://ta.tdt.intra http://ta.tdt.intra;" in content_security_policy(
        [b.url for b in two])


@pytest.mark.parametrize("basemap_app", ["gcj02", "bd09"], indirect=True)
def test_overlay_edge_lands_on_the_basemap_within_a_pixel(basemap_app, live_server, browser):
    app, headers, server, coordsys = basemap_app
    base = live_server(app)
    context = browser.new_context(viewport={"width": 1000, "height": 700}, locale="zh-CN",
                                  extra_http_headers=headers, device_scale_factor=1)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(base + "/maps/coverage?at=2025-03-01", wait_until="networkidle")
        page.wait_for_function("() => window.gaMap && window.gaMap.ready")
        assert page.evaluate("() => window.gaMap.coordsys") == coordsys
        # centre on the west edge as the basemap draws it, at the highest zoom with data of its own
        page.evaluate(f"""() => {{ const g = window.gaMap, p = g.toMap({sd.X0}, {EDGE_LAT});
            g.ready = false; g.map.setView(L.latLng(p[1], p[0]), {ZOOM}, {{animate: false}}); }}""")
        page.wait_for_function("() => window.gaMap.ready")
        page.wait_for_load_state("networkidle")
        assert any(p.startswith("/base/18/") for p in server.requests)
        assert any(p.startswith("/labels/18/") for p in server.requests)
        assert "测试底图" in page.inner_text(".leaflet-control-attribution")
        box = page.locator("#ga-map").bounding_box()
        row = int(box["height"] // 2)

        # the overlay alone (tile canvases): the first strong stroke from the left is the west edge
        overlay = page.evaluate("""(row) => {
            const c = window.gaMap.viewCanvas({labels: false}), ctx = c.getContext('2d');
            return Array.from(ctx.getImageData(0, row + 44, c.width, 1).data);
        }""", row)
        px = [tuple(overlay[i:i + 3]) for i in range(0, len(overlay), 4)]
        bg = px[0]
        strong = [x for x, p in enumerate(px) if max(abs(a - b) for a, b in zip(p, bg, strict=True)) > 90]
        assert strong, "no overlay edge in view"
        run = [strong[0]]
        for x in strong[1:]:
            if x != run[-1] + 1:
                break
            run.append(x)
        overlay_edge = (run[0] + run[-1] + 1) / 2

        # the basemap alone (overlay and labels hidden): the magenta column's centre
        page.evaluate("""() => { document.querySelector('.leaflet-gaOverlay-pane').style.visibility = 'hidden';
                                 document.querySelector('.leaflet-marker-pane').style.visibility = 'hidden'; }""")
        shot = Image.open(io.BytesIO(page.screenshot(clip={"x": box["x"], "y": box["y"] + row, "width": box["width"],
                                                           "height": 1}))).convert("RGB")
        cols = [x for x in range(shot.width) if shot.getpixel((x, 0)) == MAGENTA]
        assert cols, "the basemap's mark is not in view"
        basemap_edge = (cols[0] + cols[-1] + 1) / 2
        print(coordsys, "overlay edge", overlay_edge, "basemap edge", basemap_edge)
        assert abs(overlay_edge - basemap_edge) <= 1.0, (overlay_edge, basemap_edge)
        # without the shift the edge would sit far away (GCJ-02 ~500 m, BD-09 ~1 km here)
        unshifted = page.evaluate(f"""() => {{ const g = window.gaMap;
            return g.map.latLngToContainerPoint(L.latLng({EDGE_LAT}, {sd.X0})).x; }}""")
        assert abs(unshifted - basemap_edge) > 100
        page.evaluate("""() => { document.querySelector('.leaflet-gaOverlay-pane').style.visibility = '';
                                 document.querySelector('.leaflet-marker-pane').style.visibility = ''; }""")
        page.screenshot(path=f"/tmp/basemap_{coordsys}.png")
        assert errors == []
    finally:
        context.close()


# ---------------------------------------------------------------------------------------------------------------
# basemaps kept by admins (/v1/basemaps, /admin/basemaps)

TDT = [{"url": "http://t{s}.tdt.intra/vec_w/{z}/{x}/{y}", "name": "天地图矢量", "subdomains": "01",
        "coordsys": "cgcs2000", "max_native_zoom": 18, "attribution": "天地图"},
       {"url": "http://t{s}.tdt.intra/cva_w/{z}/{x}/{y}", "name": "天地图注记", "kind": "labels", "subdomains": "01"}]


def _page_config(html: str) -> dict:
    return json.loads(html.split('id="ga-config">')[1].split("</script>")[0])


def test_admins_save_reorder_and_reset_basemaps_and_pages_use_them_at_once(client, make_user, db_session):
    street = db_session.execute(text("SELECT code FROM streets ORDER BY code LIMIT 1")).scalar_one()
    admin, leader = make_user("admin"), make_user("leader", street)
    r = client.get("/v1/basemaps", headers=admin["headers"])
    assert r.status_code == 200 and r.json()["source"] == "settings" and r.json()["revision"] == 0
    # non-admins: 403 on every operation and on the page
    for method, path in (("GET", "/v1/basemaps"), ("PUT", "/v1/basemaps"), ("DELETE", "/v1/basemaps"),
                         ("GET", "/admin/basemaps")):
        r = client.request(method, path, headers=leader["headers"], json={"layers": []} if method == "PUT" else None)
        assert r.status_code == 403, (method, path, r.status_code)
    r = client.put("/v1/basemaps", json={"layers": TDT, "revision": 0}, headers=admin["headers"])
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["source"] == "database" and saved["revision"] == 1 and saved["updated_by"] == admin["username"]
    assert [x["name"] for x in saved["layers"]] == ["天地图矢量", "天地图注记"]
    assert saved["tile_origins"] == ["http://t0.tdt.intra", "http://t1.tdt.intra"]
    # every leader page uses them at once, and its policy lets it load their tiles (each subdomain)
    for path in ("/maps/coverage", "/maps/classification", "/maps/heatmap?permutations=0"):
        r = client.get(path, headers=leader["headers"])
        assert r.status_code == 200, (path, r.text[:200])
        assert [b["url"] for b in _page_config(r.text)["basemaps"]] == [x["url"] for x in TDT], path
        csp = r.headers["content-security-policy"]
        assert "img-src 'self' data: blob: http://t0.tdt.intra http://t1.tdt.intra;" in csp, (path, csp)
    # reorder (labels first is allowed: the list is bottom first), with a stale revision refused
    swapped = {"layers": TDT[::-1], "revision": 0}
    r = client.put("/v1/basemaps", json=swapped, headers=admin["headers"])
    assert r.status_code == 409 and r.json()["type"].endswith("stale-basemaps")
    r = client.put("/v1/basemaps", json={**swapped, "revision": 1}, headers=admin["headers"])
    assert r.status_code == 200 and r.json()["revision"] == 2
    assert [x["kind"] for x in r.json()["layers"]] == ["labels", "base"]
    # bad layers are refused with words, nothing saved
    for bad in ({"url": "javascript:alert(1)//{z}/{x}/{y}"}, {"url": "http://a.intra/{z}/{x}"},
                {"url": "http://t{s}.intra/{z}/{x}/{y}"}, {"url": "http://a.intra/{z}/{x}/{y}", "coordsys": "mars"},
                {"url": "http://a.intra/{z}/{x}/{y}", "max_native_zoom": 40},
                {"url": "http://a.intra/{z}/{x}/{y}?k={key}"}):
        r = client.put("/v1/basemaps", json={"layers": [bad]}, headers=admin["headers"])
        assert r.status_code == 422, (bad, r.status_code, r.text)
    assert client.get("/v1/basemaps", headers=admin["headers"]).json()["revision"] == 2
    # no basemap at all is a choice too (the pages orient by their own outlines)
    r = client.put("/v1/basemaps", json={"layers": []}, headers=admin["headers"])
    assert r.status_code == 200 and r.json()["layers"] == [] and r.json()["source"] == "database"
    assert _page_config(client.get("/maps/coverage", headers=leader["headers"]).text)["basemaps"] == []
    # reset: the settings again
    r = client.delete("/v1/basemaps", headers=admin["headers"])
    assert r.status_code == 200 and r.json()["source"] == "settings"
    actions = [a for (a,) in db_session.execute(text(
        "SELECT action FROM audit_log WHERE action LIKE 'basemaps.%' ORDER BY id")).all()]
    assert actions == ["basemaps.save", "basemaps.save", "basemaps.save", "basemaps.reset"]


def test_admin_page_edits_previews_and_saves(migrated_engine, live_server, browser):
    """In Chromium: the admin adds a layer pointing at a local tile server, moves it, saves; the preview and then the
    coverage page load its tiles (the page's CSP allows the host), with no console error."""
    from api.main import create_app

    server = _TileServer(sd.X0)
    try:
        sd.build_staffed(migrated_engine)
        headers = sd.bearer_headers(migrated_engine, {"admin": ("admin", None), "leader": ("leader", sd.COMMUNITY)})
        base = live_server(create_app(migrated_engine))
        context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                      extra_http_headers=headers["admin"])
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(base + "/admin/basemaps", wait_until="networkidle")
        assert "底图设置" in page.title()
        assert "部署设置" in page.inner_text("#bm-source")
        page.click("#bm-add")
        page.click("#bm-add")
        rows = page.locator("#bm-table tbody tr")
        assert rows.count() == 2
        rows.nth(0).locator("input[name=name]").fill("测试注记")
        rows.nth(0).locator("select[name=kind]").select_option("labels")
        rows.nth(0).locator("input[name=url]").fill(server.base + "/labels/{z}/{x}/{y}.png")
        rows.nth(1).locator("input[name=name]").fill("测试底图")
        rows.nth(1).locator("input[name=url]").fill(server.base + "/base/{z}/{x}/{y}.png")
        rows.nth(1).locator("select[name=coordsys]").select_option("gcj02")
        rows.nth(1).locator("input[name=attribution]").fill("测试版权")
        page.click("#bm-table tbody tr >> nth=1 >> button:has-text('↑')")  # the base goes to the bottom
        page.wait_for_timeout(600)
        page.wait_for_load_state("networkidle")
        assert any(p.startswith("/base/") for p in server.requests), "the preview loaded no tile"
        from tests.browser import screenshot

        screenshot(page, "basemaps_admin")
        page.click("#bm-save")
        page.wait_for_selector("#bm-status.ok", timeout=10_000)
        assert "第 1 版" in page.inner_text("#bm-source")
        with migrated_engine.connect() as conn:
            stored = conn.execute(text("SELECT layers FROM basemap_config")).scalar_one()
        assert [(x["name"], x["kind"], x["coordsys"]) for x in stored] == [
            ("测试底图", "base", "gcj02"), ("测试注记", "labels", "wgs84")]
        context.close()

        # a leader's page now draws that basemap (shifted to GCJ-02), its tiles allowed by the page's CSP
        server.requests.clear()
        context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                      extra_http_headers=headers["leader"])
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(base + "/maps/coverage?at=2025-03-01", wait_until="networkidle")
        page.wait_for_function("() => window.gaMap && window.gaMap.ready")
        assert page.evaluate("() => window.gaMap.coordsys") == "gcj02"
        assert any(p.startswith("/base/") for p in server.requests)
        assert "测试版权" in page.inner_text(".leaflet-control-attribution")
        screenshot(page, "basemaps_used_by_coverage")
        context.close()
        assert errors == []
    finally:
        server.close()
