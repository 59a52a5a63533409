"""Map pages load with no internet: vendored assets only, no console errors, the polygon and legend drawn."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess

import folium
import folium.plugins
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from maps.assets import OfflineAssetError, external_resources, legend_html, localise, offline_map, render_page
from maps.static_mount import STATIC_DIR, mount_static
from tests.browser import screenshot

# A grid-sized quadrilateral in Suzhou (WGS-84 lon/lat), about 300 m x 250 m.
GRID = {
    "type": "Feature",
    "properties": {"name": "金鸡湖社区第3网格", "code": "320505001002003"},
    "geometry": {
        "type": "Polygon",
        "coordinates": [[[120.6200, 31.3100], [120.6232, 31.3102], [120.6230, 31.3124],
                         [120.6199, 31.3121], [120.6200, 31.3100]]],
    },
}
BOUNDS = ((31.3100, 120.6199), (31.3124, 120.6232))


def _grid_page() -> str:
    m = offline_map(bounds=BOUNDS)
    folium.GeoJson(
        GRID,
        name="网格",
        style_function=lambda f: {"color": "#d95f02", "weight": 3, "fillColor": "#fdae6b", "fillOpacity": 0.4},
        tooltip=folium.GeoJsonTooltip(fields=["name", "code"], aliases=["网格", "编码"], sticky=False,
                                      permanent=True),
    ).add_to(m)
    folium.Marker([31.3112, 120.6215], icon=folium.Icon(color="red", prefix="fa", icon="house", angle=15),
                  popup=folium.Popup('<table class="ga-popup-table"><tr><th>网格员</th><td>张三</td></tr></table>')
                  ).add_to(m)
    folium.Marker([31.3106, 120.6205]).add_to(m)  # Leaflet's default marker image
    folium.Marker([31.3118, 120.6224], icon=folium.Icon(icon="info-sign")).add_to(m)  # glyphicon prefix
    legend_html("小区与网格关系", [("#1b9e77", "同等大小"), ("#d95f02", "大于网格"), ("#7570b3", "小于网格"),
                                   ("#999999", "跨网格（待核查）")]).add_to(m)
    return render_page(m, "网格地图（离线）")


def _plugins_page() -> str:
    m = offline_map(location=(31.311, 120.621), zoom_start=16)
    folium.plugins.HeatMap([[31.3105 + i * 0.0002, 120.6205 + i * 0.0003, 1.0] for i in range(10)]).add_to(m)
    cluster = folium.plugins.MarkerCluster().add_to(m)
    for i in range(5):
        folium.Marker([31.3110 + i * 0.0001, 120.6210]).add_to(cluster)
    return render_page(m, "热力图")


def _app() -> FastAPI:
    app = FastAPI()
    mount_static(app)

    @app.get("/grid", response_class=HTMLResponse)
    def grid() -> str:
        return _grid_page()

    @app.get("/plugins", response_class=HTMLResponse)
    def plugins() -> str:
        return _plugins_page()

    @app.get("/cdn", response_class=HTMLResponse)
    def cdn() -> str:
        # folium's stock output, to prove the guard notices CDN requests
        return folium.Map(location=(31.31, 120.62), tiles=None).get_root().render()

    return app


# ----------------------------------------------------------------------------- rendering, no browser


def test_rendered_page_has_no_url_to_another_host():
    page = _grid_page()
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"zh-CN\">")
    assert '<meta charset="utf-8">' in page
    assert "<title>网格地图（离线）</title>" in page
    assert external_resources(page) == []
    assert re.findall(r"https?://", page) == []
    assert '/static/vendor/leaflet/leaflet.js' in page
    assert '/static/app.css' in page


def test_every_linked_asset_exists_on_disk():
    for page in (_grid_page(), _plugins_page()):
        urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
        assert len(urls) >= 10
        for url in urls:
            path, _, version = url.removeprefix("/static/").partition("?v=")
            file = STATIC_DIR / path
            assert file.is_file(), url
            # addressed by content: the URL changes with the bytes, so browsers may keep it for good
            assert version == hashlib.sha256(file.read_bytes()).hexdigest()[:12], url


def test_folium_classes_are_not_modified():
    offline_map().get_root().render()
    assert folium.Map.default_js[0][1].startswith("https://")
    assert all(url.startswith("https://") for _, url in folium.plugins.HeatMap.default_js)


def test_unvendored_plugin_is_refused():
    m = offline_map(location=(31.31, 120.62))
    folium.plugins.Fullscreen().add_to(m)
    with pytest.raises(OfflineAssetError, match="Control.Fullscreen"):
        render_page(m, "x")
    with pytest.raises(OfflineAssetError):
        localise(m)


def test_public_tile_server_is_refused():
    m = folium.Map(location=(31.31, 120.62))  # folium's default: OpenStreetMap's public tiles
    with pytest.raises(OfflineAssetError, match="tile layer"):
        render_page(m, "x")
    m = offline_map(location=(31.31, 120.62))
    folium.TileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", attr="OSM").add_to(m)
    with pytest.raises(OfflineAssetError, match="tile layer"):
        render_page(m, "x")


def test_plain_folium_map_without_tiles_is_localised():
    page = render_page(folium.Map(location=(31.31, 120.62), tiles=None), "x")
    assert re.findall(r"https?://", page) == []


def test_tile_url_from_argument():
    m = offline_map(location=(31.31, 120.62), tile_url="http://10.1.2.3/tiles/{z}/{x}/{y}.png")
    page = render_page(m, "x")
    assert "10.1.2.3/tiles/{z}/{x}/{y}.png" in page
    assert external_resources(page) == []  # a tile template is not a <script>/<link>


def test_tile_url_from_settings(monkeypatch):
    from geo.settings import get_settings

    monkeypatch.setenv("GRIDATLAS_TILE_URL", "http://tiles.gov.intranet/{z}/{x}/{y}.png")
    get_settings.cache_clear()
    try:
        page = render_page(offline_map(location=(31.31, 120.62)), "x")
        no_tiles = render_page(offline_map(location=(31.31, 120.62), tile_url=""), "x")
    finally:
        monkeypatch.delenv("GRIDATLAS_TILE_URL")
        get_settings.cache_clear()
    assert "http://tiles.gov.intranet/{z}/{x}/{y}.png" in page
    assert "tiles.gov.intranet" not in no_tiles


def test_legend_escapes_labels_and_checks_colours():
    m = offline_map(location=(31.31, 120.62))
    legend_html("图例", [("#123456", "<b>粗</b>")]).add_to(m)
    page = render_page(m, "x")
    assert "<b>" not in page
    with pytest.raises(ValueError):
        legend_html("图例", [("red;background:url(x)", "坏")])


# ----------------------------------------------------------------------------- in headless Chromium


@pytest.mark.browser
def test_grid_map_renders_offline(live_server, page_offline):
    base = live_server(_app())
    res = page_offline(f"{base}/grid")
    page = res.page
    page.wait_for_selector(".leaflet-container")
    page.wait_for_selector("path.leaflet-interactive")
    page.evaluate("document.fonts.ready.then(() => true)")
    shot = screenshot(page, "maps_offline_grid")

    assert res.problems == {}
    assert page.locator("path.leaflet-interactive").count() == 1
    # the polygon was fitted into view
    box = page.locator("path.leaflet-interactive").bounding_box()
    vw, vh = page.viewport_size["width"], page.viewport_size["height"]
    assert box["width"] > 200 and box["height"] > 200
    assert box["x"] >= 0 and box["x"] + box["width"] <= vw and box["y"] >= 0 and box["y"] + box["height"] <= vh
    assert page.locator(".ga-legend").inner_text().startswith("小区与网格关系")
    assert "金鸡湖社区第3网格" in page.locator(".leaflet-tooltip").inner_text()
    assert page.locator("[class*='awesome-marker-icon-']").count() == 2
    assert page.locator(".leaflet-marker-icon[src$='marker-icon.png']").count() == 1
    loaded_fonts = page.evaluate(
        "[...document.fonts].filter(f => f.status === 'loaded').map(f => f.family)")
    assert any("Font Awesome" in f for f in loaded_fonts), loaded_fonts
    assert any("Glyphicons" in f for f in loaded_fonts), loaded_fonts
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.locator(".leaflet-control-scale-line").count() == 1  # metres only
    assert shot.stat().st_size > 10_000


@pytest.mark.browser
def test_heatmap_and_cluster_plugins_load_offline(live_server, page_offline):
    base = live_server(_app())
    res = page_offline(f"{base}/plugins")
    res.page.wait_for_selector("canvas.leaflet-heatmap-layer")
    res.page.wait_for_selector(".marker-cluster")
    screenshot(res.page, "maps_offline_plugins")
    assert res.problems == {}
    assert res.page.evaluate("typeof L.heatLayer === 'function' && typeof L.markerClusterGroup === 'function'")


@pytest.mark.browser
def test_offline_guard_catches_cdn_requests(live_server, page_offline):
    base = live_server(_app())
    res = page_offline(f"{base}/cdn", wait_until="load")
    hosts = {re.sub(r"^https?://([^/]+)/.*$", r"\1", u) for u in res.external_requests}
    assert "cdn.jsdelivr.net" in hosts
    assert res.console_errors  # the aborted scripts are reported too


@pytest.mark.browser
def test_a_chinese_font_is_installed():
    """Without a CJK font Chromium draws every Chinese label as a box (install Debian fonts-noto-cjk)."""
    if shutil.which("fc-list") is None:
        pytest.skip("fontconfig's fc-list is not installed")
    families = subprocess.run(["fc-list", ":lang=zh-cn", "family"], capture_output=True, text=True).stdout
    assert families.strip(), "no font covers Simplified Chinese: apt-get install fonts-noto-cjk"
