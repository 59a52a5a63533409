"""The mobile locate page `/m` in headless Chromium, offline, on a phone-sized screen with a mocked position."""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from geo.locate.reference import locate_sql

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def phone_context(browser, position: tuple[float, float] | None):
    """A phone-sized browser context with the internet cut off; geolocation granted at `position` (lon, lat)
    or denied when None. Yields (context, record) where record lists external requests and page errors."""
    from tests.browser import _is_local

    kw = {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True, "has_touch": True, "locale": "zh-CN"}
    if position is not None:
        kw.update(geolocation={"longitude": position[0], "latitude": position[1], "accuracy": 8},
                  permissions=["geolocation"])
    context = browser.new_context(**kw)
    record = {"external": [], "errors": [], "failed": []}

    def route(r):
        if _is_local(r.request.url):
            r.continue_()
        else:
            record["external"].append(r.request.url)
            r.abort("internetdisconnected")

    context.route("**/*", route)
    try:
        yield context, record
    finally:
        context.close()


def _watch(page, record) -> None:
    page.on("pageerror", lambda exc: record["errors"].append(str(exc)))
    page.on("console", lambda m: record["errors"].append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: record["failed"].append(f"{r.status} {r.url}") if r.status >= 400 else None)


def _known_building(engine):
    """A building whose grid has a grid chief with a public phone: (lon, lat, reference answer)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """
            SELECT ST_X(p) AS x, ST_Y(p) AS y FROM (
              SELECT ST_PointOnSurface(b.geom) AS p FROM buildings b ORDER BY b.id) s
            """)).all()
        for x, y in rows:
            ref = locate_sql(conn, x, y)
            if ref["grid"] is None or ref["building"] is None:
                continue
            has_public_chief = conn.execute(text(
                "SELECT EXISTS (SELECT 1 FROM staff_assignments a JOIN people p ON p.id = a.person_id "
                "WHERE a.grid_id = :g AND a.role = 'grid_chief' AND p.phone_public AND p.phone IS NOT NULL "
                "AND a.valid_from <= current_date AND (a.valid_to IS NULL OR a.valid_to > current_date))"),
                {"g": ref["grid"]}).scalar()
            if has_public_chief:
                names = {k: conn.execute(text(f"SELECT name FROM {t} WHERE id = :i"), {"i": ref[k]}).scalar()
                         for k, t in (("grid", "grids"), ("building", "buildings"), ("community", "communities"),
                                      ("street", "streets"))}
                return x, y, ref, names
    raise AssertionError("the district has no building in a grid with a public grid chief")


def test_mobile_page_locates_the_phone_at_a_building(engine, browser, live_server):
    from api.main import create_app
    from tests.browser import SCREENSHOT_DIR

    x, y, ref, names = _known_building(engine)
    base = live_server(create_app(engine))
    with phone_context(browser, (x, y)) as (context, record):
        page = context.new_page()
        _watch(page, record)
        page.goto(base + "/m", wait_until="networkidle")
        building = page.locator('#ga-chain li[data-level="building"] .v')
        building.filter(has_text=names["building"]).wait_for(timeout=20_000)
        page.wait_for_function("document.querySelectorAll('#ga-map path').length > 3", timeout=20_000)
        page.wait_for_load_state("networkidle")

        chain = {k: page.locator(f'#ga-chain li[data-level="{k}"] .v').inner_text()
                 for k in ("street", "community", "grid", "building")}
        for k in ("street", "community", "grid", "building"):
            assert names[k] in chain[k], (k, chain)
        assert page.locator("#ga-match").inner_text() in ("在网格内", "位于网格边界")
        tel = page.locator("#ga-staff a.tel")
        assert tel.count() >= 1
        assert tel.first.get_attribute("href").startswith("tel:1")
        assert "网格长" in page.locator("#ga-staff").inner_text()
        report = page.locator("#ga-report")
        assert report.inner_text() == "在此上报事件"
        href = urlsplit(report.get_attribute("href"))
        query = parse_qs(href.query)
        assert href.path == "/m/report"
        assert float(query["lon"][0]) == pytest.approx(x, abs=1e-6)
        assert float(query["lat"][0]) == pytest.approx(y, abs=1e-6)
        # Phone-sized: nothing wider than the screen, the page is in Chinese.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "mobile_locate.png"), full_page=True)

        # Tapping the map elsewhere locates that point instead.
        box = page.locator("#ga-map").bounding_box()
        before = page.locator("#ga-where").inner_text()
        page.mouse.click(box["x"] + box["width"] * 0.85, box["y"] + box["height"] * 0.8)  # clear of the controls
        page.locator("#ga-where").filter(has_text="地图点选").wait_for(timeout=20_000)
        assert page.locator("#ga-where").inner_text() != before
    assert record["external"] == [] and record["errors"] == []
    assert [f for f in record["failed"] if "/v1/locate?" not in f] == []  # a tap outside every grid may 404


def test_mobile_page_without_permission_asks_for_a_tap(engine, browser, live_server):
    from api.main import create_app

    x, y, ref, names = _known_building(engine)
    base = live_server(create_app(engine))
    with phone_context(browser, None) as (context, record):
        page = context.new_page()
        _watch(page, record)
        page.goto(base + "/m", wait_until="networkidle")
        page.locator("#ga-status").filter(has_text="点击地图").wait_for(timeout=20_000)
        assert page.locator("#ga-report").get_attribute("class") == "report disabled"
        # A link with a point (as the report page's "back" link makes) locates it without the device.
        page.goto(base + f"/m?lon={x}&lat={y}", wait_until="networkidle")
        page.locator('#ga-chain li[data-level="grid"] .v').filter(has_text=names["grid"]).wait_for(timeout=20_000)
    assert record["external"] == [] and [e for e in record["errors"] if "geolocation" not in e.lower()] == []
