"""Codes as found and columns kept (issue 17): 16-digit dedicated-grid codes and 10-digit village codes stored when
the deployment's code scheme allows them (migration 0020), `bad-code` when it does not; the source file's unmapped
columns (所属社区, 网格全称, 面积 …) stored with each boundary and exported back.
"""

from __future__ import annotations

import json

import pandas as pd
import pyogrio
import pytest
import shapely
from sqlalchemy import text

from geo.io import ImportOptions, export_layer, import_layer
from geo.locate.index import LocateIndex
from geo.locate.reference import locate_sql
from tests import io_samples as S

VILLAGE = S.STREET + "9"  # a 10-digit village code (street + 1)
DEDICATED = S.WEST + "9010"  # a 16-digit dedicated grid (community + 4) starting no 15-digit grid's code


@pytest.fixture
def street(migrated_engine, tmp_path):
    """The sample street alone, imported."""
    S.load_all(migrated_engine, tmp_path, layers=("streets",))
    return migrated_engine


def _odd_codes_files(tmp_path):
    """A community and a village; in them a 15-digit grid, a 16-digit dedicated grid and a village grid."""
    c = S.communities()
    c["code"] = [S.WEST, VILLAGE]
    communities = S.write(c, tmp_path / "communities.geojson")
    g = S.grids().iloc[[0, 1, 3]].copy()
    g["code"] = [S.WEST + "001", DEDICATED, VILLAGE + "00001"]  # the village's grid: 10 + 5 = 15 digits
    g["community_code"] = [S.WEST, S.WEST, VILLAGE]
    g["kind"] = ["comprehensive", "dedicated", "comprehensive"]
    g["dedicated_type"] = [None, "school", None]
    return communities, S.write(g.reset_index(drop=True), tmp_path / "grids.geojson")


def test_odd_codes_are_refused_by_the_default_scheme(street, tmp_path):
    communities, grids = _odd_codes_files(tmp_path)
    report = import_layer(street, "communities", communities, ImportOptions(dry_run=True))
    (bad,) = [i for i in report.issues if i.kind == "bad-code"]
    assert bad.records == [2] and "10 digits" in bad.message
    assert report.imported == 1
    import_layer(street, "communities", communities, ImportOptions(code_scheme="devzone",
                                                                   valid_from=S.VALID_FROM))
    report = import_layer(street, "grids", grids, ImportOptions(dry_run=True, valid_from="2026-01-01"))
    bad = sorted(i.records[0] for i in report.issues if i.kind == "bad-code")
    assert bad == [2]  # the 16-digit code; the village's 15-digit grid fits the default lengths


def test_sixteen_and_ten_digit_codes_import_locate_and_export_round_trip(street, tmp_path):
    communities, grids = _odd_codes_files(tmp_path)
    options = ImportOptions(code_scheme="devzone", valid_from=S.VALID_FROM)
    report = import_layer(street, "communities", communities, options)
    assert report.imported == 2 and not [i for i in report.issues if i.action == "refused"]
    report = import_layer(street, "grids", grids, options)
    assert report.imported == 3, [i.as_dict() for i in report.issues]
    with street.connect() as conn:
        stored = dict(conn.execute(text("SELECT g.code, c.code FROM grids g JOIN communities c "
                                        "ON c.id = g.community_id")).all())
        assert stored == {S.WEST + "001": S.WEST, DEDICATED: S.WEST, VILLAGE + "00001": VILLAGE}
        index = LocateIndex.from_db(conn)
        # the middle of the dedicated grid: the index and the PostGIS reference both answer it
        inside = shapely.point_on_surface(S.grids().geometry.iloc[1])
        found = index.locate(inside.x, inside.y)
        assert found["grid"]["code"] == DEDICATED and found["community"]["code"] == S.WEST
        assert found["street"]["code"] == S.STREET
        ref = locate_sql(conn, inside.x, inside.y)
        assert ref["grid"] == found["grid"]["id"]
        village = shapely.point_on_surface(S.grids().geometry.iloc[3])
        assert index.locate(village.x, village.y)["community"]["code"] == VILLAGE
    out = export_layer(street, "grids", tmp_path / "out.geojson")
    exported = pyogrio.read_dataframe(out.path)
    assert sorted(exported["code"]) == sorted(stored)
    assert dict(zip(exported["code"], exported["community_code"], strict=True)) == stored
    # back in, into a new version: every code is read as it was written
    again = import_layer(street, "grids", out.path, ImportOptions(code_scheme="devzone", valid_from="2026-01-01"))
    assert again.imported == 3 and again.boundaries_ended == 3 and again.created == 0
    assert "bad-code" not in again.counts_by_kind()
    exported_communities = pyogrio.read_dataframe(export_layer(street, "communities", tmp_path / "c.gpkg").path)
    assert sorted(exported_communities["code"]) == sorted([S.WEST, VILLAGE])


def test_codes_the_columns_cannot_hold_are_reported_not_a_database_error(street, tmp_path):
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps({"name": "wide", "levels": {
        "streets": {"lengths": [9]}, "communities": {"lengths": [12], "parent_lengths": [9]},
        "grids": {"lengths": [15, 17], "parent_lengths": [12]}}}), encoding="utf-8")
    import_layer(street, "communities", S.write(S.communities(), tmp_path / "c.geojson"),
                 ImportOptions(valid_from=S.VALID_FROM))
    g = S.grids().iloc[:2].copy()
    g["code"] = [S.WEST + "001", S.WEST + "00002"]  # 17 digits: the scheme allows them, the column holds 16
    report = import_layer(street, "grids", S.write(g, tmp_path / "g.geojson"),
                          ImportOptions(code_scheme=str(wide), valid_from="2026-01-01"))
    (bad,) = [i for i in report.issues if i.kind == "bad-code"]
    assert bad.records == [2] and "the database holds" in bad.message
    assert report.imported == 1 and report.committed


def _grids_with_extra_columns() -> pd.DataFrame:
    g = S.grids()
    g = g.rename(columns={"community_code": "社区编码", "code": "网格编码", "name": "网格名称"})
    g["所属社区"] = ["梅园社区"] * 3 + ["崂山社区"] * 3
    g["网格全称"] = [f"陆家嘴街道{n}" for n in g["网格名称"]]
    g["面积"] = [12345.5, 23456.25, 0.5, None, 7.0, 8.0]
    return g


def test_extra_columns_are_kept_as_attributes_and_exported_back(street, tmp_path):
    import_layer(street, "communities", S.write(S.communities(), tmp_path / "c.geojson"),
                 ImportOptions(valid_from=S.VALID_FROM))
    path = S.write(_grids_with_extra_columns(), tmp_path / "grids.geojson")
    dry = import_layer(street, "grids", path, ImportOptions(dry_run=True, valid_from=S.VALID_FROM))
    assert dry.attributes_kept == ["所属社区", "网格全称", "面积"]  # said in the dry run
    assert any("kept as attributes" in n and "网格全称" in n for n in dry.notes)
    assert dry.to_json()["attributes_kept"] == dry.attributes_kept
    report = import_layer(street, "grids", path, ImportOptions(valid_from=S.VALID_FROM))
    assert report.imported == 6
    with street.connect() as conn:
        rows = dict(conn.execute(text("SELECT g.code, b.attributes FROM grid_boundaries b "
                                      "JOIN grids g ON g.id = b.grid_id")).all())
    assert rows[S.WEST + "001"] == {"所属社区": "梅园社区", "网格全称": "陆家嘴街道第1网格", "面积": 12345.5}
    assert "面积" not in rows[S.EAST + "001"]  # an empty cell is not stored
    for fmt, name in (("geojson", "g.geojson"), ("gpkg", "g.gpkg"), ("csv", "g.csv")):
        out = export_layer(street, "grids", tmp_path / name, fmt)
        frame = (pd.read_csv(out.path, dtype={"code": str, "community_code": str}) if fmt == "csv"
                 else pyogrio.read_dataframe(out.path))
        by_code = frame.set_index("code")
        assert by_code.loc[S.WEST + "002", "网格全称"] == "陆家嘴街道第2网格", fmt
        assert by_code.loc[S.EAST + "001", "所属社区"] == "崂山社区", fmt
        assert float(by_code.loc[S.WEST + "002", "面积"]) == 23456.25, fmt
        assert pd.isna(by_code.loc[S.EAST + "001", "面积"]), fmt
    # the export imported again keeps the same attributes (the round trip is lossless)
    again = import_layer(street, "grids", tmp_path / "g.geojson", ImportOptions(valid_from="2026-01-01"))
    assert set(again.attributes_kept) == {"所属社区", "网格全称", "面积"}
    with street.connect() as conn:
        latest = dict(conn.execute(text("SELECT g.code, b.attributes FROM grid_boundaries b JOIN grids g "
                                        "ON g.id = b.grid_id WHERE b.valid_to IS NULL")).all())
    assert latest == rows


def test_the_import_api_reports_the_kept_columns(client, admin_headers, tmp_path):
    path = S.write(_grids_with_extra_columns(), tmp_path / "grids.geojson")
    r = client.post("/v1/imports", headers=admin_headers,
                    data={"layer": "grids", "dry_run": "true", "derive_parents": "true"},
                    files={"file": ("grids.geojson", path.read_bytes(), "application/geo+json")})
    assert r.status_code == 200, r.text
    assert r.json()["attributes_kept"] == ["所属社区", "网格全称", "面积"]


def test_the_audit_jurisdiction_of_odd_codes():
    from geo.io.importer import _jurisdiction_of

    assert _jurisdiction_of([DEDICATED]) == DEDICATED
    assert _jurisdiction_of([DEDICATED, S.WEST + "9011"]) == S.WEST  # their 15-digit prefix is no grid
    assert _jurisdiction_of([S.WEST + "00101", S.WEST + "00102"]) == S.WEST + "001"  # micro-grids of one grid
    assert _jurisdiction_of([VILLAGE + "00001", S.WEST + "001"]) == S.STREET


def test_units_with_odd_codes_are_found_by_their_code_not_its_length(street, tmp_path):
    """Incident filters, heat areas and a micro-grid's grid find a 16-digit grid and a 10-digit village by code."""
    from geo.store.units import grid_code_of, level_of, unit_condition

    communities, grids = _odd_codes_files(tmp_path)
    options = ImportOptions(code_scheme="devzone", valid_from=S.VALID_FROM)
    import_layer(street, "communities", communities, options)
    import_layer(street, "grids", grids, options)
    with street.connect() as conn:
        ids = dict(conn.execute(text("SELECT code, id FROM grids")).all())
        village_id = conn.execute(text("SELECT id FROM communities WHERE code = :c"), {"c": VILLAGE}).scalar_one()
        assert level_of(conn, DEDICATED) == "grids" and level_of(conn, VILLAGE) == "communities"
        assert level_of(conn, "1234567") is None
        assert grid_code_of(conn, DEDICATED) == DEDICATED

        def inside(code, grid_id, community_id):
            cond, params = unit_condition(code, "i", "c")
            row = ("SELECT CAST(:g AS int) AS grid_id, CAST(:m AS int) AS community_id, "
                   "CAST(NULL AS int) AS street_id, CAST(NULL AS int) AS micro_grid_id")
            return conn.execute(text(f"SELECT count(*) FROM ({row}) i WHERE {cond}"),
                                {**params, "g": grid_id, "m": community_id}).scalar_one() == 1

        assert inside(DEDICATED, ids[DEDICATED], None)
        assert not inside(DEDICATED, ids[S.WEST + "001"], None)
        assert inside(VILLAGE, None, village_id) and not inside(VILLAGE, None, village_id + 1000)
        assert not inside("1234567", ids[DEDICATED], village_id)
