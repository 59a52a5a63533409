"""The classification API: table (json, csv, geojson), summary, one verdict explained, jurisdiction filtering."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest
from sqlalchemy import text

from geo.classify import classification as gc


@pytest.fixture
def admin(make_user) -> dict:
    return make_user("admin")["headers"]


@pytest.fixture
def planted(district) -> pd.DataFrame:
    """The generator's compounds by id (= ref) with their planted types and community codes."""
    c = district.compounds
    return pd.DataFrame({"grid": c["planted_type"].to_numpy(), "micro_grid": c["planted_micro_type"].to_numpy(),
                         "community": c["community_code"].to_numpy()}, index=c["ref"].astype(int).to_numpy())


def _items(client, headers, **params) -> dict:
    r = client.get("/v1/classification", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_reads_need_credentials(client):
    for path in ("/v1/classification", "/v1/classification/summary", "/v1/compounds/1/classification"):
        r = client.get(path)
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("level", ["grid", "micro_grid"])
def test_table_has_every_compound_with_its_planted_class(client, admin, planted, level):
    body = _items(client, admin, level=level)
    assert body["level"] == level and body["version"]["id"] >= 1
    assert body["thresholds"] == gc.get_rules().thresholds()
    got = {it["compound_id"]: it["class"] for it in body["items"]}
    assert got == planted[level].to_dict()
    assert body["count"] == len(planted) and sum(body["counts"].values()) == len(planted)
    item = next(it for it in body["items"] if it["class"] == "larger")
    assert item["n_contained"] >= 1 and item["n_units"] >= 2
    assert sum(o["contained"] for o in item["overlaps"]) == item["n_contained"]
    assert item["overlaps"][0]["code"] == item["main_unit"]["code"]  # largest overlap first
    same = next(it for it in body["items"] if it["class"] == "same")
    assert same["iou"] >= 0.7 and same["hausdorff_m"] <= 5.0 and same["class_zh"] == "同等"
    assert set(same) >= {"area_m2", "coverage", "fill", "iou", "hausdorff_m", "n_units", "main_unit", "fragile"}


def test_csv_and_geojson(client, admin, planted):
    r = client.get("/v1/classification", headers=admin, params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.startswith("\ufeff") and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert len(rows) == len(planted)
    assert {int(x["compound_id"]): x["class"] for x in rows} == planted["grid"].to_dict()
    assert all(x["class_zh"] in gc.CLASS_ZH.values() for x in rows)

    r = client.get("/v1/classification", headers=admin, params={"format": "geojson", "level": "micro_grid"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(planted)
    f = fc["features"][0]
    assert f["geometry"]["type"] == "MultiPolygon" and f["properties"]["class"] == planted.loc[f["id"], "micro_grid"]
    lon, lat = f["geometry"]["coordinates"][0][0][0]
    assert 112 < lon < 114 and 28 < lat < 31  # WGS-84 around Yueyang


def test_street_and_community_filters(client, admin, planted, district):
    community = planted["community"].value_counts().index[0]
    body = _items(client, admin, community=community)
    assert body["count"] == int((planted["community"] == community).sum()) > 0
    assert {it["community"]["code"] for it in body["items"]} == {community}
    street = community[:9]
    body = _items(client, admin, street=street)
    assert body["count"] == int(planted["community"].str.startswith(street).sum())
    assert {it["street"]["code"] for it in body["items"]} == {street}
    r = client.get("/v1/classification", headers=admin, params={"community": "12345"})
    assert r.status_code == 422


def test_jurisdiction_filters_rows_and_refuses_other_areas(client, make_user, planted, district):
    codes = sorted(planted["community"].unique())
    mine, other = codes[0], codes[-1]
    leader = make_user("leader", mine)["headers"]
    body = _items(client, leader)
    assert body["count"] > 0
    for it in body["items"]:
        assert it["community"]["code"] == mine or (it["main_unit"] or {}).get("code", "").startswith(mine)
    assert body["count"] < len(planted)
    r = client.get("/v1/classification", headers=leader, params={"community": other})
    assert r.status_code == 403 and r.json()["required_jurisdiction"] == other
    r = client.get("/v1/classification/summary", headers=leader, params={"community": other})
    assert r.status_code == 403
    summary = client.get("/v1/classification/summary", headers=leader).json()
    assert summary["counts"]["total"] == body["count"]
    assert all("minus" not in s for s in summary["sensitivity"])  # district-wide detail is for the whole district

    # A grid worker sees the compounds whose main grid is theirs, and no other compound's explanation.
    admin = make_user("admin")["headers"]
    items = _items(client, admin)["items"]
    first = next(it for it in items if it["main_unit"])
    grid = first["main_unit"]["code"]
    worker = make_user("worker", grid)["headers"]
    seen = _items(client, worker)["items"]
    assert {it["compound_id"] for it in seen} == {it["compound_id"] for it in items
                                                  if (it["main_unit"] or {}).get("code") == grid}
    assert client.get(f"/v1/compounds/{first['compound_id']}/classification", headers=worker).status_code == 200
    stranger = next(it for it in items if it["main_unit"] and it["main_unit"]["code"] != grid
                    and it["community"]["code"] != grid[:12])
    r = client.get(f"/v1/compounds/{stranger['compound_id']}/classification", headers=worker)
    assert r.status_code == 403 and r.json()["type"].endswith("out-of-jurisdiction")


def test_summary_is_seed_001_table(client, admin, planted):
    s = client.get("/v1/classification/summary", headers=admin).json()
    assert s["counts"]["total"] == len(planted)
    assert {c: s["counts"][c] for c in ("same", "larger", "smaller", "straddling")} == \
        planted["grid"].value_counts().to_dict()
    assert sum(st["counts"]["total"] for st in s["streets"]) == len(planted)
    for st in s["streets"]:
        for c in gc.CLASSES:
            assert sum(cm["counts"][c] for cm in st["communities"]) == st["counts"][c]
    assert [x["threshold"] for x in s["sensitivity"]] == list(gc.THRESHOLDS)
    assert all({"minus", "plus", "changed"} <= set(x) for x in s["sensitivity"])
    assert [c["zh"] for c in s["classes"]] == [gc.CLASS_ZH[c] for c in gc.CLASSES]


def test_one_verdict_explained(client, admin, planted):
    same_id = int(planted.index[planted["grid"] == "same"][0])
    r = client.get(f"/v1/compounds/{same_id}/classification", headers=admin)
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["compound_id"] == same_id and v["class"] == "same"
    assert "同等" in v["explanation"]["zh"] and v["main_unit"]["code"] in v["explanation"]["zh"]
    assert "same as its grid" in v["explanation"]["en"] and v["main_unit"]["code"] in v["explanation"]["en"]
    assert [s["threshold"] for s in v["sensitivity"]] == list(gc.THRESHOLDS)
    assert all(s["minus"]["class"] in gc.CLASSES and s["plus"]["class"] in gc.CLASSES for s in v["sensitivity"])

    larger_id = int(planted.index[planted["micro_grid"] == "larger"][0])
    v = client.get(f"/v1/compounds/{larger_id}/classification", headers=admin,
                   params={"level": "micro_grid"}).json()
    contained = [o["code"] for o in v["overlaps"] if o["contained"]]
    assert v["class"] == "larger" and contained and all(code in v["explanation"]["zh"] for code in contained)
    assert "大于微网格" in v["explanation"]["zh"] and "larger than its micro-grid" in v["explanation"]["en"]


def test_errors_are_problems(client, admin):
    assert client.get("/v1/compounds/999999/classification", headers=admin).status_code == 404
    assert client.get("/v1/classification", headers=admin, params={"level": "building"}).status_code == 422
    r = client.get("/v1/classification", headers=admin, params={"at": "yesterday"})
    assert r.status_code == 422 and "is not a date" in r.json()["detail"]
    r = client.get("/v1/classification", headers=admin, params={"at": "1999-01-01"})
    assert r.status_code == 404 and "no boundary version" in r.json()["detail"]


def test_results_are_stored_and_reused(client, admin, db_session):
    first = _items(client, admin)
    runs = db_session.execute(text("SELECT version_id, level, inputs_hash FROM classification_runs")).all()
    assert [(r.version_id, r.level) for r in runs] == [(first["version"]["id"], "grid")]
    again = _items(client, admin, at="2030-01-01")
    assert again["computed_at"] == first["computed_at"]  # same version, same inputs: not recomputed
