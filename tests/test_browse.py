"""Browse endpoints: unit lists per level (paging, q, parent, at=, bbox), one unit with parents, children and
versions, the boundary versions, jurisdiction (a community leader sees only theirs) and bad input."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from geo.plans import drafts as plans

NEW_GRID = "浏览改名网格"
LEVELS = ("streets", "communities", "grids", "micro_grids", "compounds", "buildings")


@pytest.fixture
def renamed(db_session) -> dict:
    """A grid renamed by a published plan, with instants before and after the publish."""
    from geo.plans.publish import publish

    conn = db_session.connection()
    community = db_session.execute(text(
        "SELECT c.code FROM communities c JOIN grids g ON g.community_id = c.id ORDER BY c.code LIMIT 1")).scalar_one()
    plan_id = plans.create_plan(conn, community, "tester")
    state = plans.load_state(conn, plan_id)
    g = state.live("grid")[0]
    plans.apply_operation(conn, plan_id, {"type": "rename", "key": g["key"], "name": NEW_GRID})
    out = publish(conn, plan_id, "tester", allow_errors=True)
    published = dt.datetime.fromisoformat(out["valid_from"])
    code = db_session.execute(text("SELECT code FROM grids WHERE id = :g"), {"g": g["unit_id"]}).scalar_one()
    return {"grid": code, "old": g["name"], "community": community, "plan_id": plan_id,
            "version_id": out["version_id"],
            "before": (published - dt.timedelta(seconds=1)).isoformat(),
            "after": (published + dt.timedelta(seconds=1)).isoformat()}


def _get(client, headers, url, status=200, **params):
    # no params at all for a `next` link: an empty mapping would replace its query string
    r = client.get(url, params=params or None, headers=headers)
    assert r.status_code == status, r.text
    return r.json()


# ----------------------------------------------------------------------------------------------------- lists

@pytest.mark.parametrize("level", LEVELS)
def test_every_level_lists_with_total_and_links(client, admin_headers, db_session, level):
    body = _get(client, admin_headers, f"/v1/{level}", limit=1)
    assert body["limit"] == 1 and len(body["items"]) == 1 and body["total"] > 1
    item = body["items"][0]
    assert item["level"] == level and item["name"] is not None and item["area_m2"] > 0
    assert item["households"] is not None and item["households"] >= 0
    rels = {link["rel"]: link["href"] for link in item["links"]}
    assert rels["alternate"].endswith(f"/ogc/collections/{level}/items/{item['feature_id']}")
    assert _get(client, admin_headers, rels["self"].replace("http://testserver", ""), geometry="false")["id"] \
        == item["id"]
    if level in ("streets", "communities", "grids"):
        assert rels["describedby"].endswith(f"/summary/{item['code']}")
    if level != "streets":
        assert item["parent_code"] and item["parent_name"]


def test_grid_counts_match_the_database(client, admin_headers, db_session):
    n = db_session.execute(text("SELECT count(*) FROM current_grids")).scalar_one()
    assert _get(client, admin_headers, "/v1/grids", limit=1)["total"] == n
    households = db_session.execute(text(
        "SELECT coalesce(sum(u.households), 0) FROM buildings b JOIN units u ON u.building_id = b.id "
        "WHERE b.community_id = (SELECT id FROM communities ORDER BY code LIMIT 1)")).scalar_one()
    first = _get(client, admin_headers, "/v1/communities", limit=1)["items"][0]
    assert first["households"] == households


def test_paging_walks_every_grid_once(client, admin_headers):
    total = _get(client, admin_headers, "/v1/grids", limit=1)["total"]
    seen, url, params = [], "/v1/grids", {"limit": 7}
    while url:
        body = _get(client, admin_headers, url, **params)
        seen += [i["code"] for i in body["items"]]
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url, params = (nxt[0].replace("http://testserver", ""), {}) if nxt else (None, {})
    assert len(seen) == total == len(set(seen)) and seen == sorted(seen)


def test_q_finds_by_name_and_code(client, admin_headers, db_session):
    code, name = db_session.execute(text("SELECT code, name FROM current_grids ORDER BY code DESC LIMIT 1")).one()
    by_name = _get(client, admin_headers, "/v1/grids", q=name)["items"]
    assert code in [i["code"] for i in by_name] and all(name in i["name"] for i in by_name)
    by_code = _get(client, admin_headers, "/v1/grids", q=code)["items"]
    assert [i["code"] for i in by_code] == [code]
    assert _get(client, admin_headers, "/v1/grids", q="没有这样的名字")["total"] == 0


def test_parent_prefix(client, admin_headers, db_session):
    community = db_session.execute(text("SELECT code FROM communities ORDER BY code DESC LIMIT 1")).scalar_one()
    n = db_session.execute(text("SELECT count(*) FROM current_grids WHERE starts_with(code, :c)"),
                           {"c": community}).scalar_one()
    body = _get(client, admin_headers, "/v1/grids", parent=community, limit=1000)
    assert body["total"] == n > 0 and all(i["parent_code"] == community for i in body["items"])
    compounds = _get(client, admin_headers, "/v1/compounds", parent=community, limit=1000)["items"]
    assert compounds and all(i["parent_code"] == community for i in compounds)


def test_bbox_keeps_what_it_touches(client, admin_headers, db_session):
    x0, y0, x1, y1 = db_session.execute(text(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) e FROM "
        "(SELECT geom FROM current_grids ORDER BY code LIMIT 1) x) y")).one()
    body = _get(client, admin_headers, "/v1/grids", bbox=f"{x0},{y0},{x1},{y1}", limit=1000)
    total = _get(client, admin_headers, "/v1/grids", limit=1)["total"]
    assert 1 <= body["total"] < total


def test_a_renamed_grid_keeps_its_old_name_at_an_earlier_at(client, admin_headers, renamed):
    g = renamed["grid"]

    def name(**params):
        return [i["name"] for i in _get(client, admin_headers, "/v1/grids", q=g, **params)["items"]]

    assert name() == [NEW_GRID]
    assert name(at=renamed["before"]) == [renamed["old"]]
    assert name(at=renamed["after"]) == [NEW_GRID]
    # searching by the old name finds it only at the earlier instant
    assert g in [i["code"] for i in _get(client, admin_headers, "/v1/grids", q=renamed["old"],
                                         at=renamed["before"])["items"]]
    assert g not in [i["code"] for i in _get(client, admin_headers, "/v1/grids", q=renamed["old"])["items"]]


# -------------------------------------------------------------------------------------------------- one unit

def test_one_grid_with_parents_children_geometry_and_versions(client, admin_headers, renamed, db_session):
    body = _get(client, admin_headers, f"/v1/grids/{renamed['grid']}")
    assert body["name"] == NEW_GRID and body["in_force"] and body["geometry"]["type"] == "MultiPolygon"
    assert [p["level"] for p in body["parents"]] == ["communities", "streets"]
    assert body["parents"][0]["code"] == renamed["community"] and body["parent_code"] == renamed["community"]
    assert set(body["children"]) == {"micro_grids", "buildings"}
    names = [v["name"] for v in body["versions"]]
    assert names[0] == NEW_GRID and renamed["old"] in names
    assert body["versions"][0]["version_id"] == renamed["version_id"] and body["versions"][0]["valid_to"] is None
    assert body["versions"][0]["created_by"] == "tester"
    old = _get(client, admin_headers, f"/v1/grids/{renamed['grid']}", at=renamed["before"], geometry="false")
    assert old["name"] == renamed["old"] and old["geometry"] is None and old["version_id"] != renamed["version_id"]


def test_one_building_and_compound(client, admin_headers, db_session):
    bid, households = db_session.execute(text(
        "SELECT b.id, sum(u.households) FROM buildings b JOIN units u ON u.building_id = b.id "
        "WHERE b.compound_id IS NOT NULL GROUP BY b.id ORDER BY b.id LIMIT 1")).one()
    body = _get(client, admin_headers, f"/v1/buildings/{bid}")
    assert body["households"] == households and body["children"]["units"] >= 1
    assert [p["level"] for p in body["parents"]] == ["compounds", "communities", "streets"]
    compound = _get(client, admin_headers, f"/v1/compounds/{body['parents'][0]['id']}")
    assert compound["children"]["buildings"] >= 1 and compound["versions"] == []


def test_unknown_and_malformed_units(client, admin_headers):
    for url in ("/v1/grids/999999999999999", "/v1/streets/999999999", "/v1/buildings/2147483000",
                "/v1/compounds/2147483000"):
        r = client.get(url, headers=admin_headers)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json"), url
    for url, params in (("/v1/grids/abc", {}), ("/v1/grids", {"at": "yesterday"}), ("/v1/grids", {"limit": 0}),
                        ("/v1/grids", {"limit": 5000}), ("/v1/grids", {"parent": "12a"}),
                        ("/v1/grids", {"bbox": "1,2,3"}), ("/v1/grids", {"at": "2024-01-01/2024-02-01"}),
                        ("/v1/versions", {"since": "soon"}), ("/v1/versions", {"unit": "x"}),
                        ("/v1/versions", {"since": "2025-01-02", "until": "2025-01-01"})):
        r = client.get(url, params=params, headers=admin_headers)
        assert r.status_code == 422, (url, params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


# ------------------------------------------------------------------------------------------------ jurisdiction

def test_a_community_leader_sees_only_their_community(client, make_user, db_session):
    own, other = db_session.execute(text("SELECT code FROM communities ORDER BY code LIMIT 2")).scalars().all()
    headers = make_user("leader", own)["headers"]
    for level in ("grids", "micro_grids", "compounds", "buildings"):
        items = _get(client, headers, f"/v1/{level}", limit=1000)["items"]
        assert items and all(i["parent_code"].startswith(own) or (i["code"] or "").startswith(own)
                             for i in items), level
    assert _get(client, headers, "/v1/streets")["total"] == 0
    assert [i["code"] for i in _get(client, headers, "/v1/communities")["items"]] == [own]
    other_grid = db_session.execute(text("SELECT code FROM current_grids WHERE starts_with(code, :c) LIMIT 1"),
                                    {"c": other}).scalar_one()
    r = client.get(f"/v1/grids/{other_grid}", headers=headers)
    assert r.status_code == 403 and r.json()["required_jurisdiction"] == other_grid
    own_grid = _get(client, headers, "/v1/grids", limit=1)["items"][0]["code"]
    assert _get(client, headers, f"/v1/grids/{own_grid}")["code"] == own_grid


# --------------------------------------------------------------------------------------------------- versions

def test_versions_newest_first_with_kinds_and_links(client, admin_headers, renamed):
    body = _get(client, admin_headers, "/v1/versions")
    items = body["items"]
    assert body["total"] == len(items) >= 2
    assert [i["valid_from"] for i in items] == sorted((i["valid_from"] for i in items), reverse=True)
    newest = items[0]
    assert newest["id"] == renamed["version_id"] and newest["kind"] == "plan"
    assert newest["plan_id"] == renamed["plan_id"] and newest["created_by"] == "tester"
    assert newest["started"]["grids"] >= 1 and newest["ended"]["grids"] >= 1
    rels = {link["rel"]: link["href"] for link in newest["links"]}
    assert rels["rollback"].endswith(f"/v1/versions/{newest['id']}/rollback")
    assert rels["diff"].endswith(f"/v1/plans/{renamed['plan_id']}/diff")
    assert items[-1]["kind"] == "demo" and items[-1]["started"]["streets"] > 0
    detail = _get(client, admin_headers, f"/v1/versions/{newest['id']}")
    assert {"level": "grids", "code": renamed["grid"], "change": "started"} in detail["units"]
    assert {"level": "grids", "code": renamed["grid"], "change": "ended"} in detail["units"]


def test_versions_filters_and_jurisdiction(client, admin_headers, make_user, renamed, db_session):
    other = db_session.execute(text("SELECT code FROM communities WHERE code <> :c ORDER BY code LIMIT 1"),
                               {"c": renamed["community"]}).scalar_one()
    ids = [i["id"] for i in _get(client, admin_headers, "/v1/versions", unit=renamed["grid"])["items"]]
    assert renamed["version_id"] in ids
    ids = [i["id"] for i in _get(client, admin_headers, "/v1/versions", unit=other)["items"]]
    assert renamed["version_id"] not in ids and ids
    later = _get(client, admin_headers, "/v1/versions", since=renamed["before"])["items"]
    assert [i["id"] for i in later] == [renamed["version_id"]]
    assert renamed["version_id"] not in [i["id"] for i in _get(client, admin_headers, "/v1/versions",
                                                               until=renamed["before"])["items"]]
    paged = _get(client, admin_headers, "/v1/versions", limit=1)
    assert len(paged["items"]) == 1 and any(link["rel"] == "next" for link in paged["links"])
    outsider = make_user("leader", other)["headers"]
    assert renamed["version_id"] not in [i["id"] for i in _get(client, outsider, "/v1/versions")["items"]]
    r = client.get(f"/v1/versions/{renamed['version_id']}", headers=outsider)
    assert r.status_code == 404
    assert _get(client, admin_headers, "/v1/versions/2147483000", status=404)["type"].endswith("version-not-found")
