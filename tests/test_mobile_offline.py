"""The phone offline (issue 16): the jurisdiction pack and the page's offline locate give the server's answers on
points; the installed service worker opens /m and /m/report with the network cut; a report with two photos filed
offline reaches the server, with its original report time and the photos compressed on the phone, when the network
is back; a report filed while the session has expired waits in the outbox and goes after the next login."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.test_mobile_page import _known_building

LOCATE_JS = Path(__file__).resolve().parents[1] / "maps" / "static" / "mobile" / "locate.js"
PHONE = {"width": 390, "height": 844}


def _grid_points(engine, n_buildings=80, n_vertices=60):
    """Points of every kind: inside buildings, on grid vertices (shared edges), 10-25 m off vertices, far away."""
    with engine.connect() as conn:
        inside = conn.execute(text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM buildings ORDER BY id) s "
            "LIMIT :n"), {"n": n_buildings}).all()
        vertices = conn.execute(text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT (ST_DumpPoints(geom)).geom p, code FROM current_grids) s "
            "ORDER BY code, ST_X(p), ST_Y(p)")).all()
    rng = np.random.default_rng(16)
    picked = [vertices[i] for i in rng.choice(len(vertices), size=min(n_vertices, len(vertices)), replace=False)]
    off = [(x + s * rng.uniform(1e-4, 2.5e-4), y + t * rng.uniform(1e-4, 2.5e-4))
           for (x, y), s, t in zip(picked, rng.choice([-1, 1], len(picked)), rng.choice([-1, 1], len(picked)),
                                   strict=True)]
    x0, y0 = inside[0]
    far = [(x0 + 0.5, y0 + 0.5), (x0 - 0.3, y0)]
    return [(float(x), float(y)) for x, y in [*inside, *picked, *off, *far]]


def test_pack_holds_the_workers_grids_with_staff(client, make_user, engine):
    x, y, ref, names = _known_building(engine)
    with engine.connect() as conn:
        code = conn.execute(text("SELECT code FROM grids WHERE id = :i"), {"i": ref["grid"]}).scalar_one()
    worker = make_user("worker", code)
    assert client.get("/v1/mobile/jurisdiction").status_code == 401
    pack = client.get("/v1/mobile/jurisdiction", headers=worker["headers"]).json()
    assert [g["code"] for g in pack["grids"]] == [code]
    grid = pack["grids"][0]
    assert grid["name"] == names["grid"] and grid["community"]["name"] == names["community"]
    assert any(s["role"] == "grid_chief" and s["phone"] for s in grid["staff"])  # own jurisdiction: phones
    assert pack["version"]["valid_from"] and pack["accuracy_m"] > 0


def test_offline_locate_gives_the_servers_answers(client, admin_headers, engine, browser):
    pack = client.get("/v1/mobile/jurisdiction", headers=admin_headers).json()
    points = _grid_points(engine)
    server = []
    for x, y in points:
        r = client.get("/v1/locate", params={"lon": x, "lat": y})
        body = r.json()
        server.append((body["grid"]["code"], body["match"], body["distance_m"]) if r.status_code == 200
                      else (None, None, None))
    kinds = {s[1] for s in server}
    assert {"inside", "boundary", "nearest", None} <= kinds, kinds  # the points exercise every rule
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content("<html><body></body></html>")
        page.add_script_tag(path=str(LOCATE_JS))
        offline = page.evaluate(
            "([pack, pts]) => pts.map(p => { const a = GA.locateOffline(pack, p[0], p[1]);"
            " return [a.grid ? a.grid.code : null, a.match, a.distance_m]; })", [pack, points])
    finally:
        context.close()
    for (x, y), s, o in zip(points, server, offline, strict=True):
        assert (s[0], s[1]) == (o[0], o[1]), ((x, y), s, o)
        if s[1] == "nearest":
            assert o[2] == pytest.approx(s[2], abs=0.5), ((x, y), s, o)


# ------------------------------------------------------------------------------------------- the whole phone

def _photo(path: Path, seed: int) -> Path:
    """A camera-sized JPEG (2400 x 1800, well over 500 KB): gradients and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:1800, 0:2400]
    base = np.stack([(xx / 2400 * 255), (yy / 1800 * 255), ((xx + yy) % 256)], axis=-1)
    img = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, "JPEG", quality=95)
    assert path.stat().st_size > 1_000_000
    return path


def _wait(page, js: str, timeout_s: float = 30) -> None:
    """Poll `js` (an expression, possibly a promise) until it is true (the pages' CSP forbids string eval)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"(async () => !!({js}))()"):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {js}"
        page.wait_for_timeout(100)


def _login(page, base: str, username: str, password: str, next_path: str) -> None:
    page.goto(f"{base}/login?next={next_path}")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def _outbox_len(page) -> int:
    return page.evaluate("GA.outbox.all().then(a => a.length)")


def test_phone_offline_report_with_photos(engine, browser, live_server, tmp_path):
    from api.deps import settings_dep
    from api.main import create_app
    from geo.access.users import create_user
    from geo.settings import Settings
    from tests.browser import SCREENSHOT_DIR

    x, y, ref, names = _known_building(engine)
    with engine.connect() as conn:
        code = conn.execute(text("SELECT code FROM grids WHERE id = :i"), {"i": ref["grid"]}).scalar_one()
        class_code = conn.execute(text("SELECT code FROM incident_classes WHERE major_code IS NOT NULL "
                                       "ORDER BY code LIMIT 1")).scalar_one()
    username, password = f"phone-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with Session(engine) as s:
        create_user(s, username, password, "worker", code)
        s.commit()
    settings = Settings(photo_dir=tmp_path / "photos")
    app = create_app(engine)
    app.dependency_overrides[settings_dep] = lambda: settings
    base = live_server(app)
    photos = [_photo(tmp_path / "a.jpg", 1), _photo(tmp_path / "b.jpg", 2)]
    shots = Path("/tmp/gridatlas-phone")
    shots.mkdir(exist_ok=True)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)

    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                  locale="zh-CN", geolocation={"longitude": x, "latitude": y, "accuracy": 8},
                                  permissions=["geolocation"], service_workers="allow")
    external, errors = [], []
    try:
        page = context.new_page()
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith((base, "data:", "blob:"))
                else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        _login(page, base, username, password, "/m")
        assert page.url.startswith(base + "/m")
        page.locator("#ga-grid-name").filter(has_text=names["grid"]).wait_for(timeout=20_000)
        page.evaluate("window.gaPage.ready")
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        _wait(page, "!!navigator.serviceWorker.controller")  # clients.claim(): this page is controlled
        page.locator("#ga-grid-name").filter(has_text=names["grid"]).wait_for(timeout=20_000)
        # One glance: grid, match, the grid chief's and the full-time worker's call buttons above the fold.
        for sel in ("#ga-grid-name", "#ga-match", '#ga-key li[data-role="grid_chief"]',
                    '#ga-key li[data-role="grid_worker_fulltime"]', "#ga-report", "#ga-locate"):
            box = page.locator(sel).bounding_box()
            assert box is not None and box["y"] + box["height"] <= PHONE["height"], (sel, box)
        calls = page.locator("#ga-key a.call")
        assert calls.count() >= 1
        for i in range(calls.count()):
            box = calls.nth(i).bounding_box()
            assert box["height"] >= 44 and box["width"] >= 44 and box["y"] + box["height"] <= PHONE["height"]
        page.screenshot(path=str(shots / "phone_online_390.png"))
        # The report form once online (the worker opens it here every day): the service worker keeps it.
        page.click("#ga-report")
        page.wait_for_load_state("networkidle")
        assert page.url.startswith(base + "/m/report")
        page.go_back(wait_until="networkidle")

        # ---- offline: reload, locate from the pack
        context.set_offline(True)
        page.reload(wait_until="domcontentloaded")
        page.locator("#ga-grid-name").filter(has_text=names["grid"]).wait_for(timeout=20_000)
        assert "离线" in page.locator("#ga-match").inner_text()
        assert "边界版本" in page.locator("#ga-status").inner_text()
        assert "下载于" in page.locator("#ga-status").inner_text()
        page.screenshot(path=str(shots / "phone_offline_390.png"))
        # An offline tap far away never shows the previous grid as the answer.
        context.set_geolocation({"longitude": x + 0.5, "latitude": y + 0.5, "accuracy": 8})
        page.click("#ga-locate")
        page.locator("#ga-grid-name").filter(has_text="不在缓存的辖区内").wait_for(timeout=10_000)
        assert page.locator("#ga-match").inner_text() == "" and page.locator("#ga-key li").count() == 0
        assert "最近的网格" in page.locator("#ga-status").inner_text()  # named as the nearest, not as the answer
        context.set_geolocation({"longitude": x, "latitude": y, "accuracy": 8})
        page.click("#ga-locate")
        page.locator("#ga-grid-name").filter(has_text=names["grid"]).wait_for(timeout=10_000)

        # ---- offline: the report form from the cache, a draft that survives a reload, two photos
        page.click("#ga-report")
        page.wait_for_selector("#ga-form")
        marker = f"楼道堆物 {uuid.uuid4().hex[:6]}"
        page.select_option("#ga-class", class_code)
        page.fill("#ga-desc", marker)
        page.set_input_files("#ga-photos", [str(p) for p in photos])
        _wait(page, "window.gaReport.photos().length === 2")
        page.wait_for_timeout(300)  # the draft's IndexedDB write
        page.reload(wait_until="domcontentloaded")
        _wait(page, "document.querySelector('#ga-desc').value.length > 0 && window.gaReport.photos().length === 2")
        assert page.locator("#ga-desc").input_value() == marker
        sizes = page.evaluate("window.gaReport.photos().map(p => p.blob.size)")
        assert all(0 < n <= 500 * 1024 for n in sizes), sizes
        page.screenshot(path=str(shots / "phone_report_offline.png"), full_page=True)
        page.click("#ga-submit")
        page.locator("#ga-status").filter(has_text="暂存").wait_for(timeout=10_000)
        queued = page.evaluate("GA.outbox.all()")
        assert len(queued) == 1
        reported_at = dt.datetime.fromisoformat(queued[0]["body"]["reported_at"])
        time.sleep(1.2)  # the server's clock moves on: the report keeps its own time

        # ---- online again: sent in order with the original time and the photos
        context.set_offline(False)
        deadline = time.monotonic() + 30
        while _outbox_len(page) and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert _outbox_len(page) == 0
        with engine.connect() as conn:
            inc = conn.execute(text("SELECT id, reported_at, registered_at, reporter FROM incidents "
                                    "WHERE description = :d"), {"d": marker}).mappings().one()
            kept = conn.execute(text("SELECT size_bytes, media_type, path, uploaded_at FROM incident_photos "
                                     "WHERE incident_id = :i ORDER BY id"), {"i": inc["id"]}).mappings().all()
        assert inc["reported_at"] == reported_at
        assert len(kept) == 2 and all(k["media_type"] == "image/jpeg" and k["size_bytes"] <= 500 * 1024 for k in kept)
        assert all(k["uploaded_at"] > reported_at for k in kept)
        for k in kept:
            data = (settings.photo_dir / k["path"]).read_bytes()
            assert data[:3] == b"\xff\xd8\xff" and len(data) == k["size_bytes"]
        # The worker sees them listed and served; the case history lists them.
        listed = page.evaluate(f"fetch('/v1/incidents/{inc['id']}/photos').then(r => r.json())")["items"]
        assert len(listed) == 2
        status = page.evaluate(f"fetch('{listed[0]['url']}').then(r => r.status)")
        assert status == 200
        history = page.evaluate(f"fetch('/v1/incidents/{inc['id']}').then(r => r.json())")["history"]
        assert sum(1 for e in history if e["action"] == "photo") == 2

        # ---- the session expires mid-typing: nothing is lost, it goes after the next login
        page.goto(base + f"/m/report?lon={x}&lat={y}&coordsys=wgs84", wait_until="networkidle")
        second = f"路灯不亮 {uuid.uuid4().hex[:6]}"
        page.select_option("#ga-class", class_code)
        page.fill("#ga-desc", second)
        context.clear_cookies()
        page.click("#ga-submit")
        page.locator("#ga-status").filter(has_text="登录已过期").wait_for(timeout=10_000)
        assert _outbox_len(page) == 1
        page.click("#ga-status a")  # 重新登录
        page.fill("#username", username)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        assert page.url.startswith(base + "/m/report")
        deadline = time.monotonic() + 30
        while _outbox_len(page) and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        assert _outbox_len(page) == 0
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM incidents WHERE description = :d"),
                                {"d": second}).scalar_one() == 1
        page.screenshot(path=str(shots / "phone_after_relogin.png"), full_page=True)
    finally:
        context.close()
    assert [u for u in external if "127.0.0.1" not in u] == []
    assert errors == []


@pytest.mark.parametrize("size", [(360, 640)])
def test_one_glance_on_a_small_phone(engine, browser, live_server, size):
    from api.main import create_app

    x, y, ref, names = _known_building(engine)
    base = live_server(create_app(engine))
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True, locale="zh-CN",
                                  geolocation={"longitude": x, "latitude": y, "accuracy": 8},
                                  permissions=["geolocation"], service_workers="block")
    try:
        page = context.new_page()
        page.goto(base + "/m", wait_until="networkidle")
        page.locator("#ga-grid-name").filter(has_text=names["grid"]).wait_for(timeout=20_000)
        for sel in ("#ga-grid-name", "#ga-match", '#ga-key li[data-role="grid_chief"] a.call',
                    '#ga-key li[data-role="grid_worker_fulltime"]', "#ga-report"):
            box = page.locator(sel).bounding_box()
            assert box is not None and box["y"] + box["height"] <= size[1], (sel, box)
        for target in page.locator("#ga-key a.call, #ga-report, #ga-locate").all():
            assert target.bounding_box()["height"] >= 44
        assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
        page.screenshot(path=f"/tmp/gridatlas-phone/phone_{size[0]}x{size[1]}.png")
    finally:
        context.close()


def test_refusals_in_chinese_with_names_when_asked(client, make_user, engine, db_session):
    rows = db_session.execute(text(
        "SELECT g.code, g.name, ST_X(ST_PointOnSurface(g.geom)) x, ST_Y(ST_PointOnSurface(g.geom)) y "
        "FROM current_grids g ORDER BY g.code LIMIT 2")).all()
    (own_code, own_name, _, _), (other_code, other_name, x, y) = rows
    worker = make_user("worker", own_code)
    class_code = db_session.execute(text("SELECT code FROM incident_classes WHERE major_code IS NOT NULL "
                                         "ORDER BY code LIMIT 1")).scalar_one()
    body = {"lon": x, "lat": y, "class_code": class_code, "source": "patrol"}
    english = client.post("/v1/incidents", json=body, headers=worker["headers"])
    assert english.status_code == 403 and other_code in english.json()["detail"]
    assert "Content-Language" not in english.headers
    r = client.post("/v1/incidents", json=body, headers={**worker["headers"], "Accept-Language": "zh-CN,zh;q=0.9"})
    assert r.status_code == 403 and r.headers["Content-Language"] == "zh-CN"
    p = r.json()
    assert p["type"].endswith("/out-of-jurisdiction") and p["title"] == "无权操作"
    assert p["detail"] == f"该位置属于 {other_name}（{other_code}），不在您负责的 {own_name}（{own_code}）内。"
    assert p["detail_en"] == english.json()["detail"] and p["required_jurisdiction"] == other_code
    # English first, Chinese second: English.
    r = client.post("/v1/incidents", json=body, headers={**worker["headers"], "Accept-Language": "en, zh-CN;q=0.5"})
    assert r.json()["detail"] == english.json()["detail"]
