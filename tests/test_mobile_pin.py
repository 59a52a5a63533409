"""The report pin in Chromium on a phone with location refused (issue 16, items 3 and 7): the worker's own grid on
the map, search "X小区 3栋", pick, report there; on the form the pin moves by tapping, dragging and searching; the
same search works offline from the cached places."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.test_mobile_offline import _login, _wait
from tests.test_mobile_places import _compound_with_building_3

pytestmark = pytest.mark.browser


def _worker(engine, grid_code: str) -> tuple[str, str]:
    from geo.access.users import create_user

    username, password = f"pin-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with Session(engine) as s:
        create_user(s, username, password, "worker", grid_code)
        s.commit()
    return username, password


def _phone(browser, size=(390, 844)):
    """A phone context whose location permission is refused (never granted)."""
    return browser.new_context(viewport={"width": size[0], "height": size[1]}, device_scale_factor=2,
                               is_mobile=True, has_touch=True, locale="zh-CN", service_workers="allow")


def test_location_refused_search_pick_report(engine, browser, live_server):
    from api.main import create_app
    from tests.browser import SCREENSHOT_DIR

    ref = _compound_with_building_3(engine)
    with engine.connect() as conn:
        grid_name = conn.execute(text("SELECT name FROM current_grids WHERE code = :c"), {"c": ref["grid"]}).scalar()
        class_code = conn.execute(text("SELECT code FROM incident_classes WHERE major_code IS NOT NULL "
                                       "ORDER BY code LIMIT 1")).scalar_one()
        bx, by = conn.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM buildings "
                                   "WHERE id = :i) s"), {"i": ref["bid"]}).one()
    username, password = _worker(engine, ref["grid"])
    base = live_server(create_app(engine))
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    query = f"{ref['kname']} 3栋"
    label = f"{ref['kname']} 3栋"
    context = _phone(browser)
    errors, external = [], []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith((base, "data:", "blob:")) else None)
        _login(page, base, username, password, "/m")
        page.locator("#ga-status").filter(has_text="未允许定位").wait_for(timeout=20_000)
        page.evaluate("window.gaPage.ready")
        # location refused: the search shows, and the map frames the worker's own grid with its name
        assert page.locator("#ga-search-card").is_visible()
        page.locator("#ga-map .ga-label").filter(has_text=grid_name).wait_for(timeout=20_000)
        assert page.locator("#ga-map path.leaflet-interactive, #ga-map svg path").count() >= 1
        box = page.locator("#ga-q").bounding_box()
        assert box["y"] + box["height"] <= 844 and box["height"] >= 44
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_refused_390.png"))
        page.fill("#ga-q", query)
        page.press("#ga-q", "Enter")
        first = page.locator("#ga-hits button.ga-hit").first
        first.wait_for(timeout=10_000)
        assert first.inner_text() == label
        assert first.bounding_box()["height"] >= 44
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_search_hits_390.png"))
        first.click()
        page.locator("#ga-grid-name").filter(has_text=grid_name).wait_for(timeout=10_000)
        page.locator('#ga-glance[data-source="server"]').wait_for(timeout=10_000)  # after the cached answer
        assert page.locator('#ga-chain li[data-level="building"] .v').inner_text().startswith("3栋")
        assert "place=" in page.locator("#ga-report").get_attribute("href")
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_search_picked_390.png"))

        # ---- the form: the searched place is the address, the pin sits on the building
        page.click("#ga-report")
        page.wait_for_selector("#ga-form")
        assert page.locator("#ga-address").input_value() == label
        page.locator("#ga-pin-map .ga-pin").wait_for(timeout=20_000)
        start = page.evaluate("window.gaReport.point()")
        assert start["lon"] == pytest.approx(bx, abs=1e-6) and start["lat"] == pytest.approx(by, abs=1e-6)
        # tap the map 60 px to the right: the pin, the address bar and the attribution follow
        page.locator("#ga-pin-map").scroll_into_view_if_needed()
        m = page.locator("#ga-pin-map").bounding_box()
        page.mouse.click(m["x"] + m["width"] / 2 + 60, m["y"] + m["height"] / 2 - 30)
        _wait(page, f"window.gaReport.point().lon > {start['lon'] + 1e-6}")
        tapped = page.evaluate("window.gaReport.point()")
        assert f"lon={tapped['lon']}" in page.url
        _wait(page, f"document.querySelector('#ga-lonlat').textContent.startsWith('{tapped['lon']:.6f}')")
        # drag the pin back towards the left (once the map has panned to it)
        page.wait_for_timeout(800)
        page.locator("#ga-pin-map").scroll_into_view_if_needed()
        pin = page.locator("#ga-pin-map .ga-pin").bounding_box()
        cx, cy = pin["x"] + pin["width"] / 2, pin["y"] + pin["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(cx - 8 * k, cy + 3 * k)
            page.wait_for_timeout(30)
        page.mouse.up()

        _wait(page, f"window.gaReport.point().lon < {tapped['lon'] - 1e-6}")
        dragged = page.evaluate("window.gaReport.point()")
        assert dragged["lat"] < tapped["lat"]
        # search on the form: back onto the building
        page.fill("#ga-pq", query)
        page.press("#ga-pq", "Enter")
        page.locator("#ga-phits button.ga-hit").first.click()
        _wait(page, f"Math.abs(window.gaReport.point().lon - {bx}) < 1e-6")
        page.locator("#ga-grid").filter(has_text=grid_name).wait_for(timeout=10_000)
        marker = f"单元门损坏 {uuid.uuid4().hex[:6]}"
        page.select_option("#ga-class", class_code)
        page.fill("#ga-desc", marker)
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_report_pin_390.png"), full_page=True)
        page.click("#ga-submit")
        page.locator("#ga-status").filter(has_text="已上报").wait_for(timeout=15_000)
        with engine.connect() as conn:
            inc = conn.execute(text("SELECT i.address, i.building_id, i.lon, i.lat, g.code FROM incidents i "
                                    "LEFT JOIN grids g ON g.id = i.grid_id WHERE i.description = :d"),
                               {"d": marker}).mappings().one()
        assert inc["address"] == label and inc["building_id"] == ref["bid"] and inc["code"] == ref["grid"]
        assert inc["lon"] == pytest.approx(bx, abs=1e-6) and inc["lat"] == pytest.approx(by, abs=1e-6)

        # ---- offline: the same search from the cached places, and offline locate of the pick
        page.goto(base + "/m", wait_until="networkidle")
        _wait(page, "!!navigator.serviceWorker.controller")
        page.evaluate("window.gaPage.ready")
        context.set_offline(True)
        page.reload(wait_until="domcontentloaded")
        page.locator("#ga-search-card").wait_for(state="visible", timeout=20_000)
        page.fill("#ga-q", query)
        page.press("#ga-q", "Enter")
        page.locator("#ga-hits").filter(has_text="离线搜索").wait_for(timeout=10_000)
        assert page.locator("#ga-hits button.ga-hit").first.inner_text() == label
        page.locator("#ga-hits button.ga-hit").first.click()
        page.locator("#ga-grid-name").filter(has_text=grid_name).wait_for(timeout=10_000)
        assert "离线" in page.locator("#ga-match").inner_text()
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_search_offline_390.png"))
    finally:
        context.close()
    assert errors == [] and external == []


def test_refused_search_on_a_small_phone(engine, browser, live_server):
    from api.main import create_app
    from tests.browser import SCREENSHOT_DIR

    ref = _compound_with_building_3(engine)
    username, password = _worker(engine, ref["grid"])
    base = live_server(create_app(engine))
    context = _phone(browser, (360, 640))
    try:
        page = context.new_page()
        _login(page, base, username, password, "/m")
        page.locator("#ga-status").filter(has_text="未允许定位").wait_for(timeout=20_000)
        page.fill("#ga-q", ref["kname"])
        page.press("#ga-q", "Enter")
        page.locator("#ga-hits button.ga-hit").first.wait_for(timeout=10_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        for sel in ("#ga-q", "#ga-find", "#ga-search button"):
            box = page.locator(sel).bounding_box()
            assert box["height"] >= 44 and box["y"] + box["height"] <= 640, (sel, box)
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_refused_360.png"))
    finally:
        context.close()
