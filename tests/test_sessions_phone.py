"""The phone's device session in Chromium (issue 16 item 4): when the access cookie expires the page comes back
without a password and keeps what was typed; logging out clears the cached jurisdiction but keeps the unsent
report, which another worker signing in on the same phone does not send and its owner's next login does."""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import text

from tests.test_mobile_offline import _login, _outbox_len, _wait
from tests.test_mobile_pin import _worker
from tests.test_mobile_places import _compound_with_building_3

pytestmark = pytest.mark.browser

IDB = """([store, key]) => new Promise((resolve, reject) => {
  const req = indexedDB.open('gridatlas-phone', 1);
  req.onsuccess = () => { try { const t = req.result.transaction(store, 'readonly').objectStore(store);
    const r = key === null ? t.getAll() : t.get(key);
    r.onsuccess = () => resolve(r.result === undefined ? null : r.result); r.onerror = () => reject(r.error);
    } catch (e) { reject(e); } };
  req.onerror = () => reject(req.error); })"""


def _incidents(engine, marker: str) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT created_by FROM incidents WHERE description = :d"), {"d": marker}).all()


def test_device_session_relogin_and_logout(engine, browser, live_server):
    from api.main import create_app
    from tests.browser import SCREENSHOT_DIR

    ref = _compound_with_building_3(engine)
    with engine.connect() as conn:
        class_code = conn.execute(text("SELECT code FROM incident_classes WHERE major_code IS NOT NULL "
                                       "ORDER BY code LIMIT 1")).scalar_one()
        x, y = conn.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM buildings "
                                 "WHERE id = :i) s"), {"i": ref["bid"]}).one()
    owner, owner_pw = _worker(engine, ref["grid"])
    other, other_pw = _worker(engine, ref["grid"])
    base = live_server(create_app(engine))
    report = f"/m/report?lon={x}&lat={y}&coordsys=wgs84"
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, locale="zh-CN", service_workers="allow",
                                  geolocation={"longitude": x, "latitude": y, "accuracy": 8},
                                  permissions=["geolocation"])
    down = {"on": True}

    def incidents_route(route):
        if route.request.method == "POST" and down["on"]:
            route.fulfill(status=503, content_type="application/problem+json",
                          body='{"title": "down", "status": 503}', headers={"Retry-After": "1"})
        else:
            route.continue_()

    context.route(re.compile(r".*/v1/incidents$"), incidents_route)
    errors = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        _login(page, base, owner, owner_pw, "/m")
        page.evaluate("window.gaPage.ready")
        _wait(page, "!!navigator.serviceWorker.controller")
        assert page.evaluate(IDB, ["drafts", "pack@" + owner]) is not None
        assert page.evaluate(IDB, ["drafts", "places@" + owner]) is not None
        page.goto(base + report, wait_until="networkidle")

        # ---- the server cannot take it: queued
        marker = f"消防通道堵塞 {uuid.uuid4().hex[:6]}"
        page.select_option("#ga-class", class_code)
        page.fill("#ga-desc", marker)
        page.click("#ga-submit")
        page.locator("#ga-status").filter(has_text="暂存").wait_for(timeout=15_000)
        assert _outbox_len(page) == 1

        # ---- the access cookie expires mid-typing: the page comes back without a password, the text kept
        typed = f"第二条：井盖缺失 {uuid.uuid4().hex[:6]}"
        page.fill("#ga-desc", typed)
        page.wait_for_timeout(300)  # the draft's write
        context.clear_cookies(name="gridatlas_session")
        page.goto(base + report, wait_until="networkidle")  # the server sends it to /login, which uses the device
        _wait(page, "location.pathname === '/m/report'")
        page.wait_for_selector("#ga-form")
        _wait(page, f"document.querySelector('#ga-desc').value === {typed!r}")
        assert any(c["name"] == "gridatlas_session" for c in context.cookies())
        page.screenshot(path=str(SCREENSHOT_DIR / "phone_device_relogin_390.png"))

        # ---- logout: the cached jurisdiction goes, the unsent report stays
        page.goto(base + "/m", wait_until="networkidle")
        page.click("#ga-logout")
        page.wait_for_url(re.compile(r".*/login.*"), timeout=15_000)
        page.wait_for_load_state("networkidle")
        assert page.evaluate(IDB, ["drafts", "pack@" + owner]) is None
        assert page.evaluate(IDB, ["drafts", "places@" + owner]) is None
        assert page.evaluate("caches.keys()").count("gridatlas-data") == 0
        kept_pages = page.evaluate("""async () => { const out = [];
            for (const k of await caches.keys()) for (const r of await (await caches.open(k)).keys())
              out.push(new URL(r.url).pathname); return out; }""")
        assert not [p for p in kept_pages if not p.startswith("/static/")], kept_pages
        queued = page.evaluate(IDB, ["outbox", None])
        assert len(queued) == 1 and queued[0]["user"] == owner and queued[0]["body"]["description"] == marker
        assert page.locator("#username").is_visible()  # logged out: the device session is gone too

        # ---- another worker on the same phone: the owner's report is not sent under their name
        down["on"] = False
        _login(page, base, other, other_pw, quote(report, safe="/"))
        _wait(page, "location.pathname === '/m/report'")
        page.evaluate("window.gaReport.flush()")
        time.sleep(0.5)
        assert _incidents(engine, marker) == [] and _outbox_len(page) == 1
        assert page.locator("#ga-desc").input_value() != typed  # nor is the owner's draft shown to them
        page.goto(base + "/m", wait_until="networkidle")
        page.click("#ga-logout")
        page.wait_for_url(re.compile(r".*/login.*"), timeout=15_000)

        # ---- the owner again: sent, under their name, with the draft still there
        _login(page, base, owner, owner_pw, quote(report, safe="/"))
        _wait(page, "location.pathname === '/m/report'")
        deadline = time.monotonic() + 30
        while _outbox_len(page) and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert [r.created_by for r in _incidents(engine, marker)] == [owner]
    finally:
        context.close()
    assert errors == []
