"""After-photos (处置照片, issue 16 item 3) in Chromium on a phone: the case page lists the photos before and after
handling and the history; the worker adds after photos, also without signal (queued, sent when back online)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.test_mobile_exif import exif_jpeg
from tests.test_mobile_offline import _login, _outbox_len, _wait
from tests.test_mobile_pin import _phone, _worker
from tests.test_mobile_places import _compound_with_building_3

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"


def _new_case(page, x: float, y: float, class_code: str, photo: bytes) -> int:
    """A report with one photo, filed through the API from the signed-in page (its cookie)."""
    body = {"lon": x, "lat": y, "class_code": class_code, "description": f"占道经营 {uuid.uuid4().hex[:6]}"}
    return page.evaluate(
        """async ([body, bytes]) => {
             const r = await fetch('/v1/incidents', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                     body: JSON.stringify(body)});
             const id = (await r.json()).id;
             const p = await fetch(`/v1/incidents/${id}/photos?stage=report`, {method: 'POST',
                 headers: {'Content-Type': 'image/jpeg'}, body: new Uint8Array(bytes)});
             if (p.status !== 201) throw new Error('photo ' + p.status);
             return id; }""", [body, list(photo)])


@pytest.mark.parametrize("size", [(390, 844), (360, 640)])
def test_after_photos_from_the_case_page(engine, browser, live_server, tmp_path, size):
    from api.deps import settings_dep
    from api.main import create_app
    from geo.settings import Settings

    ref = _compound_with_building_3(engine)
    with engine.connect() as conn:
        class_code = conn.execute(text("SELECT code FROM incident_classes WHERE major_code IS NOT NULL "
                                       "ORDER BY code LIMIT 1")).scalar_one()
        x, y = conn.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM buildings "
                                 "WHERE id = :i) s"), {"i": ref["bid"]}).one()
    username, password = _worker(engine, ref["grid"])
    settings = Settings(photo_dir=tmp_path / "photos")
    app = create_app(engine)
    app.dependency_overrides[settings_dep] = lambda: settings
    base = live_server(app)
    after = []
    for i in range(3):
        path = tmp_path / f"after{i}.jpg"
        path.write_bytes(exif_jpeg(x, y, f"2026:12:0{i + 1} 10:00:00", size=(1800, 1200), seed=10 + i))
        after.append(path)
    context = _phone(browser, size)
    errors = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        _login(page, base, username, password, "/m")
        case = _new_case(page, x, y, class_code, exif_jpeg(None, None, None, size=(64, 48)))
        page.goto(f"{base}/m/cases/{case}", wait_until="networkidle")
        assert page.locator("#ga-before img").count() == 1 and page.locator("#ga-after img").count() == 0
        # two after photos, sent at once
        page.set_input_files("#ga-after-photos", [str(p) for p in after[:2]])
        page.locator("#ga-after img").nth(1).wait_for(timeout=30_000)  # the page reloads once they are kept
        page.wait_for_load_state("networkidle")
        assert page.evaluate("[...document.querySelectorAll('#ga-photos img')].every(i => i.naturalWidth > 0)")
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT stage, size_bytes, taken_at FROM incident_photos WHERE incident_id = :i "
                                     "ORDER BY id"), {"i": case}).mappings().all()
        assert [k["stage"] for k in kept] == ["report", "handling", "handling"]
        assert all(k["size_bytes"] <= 500 * 1024 for k in kept)
        assert [k["taken_at"].day for k in kept[1:]] == [1, 2]  # the EXIF times, not the upload time
        history = page.locator("#ga-history li[data-action=photo]").all_inner_texts()
        assert sum("处置照片" in h for h in history) == 2 and sum("上报照片" in h for h in history) == 1
        assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
        box = page.locator("#ga-after-pick").bounding_box()
        assert box["height"] >= 44
        page.screenshot(path=str(SHOTS / f"phone_case_{size[0]}.png"), full_page=True)

        # without signal: queued, sent when the network is back
        context.set_offline(True)
        page.set_input_files("#ga-after-photos", [str(after[2])])
        page.locator("#ga-status").filter(has_text="暂存").wait_for(timeout=20_000)
        assert _outbox_len(page) == 1
        context.set_offline(False)
        page.evaluate("window.dispatchEvent(new Event('online'))")
        page.locator("#ga-after img").nth(2).wait_for(timeout=30_000)
        page.wait_for_load_state("networkidle")
        _wait(page, "GA.outbox.all().then(a => a.length === 0)")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM incident_photos WHERE incident_id = :i AND "
                                     "stage = 'handling'"), {"i": case}).scalar_one() == 3
        assert page.locator("#ga-after-pick").count() == 0  # the most allowed: no more picker
    finally:
        context.close()
    assert errors == []


def test_case_page_is_the_jurisdictions(client, make_user, engine, db_session):
    rows = db_session.execute(text("SELECT code FROM current_grids ORDER BY code LIMIT 2")).scalars().all()
    x, y = db_session.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM current_grids "
                                   "WHERE code = :c) s"), {"c": rows[0]}).one()
    class_code = db_session.execute(text("SELECT code FROM incident_classes WHERE major_code IS NOT NULL "
                                         "ORDER BY code LIMIT 1")).scalar_one()
    owner, other = make_user("worker", rows[0]), make_user("worker", rows[1])
    case = client.post("/v1/incidents", json={"lon": x, "lat": y, "class_code": class_code},
                       headers=owner["headers"]).json()["id"]
    r = client.get(f"/m/cases/{case}", headers=owner["headers"])
    assert r.status_code == 200 and "处置后" in r.text and "添加处置照片" in r.text
    assert client.get(f"/m/cases/{case}", headers=other["headers"]).status_code == 403
    assert client.get("/m/cases/999999999", headers=owner["headers"]).status_code in (403, 404)
