"""The phone with its service worker active (issue 16): a repeat visit is served from the worker's cache and answers
at once from the cached jurisdiction, marked as such with its version date, then replaced by the server's answer;
a new tap never shows the previous answer; 我的上报 lists the worker's own reports (server and queued, 待发送),
also offline from the last fetched list; a shared phone keeps drafts and the outbox per user."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.test_mobile_offline import _login, _outbox_len, _wait
from tests.test_mobile_page import _known_building

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"


def _grid_worker(engine) -> dict:
    """A worker of the grid of a known building, with the point, names and an incident class."""
    from geo.access.users import create_user

    x, y, ref, names = _known_building(engine)
    with engine.connect() as conn:
        code = conn.execute(text("SELECT code FROM grids WHERE id = :i"), {"i": ref["grid"]}).scalar_one()
        class_code, class_name = conn.execute(text(
            "SELECT code, name FROM incident_classes WHERE major_code IS NOT NULL ORDER BY code LIMIT 1")).one()
    username, password = f"sw-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with Session(engine) as s:
        create_user(s, username, password, "worker", code)
        s.commit()
    return {"x": x, "y": y, "names": names, "code": code, "class_code": class_code, "class_name": class_name,
            "username": username, "password": password}


def _phone(browser, w: dict, size=(390, 844)):
    return browser.new_context(viewport={"width": size[0], "height": size[1]}, device_scale_factor=2,
                               is_mobile=True, has_touch=True, locale="zh-CN",
                               geolocation={"longitude": w["x"], "latitude": w["y"], "accuracy": 8},
                               permissions=["geolocation"], service_workers="allow")


def _installed(page) -> None:
    """Wait until the service worker controls the page and the pack and lists are fetched."""
    page.evaluate("window.gaPage.ready.then(() => true)")
    _wait(page, "navigator.serviceWorker.controller && navigator.serviceWorker.controller.state === 'activated'")


# ------------------------------------------------------------------------------------------------- the API

def test_my_reports_lists_the_callers_own_newest_first(client, make_user, engine, db_session):
    w = _grid_worker(engine)
    me = make_user("worker", w["code"])
    other = make_user("worker", w["code"])
    assert client.get("/v1/mobile/reports").status_code == 401
    body = {"lon": w["x"], "lat": w["y"], "class_code": w["class_code"], "source": "patrol"}
    ids = []
    for day in (3, 1, 2):  # filed in this order, reported on these days: the list goes by report time
        r = client.post("/v1/incidents", json={**body, "reported_at": f"2026-11-0{day}T09:00:00+08:00"},
                        headers=me["headers"])
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    r = client.post(f"/v1/incidents/{ids[0]}/photos?stage=report", content=jpeg,
                    headers={**me["headers"], "Content-Type": "image/jpeg"})
    assert r.status_code == 201, r.text
    theirs = client.post("/v1/incidents", json=body, headers=other["headers"]).json()["id"]
    mine = client.get("/v1/mobile/reports", headers=me["headers"]).json()
    assert [i["id"] for i in mine["items"]] == [ids[0], ids[2], ids[1]]  # 3rd, 2nd, 1st of November
    assert theirs not in [i["id"] for i in mine["items"]] and mine["total"] == 3
    first = mine["items"][0]
    assert first["photos"] == 1 and first["handling_photos"] == 0
    assert first["state_name"] and first["state_name"] != first["state"]  # in Chinese, from the state table
    assert first["class_name"] == w["class_name"]
    limited = client.get("/v1/mobile/reports", params={"limit": 1}, headers=me["headers"]).json()
    assert len(limited["items"]) == 1 and limited["total"] == 3


# ------------------------------------------------------------------------------------------------- the phone

def test_repeat_visit_answers_from_the_cache_then_the_server(engine, browser, live_server):
    from api.main import create_app

    w = _grid_worker(engine)
    base = live_server(create_app(engine))
    context = _phone(browser, w)
    errors: list[str] = []
    held: list = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        _login(page, base, w["username"], w["password"], "/m")
        page.locator('#ga-glance[data-source="server"]').wait_for(timeout=20_000)
        _installed(page)

        # The next lookups wait until the test lets them through: what shows meanwhile is the cached answer.
        context.route("**/v1/locate?*", lambda route: held.append(route))
        navigation = page.reload(wait_until="domcontentloaded")
        assert navigation is not None and navigation.from_service_worker  # the shell came from the cache
        page.locator('#ga-glance[data-source="cache"]').wait_for(timeout=20_000)
        assert page.locator("#ga-grid-name").inner_text() == w["names"]["grid"]
        assert "缓存" in page.locator("#ga-match").inner_text()
        note = page.locator("#ga-status").inner_text()
        assert "本机缓存" in note and "边界版本" in note and "下载于" in note and "正在联网确认" in note
        while not held:
            page.wait_for_timeout(50)
        held.pop().continue_()
        page.locator('#ga-glance[data-source="server"]').wait_for(timeout=20_000)
        assert page.locator("#ga-grid-name").inner_text() == w["names"]["grid"]
        assert "缓存" not in page.locator("#ga-match").inner_text()
        assert "本机缓存" not in page.locator("#ga-status").inner_text()

        # A tap far outside the cached grids: the previous answer is gone at once, nothing cached stands in.
        context.set_geolocation({"longitude": w["x"] + 0.5, "latitude": w["y"] + 0.5, "accuracy": 8})
        page.click("#ga-locate")
        _wait(page, "document.querySelector('#ga-grid-name').textContent === '正在查询…'")
        while not held:
            page.wait_for_timeout(50)
        assert page.locator("#ga-glance").get_attribute("data-source") == ""
        assert page.locator("#ga-key li").count() == 0 and page.locator("#ga-match").inner_text() == ""
        held.pop().continue_()
        page.locator("#ga-grid-name").filter(has_text="不在任何网格内").wait_for(timeout=20_000)
    finally:
        context.close()
    assert errors == []


def test_my_reports_on_the_phone_also_offline(engine, browser, live_server, tmp_path):
    from api.deps import settings_dep
    from api.main import create_app
    from geo.settings import Settings

    w = _grid_worker(engine)
    settings = Settings(photo_dir=tmp_path / "photos")
    app = create_app(engine)
    app.dependency_overrides[settings_dep] = lambda: settings
    base = live_server(app)
    context = _phone(browser, w)
    try:
        page = context.new_page()
        _login(page, base, w["username"], w["password"], "/m")
        filed = page.evaluate(
            """async (body) => {
                 const r = await fetch('/v1/incidents', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                         body: JSON.stringify(body)});
                 return (await r.json()).id; }""",
            {"lon": w["x"], "lat": w["y"], "class_code": w["class_code"], "description": "井盖缺失",
             "reported_at": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()})
        page.reload(wait_until="domcontentloaded")
        page.locator(f'#ga-mine li[data-id="{filed}"]').wait_for(timeout=20_000)
        _installed(page)
        row = page.locator(f'#ga-mine li[data-id="{filed}"]')
        assert w["class_name"] in row.inner_text() and "照片 0 张" in row.inner_text()
        with engine.connect() as conn:
            state_name = conn.execute(text("SELECT st.name FROM incidents i JOIN incident_states st "
                                           "ON st.code = i.state WHERE i.id = :i"), {"i": filed}).scalar_one()
        assert state_name in row.locator(".state").inner_text()
        assert row.locator("a").get_attribute("href") == f"/m/cases/{filed}"
        assert "更新于" in page.locator("#ga-mine-note").inner_text()
        # The report form once online, so the service worker keeps it for offline.
        page.goto(base + f"/m/report?lon={w['x']}&lat={w['y']}&coordsys=wgs84", wait_until="networkidle")

        # ---- offline: a report queued, the list from the cache with its date, the queued one on top
        context.set_offline(True)
        page.reload(wait_until="domcontentloaded")
        page.wait_for_selector("#ga-form")
        page.select_option("#ga-class", w["class_code"])
        page.fill("#ga-desc", "楼道堆物")
        page.click("#ga-submit")
        page.locator("#ga-status").filter(has_text="暂存").wait_for(timeout=10_000)
        page.goto(base + "/m", wait_until="domcontentloaded")
        page.locator("#ga-mine li .state.queued").wait_for(timeout=20_000)
        items = page.locator("#ga-mine li")
        assert "待发送" in items.nth(0).inner_text() and w["class_name"] in items.nth(0).inner_text()
        assert items.nth(1).get_attribute("data-id") == str(filed)  # newest first
        assert "离线" in page.locator("#ga-mine-note").inner_text()
        page.locator("#ga-mine-card").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "mobile_my_reports_offline.png"))

        # ---- online: the queued report is sent and listed as the server's
        context.set_offline(False)
        page.evaluate("window.dispatchEvent(new Event('online'))")
        _wait(page, "GA.outbox.all().then(a => a.length === 0)")
        _wait(page, "document.querySelectorAll('#ga-mine li .state.queued').length === 0 && "
                    "document.querySelectorAll('#ga-mine li[data-id]').length >= 2 && "
                    "!document.querySelector('#ga-mine li[data-id=\"\"]')")
    finally:
        context.close()


def test_shared_phone_keeps_drafts_and_outbox_per_user(engine, browser, live_server, tmp_path):
    from api.deps import settings_dep
    from api.main import create_app
    from geo.access.users import create_user
    from geo.settings import Settings

    a = _grid_worker(engine)
    b_name, b_password = f"sw-b-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    with Session(engine) as s:
        create_user(s, b_name, b_password, "worker", a["code"])
        s.commit()
    settings = Settings(photo_dir=tmp_path / "photos")
    app = create_app(engine)
    app.dependency_overrides[settings_dep] = lambda: settings
    base = live_server(app)
    report = f"/m/report?lon={a['x']}&lat={a['y']}&coordsys=wgs84"
    queued, draft_a, draft_b = (f"{t} {uuid.uuid4().hex[:6]}" for t in ("A 排队", "A 草稿", "B 草稿"))
    context = _phone(browser, a)
    try:
        page = context.new_page()
        # ---- A: one report queued without signal, another typed and left as a draft
        _login(page, base, a["username"], a["password"], "/m")
        _installed(page)
        page.goto(base + report, wait_until="networkidle")
        context.set_offline(True)
        page.select_option("#ga-class", a["class_code"])
        page.fill("#ga-desc", queued)
        page.click("#ga-submit")
        page.locator("#ga-status").filter(has_text="暂存").wait_for(timeout=10_000)
        page.fill("#ga-desc", draft_a)
        page.wait_for_timeout(300)  # the draft's IndexedDB write
        # A leaves without logging out; the session ends (another worker's login replaces the cookie).
        context.clear_cookies()
        context.set_offline(False)

        # ---- B logs in on the same phone: the kept /m is A's, it turns into B's; A's report is not sent as B's
        _login(page, base, b_name, b_password, "/m")
        _wait(page, f"window.GA_CONFIG && window.GA_CONFIG.username === {b_name!r}")
        page.evaluate("window.gaPage.ready.then(() => true)")
        page.goto(base + report, wait_until="networkidle")
        _wait(page, "window.gaReport && true")
        page.evaluate("window.gaReport.flush()")
        assert page.locator("#ga-desc").input_value() == ""  # A's draft is not B's
        assert _outbox_len(page) == 1  # A's report held
        assert page.evaluate("GA.outbox.mine().then(a => a.length)") == 0
        page.fill("#ga-desc", draft_b)
        page.wait_for_timeout(300)
        page.reload(wait_until="networkidle")
        _wait(page, "document.querySelector('#ga-desc').value.length > 0")
        assert page.locator("#ga-desc").input_value() == draft_b
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM incidents WHERE description = :d"),
                                {"d": queued}).scalar_one() == 0
        page.goto(base + "/m", wait_until="networkidle")
        page.evaluate("window.gaPage.ready.then(() => true)")
        assert queued not in page.locator("#ga-mine").inner_text()

        # ---- A again: A's draft is back, A's report goes with A's session
        context.clear_cookies()
        _login(page, base, a["username"], a["password"], report.replace("?", "%3F").replace("&", "%26"))
        assert page.url.startswith(base + "/m/report")
        _wait(page, "document.querySelector('#ga-desc').value.length > 0")
        assert page.locator("#ga-desc").input_value() == draft_a
        _wait(page, "GA.outbox.all().then(a => a.length === 0)")  # A's report went, with A's session
        with engine.connect() as conn:
            by = conn.execute(text("SELECT created_by FROM incidents WHERE description = :d"),
                              {"d": queued}).scalars().all()
        assert by == [a["username"]]
        page.screenshot(path=str(SHOTS / "mobile_shared_phone_a_again.png"))
    finally:
        context.close()


@pytest.mark.parametrize("size", [(390, 844), (360, 640)])
def test_one_glance_signed_in_with_the_service_worker(engine, browser, live_server, size):
    """The one-glance card of a signed-in worker on a repeat visit (service worker, cached answer, 我的上报 below):
    grid, match, both call buttons and the report button above the fold, touch targets >= 44 px, nothing wider
    than the screen, map labels that do not overlap."""
    from api.main import create_app

    w = _grid_worker(engine)
    base = live_server(create_app(engine))
    context = _phone(browser, w, size)
    try:
        page = context.new_page()
        _login(page, base, w["username"], w["password"], "/m")
        page.locator('#ga-glance[data-source="server"]').wait_for(timeout=20_000)
        _installed(page)
        held: list = []
        context.route("**/v1/locate?*", lambda route: held.append(route))
        page.reload(wait_until="domcontentloaded")
        for state in ("cache", "server"):  # the cached answer with its note, then the server's
            page.locator(f'#ga-glance[data-source="{state}"]').wait_for(timeout=20_000)
            for sel in ("#ga-grid-name", "#ga-match", '#ga-key li[data-role="grid_chief"] a.call',
                        '#ga-key li[data-role="grid_worker_fulltime"]', "#ga-report", "#ga-locate"):
                box = page.locator(sel).bounding_box()
                assert box is not None and box["y"] + box["height"] <= size[1], (state, sel, box)
            if state == "cache":
                page.screenshot(path=str(SHOTS / f"mobile_sw_cached_{size[0]}x{size[1]}.png"))
                while not held:
                    page.wait_for_timeout(50)
                held.pop().continue_()
        page.locator('#ga-map[data-drawn="server"] .ga-label').first.wait_for(timeout=20_000)
        page.evaluate("window.gaPage.ready.then(() => true)")
        for target in page.locator("#ga-key a.call, #ga-report, #ga-locate, #ga-find, #ga-mine a.case").all():
            assert target.bounding_box()["height"] >= 44
        assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
        labels = [b for b in (lab.bounding_box() for lab in page.locator("#ga-map .ga-label").all()) if b]
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                apart = (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                         or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])
                assert apart, (a, b)
        page.screenshot(path=str(SHOTS / f"mobile_sw_glance_{size[0]}x{size[1]}.png"))
        page.screenshot(path=str(SHOTS / f"mobile_sw_full_{size[0]}x{size[1]}.png"), full_page=True)
    finally:
        context.close()


def test_a_draft_from_before_per_user_drafts_is_kept_for_its_user(engine, browser, live_server):
    """Drafts typed before they were kept per user (one bare key) are adopted by their own user, not by another."""
    from api.main import create_app

    w = _grid_worker(engine)
    base = live_server(create_app(engine))
    report = f"{base}/m/report?lon={w['x']}&lat={w['y']}&coordsys=wgs84"
    context = _phone(browser, w)
    try:
        page = context.new_page()
        _login(page, base, w["username"], w["password"], "/m")
        page.goto(report, wait_until="networkidle")
        old = {"user": "someone-else", "description": "别人的旧草稿", "point": None}
        page.evaluate("d => localStorage.setItem('gridatlas.report.draft', JSON.stringify(d))", old)
        page.reload(wait_until="networkidle")
        page.wait_for_timeout(300)  # the restore has run
        assert page.locator("#ga-desc").input_value() == ""
        page.evaluate("d => localStorage.setItem('gridatlas.report.draft', JSON.stringify(d))",
                      {**old, "user": w["username"], "description": "升级前的草稿"})
        page.reload(wait_until="networkidle")
        _wait(page, "document.querySelector('#ga-desc').value.length > 0")
        assert page.locator("#ga-desc").input_value() == "升级前的草稿"
        assert page.evaluate("localStorage.getItem('gridatlas.report.draft')") is None  # moved to the user's key
        page.reload(wait_until="networkidle")
        _wait(page, "document.querySelector('#ga-desc').value.length > 0")
        assert page.locator("#ga-desc").input_value() == "升级前的草稿"
    finally:
        context.close()
