"""OGC API Features at /ogc: landing, conformance, collections, items (bbox, paging, datetime, property filters),
Part 2 CRS (EPSG:4326 / EPSG:4490 axis order, bbox-crs, Content-Crs), the jurisdiction on every answer, the HTML
view, and GDAL's OAPIF driver (what QGIS uses) reading the layers from a live server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from sqlalchemy import text

from api.problems import PROBLEM_MEDIA_TYPE

COLLECTION_IDS = ["streets", "communities", "grids", "micro_grids", "compounds", "buildings", "incidents"]
GEOJSON = "application/geo+json"


@pytest.fixture
def codes(db_session) -> dict:
    """A community with at least two grids, its street, one of its grids, and a grid of another community."""
    community = db_session.execute(text(
        "SELECT c.code FROM current_communities c JOIN current_grids g ON starts_with(g.code, c.code) "
        "GROUP BY c.code HAVING count(*) >= 2 ORDER BY c.code LIMIT 1")).scalar_one()
    grid = db_session.execute(text("SELECT code FROM current_grids WHERE starts_with(code, :c) ORDER BY code LIMIT 1"),
                              {"c": community}).scalar_one()
    other = db_session.execute(text("SELECT code FROM current_grids WHERE NOT starts_with(code, :c) ORDER BY code "
                                    "LIMIT 1"), {"c": community}).scalar_one()
    return {"community": community, "street": community[:9], "grid": grid, "other_grid": other}


@pytest.fixture
def leader(make_user, codes) -> dict:
    return make_user("leader", codes["community"])["headers"]


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    return r.json()


def _all_pages(client, url: str, headers: dict, params: dict | None = None) -> tuple[list[dict], int, int]:
    """Every feature reached by following `next` links: (features, numberMatched, pages)."""
    r = client.get(url, params=params, headers=headers)
    assert r.status_code == 200, r.text
    feats, matched, pages = [], r.json()["numberMatched"], 0
    while True:
        body = r.json()
        pages += 1
        assert body["type"] == "FeatureCollection" and body["numberReturned"] == len(body["features"])
        feats += body["features"]
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        if not nxt:
            return feats, matched, pages
        r = client.get(nxt[0], headers=headers)
        assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------- the resources

def test_landing_conformance_and_collections(client, admin_headers):
    r = client.get("/ogc", headers=admin_headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    rels = {link["rel"]: link["href"] for link in r.json()["links"]}
    assert {"self", "service-desc", "service-doc", "conformance", "data"} <= set(rels)
    assert rels["data"].endswith("/ogc/collections") and rels["service-desc"].endswith("/openapi.json")

    conf = client.get("/ogc/conformance", headers=admin_headers).json()["conformsTo"]
    for cls in ("ogcapi-features-1/1.0/conf/core", "ogcapi-features-1/1.0/conf/geojson",
                "ogcapi-features-2/1.0/conf/crs"):
        assert any(c.endswith(cls) for c in conf), cls

    body = client.get("/ogc/collections", headers=admin_headers).json()
    assert [c["id"] for c in body["collections"]] == COLLECTION_IDS
    grids = next(c for c in body["collections"] if c["id"] == "grids")
    assert grids["title"] == "网格"
    assert "http://www.opengis.net/def/crs/EPSG/0/4490" in grids["crs"]
    assert "http://www.opengis.net/def/crs/OGC/1.3/CRS84" in grids["crs"]
    x0, y0, x1, y1 = grids["extent"]["spatial"]["bbox"][0]
    assert 100 < x0 < x1 < 130 and 20 < y0 < y1 < 40  # the district around Yueyang, lon/lat
    assert grids["extent"]["temporal"]["interval"][0][0] is not None
    assert any(link["rel"] == "items" and link["type"] == GEOJSON for link in grids["links"])

    one = client.get("/ogc/collections/grids", headers=admin_headers)
    assert one.status_code == 200 and one.json()["id"] == "grids"
    assert _problem(client.get("/ogc/collections/nothing", headers=admin_headers), 404)["type"].endswith(
        "unknown-collection")
    q = client.get("/ogc/collections/grids/queryables", headers=admin_headers).json()
    assert {"code", "kind", "community_code"} <= set(q["properties"])


def test_no_credentials_no_features(client):
    for path in ("/ogc", "/ogc/collections", "/ogc/collections/grids/items", "/ogc/collections/grids/items/1"):
        r = client.get(path)
        assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"], path


# ----------------------------------------------------------------------------------------------- items

def test_items_page_through_every_grid(client, admin_headers, db_session):
    total = db_session.execute(text("SELECT count(*) FROM current_grids")).scalar_one()
    feats, matched, pages = _all_pages(client, "/ogc/collections/grids/items", admin_headers, {"limit": 7})
    assert matched == total == len(feats) and pages == -(-total // 7)
    assert len({f["id"] for f in feats}) == total
    f = feats[0]
    assert f["type"] == "Feature" and f["geometry"]["type"] == "MultiPolygon"
    p = f["properties"]
    assert len(p["code"]) == 15 and p["name"] and p["kind"] in ("comprehensive", "dedicated")
    assert p["community_code"] == p["code"][:12] and p["area_m2"] > 100  # square metres
    r = client.get("/ogc/collections/grids/items", params={"limit": 7, "offset": 7}, headers=admin_headers)
    assert any(link["rel"] == "prev" for link in r.json()["links"])
    one = client.get(f"/ogc/collections/grids/items/{f['id']}", headers=admin_headers)
    assert one.status_code == 200 and one.headers["content-type"].startswith(GEOJSON)
    assert one.json()["properties"]["code"] == p["code"]


def test_a_leader_sees_only_their_community(client, leader, codes, db_session):
    community = codes["community"]
    feats, matched, _ = _all_pages(client, "/ogc/collections/grids/items", leader, {"limit": 1000})
    expected = db_session.execute(text("SELECT count(*) FROM current_grids WHERE starts_with(code, :c)"),
                                  {"c": community}).scalar_one()
    assert matched == len(feats) == expected >= 2
    assert all(f["properties"]["code"].startswith(community) for f in feats)
    # nothing of the street around it, nor of another community
    assert client.get("/ogc/collections/streets/items", headers=leader).json()["numberMatched"] == 0
    for cid in ("micro_grids", "compounds", "buildings", "incidents"):
        body = client.get(f"/ogc/collections/{cid}/items", params={"limit": 1000}, headers=leader).json()
        assert body["numberMatched"] > 0, cid
        key = "code" if cid == "micro_grids" else "community_code"
        for f in body["features"]:
            value = f["properties"][key] or f["properties"].get("grid_code") or ""
            assert value.startswith(community) or (f["properties"].get("main_grid_code") or "").startswith(
                community), (cid, f["properties"])
    other = db_session.execute(text("SELECT boundary_id FROM current_grids WHERE code = :g"),
                               {"g": codes["other_grid"]}).scalar_one()
    assert _problem(client.get(f"/ogc/collections/grids/items/{other}", headers=leader), 404)
    # the extent is the community's
    ext = client.get("/ogc/collections/grids", headers=leader).json()["extent"]["spatial"]["bbox"][0]
    box = db_session.execute(text("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                                  "ST_Extent(geom) e FROM current_grids WHERE starts_with(code, :c)) x"),
                             {"c": community}).one()
    assert ext == pytest.approx(list(box), abs=1e-6)


def test_bbox_and_crs_4490_4326(client, admin_headers, codes, db_session):
    lon, lat = db_session.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p "
                                       "FROM current_grids WHERE code = :g) x"), {"g": codes["grid"]}).one()
    d = 0.0002
    box = f"{lon - d},{lat - d},{lon + d},{lat + d}"
    r = client.get("/ogc/collections/grids/items", params={"bbox": box}, headers=admin_headers)
    assert r.status_code == 200 and r.headers["content-crs"] == "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"
    crs84 = r.json()
    assert codes["grid"] in {f["properties"]["code"] for f in crs84["features"]}
    assert crs84["numberMatched"] < db_session.execute(text("SELECT count(*) FROM current_grids")).scalar_one()

    for srid in (4490, 4326):
        uri = f"http://www.opengis.net/def/crs/EPSG/0/{srid}"
        # bbox in the CRS's own axis order (latitude first), the answer too
        latlon_box = f"{lat - d},{lon - d},{lat + d},{lon + d}"
        r = client.get("/ogc/collections/grids/items", params={"bbox": latlon_box, "bbox-crs": uri, "crs": uri},
                       headers=admin_headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-crs"] == f"<{uri}>"
        body = r.json()
        assert [f["id"] for f in body["features"]] == [f["id"] for f in crs84["features"]]
        a = crs84["features"][0]["geometry"]["coordinates"][0][0][0]
        b = body["features"][0]["geometry"]["coordinates"][0][0][0]
        assert b == pytest.approx([a[1], a[0]], abs=1e-6)  # swapped; CGCS2000 ≈ WGS 84 within centimetres
    r = client.get("/ogc/collections/grids/items", params={"crs": "http://www.opengis.net/def/crs/EPSG/0/3857",
                                                           "limit": 1}, headers=admin_headers)
    x, y = r.json()["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 1.2e7 < x < 1.3e7 and 3.3e6 < y < 3.5e6  # metres
    assert _problem(client.get("/ogc/collections/grids/items", params={"crs": "EPSG:2000"}, headers=admin_headers),
                    400)["type"].endswith("unsupported-crs")


def test_datetime_picks_the_boundary_version(client, admin_headers, codes, db_session):
    """A redraw in the test's transaction: before it the old outline, after it the new one, an interval both."""
    g = codes["grid"]
    old_id, grid_id = db_session.execute(text("SELECT boundary_id, id FROM current_grids WHERE code = :g"),
                                         {"g": g}).one()
    db_session.execute(text("INSERT INTO boundary_versions (valid_from, label) VALUES ('2026-06-01+08', 'redraw')"))
    vid = db_session.execute(text("SELECT id FROM boundary_versions WHERE label = 'redraw'")).scalar_one()
    db_session.execute(text("UPDATE grid_boundaries SET valid_to = '2026-06-01+08' WHERE id = :b"), {"b": old_id})
    db_session.execute(text(
        "INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom) SELECT grid_id, :v, '2026-06-01+08', "
        "ST_Multi(ST_Buffer(geom, -0.00005)) FROM grid_boundaries WHERE id = :b"), {"v": vid, "b": old_id})
    db_session.flush()
    new_id = db_session.execute(text("SELECT boundary_id FROM current_grids WHERE code = :g"), {"g": g}).scalar_one()

    def ids(**params) -> list[int]:
        r = client.get("/ogc/collections/grids/items", params={"code": g, **params}, headers=admin_headers)
        assert r.status_code == 200, r.text
        return [f["id"] for f in r.json()["features"]]

    assert ids() == [new_id]
    assert ids(datetime="2026-05-31") == [old_id]
    assert ids(at="2026-05-31") == [old_id]
    assert ids(datetime="2026-06-01T00:00:00+08:00") == [new_id]
    assert ids(datetime="2026-05-01/2026-07-01") == sorted([old_id, new_id])
    assert ids(datetime="../2026-05-01") == [old_id]
    assert ids(datetime="2000-01-01") == []  # before the first version
    feat = client.get(f"/ogc/collections/grids/items/{old_id}", headers=admin_headers).json()
    assert feat["properties"]["valid_to"] is not None and feat["properties"]["unit_id"] == grid_id
    assert _problem(client.get("/ogc/collections/grids/items", params={"datetime": "yesterday"},
                               headers=admin_headers), 400)


def test_property_filters_and_bad_parameters(client, admin_headers, codes):
    r = client.get("/ogc/collections/grids/items", params={"kind": "dedicated", "limit": 1000}, headers=admin_headers)
    feats = r.json()["features"]
    assert feats and all(f["properties"]["kind"] == "dedicated" for f in feats)
    r = client.get("/ogc/collections/grids/items", params={"community_code": codes["community"]},
                   headers=admin_headers)
    assert {f["properties"]["community_code"] for f in r.json()["features"]} == {codes["community"]}
    r = client.get("/ogc/collections/incidents/items", params={"is_open": "true", "limit": 50},
                   headers=admin_headers)
    assert all(f["properties"]["is_open"] for f in r.json()["features"])
    for params in ({"nonsense": "1"}, {"bbox": "1,2,3"}, {"bbox": "1,2,3,x"}, {"limit": 0}, {"limit": 10_001},
                   {"offset": -1}, {"datetime": "2026-02-01/2026-01-01"}, {"bbox-crs": "EPSG:4326"}):
        r = client.get("/ogc/collections/grids/items", params=params, headers=admin_headers)
        assert r.status_code in (400, 422) and r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE), params


def test_incidents_are_points_filtered_by_report_time(client, admin_headers, db_session):
    first, last = db_session.execute(text("SELECT min(reported_at), max(reported_at) FROM incidents")).one()
    body = client.get("/ogc/collections/incidents/items", params={"limit": 3}, headers=admin_headers).json()
    f = body["features"][0]
    assert f["geometry"]["type"] == "Point" and f["properties"]["class_name"] and f["properties"]["state_name"]
    assert "reporter_phone" not in f["properties"] and "reporter" not in f["properties"]  # no personal data
    month = first.strftime("%Y-%m")
    expected = db_session.execute(text(
        "SELECT count(*) FROM incidents WHERE reported_at >= CAST(:a AS timestamptz) "
        "AND reported_at < CAST(:a AS timestamptz) + interval '1 month'"), {"a": f"{month}-01T00:00:00+08:00"}
    ).scalar_one()
    nxt = (first.replace(day=28) + __import__("datetime").timedelta(days=5)).strftime("%Y-%m")
    r = client.get("/ogc/collections/incidents/items",
                   params={"datetime": f"{month}-01T00:00:00+08:00/{nxt}-01T00:00:00+08:00", "limit": 1},
                   headers=admin_headers)
    assert r.json()["numberMatched"] == expected > 0


def test_html_view(client, admin_headers):
    from maps.assets import external_resources

    for path in ("/ogc", "/ogc/collections", "/ogc/collections/grids/items"):
        r = client.get(path, params={"f": "html"}, headers=admin_headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assert '<html lang="zh-CN">' in r.text and external_resources(r.text) == []
    r = client.get("/ogc/collections/grids/items", headers={**admin_headers, "Accept": "text/html"})
    assert "<table" in r.text and "ga-ogc-map" in r.text and "网格" in r.text


# --------------------------------------------------------------------------------------- GDAL (QGIS's driver)

_GDAL_SCRIPT = r"""
import json, sys
import pyogrio
url, crs = sys.argv[1], sys.argv[2]
out = {"layers": [list(x) for x in pyogrio.list_layers(url)]}
info = pyogrio.read_info(url, layer="grids")
out["info"] = {"features": int(info["features"]), "fields": list(info["fields"]), "crs": info["crs"],
               "geometry_type": info["geometry_type"]}
df = pyogrio.read_dataframe(url, layer="grids")
out["read"] = {"n": len(df), "codes": sorted(df["code"]), "bounds": [float(v) for v in df.total_bounds]}
df = pyogrio.read_dataframe(url, layer="grids", CRS=crs)
out["read_4490"] = {"n": len(df), "epsg": df.crs.to_epsg(), "bounds": [float(v) for v in df.total_bounds]}
print(json.dumps(out))
"""


def _gdal_env(token: str) -> dict:
    return {**os.environ, "GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": token, "GDAL_HTTP_TIMEOUT": "60",
            "GDAL_HTTP_MAX_RETRY": "0", "CPL_VSIL_CURL_USE_CACHE": "NO"}


def test_gdal_oapif_reads_the_layers(app, make_user, codes, db_session, live_server):
    """GDAL's OAPIF driver (QGIS's) lists the collections and reads the leader's grids, in CRS84 and in EPSG:4490,
    from a live server. GDAL runs in a child process: it holds the interpreter lock while it reads, which would
    starve a server thread in this process."""
    import pyogrio

    user = make_user("leader", codes["community"])
    from api.auth import issue_token

    token = issue_token(user["user"])
    expected = sorted(db_session.execute(text("SELECT code FROM current_grids WHERE starts_with(code, :c)"),
                                         {"c": codes["community"]}).scalars())
    base = live_server(app)
    url = f"OAPIF:{base}/ogc"
    if "OAPIF" in pyogrio.list_drivers():
        r = subprocess.run([sys.executable, "-c", _GDAL_SCRIPT, url, "EPSG:4490"], capture_output=True, text=True,
                           env=_gdal_env(token), timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        layers = dict(out["layers"])
        assert set(layers) == set(COLLECTION_IDS)
        assert layers["grids"] == "MultiPolygon" and layers["incidents"] == "Point"
        assert out["info"]["features"] == len(expected)
        assert {"code", "name", "kind", "community_code"} <= set(out["info"]["fields"])
        assert out["read"]["n"] == len(expected) and out["read"]["codes"] == expected
        x0, y0, x1, y1 = out["read"]["bounds"]
        assert 100 < x0 < x1 < 130 and 20 < y0 < y1 < 40
        assert out["read_4490"]["n"] == len(expected) and out["read_4490"]["epsg"] == 4490
        # GDAL hands back CGCS2000 coordinates in the traditional GIS order: the same place
        assert out["read_4490"]["bounds"] == pytest.approx(out["read"]["bounds"], abs=1e-5)
        return
    ogrinfo = shutil.which("ogrinfo")
    if ogrinfo is None:
        pytest.skip("neither pyogrio's GDAL has the OAPIF driver nor is ogrinfo installed (apt-get install gdal-bin)")
    r = subprocess.run([ogrinfo, "-ro", "-so", url, "grids"], capture_output=True, text=True, env=_gdal_env(token),
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Feature Count: {len(expected)}" in r.stdout
