"""The coverage map (/maps/coverage) in headless Chromium with the internet cut off: colours, legend, popups naming
who is responsible and what is missing, the role filter; plus the page's HTML and its access rule."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from tests import staff_data as sd
from tests.browser import _is_local, screenshot

pytestmark = pytest.mark.browser


@pytest.fixture
def small_app(migrated_engine):
    """The hand-made community, an app on it and a community leader's bearer headers."""
    from api.main import create_app

    sd.build_staffed(migrated_engine)
    headers = sd.bearer_headers(migrated_engine, {"leader": ("leader", sd.COMMUNITY), "east": ("worker", sd.GRID_E)})
    return create_app(migrated_engine), headers


def test_page_html_is_chinese_offline_and_escaped(small_app):
    from fastapi.testclient import TestClient

    from maps.assets import external_resources

    app, h = small_app
    with app.state.engine.begin() as conn:
        evil = sd.person(conn, "<script>alert(1)</script>", home=2)
        sd.assign(conn, evil, "volunteer", "unit", 21)
    with TestClient(app) as client:
        r = client.get("/maps/coverage", params={"at": "2025-03-01"}, headers=h["leader"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        page = r.text
        assert '<html lang="zh-CN">' in page and "人员覆盖图" in page
        assert external_resources(page) == []
        for word in ("缺岗", "超负荷", "已覆盖", "缺楼栋长", "管家三共18户，超过15户", "单元长21"):
            assert word in page, word
        # names are text: escaped for HTML, then for the script they sit in
        assert "<script>alert(1)" not in page and "\\u0026lt;script\\u0026gt;alert(1)" in page
        east = client.get("/maps/coverage", params={"at": "2025-03-01"}, headers=h["east"]).text
        assert "1号楼" in page and "1号楼" not in east  # B1 lies in grid W, outside the worker's grid
        assert client.get("/maps/coverage", params={"role": "cook"}, headers=h["leader"]).status_code == 422
        assert client.get("/maps/coverage", params={"grid": sd.GRID_W}, headers=h["east"]).status_code == 403
        # a browser without a session is sent to the login page
        anon = client.get("/maps/coverage", headers={"accept": "text/html"}, follow_redirects=False)
        assert anon.status_code in (303, 401)


def _open(browser, base: str, path: str, headers: dict):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN",
                                  extra_http_headers=headers)
    external, errors = [], []

    def route(r):
        if _is_local(r.request.url):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort("internetdisconnected")

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda resp: errors.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None)
    page.goto(base + path, wait_until="networkidle")
    return context, page, external, errors


def test_coverage_map_in_a_browser(small_app, live_server, browser):
    app, h = small_app
    base = live_server(app)
    context, page, external, errors = _open(browser, base, "/maps/coverage?at=2025-03-01", h["leader"])
    try:
        assert external == [] and errors == []
        assert page.title().startswith("人员覆盖图")
        # 2 grids and 4 buildings drawn, each in its status colour
        fills = page.eval_on_selector_all("path.leaflet-interactive", "els => els.map(e => e.getAttribute('fill'))")
        assert len(fills) == 6
        assert fills.count("#d7191c") == 3  # grid E (no chief), B2 (no head), B3 (unit without head)
        assert fills.count("#e66101") == 1 and fills.count("#1a9641") == 1 and fills.count("#9e9e9e") == 1
        legend = page.inner_text(".ga-legend:not(.ga-coverage-panel)")
        assert "缺岗" in legend and "已覆盖" in legend
        panel = page.inner_text(".ga-coverage-panel")
        assert "有楼栋长的楼栋" in panel and "2/3" in panel
        screenshot(page, "coverage_map")
        # B2's popup names its unit head and steward and says what is missing
        page.evaluate("""() => window.gaCoverage.buildings.eachLayer(l => {
            if (l.feature.properties.t.startsWith('2号楼')) l.openPopup();
        })""")
        page.wait_for_timeout(400)  # the popup fades in
        popup = page.inner_text(".leaflet-popup-content")
        assert "单元长21" in popup and "管家三" in popup and "缺楼栋长" in popup and "1单元5户无管家" in popup
        screenshot(page, "coverage_map_popup")
        # the role filter reloads the page coloured by that role
        with page.expect_navigation():
            page.select_option("#ga-role", "building_head")
        assert "role=building_head" in page.url
        fills = page.eval_on_selector_all("path.leaflet-interactive", "els => els.map(e => e.getAttribute('fill'))")
        # grids neutral (grey), B1 and B3 have heads (green), B2 none (red), B4 empty (grey)
        assert sorted(fills) == sorted(["#9e9e9e", "#9e9e9e", "#1a9641", "#1a9641", "#d7191c", "#9e9e9e"])
        assert re.search(r"楼栋长", page.title())
        screenshot(page, "coverage_map_building_heads")
        assert external == [] and errors == []
    finally:
        context.close()


def test_district_map_draws_every_grid_and_building_of_the_community(client, make_user, db_session):
    from geo.staff.coverage import coverage_report

    community = db_session.execute(text("SELECT code FROM communities ORDER BY code LIMIT 1")).scalar()
    leader = make_user("leader", community)
    r = client.get("/maps/coverage", params={"role": "steward"}, headers=leader["headers"])
    assert r.status_code == 200
    report = coverage_report(db_session.connection(), community)
    page = r.text
    # one feature per grid and building of the community, coloured; nothing from elsewhere
    assert page.count('"type":"Feature"') == len(report.grids) + len(report.buildings)
    assert "管家" in page and "按岗位" in page
