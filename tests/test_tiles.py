"""Vector tiles at /tiles/{layer}/{z}/{x}/{y}.mvt and their TileJSON: decoded with mapbox-vector-tile, checked
against PostGIS for features and attributes, the jurisdiction, boundary versions (`at`), ETag/304, gzip."""

from __future__ import annotations

import gzip
import math

import pytest
from sqlalchemy import text

mvt = pytest.importorskip("mapbox_vector_tile", reason="pip install mapbox-vector-tile (a dev dependency)")

MVT = "application/vnd.mapbox-vector-tile"


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


@pytest.fixture
def place(db_session) -> dict:
    """A community with several grids, a point inside its first grid, and a grid of another community."""
    community = db_session.execute(text(
        "SELECT c.code FROM current_communities c JOIN current_grids g ON starts_with(g.code, c.code) "
        "GROUP BY c.code HAVING count(*) >= 2 ORDER BY c.code LIMIT 1")).scalar_one()
    grid, lon, lat = db_session.execute(text(
        "SELECT code, ST_X(p), ST_Y(p) FROM (SELECT code, ST_PointOnSurface(geom) p FROM current_grids "
        "WHERE starts_with(code, :c) ORDER BY code LIMIT 1) x"), {"c": community}).one()
    return {"community": community, "grid": grid, "lon": lon, "lat": lat}


@pytest.fixture
def leader(make_user, place) -> dict:
    return make_user("leader", place["community"])["headers"]


def _decode(r) -> dict:
    assert r.status_code in (200, 204), r.text
    return mvt.decode(r.content) if r.status_code == 200 else {}


def _in_tile(db_session, sql_from: str, z: int, x: int, y: int, where: str = "TRUE", **params) -> set:
    """Codes of the rows whose geometry meets tile z/x/y (computed independently of the service)."""
    return set(db_session.execute(text(
        f"SELECT code FROM {sql_from} WHERE ST_Intersects(geom, ST_Transform(ST_TileEnvelope(:z, :x, :y), 4326)) "
        f"AND {where}"), {"z": z, "x": x, "y": y, **params}).scalars())


def test_grid_tile_holds_the_grids_of_the_jurisdiction(client, admin_headers, leader, place, db_session):
    z = 14
    x, y = tile_of(place["lon"], place["lat"], z)
    url = f"/tiles/grids/{z}/{x}/{y}.mvt"
    r = client.get(url, headers=admin_headers)
    assert r.status_code == 200 and r.headers["content-type"] == MVT
    layers = _decode(r)
    assert list(layers) == ["grids"]
    feats = layers["grids"]["features"]
    codes = {f["properties"]["code"] for f in feats}
    assert codes == _in_tile(db_session, "current_grids", z, x, y) and place["grid"] in codes
    props = next(f["properties"] for f in feats if f["properties"]["code"] == place["grid"])
    name, kind = db_session.execute(text("SELECT name, kind FROM current_grids WHERE code = :g"),
                                    {"g": place["grid"]}).one()
    assert props["name"] == name and props["kind"] == kind and props["community_code"] == place["community"]
    assert isinstance(props["fulltime_workers"], int) and isinstance(props["version_id"], int)
    assert all(f["geometry"]["type"] in ("Polygon", "MultiPolygon") for f in feats)
    assert all(isinstance(f["id"], int) for f in feats)

    mine = {f["properties"]["code"] for f in _decode(client.get(url, headers=leader))["grids"]["features"]}
    assert mine == {c for c in codes if c.startswith(place["community"])} and place["grid"] in mine
    assert len(mine) < len(codes) or all(c.startswith(place["community"]) for c in codes)


def test_every_layer_decodes_with_its_attributes(client, admin_headers, place, db_session):
    expect = {"streets": ("code", "name"), "communities": ("code", "street_code"), "grids": ("code", "kind"),
              "micro_grids": ("code", "grid_code"), "compounds": ("name", "kind"),
              "buildings": ("households", "units"), "incidents": ("class_code", "state")}
    for layer, attrs in expect.items():
        z = 16
        x, y = tile_of(place["lon"], place["lat"], z)
        found = _decode(client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt", headers=admin_headers))
        if not found:  # nothing of this layer at this very spot: try the tile around it
            z = 14
            x, y = tile_of(place["lon"], place["lat"], z)
            found = _decode(client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt", headers=admin_headers))
        assert list(found) == [layer], layer
        props = found[layer]["features"][0]["properties"]
        assert all(a in props for a in attrs), (layer, props)


def test_incidents_are_heat_cells_when_zoomed_out(client, admin_headers, place, db_session):
    z = 12
    x, y = tile_of(place["lon"], place["lat"], z)
    cells = _decode(client.get(f"/tiles/incidents/{z}/{x}/{y}.mvt", headers=admin_headers))["incidents"]["features"]
    total = db_session.execute(text(
        "SELECT count(*) FROM incidents WHERE ST_Intersects(geom, ST_Transform(ST_TileEnvelope(:z, :x, :y), 4326))"),
        {"z": z, "x": x, "y": y}).scalar_one()
    assert 0 < len(cells) < total and sum(c["properties"]["count"] for c in cells) == total
    assert all(c["geometry"]["type"] == "Point" and c["properties"]["open"] <= c["properties"]["count"]
               for c in cells)


def test_etag_304_cache_control_and_gzip(client, admin_headers, leader, place):
    z = 14
    x, y = tile_of(place["lon"], place["lat"], z)
    url = f"/tiles/buildings/{z}/{x}/{y}.mvt"
    r = client.get(url, headers={**admin_headers, "Accept-Encoding": "gzip"})
    assert r.status_code == 200
    etag = r.headers["etag"]
    assert etag.startswith('W/"buildings-v') and "private" in r.headers["cache-control"]
    assert r.headers["content-encoding"] == "gzip" and "Accept-Encoding" in r.headers["vary"]
    assert mvt.decode(r.content)["buildings"]["features"]  # the client undid the gzip
    again = client.get(url, headers={**admin_headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get(url, headers=leader)
    assert other.headers["etag"] != etag  # another jurisdiction, another tile
    assert client.get(url, headers={**leader, "If-None-Match": etag}).status_code == 200


def test_gzip_on_the_wire(client, admin_headers, place):
    """The bytes as sent: gzip-compressed MVT that decodes to the same tile."""
    z = 14
    x, y = tile_of(place["lon"], place["lat"], z)
    path = f"/tiles/buildings/{z}/{x}/{y}.mvt"

    def raw(encoding: str):
        with client.stream("GET", path, headers={**admin_headers, "Accept-Encoding": encoding}) as r:
            return r.headers, b"".join(r.iter_raw())

    zipped_headers, body = raw("gzip")
    plain_headers, plain_body = raw("identity")
    assert zipped_headers["content-encoding"] == "gzip" and "content-encoding" not in plain_headers
    assert gzip.decompress(body) == plain_body and len(body) < 0.7 * len(plain_body)
    assert mvt.decode(plain_body)["buildings"]["features"]


def test_empty_tiles_zooms_versions_and_errors(client, admin_headers, place):
    z = 14
    x, y = tile_of(place["lon"], place["lat"], z)
    assert client.get(f"/tiles/grids/{z}/0/0.mvt", headers=admin_headers).status_code == 204  # far away
    assert client.get(f"/tiles/buildings/5/{x >> 9}/{y >> 9}.mvt", headers=admin_headers).status_code == 204
    # boundaries in force before the first version: none
    assert client.get(f"/tiles/grids/{z}/{x}/{y}.mvt", params={"at": "2000-01-01"},
                      headers=admin_headers).status_code == 204
    assert client.get(f"/tiles/grids/{z}/{x}/{y}.mvt", params={"at": "2030-01-01"},
                      headers=admin_headers).status_code == 200
    assert client.get("/tiles/grids/3/8/0.mvt", headers=admin_headers).status_code == 404  # x ≥ 2^z
    assert client.get(f"/tiles/nothing/{z}/{x}/{y}.mvt", headers=admin_headers).status_code == 404
    assert client.get(f"/tiles/grids/{z}/{x}/{y}.mvt", params={"at": "someday"},
                      headers=admin_headers).status_code == 400
    r = client.get(f"/tiles/grids/{z}/{x}/{y}.mvt")
    assert r.status_code == 401


def test_tilejson(client, leader, place, db_session):
    r = client.get("/tiles/grids.json", params={"at": "2026-01-01"}, headers=leader)
    assert r.status_code == 200, r.text
    tj = r.json()
    assert tj["tilejson"] == "3.0.0" and tj["tiles"][0].endswith("/tiles/grids/{z}/{x}/{y}.mvt?at=2026-01-01")
    assert tj["minzoom"] <= 14 <= tj["maxzoom"]
    layer = tj["vector_layers"][0]
    assert layer["id"] == "grids" and {"code", "name", "kind"} <= set(layer["fields"])
    box = db_session.execute(text("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                                  "ST_Extent(geom) e FROM current_grids WHERE starts_with(code, :c)) x"),
                             {"c": place["community"]}).one()
    assert tj["bounds"] == pytest.approx(list(box), abs=1e-6)
    heat = client.get("/tiles/incidents.json", headers=leader).json()
    assert {"count", "open", "red", "class_code"} <= set(heat["vector_layers"][0]["fields"])
