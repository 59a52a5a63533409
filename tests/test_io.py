"""Import and export of boundary data: formats, coordinate systems, validation report, transactions, API, CLI.

Every input file is made here, in tmp_path (see tests/io_samples.py): a GBK Shapefile without .cpg, a local
Gauss-Krüger grid, GCJ-02 and BD-09 coordinates, swapped axes, a bow-tie, a curve, a 10 MB+ file, …
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import struct
import zipfile

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from sqlalchemy import text

from geo.io import (
    CoordinateError,
    ImportFailed,
    ImportOptions,
    ImportRefused,
    MappingError,
    ReadError,
    export_layer,
    import_layer,
)
from geo.spatial.coords import wgs84_to_bd09, wgs84_to_gcj02
from geo.store import db
from geo.store.load import parse_at, read_level
from tests import io_samples as S
from tests.conftest import _create_database, _drop_database

LOCAL_GK = ("+proj=tmerc +lat_0=0 +lon_0=121.4667 +k=1 +x_0=350000 +y_0=-3400000 +ellps=GRS80 +units=m "
            "+no_defs +type=crs")
TABLES = ("boundary_versions", "streets", "street_boundaries", "communities", "community_boundaries", "grids",
          "grid_boundaries", "micro_grids", "micro_grid_boundaries", "compounds", "buildings", "units", "people",
          "staff_assignments", "incidents", "audit_log")


# ------------------------------------------------------------------------------------------------- helpers

@pytest.fixture
def second_engine():
    """Another fresh migrated database (round trips need two)."""
    url = _create_database("gridatlas_io2")
    db.migrate(url)
    engine = db.make_engine(url)
    yield engine
    engine.dispose()
    _drop_database(url)


@pytest.fixture
def parents(migrated_engine, tmp_path):
    """The sample street and its two communities, imported."""
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities"))
    return migrated_engine


def snapshot(engine) -> dict:
    """Every table's row count and a digest of all its rows (geometries included)."""
    out = {}
    with engine.connect() as conn:
        for t in TABLES:
            out[t] = tuple(conn.execute(text(
                f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x.id), '')) FROM {t} x")).one())
    return out


def grids_frame(**overrides) -> gpd.GeoDataFrame:
    g = S.grids()
    for k, v in overrides.items():
        g[k] = v
    return g


def kinds(report) -> dict:
    return report.counts_by_kind()


def stored(engine, level="grids", at=None) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return read_level(conn, level, at)


def utm_area(geom) -> float:
    return float(gpd.GeoSeries([geom], crs=4326).to_crs(32651).area.iloc[0])


def read_export(path, fmt):
    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pyogrio.read_dataframe(path if fmt != "shapefile" else f"/vsizip/{path}")


def assert_same_export(a, b, fmt):
    """Identical attributes; geometries equal within 1e-9 degrees."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    attrs = [c for c in a.columns if c not in ("geometry", "wkt", "lon", "lat")]
    pd.testing.assert_frame_equal(pd.DataFrame(a[attrs]).reset_index(drop=True),
                                  pd.DataFrame(b[attrs]).reset_index(drop=True), check_dtype=False)
    if fmt == "csv" and "wkt" in a.columns:
        ga, gb = shapely.from_wkt(a["wkt"].to_numpy()), shapely.from_wkt(b["wkt"].to_numpy())
    elif fmt == "csv" and "lon" in a.columns:
        ga = shapely.points(a["lon"].astype(float), a["lat"].astype(float))
        gb = shapely.points(b["lon"].astype(float), b["lat"].astype(float))
    elif fmt != "csv" and "geometry" in a.columns:
        ga, gb = a.geometry.to_numpy(), b.geometry.to_numpy()
    else:
        return
    present = ~shapely.is_missing(ga)
    assert (present == ~shapely.is_missing(gb)).all()
    assert shapely.equals_exact(ga[present], gb[present], tolerance=1e-9).all()


def same_shapes(a, b, tolerance: float) -> bool:
    """Whether two arrays of (multi)polygons have the same shapes, vertex by vertex, within `tolerance` degrees."""
    from geo.spatial.geometry import as_multipolygons

    na = shapely.normalize(as_multipolygons(np.asarray(a, dtype=object)))
    nb = shapely.normalize(as_multipolygons(np.asarray(b, dtype=object)))
    return bool(shapely.equals_exact(na, nb, tolerance).all())


def max_shift_deg(a, b) -> float:
    return float(np.abs(shapely.get_coordinates(np.asarray(a)) - shapely.get_coordinates(np.asarray(b))).max())


# ------------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "shapefile", "csv"])
def test_round_trip_every_layer(migrated_engine, second_engine, tmp_path, fmt):
    S.load_all(migrated_engine, tmp_path)
    suffix = {"geojson": ".geojson", "gpkg": ".gpkg", "shapefile": ".zip", "csv": ".csv"}[fmt]
    for layer in S.LAYER_ORDER:
        first = export_layer(migrated_engine, layer, tmp_path / f"a_{layer}{suffix}", fmt)
        assert first.count == len(S.MAKERS[layer]()), layer
        report = import_layer(second_engine, layer, first.path, ImportOptions(valid_from=S.VALID_FROM))
        assert report.imported == first.count and report.refused == 0, (layer, report.to_json()["problems"])
        second = export_layer(second_engine, layer, tmp_path / f"b_{layer}{suffix}", fmt)
        assert_same_export(read_export(first.path, fmt), read_export(second.path, fmt), fmt)
    # The exported geometries are the ones given (not only self-consistent).
    grids = read_export(tmp_path / f"b_grids{suffix}", fmt)
    geoms = shapely.from_wkt(grids["wkt"]) if fmt == "csv" else grids.geometry.values
    assert same_shapes(geoms, S.grids().geometry.values, 1e-9)
    incidents = stored_incidents(second_engine)
    assert incidents["grid_code"].notna().all()


def stored_incidents(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(text("SELECT i.class_code, i.source, i.state, g.code AS grid_code FROM incidents i "
                                "LEFT JOIN grids g ON g.id = i.grid_id ORDER BY i.reported_at"), conn)


def test_gbk_shapefile_export_round_trips_chinese_names(parents, second_engine, tmp_path):
    import_layer(parents, "grids", S.write(S.grids(), tmp_path / "g.geojson"))
    out = export_layer(parents, "grids", tmp_path / "grids_gbk.zip", "shapefile", encoding="gbk")
    with zipfile.ZipFile(out.path) as z:
        assert z.read("grids.cpg").decode().upper().startswith(("GBK", "936", "CP936"))
        assert "第1网格".encode("gbk") in z.read("grids.dbf")
    for layer in ("streets", "communities"):
        import_layer(second_engine, layer, export_layer(parents, layer, tmp_path / f"{layer}.gpkg").path)
    report = import_layer(second_engine, "grids", out.path)
    assert report.imported == 6
    assert sorted(stored(second_engine)["name"]) == sorted(S.grids()["name"])


# ------------------------------------------------------------------------------ formats and field mapping

def test_gbk_shapefile_without_cpg_with_chinese_field_names(parents, tmp_path):
    g = S.grids()
    frame = gpd.GeoDataFrame({
        "网格编码": g["code"], "网格名称": g["name"], "社区编码": g["community_code"],
        "网格类型": ["综合网格"] * 5 + ["专属网格"], "户数": [350, 420, 310, 480, 200, 0],
    }, geometry=g.geometry, crs=4326)
    path = S.zipped_shapefile(frame, tmp_path / "网格.zip", encoding="GBK", cpg=False)
    with zipfile.ZipFile(path) as z:
        assert not [n for n in z.namelist() if n.endswith(".cpg")]
        dbf = z.read(next(n for n in z.namelist() if n.endswith(".dbf")))
    assert "网格名称".encode("gbk") in dbf and "第1网格".encode("gbk") in dbf

    report = import_layer(parents, "grids", path)
    assert report.encoding == "GB18030" and any("no .cpg" in n for n in report.notes)
    assert report.field_mapping == {"code": "网格编码", "name": "网格名称", "community_code": "社区编码",
                                    "kind": "网格类型", "households": "户数"}
    assert report.imported == 6 and report.refused == 0
    got = stored(parents).set_index("code")
    assert got.loc[g["code"].iloc[0], "name"] == "第1网格"
    assert got["kind"].tolist() == ["comprehensive"] * 5 + ["dedicated"]
    band = [i for i in report.issues if i.kind == "households-out-of-band"]
    assert [i.details["households"] for i in band] == [200]  # the dedicated grid is not held to the band


def test_field_mapping_option_and_clear_errors(parents, tmp_path):
    g = S.grids()
    frame = gpd.GeoDataFrame({"F1": g["code"], "F2": g["name"]}, geometry=g.geometry, crs=4326)
    path = S.write(frame, tmp_path / "odd.geojson")
    with pytest.raises(MappingError, match=r"code, name.*--map"):
        import_layer(parents, "grids", path)
    with pytest.raises(MappingError, match="no column 'WGBM'"):
        import_layer(parents, "grids", path, ImportOptions(mapping="code=WGBM,name=F2"))
    report = import_layer(parents, "grids", path, ImportOptions(mapping="code=F1，name=F2"))
    assert report.imported == 6 and report.field_mapping == {"code": "F1", "name": "F2"}
    assert set(stored(parents)["community_id"]) == {1, 2}  # parents from the code prefix


def test_geopackage_layer_choice(parents, tmp_path):
    path = tmp_path / "survey.gpkg"
    pyogrio.write_dataframe(S.grids(), path, layer="网格")
    pyogrio.write_dataframe(S.micro_grids(), path, layer="微网格", append=False)
    with pytest.raises(ReadError, match="several layers.*网格.*微网格.*--layer"):
        import_layer(parents, "grids", path)
    with pytest.raises(ReadError, match="no layer 'grids'"):
        import_layer(parents, "grids", path, ImportOptions(source_layer="grids"))
    assert import_layer(parents, "grids", path, ImportOptions(source_layer="网格")).imported == 6
    assert import_layer(parents, "micro_grids", path, ImportOptions(source_layer="微网格")).imported == 12


def test_csv_incidents_gbk_with_longitude_latitude_columns(parents, tmp_path):
    import_layer(parents, "grids", S.write(S.grids(), tmp_path / "g.geojson"), ImportOptions(valid_from="2025-01-01"))
    rows = pd.DataFrame({
        "上报时间": ["2025-05-01 09:30", "2025/05/02 14:00", "2025-05-03T08:15:00+08:00"],
        "事件类别": ["A01", "B01", "C02"], "信息来源": ["网格员巡查", "12345热线", "群众上报"],
        "状态": ["已立案", "信息收集", "已结案"], "经度": [121.503, 121.512, 121.518],
        "纬度": [31.243, 31.236, 31.231], "描述": ["占道经营", "小广告", "道路破损"],
    })
    path = tmp_path / "事件.csv"
    rows.to_csv(path, index=False, encoding="gbk")
    report = import_layer(parents, "incidents", path)
    assert report.encoding == "GB18030" and report.imported == 3, report.to_json()["problems"]
    got = stored_incidents(parents)
    assert got["source"].tolist() == [S.source_code(n) for n in ("网格员巡查", "12345热线", "群众上报")]
    assert got["state"].tolist() == ["registered", "collected", "closed"]
    assert got["grid_code"].tolist() == ["310115001001001", "310115001002002", "310115001002003"]
    with parents.connect() as conn:
        first = conn.execute(text("SELECT reported_at FROM incidents ORDER BY reported_at LIMIT 1")).scalar()
    assert first == dt.datetime(2025, 5, 1, 1, 30, tzinfo=dt.UTC)  # 09:30 Asia/Shanghai


def test_xlsx_staff_and_assignments_with_chinese_headers(tmp_path, migrated_engine):
    S.load_all(migrated_engine, tmp_path, layers=S.LAYER_ORDER[:7])
    path = tmp_path / "人员.xlsx"
    with pd.ExcelWriter(path) as xw:
        pd.DataFrame({"姓名": ["赵敏", "钱进"], "手机号": ["13900000001", "13900000002"], "是否党员": ["是", "否"],
                      "居住楼栋": ["C1-B1", None]}).to_excel(xw, sheet_name="人员", index=False)
        pd.DataFrame({"姓名": ["赵敏", "钱进", "钱进"], "手机号": ["13900000001", "13900000002", "13900000002"],
                      "角色": ["网格长", "楼栋长", "单元长"],
                      "负责对象": ["310115001001002", "C2-B1", "C2-B1"], "单元号": [None, None, 1],
                      "起始日期": ["2025-01-01", "2025-02-01", "2025-02-01"]}).to_excel(xw, sheet_name="任职",
                                                                                       index=False)
    with pytest.raises(ReadError, match="several sheets"):
        import_layer(migrated_engine, "staff", path)
    assert import_layer(migrated_engine, "staff", path, ImportOptions(source_layer="人员")).imported == 2
    report = import_layer(migrated_engine, "staff_assignments", path, ImportOptions(source_layer="任职"))
    assert report.imported == 3, report.to_json()["problems"]
    with migrated_engine.connect() as conn:
        rows = conn.execute(text("SELECT p.name, a.role, a.target_type FROM staff_assignments a "
                                 "JOIN people p ON p.id = a.person_id ORDER BY a.id")).all()
        party = conn.execute(text("SELECT party_member FROM people WHERE name = '赵敏'")).scalar()
    assert [tuple(r) for r in rows] == [("赵敏", "grid_chief", "grid"), ("钱进", "building_head", "building"),
                                        ("钱进", "unit_head", "unit")]
    assert party is True


def test_old_geojson_crs_member(parents, tmp_path):
    g = S.grids()
    coords = json.loads(g.to_json())["features"]
    # The pre-RFC 7946 form naming CGCS2000: taken as storage-equivalent, coordinates kept exactly.
    fc = S.feature_collection([(f["properties"], f["geometry"]) for f in coords], "urn:ogc:def:crs:EPSG::4490")
    report = import_layer(parents, "grids", S.write_json(fc, tmp_path / "old.geojson"))
    assert "EPSG:4490" in report.crs and "crs member" in report.crs
    assert max_shift_deg(stored(parents).geometry.values, g.geometry.values) < 1e-12
    # A projected CGCS2000 Gauss-Krüger zone (CM 120°E) in the crs member: reprojected.
    gk = g.to_crs(4549)
    fc = S.feature_collection([(p, json.loads(shapely.to_geojson(geom))) for p, geom in
                               zip(g.drop(columns="geometry").to_dict("records"), gk.geometry, strict=True)],
                              "urn:ogc:def:crs:EPSG::4549")
    fc["features"] = fc["features"][:1]
    fc["features"][0]["properties"]["code"] = "310115001001009"
    report = import_layer(parents, "grids", S.write_json(fc, tmp_path / "old_gk.geojson"))
    assert "EPSG:4549" in report.crs and report.imported == 1
    back = stored(parents).set_index("code").loc["310115001001009", "geom"]
    assert same_shapes([back], [g.geometry.iloc[0]], 1e-8)


# --------------------------------------------------------------------------------- coordinate systems

def test_local_gauss_kruger_proj_string(parents, tmp_path):
    g = S.grids()
    local = g.to_crs(LOCAL_GK)
    x, y = local.geometry.iloc[0].bounds[:2]
    assert 340_000 < x < 360_000 and 0 < y < 100_000  # metres from the city's own false origin
    no_prj = S.zipped_shapefile(local.set_crs(None, allow_override=True), tmp_path / "local.zip", prj=False)
    with pytest.raises(CoordinateError, match="declares no coordinate system.*--crs"):
        import_layer(parents, "grids", no_prj)
    report = import_layer(parents, "grids", no_prj, ImportOptions(crs=LOCAL_GK.replace(" +type=crs", "")))
    assert report.imported == 6 and "from --crs" in report.crs
    got = stored(parents).set_index("code").loc[g["code"]]
    assert same_shapes(got.geometry.values, g.geometry.values, 1e-8)


def test_local_gauss_kruger_prj_read_from_the_file(parents, tmp_path):
    g = S.grids().to_crs(LOCAL_GK)
    report = import_layer(parents, "grids", S.zipped_shapefile(g, tmp_path / "local_prj.zip"))
    assert report.imported == 6 and "(prj)" in report.crs
    got = stored(parents).set_index("code").loc[S.grids()["code"]]
    assert same_shapes(got.geometry.values, S.grids().geometry.values, 1e-8)


@pytest.mark.parametrize("system, forward", [("gcj02", wgs84_to_gcj02), ("bd09", wgs84_to_bd09)])
def test_web_map_coordinates(parents, tmp_path, system, forward):
    g = S.grids()
    shifted = g.copy()
    shifted.geometry = shapely.transform(g.geometry.values, lambda xy: np.column_stack(forward(xy[:, 0], xy[:, 1])))
    path = S.write(shifted, tmp_path / f"{system}.geojson")
    # Taken as WGS-84, the boundaries land hundreds of metres off …
    import_layer(parents, "grids", path, ImportOptions(dry_run=True))
    assert max_shift_deg(shifted.geometry.values, g.geometry.values) * 111_000 > 100
    # … converted with the published formula they come back to better than 0.5 m (here ~1e-9°).
    report = import_layer(parents, "grids", path, ImportOptions(crs=system))
    assert report.imported == 6 and system.upper()[:3] in report.crs.upper().replace("-", "")
    got = stored(parents).set_index("code").loc[g["code"]]
    assert max_shift_deg(got.geometry.values, shapely.orient_polygons(g.geometry.values)) < 1e-8


def test_swapped_axes_name_the_feature(parents, tmp_path):
    g = S.grids()
    swapped = g.copy()
    swapped.geometry = shapely.transform(g.geometry.values, lambda xy: xy[:, ::-1])
    path = S.write(swapped, tmp_path / "latlon.geojson")
    with pytest.raises(CoordinateError, match=r"look swapped.*310115001001001 · 第1网格.*--swap-axes") as err:
        import_layer(parents, "grids", path)
    assert err.value.features[0]["record"] == 1
    assert not stored(parents).shape[0]
    report = import_layer(parents, "grids", path, ImportOptions(axis_order="swap"))
    assert report.imported == 6
    assert max_shift_deg(stored(parents).set_index("code").loc[g["code"]].geometry.values,
                         shapely.orient_polygons(g.geometry.values)) < 1e-12


def test_outside_china_is_an_error_unless_allowed(parents, tmp_path):
    g = S.grids().iloc[:2].copy()
    g.loc[1, "geometry"] = shapely.box(2.35, 48.85, 2.36, 48.86)  # Paris
    path = S.write(g, tmp_path / "far.geojson")
    with pytest.raises(CoordinateError, match=r"outside China.*record 2 · 310115001001002.*--allow-outside-china"):
        import_layer(parents, "grids", path)
    report = import_layer(parents, "grids", path, ImportOptions(allow_outside_china=True))
    assert report.imported == 2
    assert any(i.kind == "outside-parent" and i.records == [2] for i in report.issues)


# ------------------------------------------------------------------------------------ geometry problems

def test_bow_tie_is_repaired_and_reported_with_its_location(parents, tmp_path):
    g = S.grids().iloc[:3].copy()
    x0, y0, x1, y1 = g.geometry.iloc[1].bounds
    g.loc[1, "geometry"] = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
    path = S.write(g, tmp_path / "bowtie.geojson")
    with pytest.raises(ImportRefused) as refused:
        import_layer(parents, "grids", path, ImportOptions(strict=True))
    assert "invalid-geometry" in refused.value.report.counts_by_kind()
    assert stored(parents).empty
    report = import_layer(parents, "grids", path)
    (issue,) = [i for i in report.issues if i.kind == "invalid-geometry"]
    assert issue.action == "repaired" and issue.records == [2]
    assert issue.details["reason"].startswith("Self-intersection")
    assert issue.geom.distance(shapely.Point((x0 + x1) / 2, (y0 + y1) / 2)) < 1e-9
    assert report.repaired == 1 and report.imported == 3
    with parents.connect() as conn:
        assert conn.execute(text("SELECT bool_and(ST_IsValid(geom)) FROM grid_boundaries")).scalar()
    layer = report.problems_geojson()
    point = next(f for f in layer["features"] if f["properties"]["kind"] == "invalid-geometry")
    assert point["geometry"]["type"] == "Point"


def test_unclosed_ring_curve_empty_and_null_geometries(parents, tmp_path):
    g = json.loads(S.grids().to_json())["features"]
    ring = g[0]["geometry"]["coordinates"][0][:-1]  # not closed
    fc = S.feature_collection([
        (g[0]["properties"], {"type": "Polygon", "coordinates": [ring]}),
        (g[1]["properties"], None),
        (g[2]["properties"], {"type": "Polygon", "coordinates": []}),
        (g[3]["properties"], {"type": "LineString", "coordinates": g[3]["geometry"]["coordinates"][0]}),
        (g[4]["properties"], {"type": "Point", "coordinates": [121.51, 31.24]}),
    ])
    report = import_layer(parents, "grids", S.write_json(fc, tmp_path / "broken.geojson"))
    by_record = {tuple(i.records): (i.kind, i.action) for i in report.issues if i.kind != "coverage-gap"}
    assert by_record[(1,)] == ("ring-fixed", "repaired")
    assert by_record[(2,)] == ("empty-geometry", "refused")
    assert by_record[(3,)] == ("empty-geometry", "refused")
    assert by_record[(4,)] == ("ring-to-polygon", "repaired")
    assert by_record[(5,)] == ("wrong-geometry-type", "refused")
    assert (report.imported, report.refused, report.repaired) == (2, 3, 2)

    # A GeoPackage holding a CurvePolygon (an arc-bounded grid): linearised by GDAL, listed as such.
    path = tmp_path / "curve.gpkg"
    pyogrio.write_dataframe(S.grids().iloc[4:6], path, layer="grids", geometry_type="Unknown",
                            layer_options={"SPATIAL_INDEX": "NO"})
    arc = [(121.511, 31.2335), (121.519, 31.2335), (121.511, 31.2335)]  # a full circle as one arc
    wkb = struct.pack("<BII", 1, 10, 1) + struct.pack("<BII", 1, 8, 3) + b"".join(struct.pack("<dd", *p)
                                                                                  for p in arc)
    with sqlite3.connect(path) as con:
        con.execute("UPDATE grids SET geom = ? WHERE fid = 1", (b"GP\x00\x01" + struct.pack("<i", 4326) + wkb,))
    report = import_layer(parents, "grids", path)
    curve = [i for i in report.issues if i.kind == "curve-linearised"]
    assert [i.records for i in curve] == [[1]] and report.imported == 2


def test_duplicate_ids_are_refused_split_pieces_merged(parents, tmp_path):
    g = S.grids()
    first = g.iloc[0]
    x0, y0, x1, y1 = first.geometry.bounds
    xm = (x0 + x1) / 2
    pieces = gpd.GeoDataFrame([first.to_dict(), first.to_dict()], crs=4326)
    pieces["geometry"] = [shapely.box(x0, y0, xm, y1), shapely.box(xm, y0, x1, y1)]
    dup = gpd.GeoDataFrame([g.iloc[1].to_dict(), {**g.iloc[1].to_dict(), "name": "另一个网格"}], crs=4326)
    frame = pd.concat([pieces, dup, g.iloc[2:3]], ignore_index=True)
    report = import_layer(parents, "grids", S.write(gpd.GeoDataFrame(frame, crs=4326), tmp_path / "dup.geojson"))
    merged = [i for i in report.issues if i.kind == "split-pieces-merged"]
    dups = [i for i in report.issues if i.kind == "duplicate-id"]
    assert [i.records for i in merged] == [[1, 2]] and [i.records for i in dups] == [[3, 4]]
    assert (report.features_read, report.features, report.merged, report.imported, report.refused) == (5, 4, 1, 2, 2)
    got = stored(parents).set_index("code")
    assert list(got.index) == [g["code"].iloc[0], g["code"].iloc[2]]
    whole = got.loc[g["code"].iloc[0], "geom"]
    assert len(whole.geoms) == 1 and abs(utm_area(whole) - utm_area(first.geometry)) < 0.01


def test_feature_level_ids_of_tile_pieces_are_kept(migrated_engine, tmp_path):
    """RFC 7946 puts a Feature's id beside its properties; GDAL would renumber repeated ones."""
    x0, y0, x1, y1 = S.compounds().geometry.iloc[0].bounds
    xm = (x0 + x1) / 2
    halves = [shapely.box(x0, y0, xm, y1), shapely.box(xm, y0, x1, y1)]
    fc = S.feature_collection([({"name": "崂山三村"}, json.loads(shapely.to_geojson(h))) for h in halves])
    for f in fc["features"]:
        f["id"] = 407443052
    report = import_layer(migrated_engine, "compounds", S.write_json(fc, tmp_path / "tiles.geojson"))
    assert report.field_mapping["ref"] == "id" and report.merged == 1 and report.imported == 1
    with migrated_engine.connect() as conn:
        row = conn.execute(text("SELECT source_ref, ST_NumGeometries(geom) FROM compounds")).one()
    assert tuple(row) == ("407443052", 1)


def test_households_counted_from_units_in_the_database(migrated_engine, tmp_path):
    S.load_all(migrated_engine, tmp_path)  # four compounds of three buildings, 108 households each
    report = import_layer(migrated_engine, "grids", S.write(S.grids(), tmp_path / "again.geojson"))
    assert "households per grid from: units in the database" in report.notes
    band = [i for i in report.issues if i.kind == "households-out-of-band"]
    # Grids 1–4 hold 324 households each (in the band); grid 5 none; grid 6 is dedicated (no band).
    assert [(i.feature.split(" · ")[1], i.details["households"]) for i in band] == [("310115001002002", 0)]
    assert report.boundaries_ended == 6 and report.updated == 0


def test_outside_parent_overlaps_gaps_and_households(parents, tmp_path):
    g = S.grids().iloc[:3].copy()  # the west community's three grids, north to south
    x0, y0, x1, y1 = g.geometry.iloc[0].bounds
    poke = 0.0005
    g.loc[0, "geometry"] = shapely.box(x0 - poke, y0, x1, y1)  # reaches west of its community
    b = g.geometry.iloc[1].bounds
    overlap_h = (b[3] - b[1]) * 0.25
    g.loc[1, "geometry"] = shapely.box(b[0], b[1], b[2], b[3] + overlap_h)  # overlaps the first grid
    c = g.geometry.iloc[2].bounds
    g.loc[2, "geometry"] = shapely.box(c[0], c[1] + (c[3] - c[1]) / 2, c[2], c[3])  # leaves a gap in the south
    g["households"] = [400, 650, None]
    report = import_layer(parents, "grids", S.write(g, tmp_path / "messy.geojson"))
    assert report.imported == 3 and report.refused == 0
    by = {i.kind: i for i in report.issues}
    outside = shapely.box(x0 - poke, y0, x0, y1)
    assert by["outside-parent"].records == [1]
    assert by["outside-parent"].area_m2 == pytest.approx(utm_area(outside), rel=0.01)
    overlap = shapely.box(b[0], b[3], b[2], b[3] + overlap_h)
    assert by["overlap"].area_m2 == pytest.approx(utm_area(overlap), rel=0.01)
    assert set(by["overlap"].details["codes"]) == set(g["code"].iloc[:2])
    gap = shapely.box(c[0], c[1], c[2], c[1] + (c[3] - c[1]) / 2)
    gaps = [i for i in report.issues if i.kind == "coverage-gap"]
    assert [i.feature for i in gaps] == [S.WEST]
    assert gaps[0].area_m2 == pytest.approx(utm_area(gap), rel=0.01)
    assert [i.details["households"] for i in report.issues if i.kind == "households-out-of-band"] == [650]
    geo = report.problems_geojson()
    kinds_with_polygons = {f["properties"]["kind"] for f in geo["features"]
                           if f["geometry"] and f["geometry"]["type"] in ("Polygon", "MultiPolygon")}
    assert {"overlap", "coverage-gap", "outside-parent"} <= kinds_with_polygons


def test_missing_parent_and_bad_codes_are_refused(parents, tmp_path):
    g = S.grids().iloc[:3].copy()
    g.loc[0, "code"] = "310115001009001"  # community 310115001009 does not exist
    g.loc[0, "community_code"] = "310115001009"
    g.loc[1, "code"] = "31011500100102"  # 14 digits
    g.loc[2, "community_code"] = S.EAST  # code says west
    path = S.write(g, tmp_path / "codes.geojson")
    report = import_layer(parents, "grids", path, ImportOptions(derive_parents=False))
    assert kinds(report) == {"bad-code": 2, "missing-parent": 1}
    assert report.imported == 0 and report.refused == 3
    assert "import communities first" in next(i.message for i in report.issues if i.kind == "missing-parent")
    # by default the missing community is derived from the code (hierarchy as found) and said so
    derived = import_layer(parents, "grids", path, ImportOptions(dry_run=True))
    assert kinds(derived) == {"bad-code": 2} and derived.imported == 1
    assert [(d["level"], d["code"]) for d in derived.parents_derived] == [("communities", "310115001009")]


# --------------------------------------------------------------------------- transactions and versions

def test_strict_and_dry_run_write_nothing(parents, tmp_path):
    g = S.grids()
    g.loc[0, "geometry"] = shapely.box(*np.array(g.geometry.iloc[0].bounds) + [0, 0, 0.001, 0])  # overlaps
    path = S.write(g, tmp_path / "g.geojson")
    before = snapshot(parents)
    dry = import_layer(parents, "grids", path, ImportOptions(dry_run=True))
    assert snapshot(parents) == before
    assert dry.imported == 6 and not dry.committed and "overlap" in kinds(dry)
    with pytest.raises(ImportRefused, match="strict import refused.*overlap"):
        import_layer(parents, "grids", path, ImportOptions(strict=True))
    assert snapshot(parents) == before
    real = import_layer(parents, "grids", path)
    assert real.committed and real.summary() == dry.summary() and kinds(real) == kinds(dry)
    assert snapshot(parents) != before


def test_failure_half_way_leaves_the_database_exactly_as_before(parents, tmp_path, monkeypatch):
    import geo.io.importer as importer

    import_layer(parents, "grids", S.write(S.grids(), tmp_path / "v1.geojson"),
                 ImportOptions(valid_from="2025-01-01"))
    redrawn = S.grids()
    redrawn.geometry = redrawn.geometry.scale(0.9, 0.9)
    path = S.write(redrawn, tmp_path / "v2.geojson")
    before = snapshot(parents)

    # The process dies after every row was written (version, ended boundaries, new boundaries) …
    def power_cut(*args, **kwargs):
        with parents.connect():
            pass
        raise RuntimeError("power cut")

    monkeypatch.setattr(importer, "_audit", power_cut)
    with pytest.raises(ImportFailed, match="rolled back, nothing was written.*power cut"):
        import_layer(parents, "grids", path)
    assert snapshot(parents) == before
    monkeypatch.undo()

    # … or in the middle of streaming 4,000 buildings to the database.
    rng = np.random.default_rng(3)
    xy = rng.uniform([S.X0 + 0.001, S.Y0 + 0.001], [S.X1 - 0.001, S.Y1 - 0.001], size=(4000, 2))
    many = gpd.GeoDataFrame({"ref": [f"R{i}" for i in range(4000)]},
                            geometry=shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + 5e-5, xy[:, 1] + 5e-5), crs=4326)
    real_copy = importer.copy_rows

    def dies_half_way(conn, table, columns, rows):
        def first_half():
            for i, row in enumerate(rows):
                if i == 2000:
                    raise ConnectionError("connection lost")
                yield row
        real_copy(conn, table, columns, first_half())

    monkeypatch.setattr(importer, "copy_rows", dies_half_way)
    with pytest.raises(ImportFailed, match="connection lost"):
        import_layer(parents, "buildings", S.write(many, tmp_path / "many.gpkg"))
    assert snapshot(parents) == before


def test_new_version_ends_old_boundaries_and_never_overwrites(migrated_engine, tmp_path):
    for layer in ("streets", "communities"):
        import_layer(migrated_engine, layer, S.write(S.MAKERS[layer](), tmp_path / f"{layer}.geojson"),
                     ImportOptions(valid_from="2025-01-01"))
    v1 = import_layer(migrated_engine, "grids", S.write(S.grids(), tmp_path / "g1.geojson"),
                      ImportOptions(valid_from="2025-01-01"))
    assert not [i for i in v1.issues if i.kind == "parent-without-boundary"]
    redrawn = S.grids().iloc[:1].copy()
    redrawn["name"] = "第1网格(调整)"
    redrawn.geometry = redrawn.geometry.scale(0.5, 1.0)
    path = S.write(redrawn, tmp_path / "g2.geojson")
    v2 = import_layer(migrated_engine, "grids", path, ImportOptions(valid_from="2025-06-01", label="2025年调整"))
    assert v2.version_id != v1.version_id and v2.boundaries_ended == 1 and v2.updated == 1 and v2.created == 0
    code = redrawn["code"].iloc[0]
    old = stored(migrated_engine, at=parse_at("2025-03-01")).set_index("code").loc[code, "geom"]
    new = stored(migrated_engine, at=parse_at("2025-07-01")).set_index("code").loc[code, "geom"]
    assert utm_area(new) == pytest.approx(utm_area(old) / 2, rel=1e-3)
    with migrated_engine.connect() as conn:
        rows = conn.execute(text("SELECT valid_from, valid_to FROM grid_boundaries b JOIN grids g ON g.id = b.grid_id "
                                 "WHERE g.code = :c ORDER BY valid_from"), {"c": code}).all()
        label = conn.execute(text("SELECT label FROM boundary_versions WHERE id = :v"), {"v": v2.version_id}).scalar()
    assert len(rows) == 2 and rows[0].valid_to == rows[1].valid_from == parse_at(dt.datetime(2025, 6, 1))
    assert label == "2025年调整"
    # A dated export gives the version in force then.
    out = export_layer(migrated_engine, "grids", tmp_path / "then.gpkg", at=parse_at("2025-03-01"))
    then = pyogrio.read_dataframe(out.path).set_index("code")
    assert shapely.equals_exact(then.loc[code, "geometry"], old, 1e-12)
    assert then.loc[code, "name"] == "第1网格(调整)"  # names live on the unit, not on its boundary versions
    # Importing into the version a boundary already starts in is refused for that unit; a new unit joins it.
    again = S.grids().iloc[:1].copy()
    again = pd.concat([again, S.grids().iloc[:1].assign(code="310115001001004", name="新网格")], ignore_index=True)
    again = gpd.GeoDataFrame(again, crs=4326)
    into = import_layer(migrated_engine, "grids", S.write(again, tmp_path / "g3.geojson"),
                        ImportOptions(version_id=v2.version_id))
    assert [i.kind for i in into.issues if i.action == "refused"] == ["boundary-exists-in-version"]
    assert into.imported == 1 and into.version_id == v2.version_id


# ---------------------------------------------------------------------------------------- big files

def test_ten_megabyte_file_with_progress(parents, tmp_path):
    rng = np.random.default_rng(11)
    n = 5000
    xy = rng.uniform([S.X0 + 0.001, S.Y0 + 0.001], [S.X1 - 0.001, S.Y1 - 0.001], size=(n, 2))
    footprints = shapely.buffer(shapely.points(xy), 4e-5, quad_segs=16)  # 65-vertex footprints
    frame = gpd.GeoDataFrame({"ref": [f"B{i:05d}" for i in range(n)], "层数": rng.integers(2, 30, n),
                              "楼栋名称": [f"{i}号楼" for i in range(n)]}, geometry=footprints, crs=4326)
    path = S.write(frame, tmp_path / "buildings.geojson")
    assert path.stat().st_size > 10 * 1024 * 1024
    seen: list[tuple[str, int, int]] = []
    report = import_layer(parents, "buildings", path, ImportOptions(progress=lambda *a: seen.append(a)))
    assert report.imported == n and report.refused == 0
    stages = [s for s, _, _ in seen]
    assert {"read", "validate", "stage", "check", "write"} <= set(stages)
    assert len([s for s in seen if s[0] == "stage"]) >= n // 5000
    with parents.connect() as conn:
        per_community = dict(conn.execute(text(
            "SELECT c.code, count(*) FROM buildings b JOIN communities c ON c.id = b.community_id GROUP BY 1")).all())
        floors = conn.execute(text("SELECT sum(floors) FROM buildings")).scalar()
    assert sum(per_community.values()) == n and floors == int(frame["层数"].sum())


# -------------------------------------------------------------------------------------------- the API

@pytest.fixture
def api(migrated_engine):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(migrated_engine), raise_server_exceptions=False) as client:
        yield client


def bearer(engine, role, jurisdiction=None) -> dict:
    from api.auth import issue_token
    from geo.access.users import create_user
    from geo.store.db import session_scope

    with session_scope(engine) as session:
        user = create_user(session, f"{role}-{jurisdiction or 'all'}", "pw-" + role * 3, role, jurisdiction)
        token = issue_token(user)
    return {"Authorization": f"Bearer {token}"}


def post_import(api, headers, layer, path, **form):
    with open(path, "rb") as f:
        return api.post("/v1/imports", headers=headers, data={"layer": layer, **form},
                        files={"file": (path.name, f, "application/octet-stream")})


def test_api_import_needs_planner_within_jurisdiction(api, parents, tmp_path):
    west = S.grids().iloc[:3]
    both = S.grids()
    planner = bearer(parents, "planner", S.WEST)
    worker = bearer(parents, "worker", S.WEST)
    before = snapshot(parents)
    r = post_import(api, worker, "grids", S.write(west, tmp_path / "west.geojson"))
    assert r.status_code == 403 and r.json()["type"].endswith("forbidden-role")
    r = post_import(api, planner, "grids", S.write(both, tmp_path / "both.geojson"))
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["required_jurisdiction"].startswith(S.EAST)
    assert snapshot(parents) == before
    r = post_import(api, planner, "grids", tmp_path / "west.geojson", dry_run="true")
    assert r.status_code == 200 and r.json()["imported"] == 3 and not r.json()["committed"]
    after = snapshot(parents)
    assert {k: v for k, v in after.items() if k != "audit_log"} == {k: v for k, v in before.items()
                                                                   if k != "audit_log"}
    with parents.connect() as conn:  # the dry run left only its audit entry
        assert conn.execute(text("SELECT action FROM audit_log ORDER BY id DESC LIMIT 1")).scalar() == \
            "import.grids.dry_run"
    r = post_import(api, planner, "grids", tmp_path / "west.geojson")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["imported"] == 3 and body["committed"] and body["problems_geojson"]["type"] == "FeatureCollection"
    assert sorted(stored(parents)["code"]) == sorted(west["code"])
    with parents.connect() as conn:
        entry = conn.execute(text("SELECT actor, action, jurisdiction_code, after->>'imported' FROM audit_log "
                                  "WHERE action = 'import.grids'")).one()
    assert tuple(entry) == (f"planner-{S.WEST}", "import.grids", S.WEST, "3")


def test_api_import_refusals_are_problem_json(api, parents, tmp_path):
    admin = bearer(parents, "admin")
    g = S.grids()
    g.loc[0, "geometry"] = shapely.box(*np.array(g.geometry.iloc[0].bounds) + [0, 0, 0.001, 0])
    r = post_import(api, admin, "grids", S.write(g, tmp_path / "g.geojson"), strict="true")
    assert r.status_code == 422 and r.json()["type"].endswith("import-refused")
    assert r.json()["report"]["problems_by_kind"]["overlap"] >= 1
    swapped = S.grids()
    swapped.geometry = shapely.transform(swapped.geometry.values, lambda xy: xy[:, ::-1])
    r = post_import(api, admin, "grids", S.write(swapped, tmp_path / "s.geojson"))
    assert r.status_code == 422 and r.json()["features"][0]["record"] == 1
    r = post_import(api, admin, "nonsense", tmp_path / "s.geojson")
    assert r.status_code == 422 and "unknown layer" in r.json()["detail"]


def test_api_upload_limit_is_413(api, parents, tmp_path):
    from api.deps import settings_dep
    from geo.settings import Settings

    api.app.dependency_overrides[settings_dep] = lambda: Settings(max_upload_bytes=200_000)
    big = gpd.GeoDataFrame({"ref": [f"B{i}" for i in range(3000)]},
                           geometry=shapely.buffer(shapely.points(np.full(3000, 121.51), np.full(3000, 31.24)),
                                                   1e-4, quad_segs=8), crs=4326)
    path = S.write(big, tmp_path / "big.geojson")
    assert path.stat().st_size > 200_000
    r = post_import(api, bearer(parents, "admin"), "buildings", path)
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["max_upload_bytes"] == 200_000
    with parents.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM buildings")).scalar() == 0


def test_api_export_formats_dates_and_jurisdiction(api, migrated_engine, tmp_path):
    S.load_all(migrated_engine, tmp_path)
    worker = bearer(migrated_engine, "worker", S.WEST)
    admin = bearer(migrated_engine, "admin")
    assert api.get("/v1/exports/grids").status_code == 401
    for fmt, suffix in (("geojson", ".geojson"), ("gpkg", ".gpkg"), ("shapefile", ".zip"), ("csv", ".csv")):
        r = api.get(f"/v1/exports/grids?format={fmt}", headers=admin)
        assert r.status_code == 200 and r.headers["x-feature-count"] == "6", fmt
        assert f'grids{suffix}' in r.headers["content-disposition"]
        out = tmp_path / f"dl{suffix}"
        out.write_bytes(r.content)
        assert len(read_export(out, fmt)) == 6
    r = api.get("/v1/exports/grids?format=geojson", headers=worker)
    assert r.status_code == 200
    assert sorted(f["properties"]["code"][:12] for f in r.json()["features"]) == [S.WEST] * 3
    r = api.get("/v1/exports/staff?format=csv", headers=worker)
    staff = pd.read_csv(pd.io.common.BytesIO(r.content), dtype=str, keep_default_na=False)
    assert "13800000002" not in staff["phone"].tolist()  # private phone hidden from a worker
    r = api.get("/v1/exports/grids?at=1999-01-01", headers=admin)
    assert r.status_code == 200 and r.json()["features"] == []
    assert api.get("/v1/exports/nope", headers=admin).status_code == 404
    assert api.get("/v1/exports/grids?format=kml", headers=admin).status_code == 422


# -------------------------------------------------------------------------------------------- the CLI

def test_cli_import_and_export(parents, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli.io
    from cli import app

    monkeypatch.setattr(cli.io.common, "engine", lambda *a, **k: parents)
    runner = CliRunner()
    g = S.grids()
    frame = gpd.GeoDataFrame({"编号": g["code"], "名字": g["name"]}, geometry=g.geometry, crs=4326)
    path = S.write(frame, tmp_path / "grids.geojson")
    bad = runner.invoke(app, ["import", "grids", str(path)])
    assert bad.exit_code == 1
    report_path = tmp_path / "report.json"
    ok = runner.invoke(app, ["import", "grids", str(path), "--map", "code=编号,name=名字", "--report",
                             str(report_path)])
    assert ok.exit_code == 0, ok.output
    assert "features read" in ok.output and "imported" in ok.output
    assert json.loads(report_path.read_text())["imported"] == 6
    assert json.loads(report_path.with_suffix(".problems.geojson").read_text())["type"] == "FeatureCollection"
    strict = runner.invoke(app, ["import", "micro_grids", str(S.write(S.micro_grids().iloc[:1],
                                                                      tmp_path / "m.geojson")), "--strict"])
    assert strict.exit_code == 1 and "coverage-gap" in strict.output
    out = tmp_path / "out.zip"
    exported = runner.invoke(app, ["export", "grids", str(out), "--encoding", "gbk"])
    assert exported.exit_code == 0 and "6 grids written" in exported.output
    assert len(read_export(out, "shapefile")) == 6
