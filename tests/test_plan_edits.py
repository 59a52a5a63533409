"""Plan edits that must keep the layers tiling: splitting a grid into three or more pieces (its micro-grids
follow without overlapping), rollback restoring names, and reshaping a boundary so the neighbours follow."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import mapping, shape
from sqlalchemy import text

from geo.plans import drafts as plans
from geo.plans.validation import validate


def _conn(db_session):
    return db_session.connection()


@pytest.fixture
def community(db_session):
    """The community whose largest grid has the most micro-grids (code, id)."""
    row = db_session.execute(text("""
        SELECT c.code, c.id FROM communities c JOIN grids g ON g.community_id = c.id
        JOIN micro_grids m ON m.grid_id = g.id
        WHERE g.kind = 'comprehensive' GROUP BY c.id, g.id ORDER BY count(*) DESC, c.code LIMIT 1
    """)).one()
    return {"code": row[0], "id": row[1]}


@pytest.fixture
def plan_id(db_session, community):
    return plans.create_plan(_conn(db_session), community["code"], "tester")


def _rules(result, rule):
    return [p for p in result["problems"] if p["rule"] == rule]


def _pairwise_overlap(geoms) -> float:
    """The largest area (square degrees) two of the geometries share."""
    geoms = np.asarray(geoms, dtype=object)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    keep = a < b
    if not keep.any():
        return 0.0
    return float(shapely.area(shapely.intersection(geoms[a[keep]], geoms[b[keep]])).max())


def test_split_into_three_pieces_keeps_micro_grids_tiling(db_session, plan_id):
    """Two parallel cuts in one line: three pieces; every micro-grid crossing both cuts ends in three parts,
    one per piece, none overlapping, together covering the micro-grid (the old code reused a stale copy)."""
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    g = max((r for r in state.live("grid") if state.live("micro_grid", r["key"])),
            key=lambda r: len(state.live("micro_grid", r["key"])))
    micros = state.live("micro_grid", g["key"])
    union_before = shapely.union_all([m["geom"] for m in micros])
    minx, miny, maxx, maxy = shapely.bounds(g["geom"])
    x1, x2 = minx + (maxx - minx) / 3, minx + 2 * (maxx - minx) / 3
    # one MultiLineString of two vertical cuts: three pieces at once
    line = shapely.MultiLineString([[(x1, miny - 0.001), (x1, maxy + 0.001)],
                                    [(x2, miny - 0.001), (x2, maxy + 0.001)]])
    # the cuts must cross at least one micro-grid twice for the case to mean anything
    assert any(shapely.intersects(m["geom"], shapely.LineString([(x1, miny), (x1, maxy)]))
               and shapely.intersects(m["geom"], shapely.LineString([(x2, miny), (x2, maxy)])) for m in micros)
    out = plans.apply_operation(conn, plan_id, {"type": "split", "key": g["key"], "line": mapping(line)})
    keys = out["result"]["keys"]
    assert len(keys) >= 3
    after = plans.load_state(conn, plan_id)
    new_micros = [m for k in keys for m in after.live("micro_grid", k)]
    assert _pairwise_overlap([m["geom"] for m in new_micros]) < 1e-12
    # each micro-grid lies inside its grid, and together they cover what the old ones covered
    for m in new_micros:
        grid = after.rows[m["parent_key"]]["geom"]
        assert shapely.area(shapely.difference(m["geom"], grid)) < 1e-12
    union_after = shapely.union_all([m["geom"] for m in new_micros])
    assert shapely.area(shapely.symmetric_difference(union_after, union_before)) < 1e-11
    assert not _rules(validate(conn, plan_id), "micro_tiling")
    # undo gives the grid and its micro-grids back exactly
    plans.undo(conn, plan_id)
    back = plans.load_state(conn, plan_id)
    assert sorted(m["key"] for m in back.live("micro_grid", g["key"])) == sorted(m["key"] for m in micros)
    assert shapely.equals_exact(back.rows[g["key"]]["geom"], g["geom"], 1e-12)


def test_split_three_times_in_a_row_keeps_micro_grids_tiling(db_session, plan_id):
    """Three successive cuts of the same grid, each through micro-grids split before: no overlaps anywhere."""
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    g = max((r for r in state.live("grid") if state.live("micro_grid", r["key"])),
            key=lambda r: len(state.live("micro_grid", r["key"])))
    minx, miny, maxx, maxy = shapely.bounds(g["geom"])
    for f in (0.25, 0.5, 0.75):
        cur = plans.load_state(conn, plan_id)
        x = minx + f * (maxx - minx)
        probe = shapely.Point(x - 1e-6, (miny + maxy) / 2)
        owner = next((r for r in cur.live("grid") if shapely.intersects(r["geom"], probe)), None)
        if owner is None:
            continue
        plans.apply_operation(conn, plan_id, {"type": "split", "key": owner["key"], "line": mapping(
            shapely.LineString([(x, miny - 0.001), (x, maxy + 0.001)]))})
    after = plans.load_state(conn, plan_id)
    assert _pairwise_overlap([m["geom"] for m in after.live("micro_grid")]) < 1e-12
    assert not _rules(validate(conn, plan_id), "micro_tiling")


# --------------------------------------------------------------------------------------------- name history

def _name(db_session, table, unit_id):
    return db_session.execute(text(f"SELECT name FROM {table} WHERE id = :i"), {"i": unit_id}).scalar_one()


def test_publish_rename_then_rollback_restores_names_and_geometry(db_session, community, plan_id):
    """A plan renames a grid and a micro-grid (and moves a grid's edge); publish writes the new names with the new
    boundary versions; rolling that version back restores the old names as well as the old geometry."""
    from geo.plans.publish import publish, rollback

    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    g = next(r for r in state.live("grid") if state.live("micro_grid", r["key"]))
    m = state.live("micro_grid", g["key"])[0]
    other = next(r for r in state.live("grid") if r["key"] != g["key"])
    old_g, old_m, old_other = g["name"], m["name"], other["name"]
    assert old_g == _name(db_session, "grids", g["unit_id"])
    plans.apply_operation(conn, plan_id, {"type": "rename", "key": g["key"], "name": "滨江一网格"})
    plans.apply_operation(conn, plan_id, {"type": "rename", "key": m["key"], "name": "滨江一网格第1微网格"})
    with pytest.raises(plans.PlanError):
        plans.apply_operation(conn, plan_id, {"type": "rename", "key": other["key"], "name": "  "})
    # the diff names the rename (the published name beside the new one)
    from geo.plans.diff import diff
    d = diff(conn, plan_id)
    assert {"key": g["key"], "name": "滨江一网格", "renamed_from": old_g}.items() <= next(
        c for c in d["grid"]["changed"] if c["key"] == g["key"]).items()
    assert any(c["key"] == m["key"] and c["renamed_from"] == old_m for c in d["micro_grid"]["changed"])
    # a geometry change in the same plan: two neighbours' shared vertex moves 8 m
    a, b, v = _shared_vertex(state, plans.community_geom(conn, state.community_id))
    to = _toward(v, shapely.get_coordinates(shapely.point_on_surface(a["geom"]))[0], 8.0)
    plans.apply_operation(conn, plan_id, {"type": "reshape", "key": a["key"],
                                          "geometry": mapping(_moved(a["geom"], v, to))})
    out = publish(conn, plan_id, "tester", allow_errors=True)
    assert _name(db_session, "grids", g["unit_id"]) == "滨江一网格"
    assert _name(db_session, "micro_grids", m["unit_id"]) == "滨江一网格第1微网格"
    assert _name(db_session, "grids", other["unit_id"]) == old_other
    # the rename alone started new boundary rows carrying the names; the old rows keep the old names
    rows = db_session.execute(text("""
        SELECT name, version_id FROM grid_boundaries WHERE grid_id = :g ORDER BY valid_from
    """), {"g": g["unit_id"]}).all()
    assert rows[-1] == ("滨江一网格", out["version_id"]) and rows[-2][0] == old_g
    assert g_code(db_session, g["unit_id"]) in out["grids"]["changed"]
    # a plan drafted now copies the new names; one drafted at an instant before the publish, the old ones
    later = plans.load_state(conn, plans.create_plan(conn, community["code"], "tester"))
    assert later.rows[g["key"]]["name"] == "滨江一网格"
    back = rollback(conn, out["version_id"], "tester")
    assert back["results"][0]["grids"]["changed"]
    assert _name(db_session, "grids", g["unit_id"]) == old_g
    assert _name(db_session, "micro_grids", m["unit_id"]) == old_m
    assert _name(db_session, "grids", other["unit_id"]) == old_other
    restored = plans.load_state(conn, plans.create_plan(conn, community["code"], "tester"))
    assert restored.rows[g["key"]]["name"] == old_g and restored.rows[m["key"]]["name"] == old_m
    for r in (g, a, b):
        assert shapely.equals_exact(restored.rows[r["key"]]["geom"], r["geom"], 1e-12)


def g_code(db_session, grid_id):
    return db_session.execute(text("SELECT code FROM grids WHERE id = :i"), {"i": grid_id}).scalar_one()


def test_boundary_rows_written_without_a_name_take_the_units_name(db_session, community):
    """Writers that do not know about name history (imports, psql) still record it: the insert trigger fills it."""
    gid, name = db_session.execute(text("SELECT id, name FROM grids WHERE community_id = :c ORDER BY id LIMIT 1"),
                                   {"c": community["id"]}).one()
    vid = db_session.execute(text("""
        INSERT INTO boundary_versions (valid_from, label) VALUES (clock_timestamp(), 'test') RETURNING id
    """)).scalar_one()
    db_session.execute(text("UPDATE grid_boundaries SET valid_to = clock_timestamp() "
                            "WHERE grid_id = :g AND valid_to IS NULL"), {"g": gid})
    bid = db_session.execute(text("""
        INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom)
        SELECT :g, :v, clock_timestamp(), geom FROM grid_boundaries WHERE grid_id = :g ORDER BY valid_from DESC
        LIMIT 1 RETURNING id
    """), {"g": gid, "v": vid}).scalar_one()
    assert db_session.execute(text("SELECT name FROM grid_boundaries WHERE id = :b"), {"b": bid}).scalar() == name


# ----------------------------------------------------------------------------------------------- reshape

def _shared_vertex(state, community_geom):
    """(a, b, vertex): two grids and a vertex of both, on no other grid and off the community's boundary."""
    rows = state.live("grid")
    coords = {r["key"]: {tuple(c) for c in shapely.get_coordinates(r["geom"])} for r in rows}
    edge = shapely.boundary(community_geom)
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            for v in sorted(coords[a["key"]] & coords[b["key"]]):
                if any(v in coords[r["key"]] for r in rows if r["key"] not in (a["key"], b["key"])):
                    continue
                if shapely.distance(shapely.Point(v), edge) * 111_000 < 30:
                    continue
                return a, b, v
    raise AssertionError("no vertex shared by exactly two grids")


def _moved(geom, v, to):
    coords = shapely.get_coordinates(geom)
    hit = (coords[:, 0] == v[0]) & (coords[:, 1] == v[1])
    coords[hit] = to
    return shapely.set_coordinates(geom, coords)


def _toward(v, target, metres):
    d = np.asarray(target) - np.asarray(v)
    d_m = d * [111_320 * np.cos(np.radians(v[1])), 111_320]
    return tuple(np.asarray(v) + d * metres / float(np.hypot(*d_m)))


def _coverage_and_overlap(state, level="grid"):
    geoms = [r["geom"] for r in state.live(level)]
    return shapely.union_all(geoms), _pairwise_overlap(geoms)


@pytest.mark.parametrize("direction", ["shrink", "grow"])
def test_http_reshape_moves_the_neighbours_shared_edge(client, make_user, community, db_session, direction):
    """Dragging a vertex two grids share (into one, then the other): the neighbour's edge follows; the grids still
    cover exactly the community's land as before, without overlaps; micro-grids still tile their grids."""
    planner = make_user("planner", community["code"])["headers"]
    r = client.post("/v1/plans", json={"community_code": community["code"]}, headers=planner)
    assert r.status_code == 201, r.text
    pid, etag = r.json()["id"], r.headers["ETag"]
    conn = _conn(db_session)
    state = plans.load_state(conn, pid)
    cgeom = plans.community_geom(conn, state.community_id)
    a, b, v = _shared_vertex(state, cgeom)
    into = a if direction == "shrink" else b
    to = _toward(v, shapely.get_coordinates(shapely.point_on_surface(into["geom"]))[0], 8.0)
    before_cover, _ = _coverage_and_overlap(state)
    new_a = _moved(a["geom"], v, to)
    assert shapely.is_valid(new_a)
    resp = client.post(f"/v1/plans/{pid}/operations", headers={**planner, "If-Match": etag},
                       json={"type": "reshape", "key": a["key"], "geometry": mapping(new_a)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert b["key"] in body["changed"] and a["key"] in body["changed"]
    moved_m2 = body["result"]["lost_m2"] if direction == "shrink" else body["result"]["gained_m2"]
    assert moved_m2 > 1
    db_session.expire_all()
    after = plans.load_state(_conn(db_session), pid)
    cover, overlap = _coverage_and_overlap(after)
    assert overlap < 1e-12
    assert shapely.area(shapely.symmetric_difference(cover, before_cover)) < 1e-11
    # the neighbour follows: its outline now has the dragged vertex where a's has it, and no longer the old one
    b_coords = {tuple(c) for c in shapely.get_coordinates(after.rows[b["key"]]["geom"])}
    assert tuple(to) in b_coords and v not in b_coords
    a_area, b_area = shapely.area(after.rows[a["key"]]["geom"]), shapely.area(after.rows[b["key"]]["geom"])
    if direction == "shrink":
        assert a_area < shapely.area(a["geom"]) and b_area > shapely.area(b["geom"])
    else:
        assert a_area > shapely.area(a["geom"]) and b_area < shapely.area(b["geom"])
    rules = {p["rule"] for p in body["validation"]["problems"]}
    assert not rules & {"overlap", "gap", "micro_tiling"}, body["validation"]["problems"]
    micro = after.live("micro_grid")
    if micro:
        assert _pairwise_overlap([m["geom"] for m in micro]) < 1e-12
    # one undo puts both grids back
    u = client.post(f"/v1/plans/{pid}/undo", headers={**planner, "If-Match": resp.headers["ETag"]})
    assert u.status_code == 200, u.text
    db_session.expire_all()
    back = plans.load_state(_conn(db_session), pid)
    assert shapely.equals_exact(back.rows[b["key"]]["geom"], b["geom"], 1e-12)


def test_reshape_snaps_to_neighbour_vertices_in_metres(db_session, plan_id):
    """A vertex dropped 40 cm from a neighbour's vertex lands exactly on it; at 3 m with the default 1 m it does not."""
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    cgeom = plans.community_geom(conn, state.community_id)
    a, b, v = _shared_vertex(state, cgeom)
    near = _toward(v, shapely.get_coordinates(shapely.point_on_surface(a["geom"]))[0], 0.4)
    snapped = plans.snap_to_vertices(shapely.Point(near), shapely.get_coordinates(b["geom"]), 1.0)
    assert tuple(shapely.get_coordinates(snapped)[0]) == v
    far = _toward(v, shapely.get_coordinates(shapely.point_on_surface(a["geom"]))[0], 3.0)
    kept = plans.snap_to_vertices(shapely.Point(far), shapely.get_coordinates(b["geom"]), 1.0)
    assert tuple(shapely.get_coordinates(kept)[0]) == far
    # the whole operation: a's outline with the shared vertex 40 cm off is the same partition as before
    out = plans.apply_operation(conn, plan_id, {"type": "reshape", "key": a["key"],
                                                "geometry": mapping(_moved(a["geom"], v, near))})
    after = plans.load_state(conn, plan_id)
    assert shapely.area(shapely.symmetric_difference(after.rows[a["key"]]["geom"], a["geom"])) < 1e-12
    assert out["result"]["lost_m2"] == 0 and out["result"]["gained_m2"] == 0


def test_reshape_refuses_to_leave_a_gap_at_the_community_edge(db_session, plan_id):
    """Pulling an outer vertex (on the community's boundary, no neighbour across) inwards would open a gap."""
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    cgeom = plans.community_geom(conn, state.community_id)
    edge = shapely.boundary(cgeom)
    rows = state.live("grid")
    coords = {r["key"]: {tuple(c) for c in shapely.get_coordinates(r["geom"])} for r in rows}
    for r in rows:
        for v in sorted(coords[r["key"]]):
            if shapely.distance(shapely.Point(v), edge) < 1e-9 and not any(
                    v in coords[o["key"]] for o in rows if o["key"] != r["key"]):
                to = _toward(v, shapely.get_coordinates(shapely.point_on_surface(r["geom"]))[0], 10.0)
                new = _moved(r["geom"], v, to)
                if not shapely.is_valid(new):
                    continue
                with pytest.raises(plans.PlanError, match="gap"):
                    plans.apply_operation(conn, plan_id, {"type": "reshape", "key": r["key"],
                                                          "geometry": mapping(new)})
                return
    pytest.fail("no outer vertex of a single grid")


def test_reshape_at_a_triple_junction_shares_the_land_between_both_neighbours(db_session, plan_id):
    """Pulling a vertex three grids share into one of them: the land it gives up touches both others, and each
    takes the part next to its own edge (not one neighbour taking all); the partition is kept."""
    conn = _conn(db_session)
    state = plans.load_state(conn, plan_id)
    cgeom = plans.community_geom(conn, state.community_id)
    rows = state.live("grid")
    coords = {r["key"]: {tuple(c) for c in shapely.get_coordinates(r["geom"])} for r in rows}
    edge = shapely.boundary(cgeom)
    found = None
    for r in rows:
        for v in sorted(coords[r["key"]]):
            owners = [o for o in rows if v in coords[o["key"]]]
            if len(owners) == 3 and shapely.distance(shapely.Point(v), edge) * 111_000 > 30:
                new = _moved(r["geom"], v, _toward(v, shapely.get_coordinates(
                    shapely.point_on_surface(r["geom"]))[0], 8.0))
                # a pure loss (the outline stays inside the old one): the three then meet at the new place
                if shapely.is_valid(new) and shapely.covered_by(new, r["geom"]):
                    found = (r, [o for o in owners if o["key"] != r["key"]], new)
                    break
        if found:
            break
    assert found, "no vertex shared by exactly three grids"
    a, others, new = found
    before_cover, _ = _coverage_and_overlap(state)
    out = plans.apply_operation(conn, plan_id, {"type": "reshape", "key": a["key"], "geometry": mapping(new)})
    after = plans.load_state(conn, plan_id)
    cover, overlap = _coverage_and_overlap(after)
    assert overlap < 1e-12
    assert shapely.area(shapely.symmetric_difference(cover, before_cover)) < 1e-11
    gains = [shapely.area(after.rows[o["key"]]["geom"]) - shapely.area(o["geom"]) for o in others]
    assert all(g > 0 for g in gains), gains
    assert abs(sum(gains) - (shapely.area(a["geom"]) - shapely.area(after.rows[a["key"]]["geom"]))) < 1e-12
    assert set(out["changed"]) >= {a["key"], *(o["key"] for o in others)}
    # the two neighbours' common edge runs on to the vertex's new place: all three meet there again
    to = ({tuple(c) for c in shapely.get_coordinates(new)} - {tuple(c) for c in shapely.get_coordinates(a["geom"])})
    assert len(to) == 1
    for r in (a, *others):
        assert to <= {tuple(c) for c in shapely.get_coordinates(after.rows[r["key"]]["geom"])}, r["key"]
    assert not {p["rule"] for p in validate(conn, plan_id)["problems"]} & {"overlap", "gap", "micro_tiling"}


def test_http_reshape_and_rename_refuse_bad_input_with_4xx(client, make_user, community, db_session):
    """Hostile or mistaken reshapes and renames answer problem+json 4xx and change nothing."""
    planner = make_user("planner", community["code"])["headers"]
    r = client.post("/v1/plans", json={"community_code": community["code"]}, headers=planner)
    pid, etag = r.json()["id"], r.headers["ETag"]
    key = next(f["id"] for f in r.json()["units"]["features"] if f["properties"]["level"] == "grid")
    geom = next(f["geometry"] for f in r.json()["units"]["features"] if f["id"] == key)
    x, y = shapely.get_coordinates(shape(geom))[0]
    paris = mapping(shapely.box(2.35, 48.85, 2.36, 48.86))
    bowtie = {"type": "Polygon", "coordinates": [[[x, y], [x + 1e-3, y + 1e-3], [x + 1e-3, y], [x, y + 1e-3], [x, y]]]}
    cases = [
        {"type": "reshape", "key": key, "geometry": paris},
        {"type": "reshape", "key": key, "geometry": bowtie},
        {"type": "reshape", "key": key, "geometry": {"type": "Point", "coordinates": [x, y]}},
        {"type": "reshape", "key": key},
        {"type": "reshape", "key": "g999999", "geometry": geom},
        {"type": "reshape", "key": key, "geometry": geom, "snap_m": 100},
        {"type": "reshape", "key": key, "geometry": geom, "snap_m": -1},
        {"type": "rename", "key": key, "name": ""},
        {"type": "rename", "key": key},
        {"type": "rename", "key": key, "name": "名" * 101},
    ]
    for body in cases:
        resp = client.post(f"/v1/plans/{pid}/operations", json=body, headers={**planner, "If-Match": etag})
        assert 400 <= resp.status_code < 500, (body, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json"), body
    assert client.get(f"/v1/plans/{pid}", headers=planner).json()["revision"] == 0

