"""A corpus of bad input (issue 19, items 6 and 8): every case answers 4xx problem+json and changes no row.

Each case is one request a hostile or careless client sent and that once answered 500 or was written: NUL bytes in
text, ids above 2^31, offsets above 2^63, a negative suggestion seed, ``phone_public: null``, a far-past steward
plan day, a regex escape in the heatmap page's class filter, and plan operations with swapped longitude/latitude,
latitude 95, a bow-tie, an unclosed ring, NaN, a polygon in Paris or more vertices than allowed. Row counts of the
tables a write would touch are compared before and after each case (the audit log is left out: refusals may be
audited).
"""

from __future__ import annotations

import json
import math

import pytest
import shapely
from shapely.geometry import mapping
from sqlalchemy import text

from geo.plans import drafts as plans

#: The tables a write of these routes would touch.
TABLES = ("incidents", "incident_events", "plans", "plan_units", "plan_operations", "boundary_versions",
          "grid_boundaries", "micro_grid_boundaries", "grids", "micro_grids", "people", "staff_assignments")


def _counts(db_session) -> dict[str, int]:
    return {t: db_session.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


@pytest.fixture
def setting(monkeypatch):
    from geo.settings import get_settings

    def _set(name, value):
        monkeypatch.setattr(get_settings(), name, value)

    return _set


@pytest.fixture
def community(db_session):
    row = db_session.execute(text("""
        SELECT c.code, c.id FROM communities c JOIN grids g ON g.community_id = c.id
        WHERE g.kind = 'comprehensive' GROUP BY c.id ORDER BY count(*) DESC, c.code LIMIT 1
    """)).one()
    return {"code": row[0], "id": row[1]}


@pytest.fixture
def draft(client, admin_headers, community, db_session):
    """A draft plan of the community: id, its ETag, a grid key and that grid's geometry."""
    r = client.post("/v1/plans", json={"community_code": community["code"]}, headers=admin_headers)
    assert r.status_code == 201, r.text
    state = plans.load_state(db_session.connection(), r.json()["id"])
    grid = state.live("grid")[0]
    return {"id": r.json()["id"], "etag": r.headers["ETag"], "key": grid["key"], "geom": grid["geom"]}


def _refused(r, *statuses: int) -> dict:
    assert r.status_code in (statuses or range(400, 500)), f"{r.status_code}: {r.text[:400]}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body = r.json()
    assert body["status"] == r.status_code and body["type"].startswith("https://gridatlas.dev/problems/")
    return body


def _polygon(ring) -> dict:
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


def _geometry_cases(geom) -> dict[str, dict]:
    """Bad replacement geometries for a grid whose geometry is `geom`."""
    x0, y0, x1, y1 = shapely.bounds(geom)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return {
        "swapped lon/lat": _polygon([(y, x) for x, y in box]),
        "latitude 95": _polygon([(x0, y0), (x1, y0), (x1, 95.0), (x0, y0)]),
        "bow-tie": _polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)]),
        "unclosed ring": _polygon(box[:-1]),
        "NaN": _polygon([(x0, y0), (x1, y0), (math.nan, cy), (x0, y0)]),
        "Paris": mapping(shapely.box(2.33, 48.85, 2.36, 48.87)),
        "half in Paris": mapping(shapely.union(shapely.box(x0, y0, cx, cy), shapely.box(2.33, 48.85, 2.36, 48.87))),
        "not geometry": {"type": "Polygon", "coordinates": "abc"},
        "strings": _polygon([("a", "b"), ("c", "d"), ("e", "f"), ("a", "b")]),
    }


def test_plan_operations_refuse_bad_geometry_before_any_write(client, admin_headers, draft, db_session):
    before = _counts(db_session)
    for name, geometry in _geometry_cases(draft["geom"]).items():
        for op in ({"type": "replace_geometry", "key": draft["key"], "geometry": geometry},
                   {"type": "create", "level": "grid", "geometry": geometry}):
            # sent as text: NaN is not JSON, yet Python's and JavaScript's encoders write it
            r = client.post(f"/v1/plans/{draft['id']}/operations", content=json.dumps(op),
                            headers={**admin_headers, "If-Match": draft["etag"], "Content-Type": "application/json"})
            body = _refused(r, 422)
            assert body["type"].endswith(("plan-geometry", "validation-error")), (name, body)
    line = {"type": "LineString", "coordinates": [[0, 0], [math.inf, 95]]}
    r = client.post(f"/v1/plans/{draft['id']}/operations",
                    content=json.dumps({"type": "split", "key": draft["key"], "line": line}),
                    headers={**admin_headers, "If-Match": draft["etag"], "Content-Type": "application/json"})
    _refused(r, 422)
    assert _counts(db_session) == before
    # the plan did not move: its ETag still names the revision every refusal was sent against
    assert client.get(f"/v1/plans/{draft['id']}", headers=admin_headers).headers["ETag"] == draft["etag"]


def test_plan_operations_refuse_more_vertices_than_allowed(client, admin_headers, draft, db_session, setting):
    setting("plan_max_vertices", 200)
    inner = shapely.buffer(shapely.centroid(draft["geom"]), 1e-4, quad_segs=100)  # 401 vertices, inside the grid
    assert shapely.get_num_coordinates(inner) > 200
    before = _counts(db_session)
    r = client.post(f"/v1/plans/{draft['id']}/operations",
                    json={"type": "replace_geometry", "key": draft["key"], "geometry": mapping(inner)},
                    headers={**admin_headers, "If-Match": draft["etag"]})
    assert _refused(r, 422)["max_vertices"] == 200
    assert _counts(db_session) == before
    setting("plan_max_vertices", 1000)  # the same geometry under a higher limit is taken
    r = client.post(f"/v1/plans/{draft['id']}/operations",
                    json={"type": "replace_geometry", "key": draft["key"], "geometry": mapping(inner)},
                    headers={**admin_headers, "If-Match": draft["etag"]})
    assert r.status_code == 200, r.text


def test_publish_with_allow_errors_never_publishes_misplaced_or_invalid_geometry(client, admin_headers, draft,
                                                                                  db_session):
    conn = db_session.connection()
    state = plans.load_state(conn, draft["id"])
    row = state.rows[draft["key"]]
    bowtie = shapely.from_wkt("POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))")
    x0, y0, x1, y1 = shapely.bounds(row["geom"])
    bowtie = shapely.affinity.affine_transform(bowtie, [x1 - x0, 0, 0, y1 - y0, x0, y0])
    for bad in (shapely.box(2.33, 48.85, 2.36, 48.87), bowtie):  # stored behind the API's back (an old draft)
        plans._delete_rows(conn, draft["id"], [draft["key"]])
        plans.write_rows(conn, draft["id"], [{**row, "geom": shapely.multipolygons([bad])}])
        before = _counts(db_session)
        r = client.post(f"/v1/plans/{draft['id']}/publish", json={"allow_errors": True},
                        headers={**admin_headers, "If-Match": draft["etag"]})
        body = _refused(r, 422)
        assert body["type"].endswith("plan-geometry") and "allow_errors" in body["detail"]
        assert _counts(db_session) == before


def test_bad_values_answer_4xx_and_write_nothing(client, admin_headers, draft, db_session, community):
    person = db_session.execute(text("SELECT id FROM people ORDER BY id LIMIT 1")).scalar_one()
    incident = db_session.execute(text("SELECT id FROM incidents ORDER BY id LIMIT 1")).scalar_one()
    x, y = shapely.get_coordinates(shapely.point_on_surface(draft["geom"]))[0]
    report = {"lon": float(x), "lat": float(y), "class_code": "A01", "source": "patrol"}
    big, huge = 3_000_000_000, 2**63 + 5
    cases = [
        ("POST", "/v1/incidents", {"json": {**report, "description": "垃圾\x00堆放"}}),
        ("POST", "/v1/incidents", {"json": {**report, "reporter": "\x00"}}),
        ("POST", "/v1/incidents", {"json": {**report, "lat": 95.0}}),
        ("POST", "/v1/incidents", {"json": {**report, "lon": float(y), "lat": float(x)}}),
        ("GET", "/v1/incidents", {"params": {"source": "a\x00b"}}),
        ("GET", "/v1/incidents", {"params": {"class": "A\x0001"}}),
        ("GET", "/v1/incidents", {"params": {"offset": str(huge)}}),
        ("GET", "/v1/incidents", {"params": {"limit": str(huge)}}),
        ("GET", f"/v1/incidents/{big}", {}),
        ("GET", f"/v1/incidents/{huge}", {}),
        ("POST", f"/v1/incidents/{big}/transitions", {"json": {"action": "register"},
                                                       "headers": {"If-Match": f'"incident-{big}-r1"'}}),
        ("POST", f"/v1/incidents/{incident}/transitions", {"json": {"action": "reg\x00ister"},
                                                            "headers": {"If-Match": f'"incident-{incident}-r1"'}}),
        ("GET", f"/v1/plans/{big}", {}),
        ("GET", f"/v1/plans/{huge}/diff", {}),
        ("POST", f"/v1/versions/{big}/rollback", {}),
        ("POST", "/v1/plans", {"json": {"community_code": community["code"], "label": "方案\x00"}}),
        ("POST", "/v1/plans", {"json": {"community_code": "\x00" * 12}}),
        ("POST", f"/v1/plans/{draft['id']}/suggest", {"json": {"seed": -1}}),
        ("POST", f"/v1/plans/{draft['id']}/suggest", {"json": {"seed": huge}}),
        ("POST", f"/v1/plans/{draft['id']}/operations", {"json": {"type": "retire", "key": "g\x001"},
                                                          "headers": {"If-Match": draft["etag"]}}),
        ("POST", f"/v1/plans/{draft['id']}/operations", {"json": {"type": "move_buildings", "to": draft["key"],
                                                                   "building_ids": [huge]},
                                                          "headers": {"If-Match": draft["etag"]}}),
        ("POST", f"/v1/plans/{draft['id']}/operations", {"json": {"type": "create", "level": "grid",
                                                                   "name": "新\x00网格",
                                                                   "geometry": mapping(draft["geom"])},
                                                          "headers": {"If-Match": draft["etag"]}}),
        ("POST", f"/v1/plans/{draft['id']}/publish", {"json": {"label": "发布\x00"},
                                                       "headers": {"If-Match": draft["etag"]}}),
        ("PATCH", f"/v1/people/{person}", {"json": {"phone_public": None}}),
        ("PATCH", f"/v1/people/{person}", {"json": {"party_member": None}}),
        ("POST", "/v1/coverage/plan", {"json": {"at": "0001-01-01"}}),
        ("POST", "/v1/coverage/plan", {"json": {"at": "9999-12-31"}}),
    ]
    before = _counts(db_session)
    for method, url, kw in cases:
        headers = {**admin_headers, **kw.pop("headers", {})}
        r = client.request(method, url, headers=headers, **kw)
        assert 400 <= r.status_code < 500, f"{method} {url} {kw}: {r.status_code} {r.text[:300]}"
        _refused(r)
    assert _counts(db_session) == before


def test_heatmap_page_class_filter_is_text_not_a_regex(client, admin_headers):
    for value in ("\\w", "\\1", "\\g<0>", "$&"):
        r = client.get("/maps/heatmap", params={"class": value, "permutations": 0}, headers=admin_headers)
        assert r.status_code < 500, r.text[:300]
        if r.status_code == 200:
            assert "<html" in r.text and "\\" in r.text or "$&" in r.text
        else:
            _refused(r)
