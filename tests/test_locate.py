"""Locate: the in-memory index against the PostGIS reference, the shared-edge rule, nearest/404, coordinate systems,
past boundary versions, batch CSV/GeoJSON with bad rows, and the atomic swap under concurrent lookups.

Two data sets: a hand-drawn district (exact rectangles, so points on shared edges and vertices are exact) in its
own database, and the suite's synthetic district (`engine`, scale 0.05) for the 100,000-point comparison.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import threading
import time
import uuid
from collections import OrderedDict

import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from geo.locate.holder import IndexHolder
from geo.locate.index import LocateIndex, read_frames
from geo.locate.reference import agreement_points, compare_with_reference, locate_sql, locate_sql_many
from geo.spatial.coords import wgs84_to_bd09, wgs84_to_gcj02
from geo.store import db

# ----------------------------------------------------------------------------------------- hand-drawn district
# Layout units of U degrees from (X0, Y0): a street [0,4]x[0,2]; communities A [0,2]x[0,2], B [2,4]x[0,2];
# grids A1 [0,1]x[0,2], A2 [1,2]x[0,2], B1 [2,4]x[0,1], B2 [2,4]x[1,2]; A1 holds two micro-grids; a compound and a
# building inside A1. Grid A1 has the smallest code but the larger id, so "smallest code wins" is not "smallest id".
X0, Y0, U = 120.60, 31.30, 0.002
TZ = dt.timezone(dt.timedelta(hours=8))
V1 = dt.datetime(2025, 1, 1, tzinfo=TZ)
STREET = "320505001"
A, B = STREET + "001", STREET + "002"
A1, A2, B1, B2 = A + "001", A + "002", B + "001", B + "002"
GRID_IDS = {A2: 1, A1: 2, B1: 3, B2: 4}


def X(u: float) -> float:
    return X0 + u * U


def Y(v: float) -> float:
    return Y0 + v * U


def rect(x0, y0, x1, y1) -> str:
    """EWKT of the layout rectangle; corners computed once so shared edges have identical coordinates."""
    a, b, c, d = X(x0), Y(y0), X(x1), Y(y1)
    return f"SRID=4326;MULTIPOLYGON((({a!r} {b!r},{c!r} {b!r},{c!r} {d!r},{a!r} {d!r},{a!r} {b!r})))"


HAND_SQL = [
    ("INSERT INTO boundary_versions (id, valid_from, label) VALUES (1, :v1, '初始版本')", {}),
    (f"INSERT INTO streets (id, code, name) VALUES (1, '{STREET}', '测试街道')", {}),
    ("INSERT INTO street_boundaries (id, street_id, version_id, valid_from, geom) "
     "VALUES (1, 1, 1, :v1, ST_GeomFromEWKT(:g))", {"g": rect(0, 0, 4, 2)}),
    (f"INSERT INTO communities (id, code, name, street_id) VALUES (1, '{A}', '东风社区', 1), (2, '{B}', '红旗社区', 1)",
     {}),
    ("INSERT INTO community_boundaries (id, community_id, version_id, valid_from, geom) VALUES "
     "(1, 1, 1, :v1, ST_GeomFromEWKT(:a)), (2, 2, 1, :v1, ST_GeomFromEWKT(:b))",
     {"a": rect(0, 0, 2, 2), "b": rect(2, 0, 4, 2)}),
    ("INSERT INTO grids (id, code, name, kind, community_id) VALUES "
     f"(1, '{A2}', '东风二网格', 'comprehensive', 1), (2, '{A1}', '东风一网格', 'comprehensive', 1), "
     f"(3, '{B1}', '红旗一网格', 'comprehensive', 2), (4, '{B2}', '红旗二网格', 'comprehensive', 2)", {}),
    ("INSERT INTO grid_boundaries (id, grid_id, version_id, valid_from, geom) VALUES "
     "(1, 1, 1, :v1, ST_GeomFromEWKT(:a2)), (2, 2, 1, :v1, ST_GeomFromEWKT(:a1)), "
     "(3, 3, 1, :v1, ST_GeomFromEWKT(:b1)), (4, 4, 1, :v1, ST_GeomFromEWKT(:b2))",
     {"a1": rect(0, 0, 1, 2), "a2": rect(1, 0, 2, 2), "b1": rect(2, 0, 4, 1), "b2": rect(2, 1, 4, 2)}),
    ("INSERT INTO micro_grids (id, code, name, grid_id) VALUES "
     f"(1, '{A1}01', '东风一网格第1微网格', 2), (2, '{A1}02', '东风一网格第2微网格', 2)", {}),
    ("INSERT INTO micro_grid_boundaries (id, micro_grid_id, version_id, valid_from, geom) VALUES "
     "(1, 1, 1, :v1, ST_GeomFromEWKT(:m1)), (2, 2, 1, :v1, ST_GeomFromEWKT(:m2))",
     {"m1": rect(0, 0, 1, 1), "m2": rect(0, 1, 1, 2)}),
    ("INSERT INTO compounds (id, name, kind, has_property_management, has_owners_committee, community_id, geom) "
     "VALUES (1, '幸福小区', 'commercial', true, false, 1, ST_GeomFromEWKT(:c))", {"c": rect(0.2, 0.2, 0.8, 0.8)}),
    ("INSERT INTO buildings (id, code, name, community_id, compound_id, floors, use, geom) VALUES "
     "(1, '00001', '幸福小区1号楼', 1, 1, 6, 'residential', ST_GeomFromEWKT(:b))", {"b": rect(0.3, 0.3, 0.5, 0.4)}),
    ("INSERT INTO people (id, name, phone, phone_public, party_member) VALUES "
     "(1, '张网格', '13800000001', true, true), (2, '李专职', '13800000002', false, false), "
     "(3, '王楼长', '13800000003', true, false), (4, '赵离任', '13800000004', true, false)", {}),
    ("INSERT INTO staff_assignments (id, person_id, role, target_type, grid_id, building_id, valid_from, valid_to) "
     "VALUES (1, 1, 'grid_chief', 'grid', 2, NULL, '2025-01-01', NULL), "
     "(2, 2, 'grid_worker_fulltime', 'grid', 2, NULL, '2025-01-01', NULL), "
     "(3, 3, 'building_head', 'building', NULL, 1, '2025-01-01', NULL), "
     "(4, 4, 'grid_chief', 'grid', 2, NULL, '2024-01-01', '2025-01-01')", {}),
]


def load_hand_district(engine) -> None:
    """Write the hand-drawn district into an empty migrated database."""
    with engine.begin() as conn:
        for sql, params in HAND_SQL:
            conn.execute(text(sql), {"v1": V1, **params})


@pytest.fixture(scope="module")
def hand_engine():
    """A fresh database holding only the hand-drawn district (dropped after the module)."""
    from tests.conftest import _create_database, _drop_database

    url = _create_database("gridatlas_locate")
    db.migrate(url)
    engine = db.make_engine(url)
    load_hand_district(engine)
    yield engine
    engine.dispose()
    _drop_database(url)


@pytest.fixture(scope="module")
def hand_index(hand_engine) -> LocateIndex:
    with hand_engine.connect() as conn:
        return LocateIndex.from_db(conn)


@pytest.fixture
def hand_conn(hand_engine):
    """A connection in a transaction rolled back after the test."""
    conn = hand_engine.connect()
    tx = conn.begin()
    yield conn
    tx.rollback()
    conn.close()


def holder_on(conn, **kw) -> IndexHolder:
    """A holder reading through one connection (sees the test's uncommitted rows); no background poll."""
    return IndexHolder(lambda: contextlib.nullcontext(conn), poll_seconds=None, **kw)


@pytest.fixture
def hand_client(hand_engine, hand_conn):
    """An API client on the hand-drawn district whose locate index reads inside the test transaction."""
    from api.main import create_app

    app = create_app(hand_engine)
    app.state.locate_index = holder_on(hand_conn)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _token_headers(engine, role: str, jurisdiction: str | None) -> dict:
    from api.auth import issue_token
    from geo.access.users import create_user

    with db.session_scope(engine) as session:
        user = create_user(session, f"{role}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, role, jurisdiction)
        token = issue_token(user)
    return {"Authorization": f"Bearer {token}"}


def _code(index: LocateIndex, level: str, pos) -> str | None:
    return index.levels[level].records[int(pos)]["code"] if pos >= 0 else None


# ---------------------------------------------------------------------------------------- index rules

def test_inside_gives_the_whole_chain(hand_index):
    r = hand_index.locate(X(0.4), Y(0.35))
    assert r["match"] == "inside" and r["distance_m"] == 0
    assert r["street"]["code"] == STREET and r["community"]["code"] == A
    assert r["grid"]["code"] == A1 and r["grid"]["id"] == GRID_IDS[A1]
    assert r["micro_grid"]["code"] == A1 + "01"
    assert r["compound"]["name"] == "幸福小区" and r["building"]["name"] == "幸福小区1号楼"


def test_shared_edge_goes_to_the_smallest_code_not_the_smallest_id(hand_index, hand_engine):
    # On the edge between A1 (code ...001, id 2) and A2 (code ...002, id 1).
    r = hand_index.locate(X(1), Y(1.5))
    assert r["grid"]["code"] == A1 and r["match"] == "boundary"
    with hand_engine.connect() as conn:
        ref = locate_sql(conn, X(1), Y(1.5))
    assert ref["grid"] == GRID_IDS[A1] and ref["match"] == "boundary"


def test_vertex_shared_by_four_units(hand_index, hand_engine):
    # (2, 1) is a corner of A2, B1 and B2 (and on A's and B's community edge): A2 has the smallest code there.
    r = hand_index.locate(X(2), Y(1))
    assert r["grid"]["code"] == A2 and r["match"] == "boundary"
    assert r["community"]["code"] == A
    with hand_engine.connect() as conn:
        ref = locate_sql(conn, X(2), Y(1))
    assert (ref["grid"], ref["community"], ref["match"]) == (GRID_IDS[A2], 1, "boundary")


def test_nearest_within_accuracy_then_404_beyond(hand_index, hand_engine):
    # 10 m west of the district: nearest grid is A1 at ~10 m; the chain is filled up from it.
    lon = X(0) - 10 / (111_320 * np.cos(np.radians(Y(1))))
    r = hand_index.locate(lon, Y(1.5), 30)
    assert r["match"] == "nearest" and r["grid"]["code"] == A1
    assert r["distance_m"] == pytest.approx(10, abs=0.2)
    assert r["community"]["code"] == A and r["street"]["code"] == STREET
    far = hand_index.locate(lon, Y(1.5), 5)
    assert far["grid"] is None and far["match"] is None
    assert far["nearest"]["grid"]["code"] == A1 and far["nearest"]["distance_m"] == pytest.approx(10, abs=0.2)
    with hand_engine.connect() as conn:
        ref = locate_sql(conn, lon, Y(1.5), accuracy_m=30)
        ref_far = locate_sql(conn, lon, Y(1.5), accuracy_m=5)
    assert ref["grid"] == GRID_IDS[A1] and ref["distance_m"] == pytest.approx(r["distance_m"], abs=1e-3)
    assert ref_far["grid"] is None and ref_far["nearest_id"] == GRID_IDS[A1]
    assert ref_far["nearest_m"] == pytest.approx(far["nearest"]["distance_m"], abs=1e-3)


def test_nearest_tie_goes_to_the_smallest_code(hand_index):
    # Straight south of the A2|B1 corner (2, 0): equally far from A2 and B1; A2 has the smaller code.
    r = hand_index.locate(X(2), Y(0) - 10 / 110_574, 30)
    assert r["match"] == "nearest" and r["grid"]["code"] == A2


def test_index_and_postgis_agree_on_a_lattice_through_every_edge(hand_index, hand_engine):
    # Every point of a 1/8-unit lattice (exactly on all shared edges and vertices) plus a margin outside.
    u = np.arange(-0.5, 4.5001, 0.125)
    v = np.arange(-0.5, 2.5001, 0.125)
    uu, vv = np.meshgrid(u, v)
    lon, lat = X(uu.ravel()), Y(vv.ravel())
    got = hand_index.locate_many(lon, lat, 30)
    with hand_engine.connect() as conn:
        ref = locate_sql_many(conn, lon, lat, accuracy_m=30)
    for level in ("street", "community", "grid", "micro_grid", "compound", "building"):
        ids = hand_index.levels[level].ids
        mine = np.where(got.pos[level] >= 0, ids[np.maximum(got.pos[level], 0)], -1)
        theirs = ref[f"{level}_id"].fillna(-1).to_numpy(np.int64)
        assert (mine == theirs).all(), level
    names = np.array([None, "inside", "boundary", "nearest"], dtype=object)[got.match]
    assert list(names) == [m if isinstance(m, str) else None for m in ref["match"]]
    assert (got.match == 2).sum() > 50  # the lattice really exercises shared edges


def test_single_point_path_agrees_with_the_vectorised_one(hand_index):
    rng = np.random.default_rng(3)
    lon, lat = X(rng.uniform(-1, 5, 3000)), Y(rng.uniform(-1, 3, 3000))
    lon[:200], lat[:200] = X(np.round(rng.uniform(0, 4, 200) * 4) / 4), Y(np.round(rng.uniform(0, 2, 200) * 4) / 4)
    batch = hand_index.locate_many(lon, lat, 30, nearest_beyond=True)
    for i in range(len(lon)):
        assert hand_index.locate(lon[i], lat[i], 30) == hand_index.describe(batch, i), i


# ---------------------------------------------------------------------------------------- the API

def test_get_locate_public_shows_only_public_phones(hand_client):
    r = hand_client.get("/v1/locate", params={"lon": X(0.4), "lat": Y(0.35)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grid"]["code"] == A1 and body["building"]["code"] == "00001"
    assert body["version"]["label"] == "初始版本"
    staff = {s["name"]: s for s in body["staff"]}
    assert set(staff) == {"张网格", "李专职", "王楼长"}  # 赵离任 left before today
    assert staff["张网格"]["phone"] == "13800000001" and staff["张网格"]["role_name"] == "网格长"
    assert staff["李专职"]["phone"] is None
    assert staff["王楼长"]["target_type"] == "building"
    assert body["phones"] == "public"
    assert "locate;dur=" in r.headers["server-timing"]


def test_answers_are_what_their_response_models_say(hand_client):
    # The models document the answers (the routes send orjson bytes, unvalidated): every member is declared with
    # its type, none is left out, on every level of the chain and in the outlines.
    from api.schemas.locate import FeatureCollection, LocateAnswer

    body = hand_client.get("/v1/locate", params={"lon": X(0.4), "lat": Y(0.35)}).json()
    answer = LocateAnswer.model_validate(body)
    assert set(body) == set(LocateAnswer.model_fields)
    for level in ("street", "community", "grid", "micro_grid", "compound", "building"):
        assert set(body[level]) == set(type(getattr(answer, level)).model_fields), level
    assert set(body["staff"][0]) == set(type(answer.staff[0]).model_fields)
    assert set(body["version"]) == set(type(answer.version).model_fields)
    outlines = hand_client.get("/v1/locate/outlines", params={"lon": X(0.4), "lat": Y(0.35), "radius_m": 100})
    assert outlines.headers["content-type"].startswith("application/geo+json")
    assert FeatureCollection.model_validate(outlines.json()).features


def test_get_locate_shows_all_phones_inside_the_callers_jurisdiction(hand_client, hand_engine):
    inside = _token_headers(hand_engine, "worker", A1)
    outside = _token_headers(hand_engine, "worker", B1)
    params = {"lon": X(0.4), "lat": Y(0.35)}
    staff = {s["name"]: s for s in hand_client.get("/v1/locate", params=params, headers=inside).json()["staff"]}
    assert staff["李专职"]["phone"] == "13800000002"
    staff = {s["name"]: s for s in hand_client.get("/v1/locate", params=params, headers=outside).json()["staff"]}
    assert staff["李专职"]["phone"] is None and staff["张网格"]["phone"] == "13800000001"


@pytest.mark.parametrize("system,convert", [("gcj02", wgs84_to_gcj02), ("bd09", wgs84_to_bd09)])
def test_gcj02_and_bd09_input(hand_client, system, convert):
    lon, lat = X(1.5), Y(0.5)  # in A2, ~100-200 m from A1: the offset of GCJ-02 would land elsewhere
    cx, cy = convert(lon, lat)
    wrong = hand_client.get("/v1/locate", params={"lon": cx, "lat": cy})  # the shifted point read as WGS-84
    right = hand_client.get("/v1/locate", params={"lon": cx, "lat": cy, "coordsys": system})
    assert right.status_code == 200
    body = right.json()
    assert body["grid"]["code"] == A2
    assert body["lon"] == pytest.approx(lon, abs=1e-7) and body["lat"] == pytest.approx(lat, abs=1e-7)
    assert wrong.status_code == 404 or wrong.json()["grid"]["code"] != A2


def test_404_names_the_nearest_grid(hand_client):
    r = hand_client.get("/v1/locate", params={"lon": X(-1), "lat": Y(1)})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["nearest_grid"]["code"] == A1
    assert body["distance_m"] == pytest.approx(U * 111_320 * np.cos(np.radians(Y(1))), rel=0.01)
    assert "东风一网格" in body["detail"] and f"{body['distance_m']:.1f} m" in body["detail"]


def test_accuracy_parameter_widens_nearest(hand_client):
    params = {"lon": X(-0.5), "lat": Y(1)}  # ~95 m west
    assert hand_client.get("/v1/locate", params=params).status_code == 404
    r = hand_client.get("/v1/locate", params={**params, "accuracy_m": 150})
    assert r.status_code == 200 and r.json()["match"] == "nearest"


@pytest.mark.parametrize("params,kind,words", [
    ({"lon": 31.3, "lat": 120.6}, "coordinates-swapped", "swapped"),
    ({"lon": X(1), "lat": 95.0}, "coordinates-out-of-range", "out of range"),
    ({"lon": 200.0, "lat": 100.0}, "coordinates-out-of-range", "out of range"),
    ({"lon": "nan", "lat": Y(1)}, "coordinates-out-of-range", "finite"),
    ({"lon": X(1), "lat": Y(1), "coordsys": "utm"}, "validation-error", "coordsys"),
    ({"lon": X(1), "lat": Y(1), "at": "yesterday"}, "validation-error", "at:"),
])
def test_bad_coordinates_are_422_problems(hand_client, params, kind, words):
    r = hand_client.get("/v1/locate", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith(kind) and words in r.json()["detail"]


def test_swapped_coordinates_near_the_district_are_caught(hand_client):
    # lat/lon of the district given the wrong way round: in range, but (lat, lon) is the district.
    r = hand_client.get("/v1/locate", params={"lon": Y(1), "lat": X(1)})
    assert r.status_code == 422 and "swapped" in r.json()["detail"]


def _redraw(conn) -> dt.datetime:
    """A second version on 2025-06-01 moving the A1|A2 edge from u=1 to u=1.5 (ends and replaces both)."""
    v2 = dt.datetime(2025, 6, 1, tzinfo=TZ)
    conn.execute(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (2, :v, '调整版本')"), {"v": v2})
    conn.execute(text("UPDATE grid_boundaries SET valid_to = :v WHERE grid_id IN (1, 2)"), {"v": v2})
    conn.execute(text("INSERT INTO grid_boundaries (id, grid_id, version_id, valid_from, geom) VALUES "
                      "(5, 2, 2, :v, ST_GeomFromEWKT(:a1)), (6, 1, 2, :v, ST_GeomFromEWKT(:a2))"),
                 {"v": v2, "a1": rect(0, 0, 1.5, 2), "a2": rect(1.5, 0, 2, 2)})
    return v2


def test_at_a_past_version(hand_client, hand_conn):
    _redraw(hand_conn)
    hand_client.app.state.locate_index.refresh(wait=True)
    params = {"lon": X(1.25), "lat": Y(1.0 + 0.25)}
    now = hand_client.get("/v1/locate", params=params).json()
    before = hand_client.get("/v1/locate", params={**params, "at": "2025-03-01"}).json()
    assert now["grid"]["code"] == A1 and now["version"]["label"] == "调整版本"
    assert before["grid"]["code"] == A2 and before["version"]["label"] == "初始版本"
    # The reference agrees at both dates, and on the new shared edge.
    assert locate_sql(hand_conn, X(1.25), Y(1.25))["grid"] == GRID_IDS[A1]
    at = dt.datetime(2025, 3, 1, 23, 59, tzinfo=TZ)
    assert locate_sql(hand_conn, X(1.25), Y(1.25), at)["grid"] == GRID_IDS[A2]
    edge = hand_client.get("/v1/locate", params={"lon": X(1.5), "lat": Y(0.5)}).json()
    assert edge["grid"]["code"] == A1 and edge["match"] == "boundary"
    old_edge = hand_client.get("/v1/locate", params={"lon": X(1), "lat": Y(0.5), "at": "2025-03-01"}).json()
    assert old_edge["grid"]["code"] == A1 and old_edge["match"] == "boundary"


def test_outlines_geojson_near_a_point(hand_client):
    r = hand_client.get("/v1/locate/outlines", params={"lon": X(0.4), "lat": Y(0.35), "radius_m": 100})
    assert r.status_code == 200
    fc = r.json()
    levels = {(f["properties"]["level"], f["properties"]["code"]) for f in fc["features"]}
    assert ("grid", A1) in levels and ("building", "00001") in levels
    assert ("grid", B2) not in levels  # ~500 m away
    assert all(f["geometry"]["type"] == "MultiPolygon" for f in fc["features"])


# ---------------------------------------------------------------------------------------- batch

def _csv_rows(text_out: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text_out), dtype=str, keep_default_na=False)


def test_batch_needs_credentials(hand_client):
    r = hand_client.post("/v1/locate/batch", content=b"lon,lat\n1,2\n", headers={"Content-Type": "text/csv"})
    assert r.status_code == 401


def test_batch_csv_in_order_with_bad_rows(hand_client, hand_engine):
    headers = {**_token_headers(hand_engine, "admin", None), "Content-Type": "text/csv"}
    lines = ["id,lon,lat",
             f"a,{X(0.4)!r},{Y(0.35)!r}",       # 1 building
             f"b,{X(1)!r},{Y(1.5)!r}",          # 2 shared edge
             "c,abc,31.3",                       # 3 not a number
             f"d,{X(3)!r}",                      # 4 lat missing
             "",                                 # 5 empty row
             f"e,{Y(1)!r},{X(1)!r}",             # 6 swapped
             f"f,{X(-1)!r},{Y(1)!r}",            # 7 outside, beyond accuracy
             f"g,{X(3)!r},{Y(1.5)!r},extra",     # 8 extra field: still fine
             f"h,{X(3)!r},{Y(0.5)!r}"]           # 9 no trailing newline
    r = hand_client.post("/v1/locate/batch", content="\n".join(lines).encode(), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    df = _csv_rows(r.text)
    assert list(df["row"]) == [str(i) for i in range(1, 10)]
    assert list(df["id"]) == list("abcd") + ["", "e", "f", "g", "h"]
    assert list(df["grid_code"]) == [A1, A1, "", "", "", "", "", B2, B1]
    assert list(df["match"]) == ["inside", "boundary", "", "", "", "", "", "inside", "inside"]
    assert df.loc[0, "building_name"] == "幸福小区1号楼" and "网格长 张网格 13800000001" in df.loc[0, "staff"]
    assert "李专职 13800000002" in df.loc[0, "staff"]  # an admin sees every phone
    errors = dict(zip(df["row"], df["error"], strict=True))
    assert "not a number" in errors["3"] and "lat is missing" in errors["4"] and "empty row" in errors["5"]
    assert "swapped" in errors["6"] and errors["7"] == "" and errors["1"] == ""


def test_batch_geojson_to_json_lines(hand_client, hand_engine):
    headers = {**_token_headers(hand_engine, "worker", B), "Content-Type": "application/geo+json",
               "Accept": "application/x-ndjson"}
    feats = [
        {"type": "Feature", "id": "p1", "properties": {},
         "geometry": {"type": "Point", "coordinates": [X(0.4), Y(0.35)]}},
        {"type": "Feature", "properties": {"id": 7},
         "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
        {"type": "Feature", "properties": {"note": "}{\"["},
         "geometry": {"type": "Point", "coordinates": [X(3), Y(1.5)]}},
        {"type": "Feature", "properties": None, "geometry": None},
    ]
    lx, ly = wgs84_to_gcj02(X(3), Y(0.5))
    feats.append({"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [lx, ly]}})
    body = orjson.dumps({"type": "FeatureCollection", "features": feats})
    r = hand_client.post("/v1/locate/batch", content=body, headers=headers, params={"coordsys": "bd09"})
    rows = [orjson.loads(line) for line in r.text.splitlines()]
    assert [x["row"] for x in rows] == [1, 2, 3, 4, 5]
    # Read as BD-09 those WGS-84 points move by hundreds of metres: the answer must differ from the WGS-84 one.
    r2 = hand_client.post("/v1/locate/batch", content=body, headers=headers)
    rows2 = [orjson.loads(line) for line in r2.text.splitlines()]
    assert r2.headers["content-type"].startswith("application/x-ndjson")
    assert rows2[0]["id"] == "p1" and rows2[0]["grid"]["code"] == A1 and rows2[0]["building"]["code"] == "00001"
    assert "LineString" in rows2[1]["error"] and rows2[1]["id"] == 7
    assert rows2[2]["grid"]["code"] == B2 and rows2[2]["match"] == "inside"
    assert "no geometry" in rows2[3]["error"]
    assert rows2[0]["staff"] and {s["name"] for s in rows2[0]["staff"]} >= {"张网格"}
    # A worker of community B sees only public phones in A1, all phones in B.
    assert {s["name"]: s["phone"] for s in rows2[0]["staff"]}["李专职"] is None
    assert rows2[0] != rows[0]


def test_batch_row_limit(hand_client, hand_engine, monkeypatch):
    import api.routers.locate as locate_router

    monkeypatch.setattr(locate_router, "BATCH_MAX_POINTS", 5)
    headers = {**_token_headers(hand_engine, "admin", None), "Content-Type": "text/csv"}
    body = "lon,lat\n" + "".join(f"{X(0.4)!r},{Y(0.35)!r}\n" for _ in range(8))
    df = _csv_rows(hand_client.post("/v1/locate/batch", content=body.encode(), headers=headers).text)
    assert list(df["row"]) == ["1", "2", "3", "4", "5", "6"]
    assert "batch limit is 5 points" in df.loc[5, "error"]


def test_batch_refuses_unreadable_input(hand_client, hand_engine):
    headers = _token_headers(hand_engine, "admin", None)
    r = hand_client.post("/v1/locate/batch", content=b"a,b\nfoo,bar\n", headers={**headers, "Content-Type": "text/csv"})
    assert r.status_code == 422 and "lon and lat" in r.json()["detail"]
    r = hand_client.post("/v1/locate/batch", content=b"<xml/>", headers={**headers, "Content-Type": "application/xml"})
    assert r.status_code == 415


def test_batch_streams_a_large_body_in_order(hand_client, hand_engine):
    headers = {**_token_headers(hand_engine, "admin", None), "Content-Type": "text/csv"}
    rng = np.random.default_rng(5)
    n = 150_000
    lon, lat = X(rng.uniform(-0.2, 4.2, n)), Y(rng.uniform(-0.2, 2.2, n))

    def body():
        yield b"lon,lat\n"
        for i in range(0, n, 10_000):
            part = zip(lon[i:i + 10_000].tolist(), lat[i:i + 10_000].tolist(), strict=True)
            yield "".join(f"{a!r},{b!r}\n" for a, b in part).encode()

    r = hand_client.post("/v1/locate/batch", content=body(), headers=headers)
    df = _csv_rows(r.text)
    assert len(df) == n and (df["row"].astype(int).to_numpy() == np.arange(1, n + 1)).all()
    with hand_engine.connect() as conn:
        index = LocateIndex.from_db(conn)
    expect = index.locate_many(lon, lat, 30)
    codes = np.array([r["code"] for r in index.levels["grid"].records] + [""], dtype=object)
    assert (df["grid_code"].to_numpy() == codes[expect.pos["grid"]]).all()


# ---------------------------------------------------------------------------------------- the holder

def test_swap_under_concurrent_lookups(hand_conn, hand_engine):
    """Readers hammer the holder while it rebuilds between two boundary sets: every answer is whole and right."""
    with hand_engine.connect() as conn:
        frames_old = read_frames(conn)
    frames_new = read_frames(hand_conn)
    # The "new" set: A1 and A2 swap codes' geometry, so a point answers A1 under one and A2 under the other.
    frames_new["grid"] = frames_new["grid"].copy()
    g = frames_new["grid"]
    ia1, ia2 = g.index[g["code"] == A1][0], g.index[g["code"] == A2][0]
    geoms = g.geometry.copy()
    geoms[ia1], geoms[ia2] = g.geometry[ia2], g.geometry[ia1]
    frames_new["grid"] = g.set_geometry(geoms)
    sets = [frames_old, frames_new]
    expected = {0: A1, 1: A2}  # at (0.5, 1.5)
    calls = {"n": 0}

    holder = holder_on(hand_conn)
    base = holder._build_state()  # the version metadata, read once

    def build():  # alternate the two sets; building is slow enough for readers to overlap it
        k = calls["n"] % 2
        calls["n"] += 1
        return dataclasses.replace(base, index=LocateIndex(sets[k], label=str(k)), cache=OrderedDict())

    holder._build_state = build
    holder.index_for()
    stop = threading.Event()
    bad: list = []
    counts = {0: 0, 1: 0}

    def reader():
        while not stop.is_set():
            index = holder.index_for()
            r = index.locate(X(0.5), Y(1.5))
            k = int(index.label)
            counts[k] += 1
            if r["grid"] is None or r["grid"]["code"] != expected[k] or r["street"]["code"] != STREET:
                bad.append((k, r["grid"]))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(6):
        holder.refresh(wait=True)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not bad
    assert holder.swaps == 7 and counts[0] > 0 and counts[1] > 0


def test_notify_rebuilds_in_the_background(hand_conn):
    from geo.locate.holder import notify_boundaries_changed

    # a generous wait for lookups: this test is about what is heard, not how long a lookup waits (that is
    # tests/test_locate_overlaps.py::test_a_lookup_during_a_rebuild_answers_at_once_from_the_previous_index)
    holder = holder_on(hand_conn, stale_wait_seconds=60)
    assert holder.index_for().locate(X(1.25), Y(1.25))["grid"]["code"] == A2
    _redraw(hand_conn)
    assert holder.index_for().locate(X(1.25), Y(1.25))["grid"]["code"] == A2  # not rebuilt yet
    holder.boundaries_changed()
    assert holder.peek() is None  # the old snapshot is no longer offered without asking
    # the new version is patched in (only its rows read): the next lookup answers from the new boundaries
    assert holder.index_for().locate(X(1.25), Y(1.25))["grid"]["code"] == A1
    assert (holder.swaps, holder.patches) == (1, 1)
    _undo_redraw(hand_conn)
    # a version removed cannot be patched out: a full rebuild; the writer's own notification returns once it is in
    notify_boundaries_changed()
    assert holder.peek() is not None and holder.peek().locate(X(1.25), Y(1.25))["grid"]["code"] == A2
    assert (holder.swaps, holder.patches) == (2, 1)


def _undo_redraw(conn) -> None:
    conn.execute(text("DELETE FROM grid_boundaries WHERE id IN (5, 6)"))
    conn.execute(text("UPDATE grid_boundaries SET valid_to = NULL WHERE grid_id IN (1, 2)"))
    conn.execute(text("DELETE FROM boundary_versions WHERE id = 2"))


def test_a_commit_by_another_process_reaches_the_index_through_the_database(hand_engine):
    """A write committed on another connection (another worker, the CLI, psql) is heard through LISTEN/NOTIFY
    (migration 0013's triggers): the holder stops answering from the old snapshot without any in-process call."""
    # a generous wait for lookups: this test is about what is heard, not how long a lookup waits
    holder = IndexHolder.for_engine(hand_engine, poll_seconds=None, stale_wait_seconds=60)
    try:
        assert holder.index_for().locate(X(1.25), Y(1.25))["grid"]["code"] == A2
        assert holder._listener is not None and holder._listener.listening
        with hand_engine.begin() as conn:
            _redraw(conn)
        try:
            deadline = time.monotonic() + 10
            while holder._generation == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert holder._generation >= 1, "no change notification arrived"
            assert holder.index_for().locate(X(1.25), Y(1.25))["grid"]["code"] == A1
        finally:
            with hand_engine.begin() as conn:
                _undo_redraw(conn)
        deadline = time.monotonic() + 10
        while holder._generation < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert holder.index_for().locate(X(1.25), Y(1.25))["grid"]["code"] == A2
    finally:
        holder.close()


# ---------------------------------------------------------------------------------------- synthetic district

def test_index_and_postgis_agree_on_100000_points(engine):
    with engine.connect() as conn:
        index = LocateIndex.from_db(conn)
        lon, lat = agreement_points(index, 100_000)
        result = compare_with_reference(index, conn, lon, lat)
    kinds = result.pop("kinds")
    assert result == {k: 0 for k in result}, result
    # The sample really holds every case: inside, on shared edges/vertices, nearest, and beyond reach.
    assert kinds["boundary"] > 10_000 and kinds["nearest"] > 100 and kinds["none"] > 1_000 and kinds["inside"] > 30_000


def test_locate_a_known_building_over_http(client, engine):
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT b.id, b.name, ST_X(ST_PointOnSurface(b.geom)) x, ST_Y(ST_PointOnSurface(b.geom)) y "
            "FROM buildings b ORDER BY b.id LIMIT 1")).one()
        ref = locate_sql(conn, row.x, row.y)
    r = client.get("/v1/locate", params={"lon": row.x, "lat": row.y})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["building"]["id"] == row.id == ref["building"]
    assert body["grid"]["id"] == ref["grid"] and body["micro_grid"] and body["micro_grid"]["id"] == ref["micro_grid"]
    assert body["street"]["id"] == ref["street"] and body["community"]["id"] == ref["community"]
    assert any(s["role"] == "grid_chief" for s in body["staff"])
    assert all(s["phone"] is None or s["phone_public"] for s in body["staff"])


# ------------------------------------------------------------------------------ cell candidates, batch output

def _exact_owner(level, x, y) -> np.ndarray:
    """The owner by the STRtree + covers path, for comparison with the raster's per-cell candidates."""
    import shapely

    return level.exact(shapely.points(x, y))


def test_cell_candidates_agree_with_the_exact_path_on_every_level(engine):
    # The raster answers points in boundary cells from the cell's few candidates (intersects_xy, no Point
    # objects); it must give the very owner the STRtree + covers path gives, on vertices and edges too.
    import shapely

    with engine.connect() as conn:
        index = LocateIndex.from_db(conn)
    base_lon, base_lat = agreement_points(index, 40_000, seed=17)
    rng = np.random.default_rng(17)
    for key, level in index.levels.items():
        # Plus points on this level's own vertices and edge midpoints (the sample's are on the grid levels).
        xy = shapely.get_coordinates(shapely.get_rings(shapely.get_parts(level.geoms)))
        k = rng.integers(0, len(xy) - 1, 10_000)
        lon = np.r_[base_lon, xy[k[:5000], 0], (xy[k[5000:], 0] + xy[k[5000:] + 1, 0]) / 2]
        lat = np.r_[base_lat, xy[k[:5000], 1], (xy[k[5000:], 1] + xy[k[5000:] + 1, 1]) / 2]
        got, tested = level.owners(lon, lat)
        assert (got == _exact_owner(level, lon, lat)).all(), key
        # One point at a time (as GET /v1/locate asks) gives the same owner and the same "tested" verdict.
        some = np.r_[0:2000, len(lon) - 2000:len(lon)]
        single = [level.owners(lon[i:i + 1], lat[i:i + 1]) for i in some.tolist()]
        assert [int(p[0]) for p, _ in single] == got[some].tolist(), key
        assert {int(some[i]) for i, (_, t) in enumerate(single) if len(t)} == \
            set(np.intersect1d(tested, some).tolist()), key
        assert len(tested) > 1000, key  # the sample reaches boundary cells on every level


def test_cell_candidates_with_nested_units_keep_the_smallest_code():
    # A large unit "2" holds two small ones, "1" and "3": cells inside "2" that only "3"'s boundary touches have
    # "2" as their sure owner (3 can never win there); "1" wins over "2" inside and on its own edge.
    import geopandas as gpd
    import shapely

    from geo.locate.index import LEVEL_SPECS, LevelIndex

    big = shapely.box(0, 0, 0.01, 0.01)
    one = shapely.box(0.002, 0.002, 0.004, 0.004)
    three = shapely.box(0.006, 0.006, 0.008, 0.008)
    frame = gpd.GeoDataFrame({"id": [10, 11, 12], "code": ["3", "2", "1"], "name": ["c", "b", "a"],
                              "kind": None, "dedicated_type": None, "community_id": None},
                             geometry=[three, big, one], crs=4326)
    level = LevelIndex(next(s for s in LEVEL_SPECS if s.key == "grid"), frame, max_cells=10_000)
    assert (level.raster.sure >= 0).any()  # some mixed cell is wholly inside "2" while "3"'s edge touches it
    rng = np.random.default_rng(1)
    x = np.r_[rng.uniform(-0.001, 0.011, 20_000), 0.002, 0.003, 0.006, 0.007, 0.0, 0.01]
    y = np.r_[rng.uniform(-0.001, 0.011, 20_000), 0.003, 0.002, 0.007, 0.006, 0.005, 0.01]
    got, _ = level.owners(x, y)
    assert (got == _exact_owner(level, x, y)).all()
    codes = np.array([r["code"] for r in level.records] + [None], dtype=object)[got]
    assert list(codes[-6:]) == ["1", "1", "2", "2", "2", "2"]


def test_number_texts_are_the_decimal_texts():
    from geo.locate.batch import number_texts

    values = np.r_[np.arange(0, 1200), [9, 10, 99_999, 100_000, 999_999, 1_000_000, 10**17],
                   np.arange(998_000, 1_002_000)]
    assert number_texts(values) == [str(v).encode() for v in values.tolist()]
    assert number_texts(np.array([3, -4, 5])) == [b"3", b"-4", b"5"]
    assert number_texts(np.array([], dtype=np.int64)) == []


def test_batch_output_does_not_depend_on_the_combination_key(hand_client, hand_engine):
    # Rows are rendered per combination of units; the mixed-radix key and the stepwise factorisation used when
    # that key would overflow must give the same bytes, in CSV and JSON lines, with ids and bad rows.
    from geo.locate.batch import BatchFormatter, PointChunk

    with hand_engine.connect() as conn:
        index = LocateIndex.from_db(conn)
    rng = np.random.default_rng(9)
    n = 5000
    lon, lat = X(rng.uniform(-0.5, 4.5, n)), Y(rng.uniform(-0.5, 2.5, n))
    lon[::97] = np.nan
    valid = np.flatnonzero(np.isfinite(lon))
    batch = index.locate_many(lon[valid], lat[valid], 30)
    errors = {i: "lon is missing" for i in np.flatnonzero(~np.isfinite(lon)).tolist()}
    for fmt in ("csv", "jsonl"):
        for ids in (None, [f"id,{i}" for i in range(n)]):
            outs = []
            for radix in (True, False):
                f = BatchFormatter(index, fmt, version={"id": 1}, staff=None, staff_day=None)
                if not radix:
                    f._radix = None
                chunk = PointChunk(np.arange(1, n + 1), lon, lat, ids, dict(errors))
                outs.append(f.render(chunk, batch, valid))
            assert outs[0] == outs[1], (fmt, ids is None)
            lines = outs[0].decode().splitlines()
            assert len(lines) == n and "nearest" in outs[0].decode() and "lon is missing" in lines[0]
