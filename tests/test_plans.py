"""Redraw plans: operations and undo, live validation, diff, publish with ETags, rollback, suggestions."""

from __future__ import annotations

import json
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
import shapely
from shapely.geometry import mapping
from sqlalchemy import text

from geo.plans import drafts as plans
from geo.plans.etags import version_etag
from geo.plans.validation import validate


def _conn(db_session):
    return db_session.connection()


@pytest.fixture
def community(db_session):
    """The community with the most comprehensive grids (code, id)."""
    row = db_session.execute(text("""
        SELECT c.code, c.id FROM communities c JOIN grids g ON g.community_id = c.id
        WHERE g.kind = 'comprehensive' GROUP BY c.id ORDER BY count(*) DESC, c.code LIMIT 1
    """)).one()
    return {"code": row[0], "id": row[1]}


@pytest.fixture
def plan_id(db_session, community):
    return plans.create_plan(_conn(db_session), community["code"], "tester")


def _rules(result, rule):
    return [p for p in result["problems"] if p["rule"] == rule]


def _neighbours(state):
    """Two grids sharing an edge (keys)."""
    rows = state.live("grid")
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if shapely.length(shapely.intersection(shapely.boundary(a["geom"]), shapely.boundary(b["geom"]))) > 1e-5:
                return a["key"], b["key"]
    raise AssertionError("no neighbouring grids")


def test_plan_copies_the_published_grids(db_session, community, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    n = db_session.execute(text("SELECT count(*) FROM grids_at(now()) WHERE community_id = :c"),
                           {"c": community["id"]}).scalar()
    assert len(state.live("grid")) == n > 0
    assert state.revision == 0
    baseline = validate(conn, plan_id)
    # the generated community tiles: nothing structural to report before any edit
    assert not _rules(baseline, "overlap") and not _rules(baseline, "gap") and not _rules(baseline, "micro_tiling")


def test_replace_geometry_makes_overlap_and_gap_and_undo_restores(db_session, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    a, b = _neighbours(state)
    ga, gb = state.rows[a]["geom"], state.rows[b]["geom"]
    # a grows into b by a band around their shared edge: overlap with b
    grown = shapely.union(ga, shapely.intersection(gb, shapely.buffer(ga, 0.0003)))
    out = plans.apply_operation(conn, plan_id, {"type": "replace_geometry", "key": a, "geometry": mapping(grown)})
    assert out["revision"] == 1
    v = validate(conn, plan_id)
    ov = _rules(v, "overlap")
    assert any(set(p["keys"]) == {a, b} and p["area_m2"] > 100 for p in ov)
    assert ov[0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    # then a shrinks well inside itself: a gap opens
    shrunk = shapely.buffer(ga, -0.0004)
    plans.apply_operation(conn, plan_id, {"type": "replace_geometry", "key": a, "geometry": mapping(shrunk)})
    v = validate(conn, plan_id)
    assert _rules(v, "gap") and not any(set(p["keys"]) == {a, b} for p in _rules(v, "overlap"))
    plans.undo(conn, plan_id)
    plans.undo(conn, plan_id)
    back = plans.load_state(conn, plan_id)
    assert shapely.equals_exact(back.rows[a]["geom"], ga, 1e-12)
    v = validate(conn, plan_id)
    assert not _rules(v, "overlap") and not _rules(v, "gap")
    with pytest.raises(plans.PlanError):
        plans.undo(conn, plan_id)


def test_outside_community_and_not_contiguous(db_session, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    key = state.live("grid")[0]["key"]
    g = state.rows[key]["geom"]
    community = plans.community_geom(conn, state.community_id)
    # a detached island just outside the community (20-40 m east of its easternmost vertex)
    east = max(shapely.get_coordinates(community), key=lambda c: c[0])
    far = shapely.box(east[0] + 0.0002, east[1] - 0.0001, east[0] + 0.0004, east[1] + 0.0001)
    assert not shapely.intersects(far, community)
    plans.apply_operation(conn, plan_id, {"type": "replace_geometry", "key": key,
                                          "geometry": mapping(shapely.union(g, far))})
    v = validate(conn, plan_id)
    assert any(key in p["keys"] for p in _rules(v, "outside_community"))
    assert any(key in p["keys"] and p["pieces"] == 2 for p in _rules(v, "not_contiguous"))


def test_problems_just_over_the_tolerances_are_still_reported(db_session, community, plan_id):
    """The validator's area bounds (a clean layer skips the pairwise overlays) never hide a small problem: a few m²
    of grid overlap, a hole of some 40 m² in a micro-grid."""
    from geo.plans.validation import ValidationRules, context_for, validate_state

    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    ctx = context_for(conn, community["id"])
    rules = ValidationRules()
    assert not _rules(validate_state(state, ctx, rules), "overlap")
    a, b = _neighbours(state)
    edge = shapely.intersection(shapely.boundary(state.rows[a]["geom"]), shapely.boundary(state.rows[b]["geom"]))
    parts = shapely.get_parts(shapely.line_merge(edge))
    mid = shapely.line_interpolate_point(parts[np.argmax(shapely.length(parts))], 0.5, normalized=True)
    square = shapely.box(mid.x - 2e-5, mid.y - 2e-5, mid.x + 2e-5, mid.y + 2e-5)  # about 4 m a side
    state.rows[a]["geom"] = shapely.union(state.rows[a]["geom"], shapely.intersection(square, state.rows[b]["geom"]))
    ov = [p for p in _rules(validate_state(state, ctx, rules), "overlap") if set(p["keys"]) == {a, b}]
    assert len(ov) == 1 and rules.overlap_m2 < ov[0]["area_m2"] < 20
    micro = max(state.live("micro_grid"), key=lambda r: shapely.area(r["geom"]))
    c = shapely.point_on_surface(micro["geom"])
    hole = shapely.box(c.x - 3e-5, c.y - 3e-5, c.x + 3e-5, c.y + 3e-5)  # about 6 m a side
    assert shapely.contains(micro["geom"], hole)
    micro["geom"] = shapely.difference(micro["geom"], hole)
    tiling = _rules(validate_state(state, ctx, rules), "micro_tiling")
    assert [p["keys"] for p in tiling] == [[micro["parent_key"]]]
    assert rules.gap_area_m2 < tiling[0]["area_m2"] < 60


def test_split_then_merge(db_session, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    g = max(state.live("grid"), key=lambda r: shapely.area(r["geom"]))
    minx, miny, maxx, maxy = shapely.bounds(g["geom"])
    mid = (minx + maxx) / 2
    line = shapely.LineString([(mid, miny - 0.001), (mid, maxy + 0.001)])
    out = plans.apply_operation(conn, plan_id, {"type": "split", "key": g["key"], "line": mapping(line)})
    keys = out["result"]["keys"]
    assert len(keys) == 2 and keys[1].startswith("gn")
    after = plans.load_state(conn, plan_id)
    a, b = after.rows[keys[0]]["geom"], after.rows[keys[1]]["geom"]
    assert shapely.area(shapely.intersection(a, b)) < 1e-12
    assert abs(shapely.area(shapely.union(a, b)) - shapely.area(g["geom"])) < 1e-10
    v = validate(conn, plan_id)
    assert not _rules(v, "overlap") and not _rules(v, "gap") and not _rules(v, "micro_tiling")
    # a vertical line through the middle of a grid cuts the buildings standing on it
    cut = _rules(v, "building_cut")
    assert all(set(p["keys"]) == {keys[0], keys[1]} for p in cut)
    plans.apply_operation(conn, plan_id, {"type": "merge", "keys": keys})
    merged = plans.load_state(conn, plan_id)
    assert merged.rows[keys[1]]["retired"]
    assert shapely.area(shapely.symmetric_difference(merged.rows[keys[0]]["geom"], g["geom"])) < 1e-11
    assert not _rules(validate(conn, plan_id), "building_cut")
    with pytest.raises(plans.PlanError):
        plans.apply_operation(conn, plan_id, {"type": "split", "key": keys[0],
                                              "line": mapping(shapely.LineString([(0, 0), (0.0001, 0.0001)]))})


def test_move_buildings_geometry_follows(db_session, community, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    a, b = _neighbours(state)
    bf = plans.buildings_frame(conn, community["id"])
    pts = shapely.point_on_surface(bf["geom"])
    in_a = shapely.covers(state.rows[a]["geom"], pts)
    # the building of grid a nearest to grid b
    d = shapely.distance(pts, state.rows[b]["geom"])
    d[~in_a] = np.inf
    moved = int(bf["id"][np.argmin(d)])
    before = {g["key"]: g["households"] for g in validate(conn, plan_id)["grids"]}
    plans.apply_operation(conn, plan_id, {"type": "move_buildings", "building_ids": [moved], "to": b})
    after_state = plans.load_state(conn, plan_id)
    i = int(np.flatnonzero(bf["id"] == moved)[0])
    assert shapely.covers(after_state.rows[b]["geom"], bf["geom"][i])
    assert not shapely.intersects(shapely.buffer(after_state.rows[a]["geom"], -1e-9), bf["geom"][i])
    v = validate(conn, plan_id)
    after = {g["key"]: g["households"] for g in v["grids"]}
    assert after[b] - before[b] == before[a] - after[a] == int(bf["households"][i])
    assert not _rules(v, "overlap") and not _rules(v, "gap")
    assert not any(p.get("building_id") == moved for p in _rules(v, "building_cut"))


def test_move_compound_and_compound_split_warning(db_session, community, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    cf = plans.compounds_frame(conn, community["id"])
    grids = state.live("grid")
    owner = plans.owner_of_points(shapely.point_on_surface(cf["geom"]), grids)
    i = int(np.flatnonzero(owner >= 0)[0])
    src = grids[owner[i]]["key"]
    a, b = _neighbours(state)
    to = b if src == a else a if src == b else b
    plans.apply_operation(conn, plan_id, {"type": "move_compounds", "compound_ids": [int(cf["id"][i])], "to": to})
    after = plans.load_state(conn, plan_id)
    assert shapely.area(shapely.difference(cf["geom"][i], after.rows[to]["geom"])) < 1e-10
    v = validate(conn, plan_id)
    assert not any(p.get("compound_id") == int(cf["id"][i]) for p in _rules(v, "compound_split"))
    # now cut that compound in half with a grid of its own: a soft warning
    minx, miny, maxx, maxy = shapely.bounds(cf["geom"][i])
    half = shapely.box(minx - 0.001, miny - 0.001, (minx + maxx) / 2, maxy + 0.001)
    plans.apply_operation(conn, plan_id, {"type": "create", "level": "grid", "geometry": mapping(half),
                                          "name": "新网格"})
    v = validate(conn, plan_id)
    warn = [p for p in _rules(v, "compound_split") if p["compound_id"] == int(cf["id"][i])]
    assert warn and warn[0]["severity"] == "warning"
    assert not _rules(v, "overlap") and not _rules(v, "gap")


def test_create_and_retire_grid_and_micro_grid(db_session, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    g = state.live("grid")[0]
    micros = state.live("micro_grid", g["key"])
    out = plans.apply_operation(conn, plan_id, {"type": "retire", "key": g["key"]})
    v = validate(conn, plan_id)
    assert any(p["area_m2"] > 100 for p in _rules(v, "gap"))
    plans.undo(conn, plan_id)
    a, b = _neighbours(plans.load_state(conn, plan_id))
    plans.apply_operation(conn, plan_id, {"type": "retire", "key": a, "into": b})
    s = plans.load_state(conn, plan_id)
    assert s.rows[a]["retired"] and not _rules(validate(conn, plan_id), "gap")
    assert all(m["parent_key"] == b for m in s.live("micro_grid") if m["key"] in {x["key"] for x in micros}) \
        or g["key"] != a
    if micros:
        # a new micro-grid carved out of a grid keeps the tiling
        m0 = s.live("micro_grid", s.rows[micros[0]["key"]]["parent_key"])[0]
        piece = shapely.buffer(shapely.point_on_surface(m0["geom"]), 0.0002)
        out = plans.apply_operation(conn, plan_id, {"type": "create", "level": "micro_grid",
                                                    "parent": m0["parent_key"], "geometry": mapping(piece)})
        nk = out["result"]["keys"][0]
        assert nk.startswith("mn")
        assert not _rules(validate(conn, plan_id), "micro_tiling")
        # a micro-grid that spills into another grid breaks the tiling
        st = plans.load_state(conn, plan_id)
        other = next(x for x in st.live("grid") if x["key"] != m0["parent_key"])
        spill = shapely.union(piece, shapely.buffer(shapely.point_on_surface(other["geom"]), 0.0002))
        plans.apply_operation(conn, plan_id, {"type": "replace_geometry", "key": nk, "geometry": mapping(spill)})
        assert _rules(validate(conn, plan_id), "micro_tiling")


def test_household_band(db_session, plan_id, monkeypatch):
    conn = _conn(db_session)
    from geo.settings import get_settings

    v = validate(conn, plan_id)
    comp = [g for g in v["grids"] if g["kind"] == "comprehensive"]
    hh = sorted(g["households"] for g in comp)
    rules = get_settings().rules
    monkeypatch.setattr(rules, "grid_households_min", hh[1] + 1)
    monkeypatch.setattr(rules, "grid_households_max", hh[-2] - 1)
    v = validate(conn, plan_id)
    band = _rules(v, "households_band")
    assert {p["households"] for p in band} >= {hh[0], hh[-1]}
    assert all(p["severity"] == "warning" for p in band)
    from geo.plans.validation import ValidationRules

    strict = validate(conn, plan_id, ValidationRules(band_severity="error"))
    assert not strict["ok"] and all(p["severity"] == "error" for p in _rules(strict, "households_band"))


def _move_one(conn, community, plan_id):
    """Move grid a's building nearest grid b into b; (a, b, building id)."""
    state = plans.load_state(conn, plan_id)
    a, b = _neighbours(state)
    bf = plans.buildings_frame(conn, community["id"])
    pts = shapely.point_on_surface(bf["geom"])
    d = shapely.distance(pts, state.rows[b]["geom"])
    d[~shapely.covers(state.rows[a]["geom"], pts)] = np.inf
    moved = int(bf["id"][np.argmin(d)])
    plans.apply_operation(conn, plan_id, {"type": "move_buildings", "building_ids": [moved], "to": b})
    return a, b, moved, bf


def test_diff_lists_moves_staff_and_units(db_session, community, plan_id):
    from geo.plans.diff import diff

    conn = _conn(db_session)
    empty = diff(conn, plan_id)
    assert empty["totals"]["buildings"] == 0 and not empty["grid"]["changed"] and not empty["staff"]
    a, b, moved, bf = _move_one(conn, community, plan_id)
    d = diff(conn, plan_id, geometry=True)
    assert [m["building_id"] for m in d["buildings"]] == [moved]
    i = int(np.flatnonzero(bf["id"] == moved)[0])
    assert d["moves"] == [{"from": a, "to": b, "buildings": 1, "units": int(bf["units"][i]),
                           "households": int(bf["households"][i]), "population": int(bf["population"][i])}]
    assert {c["key"] for c in d["grid"]["changed"]} == {a, b}
    # staff on grid a and b, and the building head of the moved building, are affected
    expected = db_session.execute(text("""
        SELECT count(*) FROM staff_assignments s LEFT JOIN units u ON u.id = s.unit_id
        WHERE (s.valid_to IS NULL OR s.valid_to >= current_date)
          AND (s.grid_id = ANY(:g) OR s.building_id = :b OR u.building_id = :b
               OR s.micro_grid_id = ANY(:m))
    """), {"g": [int(a[1:]), int(b[1:])], "b": moved,
           "m": [int(c["key"][1:]) for c in d["micro_grid"]["changed"]]}).scalar()
    assert len(d["staff"]) == expected > 0
    assert d["classification"]["available"], d["classification"]
    assert len(d["moved_geojson"]["features"]) == 1


def test_publish_then_locate_and_classification_follow_the_new_version(db_session, community, plan_id):
    from geo.classify import classification as classify
    from geo.locate.reference import locate_sql
    from geo.plans.publish import publish

    conn = _conn(db_session)
    a, b, moved, bf = _move_one(conn, community, plan_id)
    i = int(np.flatnonzero(bf["id"] == moved)[0])
    pt = shapely.point_on_surface(bf["geom"][i])
    a_id, b_id = int(a[1:]), int(b[1:])
    before_ts = conn.execute(text("SELECT clock_timestamp()")).scalar()
    codes_before = dict(db_session.execute(text("SELECT id, code FROM grids")).all())
    out = publish(conn, plan_id, "tester")
    after_ts = conn.execute(text("SELECT clock_timestamp()")).scalar()
    assert sorted(out["grids"]["changed"]) == sorted([codes_before[a_id], codes_before[b_id]])
    assert not out["grids"]["created"] and not out["grids"]["ended"]
    # codes are stable: no grid identity changed
    assert dict(db_session.execute(text("SELECT id, code FROM grids")).all()) == codes_before
    assert locate_sql(conn, pt.x, pt.y, at=after_ts)["grid"] == b_id
    assert locate_sql(conn, pt.x, pt.y, at=before_ts)["grid"] == a_id
    # the stored classification is the new version's
    run = classify.read_run(conn, out["version_id"], "grid")
    # an earlier date is answered by the old version's classification
    old = classify.ensure_classification(conn, "grid", at=before_ts)
    assert old["version"]["id"] != out["version_id"]
    assert classify.ensure_classification(conn, "grid", at=after_ts)["version"]["id"] == out["version_id"]
    assert out["classification"].get("refreshed"), out["classification"]
    assert run is not None
    assert db_session.execute(text("SELECT status FROM plans WHERE id = :p"), {"p": plan_id}).scalar() == "published"
    with pytest.raises(plans.PlanError):
        plans.apply_operation(conn, plan_id, {"type": "merge", "keys": [a, b]})


def test_a_failing_classification_refresh_is_rolled_back_to_its_savepoint(db_session, community, plan_id,
                                                                           monkeypatch):
    """Classification failing in SQL inside publish: its savepoint is rolled back, the publish is kept and the
    transaction stays usable for the statements after it."""
    from geo.classify import classification as classify
    from geo.plans.publish import publish

    conn = _conn(db_session)
    _move_one(conn, community, plan_id)

    def broken_refresh(c, at=None, rules=None):
        c.execute(text("UPDATE plans SET label = 'half-written' WHERE id = :p"), {"p": plan_id})
        c.execute(text("SELECT 1 / 0"))  # aborts the transaction unless a savepoint catches it

    monkeypatch.setattr(classify, "refresh", broken_refresh)
    out = publish(conn, plan_id, "tester")
    assert out["classification"]["refreshed"] is False and "division by zero" in out["classification"]["error"]
    # the statements after the failure ran (token, status), and the failed refresh's own write was undone
    assert out["token"] == plans.community_token(conn, community["id"])
    row = conn.execute(text("SELECT status, label FROM plans WHERE id = :p"), {"p": plan_id}).one()
    assert row == ("published", None)
    assert conn.execute(text("SELECT count(*) FROM boundary_versions WHERE id = :v"),
                        {"v": out["version_id"]}).scalar() == 1


def test_publish_lets_unexpected_errors_through(db_session, community, plan_id, monkeypatch):
    """Only classification's refusals and SQL errors are reported in the answer; a bug is not swallowed."""
    from geo.classify import classification as classify
    from geo.plans.publish import publish

    conn = _conn(db_session)
    _move_one(conn, community, plan_id)

    def buggy_refresh(c, at=None, rules=None):
        raise RuntimeError("a bug")

    monkeypatch.setattr(classify, "refresh", buggy_refresh)
    with pytest.raises(RuntimeError, match="a bug"):
        publish(conn, plan_id, "tester")


def test_diff_without_classification_still_answers_and_the_transaction_is_usable(db_session, community, plan_id,
                                                                                 monkeypatch):
    from geo.classify import classification as classify
    from geo.plans.diff import diff

    conn = _conn(db_session)
    a, b, moved, _ = _move_one(conn, community, plan_id)

    def refuse(*args, **kwargs):
        raise classify.ClassifyError("no metric CRS for these grids")

    monkeypatch.setattr(classify, "measure_frames", refuse)
    d = diff(conn, plan_id)
    assert d["classification"] == {"available": False, "error": "no metric CRS for these grids", "changed": []}
    assert [m["building_id"] for m in d["buildings"]] == [moved]
    assert conn.execute(text("SELECT count(*) FROM plans WHERE id = :p"), {"p": plan_id}).scalar() == 1

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(classify, "measure_frames", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        diff(conn, plan_id)


def test_new_grids_get_codes_in_reading_order_and_rollback(db_session, community, plan_id):
    from geo.locate.reference import locate_sql
    from geo.plans.publish import publish, rollback

    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    g = max(state.live("grid"), key=lambda r: shapely.area(r["geom"]))
    minx, miny, maxx, maxy = shapely.bounds(g["geom"])
    # cut the grid into a west, middle and east third: the two new pieces get codes west→east
    for x in (minx + (maxx - minx) / 3, minx + 2 * (maxx - minx) / 3):
        cur = plans.load_state(conn, plan_id)
        probe = shapely.Point(x + 1e-6, (miny + maxy) / 2)
        owner = next(r for r in cur.live("grid") if shapely.intersects(r["geom"], probe))
        plans.apply_operation(conn, plan_id, {"type": "split", "key": owner["key"], "line": mapping(
            shapely.LineString([(x, miny - 0.001), (x, maxy + 0.001)]))})
    out = publish(conn, plan_id, "tester", allow_errors=True)
    created = out["grids"]["created"]
    assert len(created) == 2 and all(c.startswith(community["code"]) and len(c) == 15 for c in created)
    xs = [db_session.execute(text("SELECT ST_X(ST_PointOnSurface(geom)) FROM grids_at(clock_timestamp()) "
                                  "WHERE code = :c"), {"c": c}).scalar() for c in sorted(created)]
    assert xs == sorted(xs)
    max_old = db_session.execute(text("SELECT max(code) FROM grids WHERE community_id = :c AND code <> ALL(:n)"),
                                 {"c": community["id"], "n": created}).scalar()
    assert min(created) > max_old
    after_ts = conn.execute(text("SELECT clock_timestamp()")).scalar()
    east = db_session.execute(text("SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)), id "
                                   "FROM grids_at(clock_timestamp()) WHERE code = :c"), {"c": max(created)}).one()
    assert locate_sql(conn, east[0], east[1], at=after_ts)["grid"] == east[2]
    back = rollback(conn, out["version_id"], "tester")
    res = back["results"][0]
    assert sorted(res["grids"]["ended"]) == sorted(created)
    later = conn.execute(text("SELECT clock_timestamp()")).scalar()
    assert locate_sql(conn, east[0], east[1], at=later)["grid"] == g["unit_id"]
    n_now = db_session.execute(text("SELECT count(*) FROM grids_at(clock_timestamp()) WHERE community_id = :c"),
                               {"c": community["id"]}).scalar()
    assert n_now == len(state.live("grid"))
    # three versions stand in history; the rollback is a new one, nothing was deleted
    assert res["version_id"] > out["version_id"]


def test_stale_plan_revision_and_stale_publish(db_session, community, plan_id):
    from geo.plans.publish import StalePublished, publish

    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    a, b = _neighbours(state)
    plans.apply_operation(conn, plan_id, {"type": "merge", "keys": [a, b]}, if_revision=0)
    with pytest.raises(plans.StaleRevision) as err:
        plans.undo(conn, plan_id, if_revision=0)
    assert err.value.current == 1 and err.value.changes[0]["op"]["type"] == "merge"
    other = plans.create_plan(conn, community["code"], "someone else")
    publish(conn, plan_id, "tester", allow_errors=True)
    with pytest.raises(StalePublished) as err:
        publish(conn, other, "someone else", allow_errors=True)
    assert err.value.changes and err.value.changes[-1]["created_by"] == "tester"


# ------------------------------------------------------------------------------------------------- HTTP

def test_http_two_clients_one_wins_one_gets_412_nothing_lost(client, make_user, community):
    planner = make_user("planner", community["code"])["headers"]
    r = client.post("/v1/plans", json={"community_code": community["code"]}, headers=planner)
    assert r.status_code == 201, r.text
    pid, etag = r.json()["id"], r.headers["ETag"]
    grids = [f for f in r.json()["units"]["features"] if f["properties"]["level"] == "grid"]
    k1, k2, k3 = grids[0]["id"], grids[1]["id"], grids[2]["id"]
    # both planners loaded the same revision; the first edit wins
    a = client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": k1},
                    headers={**planner, "If-Match": etag})
    assert a.status_code == 200, a.text
    assert a.json()["validation"]["problems"]
    b = client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": k2},
                    headers={**planner, "If-Match": etag})
    assert b.status_code == 412
    assert b.headers["content-type"].startswith("application/problem+json")
    body = b.json()
    assert body["current_etag"] == a.headers["ETag"] and body["changes"][0]["op"]["key"] == k1
    # the loser reloads and retries: both edits are in the plan
    fresh = client.get(f"/v1/plans/{pid}", headers=planner)
    c = client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": k2},
                    headers={**planner, "If-Match": fresh.headers["ETag"]})
    assert c.status_code == 200
    units = {f["id"] for f in client.get(f"/v1/plans/{pid}", headers=planner).json()["units"]["features"]}
    assert k1 not in units and k2 not in units and k3 in units
    u = client.post(f"/v1/plans/{pid}/undo", headers={**planner, "If-Match": c.headers["ETag"]})
    assert u.status_code == 200 and u.json()["undone"]["op"]["key"] == k2
    assert client.get(f"/v1/plans/{pid}/validation", headers=planner).status_code == 200
    d = client.get(f"/v1/plans/{pid}/diff", headers=planner).json()
    assert [x["key"] for x in d["grid"]["retired"]] == [k1]


def test_http_publish_412_on_stale_version_and_rollback(client, make_user, community, db_session):
    planner = make_user("planner", community["code"])["headers"]
    p1 = client.post("/v1/plans", json={"community_code": community["code"]}, headers=planner).json()
    p2 = client.post("/v1/plans", json={"community_code": community["code"]}, headers=planner).json()
    state = plans.load_state(db_session.connection(), p1["id"])
    a, b = _neighbours(state)
    r = client.post(f"/v1/plans/{p1['id']}/operations", json={"type": "merge", "keys": [a, b]},
                    headers={**planner, "If-Match": p1["etag"]})
    assert r.status_code == 200
    pub = client.post(f"/v1/plans/{p1['id']}/publish", json={"allow_errors": True},
                      headers={**planner, "If-Match": p1["published_etag"]})
    assert pub.status_code == 200, pub.text
    assert pub.headers["ETag"] != p1["published_etag"]
    # the second planner drafted against the old version: 412 naming the version published meanwhile
    stale = client.post(f"/v1/plans/{p2['id']}/publish", json={"allow_errors": True},
                        headers={**planner, "If-Match": p2["published_etag"]})
    assert stale.status_code == 412
    assert stale.json()["changes"][-1]["version_id"] == pub.json()["version_id"]
    back = client.post(f"/v1/versions/{pub.json()['version_id']}/rollback", headers=planner)
    assert back.status_code == 200, back.text
    assert back.json()["results"][0]["grids"]["changed"] or back.json()["results"][0]["grids"]["created"] == []
    n = db_session.execute(text("SELECT count(*) FROM grids_at(clock_timestamp()) WHERE community_id = :c"),
                           {"c": community["id"]}).scalar()
    assert n == len(state.live("grid"))
    audit = db_session.execute(text("SELECT action FROM audit_log WHERE action IN ('plan.publish','version.rollback')"
                                    )).scalars().all()
    assert "plan.publish" in audit and "version.rollback" in audit


def test_http_jurisdiction(client, make_user, community, db_session):
    other = db_session.execute(text("SELECT code FROM communities WHERE code <> :c LIMIT 1"),
                               {"c": community["code"]}).scalar()
    outsider = make_user("planner", other)["headers"]
    assert client.post("/v1/plans", json={"community_code": community["code"]}, headers=outsider).status_code == 403
    leader = make_user("leader", community["code"])["headers"]
    assert client.post("/v1/plans", json={"community_code": community["code"]}, headers=leader).status_code == 403
    mine = make_user("planner", community["code"])["headers"]
    pid = client.post("/v1/plans", json={"community_code": community["code"]}, headers=mine).json()["id"]
    assert client.get(f"/v1/plans/{pid}", headers=outsider).status_code == 403
    assert client.get(f"/v1/plans/{pid}", headers=leader).status_code == 200
    assert client.post(f"/v1/plans/{pid}/undo", headers=outsider).status_code == 403


# ------------------------------------------------------------------------------------------------ suggest

def test_suggestion_respects_band_on_every_generated_community(db_session, monkeypatch):
    from geo.plans.suggest import suggest_for_plan
    from geo.plans.validation import context_for
    from geo.settings import get_settings

    conn = _conn(db_session)
    codes = db_session.execute(text("SELECT code FROM communities ORDER BY code")).scalars().all()
    rules = get_settings().rules
    checked = 0
    for code in codes:
        pid = plans.create_plan(conn, code, "tester")
        state = plans.load_state(conn, pid)
        ctx = context_for(conn, state.community_id)
        total = int(validate(conn, pid)["grids"] and sum(
            g["households"] for g in validate(conn, pid)["grids"] if g["kind"] == "comprehensive"))
        if total == 0:
            continue
        # at scale 0.05 households are few: scale the band to this community so a solution exists
        n = max(1, len([g for g in state.live("grid") if g["kind"] == "comprehensive"]))
        big = max(ctx.buildings["households"][ctx.buildings["compound_id"] == c].sum()
                  for c in np.unique(ctx.buildings["compound_id"]))
        lo, hi = int(total / n * 0.5), max(int(total / n * 1.5), int(big)) + 1
        monkeypatch.setattr(rules, "grid_households_min", lo)
        monkeypatch.setattr(rules, "grid_households_max", hi)
        s1 = suggest_for_plan(conn, pid, seed=3)
        s2 = suggest_for_plan(conn, pid, seed=3)
        assert s1["households_per_grid"] == s2["households_per_grid"]  # reproducible
        assert s1.get("regions") == s2.get("regions") and s1.get("reproducible", True)
        if not s1["feasible"]:
            assert s1["reasons"]
            continue
        assert s1["in_band"], (code, s1["households_per_grid"], lo, hi, s1["search"], s1["atoms"])
        assert all(lo <= h <= hi for h in s1["households_per_grid"])
        assert s1["fitting_compounds_split"] == 0
        # every compound that fits the band stays in one region
        cid = dict(zip(ctx.buildings["id"].tolist(), ctx.buildings["compound_id"].tolist(), strict=True))
        where = {}
        for r in s1["regions"]:
            for b in r["building_ids"]:
                if cid[b] >= 0:
                    where.setdefault(cid[b], set()).add(r["label"])
        hh = dict(zip(ctx.buildings["id"].tolist(), ctx.buildings["households"].tolist(), strict=True))
        for c, labs in where.items():
            chh = sum(h for b, h in hh.items() if cid[b] == c)
            if chh <= hi:
                assert len(labs) == 1, (code, c)
        checked += 1
    assert checked >= 3


def test_a_search_cut_by_the_time_guard_says_it_is_not_reproducible(db_session, community):
    from geo.plans.suggest import suggest_state
    from geo.plans.validation import context_for

    conn = _conn(db_session)
    pid = plans.create_plan(conn, community["code"], "tester")
    state = plans.load_state(conn, pid)
    ctx = context_for(conn, state.community_id)
    full = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=4)
    assert full["reproducible"] and full["search"]["stopped_by"] in ("steps", "converged")
    assert "时间上限" not in full["explanation"]
    # a zero guard cuts the search before its first step, whatever the machine
    cut = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=4, time_budget_s=0.0)
    if cut["search"]["stopped_by"] != "converged":  # a start already perfect needs no search to cut
        assert cut["reproducible"] is False and "时间上限" in cut["explanation"]


def test_suggestion_infeasible_is_explained_and_apply(client, make_user, community, monkeypatch, db_session):
    from geo.settings import get_settings

    rules = get_settings().rules
    planner = make_user("planner", community["code"])["headers"]
    created = client.post("/v1/plans", json={"community_code": community["code"]}, headers=planner)
    pid = created.json()["id"]
    monkeypatch.setattr(rules, "grid_households_min", 10_000)
    monkeypatch.setattr(rules, "grid_households_max", 10_001)
    r = client.post(f"/v1/plans/{pid}/suggest", json={"seed": 1}, headers=planner)
    assert r.status_code == 200 and not r.json()["feasible"]
    assert "个网格" in r.json()["reasons"][0] or "超过上限" in r.json()["reasons"][0]
    total = sum(g["households"] for g in validate(db_session.connection(), pid)["grids"]
                if g["kind"] == "comprehensive")
    monkeypatch.setattr(rules, "grid_households_min", int(total / 8))
    monkeypatch.setattr(rules, "grid_households_max", int(total / 3))
    r = client.post(f"/v1/plans/{pid}/suggest", json={"seed": 1, "apply": True}, headers=planner)
    assert r.status_code == 428  # applying is an edit: it names the revision it changes
    r = client.post(f"/v1/plans/{pid}/suggest", json={"seed": 1, "apply": True},
                    headers={**planner, "If-Match": created.headers["ETag"]})
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["feasible"] and s["in_band"] and s["applied"]["revision"] == 1
    v = client.get(f"/v1/plans/{pid}/validation", headers=planner).json()
    comp = [g for g in v["grids"] if g["kind"] == "comprehensive"]
    assert sorted(g["households"] for g in comp) == sorted(s["households_per_grid"])
    assert not [p for p in v["problems"] if p["rule"] in ("overlap", "gap")]


def _row_community(households, compound_ids, compound_names, spans):
    """A hand-made community: buildings in a west→east row (households, compound id or -1), current comprehensive
    grids as [start, end) spans of that row; (state, context)."""
    from geo.plans.drafts import PlanState
    from geo.plans.validation import Context

    lon0, lat0, step, w = 113.1, 29.37, 0.0005, 0.0002
    n = len(households)
    geoms = shapely.box(lon0 + np.arange(n) * step, lat0, lon0 + np.arange(n) * step + w, lat0 + w)
    hh = np.asarray(households, dtype=np.int64)
    buildings = {"id": np.arange(1, n + 1, dtype=np.int64), "compound_id": np.asarray(compound_ids, dtype=np.int64),
                 "households": hh, "population": hh * 3, "units": np.ones(n, dtype=np.int64),
                 "geom": np.asarray(geoms, dtype=object)}
    cids = sorted(compound_names)
    cgeoms = [shapely.envelope(shapely.union_all(geoms[buildings["compound_id"] == c])) for c in cids]
    compounds = {"id": np.asarray(cids, dtype=np.int64), "name": np.asarray([compound_names[c] for c in cids],
                                                                           dtype=object),
                 "geom": np.asarray(cgeoms, dtype=object)}
    rows = {}
    for j, (a, b) in enumerate(spans):
        key = f"g{j}"
        rows[key] = {"key": key, "level": "grid", "kind": "comprehensive", "retired": False, "parent_key": None,
                     "community_id": 1, "geom": shapely.box(lon0 + a * step - 0.00015, lat0 - w,
                                                            lon0 + b * step - 0.00015, lat0 + 2 * w)}
    community = shapely.union_all([r["geom"] for r in rows.values()])
    state = PlanState(0, 1, "430699001001", 0, "draft", rows, communities={1: "430699001001"})
    ctx = Context(None, 1, (community, buildings, compounds))
    # a planar projection keeps the row exactly collinear (UTM bends it by micrometres, and Delaunay then links
    # buildings that are not next to each other): the adjacency is the row's path, as the test means it
    ctx.proj = SimpleNamespace(metric=lambda geoms: shapely.transform(np.asarray(geoms, dtype=object),
                                                                      lambda c: c * 1e5))
    return state, ctx


def _band(monkeypatch, lo=300, hi=500):
    from geo.settings import get_settings

    rules = get_settings().rules
    monkeypatch.setattr(rules, "grid_households_min", lo)
    monkeypatch.setattr(rules, "grid_households_max", hi)


def test_band_infeasible_with_whole_compounds_is_explained_in_numbers(monkeypatch):
    from geo.plans.suggest import suggest_state

    _band(monkeypatch)
    # 甲 460 and 乙 455 households, 121 loose: 1,036 households allow exactly 3 grids, and two of them are full
    state, ctx = _row_community([115] * 4 + [91] * 5 + [40, 40, 41], [1] * 4 + [2] * 5 + [-1] * 3,
                                {1: "甲小区", 2: "乙小区"}, [(0, 4), (4, 9), (9, 12)])
    # budgets are step counts and CP-SAT work units, never the wall clock: the same answer on a loaded machine
    s = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=1, steps=50)
    assert s["feasible"] and not s["in_band"] and s["band_infeasible"] is True
    assert s["grids_needed"] == [3, 3]
    assert s["fitting_compounds_split"] == 0
    for part in ("甲小区 460 户", "乙小区 455 户", "须各占一个网格", "其余单元只有 121 户", "另 1 个网格各需 300 户"):
        assert part in s["explanation"], s["explanation"]
    assert s["band_reasons"] and s["band_reasons"][0].startswith("3 个网格: ")
    json.dumps(s)  # the API returns it as is: plain Python values only
    # the same numbers a second time (seeded, deterministic budgets)
    again = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=1, steps=50)
    assert s["reproducible"] and again["search"]["steps"] == s["search"]["steps"] == 50
    assert again["band_reasons"] == s["band_reasons"] and again["households_per_grid"] == s["households_per_grid"]
    assert again["explanation"] == s["explanation"]


def test_counting_certificate_and_packing():
    from geo.plans.suggest_band import check_band, counting_certificate, pack

    names = ["A", "B", "C", "D"]
    # three atoms that pairwise exceed 500 cannot share 2 grids
    assert "至少要 3 个网格" in counting_certificate(np.array([260, 270, 280, 10]), names, 2, 300, 500)
    # sizes that count fine: counting cannot tell, CP-SAT packs them
    hh = np.array([250, 250, 200, 100])
    assert counting_certificate(hh, names, 2, 300, 500) is None
    status, assign = pack(hh, 2, 300, 500)
    assert status == "feasible" and all(300 <= v <= 500 for v in np.bincount(assign, weights=hh))
    # five atoms of 160 in 2 grids of 300–400: the counts allow it (800 = 2 × 400), the sizes do not (320 or 480)
    five = np.array([160] * 5)
    assert counting_certificate(five, names + ["E"], 2, 300, 400) is None
    checks = check_band(five, names + ["E"], 300, 400)
    assert [c.k for c in checks] == [2] and checks[0].status == "infeasible"
    assert "CP-SAT" in checks[0].reason and "160" in checks[0].reason


def test_contiguity_alone_makes_the_band_infeasible(monkeypatch):
    from geo.plans.suggest import suggest_state
    from geo.plans.suggest_band import contiguous_partition, pack

    g = nx.path_graph(3)
    hh = np.array([250, 500, 250])
    assert pack(hh, 2, 300, 500)[0] == "feasible"  # {250, 250} and {500}, but they are not neighbours
    status, assign, _ = contiguous_partition(g, hh, np.array([0, 0, 1]), 2, 300, 500)
    assert status == "infeasible" and assign is None
    _band(monkeypatch)
    state, ctx = _row_community([250, 500, 250], [-1, -1, -1], {}, [(0, 2), (2, 3)])
    s = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=2, steps=50)
    assert not s["in_band"] and s["band_infeasible"] is True
    assert "连片" in s["explanation"] and "2 个网格" in s["explanation"], s["explanation"]


def test_cp_sat_repair_puts_grids_in_band_moving_fewest(monkeypatch):
    from geo.plans.suggest import suggest_state

    _band(monkeypatch)
    # 8 buildings of 100 in a row; today 600 + 200. ReCom gets no time (it returns today's grids), the exact step
    # must move exactly one building, next to the boundary
    state, ctx = _row_community([100] * 8, [-1] * 8, {}, [(0, 6), (6, 8)])
    runs = [suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=5, steps=0,
                          repair_budget=2.0) for _ in range(2)]
    s = runs[0]
    assert s["method"] == "recom+cp-sat" and s["in_band"]
    assert sorted(s["households_per_grid"]) == [300, 500] and s["households_moved"] == 100
    by_key = {r["key"]: sorted(r["building_ids"]) for r in s["regions"]}
    assert by_key == {"g0": [1, 2, 3, 4, 5], "g1": [6, 7, 8]}
    assert runs[1]["regions"] == s["regions"]
    json.dumps(s)
    assert s["search"]["repair"]["contiguous"][0]["status"] == "OPTIMAL"


def test_a_cp_sat_search_cut_by_the_wall_guard_is_reported(monkeypatch):
    """The exact step's budget is CP-SAT work units; when the wall-clock guard (not the budget) ends a search, the
    suggestion says it is not reproducible instead of passing the cut answer off as the seed's."""
    from geo.plans import suggest_band
    from geo.plans.suggest import suggest_state

    _band(monkeypatch)
    state, ctx = _row_community([100] * 8, [-1] * 8, {}, [(0, 6), (6, 8)])
    calm = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=5, steps=0,
                         repair_budget=2.0)
    assert calm["reproducible"] and "精确求解" not in calm["explanation"]
    real_solver = suggest_band._solver

    def overloaded(seed, budget):
        solver = real_solver(seed, budget)
        solver.parameters.max_time_in_seconds = 0.0  # a machine so slow the guard fires before any work is done
        return solver

    monkeypatch.setattr(suggest_band, "_solver", overloaded)
    cut = suggest_state(state, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed=5, steps=0,
                        repair_budget=2.0)
    assert cut["reproducible"] is False and "精确求解 (CP-SAT) 在时间上限处截止" in cut["explanation"]
    guard = suggest_band.Guard()
    status, _ = suggest_band.pack(np.array([100] * 8), 2, 300, 500, budget=2.0, guard=guard)
    assert status == "unknown" and guard.hit


def test_real_race_two_connections_one_wins(engine, community):
    """Two planners on two database connections edit the same revision at once: one wins, one is refused with
    what changed, nothing is lost after the loser retries."""
    import threading

    with engine.begin() as conn:
        pid = plans.create_plan(conn, community["code"], "race")
        keys = [r["key"] for r in plans.load_state(conn, pid).live("grid")[:2]]
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def edit(name, key):
        with engine.connect() as conn:
            trans = conn.begin()
            barrier.wait()
            try:
                out = plans.apply_operation(conn, pid, {"type": "retire", "key": key}, name, if_revision=0)
                trans.commit()
                results[name] = out
            except plans.StaleRevision as exc:
                trans.rollback()
                results[name] = exc

    try:
        threads = [threading.Thread(target=edit, args=(f"p{i}", k)) for i, k in enumerate(keys)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        won = [n for n, r in results.items() if isinstance(r, dict)]
        lost = [n for n, r in results.items() if isinstance(r, plans.StaleRevision)]
        assert len(won) == 1 and len(lost) == 1
        assert results[lost[0]].changes[0]["actor"] == won[0]
        loser_key = keys[int(lost[0][1])]
        with engine.begin() as conn:
            plans.apply_operation(conn, pid, {"type": "retire", "key": loser_key}, lost[0], if_revision=1)
        with engine.connect() as conn:
            state = plans.load_state(conn, pid)
            assert state.revision == 2 and all(state.rows[k]["retired"] for k in keys)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM plans WHERE id = :p"), {"p": pid})


def test_moving_every_building_of_a_grid_moves_all_its_land(db_session, community, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    a, b = _neighbours(state)
    bf = plans.buildings_frame(conn, community["id"])
    ids = bf["id"][shapely.covers(state.rows[a]["geom"], shapely.point_on_surface(bf["geom"]))]
    if ids.size == 0:
        pytest.skip("grid without buildings")
    plans.apply_operation(conn, plan_id, {"type": "move_buildings", "building_ids": ids.tolist(), "to": b})
    after = plans.load_state(conn, plan_id)
    assert after.rows[a]["retired"]  # no land left: retired, not an empty grid
    v = validate(conn, plan_id)
    assert not any(b in p["keys"] for p in _rules(v, "not_contiguous"))
    assert not _rules(v, "gap") and not _rules(v, "overlap")


def test_move_buildings_between_micro_grids(db_session, community, plan_id):
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    bf = plans.buildings_frame(conn, community["id"])
    pts = shapely.point_on_surface(bf["geom"])
    for g in state.live("grid"):
        micros = state.live("micro_grid", g["key"])
        if len(micros) < 2:
            continue
        src, dst = micros[0], micros[1]
        inside = np.flatnonzero(shapely.covers(src["geom"], pts))
        if inside.size < 2:
            continue
        i = inside[np.argmin(shapely.distance(pts[inside], dst["geom"]))]
        plans.apply_operation(conn, plan_id, {"type": "move_buildings", "building_ids": [int(bf["id"][i])],
                                              "to": dst["key"]})
        after = plans.load_state(conn, plan_id)
        assert shapely.covers(after.rows[dst["key"]]["geom"], pts[i])
        assert not shapely.covers(after.rows[src["key"]]["geom"], pts[i])
        v = validate(conn, plan_id)
        assert not _rules(v, "micro_tiling") and not _rules(v, "overlap")
        # the grid itself did not change: the building stayed in its grid
        assert shapely.area(shapely.symmetric_difference(after.rows[g["key"]]["geom"], g["geom"])) < 1e-12
        return
    pytest.skip("no grid with two micro-grids and buildings")


# ------------------------------------------------------------------------------ publish, then locate over HTTP

def test_http_publish_then_locate_and_classification_answer_by_the_new_version(migrated_engine, district):
    """Through the API on a database that really commits (the locate index reads through its own connections, so a
    rolled-back test transaction would be invisible to it): publish a move, then GET /v1/locate answers the new
    grid from the first request after it, and ``at=`` before it the old one;
    the classification is the new version's, and at the earlier date the old one's."""
    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session

    from api.auth import issue_token
    from api.main import create_app
    from geo.access.users import create_user
    from geo.store.load import load_district

    load_district(migrated_engine, district)
    with Session(migrated_engine) as s:
        user = create_user(s, "publisher", "a long enough password", "admin", None)
        s.commit()
        headers = {"Authorization": f"Bearer {issue_token(user)}"}
    with migrated_engine.connect() as conn:
        code, cid = conn.execute(text("""
            SELECT c.code, c.id FROM communities c JOIN grids g ON g.community_id = c.id
            WHERE g.kind = 'comprehensive' GROUP BY c.id ORDER BY count(*) DESC, c.code LIMIT 1
        """)).one()
        bf = plans.buildings_frame(conn, cid)
        compound_id = conn.execute(text("SELECT id FROM compounds WHERE community_id = :c ORDER BY id LIMIT 1"),
                                   {"c": cid}).scalar()
    with TestClient(create_app(migrated_engine), raise_server_exceptions=False) as client:
        created = client.post("/v1/plans", json={"community_code": code}, headers=headers)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        with migrated_engine.connect() as conn:
            state = plans.load_state(conn, pid)
        a, b = _neighbours(state)
        pts = shapely.point_on_surface(bf["geom"])
        d = shapely.distance(pts, state.rows[b]["geom"])
        d[~shapely.covers(state.rows[a]["geom"], pts)] = np.inf
        i = int(np.argmin(d))
        pt = pts[i]
        grid_code = {k: state.rows[k]["code"] for k in (a, b)}

        def locate(**extra):
            r = client.get("/v1/locate", params={"lon": pt.x, "lat": pt.y, **extra})
            assert r.status_code == 200, r.text
            return r.json()

        def classification(**extra):
            r = client.get(f"/v1/compounds/{compound_id}/classification", params=extra, headers=headers)
            assert r.status_code == 200, r.text
            return r.json()["version"]["id"]

        first = locate()  # builds the index of the version in force now
        assert first["grid"]["code"] == grid_code[a]
        old_version = classification()
        r = client.post(f"/v1/plans/{pid}/operations", json={"type": "move_buildings",
                                                             "building_ids": [int(bf["id"][i])], "to": b},
                        headers={**headers, "If-Match": created.headers["ETag"]})
        assert r.status_code == 200, r.text
        with migrated_engine.connect() as conn:
            before_ts = conn.execute(text("SELECT clock_timestamp()")).scalar()
        pub = client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True},
                          headers={**headers, "If-Match": created.json()["published_etag"]})
        assert pub.status_code == 200, pub.text
        new_version = pub.json()["version_id"]
        # the index heard of the publish (the database's notification or the route's own call) before the
        # response: the very first lookup after it answers by the new boundaries (it waits for the rebuild)
        now = locate()
        assert now["grid"]["code"] == grid_code[b]
        assert now["version"]["id"] == new_version
        then = locate(at=before_ts.isoformat())
        assert then["grid"]["code"] == grid_code[a] and then["version"]["id"] != new_version
        assert classification() == new_version
        assert classification(at=before_ts.isoformat()) == old_version != new_version


# ------------------------------------------------------------------------------- rollback over later changes

def _merge_and_publish(conn, code, who="tester"):
    """Publish a community plan that merges two neighbouring grids; the publish summary."""
    from geo.plans.publish import publish

    pid = plans.create_plan(conn, code, who)
    a, b = _neighbours(plans.load_state(conn, pid))
    plans.apply_operation(conn, pid, {"type": "merge", "keys": [a, b]})
    return publish(conn, pid, who, allow_errors=True)


def _community_units(conn, community_id, at=None):
    """The community's grids and micro-grids in force at `at` (default now): {(level, id): (code, parent, geom)}."""
    rows = conn.execute(text("""
        SELECT 'grid', g.id, g.code, g.community_id, ST_AsBinary(g.geom)
        FROM grids_at(coalesce(CAST(:t AS timestamptz), clock_timestamp())) g WHERE g.community_id = :c
        UNION ALL
        SELECT 'micro_grid', m.id, m.code, m.grid_id, ST_AsBinary(m.geom)
        FROM micro_grids_at(coalesce(CAST(:t AS timestamptz), clock_timestamp())) m
        JOIN grids g ON g.id = m.grid_id WHERE g.community_id = :c
    """), {"t": at, "c": community_id}).all()
    return {(r[0], r[1]): (r[2], r[3], shapely.from_wkb(bytes(r[4]))) for r in rows}


def _assert_same_units(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k][:2] == b[k][:2], k
        assert shapely.equals_exact(shapely.normalize(a[k][2]), shapely.normalize(b[k][2]), tolerance=1e-9), k


def _written(conn, community_id):
    """What a refused rollback must not change: the boundary rows in force now and the number of versions."""
    rows = conn.execute(text("""
        SELECT 'g' || boundary_id FROM grids_at(clock_timestamp()) WHERE community_id = :c
        UNION ALL
        SELECT 'm' || m.boundary_id FROM micro_grids_at(clock_timestamp()) m JOIN grids g ON g.id = m.grid_id
        WHERE g.community_id = :c
    """), {"c": community_id}).scalars().all()
    return sorted(rows), conn.execute(text("SELECT count(*) FROM boundary_versions")).scalar()


def _now(conn):
    return conn.execute(text("SELECT clock_timestamp()")).scalar()


def test_community_rollback_refused_over_later_changes_unless_if_match_is_current(db_session, community):
    from geo.plans.publish import StalePublished, rollback

    conn = _conn(db_session)
    before_v1 = _community_units(conn, community["id"])
    v1 = _merge_and_publish(conn, community["code"])
    after_v1 = _community_units(conn, community["id"])
    v2 = _merge_and_publish(conn, community["code"], "someone else")
    written = _written(conn, community["id"])
    # rolling back v1 would overwrite v2: refused, naming v2, with or without `*`, and nothing is written
    for if_published in (None, []):
        with pytest.raises(StalePublished) as exc:
            rollback(conn, v1["version_id"], "tester", if_published=if_published)
        assert [c["version_id"] for c in exc.value.changes] == [v2["version_id"]]
        assert str(v2["version_id"]) in str(exc.value) and community["code"] in str(exc.value)
        assert exc.value.current == plans.community_token(conn, community["id"]) == v2["token"]
        assert exc.value.etags == {community["code"]: v2["token"]}
        assert _written(conn, community["id"]) == written
    # v1's own ETag is stale as well
    with pytest.raises(StalePublished) as exc:
        rollback(conn, v1["version_id"], "tester", if_published=[v1["token"]])
    assert exc.value.current == v2["token"] and [c["version_id"] for c in exc.value.changes] == [v2["version_id"]]
    assert _written(conn, community["id"]) == written
    # the newest version rolls back without If-Match: v1's boundaries are in force again
    back2 = rollback(conn, v2["version_id"], "tester")
    assert [r["community"] for r in back2["results"]] == [community["code"]]
    _assert_same_units(_community_units(conn, community["id"]), after_v1)
    # v1 was changed since by v2 and by that rollback: both named; with the current ETag it goes through on purpose
    with pytest.raises(StalePublished) as exc:
        rollback(conn, v1["version_id"], "tester")
    assert [c["version_id"] for c in exc.value.changes] == [v2["version_id"], back2["results"][0]["version_id"]]
    n = _written(conn, community["id"])[1]
    back1 = rollback(conn, v1["version_id"], "tester", if_published=[exc.value.current])
    assert len(back1["results"]) == 1 and back1["results"][0]["version_id"] > back2["results"][0]["version_id"]
    assert _written(conn, community["id"])[1] == n + 1
    _assert_same_units(_community_units(conn, community["id"]), before_v1)


def test_multi_community_version_rollback_needs_each_changed_communitys_etag(db_session):
    """A version that changed several communities (as an import does) needs the current ETag of every community
    changed since, as an If-Match list; communities not changed since need none."""
    from geo.plans.publish import StalePublished, publish_state, rollback
    from geo.store.load import create_version

    conn = _conn(db_session)
    rows = db_session.execute(text("""
        SELECT c.code, c.id FROM communities c JOIN grids g ON g.community_id = c.id
        WHERE g.kind = 'comprehensive' GROUP BY c.id ORDER BY count(*) DESC, c.code LIMIT 2
    """)).all()
    (code_a, id_a), (code_b, id_b) = rows
    before = {id_a: _community_units(conn, id_a), id_b: _community_units(conn, id_b)}
    # one version over two communities, written the way an import writes it (no plan behind it)
    ts = _now(conn)
    vid = create_version(conn, ts, "导入 两个社区", "importer")
    for code in (code_a, code_b):
        pid = plans.create_plan(conn, code, "importer")
        a, b = _neighbours(plans.load_state(conn, pid))
        plans.apply_operation(conn, pid, {"type": "merge", "keys": [a, b]})
        publish_state(conn, plans.load_state(conn, pid), ts, "导入 两个社区", "importer", vid)
    later_a = _merge_and_publish(conn, code_a, "someone else")
    n_versions = _written(conn, id_a)[1]
    with pytest.raises(StalePublished) as exc:
        rollback(conn, vid, "tester")
    # only community a changed since: its ETag alone is asked for
    assert exc.value.etags == {code_a: plans.community_token(conn, id_a)}
    assert [c["version_id"] for c in exc.value.changes] == [later_a["version_id"]]
    assert code_a in str(exc.value) and code_b not in str(exc.value).split("send If-Match")[1]
    later_b = _merge_and_publish(conn, code_b, "someone else")
    tok_a, tok_b = plans.community_token(conn, id_a), plans.community_token(conn, id_b)
    # now both changed: a's ETag alone is not enough, the refusal names b's
    with pytest.raises(StalePublished) as exc:
        rollback(conn, vid, "tester", if_published=[tok_a])
    assert exc.value.etags == {code_b: tok_b}
    assert [c["version_id"] for c in exc.value.changes] == [later_b["version_id"]]
    assert tok_b in str(exc.value)
    # an ETag of neither community is refused as well
    with pytest.raises(StalePublished):
        rollback(conn, vid, "tester", if_published=[tok_a, f"c{id_a}-stale"])
    assert _written(conn, id_a)[1] == n_versions + 1  # only later_b was written meanwhile
    back = rollback(conn, vid, "tester", if_published=[tok_b, tok_a])
    assert sorted(r["community"] for r in back["results"]) == sorted([code_a, code_b])
    for cid in (id_a, id_b):
        _assert_same_units(_community_units(conn, cid), before[cid])


def test_http_community_rollback_412_over_later_changes_then_current_etag(client, make_user, community, db_session):
    planner = make_user("planner", community["code"])["headers"]
    conn = db_session.connection()
    before_v1 = _community_units(conn, community["id"])

    def publish_merge():
        p = client.post("/v1/plans", json={"community_code": community["code"]}, headers=planner).json()
        a, b = _neighbours(plans.load_state(db_session.connection(), p["id"]))
        r = client.post(f"/v1/plans/{p['id']}/operations", json={"type": "merge", "keys": [a, b]},
                        headers={**planner, "If-Match": p["etag"]})
        assert r.status_code == 200, r.text
        pub = client.post(f"/v1/plans/{p['id']}/publish", json={"allow_errors": True},
                          headers={**planner, "If-Match": p["published_etag"]})
        assert pub.status_code == 200, pub.text
        return pub

    v1, v2 = publish_merge(), publish_merge()
    written = _written(conn, community["id"])
    n_audit = db_session.execute(text("SELECT count(*) FROM audit_log WHERE action = 'version.rollback'")).scalar()
    url = f"/v1/versions/{v1.json()['version_id']}/rollback"
    for headers in (planner, {**planner, "If-Match": "*"}, {**planner, "If-Match": v1.headers["ETag"]}):
        r = client.post(url, headers=headers)
        assert r.status_code == 412, r.text
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["type"].endswith("stale-version")
        assert [c["version_id"] for c in body["changes"]] == [v2.json()["version_id"]]
        assert body["current_etag"] == v2.headers["ETag"]
        assert body["current_etags"] == {community["code"]: v2.headers["ETag"]}
        assert _written(conn, community["id"]) == written
    assert db_session.execute(text("SELECT count(*) FROM audit_log WHERE action = 'version.rollback'"
                                   )).scalar() == n_audit
    ok = client.post(url, headers={**planner, "If-Match": v2.headers["ETag"]})
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"] == version_etag(ok.json()["results"][0]["token"]) != v2.headers["ETag"]
    assert _written(conn, community["id"])[1] == written[1] + 1
    _assert_same_units(_community_units(conn, community["id"]), before_v1)
    # the rollback is now the newest version: rolling it back needs no If-Match
    newest = client.post(f"/v1/versions/{ok.json()['results'][0]['version_id']}/rollback", headers=planner)
    assert newest.status_code == 200, newest.text


def test_if_match_is_read_in_the_http_layer():
    """Weak tags, lists and ``*`` are header syntax (api.preconditions); the domain gets plain tokens. If-Match
    compares strongly: a weak tag never matches (412); a required one that is absent is 428."""
    from api.preconditions import if_match_token, if_match_tokens, required_if_match
    from api.problems import Problem

    assert if_match_token(None) is None and if_match_token("") is None and if_match_token(" * ") is None
    assert if_match_token('"plan-3-r2"') == "plan-3-r2"
    assert if_match_tokens(None) == [] and if_match_tokens("*") == []
    assert if_match_tokens('"c5-ab", "c6-cd" ,') == ["c5-ab", "c6-cd"]
    for weak in ('W/"plan-3-r2"', '"c5-ab", W/"c6-cd"'):
        with pytest.raises(Problem) as exc:
            if_match_tokens(weak)
        assert exc.value.status == 412 and exc.value.type == "weak-etag"
    for absent in (None, "", "*"):
        with pytest.raises(Problem) as exc:
            required_if_match(absent, "an edit")
        assert exc.value.status == 428 and exc.value.type == "precondition-required"
    assert required_if_match('"plan-3-r2"', "an edit") == "plan-3-r2"


def test_http_refusals_keep_their_status_and_type(client, make_user, community, db_session):
    """Each refusal answers with the status and problem type it always had, through the one DomainError handler."""
    planner = make_user("planner", community["code"])["headers"]
    admin = make_user("admin")["headers"]

    def problem(r, status, slug):
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"] == f"https://gridatlas.dev/problems/{slug}", r.json()
        return r.json()

    problem(client.post("/v1/plans", json={"community_code": "999999999999"}, headers=admin), 404, "plan-error")
    problem(client.get("/v1/plans/987654", headers=admin), 404, "not-found")
    created = client.post("/v1/plans", json={"community_code": community["code"]}, headers=planner)
    pid, etag = created.json()["id"], created.headers["ETag"]
    problem(client.post(f"/v1/plans/{pid}/undo", headers=planner), 428, "precondition-required")
    problem(client.post(f"/v1/plans/{pid}/undo", headers={**planner, "If-Match": etag}), 409, "nothing-to-undo")
    problem(client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": "nope"}, headers=planner),
            428, "precondition-required")
    problem(client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": "nope"},
                        headers={**planner, "If-Match": f"W/{etag}"}), 412, "weak-etag")
    problem(client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": "nope"},
                        headers={**planner, "If-Match": etag}), 422, "plan-operation")
    body = problem(client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": "nope"},
                               headers={**planner, "If-Match": '"plan-0-r1"'}), 412, "stale-plan")
    assert "current_etag" not in body  # not an ETag of this plan: nothing to compare with
    a, b = _neighbours(plans.load_state(db_session.connection(), pid))
    r = client.post(f"/v1/plans/{pid}/operations", json={"type": "merge", "keys": [a, b]},
                    headers={**planner, "If-Match": etag})
    assert r.status_code == 200, r.text
    # publishing an older revision: 412 naming the revision and the operations since (JSON, dates as text)
    body = problem(client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True},
                               headers={**planner, "If-Match": etag}), 412, "stale-plan")
    assert body["current_revision"] == 1 and body["current_etag"] == r.headers["ETag"]
    assert [c["seq"] for c in body["changes"]] == [1] and isinstance(body["changes"][0]["at"], str)
    body = problem(client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True},
                               headers={**planner, "If-Match": '"c1-not-current"'}), 412, "stale-version")
    assert body["current_etag"] == created.json()["published_etag"]
    problem(client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True}, headers=planner), 428,
            "precondition-required")
    now = {**planner, "If-Match": r.headers["ETag"]}
    pub = client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True}, headers=now)
    assert pub.status_code == 200, pub.text
    problem(client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True}, headers=now), 409,
            "plan-not-publishable")
    problem(client.post(f"/v1/plans/{pid}/undo", headers=now), 409, "nothing-to-undo")
    problem(client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": a}, headers=now), 422,
            "plan-operation")
    problem(client.post(f"/v1/plans/{pid}/suggest", json={"apply": True}, headers=now), 422, "plan-suggest")
    problem(client.post("/v1/versions/987654/rollback", headers=admin), 404, "rollback")


def test_rollback_route_documents_the_if_match_rule(client):
    doc = client.app.openapi()["paths"]["/v1/versions/{version_id}/rollback"]["post"]["description"]
    assert "412" in doc and "If-Match" in doc and "current_etag" in doc
