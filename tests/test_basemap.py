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
