"""Compound-versus-grid classification: hand-built cases for every class and edge, both implementations, storage
per boundary version, sensitivity, and the synthetic district's planted types."""

from __future__ import annotations

import datetime as dt
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Polygon, box
from sqlalchemy import text

from geo.classify import classification as gc
from geo.spatial.geometry import as_multipolygons, ewkb_hex
from geo.store import db
from tests.conftest import _create_database, _drop_database

EPSG = 32649  # UTM 49N: Yueyang
X0, Y0 = 500_000.0, 3_250_000.0
CELL = 200.0
COLS, ROWS = 6, 3
COMMUNITY = "430602001001"
V1 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def cell(c: int, r: int) -> Polygon:
    return box(X0 + CELL * c, Y0 + CELL * r, X0 + CELL * (c + 1), Y0 + CELL * (r + 1))


def half(c: int, r: int, east: bool) -> Polygon:
    x = X0 + CELL * c + (CELL / 2 if east else 0)
    return box(x, Y0 + CELL * r, x + CELL / 2, Y0 + CELL * (r + 1))


def grid_code(c: int, r: int) -> str:
    return f"{COMMUNITY}{r * COLS + c + 1:03d}"


def _jittered_cell(c: int, r: int, seed: int = 3) -> Polygon:
    """A cell redrawn by another surveyor: a vertex every 20 m, each moved 1–3 m in a random direction."""
    ring = shapely.segmentize(cell(c, r).exterior, 20.0)
    xy = shapely.get_coordinates(ring)[:-1]
    rng = np.random.default_rng(seed)
    dist = rng.uniform(1.0, 3.0, len(xy))
    angle = rng.uniform(0, 2 * np.pi, len(xy))
    moved = xy + np.column_stack([dist * np.cos(angle), dist * np.sin(angle)])
    return Polygon(moved)


def _triangle(x: float, y: float) -> Polygon:
    """A right triangle of 0.5 m² with its right angle at (x, y), pointing north-east."""
    return Polygon([(x, y), (x + 1, y), (x, y + 1)])


#: compound id → (description, polygon in UTM metres, class against grids, class against micro-grids)
CASES: dict[int, tuple[str, object, str, str]] = {
    1: ("equal to its grid", cell(0, 0), "same", "larger"),
    2: ("its grid shifted 2 m east", shapely.affinity.translate(cell(1, 0), 2.0), "same", "larger"),
    3: ("with a 20 m hole, inside one grid",
        Polygon(box(X0 + 400, Y0 + 50, X0 + 500, Y0 + 150).exterior.coords,
                [box(X0 + 440, Y0 + 90, X0 + 460, Y0 + 110).exterior.coords]), "smaller", "smaller"),
    4: ("a multipolygon of two 60 m squares in one grid",
        shapely.MultiPolygon([box(X0 + 620, Y0 + 20, X0 + 680, Y0 + 80), box(X0 + 720, Y0 + 120, X0 + 780, Y0 + 180)]),
        "smaller", "straddling"),
    5: ("covering two whole grids", cell(0, 1).union(cell(1, 1)), "larger", "larger"),
    6: ("covering two whole grids and touching a third by a 0.5 m² sliver",
        shapely.union_all([cell(2, 1), cell(3, 1), _triangle(X0 + 700, Y0 + 400)]), "larger", "larger"),
    7: ("equal to its grid plus a 0.5 m² sliver into the next", cell(4, 0).union(_triangle(X0 + 900, Y0 + 200)),
        "same", "larger"),
    8: ("a straddler across a grid line", box(X0 + 140, Y0 + 450, X0 + 260, Y0 + 550), "straddling", "straddling"),
    9: ("in no grid", box(X0 + 1400, Y0 + 100, X0 + 1500, Y0 + 200), "outside", "outside"),
    10: ("its grid redrawn 1–3 m off", _jittered_cell(2, 2), "same", "larger"),
    11: ("half in a grid, half in no grid", box(X0 + 1100, Y0 + 420, X0 + 1300, Y0 + 480), "straddling",
         "straddling"),
    12: ("equal to a micro-grid", half(3, 2, east=False), "smaller", "same"),
    13: ("its grid with a 40 m hole (other land inside)",
         Polygon(cell(5, 0).exterior.coords, [box(X0 + 1080, Y0 + 80, X0 + 1120, Y0 + 120).exterior.coords]),
         "smaller", "larger"),
    14: ("92% in one grid, 8 m over the line (fragile)", box(X0 + 792, Y0 + 250, X0 + 892, Y0 + 350), "smaller",
         "smaller"),
}


def _wgs(geoms) -> np.ndarray:
    return np.asarray(gpd.GeoSeries(list(geoms), crs=EPSG).to_crs(4326).values, dtype=object)


def _load_layout(conn) -> None:
    """Street, community, a 6×3 block of 200 m grids, each split into two micro-grids, and the compounds."""
    conn.execute(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (1, :f, 'v1')"), {"f": V1})
    conn.execute(text("INSERT INTO streets (id, code, name) VALUES (1, '430602001', '测试街道')"))
    conn.execute(text("INSERT INTO communities (id, code, name, street_id) VALUES (1, :c, '测试社区', 1)"),
                 {"c": COMMUNITY})
    cells = [(c, r) for r in range(ROWS) for c in range(COLS)]
    grid_geoms = ewkb_hex(as_multipolygons(_wgs(cell(c, r) for c, r in cells)))
    for i, ((c, r), g) in enumerate(zip(cells, grid_geoms, strict=True), start=1):
        conn.execute(text("INSERT INTO grids (id, code, name, kind, community_id) "
                          "VALUES (:i, :code, :name, 'comprehensive', 1)"),
                     {"i": i, "code": grid_code(c, r), "name": f"第{i}网格"})
        conn.execute(text("INSERT INTO grid_boundaries (id, grid_id, version_id, valid_from, geom) "
                          "VALUES (:i, :i, 1, :f, CAST(:g AS geometry))"), {"i": i, "f": V1, "g": g})
    halves = [(c, r, east) for c, r in cells for east in (False, True)]
    micro_geoms = ewkb_hex(as_multipolygons(_wgs(half(c, r, e) for c, r, e in halves)))
    for i, ((c, r, east), g) in enumerate(zip(halves, micro_geoms, strict=True), start=1):
        conn.execute(text("INSERT INTO micro_grids (id, code, name, grid_id) VALUES (:i, :code, :name, :gid)"),
                     {"i": i, "code": grid_code(c, r) + ("02" if east else "01"), "name": f"微网格{i}",
                      "gid": r * COLS + c + 1})
        conn.execute(text("INSERT INTO micro_grid_boundaries (id, micro_grid_id, version_id, valid_from, geom) "
                          "VALUES (:i, :i, 1, :f, CAST(:g AS geometry))"), {"i": i, "f": V1, "g": g})
    comp = ewkb_hex(as_multipolygons(_wgs(geom for _, geom, _, _ in CASES.values())))
    for cid, g in zip(CASES, comp, strict=True):
        conn.execute(text("INSERT INTO compounds (id, name, kind, has_property_management, has_owners_committee, "
                          "community_id, geom) VALUES (:i, :n, 'commercial', true, false, 1, CAST(:g AS geometry))"),
                     {"i": cid, "n": CASES[cid][0], "g": g})


@pytest.fixture(scope="module")
def hand_engine():
    """A fresh migrated database holding the hand-built layout (module-wide; tests roll their writes back)."""
    url = _create_database("gridatlas_classify")
    db.migrate(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        _load_layout(conn)
    yield engine
    engine.dispose()
    _drop_database(url)


@pytest.fixture
def hand_conn(hand_engine):
    """A connection inside a transaction rolled back after the test."""
    with hand_engine.connect() as conn:
        trans = conn.begin()
        yield conn
        trans.rollback()


@pytest.fixture(scope="module")
def results(hand_engine):
    """Both implementations' results at both levels on the hand-built layout."""
    with hand_engine.connect() as conn:
        return {(impl, level): gc.compute(conn, level, implementation=impl)
                for impl in gc.IMPLEMENTATIONS for level in gc.LEVELS}


@pytest.mark.parametrize("impl", sorted(gc.IMPLEMENTATIONS))
@pytest.mark.parametrize("level", sorted(gc.LEVELS))
def test_every_hand_built_case_gets_its_class(results, impl, level):
    got = results[(impl, level)].compounds["class"]
    expected = {cid: (case[2] if level == "grid" else case[3]) for cid, case in CASES.items()}
    wrong = {cid: (CASES[cid][0], expected[cid], got[cid]) for cid in CASES if got[cid] != expected[cid]}
    assert not wrong, wrong


@pytest.mark.parametrize("impl", sorted(gc.IMPLEMENTATIONS))
def test_measures_in_metres(results, impl):
    c = results[(impl, "grid")].compounds
    o = results[(impl, "grid")].overlaps
    # Equal to its grid: everything is exact.
    assert c.loc[1, "area_m2"] == pytest.approx(40_000, abs=0.5)
    assert c.loc[1, ["coverage", "fill", "iou"]].tolist() == pytest.approx([1, 1, 1], abs=1e-6)
    assert c.loc[1, "hausdorff_m"] == pytest.approx(0, abs=0.01)
    assert c.loc[1, "main_code"] == grid_code(0, 0)
    # Shifted 2 m: a 2 m strip into the next grid is a sliver, the Hausdorff distance is the shift.
    assert c.loc[2, "hausdorff_m"] == pytest.approx(2.0, abs=0.01)
    assert c.loc[2, "iou"] == pytest.approx(198 / 202, abs=1e-4)
    strip = o[(o.compound_id == 2) & (o.unit_code == grid_code(2, 0))].iloc[0]
    assert strip.overlap_m2 == pytest.approx(400, abs=0.5) and strip.width_m == pytest.approx(2 * 400 / 404, abs=0.01)
    assert not strip.significant
    # The hole is not part of the area; the multipolygon's parts add up.
    assert c.loc[3, "area_m2"] == pytest.approx(100 * 100 - 20 * 20, abs=0.5)
    assert c.loc[3, "fill"] == pytest.approx(9600 / 40_000, abs=1e-4)
    assert c.loc[4, "area_m2"] == pytest.approx(2 * 3600, abs=0.5)
    # Two whole grids and a 0.5 m² sliver into a third: three overlaps, two significant, two contained.
    six = o[o.compound_id == 6].set_index("unit_code")
    assert len(six) == 3 and six["significant"].sum() == 2 and six["contained"].sum() == 2
    assert six.loc[grid_code(3, 2), "overlap_m2"] == pytest.approx(0.5, abs=0.01)
    assert c.loc[6, ["n_units", "n_contained"]].tolist() == [2, 2]
    assert c.loc[7, ["n_units", "hausdorff_m"]].tolist() == [1, pytest.approx(1.0, abs=0.01)]
    # The straddler is split half and half; ties go to the smaller code.
    assert c.loc[8, "coverage"] == pytest.approx(0.5, abs=1e-4) and c.loc[8, "main_code"] == grid_code(0, 2)
    assert c.loc[8, "n_units"] == 2 and c.loc[8, "n_contained"] == 0
    # No grid: no main unit, no ratios.
    assert pd.isna(c.loc[9, "main_code"]) and c.loc[9, "coverage"] == 0 and c.loc[9, "n_units"] == 0
    # Redrawn 1–3 m off: the Hausdorff distance stays within the jitter.
    assert 1.0 <= c.loc[10, "hausdorff_m"] <= 3.0 and c.loc[10, "iou"] > 0.96
    assert c.loc[11, "coverage"] == pytest.approx(0.5, abs=1e-4) and c.loc[11, "n_units"] == 1
    assert c.loc[13, "hausdorff_m"] == pytest.approx(80, abs=0.01)


def test_implementations_agree(results):
    for level in gc.LEVELS:
        a = results[("sql", level)]
        b = results[("shapely", level)]
        assert a.compounds["class"].equals(b.compounds["class"])
        cols = ["area_m2", "main_overlap_m2", "coverage", "fill", "iou", "hausdorff_m"]
        np.testing.assert_allclose(a.compounds[cols].to_numpy(float), b.compounds[cols].to_numpy(float),
                                   rtol=1e-6, atol=1e-4)
        assert (a.compounds["main_code"].fillna("") == b.compounds["main_code"].fillna("")).all()
        key = ["compound_id", "unit_id"]
        oa, ob = a.overlaps.sort_values(key).reset_index(drop=True), b.overlaps.sort_values(key).reset_index(drop=True)
        assert oa[key].equals(ob[key])
        np.testing.assert_allclose(oa[["overlap_m2", "width_m"]].to_numpy(float),
                                   ob[["overlap_m2", "width_m"]].to_numpy(float), rtol=1e-6, atol=1e-4)


def test_sensitivity_names_the_fragile_verdicts(results):
    r = results[("shapely", "grid")]
    report = {e["threshold"]: e for e in r.sensitivity}
    assert set(report) == set(gc.THRESHOLDS)
    within = report["within_share_min"]
    assert within["plus"]["value"] == pytest.approx(0.9 * 1.05)
    assert within["plus"]["transitions"].get("smaller→straddling", 0) >= 1
    assert "within_share_min" in r.compounds.loc[14, "fragile"]
    # Verdicts well inside every tolerance are not fragile.
    for cid in (1, 2, 5, 9, 10):
        assert r.compounds.loc[cid, "fragile"] == [], (cid, r.compounds.loc[cid, "fragile"])
    # The totals agree with a reclassification done here.
    for name in gc.THRESHOLDS:
        moved = r.rules.model_copy(update={name: getattr(r.rules, name) * 1.05})
        again = gc.assign_classes(r.compounds, r.overlaps, moved)["class"]
        assert int((again != r.compounds["class"]).sum()) == report[name]["plus"]["changed"]


def test_defaults_tolerate_a_redraw_of_one_to_three_metres():
    """A grid redrawn 1–3 m off in any direction stays `same` at default thresholds ±5%, for grid and micro sizes."""
    rules = gc.ClassifyRules()
    for size in (60.0, 120.0, 220.0, 400.0):
        for dx, dy in ((1, 0), (3, 0), (3, 3), (-2, 2.5)):
            unit = box(X0, Y0, X0 + size, Y0 + size)
            comp = shapely.affinity.translate(unit, dx, dy)
            neighbours = [box(X0 + size, Y0, X0 + 2 * size, Y0 + size), box(X0, Y0 + size, X0 + size, Y0 + 2 * size),
                          box(X0 - size, Y0, X0, Y0 + size), box(X0, Y0 - size, X0 + size, Y0)]
            units = gpd.GeoDataFrame({"id": range(1, 6), "code": [f"u{i}" for i in range(1, 6)]},
                                     geometry=[unit, *neighbours], crs=EPSG)
            comps = gpd.GeoDataFrame({"id": [1]}, geometry=[comp], crs=EPSG)
            for factor in (0.95, 1.0, 1.05):
                moved = rules.model_copy(update={t: getattr(rules, t) * factor for t in gc.THRESHOLDS})
                got = gc.measure_frames(comps, units, rules=moved, epsg=EPSG).compounds.loc[1, "class"]
                assert got == "same", (size, dx, dy, factor)


def test_invalid_compound_is_repaired_or_refused():
    units = gpd.GeoDataFrame({"id": [1], "code": ["g1"]}, geometry=[cell(0, 0)], crs=EPSG)
    bowtie = Polygon([(X0 + 20, Y0 + 20), (X0 + 80, Y0 + 80), (X0 + 80, Y0 + 20), (X0 + 20, Y0 + 80)])
    comps = gpd.GeoDataFrame({"id": [7]}, geometry=[bowtie], crs=EPSG)
    result = gc.measure_frames(comps, units, epsg=EPSG)
    assert result.repaired == [(7, "Self-intersection[500050 3250050]")]
    assert bool(result.compounds.loc[7, "repaired"]) and result.compounds.loc[7, "class"] == "smaller"
    assert result.compounds.loc[7, "area_m2"] == pytest.approx(2 * 900, abs=0.01)  # two triangles of 30 × 60 / 2

    with pytest.raises(gc.ClassifyError, match=r"compound 7: Self-intersection.*fix or remove"):
        gc.measure_frames(comps, units, epsg=EPSG, on_invalid="refuse")

    flat = Polygon([(X0, Y0), (X0 + 10, Y0), (X0 + 20, Y0), (X0, Y0)])
    comps = gpd.GeoDataFrame({"id": [7, 8]}, geometry=[bowtie, flat], crs=EPSG)
    with pytest.raises(gc.ClassifyError, match="compound 8: .*make_valid leaves no area") as info:
        gc.measure_frames(comps, units, epsg=EPSG)
    assert [i for i, _ in info.value.problems] == [8]


def test_explanation_in_words_and_numbers(results, hand_conn):
    run = gc.ensure_classification(hand_conn, "grid")
    vid = run["version"]["id"]
    rows = gc.read_results(hand_conn, vid, "grid").set_index("compound_id")
    overlaps = gc.read_overlaps(hand_conn, vid, "grid")
    row = rows.loc[7].to_dict() | {"compound_id": 7}
    words = gc.explain(row, overlaps[overlaps.compound_id == 7], gc.ClassifyRules())
    assert "同等" in words["zh"] and grid_code(4, 0) in words["zh"] and "0.50 m²" in words["zh"]
    assert "sliver tolerance and ignored" in words["en"] and "IoU 1.000" in words["en"]
    row = rows.loc[8].to_dict() | {"compound_id": 8}
    words = gc.explain(row, overlaps[overlaps.compound_id == 8], gc.ClassifyRules())
    assert "跨界" in words["zh"] and "50.0%" in words["zh"] and "straddling" in words["en"]
    detail = gc.fragile_detail(rows.loc[14].to_dict() | {"compound_id": 14}, overlaps[overlaps.compound_id == 14],
                               gc.ClassifyRules())
    within = next(d for d in detail if d["threshold"] == "within_share_min")
    assert within["plus"]["class"] == "straddling" and within["minus"]["class"] == "smaller"


def test_results_are_stored_per_version_and_recomputed_when_inputs_change(hand_conn):
    conn = hand_conn
    first = gc.ensure_classification(conn, "grid")
    assert first["recomputed"] and first["version"]["id"] == 1 and first["n_compounds"] == len(CASES)
    assert not gc.ensure_classification(conn, "grid")["recomputed"]

    # Redraw grid (0,0) from 2025-06-01 as a 170 m square in its south-west corner: a new boundary version.
    v2 = dt.datetime(2025, 6, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    conn.execute(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (2, :f, 'v2')"), {"f": v2})
    conn.execute(text("UPDATE grid_boundaries SET valid_to = :f WHERE grid_id = 1"), {"f": v2})
    small = ewkb_hex(as_multipolygons(_wgs([box(X0, Y0, X0 + 170, Y0 + 170)])))[0]
    conn.execute(text("INSERT INTO grid_boundaries (id, grid_id, version_id, valid_from, geom) "
                      "VALUES (1000, 1, 2, :f, CAST(:g AS geometry))"), {"f": v2, "g": small})
    now = gc.ensure_classification(conn, "grid")
    assert now["recomputed"] and now["version"]["id"] == 2
    current = gc.read_results(conn, 2, "grid").set_index("compound_id")
    assert current.loc[1, "class"] == "larger"  # contains the shrunk grid, 28% of it lies in no grid
    assert current.loc[1, "coverage"] == pytest.approx(170 * 170 / 40_000, abs=1e-4)

    past = gc.ensure_classification(conn, "grid", at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    assert not past["recomputed"] and past["version"]["id"] == 1
    assert gc.read_results(conn, 1, "grid").set_index("compound_id").loc[1, "class"] == "same"
    assert conn.execute(text("SELECT count(*) FROM classification_runs WHERE level = 'grid'")).scalar() == 2

    # A compound redrawn in place changes the inputs: the run is recomputed.
    moved = ewkb_hex(as_multipolygons(_wgs([box(X0 + 10, Y0 + 10, X0 + 50, Y0 + 50)])))[0]
    conn.execute(text("UPDATE compounds SET geom = CAST(:g AS geometry) WHERE id = 5"), {"g": moved})
    again = gc.ensure_classification(conn, "grid")
    assert again["recomputed"]
    assert gc.read_results(conn, 2, "grid").set_index("compound_id").loc[5, "class"] == "smaller"
    # New thresholds mean new results.
    assert gc.ensure_classification(conn, "grid", rules=gc.ClassifyRules(within_share_min=0.95))["recomputed"]
    assert gc.read_results(conn, 2, "grid").set_index("compound_id").loc[14, "class"] == "straddling"


def test_no_version_in_force_is_a_clear_error(hand_conn):
    with pytest.raises(gc.ClassifyError, match="no boundary version is in force at 2000-01-01"):
        gc.ensure_classification(hand_conn, "grid", at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(gc.ClassifyError, match="unknown level"):
        gc.compute(hand_conn, "building")


def test_stored_rows_round_trip(hand_conn, results):
    gc.ensure_classification(hand_conn, "micro_grid", implementation="sql")
    rows = gc.read_results(hand_conn, 1, "micro_grid").set_index("compound_id")
    expected = results[("sql", "micro_grid")].compounds
    assert rows["class"].to_dict() == expected["class"].to_dict()
    assert rows.loc[14, "fragile"] == expected.loc[14, "fragile"]
    assert rows.loc[12, "main_code"] == grid_code(3, 2) + "01" and rows.loc[12, "community_code"] == COMMUNITY
    only = gc.read_results(hand_conn, 1, "micro_grid", jurisdiction=grid_code(0, 0))
    assert set(only["compound_id"]) == {1}
    s = gc.summary(rows.reset_index())
    assert s["counts"]["total"] == len(CASES) and s["streets"][0]["communities"][0]["code"] == COMMUNITY


# --------------------------------------------------------------------------------------------------------------
# The synthetic district: the generator plants a type per compound; the classifier must recover every one.

@pytest.mark.parametrize("impl", sorted(gc.IMPLEMENTATIONS))
@pytest.mark.parametrize("level,column", [("grid", "planted_type"), ("micro_grid", "planted_micro_type")])
def test_planted_types_are_recovered(district, db_session, impl, level, column):
    planted = district.compounds.assign(id=district.compounds["ref"].astype(int)).set_index("id")[column]
    got = gc.compute(db_session.connection(), level, implementation=impl).compounds
    joined = pd.DataFrame({"planted": planted, "got": got["class"]})
    wrong = joined[joined["planted"] != joined["got"]]
    detail = got.loc[wrong.index, ["coverage", "fill", "iou", "hausdorff_m", "n_units", "n_contained"]]
    assert wrong.empty, f"{len(wrong)} of {len(joined)} differ:\n{wrong.join(detail).to_string()}"


@pytest.mark.parametrize("level,column", [("grid", "planted_type"), ("micro_grid", "planted_micro_type")])
def test_planted_types_are_recovered_in_memory(district, level, column):
    """The same check on the generator's frames directly (no database): the shapely path alone."""
    compounds = district.compounds.assign(id=district.compounds["ref"].astype(int))
    units = (district.grids if level == "grid" else district.micro_grids).reset_index(drop=True)
    units = units.assign(id=np.arange(1, len(units) + 1))
    got = gc.measure_frames(compounds[["id", "geometry"]], units[["id", "code", "geometry"]], level).compounds
    planted = compounds.set_index("id")[column]
    assert set(planted) == {"same", "larger", "smaller", "straddling"}
    assert (got["class"].reindex(planted.index) == planted).all(), pd.crosstab(planted, got["class"])


def test_cli_prints_the_summary_and_writes_the_table(hand_engine, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli.classify
    from cli import app

    monkeypatch.setattr(cli.classify, "engine", lambda: hand_engine)
    try:
        result = CliRunner().invoke(app, ["classify", "--out", str(tmp_path / "cls"), "--level", "both"],
                                    env={"COLUMNS": "160"})
        assert result.exit_code == 0, result.output
        assert "测试社区" in result.output and "合计" in result.output and "within_share_min" in result.output
        grid = (tmp_path / "cls-grid.csv").read_text(encoding="utf-8-sig").splitlines()
        assert len(grid) == 1 + len(CASES) and grid[0].startswith("compound_id,name,")
        micro = (tmp_path / "cls-micro_grid.csv").read_text(encoding="utf-8-sig")
        assert f"12,{CASES[12][0]}," in micro and ",same,同等," in micro
        result = CliRunner().invoke(app, ["classify", "--level", "grid", "--format", "json", "--out",
                                          str(tmp_path / "cls")])
        assert result.exit_code == 0 and "stored results up to date" in result.output
        body = json.loads((tmp_path / "cls-grid.json").read_text(encoding="utf-8"))
        assert body["count"] == len(CASES) and body["thresholds"] == gc.get_rules().thresholds()
        assert CliRunner().invoke(app, ["classify", "--level", "street"]).exit_code != 0
    finally:
        with hand_engine.begin() as conn:
            conn.execute(text("DELETE FROM classification_runs"))
