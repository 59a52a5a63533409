"""Street plans (街道方案): one draft over every community of a street; operations, validation, diff, publish,
suggestion and map work per community, and the street-level ETag covers all of them."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import mapping
from sqlalchemy import text

from geo.plans import drafts as plans
from geo.plans.diff import diff
from geo.plans.publish import StalePublished, publish, rollback
from geo.plans.validation import validate


def _conn(db_session):
    return db_session.connection()


@pytest.fixture
def street(db_session):
    """The street with the most communities (code, id, its communities' codes by code)."""
    row = db_session.execute(text("""
        SELECT s.code, s.id FROM streets s JOIN communities c ON c.street_id = s.id
        GROUP BY s.id ORDER BY count(*) DESC, s.code LIMIT 1
    """)).one()
    codes = db_session.execute(text("SELECT code FROM communities WHERE street_id = :s ORDER BY code"),
                               {"s": row[1]}).scalars().all()
    assert len(codes) >= 2
    return {"code": row[0], "id": row[1], "communities": codes}


@pytest.fixture
def street_plan(db_session, street):
    return plans.create_plan(_conn(db_session), street["code"], "tester")


def _neighbours(state, cid):
    rows = state.sub(cid).live("grid")
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if shapely.length(shapely.intersection(shapely.boundary(a["geom"]), shapely.boundary(b["geom"]))) > 1e-5:
                return a["key"], b["key"]
    return None


def _two_communities_with_neighbours(state):
    """Two communities of the plan that each hold two neighbouring grids: [(community id, (key a, key b)), …]."""
    found = [(cid, _neighbours(state, cid)) for cid in state.communities]
    found = [(cid, pair) for cid, pair in found if pair]
    assert len(found) >= 2
    return found[:2]


def _split_line(geom):
    minx, miny, maxx, maxy = shapely.bounds(geom)
    mid = (minx + maxx) / 2
    return mapping(shapely.LineString([(mid, miny - 1e-3), (mid, maxy + 1e-3)]))


def test_street_plan_copies_every_community(db_session, street, street_plan):
    conn = _conn(db_session)
    state = plans.load_state(conn, street_plan)
    assert state.is_street and state.scope_code == street["code"]
    assert sorted(state.communities.values()) == street["communities"]
    published = db_session.execute(text("""
        SELECT g.id, g.community_id FROM grids_at(now()) g JOIN communities c ON c.id = g.community_id
        WHERE c.street_id = :s
    """), {"s": street["id"]}).all()
    grids = {r["unit_id"]: r["community_id"] for r in state.live("grid")}
    assert grids == dict(published)
    # every micro-grid is in its grid's community
    for m in state.live("micro_grid"):
        assert m["community_id"] == state.rows[m["parent_key"]]["community_id"]
    v = validate(conn, street_plan)
    assert v["scope"] == "street" and len(v["communities"]) == len(street["communities"])
    assert not [p for p in v["problems"] if p["rule"] in ("overlap", "gap", "micro_tiling")]
    # an unknown street code is refused
    with pytest.raises(plans.PlanError, match="no street"):
        plans.create_plan(conn, "999999999", "tester")


def test_operations_stay_in_one_community_and_validation_only_revisits_it(db_session, street_plan):
    conn = _conn(db_session)
    state = plans.load_state(conn, street_plan)
    (c1, (a1, b1)), (c2, (a2, b2)) = _two_communities_with_neighbours(state)
    validate(conn, street_plan)  # every community validated once
    # a merge across communities would make a grid span two communities: refused, nothing changed
    with pytest.raises(plans.PlanError, match="one community"):
        plans.apply_operation(conn, street_plan, {"type": "merge", "keys": [a1, a2]})
    assert plans.load_state(conn, street_plan).revision == 0
    # moving a building of community 1 into a grid of community 2 is refused as well (not in that community)
    bf = plans.buildings_frame(conn, c1)
    with pytest.raises(plans.PlanError):
        plans.apply_operation(conn, street_plan, {"type": "move_buildings", "building_ids": [int(bf["id"][0])],
                                                  "to": a2})
    # a split inside community 1: only that community is validated again
    out = plans.apply_operation(conn, street_plan, {"type": "split", "key": a1,
                                                    "line": _split_line(state.rows[a1]["geom"])})
    assert out["result"]["community"] == state.communities[c1]
    new = [k for k in out["result"]["keys"] if k != a1]
    after = plans.load_state(conn, street_plan)
    assert all(after.rows[k]["community_id"] == c1 for k in new)
    v = validate(conn, street_plan)
    assert v["validated_communities"] == 1
    assert [c["community"] for c in v["communities"] if c["validated"]] == [state.communities[c1]]
    # a new grid in community 2 (by its geometry), carved out of its neighbours there
    g2 = after.rows[b2]["geom"]
    created = plans.apply_operation(conn, street_plan, {"type": "create", "level": "grid", "geometry": mapping(
        shapely.buffer(shapely.point_on_surface(g2), 2e-4))})
    nk = created["result"]["keys"][0]
    assert created["result"]["community"] == state.communities[c2]
    assert nk not in new  # keys stay unique across the communities of the plan
    v = validate(conn, street_plan)
    assert [c["community"] for c in v["communities"] if c["validated"]] == [state.communities[c2]]
    assert not [p for p in v["problems"] if p["rule"] in ("overlap", "gap")]
    # problems carry their community; moving buildings then undo restores exactly
    bf2 = plans.buildings_frame(conn, c2)
    pts = shapely.point_on_surface(bf2["geom"])
    cur = plans.load_state(conn, street_plan)
    inside = np.flatnonzero(shapely.covers(cur.rows[a2]["geom"], pts))
    plans.apply_operation(conn, street_plan, {"type": "move_buildings", "building_ids": [int(bf2["id"][inside[0]])],
                                              "to": b2})
    v = validate(conn, street_plan)
    assert all(p["community"] in state.communities.values() for p in v["problems"])
    before = plans.load_state(conn, street_plan)
    plans.undo(conn, street_plan)
    plans.undo(conn, street_plan)
    plans.undo(conn, street_plan)
    back = plans.load_state(conn, street_plan)
    assert {k for k, r in back.rows.items() if not r["retired"]} == {k for k, r in state.rows.items()}
    assert shapely.equals(back.rows[a1]["geom"], state.rows[a1]["geom"])
    assert back.revision == before.revision + 3


def test_street_publish_one_version_codes_per_community_and_street_etag(db_session, street, street_plan):
    conn = _conn(db_session)
    state = plans.load_state(conn, street_plan)
    (c1, (a1, _)), (c2, (a2, _)) = _two_communities_with_neighbours(state)
    for key in (a1, a2):
        plans.apply_operation(conn, street_plan, {"type": "split", "key": key,
                                                  "line": _split_line(state.rows[key]["geom"])})
    d = diff(conn, street_plan)
    assert d["scope"] == "street"
    assert {x["community"] for x in d["grid"]["created"]} == {state.communities[c1], state.communities[c2]}
    # a community plan drafted now is based on the same published boundaries
    other = plans.create_plan(conn, state.communities[c1], "someone else")
    codes_before = dict(db_session.execute(text("SELECT id, code FROM grids")).all())
    out = publish(conn, street_plan, "tester", allow_errors=True)
    assert out["version_id"] and len(out["communities"]) == len(street["communities"])
    # one version for the whole street, new grids coded inside their own community
    versions = db_session.execute(text("""
        SELECT DISTINCT b.version_id FROM grid_boundaries b WHERE b.valid_from = :t
    """), {"t": out["valid_from"]}).scalars().all()
    assert versions == [out["version_id"]]
    created = out["grids"]["created"]
    assert len(created) == 2
    assert {c[:12] for c in created} == {state.communities[c1], state.communities[c2]}
    for code in created:
        used = [c for c in codes_before.values() if c.startswith(code[:12])]
        assert int(code[12:]) == max(int(c[12:]) for c in used) + 1
    # unchanged grids keep their codes
    assert all(db_session.execute(text("SELECT code FROM grids WHERE id = :i"), {"i": i}).scalar() == c
               for i, c in codes_before.items())
    assert out["token"].startswith(f"s{street['id']}-") and out["token"] == plans.street_token(conn, street["id"])
    # the community plan drafted before the street publish is now stale (412 at the API)
    with pytest.raises(StalePublished) as exc:
        publish(conn, other, "someone else")
    assert exc.value.changes[-1]["version_id"] == out["version_id"]


def test_street_plan_stale_after_a_community_publish(db_session, street, street_plan):
    conn = _conn(db_session)
    state = plans.load_state(conn, street_plan)
    (c1, (a1, b1)), _ = _two_communities_with_neighbours(state)
    community_plan = plans.create_plan(conn, state.communities[c1], "someone else")
    plans.apply_operation(conn, community_plan, {"type": "merge", "keys": [a1, b1]})
    first = publish(conn, community_plan, "someone else", allow_errors=True)
    with pytest.raises(StalePublished) as exc:
        publish(conn, street_plan, "tester", allow_errors=True)
    assert "street" in str(exc.value) and exc.value.changes[-1]["version_id"] == first["version_id"]


def _street_users(make_user, street):
    return (make_user("planner", street["code"])["headers"],
            make_user("planner", street["communities"][0])["headers"])


def test_http_street_plan_jurisdiction(client, make_user, street):
    street_planner, community_planner = _street_users(make_user, street)
    # a planner of one community can neither draft nor publish a street-wide plan
    r = client.post("/v1/plans", json={"street_code": street["code"]}, headers=community_planner)
    assert r.status_code == 403
    assert street["communities"][0] in r.json()["detail"] and r.json()["required_jurisdiction"] == street["code"]
    r = client.post("/v1/plans", json={"street_code": street["code"]}, headers=street_planner)
    assert r.status_code == 201, r.text
    body, pid = r.json(), r.json()["id"]
    assert body["scope"] == "street" and body["scope_code"] == street["code"]
    assert [c["code"] for c in body["communities"]] == street["communities"]
    assert body["published_etag"].startswith(f'"s{street["id"]}-')
    r = client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True}, headers=community_planner)
    assert r.status_code == 403 and street["communities"][0] in r.json()["detail"]
    r = client.post(f"/v1/plans/{pid}/operations", json={"type": "retire", "key": "g1"}, headers=community_planner)
    assert r.status_code == 403
    # reading is allowed: the community lies inside the street
    assert client.get(f"/v1/plans/{pid}", headers=community_planner).status_code == 200
    # exactly one of the two codes
    both = {"street_code": street["code"], "community_code": street["communities"][0]}
    assert client.post("/v1/plans", json=both, headers=street_planner).status_code == 422
    assert client.post("/v1/plans", json={"street_code": "999999999"}, headers=make_user("admin")["headers"]
                       ).status_code == 404


def test_http_street_plan_edit_suggest_publish_and_map(client, make_user, street, db_session, monkeypatch):
    from geo.settings import get_settings

    street_planner, _ = _street_users(make_user, street)
    created = client.post("/v1/plans", json={"street_code": street["code"]}, headers=street_planner)
    pid, etag = created.json()["id"], created.headers["ETag"]
    state = plans.load_state(db_session.connection(), pid)
    (c1, (a1, b1)), _ = _two_communities_with_neighbours(state)
    r = client.post(f"/v1/plans/{pid}/operations", json={"type": "merge", "keys": [a1, b1]},
                    headers={**street_planner, "If-Match": etag})
    assert r.status_code == 200, r.text
    assert r.json()["validation"]["validated_communities"] >= 1
    stale = client.post(f"/v1/plans/{pid}/operations", json={"type": "merge", "keys": [a1, b1]},
                        headers={**street_planner, "If-Match": etag})
    assert stale.status_code == 412
    # the suggestion runs per community (grids never cross a community boundary) and applies as one operation
    rules = get_settings().rules
    monkeypatch.setattr(rules, "grid_households_min", 1)
    monkeypatch.setattr(rules, "grid_households_max", 100000)
    s = client.post(f"/v1/plans/{pid}/suggest", json={"seed": 3, "apply": True},
                    headers={**street_planner, "If-Match": r.headers["ETag"]})
    assert s.status_code == 200, s.text
    sj = s.json()
    assert sj["scope"] == "street" and {p["community"] for p in sj["per_community"]} == set(street["communities"])
    assert "regions" not in sj["per_community"][0]
    assert sj["applied"]["seq"] == 2
    after = plans.load_state(db_session.connection(), pid)
    assert all(r["community_id"] in state.communities for r in after.rows.values())
    undo = client.post(f"/v1/plans/{pid}/undo", headers={**street_planner, "If-Match": s.headers["ETag"]})
    assert undo.status_code == 200 and undo.json()["undone"]["op"]["type"] == "suggestion"
    d = client.get(f"/v1/plans/{pid}/diff", headers=street_planner).json()
    assert d["scope"] == "street" and [x["key"] for x in d["grid"]["retired"]] == [b1]
    page = client.get(f"/maps/plan/{pid}", headers=street_planner)
    assert page.status_code == 200 and "改划方案" in page.text
    street_name = db_session.execute(text("SELECT name FROM streets WHERE id = :s"), {"s": street["id"]}).scalar()
    assert street_name in page.text
    pub = client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True},
                      headers={**street_planner, "If-Match": created.json()["published_etag"]})
    assert pub.status_code == 200, pub.text
    assert pub.json()["grids"]["ended"] == [db_session.execute(
        text("SELECT code FROM grids WHERE id = :i"), {"i": int(b1[1:])}).scalar()]
    again = client.post("/v1/plans", json={"street_code": street["code"]}, headers=street_planner).json()
    assert again["published_etag"] == pub.headers["ETag"]
    # rolling the street's version back publishes one street version restoring the community it changed; the
    # street's ETag moves on again
    back = client.post(f"/v1/versions/{pub.json()['version_id']}/rollback", headers=street_planner)
    assert back.status_code == 200, back.text
    assert back.json()["scope"] == "street" and back.json()["communities"] == [state.communities[c1]]
    assert back.headers["ETag"] == back.json()["etag"] != pub.headers["ETag"]
    assert db_session.execute(text("SELECT count(*) FROM grids_at(clock_timestamp()) WHERE id = :i"),
                              {"i": int(b1[1:])}).scalar() == 1
    stale = client.post(f"/v1/plans/{again['id']}/publish", json={"allow_errors": True},
                        headers={**street_planner, "If-Match": again["etag"]})
    assert stale.status_code == 412 and stale.json()["type"].endswith("stale-version")


def _now(conn):
    return conn.execute(text("SELECT clock_timestamp()")).scalar()


def _units_at(conn, street_id, at):
    """The street's grids and micro-grids in force at `at`: {(level, id): (code, parent, geometry)}."""
    rows = conn.execute(text("""
        SELECT 'grid', g.id, g.code, g.community_id, ST_AsBinary(g.geom) FROM grids_at(:t) g
        JOIN communities c ON c.id = g.community_id WHERE c.street_id = :s
        UNION ALL
        SELECT 'micro_grid', m.id, m.code, m.grid_id, ST_AsBinary(m.geom) FROM micro_grids_at(:t) m
        JOIN grids g ON g.id = m.grid_id JOIN communities c ON c.id = g.community_id WHERE c.street_id = :s
    """), {"t": at, "s": street_id}).all()
    return {(r[0], r[1]): (r[2], r[3], shapely.from_wkb(bytes(r[4]))) for r in rows}


def _same_units(a, b):
    """Same units (level, id), codes and parents, geometry equal within 1e-9 degrees."""
    assert set(a) == set(b)
    for k in a:
        assert a[k][:2] == b[k][:2], k
        assert shapely.equals_exact(shapely.normalize(a[k][2]), shapely.normalize(b[k][2]), tolerance=1e-9), k


def _street_version(conn, street_plan):
    """Publish a street plan that splits a grid in one community and merges two grids in another (whose micro-grids
    then move to the kept grid, so they get new codes); (publish summary, the two community ids)."""
    state = plans.load_state(conn, street_plan)
    (c1, (a1, _)), (c2, (a2, b2)) = _two_communities_with_neighbours(state)
    plans.apply_operation(conn, street_plan, {"type": "split", "key": a1, "line": _split_line(state.rows[a1]["geom"])})
    plans.apply_operation(conn, street_plan, {"type": "merge", "keys": [a2, b2]})
    return publish(conn, street_plan, "tester", allow_errors=True), (c1, c2)


def test_street_rollback_is_one_version_restoring_every_community(db_session, street, street_plan):
    conn = _conn(db_session)
    t_before = _now(conn)
    before = _units_at(conn, street["id"], t_before)
    versions_before = db_session.execute(text("SELECT count(*) FROM boundary_versions")).scalar()
    out, (c1, c2) = _street_version(conn, street_plan)
    t_published = _now(conn)
    published = _units_at(conn, street["id"], t_published)
    assert out["grids"]["created"] and out["grids"]["ended"] and out["micro_grids"]["created"]
    assert published != before

    back = rollback(conn, out["version_id"], "tester")
    assert back["scope"] == "street" and back["street"] == street["code"]
    codes = sorted(db_session.execute(text("SELECT code FROM communities WHERE id = ANY(:i)"),
                                      {"i": [c1, c2]}).scalars())
    assert back["communities"] == codes and len(back["results"]) == 1
    # ONE new version: every boundary the rollback started or ended belongs to it (grids and micro-grids)
    rid = back["version_id"]
    assert rid > out["version_id"]
    assert db_session.execute(text("SELECT count(*) FROM boundary_versions")).scalar() == versions_before + 2
    t_rb = db_session.execute(text("SELECT valid_from FROM boundary_versions WHERE id = :v"), {"v": rid}).scalar()
    started = db_session.execute(text("""
        SELECT DISTINCT version_id FROM grid_boundaries WHERE valid_from = :t
        UNION SELECT DISTINCT version_id FROM micro_grid_boundaries WHERE valid_from = :t
    """), {"t": t_rb}).scalars().all()
    assert started == [rid]
    touched = db_session.execute(text("""
        SELECT DISTINCT g.community_id FROM grid_boundaries b JOIN grids g ON g.id = b.grid_id
        WHERE b.version_id = :v OR b.valid_to = :t
    """), {"v": rid, "t": t_rb}).scalars().all()
    assert sorted(touched) == sorted([c1, c2])
    # every community of the street is back as before the publish: same ids, codes, parents, geometry
    now = _units_at(conn, street["id"], _now(conn))
    _same_units(now, before)
    # the three states answer by time
    _same_units(_units_at(conn, street["id"], t_before), before)
    _same_units(_units_at(conn, street["id"], t_published), published)
    # what the rolled-back version created is retired with valid_to = the rollback's instant (never deleted)
    created = out["grids"]["created"] + out["micro_grids"]["created"]
    ends = db_session.execute(text("""
        SELECT b.valid_to FROM grid_boundaries b JOIN grids g ON g.id = b.grid_id WHERE g.code = ANY(:c)
        UNION ALL
        SELECT b.valid_to FROM micro_grid_boundaries b JOIN micro_grids m ON m.id = b.micro_grid_id
        WHERE m.code = ANY(:c)
    """), {"c": created}).scalars().all()
    assert len(ends) == len(created) and set(ends) == {t_rb}
    # the rollback is itself a street version: rolling it back brings the published state again, in one version
    again = rollback(conn, rid, "tester")
    assert again["scope"] == "street" and again["version_id"] > rid
    _same_units(_units_at(conn, street["id"], _now(conn)), published)


def test_street_rollback_refused_over_later_changes_unless_if_match_is_current(db_session, street, street_plan):
    conn = _conn(db_session)
    out, (c1, _) = _street_version(conn, street_plan)
    # someone publishes a community plan in a community the street version changed
    cp = plans.create_plan(conn, db_session.execute(text("SELECT code FROM communities WHERE id = :c"),
                                                    {"c": c1}).scalar(), "someone else")
    a, b = _neighbours(plans.load_state(conn, cp), c1)
    plans.apply_operation(conn, cp, {"type": "merge", "keys": [a, b]})
    later = publish(conn, cp, "someone else", allow_errors=True)
    with pytest.raises(StalePublished) as exc:
        rollback(conn, out["version_id"], "tester")
    assert [c["version_id"] for c in exc.value.changes] == [later["version_id"]]
    assert str(later["version_id"]) in str(exc.value)
    # the ETag the street publish answered is stale as well
    with pytest.raises(StalePublished) as exc:
        rollback(conn, out["version_id"], "tester", if_published=[out["token"]])
    assert exc.value.current == plans.street_token(conn, street["id"])
    assert [c["version_id"] for c in exc.value.changes] == [later["version_id"]]
    n = db_session.execute(text("SELECT count(*) FROM boundary_versions")).scalar()
    # with the current ETag the caller rolls back over the later change knowingly
    back = rollback(conn, out["version_id"], "tester", if_published=[exc.value.current])
    assert back["scope"] == "street"
    assert db_session.execute(text("SELECT count(*) FROM boundary_versions")).scalar() == n + 1


def test_http_street_rollback_jurisdiction_412_audit_and_locate_refresh(client, make_user, street, db_session,
                                                                         monkeypatch):
    import geo.locate.holder

    refreshed = []
    monkeypatch.setattr(geo.locate.holder, "notify_boundaries_changed", lambda since=None: refreshed.append(1))
    street_planner, community_planner = _street_users(make_user, street)
    created = client.post("/v1/plans", json={"street_code": street["code"]}, headers=street_planner).json()
    pid = created["id"]
    state = plans.load_state(db_session.connection(), pid)
    (c1, (a1, b1)), _ = _two_communities_with_neighbours(state)
    r = client.post(f"/v1/plans/{pid}/operations", json={"type": "merge", "keys": [a1, b1]},
                    headers={**street_planner, "If-Match": created["etag"]})
    assert r.status_code == 200, r.text
    pub = client.post(f"/v1/plans/{pid}/publish", json={"allow_errors": True},
                      headers={**street_planner, "If-Match": r.headers["ETag"]})
    assert pub.status_code == 200, pub.text
    vid, n_refreshed = pub.json()["version_id"], len(refreshed)
    url = f"/v1/versions/{vid}/rollback"
    # a community planner cannot roll back a street version, even one changing only their own community
    denied = client.post(url, headers=make_user("planner", state.communities[c1])["headers"])
    assert denied.status_code == 403
    assert denied.json()["required_jurisdiction"] == street["code"]
    assert state.communities[c1] in denied.json()["detail"] and street["code"] in denied.json()["detail"]
    assert client.post(url, headers=community_planner).status_code == 403
    # a stale If-Match (the street's ETag before the publish): 412 naming the version published since
    stale = client.post(url, headers={**street_planner, "If-Match": created["published_etag"]})
    assert stale.status_code == 412 and stale.json()["type"].endswith("stale-version")
    assert stale.json()["current_etag"] == pub.headers["ETag"]
    assert db_session.execute(text("SELECT count(*) FROM audit_log WHERE action = 'version.rollback'")).scalar() == 0
    back = client.post(url, headers={**street_planner, "If-Match": pub.headers["ETag"]})
    assert back.status_code == 200, back.text
    body = back.json()
    assert body["scope"] == "street" and body["communities"] == [state.communities[c1]]
    assert len(refreshed) == n_refreshed + 1
    rows = db_session.execute(text("""
        SELECT target_type, target_id, jurisdiction_code, after FROM audit_log WHERE action = 'version.rollback'
    """)).all()
    assert len(rows) == 1
    kind, target, where, after = rows[0]
    assert (kind, target, where) == ("boundary_version", str(body["version_id"]), street["code"])
    assert after["rolled_back"] == vid and after["communities"] == [state.communities[c1]]
    assert after["grids"]["changed"] or after["grids"]["created"]
    # the merged-away grid is back under its old id
    assert db_session.execute(text("SELECT count(*) FROM grids_at(clock_timestamp()) WHERE id = :i"),
                              {"i": int(b1[1:])}).scalar() == 1


def test_migration_0012_downgrades_and_upgrades(migrated_engine, district):
    """The street-plan migration: down drops street plans (not expressible without it) and keeps community plans;
    up again backfills each community plan's units with the plan's community."""
    from geo.store import db
    from geo.store.load import load_district

    load_district(migrated_engine, district)
    url = migrated_engine.url.render_as_string(hide_password=False)
    with migrated_engine.begin() as conn:
        street = conn.execute(text("SELECT code FROM streets ORDER BY code LIMIT 1")).scalar()
        community, cid = conn.execute(text("SELECT code, id FROM communities ORDER BY code LIMIT 1")).one()
        sp = plans.create_plan(conn, street, "tester")
        cp = plans.create_plan(conn, community, "tester")
    migrated_engine.dispose()
    db.downgrade(url, "0012-1")

    def columns(table):
        with migrated_engine.connect() as conn:
            return set(conn.execute(text("SELECT column_name FROM information_schema.columns WHERE table_name = :t"),
                                    {"t": table}).scalars())

    assert "street_id" not in columns("plans") and "community_id" not in columns("plan_units")
    with migrated_engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM plans ORDER BY id")).scalars().all() == [cp]
    migrated_engine.dispose()
    db.migrate(url)
    assert "street_id" in columns("plans") and "community_id" in columns("plan_units")
    with migrated_engine.connect() as conn:
        assert set(conn.execute(text("SELECT community_id FROM plan_units WHERE plan_id = :p"),
                                {"p": cp}).scalars()) == {cid}
        assert sp not in conn.execute(text("SELECT id FROM plans")).scalars().all()
        state = plans.load_state(conn, cp)
        assert state.communities == {cid: community} and state.live("grid")
