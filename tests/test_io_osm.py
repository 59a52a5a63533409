"""Importing the real OpenStreetMap extract (Lujiazui, Optics Valley): tile-cut pieces merged by id.

The extract lives beside the project (../shared/data/osm-lujiazui/, ODbL); the `osm_dir` fixture skips these
tests, saying why, when it is absent. Nothing of it is copied into the repository.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from geo.io import ImportOptions, import_layer

pytestmark = pytest.mark.osm

NAMED = ("崂山三村", "乳山二村", "梅园三街坊")


def _pieces(path) -> dict[str, list[dict]]:
    """Raw features of the file by id, read as plain JSON (independently of the importer)."""
    by_id: dict[str, list[dict]] = {}
    for f in json.loads(path.read_text(encoding="utf-8"))["features"]:
        by_id.setdefault(str(f["properties"]["id"]), []).append(f)
    return by_id


def test_tile_cut_compounds_come_out_whole(osm_dir, migrated_engine):
    path = osm_dir / "residential.geojson"
    pieces = _pieces(path)
    split = {k: v for k, v in pieces.items() if len(v) > 1}
    report = import_layer(migrated_engine, "compounds", path)
    assert report.features_read == sum(len(v) for v in pieces.values())
    assert report.imported == len(pieces) and report.refused == 0
    assert report.merged == sum(len(v) - 1 for v in split.values())
    merged = [i for i in report.issues if i.kind == "split-pieces-merged"]
    assert len(merged) == len(split) and report.field_mapping["ref"] == "id"

    with migrated_engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT name, source_ref, ST_NumGeometries(geom) AS parts, ST_NumInteriorRings(ST_GeometryN(geom, 1))
                   AS holes, ST_IsValid(geom) AS valid, ST_Area(ST_Transform(geom, 3857)) AS mercator_area
            FROM compounds WHERE name = ANY(:names) ORDER BY name"""), {"names": list(NAMED)}).mappings().all()
    assert sorted(r["name"] for r in rows) == sorted(NAMED)  # one row each
    for r in rows:
        assert r["parts"] == 1 and r["holes"] == 0 and r["valid"], r
        assert len(pieces[r["source_ref"]]) > 1  # each was cut by tile edges in the file
    # Where the extract holds every piece, the merged shape has the whole feature's (Web Mercator) area that the
    # tiles report: nothing was lost or doubled at the seams.
    for r in rows:
        if r["name"] in ("崂山三村", "乳山二村"):
            assert r["mercator_area"] == pytest.approx(pieces[r["source_ref"]][0]["properties"]["area"], rel=1e-3)


def test_tile_cut_buildings_merged_and_placed_in_compounds(osm_dir, migrated_engine):
    import_layer(migrated_engine, "compounds", osm_dir / "residential.geojson")
    path = osm_dir / "buildings.geojson"
    pieces = _pieces(path)
    seen = []
    report = import_layer(migrated_engine, "buildings", path, ImportOptions(progress=lambda *a: seen.append(a)))
    assert report.features_read == sum(len(v) for v in pieces.values())
    assert report.imported == len(pieces) and report.refused == 0
    assert report.merged == sum(len(v) - 1 for v in pieces.values())
    # Pieces that abut at a tile edge, and copies repeated in two tiles' buffers, are both folded into one.
    assert set(report.counts_by_kind()) <= {"split-pieces-merged", "duplicate-record"}
    with migrated_engine.connect() as conn:
        stats = conn.execute(text("""
            SELECT count(*) AS n, count(DISTINCT source_ref) AS refs, bool_and(ST_IsValid(geom)) AS valid,
                   count(compound_id) AS in_compounds,
                   count(*) FILTER (WHERE ST_X(ST_Centroid(geom)) < 118) AS wuhan
            FROM buildings""")).mappings().one()
    assert stats["n"] == stats["refs"] == report.imported and stats["valid"]
    assert stats["in_compounds"] > 0 and stats["wuhan"] > 0  # both cities, Lujiazui buildings inside compounds
    assert seen and seen[-1][0] == "write"


def test_real_outlines_with_real_defects_are_repaired_without_losing_area(osm_dir, migrated_engine, tmp_path):
    """Real compound outlines from the extract given the defects real files have (a ring pinched at a vertex, a
    hole touching the shell): every repair keeps the drawn area, to the square metre, and the store holds it."""
    import geopandas as gpd
    import shapely

    from geo.spatial.geometry import ring_regions

    frame = gpd.read_file(osm_dir / "residential.geojson")
    frame = frame[frame.geometry.geom_type == "Polygon"].drop_duplicates("id")
    frame = frame.assign(a=frame.area).sort_values("a", ascending=False).head(12).reset_index(drop=True)
    frame = frame[["id", "name", "geometry"]].copy()
    broken = []
    for i in range(0, len(frame), 3):
        poly = frame.geometry.iloc[i]
        ring = list(poly.exterior.coords)[:-1]
        cx, cy = poly.centroid.x, poly.centroid.y
        vx, vy = ring[0]
        a = (vx + (cx - vx) * 0.3, vy + (cy - vy) * 0.3)
        b = (vx + (cx - vx) * 0.3 + (cy - vy) * 0.05, vy + (cy - vy) * 0.3 - (cx - vx) * 0.05)
        if i % 2:  # a spike loop back to the same vertex: 'Ring Self-intersection'
            shape = shapely.Polygon([ring[0], a, b, *ring])
        else:  # a hole with a side along the shell
            mid = ((ring[0][0] + ring[1][0]) / 2, (ring[0][1] + ring[1][1]) / 2)
            shape = shapely.Polygon(poly.exterior.coords, [[ring[0], mid, a]])
        assert not shape.is_valid
        frame.loc[i, "geometry"] = shape
        broken.append(i)
    path = tmp_path / "osm-defects.geojson"
    frame.to_file(path, driver="GeoJSON")
    report = import_layer(migrated_engine, "compounds", path, ImportOptions(mapping="ref=id"))
    repaired = {i.records[0] - 1: i for i in report.issues if i.kind == "invalid-geometry"}
    assert sorted(repaired) == broken and report.imported == len(frame)
    assert all(i.details["lost_m2"] == 0 and i.details["added_m2"] == 0 for i in repaired.values())
    drawn = ring_regions(frame.geometry.to_numpy())
    with migrated_engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT source_ref, ST_AsBinary(geom) FROM compounds")).all())
    for i in broken:
        stored = shapely.from_wkb(bytes(rows[str(frame["id"].iloc[i])]))
        assert shapely.symmetric_difference(stored, drawn[i]).area <= 1e-9 * drawn[i].area
