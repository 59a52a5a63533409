"""Incident photos: stored under the data directory with magic bytes checked, limits from the settings, served
only to callers whose jurisdiction contains the case, idempotent on re-sent bytes, listed in the case history."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import text

from api.deps import settings_dep
from geo.settings import Settings


def _jpeg(seed: int, size=(64, 48)) -> bytes:
    img = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 120))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


@pytest.fixture
def photo_app(app, tmp_path):
    settings = Settings(photo_dir=tmp_path / "photos", photo_max_bytes=50_000, photo_max_per_stage=3)
    app.dependency_overrides[settings_dep] = lambda: settings
    return settings


@pytest.fixture
def case(client, db_session, make_user):
    """An incident reported by a worker of a grid, plus a worker of another grid."""
    rows = db_session.execute(text(
        "SELECT g.code, ST_X(ST_PointOnSurface(g.geom)) x, ST_Y(ST_PointOnSurface(g.geom)) y "
        "FROM current_grids g ORDER BY g.code LIMIT 2")).all()
    (code, x, y), (other_code, _, _) = rows
    worker = make_user("worker", code)
    other = make_user("worker", other_code)
    r = client.post("/v1/incidents", headers=worker["headers"],
                    json={"lon": x, "lat": y, "class_code": _class_code(db_session), "source": "patrol"})
    assert r.status_code == 201, r.text
    return {"id": r.json()["id"], "worker": worker, "other": other}


def _class_code(db_session) -> str:
    return db_session.execute(text("SELECT code FROM incident_classes WHERE major_code IS NOT NULL "
                                   "ORDER BY code LIMIT 1")).scalar_one()


def test_photos_are_kept_checked_and_served_to_the_case_jurisdiction(client, photo_app, case):
    base, h = f"/v1/incidents/{case['id']}/photos", case["worker"]["headers"]
    first, second = _jpeg(1), _jpeg(2)
    r = client.post(base + "?taken_at=2026-03-01T09:30:00%2B08:00", content=first,
                    headers={**h, "Content-Type": "image/jpeg"})
    assert r.status_code == 201, r.text
    p1 = r.json()
    assert p1["size_bytes"] == len(first) and p1["stage"] == "report"
    assert p1["taken_at"].startswith("2026-03-01T01:30:00")
    # The file lies under the configured data directory, with exactly the bytes sent.
    stored = list((photo_app.photo_dir).rglob("*.jpg"))
    assert [f.read_bytes() for f in stored] == [first]
    # Re-sending the same bytes (a phone retrying after a lost answer) adds nothing.
    again = client.post(base, content=first, headers={**h, "Content-Type": "image/jpeg"})
    assert again.status_code == 200 and again.json()["id"] == p1["id"]
    assert client.post(base, content=second, headers={**h, "Content-Type": "image/jpeg"}).status_code == 201

    listed = client.get(base, headers=h).json()["items"]
    assert [p["id"] for p in listed][0] == p1["id"] and len(listed) == 2
    got = client.get(p1["url"], headers=h)
    assert got.status_code == 200 and got.content == first and got.headers["content-type"] == "image/jpeg"
    # The case history lists the photos.
    history = client.get(f"/v1/incidents/{case['id']}", headers=h).json()["history"]
    assert [e["detail"]["photo_id"] for e in history if e["action"] == "photo"] == [p["id"] for p in listed]

    # Another grid's worker sees neither the list nor the bytes, nor may add one; anonymous callers neither.
    o = case["other"]["headers"]
    assert client.get(base, headers=o).status_code == 403
    assert client.get(p1["url"], headers=o).status_code == 403
    assert client.get(p1["url"]).status_code == 401
    assert client.post(base, content=_jpeg(3), headers={**o, "Content-Type": "image/jpeg"}).status_code == 403


def test_photos_refused_by_type_magic_size_and_count(client, photo_app, case):
    base, h = f"/v1/incidents/{case['id']}/photos", case["worker"]["headers"]

    def post(data: bytes, ctype: str):
        return client.post(base, content=data, headers={**h, "Content-Type": ctype})

    r = post(b"GIF89a" + b"\0" * 100, "image/gif")
    assert r.status_code == 415 and r.json()["type"].endswith("/unsupported-photo-type")
    r = post(b"<html>not a photo</html>", "image/jpeg")  # declared JPEG, the magic bytes say otherwise
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-photo")
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert post(png.getvalue(), "image/jpeg").status_code == 422  # a PNG declared as JPEG
    big = _jpeg(5, size=(1600, 1200)) + b"\0" * 60_000
    r = post(big, "image/jpeg")
    assert r.status_code == 413 and r.json()["max_bytes"] == 50_000
    assert post(png.getvalue(), "image/png").status_code == 201
    assert post(_jpeg(6), "image/jpeg").status_code == 201
    assert post(_jpeg(7), "image/jpeg").status_code == 201
    r = post(_jpeg(8), "image/jpeg")  # a fourth report photo
    assert r.status_code == 422 and r.json()["max_photos"] == 3
    assert len(list(photo_app.photo_dir.rglob("*.*"))) == 3  # nothing refused was written
    assert client.post("/v1/incidents/999999999/photos", content=_jpeg(9),
                       headers={**h, "Content-Type": "image/jpeg"}).status_code in (403, 404)
