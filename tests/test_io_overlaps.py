"""Overlaps resolved (issue 17): every overlap between sibling grids gets a proposed owner (the named one, else the
longer shared edge), applied in a dry run first and then for real, all or nothing.
"""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
import shapely.affinity
from sqlalchemy import text

from geo.io import ImportOptions, import_layer
from geo.io.overlaps import OverlapNotResolvable
from tests import io_samples as S

A, B = S.WEST + "001", S.WEST + "002"  # the top band of the west community and the band below it


@pytest.fixture
def parents(migrated_engine, tmp_path):
    """The sample street and its two communities, imported."""
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities"))
    return migrated_engine


def tongue() -> shapely.Polygon:
    """A narrow tongue of grid A poking 60 m down into grid B: B surrounds it on three sides."""
    x0, y0, x1, _ = S.grid_boxes()[0]
    xm = (x0 + x1) / 2
    return shapely.box(xm - 0.0002, y0 - 0.0006, xm + 0.0002, y0)


def grids_with_tongue() -> gpd.GeoDataFrame:
    g = S.grids()
    g.loc[0, "geometry"] = shapely.union(g.geometry.iloc[0], tongue())
    return g


def utm_area(geom) -> float:
    return float(gpd.GeoSeries([geom], crs=4326).to_crs(32651).area.iloc[0])


def stored(engine) -> dict[str, shapely.Geometry]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT code, ST_AsBinary(geom) FROM current_grids")).all()
    return {code: shapely.from_wkb(bytes(wkb)) for code, wkb in rows}


def same(a, b) -> bool:
    """The same area on the ground (the symmetric difference under 0.01 m²; degrees² at this latitude)."""
    return float(shapely.area(shapely.symmetric_difference(a, b))) < 1e-12


def overlap_issues(report):
    return [i for i in report.issues if i.kind == "overlap"]


def test_each_overlap_is_flagged_with_a_proposed_owner(parents, tmp_path):
    path = S.write(grids_with_tongue(), tmp_path / "g.geojson")
    report = import_layer(parents, "grids", path, ImportOptions(dry_run=True, valid_from=S.VALID_FROM))
    (issue,) = overlap_issues(report)
    assert issue.action == "flagged"
    resolution = issue.details["resolution"]
    assert resolution["give_to"] == B and resolution["take_from"] == A
    assert resolution["rule"] == "longer-shared-edge" and resolution["applicable"]
    edges = resolution["shared_edge_m"]
    assert edges[B] > 2 * edges[A] > 0  # B borders the tongue on three sides, A on one
    assert "proposed: the" in issue.message and f"goes to {B}" in issue.message
    assert issue.area_m2 == pytest.approx(utm_area(tongue()), rel=0.01)


def test_resolution_in_a_dry_run_then_for_real(parents, tmp_path):
    path = S.write(grids_with_tongue(), tmp_path / "g.geojson")
    options = ImportOptions(dry_run=True, valid_from=S.VALID_FROM, resolve_overlaps=True)
    dry = import_layer(parents, "grids", path, options)
    (issue,) = overlap_issues(dry)
    assert issue.action == "repaired" and "resolved, the" in issue.message
    assert dry.imported == 6 and not dry.committed
    assert stored(parents) == {}  # the dry run wrote nothing
    options.dry_run = False
    report = import_layer(parents, "grids", path, options)
    assert [i.action for i in overlap_issues(report)] == ["repaired"] and report.committed
    now = stored(parents)
    boxes = [shapely.box(*b) for b in S.grid_boxes()]
    assert same(now[A], boxes[0]) and same(now[B], boxes[1])  # the tongue went back to B
    with parents.connect() as conn:
        overlapping = conn.execute(text(
            "SELECT count(*) FROM current_grids a JOIN current_grids b ON a.code < b.code "
            "AND ST_Area(ST_Intersection(a.geom, b.geom)::geography) > 1")).scalar()
    assert overlapping == 0


def test_a_named_owner_wins_over_the_rule(parents, tmp_path):
    path = S.write(grids_with_tongue(), tmp_path / "g.geojson")
    report = import_layer(parents, "grids", path, ImportOptions(valid_from=S.VALID_FROM,
                                                                overlap_owners=f"{B}/{A}={A}"))
    (issue,) = overlap_issues(report)
    assert issue.action == "repaired" and issue.details["resolution"]["rule"] == "named"
    now = stored(parents)
    boxes = [shapely.box(*b) for b in S.grid_boxes()]
    assert same(now[A], boxes[0].union(tongue())) and same(now[B], boxes[1].difference(tongue()))


def test_resolutions_are_all_or_nothing(parents, tmp_path):
    up = shapely.affinity.translate(tongue(), 0, 0.0006)  # B's tongue 60 m up into A: A surrounds it
    g = S.grids()
    g.loc[1, "geometry"] = shapely.union(g.geometry.iloc[1], up)
    import_layer(parents, "grids", S.write(g, tmp_path / "b.geojson"), ImportOptions(valid_from=S.VALID_FROM))
    before = stored(parents)
    path = S.write(S.grids().iloc[[0]], tmp_path / "a.geojson")  # A redrawn alone; B keeps its tongue
    flagged = import_layer(parents, "grids", path, ImportOptions(dry_run=True, valid_from="2026-01-01"))
    (issue,) = overlap_issues(flagged)
    resolution = issue.details["resolution"]
    assert resolution["give_to"] == A and not resolution["applicable"]  # B is not in the file: it cannot change
    assert f"not applicable: {B} is not in this file" in issue.message
    with pytest.raises(OverlapNotResolvable, match=f"{B} to {A}"):
        import_layer(parents, "grids", path, ImportOptions(valid_from="2026-01-01", resolve_overlaps=True))
    with pytest.raises(OverlapNotResolvable, match="do not overlap"):
        import_layer(parents, "grids", path, ImportOptions(valid_from="2026-01-01",
                                                           overlap_owners=f"{A}/{S.EAST}003={A}"))
    with pytest.raises(OverlapNotResolvable, match="neither"):
        import_layer(parents, "grids", path, ImportOptions(valid_from="2026-01-01", overlap_owners=f"{A}/{B}=1"))
    assert stored(parents).keys() == before.keys()
    assert all(same(geom, before[c]) for c, geom in stored(parents).items())  # nothing written by any of them
    # naming the file's own grid as the one that gives way is applicable
    report = import_layer(parents, "grids", path, ImportOptions(valid_from="2026-01-01",
                                                                overlap_owners=f"{A}/{B}={B}"))
    assert [i.action for i in overlap_issues(report)] == ["repaired"]
    now = stored(parents)
    assert same(now[A], shapely.box(*S.grid_boxes()[0]).difference(up)) and same(now[B], before[B])


def test_the_import_api_resolves_overlaps(client, admin_headers, tmp_path):
    g = grids_with_tongue()
    g["code"] = [c.replace(S.STREET, "310115099") for c in g["code"]]  # a street of its own, derived
    g["community_code"] = [c[:12] for c in g["code"]]
    path = S.write(g, tmp_path / "g.geojson")
    r = client.post("/v1/imports", headers=admin_headers,
                    data={"layer": "grids", "dry_run": "true", "resolve_overlaps": "true"},
                    files={"file": ("g.geojson", path.read_bytes(), "application/geo+json")})
    assert r.status_code == 200, r.text
    (problem,) = [p for p in r.json()["problems"] if p["kind"] == "overlap"]
    assert problem["action"] == "repaired" and problem["details"]["resolution"]["give_to"].endswith("002")
    r = client.post("/v1/imports", headers=admin_headers,
                    data={"layer": "grids", "dry_run": "true", "overlap_owners": "1/2=3"},
                    files={"file": ("g.geojson", path.read_bytes(), "application/geo+json")})
    assert r.status_code == 422 and r.json()["type"].endswith("/overlap-not-resolvable")

