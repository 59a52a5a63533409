"""Addresses (地址) of compounds and buildings (issue 16, items 3 and 7): the column (migration 0023), the demo's
addresses, the importer reading address columns (OSM's addr:* combined) and the exporter writing them back, and
the place search by address on the server and offline on the phone (places.js) giving the same answers."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from sqlalchemy import text

from geo.features.places import jurisdiction_places, parse_place_query, search_key, search_places
from geo.io import ImportOptions, import_layer

PLACES_JS = Path(__file__).resolve().parents[1] / "maps" / "static" / "mobile" / "places.js"
SEARCH = "/v1/mobile/places/search"

#: Spellings a worker types: full-width digits and spaces, tabs, 号楼/幢/座, 号 or not, units and rooms.
KEY_SAMPLES = [
    "巴陵东路128号3栋", "巴陵东路１２８号３栋", "巴陵东路 128 号 3 号楼", "巴陵东路128号\t3幢", "巴陵东路128　3座",
    "XX路100号 3", "ＸＸ路100 3栋", "100号院", "Ab  C", "3座", "滨江路3号院", "1-2-3", "#12", "12#", "号", "",
    "世纪大道 1号", "阳光小区 3栋 2单元", "100%", "a_b",
]


def _pick(engine) -> dict:
    """A compound with an address and a building 3栋 in it, with the grid holding that building."""
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT k.id AS kid, k.name AS kname, k.address AS kaddr, b.id AS bid, b.address AS baddr, g.code AS grid "
            "FROM buildings b JOIN compounds k ON k.id = b.compound_id "
            "JOIN current_grids g ON ST_Intersects(g.geom, ST_PointOnSurface(b.geom)) "
            "WHERE b.name = '3栋' AND k.address IS NOT NULL ORDER BY k.id LIMIT 1")).mappings().one())


def _offline(browser, pack: dict, queries: list[str]) -> list[list]:
    """places.js's answers in Chromium, against the pack as the phone caches it."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content("<html><body></body></html>")
        page.add_script_tag(path=str(PLACES_JS))
        return page.evaluate("([p, qs]) => qs.map(q => GA.searchPlacesOffline(p, q).map("
                             "i => [i.kind, i.id, i.label, i.address, i.lon, i.lat]))", [pack, queries])
    finally:
        context.close()


def test_search_key_is_the_same_in_python_sql_and_javascript(engine, browser):
    with engine.connect() as conn:
        sql = [conn.execute(text("SELECT place_search_key(:s)"), {"s": s}).scalar() for s in KEY_SAMPLES]
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content("<html><body></body></html>")
        page.add_script_tag(path=str(PLACES_JS))
        js = page.evaluate("ss => ss.map(GA.placeSearchKey)", KEY_SAMPLES)
    finally:
        context.close()
    py = [search_key(s) for s in KEY_SAMPLES]
    assert py == sql == js
    assert search_key("巴陵东路１２８号　３号楼") == search_key("巴陵东路128号3栋") == "巴陵东路128#3栋"
    assert search_key("巴陵东路128号") == search_key("巴陵东路 128") == "巴陵东路128"
    assert search_key("XX路100号3栋") != search_key("XX路1003栋")  # house and building numbers stay apart


def test_parse_drops_units_and_rooms():
    assert parse_place_query("巴陵东路129号3栋2单元") == ("巴陵东路129号", 3)
    assert parse_place_query("巴陵东路129号 3幢 2单元 301") == ("巴陵东路129号", 3)
    assert parse_place_query("3栋2单元") == ("", 3)
    assert parse_place_query("32单元") == ("32单元", None)  # no building before the unit: kept as text


def test_demo_district_has_plausible_addresses(district):
    comp, bldg = district.compounds, district.buildings
    assert comp["address"].notna().all()
    assert comp["address"].str.fullmatch(r"\D+?(路|街|大道|巷子)\d+号").all(), comp["address"].head()
    named = comp["name"].str.extract(r"^(\D+?(?:路|街|大道|巷子)\d+)号(?:院|小区)", expand=False)
    assert (comp.loc[named.notna(), "address"] == named.dropna() + "号").all()  # "黄沙湾路178号院" lives there
    # house numbers are unique along a road
    assert not comp["address"].duplicated().any()
    inside = bldg["compound_ref"].notna()
    by_ref = comp.set_index("ref")["address"]
    expected = by_ref.reindex(bldg.loc[inside, "compound_ref"].astype(int)).to_numpy() + bldg.loc[inside, "name"]
    assert (bldg.loc[inside, "address"].to_numpy() == expected.to_numpy()).all()
    assert bldg.loc[~inside, "address"].isna().all()


def test_demo_addresses_are_deterministic():
    from demo.compounds import compound_addresses

    boxes = shapely.box(np.arange(40) * 50.0, np.arange(40) % 7 * 200.0, np.arange(40) * 50.0 + 30,
                        np.arange(40) % 7 * 200.0 + 30)
    ref = np.arange(1, 41)
    a = compound_addresses(np.random.default_rng(3), boxes, ref)
    b = compound_addresses(np.random.default_rng(3), boxes, ref)
    assert list(a) == list(b) and len(set(a)) == 40
    numbers = [int(re.search(r"(\d+)号$", x).group(1)) for x in a]
    assert all(n % 2 == 1 for n in numbers)  # odd side of the road


def test_search_by_address_on_the_server(client, make_user, engine):
    ref = _pick(engine)
    worker = make_user("worker", ref["grid"])
    addr = ref["kaddr"]
    number = re.search(r"(\d+)号$", addr).group(1)
    wide = addr.replace(number, number.translate(str.maketrans("0123456789", "０１２３４５６７８９")))

    def items(q: str) -> list[dict]:
        r = client.get(SEARCH, params={"q": q}, headers=worker["headers"])
        assert r.status_code == 200, r.text
        return r.json()["items"]

    hit = items(addr)[0]
    assert (hit["kind"], hit["id"], hit["address"]) == ("compound", ref["kid"], addr)  # the address shown
    assert items(addr[:-1])[0]["id"] == ref["kid"]  # without 号
    for q in (f"{addr}3栋2单元", f"{addr} 3栋", f"{wide}　３幢", f"{addr[:-1]} 3号楼 2单元 301"):
        hit = items(q)[0]
        assert (hit["kind"], hit["id"], hit["address"]) == ("building", ref["bid"], ref["baddr"]), q
    # the building's own address, typed as text, finds it first among the compound's buildings
    assert [i for i in items(ref["baddr"]) if i["kind"] == "building"][0]["id"] == ref["bid"]
    # another community's address is out of the worker's reach
    with engine.connect() as conn:
        other = conn.execute(text(
            "SELECT k.address FROM compounds k WHERE NOT EXISTS (SELECT 1 FROM current_grids g "
            "WHERE starts_with(g.code, :c) AND ST_Intersects(g.geom, k.geom)) ORDER BY k.id LIMIT 1"),
            {"c": ref["grid"][:12]}).scalar_one()
    assert all(i["address"] != other for i in items(other))


def test_offline_address_search_gives_the_servers_answers(client, make_user, engine, browser):
    ref = _pick(engine)
    admin = make_user("admin")
    pack = client.get("/v1/mobile/places", headers=admin["headers"]).json()
    with engine.connect() as conn:
        addrs = conn.execute(text("SELECT address FROM compounds WHERE address IS NOT NULL ORDER BY id LIMIT 5")
                             ).scalars().all()
    addr = ref["kaddr"]
    road = re.match(r"\D+", addr).group(0)
    queries = [addr, addr[:-1], f"{addr}3栋2单元", f"{addr} 3幢", f"{addr}３号楼", ref["baddr"], road, road[:2],
               f"{road}1", f"{road} 1", "路1", "号", "3栋2单元", *addrs, *(a[:-2] for a in addrs),
               *(f"{a}1栋" for a in addrs)]

    def online(q: str) -> list:
        r = client.get(SEARCH, params={"q": q}, headers=admin["headers"])
        return [[i["kind"], i["id"], i["label"], i["address"], i["lon"], i["lat"]] for i in r.json()["items"]]

    server = [online(q) for q in queries]
    assert sum(1 for s in server if s) >= len(queries) - 1
    for q, s, o in zip(queries, server, _offline(browser, pack, queries), strict=True):
        assert o == s, q


def test_places_pack_rebuilds_building_addresses(client, make_user, engine):
    ref = _pick(engine)
    worker = make_user("worker", ref["grid"][:12])
    body = client.get("/v1/mobile/places", headers=worker["headers"]).json()
    comp = {c[0]: c for c in body["compounds"]}
    assert comp[ref["kid"]][4] == ref["kaddr"]
    derived = [b for b in body["buildings"] if b[5] is True]
    assert len(derived) >= 0.8 * sum(1 for b in body["buildings"] if b[5] is not None)  # most are not sent twice
    assert all(comp[b[2]][4] + b[1] for b in derived)
    assert next(b for b in body["buildings"] if b[0] == ref["bid"])[5] is True
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(gzip.compress(raw)) < 60_000, len(gzip.compress(raw))  # one community's places


def _write(tmp_path: Path, name: str, frame: gpd.GeoDataFrame) -> Path:
    path = tmp_path / name
    frame.to_file(path, driver="GeoJSON")
    return path


def _squares(n: int, lon: float = 113.1, lat: float = 29.37, size: float = 0.001) -> list:
    return [shapely.box(lon + i * 2 * size, lat, lon + i * 2 * size + size, lat + size) for i in range(n)]


def test_import_reads_address_columns_and_exports_them(tmp_path, migrated_engine):
    from geo.io.exporter import read_layer

    comp = gpd.GeoDataFrame({"小区名称": ["阳光小区", "月亮湾"], "详细地址": ["巴陵东路１２号", None],
                             "小区编号": ["K1", "K2"]}, geometry=_squares(2), crs=4326)
    dry = import_layer(migrated_engine, "compounds", _write(tmp_path, "c.geojson", comp), ImportOptions(dry_run=True))
    assert "we read column '详细地址' as address (recognised)" in dry.columns_read
    import_layer(migrated_engine, "compounds", _write(tmp_path, "c.geojson", comp))
    # OSM's tags: addr:street + addr:housenumber joined, 号 added to a bare number; a building inside K1
    osm = gpd.GeoDataFrame({"id": ["w1", "w2", "w3"], "name": ["会议中心", None, None],
                            "addr:street": ["滨江大道", "丰和路", None], "addr:housenumber": ["2727", "1号", "5"]},
                           geometry=[shapely.box(113.1002, 29.3702, 113.1004, 29.3704),
                                     *_squares(2, lon=113.11)], crs=4326)
    path = _write(tmp_path, "b.geojson", osm)
    dry = import_layer(migrated_engine, "buildings", path, ImportOptions(dry_run=True))
    assert "we read column 'addr:street+addr:housenumber' as address (recognised)" in dry.columns_read
    import_layer(migrated_engine, "buildings", path)
    with migrated_engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT source_ref, address FROM compounds UNION ALL "
                                        "SELECT source_ref, address FROM buildings")).all())
        assert stored == {"K1": "巴陵东路１２号", "K2": None, "w1": "滨江大道2727号", "w2": "丰和路1号", "w3": None}
        hits = search_places(conn, "巴陵东路12", None)
        assert [(h["kind"], h["name"], h["address"]) for h in hits] == [("compound", "阳光小区", "巴陵东路１２号")]
        hit = search_places(conn, "滨江大道 2727号", None)[0]
        assert (hit["kind"], hit["name"], hit["compound"]) == ("building", "会议中心", "阳光小区")
        hit = search_places(conn, "丰和路1", None)[0]
        assert (hit["name"], hit["label"], hit["address"]) == (None, "丰和路1号", "丰和路1号")
        assert jurisdiction_places(conn, None)["buildings"][1][5] == "丰和路1号"  # not derivable: sent as is
        exported = read_layer(conn, "compounds")
        assert exported["address"].iloc[0] == "巴陵东路１２号" and exported["address"].isna().iloc[1]
        assert "address" in read_layer(conn, "buildings").columns
    # exported back, the file imports with its addresses again
    again = gpd.GeoDataFrame(exported.drop(columns=["ref"]).assign(ref=["K9", "K10"]), crs=4326)
    dry = import_layer(migrated_engine, "compounds", _write(tmp_path, "again.geojson", again),
                       ImportOptions(dry_run=True))
    assert "we read column 'address' as address (recognised)" in dry.columns_read


@pytest.mark.osm
def test_osm_building_found_by_its_address(osm_dir, migrated_engine):
    raw = json.loads((osm_dir / "buildings.geojson").read_text(encoding="utf-8"))["features"]
    tagged = [f["properties"] for f in raw if f["properties"].get("addr_street") and f["properties"].get(
        "addr_housenumber") and f["properties"].get("name")]
    if not tagged:
        pytest.skip("the extract's buildings carry no addr:street + addr:housenumber tags")
    report = import_layer(migrated_engine, "buildings", osm_dir / "buildings.geojson")
    assert report.field_mapping["address"] == "addr:street+addr:housenumber"
    target = next(p for p in tagged if p["name"] == "上海国际会议中心") if any(
        p["name"] == "上海国际会议中心" for p in tagged) else tagged[0]
    with migrated_engine.connect() as conn:
        hits = search_places(conn, f"{target['addr_street']} {target['addr_housenumber']}号", None)
        stored = conn.execute(text("SELECT count(*) FROM buildings WHERE address IS NOT NULL")).scalar_one()
    assert hits and hits[0]["kind"] == "building" and hits[0]["name"] == target["name"], hits[:3]
    assert hits[0]["address"] == f"{target['addr_street']}{target['addr_housenumber']}号"
    assert stored >= len({str(p["id"]) for p in tagged})
