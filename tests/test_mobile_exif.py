"""A photo's EXIF position and time (issue 16, item 3): read in the page before compression strips them, offered as
the report's position and time, and kept by the server (the report's time, each photo's taken_at)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import uuid
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin
from sqlalchemy import text

from tests.test_mobile_offline import _login, _wait
from tests.test_mobile_pin import _phone, _worker
from tests.test_mobile_places import _compound_with_building_3

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parents[1] / "maps" / "static" / "mobile"


def _dms(value: float) -> tuple:
    d = int(value)
    m = int((value - d) * 60)
    s = Fraction((value - d - m / 60) * 3600).limit_denominator(10000)
    return tuple(TiffImagePlugin.IFDRational(v.numerator, v.denominator) for v in (Fraction(d), Fraction(m), s))


def exif_jpeg(lon: float | None, lat: float | None, when: str | None, offset: str | None = "+08:00",
              size=(1600, 1200), seed=3) -> bytes:
    """A camera-like JPEG with DateTimeOriginal (+ OffsetTimeOriginal) and GPS, as a phone writes them."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "GridAtlas test camera"
    if when:
        exif[0x0132] = "2001:01:01 00:00:00"  # the file's change time: not the moment taken
        sub = exif.get_ifd(0x8769)
        sub[0x9003] = when
        if offset:
            sub[0x9011] = offset
    if lon is not None and lat is not None:
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = ("N" if lat >= 0 else "S"), _dms(abs(lat))
        gps[3], gps[4] = ("E" if lon >= 0 else "W"), _dms(abs(lon))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92, exif=exif)
    return out.getvalue()


def _parse(browser, blobs: list[bytes]) -> list[dict]:
    context = browser.new_context(timezone_id="Asia/Shanghai")
    try:
        page = context.new_page()
        page.set_content("<html><body></body></html>")
        for name in ("queue.js", "exif.js"):
            page.add_script_tag(path=str(STATIC / name))
        return page.evaluate("bs => bs.map(b => GA.parseExif(Uint8Array.from(atob(b), c => c.charCodeAt(0)).buffer))",
                             [base64.b64encode(b).decode() for b in blobs])
    finally:
        context.close()


def test_exif_parser(browser, tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    small = (64, 48)
    full = exif_jpeg(113.0907995, 29.3723958, "2026:11:30 08:15:42", size=small)
    blobs = [
        full,
        exif_jpeg(-0.1275, -51.5072, "2026:07:01 23:59:59", offset="-03:00", size=small),  # S, W, another offset
        exif_jpeg(None, None, "2026:11:30 08:15:42", offset=None, size=small),  # no GPS, no offset: the phone's zone
        exif_jpeg(None, None, None, size=small),
        png.getvalue(),
        full[:200],  # truncated inside the EXIF block
        bytes(np.random.default_rng(1).integers(0, 255, 5000, dtype=np.uint8)),
        b"",
    ]
    got = _parse(browser, blobs)
    assert got[0]["lon"] == pytest.approx(113.0907995, abs=1e-6)
    assert got[0]["lat"] == pytest.approx(29.3723958, abs=1e-6)
    assert got[0]["taken_at"] == "2026-11-30T08:15:42+08:00"
    assert got[1]["lon"] == pytest.approx(-0.1275, abs=1e-6) and got[1]["lat"] == pytest.approx(-51.5072, abs=1e-6)
    assert got[1]["taken_at"] == "2026-07-01T23:59:59-03:00"
    assert got[2] == {"lon": None, "lat": None, "taken_at": "2026-11-30T08:15:42+08:00"}
    for g in got[3:]:
        assert g == {"lon": None, "lat": None, "taken_at": None}


def test_report_takes_the_photos_position_and_time(engine, browser, live_server, tmp_path):
    from api.deps import settings_dep
    from api.main import create_app
    from geo.settings import Settings

    ref = _compound_with_building_3(engine)
    with engine.connect() as conn:
        class_code = conn.execute(text("SELECT code FROM incident_classes WHERE major_code IS NOT NULL "
                                       "ORDER BY code LIMIT 1")).scalar_one()
        # the building is where the photo was taken; the form opens at the compound's point
        bx, by = conn.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM buildings "
                                   "WHERE id = :i) s"), {"i": ref["bid"]}).one()
        kx, ky = conn.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM compounds "
                                   "WHERE id = :i) s"), {"i": ref["kid"]}).one()
    taken = (dt.datetime.now(dt.timezone(dt.timedelta(hours=8))) - dt.timedelta(hours=3)).replace(microsecond=0)
    photo = tmp_path / "exif.jpg"
    photo.write_bytes(exif_jpeg(bx, by, taken.strftime("%Y:%m:%d %H:%M:%S"), size=(2400, 1800)))
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(exif_jpeg(None, None, None, seed=4))
    username, password = _worker(engine, ref["grid"])
    settings = Settings(photo_dir=tmp_path / "photos")
    app = create_app(engine)
    app.dependency_overrides[settings_dep] = lambda: settings
    base = live_server(app)
    context = _phone(browser)
    errors = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        _login(page, base, username, password, quote(f"/m/report?lon={kx}&lat={ky}&coordsys=wgs84", safe="/"))
        page.wait_for_selector("#ga-form")
        page.set_input_files("#ga-photos", [str(plain)])
        _wait(page, "window.gaReport.photos().length === 1")
        assert page.locator("#ga-exif").is_hidden()  # nothing to offer
        page.set_input_files("#ga-photos", [str(photo)])
        _wait(page, "window.gaReport.photos().length === 2")
        box = page.locator("#ga-exif")
        assert box.is_visible() and "拍摄位置" in box.inner_text() and "拍摄时间" in box.inner_text()
        assert taken.strftime("%Y-%m-%d %H:%M") in box.inner_text()
        page.screenshot(path=str(Path(__file__).resolve().parents[1] / "var" / "screenshots" / "phone_exif_390.png"),
                        full_page=True)
        page.click("#ga-exif-pos")
        _wait(page, f"Math.abs(window.gaReport.point().lon - {bx}) < 1e-6 && "
                    f"Math.abs(window.gaReport.point().lat - {by}) < 1e-6")
        page.click("#ga-exif-time")
        assert page.evaluate("window.gaReport.reportedAt()") == taken.isoformat()
        marker = f"照片位置 {uuid.uuid4().hex[:6]}"
        page.select_option("#ga-class", class_code)
        page.fill("#ga-desc", marker)
        page.click("#ga-submit")
        page.locator("#ga-status").filter(has_text="已上报").wait_for(timeout=20_000)
        with engine.connect() as conn:
            inc = conn.execute(text("SELECT id, reported_at, building_id, lon, lat FROM incidents "
                                    "WHERE description = :d"),
                               {"d": marker}).mappings().one()
            kept = conn.execute(text("SELECT taken_at, size_bytes, path FROM incident_photos WHERE incident_id = :i "
                                     "ORDER BY id"), {"i": inc["id"]}).mappings().all()
        assert inc["reported_at"] == taken and inc["building_id"] == ref["bid"]
        assert inc["lon"] == pytest.approx(bx, abs=1e-6)
        assert len(kept) == 2 and kept[1]["taken_at"] == taken
        # the compressed copy the server keeps has no EXIF (no position leaks with the picture)
        with Image.open(settings.photo_dir / kept[1]["path"]) as im:
            assert not im.getexif().get_ifd(0x8825)
    finally:
        context.close()
    assert errors == []
