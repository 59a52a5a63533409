"""Hostile uploads to POST /v1/imports (issue 19 items 4 and 8): zip bombs and zip slip refused before anything is
extracted, broken CSV/XLSX and NUL bytes in file names answered 4xx problem+json, and no row changed.

Every file is made here; the bombs are small (a 64 MiB member of zeros deflates to ~64 KB).
"""

from __future__ import annotations

import io
import random
import zipfile

import pytest
from sqlalchemy import text

from geo.io import readers
from tests import io_samples as S

TABLES = ("boundary_versions", "streets", "communities", "grids", "grid_boundaries", "compounds", "buildings",
          "units", "people", "staff_assignments", "incidents")


def counts(db_session) -> dict:
    return {t: db_session.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}


def post(client, headers, layer: str, name: str, body: bytes, **form):
    return client.post("/v1/imports", headers=headers, data={"layer": layer, **form},
                       files={"file": (name, body, "application/octet-stream")})


def assert_problem(r, status: int, slug: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["status"] == status and doc["detail"]
    if slug:
        assert doc["type"].endswith("/" + slug), doc
    return doc


def shapefile_zip(tmp_path) -> bytes:
    """A valid zipped Shapefile of the sample grids (its members' bytes, to rebuild hostile archives from)."""
    return S.zipped_shapefile(S.grids(), tmp_path / "grids.zip").read_bytes()


def rezip(valid: bytes, rename=lambda n: n, extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(valid)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(rename(info.filename), src.read(info))
        for name, data in (extra or {}).items():
            dst.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def before(db_session):
    return counts(db_session)


def test_zip_bomb_is_refused_413_before_extraction(client, admin_headers, db_session, before, tmp_path):
    valid = shapefile_zip(tmp_path)
    stem = zipfile.ZipFile(io.BytesIO(valid)).namelist()[0].rsplit(".", 1)[0]
    # the .dbf replaced by 64 MiB of zeros: ~1000-fold expansion
    bomb = rezip(valid, rename=lambda n: n if not n.endswith(".dbf") else n + ".orig",
                 extra={f"{stem}.dbf": bytes(64 << 20)})
    assert len(bomb) < 1 << 20
    doc = assert_problem(post(client, admin_headers, "grids", "bomb.zip", bomb), 413, "archive-too-large")
    assert "fold" in doc["detail"] and doc["max_ratio"] == readers.ZIP_MAX_RATIO
    assert counts(db_session) == before


def test_archive_beyond_the_expanded_size_limit_is_refused(client, admin_headers, db_session, before, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(readers, "ZIP_MAX_BYTES", 2 << 20)
    noise = random.Random(7).randbytes(3 << 20)  # incompressible: no ratio alarm, only the total
    big = rezip(shapefile_zip(tmp_path), extra={"notes.bin": noise})
    doc = assert_problem(post(client, admin_headers, "grids", "big.zip", big), 413, "archive-too-large")
    assert doc["max_expanded_bytes"] == 2 << 20
    assert counts(db_session) == before


@pytest.mark.parametrize("member", ["../../etc/grids.shp", "/tmp/grids.shp", "a/../../grids.shp", "C:/grids.shp"])
def test_zip_slip_paths_are_refused(client, admin_headers, db_session, before, tmp_path, member):
    valid = shapefile_zip(tmp_path)
    stem = zipfile.ZipFile(io.BytesIO(valid)).namelist()[0].rsplit(".", 1)[0]
    hostile = rezip(valid, rename=lambda n: member[: -len(".shp")] + n[len(stem):] if n.endswith(".shp") else n)
    assert_problem(post(client, admin_headers, "grids", "slip.zip", hostile), 422, "unsafe-archive")
    assert counts(db_session) == before


GBK_STAFF = "name,phone\n张三,13800000001\n李四,13800000002\n".encode("gbk")
CASES = {
    "bom-then-gbk.csv": b"\xef\xbb\xbf" + GBK_STAFF,
    "unbalanced-quotes.csv": 'name,phone\n"张三,13800000001\n李四,13800000002\n'.encode(),
    "garbage.csv": random.Random(3).randbytes(4096),
    "empty.csv": b"",
    "blank.csv": b"\n \n",
    "not-a-zip.xlsx": b"name,phone\n\xd5\xc5\xc8\xfd,1\n",
    "truncated.xlsx": b"PK\x03\x04" + bytes(100),
}


@pytest.mark.parametrize("name", list(CASES))
def test_broken_tables_answer_422_and_change_nothing(client, admin_headers, db_session, before, name):
    doc = assert_problem(post(client, admin_headers, "staff", name, CASES[name]), 422, "unreadable-file")
    assert name in doc["detail"]  # the message names the file
    assert counts(db_session) == before


def test_a_plain_gbk_csv_is_still_read(client, admin_headers, db_session, before):
    r = post(client, admin_headers, "staff", "staff.csv", GBK_STAFF, dry_run="true")
    assert r.status_code == 200, r.text
    assert r.json()["features"] == 2 and r.json()["encoding"] == "GB18030"
    assert counts(db_session) == before


@pytest.mark.parametrize("name", ["gr\x00ids.geojson", "grids\x00.zip", "a\x01b.csv"])
def test_nul_bytes_in_the_file_name_are_refused(client, admin_headers, db_session, before, name):
    boundary = "hostileboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="layer"\r\n\r\nstaff\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: text/csv\r\n\r\n").encode() + GBK_STAFF + f"\r\n--{boundary}--\r\n".encode()
    r = client.post("/v1/imports", content=body,
                    headers={**admin_headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_problem(r, 422, "bad-filename")
    assert counts(db_session) == before


def test_an_import_with_nothing_valid_creates_no_empty_version(client, admin_headers, db_session, before, tmp_path):
    fc = S.feature_collection([({"code": S.WEST + "901", "name": "坏", "community_code": S.WEST},
                                {"type": "Polygon", "coordinates": []})])
    body = S.write_json(fc, tmp_path / "nothing.geojson").read_bytes()
    r = post(client, admin_headers, "grids", "nothing.geojson", body)
    assert r.status_code in (201, 422), r.text
    assert counts(db_session) == before
