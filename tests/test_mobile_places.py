"""Place search for the report pin (issue 16, item 7): compounds (小区) and buildings (楼栋) by name through the API,
scoped to the caller's jurisdiction, and the phone's offline search over the cached list giving the same answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from geo.features.places import parse_place_query

PLACES_JS = Path(__file__).resolve().parents[1] / "maps" / "static" / "mobile" / "places.js"


def _compound_with_building_3(engine) -> dict:
    """A named compound with a building named 3栋, the grid holding that building, and another grid's compound."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT k.id AS kid, k.name AS kname, b.id AS bid, b.name AS bname, g.code AS grid "
            "FROM buildings b JOIN compounds k ON k.id = b.compound_id "
            "JOIN current_grids g ON ST_Intersects(g.geom, ST_PointOnSurface(b.geom)) "
            "WHERE b.name = '3栋' AND k.name IS NOT NULL ORDER BY k.id LIMIT 1")).mappings().one()
        other = conn.execute(text(
            "SELECT k.id, k.name FROM compounds k WHERE k.name IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
            "current_grids g WHERE starts_with(g.code, :c) AND ST_Intersects(g.geom, k.geom)) ORDER BY k.id LIMIT 1"),
            {"c": row["grid"][:12]}).mappings().one()
    return {**row, "other": other}


def test_parse_place_query():
    assert parse_place_query("阳光小区 3栋") == ("阳光小区", 3)
    assert parse_place_query("阳光小区3号楼") == ("阳光小区", 3)
    assert parse_place_query("  阳光小区　３栋 ") == ("阳光小区", 3)  # full-width space and digit
    assert parse_place_query("阳光小区 12") == ("阳光小区", 12)
    assert parse_place_query("3栋") == ("", 3)
    assert parse_place_query("滨江路3号院") == ("滨江路3号院", None)  # a number inside a name is not a building
    assert parse_place_query("滨江路3号小区") == ("滨江路3号小区", None)


def test_search_finds_compound_and_building_in_jurisdiction(client, make_user, engine):
    ref = _compound_with_building_3(engine)
    worker = make_user("worker", ref["grid"])
    assert client.get("/v1/mobile/places/search", params={"q": "x"}).status_code == 401
    r = client.get("/v1/mobile/places/search", params={"q": f"{ref['kname']} 3栋"}, headers=worker["headers"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items[0]["kind"] == "building" and items[0]["id"] == ref["bid"], items
    assert items[0]["label"] == f"{ref['kname']} 3栋"
    with engine.connect() as conn:  # the point lies in the building
        assert conn.execute(text("SELECT ST_Intersects(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326)) FROM buildings "
                                 "WHERE id = :i"), {"x": items[0]["lon"], "y": items[0]["lat"], "i": ref["bid"]},
                            ).scalar()
    # the compound alone, exact name first
    search = "/v1/mobile/places/search"
    items = client.get(search, params={"q": ref["kname"]}, headers=worker["headers"]).json()["items"]
    assert items[0] == {**items[0], "kind": "compound", "id": ref["kid"], "name": ref["kname"]}
    # another community's compound is out of this worker's reach, but an admin finds it
    q = {"q": ref["other"]["name"]}
    assert all(i["id"] != ref["other"]["id"]
               for i in client.get("/v1/mobile/places/search", params=q, headers=worker["headers"]).json()["items"])
    admin = make_user("admin")
    ids = [i["id"] for i in client.get("/v1/mobile/places/search", params=q, headers=admin["headers"]).json()["items"]]
    assert ref["other"]["id"] in ids
    # a building number the compound lacks: the compound instead
    items = client.get("/v1/mobile/places/search", params={"q": f"{ref['kname']} 999栋"},
                       headers=worker["headers"]).json()["items"]
    assert items and items[0]["kind"] == "compound" and items[0]["id"] == ref["kid"]
    # nonsense: nothing, not an error
    r = client.get("/v1/mobile/places/search", params={"q": "没有这个地方"}, headers=worker["headers"])
    assert r.status_code == 200 and r.json()["items"] == []


def test_offline_search_gives_the_servers_answers(client, make_user, engine, browser):
    ref = _compound_with_building_3(engine)
    admin = make_user("admin")
    places = client.get("/v1/mobile/places", headers=admin["headers"]).json()
    assert places["compounds"] and places["buildings"]
    with engine.connect() as conn:
        names = conn.execute(text("SELECT name FROM compounds WHERE name IS NOT NULL ORDER BY id LIMIT 6")
                             ).scalars().all()
    queries = [ref["kname"], f"{ref['kname']} 3栋", f"{ref['kname']}3号楼", "3栋", "2", "小区", "花园 1栋", "苑",
               "路", "没有这个地方", f"{ref['kname']} 999栋", *names, *(n[:2] for n in names),
               *(f"{n} 1" for n in names)]

    def online(q: str) -> list:
        r = client.get("/v1/mobile/places/search", params={"q": q}, headers=admin["headers"])
        return [(i["kind"], i["id"], i["label"], i["lon"], i["lat"]) for i in r.json()["items"]]

    server = [online(q) for q in queries]
    assert sum(1 for s in server if s) >= len(queries) - 3  # the queries do find things
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content("<html><body></body></html>")
        page.add_script_tag(path=str(PLACES_JS))
        offline = page.evaluate("([p, qs]) => qs.map(q => GA.searchPlacesOffline(p, q).map("
                                "i => [i.kind, i.id, i.label, i.lon, i.lat]))", [places, queries])
    finally:
        context.close()
    for q, s, o in zip(queries, server, offline, strict=True):
        assert [tuple(x) for x in o] == s, q


def test_places_pack_is_the_jurisdictions_and_small(client, make_user, engine):
    ref = _compound_with_building_3(engine)
    worker = make_user("worker", ref["grid"])
    r = client.get("/v1/mobile/places", headers=worker["headers"])
    assert r.status_code == 200
    body = r.json()
    assert ref["kid"] in [c[0] for c in body["compounds"]]
    assert ref["bid"] in [b[0] for b in body["buildings"]]
    assert ref["other"]["id"] not in [c[0] for c in body["compounds"]]
    assert len(r.content) < 50_000, len(r.content)  # one grid's places: a few KB


@pytest.mark.parametrize("q", ["\x00", "%", "_", "'", "a" * 100, "１２３４５６７８９０１２３４５６７８９０１２３栋"])
def test_search_refuses_or_answers_odd_input(client, admin_headers, q):
    r = client.get("/v1/mobile/places/search", params={"q": q}, headers=admin_headers)
    assert r.status_code in (200, 422), r.text
