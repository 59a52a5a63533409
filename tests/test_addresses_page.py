"""Searching by address on the phone (issue 16, item 7) in Chromium, location refused: "巴陵东路129号3栋2单元" finds
the building, each hit shows its address under its name, and picking it locates the worker's grid."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.test_addresses import _pick
from tests.test_mobile_offline import _login
from tests.test_mobile_pin import _phone, _worker

pytestmark = pytest.mark.browser


def test_search_by_address_on_the_phone(engine, browser, live_server):
    from api.main import create_app
    from tests.browser import SCREENSHOT_DIR

    ref = _pick(engine)
    with engine.connect() as conn:
        grid_name = conn.execute(text("SELECT name FROM current_grids WHERE code = :c"), {"c": ref["grid"]}).scalar()
    username, password = _worker(engine, ref["grid"])
    base = live_server(create_app(engine))
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    context = _phone(browser)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        _login(page, base, username, password, "/m")
        page.locator("#ga-status").filter(has_text="未允许定位").wait_for(timeout=20_000)
        page.evaluate("window.gaPage.ready")
        # the compound by its address: the address under the name
        page.fill("#ga-q", ref["kaddr"])
        page.press("#ga-q", "Enter")
        first = page.locator("#ga-hits button.ga-hit").first
        first.wait_for(timeout=10_000)
        assert first.inner_text() == ref["kname"]
        assert first.get_attribute("data-address") == ref["kaddr"]
        shown = first.evaluate("b => getComputedStyle(b, '::after').content")
        assert shown == f'"{ref["kaddr"]}"'
        # a building by address, building and unit, typed with full-width digits
        wide = ref["kaddr"].translate(str.maketrans("0123456789", "０１２３４５６７８９"))
        page.fill("#ga-q", f"{wide}３栋２单元")
        page.press("#ga-q", "Enter")
        page.locator("#ga-hits button.ga-hit").filter(has_text=f"{ref['kname']} 3栋").first.wait_for(timeout=10_000)
        first = page.locator("#ga-hits button.ga-hit").first
        assert first.inner_text() == f"{ref['kname']} 3栋" and first.get_attribute("data-address") == ref["baddr"]
        box = first.bounding_box()
        assert box["height"] >= 44 and box["y"] + box["height"] <= 844  # a full-size target, on screen
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_address_search_390.png"))
        first.click()
        page.locator("#ga-grid-name").filter(has_text=grid_name).wait_for(timeout=10_000)
        assert page.locator('#ga-chain li[data-level="building"] .v').inner_text().startswith("3栋")
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_address_picked_390.png"))
    finally:
        context.close()
    assert errors == []
