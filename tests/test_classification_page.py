"""The classification map on vector tiles in headless Chromium with the internet cut off: compounds painted in their
class colour, legend counts, the compound list (straddling ones naming both grids) with search and zoom-to, the
level switch without a reload, exports; the data JSON and access."""

from __future__ import annotations

import csv
import io

import pytest

from maps.classification import COLOURS
from tests.browser import screenshot

pytestmark = pytest.mark.browser


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def _close(a, b, tol=40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _open_map(page_offline, live_server, app, headers: dict, query: str = "", viewport=(1366, 768)):
    base = live_server(app)
    res = page_offline(base + "/healthz", viewport=viewport)  # a public page first, then the signed-in headers
    res.page.context.set_extra_http_headers(headers)
    res.page.goto(base + "/maps/classification" + query, wait_until="networkidle")
    res.page.wait_for_function("() => window.gaMap && window.gaMap.ready && window.gaMap.tilesLoaded > 0")
    return res


def test_data_names_every_compound_and_both_grids_of_a_straddler(client, make_user, district):
    street = district.streets["code"].iloc[0]
    mine = district.compounds[district.compounds["community_code"].str.startswith(street)]
    d = client.get("/maps/classification/data", headers=make_user("leader", street)["headers"]).json()
    assert len(d["compounds"]) == len(mine)
    planted = mine["planted_type"].value_counts()
    got = {c: sum(k["class"] == c for k in d["compounds"]) for c in COLOURS}
    for cls in ("same", "larger", "smaller", "straddling"):
        assert got[cls] == planted.get(cls, 0), (cls, got, planted)
    straddling = [k for k in d["compounds"] if k["class"] == "straddling"]
    assert straddling and all(len(k["units"]) >= 2 for k in straddling)
    assert all(k["box"] and k["lon"] is not None for k in d["compounds"])
    assert all(u["code"].startswith(street) for u in d["units"])
    assert client.get("/maps/classification/data").status_code == 401


def test_map_page_offline_with_legend_list_and_exports(app, make_user, live_server, page_offline, district):
    street = district.streets["code"].iloc[0]
    mine = district.compounds[district.compounds["community_code"].str.startswith(street)]
    planted = mine["planted_type"].value_counts()
    res = _open_map(page_offline, live_server, app, make_user("leader", street)["headers"])
    page = res.page
    assert res.problems == {}, res.problems
    assert page.title().startswith("小区与网格对应关系分类图")
    legend = page.locator("#ga-legend").inner_text()
    for cls, label in (("same", "同等"), ("larger", "大于网格"), ("smaller", "小于网格"), ("straddling", "跨界")):
        assert f"{label}：{planted.get(cls, 0)}" in legend, legend
    # compounds are painted in their class colour where they stand (a few of each class, at their label point)
    page.evaluate("() => window.gaMap.map.setZoom(Math.max(window.gaMap.map.getZoom(), 15))")
    page.wait_for_function("() => window.gaMap.ready")
    page.wait_for_load_state("networkidle")
    checked = page.evaluate("""() => {
        const g = window.gaMap, c = g.viewCanvas({labels: false}), dpr = c.width / g.map.getSize().x;
        const ctx = c.getContext('2d'), size = g.map.getSize(), out = [];
        for (const k of g.data.compounds) {
            const ll = g.toMap(k.lon, k.lat), p = g.map.latLngToContainerPoint(L.latLng(ll[1], ll[0]));
            if (p.x < 5 || p.y < 5 || p.x > size.x - 5 || p.y > size.y - 5) continue;
            const px = ctx.getImageData(Math.round(p.x * dpr), Math.round((p.y + 44) * dpr), 1, 1).data;
            out.push([k['class'], [px[0], px[1], px[2]]]);
        }
        return out;
    }""")
    assert len(checked) >= 5
    hits = sum(_close(tuple(px), _hex(COLOURS[cls])) for cls, px in checked)
    assert hits >= 0.9 * len(checked), checked  # a label point of a compound on a neighbour's edge may differ
    # the list starts with the straddling compounds, each naming two grids
    first = page.locator("#ga-table tbody tr").first.inner_text()
    assert "跨界" in first and first.count("%") >= 2, first
    screenshot(page, "classification_tiles")
    page.screenshot(path="/tmp/classification_1366.png")
    # search by name, zoom to it, its measures in the panel
    name = page.evaluate("() => window.gaMap.data.compounds.find(k => k['class'] === 'straddling').name")
    page.fill("#ga-search", name)
    assert page.locator("#ga-table tbody tr").count() >= 1
    page.locator("#ga-table .ga-zoom").first.click()
    info = page.inner_text("#ga-info")
    assert name in info and "涉及网格" in info and "交并比 IoU" in info
    # CSV of the visible list
    with page.expect_download() as dl:
        page.click("#ga-csv")
    rows = list(csv.reader(io.StringIO(dl.value.path().read_bytes().decode("utf-8").lstrip("\ufeff"))))
    assert rows[0][0] == "小区" and all(name in r[0] for r in rows[1:]) and len(rows) >= 2
    # the level switch: new data, same page, micro-grids named
    url = page.url
    page.fill("#ga-search", "")
    page.select_option("#ga-level", "micro_grid")
    page.wait_for_function("() => window.gaMap.data.level === 'micro_grid'")
    assert page.url == url and "微网格" in page.inner_text("#ga-legend-title")
    n = district.compounds[district.compounds["community_code"].str.startswith(street)]["planted_micro_type"]
    assert f"大于微网格：{n.value_counts().get('larger', 0)}" in page.inner_text("#ga-legend")
    assert res.problems == {}, res.problems


def test_phone_layout(app, make_user, live_server, page_offline, district):
    res = _open_map(page_offline, live_server, app, make_user("admin")["headers"], viewport=(390, 844))
    assert res.problems == {}, res.problems
    assert res.page.locator("#ga-map").bounding_box()["width"] == 390
    res.page.screenshot(path="/tmp/classification_390.png", full_page=True)


def test_map_needs_a_signed_in_user(client):
    r = client.get("/maps/classification", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code in (303, 401)
    assert client.get("/maps/classification").status_code == 401


def test_whole_district_view_shows_each_compound_as_a_dot_of_its_class(app, make_user, live_server, page_offline):
    """Below zoom 12 (no compound tiles) every compound is a dot in its class colour at its label point, the
    straddling ones on top; hiding a class in the legend takes its dots off; street names label the view."""
    res = _open_map(page_offline, live_server, app, make_user("admin")["headers"])
    page = res.page
    # to zoom 11 without animation, then until every tile of the new view is painted
    page.evaluate("""() => new Promise(done => {
        const g = window.gaMap;
        g.overlay.once('load', done);
        g.map.setZoom(11, {animate: false});
    })""")
    page.wait_for_load_state("networkidle")
    assert page.evaluate("() => window.gaMap.map.getZoom()") == 11
    assert page.locator(".ga-label.street").count() >= 1  # streets named at the district's zoom

    def dot_colours() -> list:
        return page.evaluate("""() => {
            const g = window.gaMap, c = g.viewCanvas({labels: false}), dpr = c.width / g.map.getSize().x;
            const ctx = c.getContext('2d'), size = g.map.getSize(), out = [];
            for (const k of g.data.compounds.filter(k => k['class'] === 'straddling')) {
                const ll = g.toMap(k.lon, k.lat), p = g.map.latLngToContainerPoint(L.latLng(ll[1], ll[0]));
                if (p.x < 5 || p.y < 5 || p.x > size.x - 5 || p.y > size.y - 5) continue;
                const px = ctx.getImageData(Math.round(p.x * dpr), Math.round((p.y + 44) * dpr), 1, 1).data;
                out.push([px[0], px[1], px[2]]);
            }
            return out;
        }""")

    shown = dot_colours()
    assert len(shown) >= 1  # the test district has a few straddling compounds
    pink = _hex(COLOURS["straddling"])
    assert sum(_close(tuple(px), pink) for px in shown) >= 0.8 * len(shown), shown
    screenshot(page, "classification_district_dots")
    page.click("#ga-legend li[data-key='straddling']")
    hidden = dot_colours()
    assert sum(_close(tuple(px), pink) for px in hidden) <= 0.2 * len(hidden), hidden
    assert res.problems == {}, res.problems
