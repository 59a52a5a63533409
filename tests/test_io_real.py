"""Real boundary files as they come (issue 17): lossless repair with areas before and after, refusals beyond the
tolerance, and no problem reported that the import itself created.

Every file is made here in tmp_path with the defects real files have (see tests/io_samples.py for the district).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from sqlalchemy import text

from geo.io import ImportOptions, import_layer
from geo.store.load import read_level
from tests import io_samples as S


@pytest.fixture
def parents(migrated_engine, tmp_path):
    """The sample street and its two communities, imported."""
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities"))
    return migrated_engine


def utm_area(geom) -> float:
    """Area in m² (UTM 51N; the import measures in the UTM zone of the data, which may differ by 1e-5)."""
    return float(gpd.GeoSeries([geom], crs=4326).to_crs(32651).area.iloc[0])


def stored(engine) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return read_level(conn, "grids")


def pinched(box: tuple) -> shapely.Polygon:
    """The box with a spike loop from the middle of its top edge into the box: 'Ring Self-intersection'. The
    region it encloses is the whole box (make_valid's default 'linework' repair cuts the loop out)."""
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    dx = (x1 - x0) / 10
    return shapely.Polygon([(x0, y0), (x1, y0), (x1, y1), (xm, y1), (xm, ym), (xm + dx, ym), (xm, y1), (x0, y1)])


def hole_on_edge(box: tuple) -> shapely.Polygon:
    """The box with a hole whose side lies on the shell's west edge ('Self-intersection'): a real hole."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    hole = [(x0, y0 + h * 0.4), (x0 + w * 0.3, y0 + h * 0.4), (x0 + w * 0.3, y0 + h * 0.6), (x0, y0 + h * 0.6)]
    return shapely.Polygon(shapely.box(*box).exterior.coords, [hole])


def hole_outside(box: tuple) -> shapely.Polygon:
    """The box with a 'hole' drawn outside its shell (GEOS: 'Hole lies outside shell')."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    hole = [(x1 + w * 0.1, y0 + h * 0.2), (x1 + w * 0.3, y0 + h * 0.2), (x1 + w * 0.3, y0 + h * 0.4),
            (x1 + w * 0.1, y0 + h * 0.4)]
    return shapely.Polygon(shapely.box(*box).exterior.coords, [hole])


def test_repair_keeps_every_part_and_reports_area_before_and_after(parents, tmp_path):
    g = S.grids()
    boxes = S.grid_boxes()
    g.loc[0, "geometry"] = pinched(boxes[0])
    g.loc[1, "geometry"] = shapely.MultiPolygon([shapely.box(*boxes[1]), shapely.box(*boxes[1]).buffer(-0.0005)])
    g.loc[3, "geometry"] = hole_on_edge(boxes[3])
    assert not g.geometry.iloc[[0, 1, 3]].is_valid.any()
    path = S.write(g, tmp_path / "invalid.geojson")
    report = import_layer(parents, "grids", path)
    assert report.imported == 6 and report.repaired == 3
    repaired = {i.records[0]: i for i in report.issues if i.kind == "invalid-geometry"}
    assert set(repaired) == {1, 2, 4}
    for record, issue in repaired.items():
        d = issue.details
        assert d["lost_m2"] == 0 and d["added_m2"] == 0, (record, d)
        assert d["area_before_m2"] == pytest.approx(d["area_after_m2"], rel=1e-9)
        assert "m² before" in issue.message and "m² after" in issue.message
    box_area = utm_area(shapely.box(*boxes[0]))
    assert repaired[1].details["area_after_m2"] == pytest.approx(box_area, rel=1e-4)
    # the hole drawn on the edge stays a hole; the spike and the nested shell lose nothing
    hole = shapely.box(*boxes[3]).difference(shapely.Polygon(hole_on_edge(boxes[3]).interiors[0]))
    assert repaired[4].details["area_after_m2"] == pytest.approx(utm_area(hole), rel=1e-4)
    grids = stored(parents).set_index("code")
    for i in (0, 1):
        assert utm_area(grids.geometry.loc[g["code"].iloc[i]]) == pytest.approx(box_area, rel=1e-4)
    # no problem the repair created: the only gap is the hole drawn on purpose, nothing lies outside a parent
    kinds = report.counts_by_kind()
    assert "outside-parent" not in kinds and "repair-changed-area" not in kinds
    gaps = [i for i in report.issues if i.kind == "coverage-gap"]
    assert len(gaps) == 1 and gaps[0].feature == S.EAST
    drawn_hole = utm_area(shapely.Polygon(hole_on_edge(boxes[3]).interiors[0]))
    assert gaps[0].area_m2 == pytest.approx(drawn_hole, rel=1e-3)
    with parents.connect() as conn:
        assert conn.execute(text("SELECT bool_and(ST_IsValid(geom)) FROM grid_boundaries")).scalar()


def test_locate_finds_a_grid_inside_the_part_a_lossy_repair_would_drop(parents, tmp_path):
    g = S.grids()
    box = S.grid_boxes()[0]
    g.loc[0, "geometry"] = pinched(box)
    lossy = shapely.make_valid(pinched(box), method="linework")
    x0, y0, x1, y1 = box
    probe = shapely.Point((x0 + x1) / 2 + (x1 - x0) / 40, (y0 + y1) / 2 + (y1 - y0) / 10)
    assert not lossy.covers(probe)  # the point the old repair lost
    import_layer(parents, "grids", S.write(g, tmp_path / "pinched.geojson"))
    with parents.connect() as conn:
        code = conn.execute(text("SELECT code FROM grids_covering(now(), ST_SetSRID(ST_Point(:x, :y), 4326))"),
                            {"x": probe.x, "y": probe.y}).scalar()
    assert code == g["code"].iloc[0]


def test_a_repair_beyond_the_tolerance_is_refused_or_flagged_with_both_outlines(parents, tmp_path):
    g = S.grids()
    box = S.grid_boxes()[2]
    g.loc[2, "geometry"] = hole_outside(box)
    path = S.write(g, tmp_path / "hole-outside.geojson")
    report = import_layer(parents, "grids", path, ImportOptions(dry_run=True))
    (issue,) = [i for i in report.issues if i.kind == "repair-changed-area"]
    assert issue.action == "refused" and issue.records == [3]
    d = issue.details
    assert d["added_m2"] > 0 and d["area_after_m2"] > d["area_before_m2"]
    assert d["area_before_m2"] == pytest.approx(utm_area(shapely.box(*box)), rel=1e-4)
    assert report.imported == 5 and report.refused == 1
    feature = next(f for f in report.problems_geojson()["features"]
                   if f["properties"]["kind"] == "repair-changed-area")
    assert feature["geometry"]["type"] == "GeometryCollection"
    drawn, repaired = (shapely.geometry.shape(x) for x in feature["geometry"]["geometries"])
    assert drawn.length < repaired.length  # the repaired outline has the extra ring
    # a tolerance large enough lets it through as a repair; "flag" imports it and keeps the problem
    loose = import_layer(parents, "grids", path, ImportOptions(dry_run=True, repair_tolerance=0.5))
    assert "repair-changed-area" not in loose.counts_by_kind() and loose.imported == 6
    flagged = import_layer(parents, "grids", path, ImportOptions(repair_over_tolerance="flag"))
    (issue,) = [i for i in flagged.issues if i.kind == "repair-changed-area"]
    assert issue.action == "flagged" and flagged.imported == 6


def real_style_grids() -> gpd.GeoDataFrame:
    """The sample grids as a real district writes them: Chinese column names, TYPE with 综合/专属, 所属社区."""
    g = S.grids()
    return gpd.GeoDataFrame({
        "网格编码": g["code"], "网格名称": g["name"], "TYPE": ["综合"] * 5 + ["专属"],
        "所属社区": ["梅园社区"] * 3 + ["崂山社区"] * 3,
    }, geometry=g.geometry, crs=4326)


def test_chinese_columns_are_recognised_and_said_so_in_a_gbk_shapefile(parents, tmp_path):
    path = S.zipped_shapefile(real_style_grids(), tmp_path / "网格.zip", encoding="GBK", cpg=False)
    report = import_layer(parents, "grids", path, ImportOptions(dry_run=True))
    assert report.encoding in ("GB18030", "GBK")
    assert report.field_mapping["code"] == "网格编码" and report.field_mapping["name"] == "网格名称"
    assert report.field_mapping["kind"] == "TYPE" and report.field_mapping["community_name"] == "所属社区"
    assert "we read column 'TYPE' as kind (recognised)" in report.columns_read
    assert "we read column '所属社区' as community_name (recognised)" in report.columns_read
    assert report.to_json()["columns_read"] == report.columns_read
    assert report.imported == 6 and not report.ignored_columns
    import_layer(parents, "grids", path)
    kinds = stored(parents).set_index("code")["kind"]
    assert (kinds == "dedicated").sum() == 1 and kinds.loc[S.grids()["code"].iloc[5]] == "dedicated"


def test_unknown_kind_values_are_errors_not_a_silent_default(parents, tmp_path):
    g = real_style_grids()
    g["TYPE"] = ["综合", "专属", "党建", "党建", "党建", "综合"]  # mostly values that are no grid kind
    report = import_layer(parents, "grids", S.write(g, tmp_path / "kinds.geojson"), ImportOptions(dry_run=True))
    bad = [i for i in report.issues if i.kind == "bad-value"]
    assert [i.records for i in bad] == [[3], [4], [5]]
    assert all("'党建'" in i.message and "allowed" in i.message for i in bad)
    assert report.field_mapping["kind"] == "TYPE" and report.refused == 3


def test_household_checks_are_skipped_and_said_so_without_units(parents, tmp_path):
    report = import_layer(parents, "grids", S.write(S.grids(), tmp_path / "grids.geojson"),
                          ImportOptions(dry_run=True, strict=True))
    assert "households-out-of-band" not in report.counts_by_kind()
    assert report.checks_skipped and report.checks_skipped[0].startswith("households-out-of-band")
    assert any("check skipped" in n for n in report.notes)
    # with household counts in the file the check applies again
    g = S.grids()
    g["户数"] = [400, 400, 400, 400, 120, 0]
    report = import_layer(parents, "grids", S.write(g, tmp_path / "with-households.geojson"),
                          ImportOptions(dry_run=True))
    band = [i for i in report.issues if i.kind == "households-out-of-band"]
    assert [i.details["households"] for i in band] == [120] and not report.checks_skipped


def test_hierarchy_as_found_derives_streets_and_communities_in_the_dry_run(migrated_engine, tmp_path):
    path = S.zipped_shapefile(real_style_grids(), tmp_path / "网格.zip", encoding="GBK", cpg=False)
    dry = import_layer(migrated_engine, "grids", path, ImportOptions(dry_run=True))
    assert dry.imported == 6 and "missing-parent" not in dry.counts_by_kind()
    assert [(d["level"], d["code"], d["name"]) for d in dry.parents_derived] == [
        ("streets", S.STREET, f"街道 {S.STREET}"), ("communities", S.WEST, "梅园社区"),
        ("communities", S.EAST, "崂山社区")]
    assert "所属社区" in dry.parents_derived[1]["from"]
    assert "parent-without-boundary" not in dry.counts_by_kind()  # not a problem of the data: said, not flagged
    assert any(c.startswith("outside-parent and coverage-gap") for c in dry.checks_skipped)
    with migrated_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM communities")).scalar() == 0  # a dry run writes nothing
    report = import_layer(migrated_engine, "grids", path)
    assert report.imported == 6 and len(report.parents_derived) == 3
    with migrated_engine.connect() as conn:
        rows = conn.execute(text("SELECT c.code, c.name, s.code FROM communities c JOIN streets s "
                                 "ON s.id = c.street_id ORDER BY c.code")).all()
    assert [tuple(r) for r in rows] == [(S.WEST, "梅园社区", S.STREET), (S.EAST, "崂山社区", S.STREET)]
    refused = import_layer(migrated_engine, "grids", path,
                           ImportOptions(dry_run=True, derive_parents=False, valid_from="2030-01-01"))
    assert "missing-parent" not in refused.counts_by_kind()  # they exist now


def test_code_schemes_are_data_and_odd_codes_are_reported(parents, tmp_path):
    g = S.grids().iloc[:2].copy()
    g["code"] = [S.WEST + "0010", S.WEST + "002"]  # a 16-digit dedicated grid beside a 15-digit one
    path = S.write(g, tmp_path / "codes.geojson")
    default = import_layer(parents, "grids", path, ImportOptions(dry_run=True))
    (bad,) = [i for i in default.issues if i.records == [1] and i.kind in ("bad-value", "bad-code")]
    assert "16" in bad.message or "0010" in bad.message
    devzone = import_layer(parents, "grids", path, ImportOptions(dry_run=True, code_scheme="devzone"))
    assert "bad-code" not in devzone.counts_by_kind() and devzone.imported == 2  # storable since migration 0020
    c = S.communities().iloc[:1].copy()
    c["code"] = [S.STREET + "9"]  # a 10-digit village code
    path = S.write(c, tmp_path / "village.geojson")
    village = import_layer(parents, "communities", path, ImportOptions(dry_run=True, code_scheme="devzone"))
    assert "bad-code" not in village.counts_by_kind() and village.imported == 1
    default = import_layer(parents, "communities", path, ImportOptions(dry_run=True))
    assert [i.kind for i in default.issues if i.records == [1]] == ["bad-code"]
    from geo.io.codes import UnknownCodeScheme
    with pytest.raises(UnknownCodeScheme):
        import_layer(parents, "grids", path, ImportOptions(dry_run=True, code_scheme="nowhere"))


LOCAL_GK = ("+proj=tmerc +lat_0=0 +lon_0=121.4667 +k=1 +x_0=350000 +y_0=-3400000 +ellps=GRS80 +units=m "
            "+no_defs +type=crs")


@pytest.mark.parametrize(("crs", "fmt"), [("EPSG:4549", "geojson"), ("4549", "gpkg"), (LOCAL_GK, "shapefile"),
                                          (LOCAL_GK, "csv"), ("gcj02", "geojson")])
def test_export_in_any_crs_round_trips(parents, tmp_path, crs, fmt):
    import pyogrio
    from pyproj import Transformer

    from geo.io import export_layer
    from geo.io.exporter import suffix_for
    from geo.spatial.coords import wgs84_to_gcj02

    import_layer(parents, "grids", S.write(S.grids(), tmp_path / "grids.geojson"))
    result = export_layer(parents, "grids", tmp_path / f"out{suffix_for(fmt)}", fmt, crs=crs)
    assert result.count == 6
    if fmt == "csv":
        import pandas as pd
        out = pd.read_csv(result.path, dtype=str)
        geoms = shapely.from_wkt(out["wkt"].to_numpy())
    else:
        out = pyogrio.read_dataframe(result.path if fmt != "shapefile" else f"/vsizip/{result.path}")
        geoms = out.geometry.to_numpy()
    x0, y0 = S.grids().geometry.iloc[0].exterior.coords[0]
    if crs == "gcj02":
        ex, ey = wgs84_to_gcj02(x0, y0)
        assert "GCJ-02" in result.crs
    else:
        ex, ey = Transformer.from_crs(4326, crs, always_xy=True).transform(x0, y0)
        if fmt != "csv":  # the file says its CRS, and that CRS puts the point where we expect
            fx, fy = Transformer.from_crs(4326, out.crs, always_xy=True).transform(x0, y0)
            assert np.hypot(fx - ex, fy - ey) < 0.01
    coords = shapely.get_coordinates(geoms[0])
    assert np.min(np.hypot(coords[:, 0] - ex, coords[:, 1] - ey)) < (1e-7 if crs == "gcj02" else 1e-3)
    # back in: the same grids, in the same place
    if crs != "gcj02":
        back = import_layer(parents, "grids", result.path,
                            ImportOptions(dry_run=True, crs=crs if fmt == "csv" else None, valid_from="2031-01-01"))
        assert back.imported == 6


def test_export_within_a_community_and_a_bad_crs(parents, tmp_path):
    from geo.io import export_layer
    from geo.io.reproject import CoordinateError

    import_layer(parents, "grids", S.write(S.grids(), tmp_path / "grids.geojson"))
    assert export_layer(parents, "grids", tmp_path / "w.geojson", within=S.WEST).count == 3
    assert export_layer(parents, "grids", tmp_path / "j.geojson", jurisdiction=S.EAST, within=S.WEST).count == 0
    with pytest.raises(CoordinateError):
        export_layer(parents, "grids", tmp_path / "x.geojson", crs="+proj=nothing")


def test_a_plausible_wrong_epsg_is_flagged_with_the_likely_intended_crs(parents, tmp_path):
    g = S.grids().to_crs(4549)  # CGCS2000 3° Gauss-Krüger, CM 120°E: right for Shanghai
    wrong = g.set_crs(4547, allow_override=True)  # declared as CM 114°E: ~570 km west, still in China
    report = import_layer(parents, "grids", S.write(wrong, tmp_path / "wrong-epsg.gpkg"),
                          ImportOptions(dry_run=True))
    (issue,) = [i for i in report.issues if i.kind == "implausible-crs"]
    assert issue.details["distance_km"] > 300 and issue.details["reference"] == "their parents"
    assert issue.details["candidates"][0]["crs"] == "EPSG:4549"
    assert issue.details["candidates"][0]["distance_km"] < 5
    assert "likely intended CRS is EPSG:4549" in issue.message
    right = import_layer(parents, "grids", S.write(g, tmp_path / "right.gpkg"), ImportOptions(dry_run=True))
    assert "implausible-crs" not in right.counts_by_kind()


def test_demo_remove_keeps_the_real_data(migrated_engine, district, tmp_path):
    from demo.load import remove_demo
    from geo.store.load import load_district

    load_district(migrated_engine, district)
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities", "grids"))

    def census():
        with migrated_engine.connect() as conn:
            return {t: conn.execute(text(f"SELECT count(*) FILTER (WHERE code LIKE '430602%'), "
                                         f"count(*) FILTER (WHERE code LIKE '310115%') FROM {t}")).one()
                    for t in ("streets", "communities", "grids")}

    before = census()
    assert all(demo > 0 and real > 0 for demo, real in before.values())
    dry = remove_demo(migrated_engine, dry_run=True)
    assert dry["removed"]["grids"] == before["grids"][0] and census() == before
    result = remove_demo(migrated_engine)
    assert result["removed"]["streets"] == before["streets"][0] and not result["kept_units"]
    after = census()
    assert {t: v[0] for t, v in after.items()} == {"streets": 0, "communities": 0, "grids": 0}
    assert {t: v[1] for t, v in after.items()} == {t: v[1] for t, v in before.items()}
    with migrated_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM compounds")).scalar() == 0  # the demo's, gone with it
        # the samples joined the demo's version (same start, 2025-01-01): it stays, holding only their boundaries
        assert conn.execute(text("SELECT count(*) FROM grid_boundaries")).scalar() == 6
        assert conn.execute(text("SELECT count(*) FROM current_grids")).scalar() == 6  # the real grids stay


def test_api_export_takes_crs_and_within(client, admin_headers):
    import json

    r = client.get("/v1/exports/grids", params={"crs": "EPSG:4547"}, headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-crs"].startswith("EPSG:4547")
    doc = json.loads(r.content)
    x, y = shapely.get_coordinates(shapely.geometry.shape(doc["features"][0]["geometry"]))[0]
    assert 300_000 < x < 700_000 and 2_000_000 < y < 6_000_000  # metres of the CM 114°E zone, not degrees
    proj = "+proj=tmerc +lat_0=0 +lon_0=113.1 +k=1 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m +no_defs"
    r = client.get("/v1/exports/grids", params={"crs": proj, "format": "csv"}, headers=admin_headers)
    assert r.status_code == 200, r.text
    code = doc["features"][0]["properties"]["community_code"]
    r = client.get("/v1/exports/grids", params={"within": code}, headers=admin_headers)
    inside = json.loads(r.content)["features"]
    assert inside and all(f["properties"]["code"].startswith(code) for f in inside)
    assert len(inside) < len(doc["features"])
    r = client.get("/v1/exports/grids", params={"crs": "+proj=nothing"}, headers=admin_headers)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
