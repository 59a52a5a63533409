"""The classification map page in headless Chromium with the internet cut off: drawn, coloured, legend, popups."""

from __future__ import annotations

import re

import pytest

from geo.classify.classification import CLASS_ZH
from maps.classification import COLOURS
from tests.browser import screenshot

pytestmark = pytest.mark.browser


def _open_map(page_offline, live_server, app, headers: dict, query: str = ""):
    base = live_server(app)
    res = page_offline(base + "/healthz")  # a public page first, so the signed-in headers can be set
    res.page.context.set_extra_http_headers(headers)
    res.page.goto(base + "/maps/classification" + query, wait_until="networkidle")
    return res


def test_map_page_offline_with_legend_colours_and_popups(app, make_user, live_server, page_offline, district):
    street = district.streets["code"].iloc[0]
    mine = district.compounds[district.compounds["community_code"].str.startswith(street)]
    planted = mine["planted_type"].value_counts()
    res = _open_map(page_offline, live_server, app, make_user("leader", street)["headers"])
    page = res.page
    assert res.problems == {}, res.problems
    assert page.title() == "小区与网格对应关系分类图"
    legend = page.locator(".ga-legend").inner_text()
    for cls, label in (("same", "同等"), ("larger", "大于网格"), ("smaller", "小于网格"), ("straddling", "跨界")):
        assert f"{label}：{planted.get(cls, 0)}" in legend, legend
    assert f"合计 {len(mine)} 个小区" in legend
    # Every compound is drawn, in its class colour; grid outlines are drawn dashed under them.
    fills = page.eval_on_selector_all("path.leaflet-interactive", "ps => ps.map(p => p.getAttribute('fill'))")
    for cls, n in planted.items():
        assert fills.count(COLOURS[cls]) == n, (cls, fills.count(COLOURS[cls]), n)
    dashed = page.eval_on_selector_all("path[stroke-dasharray]", "ps => ps.length")
    assert dashed == int(district.grids["code"].str.startswith(street).sum())
    # A popup in Chinese with the measures, on a compound of the commonest class here.
    common = planted.idxmax()
    page.locator(f'path[fill="{COLOURS[common]}"]').first.click(force=True)
    popup = page.locator(".leaflet-popup-content").inner_text()
    for label in ("类型", CLASS_ZH[common], "主网格", "小区面积", "交并比 IoU", "最大偏离", "位于主网格内"):
        assert label in popup, popup
    assert re.search(r"\d[\d,]* m²", popup)
    # a function, not an expression string: Playwright evals a string in the page, which the pages' CSP forbids
    page.wait_for_function("() => getComputedStyle(document.querySelector('.leaflet-popup')).opacity === '1'")
    shot = screenshot(page, "classification_grid")
    assert shot.stat().st_size > 20_000


def test_micro_grid_map(app, make_user, live_server, page_offline, district):
    res = _open_map(page_offline, live_server, app, make_user("admin")["headers"], "?level=micro_grid")
    assert res.problems == {}, res.problems
    legend = res.page.locator(".ga-legend").inner_text()
    n = district.compounds["planted_micro_type"].value_counts()
    assert f"大于微网格：{n.get('larger', 0)}" in legend and "微网格" in res.page.title()
    dashed = res.page.eval_on_selector_all("path[stroke-dasharray]", "ps => ps.length")
    assert dashed == len(district.micro_grids)
    screenshot(res.page, "classification_micro_grid")


def test_map_needs_a_signed_in_user(client):
    r = client.get("/maps/classification", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code in (303, 401)
    assert client.get("/maps/classification").status_code == 401
