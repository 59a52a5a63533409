"""Synthetic district generator (demo/, entry point demo.synth): structure, exact tilings, planted types, staff,
incidents."""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from demo.synth import (
    DISTRICT_CODE,
    INCIDENT_CLASSES,
    INCIDENT_PERIOD_END,
    LAYERS,
    METRIC_EPSG,
    District,
    generate_district,
)

SCALE = 0.05
TOL_M2 = 1.0

REQUIRED = {
    "streets": ["code", "name", "geometry"],
    "communities": ["code", "name", "street_code", "geometry"],
    "grids": ["code", "name", "kind", "dedicated_type", "community_code", "geometry"],
    "micro_grids": ["code", "name", "grid_code", "geometry"],
    "compounds": [
        "ref", "name", "kind", "has_property_management", "has_owners_committee", "community_code",
        "planted_type", "planted_micro_type", "geometry",
    ],
    "buildings": ["ref", "code", "name", "community_code", "compound_ref", "floors", "use", "geometry"],
    "units": ["building_ref", "number", "households", "population"],
    "people": ["ref", "name", "phone", "phone_public", "party_member", "home_building_ref"],
    "assignments": [
        "person_ref", "role", "target_type", "target_code", "target_building_ref", "target_unit_number",
        "households", "valid_from",
    ],
    "incidents": [
        "ref", "reported_at", "class_code", "source", "state", "department", "description", "reporter",
        "due_at", "closed_at", "geometry",
    ],
}


@pytest.fixture(scope="module")
def district() -> District:
    return generate_district(SCALE, seed=0)


@pytest.fixture(scope="module")
def m(district):
    """Every layer in metres, positional index."""
    return {
        k: (v.to_crs(METRIC_EPSG) if isinstance(v, gpd.GeoDataFrame) else v).reset_index(drop=True)
        for k, v in district.layers().items()
    }


def _classify(compounds: gpd.GeoDataFrame, zones: gpd.GeoDataFrame, contain: float = 0.98) -> pd.Series:
    """Straightforward overlap check: same / larger / smaller / straddling (else 'unclassified'), by compound ref.

    "Contains" allows 2 % for the ≤ 1.5 m resurvey noise on compounds drawn as their grid."""
    j = gpd.sjoin(compounds[["ref", "geometry"]], zones[["geometry"]], predicate="intersects")
    cg = compounds.geometry.values[j.index.to_numpy()]
    zg = zones.geometry.values[j["index_right"].to_numpy()]
    df = pd.DataFrame(
        {
            "ref": j["ref"].to_numpy(),
            "inter": shapely.area(shapely.intersection(cg, zg)),
            "ca": shapely.area(cg),
            "za": shapely.area(zg),
        }
    )
    df = df[df["inter"] > TOL_M2]
    df["iou"] = df["inter"] / (df["ca"] + df["za"] - df["inter"])
    df["holds_zone"] = df["inter"] >= contain * df["za"]
    df["in_zone_beyond"] = (df["inter"] >= contain * df["ca"]) & (df["za"] - df["inter"] > TOL_M2)
    df["in_zone"] = df["inter"] >= contain * df["ca"]
    g = df.groupby("ref")
    r = pd.DataFrame(
        {
            "n": g.size(),
            "iou": g["iou"].max(),
            "holds": g["holds_zone"].sum(),
            "inside_beyond": g["in_zone_beyond"].sum(),
            "inside": g["in_zone"].sum(),
        }
    )
    out = np.select(
        [
            r["iou"] > 0.95,
            (r["holds"] >= 1) & (r["n"] >= 2),
            r["inside_beyond"] >= 1,
            (r["n"] >= 2) & (r["holds"] == 0) & (r["inside"] == 0),
        ],
        ["same", "larger", "smaller", "straddling"],
        "unclassified",
    )
    return pd.Series(out, index=r.index).reindex(compounds["ref"]).fillna("unclassified")


def _assert_tiles(children: gpd.GeoDataFrame, parents: gpd.GeoDataFrame, key: str) -> None:
    """Children grouped by `key` cover their parent (by code) with no gap or overlap above 1 m²."""
    assert set(children[key]) == set(parents["code"])
    union = children.dissolve(key)
    par = parents.set_index("code").geometry.reindex(union.index)
    gap = shapely.area(shapely.symmetric_difference(union.geometry.values, par.values))
    assert gap.max() < TOL_M2, f"gap/excess {gap.max():.3f} m² in {union.index[int(np.argmax(gap))]}"
    j = gpd.sjoin(children[[key, "geometry"]], children[[key, "geometry"]], predicate="intersects")
    j = j[(j.index < j["index_right"]) & (j[f"{key}_left"] == j[f"{key}_right"])]
    geoms = children.geometry.values
    ov = shapely.area(shapely.intersection(geoms[j.index], geoms[j["index_right"]]))
    total = pd.Series(ov).groupby(j[f"{key}_left"].to_numpy()).sum()
    assert total.empty or total.max() < TOL_M2, f"overlap {total.max():.3f} m²"


def _in_exactly_one(items: gpd.GeoDataFrame, zones: gpd.GeoDataFrame) -> None:
    j = gpd.sjoin(items[["geometry"]], zones[["geometry"]], predicate="intersects")
    a = shapely.area(shapely.intersection(items.geometry.values[j.index], zones.geometry.values[j["index_right"]]))
    j = j.assign(a=a)[a > 1e-3]
    per = j.groupby(level=0)["a"].agg(["size", "max"]).reindex(items.index)
    assert per["size"].notna().all(), "an item lies in no zone"
    assert (per["size"] == 1).all(), f"{int((per['size'] > 1).sum())} items cut by zone lines"
    assert np.allclose(per["max"], items.area, atol=1e-3)


# ---- structure ------------------------------------------------------------------------------


def test_layers_columns_and_crs(district):
    assert tuple(district.layers()) == LAYERS
    assert list(district.counts()) == list(LAYERS)
    for name, cols in REQUIRED.items():
        df = getattr(district, name)
        assert len(df) > 0, name
        assert [c for c in cols if c not in df.columns] == [], name
        if isinstance(df, gpd.GeoDataFrame):
            assert df.crs.to_epsg() == 4326
            want = "Point" if name == "incidents" else "MultiPolygon"
            assert set(df.geom_type) == {want}, name
            assert shapely.is_valid(df.geometry.values).all(), name
        else:
            assert "geometry" not in df.columns
    assert (district.compounds.to_crs(METRIC_EPSG).area > 2000).all()
    assert district.buildings["compound_ref"].dtype == "Int64"
    assert district.people["home_building_ref"].dtype == "Int64"
    for col in ("target_building_ref", "target_unit_number", "households"):
        assert district.assignments[col].dtype == "Int64"


def test_determinism_and_fingerprint(district):
    again = generate_district(SCALE, seed=0)
    assert again.fingerprint() == district.fingerprint()
    assert again.counts() == district.counts()
    assert generate_district(SCALE, seed=1).fingerprint() != district.fingerprint()
    # the fingerprint sees a single changed value
    again.buildings.loc[0, "floors"] += 1
    assert again.fingerprint() != district.fingerprint()


def test_counts_follow_scale(district, m):
    grids = district.grids
    comp = grids[grids.kind == "comprehensive"]
    assert len(comp) == round(675 * SCALE)
    assert abs(len(district.compounds) - round(977 * SCALE)) <= 3
    assert len(district.incidents) == round(12000 * SCALE)
    assert len(district.streets) >= 2
    per_comm = comp.groupby("community_code").size()
    assert per_comm.between(2, 7).all() and set(per_comm.index) == set(district.communities.code)
    micro = district.micro_grids.groupby("grid_code").size()
    assert micro[comp.code].between(2, 4).all()
    assert (micro[grids[grids.kind == "dedicated"].code] == 1).all()
    ded = grids[grids.kind == "dedicated"]
    assert ded.dedicated_type.isin(["school", "hospital", "company", "park", "office"]).all()
    assert comp.dedicated_type.isna().all()
    assert np.median(m["grids"][m["grids"].kind == "comprehensive"].area) == pytest.approx(47000, rel=0.35)


def test_codes_and_names(district):
    d = district
    assert d.streets.code.str.fullmatch(DISTRICT_CODE + r"\d{3}").all()
    c = d.communities
    assert c.code.str.fullmatch(r"\d{12}").all() and (c.code.str[:9] == c.street_code).all()
    g = d.grids
    assert g.code.str.fullmatch(r"\d{15}").all() and (g.code.str[:12] == g.community_code).all()
    mg = d.micro_grids
    assert mg.code.str.fullmatch(r"\d{17}").all() and (mg.code.str[:15] == mg.grid_code).all()
    for df in (d.streets, c, g, mg):
        assert df.code.is_unique
    b = d.buildings
    assert b.code.str.fullmatch(r"\d{5}").all()
    assert not b.duplicated(["community_code", "code"]).any()
    assert b.name.str.fullmatch(r"\d+(栋|号楼)").all()
    assert sorted(d.compounds.ref) == list(range(1, len(d.compounds) + 1))
    assert d.compounds.name.is_unique
    assert d.streets.name.str.endswith("街道").all() and c.name.str.endswith("社区").all()
    assert d.people.phone.str.fullmatch(r"1[358]\d{9}").all()
    assert d.people.name.map(lambda s: bool(re.fullmatch(r"[\u4e00-\u9fff]{2,3}", s))).all()
    assert set(d.compounds.community_code) <= set(c.code)
    assert set(b.community_code) <= set(c.code)


def test_grids_numbered_north_to_south_then_west_to_east(m):
    g = m["grids"].assign(x=lambda df: df.centroid.x, y=lambda df: df.centroid.y)
    for _, grp in g.groupby("community_code"):
        grp = grp.sort_values("code")
        row = np.floor((grp.y.max() - grp.y) / 200.0)
        key = list(zip(row, grp.x, strict=True))
        assert key == sorted(key)


# ---- partitions --------------------------------------------------------------------------------


def test_grids_tile_their_community(m):
    _assert_tiles(m["grids"], m["communities"], "community_code")


def test_micro_grids_tile_their_grid(m):
    _assert_tiles(m["micro_grids"], m["grids"], "grid_code")


def test_communities_tile_streets(m):
    _assert_tiles(m["communities"], m["streets"], "street_code")


def test_partitions_share_edges_exactly(m):
    for name in ("streets", "communities", "grids", "micro_grids"):
        assert shapely.coverage_is_valid(m[name].geometry.values), name


def test_every_building_in_one_grid_and_one_micro_grid(m):
    _in_exactly_one(m["buildings"], m["grids"])
    _in_exactly_one(m["buildings"], m["micro_grids"])


def test_compound_buildings_stand_inside_their_compound(m):
    b = m["buildings"][m["buildings"].compound_ref.notna()]
    comp = m["compounds"].set_index("ref").geometry.reindex(b.compound_ref.astype(int)).values
    inside = shapely.area(shapely.intersection(b.geometry.values, comp)) / b.area.to_numpy()
    assert inside.min() > 0.999
    assert not m["buildings"].sindex.query(m["buildings"].geometry, predicate="overlaps").size


# ---- compound versus grid ----------------------------------------------------------------------


def test_all_planted_types_present(district):
    assert set(district.compounds.planted_type) == {"same", "larger", "smaller", "straddling"}
    share_same = (district.compounds.planted_type == "same").mean()
    assert share_same == pytest.approx(247 / 977, abs=0.05)


def test_planted_types_match_overlap_check(m):
    comp_grids = m["grids"][m["grids"].kind == "comprehensive"].reset_index(drop=True)
    got = _classify(m["compounds"], comp_grids)
    want = m["compounds"].set_index("ref").planted_type
    assert (got == want.reindex(got.index)).all(), pd.crosstab(want.reindex(got.index), got)


def test_planted_micro_types_match_overlap_check(m):
    got = _classify(m["compounds"], m["micro_grids"])
    want = m["compounds"].set_index("ref").planted_micro_type
    assert (got == want.reindex(got.index)).all(), pd.crosstab(want.reindex(got.index), got)


def test_a_compound_alone_in_its_micro_grid_keeps_its_wall_off_the_line(m):
    """Planted smaller than a micro-grid it has to itself, a compound's wall stays farther from the micro-grid's
    line than the classifier's 'same' tolerance (at its upper sensitivity step), so it is never taken for 'same'."""
    from demo.compounds import min_distinct_setback
    from geo.classify.classification import get_rules

    rules = get_rules()
    setback = min_distinct_setback()
    assert setback >= rules.same_hausdorff_m * (1 + rules.sensitivity_step)
    comp, micro = m["compounds"], m["micro_grids"]
    ci, mi = shapely.STRtree(micro.geometry.values).query(comp.geometry.values, predicate="intersects")
    land = shapely.area(shapely.intersection(comp.geometry.values[ci], micro.geometry.values[mi])) > TOL_M2
    ci, mi = ci[land], mi[land]
    units_of = np.bincount(ci, minlength=len(comp))
    compounds_in = np.bincount(mi, minlength=len(micro))
    alone = (units_of[ci] == 1) & (compounds_in[mi] == 1) & (comp.planted_micro_type.to_numpy()[ci] == "smaller")
    assert alone.sum() >= 3, "the test district should hold compounds alone in their micro-grid"
    gap = shapely.distance(comp.geometry.values[ci[alone]], shapely.boundary(micro.geometry.values[mi[alone]]))
    assert gap.min() >= setback - 0.05, np.sort(gap)[:5]


# ---- households and staff ----------------------------------------------------------------------


def test_units_and_households(district, m):
    u = district.units
    b = district.buildings
    res = b[b.use == "residential"]
    per_b = u.groupby("building_ref").size()
    assert set(per_b.index) == set(res.ref)
    assert per_b.between(2, 6).all()
    assert u.households.between(12, 36).all()
    ratio = u.population / u.households
    assert ratio.between(2.2 - 0.05, 3.0 + 0.05).all()
    # households per comprehensive grid, buildings located by footprint
    bm = m["buildings"]
    j = gpd.sjoin(bm[["ref", "geometry"]], m["grids"][["code", "kind", "geometry"]], predicate="within")
    hh = j.assign(hh=j.ref.map(u.groupby("building_ref").households.sum()).fillna(0)).groupby("code").hh.sum()
    comp = m["grids"][m["grids"].kind == "comprehensive"].code
    hh = hh.reindex(comp).fillna(0)
    in_band = hh.between(300, 500)
    assert in_band.mean() >= 0.8
    assert (~in_band).any()


def test_staff_roles_gaps_and_stewards(district):
    a, p, g = district.assignments, district.people, district.grids
    assert set(a.role) == {
        "grid_chief", "grid_worker_fulltime", "grid_worker_parttime", "volunteer", "building_head", "unit_head",
        "steward", "seconded_cadre",
    }
    assert set(a.person_ref) == set(p.ref)
    comp = g[g.kind == "comprehensive"].code
    chief = a[a.role == "grid_chief"]
    assert set(chief.target_code) == set(g.code)
    ft = a[a.role == "grid_worker_fulltime"].groupby("target_code").size()
    assert ft.max() == 1 and 0 < len(set(comp) - set(ft.index)) <= 0.2 * len(comp)
    assert a[a.role == "grid_worker_parttime"].groupby("target_code").size().max() <= 3
    vol = a[a.role == "volunteer"]
    assert (vol.target_type == "micro_grid").all() and vol.target_code.isin(district.micro_grids.code).all()
    res = district.buildings[district.buildings.use == "residential"].ref
    bh = a[a.role == "building_head"].target_building_ref
    assert bh.isin(res).all() and bh.is_unique and 0 < len(set(res) - set(bh)) <= 0.2 * len(res)
    uh = a[a.role == "unit_head"]
    assert not uh.duplicated(["target_building_ref", "target_unit_number"]).any()
    assert len(uh) < len(district.units)
    st = a[a.role == "steward"]
    assert (st.target_type == "unit").all() and (st.households > 0).all()
    load = st.groupby("person_ref").households.sum()
    assert (load > 15).any() and (load < 5).any()
    assert load.between(5, 15).mean() > 0.85
    served = st.groupby(["target_building_ref", "target_unit_number"]).households.sum()
    units = district.units.set_index(["building_ref", "number"]).households
    assert (served <= units.reindex(served.index).to_numpy()).all()
    assert served.sum() < units.sum()  # some households have no steward
    assert p.home_building_ref.dropna().isin(district.buildings.ref).all()


# ---- incidents ---------------------------------------------------------------------------------


def test_incidents(district, m):
    inc = district.incidents
    district_area = shapely.union_all(m["streets"].geometry.values)
    assert shapely.contains(district_area, m["incidents"].geometry.values).all()
    start = INCIDENT_PERIOD_END - pd.Timedelta(days=365)
    assert str(inc.reported_at.dt.tz) == "UTC"
    assert inc.reported_at.min() >= start and inc.reported_at.max() < INCIDENT_PERIOD_END
    assert inc.reported_at.is_monotonic_increasing
    assert set(inc.class_code) <= {c.code for c in INCIDENT_CLASSES}
    top2 = set(inc.class_code.value_counts().index[:2])
    assert top2 == {"A", "E"}
    assert inc.source.isin(["patrol", "public", "hotline_12345", "video"]).all()
    done = inc.state.isin(["closed", "evaluated"])
    assert done.mean() > 0.7
    assert inc.closed_at.notna().eq(done).all()
    assert (inc.due_at.dropna() > inc.reported_at[inc.due_at.notna()]).all()
    assert (inc.closed_at.dropna() > inc.reported_at[inc.closed_at.notna()]).all()
    assert inc.due_at[inc.state.isin(["rejected", "collected", "registered"])].isna().all()


def test_to_gpkg_round_trip(district, tmp_path):
    path = tmp_path / "district.gpkg"
    district.to_gpkg(path)
    layers = dict(pyogrio.list_layers(path))
    assert sorted(layers) == sorted(LAYERS)
    for name, n in district.counts().items():
        assert pyogrio.read_info(path, layer=name)["features"] == n


def test_scale_one_magnitudes():
    """Scale 1 reproduces seed 001's counts and the real district's area magnitudes (takes a few seconds)."""
    d = generate_district(1.0, seed=0)
    g = d.grids.to_crs(METRIC_EPSG)
    comp = g[g.kind == "comprehensive"]
    assert len(comp) == 675 and len(d.compounds) == 977
    assert (d.compounds.planted_type == "same").sum() == 247
    assert len(d.micro_grids) == pytest.approx(1819, rel=0.1)
    assert len(d.incidents) == 12000
    assert 8 <= len(d.streets) <= 10
    assert np.median(comp.area) == pytest.approx(47000, rel=0.2)
    assert np.median(d.communities.to_crs(METRIC_EPSG).area) == pytest.approx(650000, rel=0.3)
    ca = d.compounds.to_crs(METRIC_EPSG)
    assert np.median(ca.area) == pytest.approx(30000, rel=0.25)
    assert (shapely.get_num_geometries(ca.geometry.values) > 1).any()
    assert (shapely.get_num_interior_rings(shapely.get_geometry(ca.geometry.values, 0)) > 0).any()
    assert np.median(comp.groupby("community_code").size()) in (5, 5.5, 6)
