"""Compound versus grid (小区与网格对应关系): measure every compound against its grids or micro-grids and classify it.

Seed 001 sorted compounds into three types against their grid: the same size (同等), larger (大于网格: one
compound spans several grids) and smaller (小于网格: one grid holds several compounds). Real boundaries are drawn
by different people at different times, so the comparison works within tolerances, and compounds that fit none of
the three are reported as such (跨界 straddling, 未入格 outside) instead of being forced into a type.

Measures (metres, in the UTM zone of the data), per compound C against the units U_i (grids or micro-grids) of the
boundary version in force:

- ``area_m2``: area of C; for every U_i it meets, ``overlap_m2`` = area(C ∩ U_i) and ``width_m`` = 2·area/perimeter
  of C ∩ U_i (the mean width of the overlap: a boundary redrawn 2 m off leaves a strip about 2 m wide);
- main unit: the U_i with the largest overlap (ties: smallest code);
- ``coverage`` = overlap with the main unit / area(C); ``fill`` = that overlap / area(main unit);
  ``iou`` = intersection over union of C and the main unit; ``hausdorff_m``: GEOS's discrete Hausdorff distance
  between C and the main unit (vertices of one outline, holes included, to the other outline);
- an overlap is *significant* when it is at least ``sliver_area_m2`` AND at least ``sliver_width_m`` wide;
  ``n_units`` counts significant overlaps; a unit is *contained* when its overlap is significant and covers at
  least ``contain_share_min`` of the unit; ``n_contained`` counts those.

Classes, first match wins (thresholds in `geo.settings.ClassifyRules`, env GRIDATLAS_CLASSIFY_*):

1. ``outside``    no significant overlap (未入格);
2. ``same``       IoU with the main unit ≥ ``same_iou_min`` and Hausdorff ≤ ``same_hausdorff_m`` (同等);
3. ``larger``     contains at least one unit and either overlaps several units significantly or has less than
   ``within_share_min`` of its area in its main unit (大于网格);
4. ``smaller``    at least ``within_share_min`` of its area lies in the main unit (小于网格: the unit holds other
   land or compounds too, else it would be ``same``);
5. ``straddling`` anything else: overlaps several units (or one unit and unassigned land) without containing
   any and without being contained (跨界).

Two implementations compute the measures: set-based SQL in PostGIS (:func:`measure_sql`) and vectorised
shapely 2 / geopandas (:func:`measure_frames`); the class rule is one vectorised function applied to either
(:func:`assign_classes`). ``bench/bench_classify.py`` compares them; the faster is ``ClassifyRules.implementation``'s
default. Results are stored per boundary version and level (:func:`ensure_classification`) with a fingerprint of
their inputs, and recomputed when boundaries, compounds or thresholds change.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from geo import errors
from geo.errors import DomainError, Kind
from geo.settings import CLASSIFY_THRESHOLDS, ClassifyRules, get_settings
from geo.spatial.crs import STORAGE_SRID, utm_epsg
from geo.spatial.geometry import repair_polygons as repair_geometries
from geo.store.load import copy_rows, parse_at, read_level, version_at

#: API level name → the store's level (identity table) name.
LEVELS: dict[str, str] = {"grid": "grids", "micro_grid": "micro_grids"}
CLASSES = ("same", "larger", "smaller", "straddling", "outside")
CLASS_ZH = {"same": "同等", "larger": "大于网格", "smaller": "小于网格", "straddling": "跨界", "outside": "未入格"}
CLASS_ZH_MICRO = {"same": "同等", "larger": "大于微网格", "smaller": "小于微网格", "straddling": "跨界",
                  "outside": "未入格"}
CLASS_EN = {"same": "same as its grid", "larger": "larger than its grid", "smaller": "smaller than its grid",
            "straddling": "straddling grid lines", "outside": "in no grid"}
LEVEL_ZH = {"grid": "网格", "micro_grid": "微网格"}
#: Thresholds whose ±step sensitivity is reported (the names of ClassifyRules fields).
THRESHOLDS = CLASSIFY_THRESHOLDS
THRESHOLD_ZH = {
    "sliver_area_m2": "碎片面积容差", "sliver_width_m": "碎片宽度容差", "contain_share_min": "包含网格比例",
    "within_share_min": "位于网格内比例", "same_iou_min": "同等交并比", "same_hausdorff_m": "同等最大偏离",
}
#: Overlaps below this many m² are floating-point noise from shared edges, not land.
NOISE_M2 = 1e-3
Implementation = Literal["sql", "shapely"]


def get_rules() -> ClassifyRules:
    """The process-wide classification thresholds (`geo.settings.Settings.classify`, env GRIDATLAS_CLASSIFY_*)."""
    return get_settings().classify


class ClassifyError(DomainError, ValueError):
    """A classification request that cannot be made as given (unknown level or implementation, a bad date)."""

    slug: ClassVar[str] = "validation-error"
    kind: ClassVar[Kind] = "invalid"
    title: ClassVar[str | None] = "Invalid request"


class NoBoundaryVersion(ClassifyError):
    """No boundary version (or nothing at all) is in force to classify against."""

    slug = "no-boundary-version"
    kind = "not-found"
    title = None


class UnclassifiableCompounds(ClassifyError):
    """Compound polygons that are null, empty, or invalid beyond repair; `problems` lists (compound id, reason)."""

    slug = "unclassifiable-compounds"
    kind = "conflict"
    title = None

    def __init__(self, message: str, problems: list[tuple[int, str]]):
        super().__init__(message, problems=[{"compound_id": i, "reason": r} for i, r in problems])
        self.problems = problems


@dataclass
class Classification:
    """One level's classification: per-compound measures and class, per-overlap detail, sensitivity."""

    level: str
    rules: ClassifyRules
    implementation: str
    epsg: int
    #: One row per compound (index compound_id): measures, ``class``, ``fragile`` (threshold names).
    compounds: pd.DataFrame
    #: One row per compound × overlapped unit: overlap_m2, width_m, unit_area_m2, significant, contained.
    overlaps: pd.DataFrame
    #: Per threshold: value, the ±step values, how many compounds change class at each.
    sensitivity: list[dict]
    timings: dict[str, float] = field(default_factory=dict)
    #: (compound id, GEOS reason) for compounds whose invalid polygon was repaired with make_valid.
    repaired: list[tuple[int, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Compounds per class, every class present (zero when none)."""
        vc = self.compounds["class"].value_counts()
        return {c: int(vc.get(c, 0)) for c in CLASSES}


# --------------------------------------------------------------------------------------------------------------
# The class rule: pure, vectorised, shared by both implementations and by the sensitivity analysis.

def finish_measures(compounds: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per-compound measures from compound areas (+ hausdorff_m to the main unit) and overlap pairs."""
    pairs = pairs[pairs["overlap_m2"] > NOISE_M2]
    main = _main_pairs(pairs)
    out = compounds.copy()
    out["main_unit_id"] = main["unit_id"].reindex(out.index)
    out["main_code"] = main["unit_code"].reindex(out.index)
    out["main_overlap_m2"] = main["overlap_m2"].reindex(out.index).fillna(0.0)
    out["main_unit_area_m2"] = main["unit_area_m2"].reindex(out.index)
    area = out["area_m2"].to_numpy(float)
    inter = out["main_overlap_m2"].to_numpy(float)
    unit_area = out["main_unit_area_m2"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["coverage"] = np.where(area > 0, inter / area, 0.0)
        out["fill"] = inter / unit_area
        out["iou"] = inter / (area + unit_area - inter)
    if "hausdorff_m" not in out:
        out["hausdorff_m"] = np.nan
    out.loc[out["main_unit_id"].isna(), "hausdorff_m"] = np.nan
    return out


def _main_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """The largest overlap per compound; ties (to the mm²) go to the smallest unit code."""
    ranked = pairs.assign(_rounded=pairs["overlap_m2"].round(3)).sort_values(
        ["compound_id", "_rounded", "unit_code"], ascending=[True, False, True], kind="mergesort")
    return ranked.drop_duplicates("compound_id").set_index("compound_id")


def flag_overlaps(pairs: pd.DataFrame, rules: ClassifyRules) -> pd.DataFrame:
    """Pairs with ``significant`` (above the sliver tolerance) and ``contained`` (unit essentially inside)."""
    area = pairs["overlap_m2"].to_numpy(float)
    significant = (area >= rules.sliver_area_m2) & (pairs["width_m"].to_numpy(float) >= rules.sliver_width_m)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = area / pairs["unit_area_m2"].to_numpy(float)
    return pairs.assign(significant=significant, contained=significant & (share >= rules.contain_share_min))


def assign_classes(compounds: pd.DataFrame, pairs: pd.DataFrame, rules: ClassifyRules) -> pd.DataFrame:
    """``n_units``, ``n_contained`` and ``class`` for each compound (index compound_id) under `rules`."""
    flagged = flag_overlaps(pairs, rules)
    pos = compounds.index.get_indexer(flagged["compound_id"].to_numpy())
    known = pos >= 0
    n = len(compounds)
    n_units = np.bincount(pos[known & flagged["significant"].to_numpy()], minlength=n)
    n_contained = np.bincount(pos[known & flagged["contained"].to_numpy()], minlength=n)
    coverage = compounds["coverage"].to_numpy(float)
    iou = compounds["iou"].fillna(0.0).to_numpy(float)
    hd = compounds["hausdorff_m"].fillna(np.inf).to_numpy(float)
    within = coverage >= rules.within_share_min
    cls = np.select(
        [
            n_units == 0,
            (iou >= rules.same_iou_min) & (hd <= rules.same_hausdorff_m),
            (n_contained >= 1) & ((n_units >= 2) | ~within),
            within,
        ],
        ["outside", "same", "larger", "smaller"],
        "straddling",
    )
    return pd.DataFrame({"n_units": n_units, "n_contained": n_contained, "class": cls}, index=compounds.index)


def sensitivity(compounds: pd.DataFrame, pairs: pd.DataFrame, rules: ClassifyRules,
                base: np.ndarray | None = None) -> tuple[list[dict], pd.Series]:
    """How many compounds change class when each threshold moves by ±step; and per compound the fragile ones."""
    step = rules.sensitivity_step
    base = assign_classes(compounds, pairs, rules)["class"].to_numpy() if base is None else base
    report: list[dict] = []
    fragile = np.zeros((len(compounds), len(THRESHOLDS)), dtype=bool)
    for j, name in enumerate(THRESHOLDS):  # six thresholds, each a vectorised reclassification
        value = float(getattr(rules, name))
        entry: dict = {"threshold": name, "label_zh": THRESHOLD_ZH[name], "value": value}
        for side, factor in (("minus", 1 - step), ("plus", 1 + step)):
            moved = rules.model_copy(update={name: value * factor})
            cls = assign_classes(compounds, pairs, moved)["class"].to_numpy()
            changed = cls != base
            fragile[:, j] |= changed
            moves = zip(base[changed], cls[changed], strict=True)
            transitions = pd.Series([f"{a}→{b}" for a, b in moves]).value_counts()
            entry[side] = {"value": value * factor, "changed": int(changed.sum()),
                           "transitions": {k: int(v) for k, v in transitions.items()}}
        entry["changed"] = int(fragile[:, j].sum())
        report.append(entry)
    names = np.array(THRESHOLDS, dtype=object)
    per_compound = pd.Series([list(names[row]) for row in fragile], index=compounds.index, dtype=object)
    return report, per_compound


def classify_measures(level: str, compounds: pd.DataFrame, pairs: pd.DataFrame, rules: ClassifyRules,
                      implementation: str, epsg: int, timings: dict | None = None,
                      repaired: list | None = None) -> Classification:
    """Assemble a Classification from raw measures: main unit, ratios, classes and sensitivity."""
    t0 = time.perf_counter()
    pairs = pairs[pairs["overlap_m2"] > NOISE_M2].reset_index(drop=True)
    measures = finish_measures(compounds, pairs)
    classes = assign_classes(measures, pairs, rules)
    measures = measures.join(classes)
    report, fragile = sensitivity(measures, pairs, rules, measures["class"].to_numpy())
    measures["fragile"] = fragile
    overlaps = flag_overlaps(pairs, rules).sort_values(["compound_id", "overlap_m2"], ascending=[True, False])
    timings = dict(timings or {})
    timings["classify_s"] = time.perf_counter() - t0
    return Classification(level, rules, implementation, epsg, measures, overlaps.reset_index(drop=True), report,
                          timings, list(repaired or []))


# --------------------------------------------------------------------------------------------------------------
# Implementation 1: vectorised shapely 2 / geopandas.

def repair_polygons(ids, geoms, on_invalid: str = "repair", what: str = "compound"
                    ) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Invalid polygons repaired (`geo.spatial.geometry.repair_polygons`, GEOS make_valid, polygonal parts kept);
    returns (geometries, [(id, GEOS reason)] of those repaired). Null or empty polygons, those the repair leaves
    without area, and with `on_invalid` "refuse" every invalid one, raise UnclassifiableCompounds naming them."""
    geoms = np.asarray(geoms, dtype=object)
    ids = np.asarray(ids)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    invalid = ~missing & ~shapely.is_valid(np.where(missing, None, geoms))
    reasons = [(int(ids[i]), shapely.is_valid_reason(geoms[i])) for i in np.flatnonzero(invalid)]
    refused = [(int(ids[i]), "null or empty geometry") for i in np.flatnonzero(missing)]
    if on_invalid == "refuse" and reasons:
        refused += [(i, f"{r} (repair is off)") for i, r in reasons]
    if not refused and reasons:
        # "linework" is GEOS's default method, the one classification has always used (answers stay the same).
        geoms, report = repair_geometries(geoms, method="linework")
        fixed = geoms[report.index]
        ok = ~shapely.is_missing(fixed)
        ok[ok] &= shapely.area(fixed[ok]) > 0
        refused += [(reasons[k][0], f"{reasons[k][1]}; make_valid leaves no area") for k in np.flatnonzero(~ok)]
    if refused:
        listed = "; ".join(f"{what} {i}: {r}" for i, r in refused[:5])
        raise UnclassifiableCompounds(
            f"{len(refused)} {what} polygon(s) cannot be classified ({listed}); fix or remove them and retry",
            refused)
    return geoms, reasons


def measure_frames(compounds: gpd.GeoDataFrame, units: gpd.GeoDataFrame, level: str = "grid",
                   rules: ClassifyRules | None = None, epsg: int | None = None,
                   on_invalid: Literal["repair", "refuse"] = "repair") -> Classification:
    """Classify compounds (columns id, geometry[, community_id]) against units (id, code, geometry) in memory.

    Invalid compound polygons are repaired with make_valid (listed in ``repaired``) unless `on_invalid` is
    "refuse"; one that cannot be repaired into an area raises ClassifyError naming it.
    """
    rules = rules or get_rules()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if epsg is None:
        epsg = _epsg_of_frames(compounds, units)
    cg = np.asarray(compounds.geometry.to_crs(epsg).values, dtype=object) if len(compounds) else np.array([], object)
    ug = np.asarray(units.geometry.to_crs(epsg).values, dtype=object) if len(units) else np.array([], object)
    cid = compounds["id"].to_numpy(np.int64)
    cg, repaired = repair_polygons(cid, cg, on_invalid)
    ug, _ = repair_polygons(units["id"].to_numpy(np.int64), ug, "repair", what="unit")
    timings["project_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ci, ui = shapely.STRtree(ug).query(cg, predicate="intersects")
    area = shapely.area(cg)
    # A compound strictly inside a unit overlaps it by its own shape: a prepared point-in-polygon test is far
    # cheaper than the overlay, and most compounds that are smaller than their grid are such pairs.
    shapely.prepare(ug)
    inside = shapely.contains_properly(ug[ui], cg[ci])
    rest = np.flatnonzero(~inside)
    inter = shapely.intersection(cg[ci[rest]], ug[ui[rest]])
    overlap = area[ci]
    perimeter = _polygon_perimeter(cg)[ci]
    overlap[rest] = shapely.area(inter)
    perimeter[rest] = _polygon_perimeter(inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.where(perimeter > 0, 2.0 * overlap / perimeter, 0.0)
    unit_area = shapely.area(ug)
    codes = units["code"].to_numpy(object)
    pairs = pd.DataFrame({
        "compound_id": cid[ci], "unit_id": units["id"].to_numpy(np.int64)[ui], "unit_code": codes[ui],
        "overlap_m2": overlap, "width_m": width, "unit_area_m2": unit_area[ui],
        "_unit_pos": ui,
    })
    pairs = pairs[pairs["overlap_m2"] > NOISE_M2]
    main = _main_pairs(pairs)
    table = pd.DataFrame({"area_m2": area}, index=pd.Index(cid, name="compound_id"))
    table["community_id"] = _community_ids(compounds, units, main)
    table["repaired"] = np.isin(cid, [i for i, _ in repaired])
    pos = pd.Series(np.arange(len(cid)), index=cid)
    hd = np.full(len(cid), np.nan)
    rows = pos.reindex(main.index).to_numpy()
    hd[rows] = shapely.hausdorff_distance(cg[rows], ug[main["_unit_pos"].to_numpy()])
    table["hausdorff_m"] = hd
    timings["measure_s"] = time.perf_counter() - t0
    return classify_measures(level, table, pairs.drop(columns="_unit_pos"), rules, "shapely", epsg, timings,
                             repaired)


def _polygon_perimeter(geoms: np.ndarray) -> np.ndarray:
    """Perimeter of the polygonal parts only (as ST_Perimeter): an intersection along a shared edge also yields
    line pieces, whose length is not perimeter."""
    perimeter = shapely.length(geoms)
    mixed = np.flatnonzero(shapely.get_type_id(geoms) == 7)  # GeometryCollection
    if mixed.size:
        parts, index = shapely.get_parts(geoms[mixed], return_index=True)
        polygonal = np.isin(shapely.get_type_id(parts), (3, 6))
        perimeter[mixed] = np.bincount(index[polygonal], shapely.length(parts[polygonal]), minlength=mixed.size)
    return perimeter


def _community_ids(compounds: pd.DataFrame, units: pd.DataFrame, main: pd.DataFrame) -> np.ndarray:
    """The compound's own community, else its main unit's community (None when neither is known)."""
    own = (compounds["community_id"].to_numpy(float) if "community_id" in compounds
           else np.full(len(compounds), np.nan))
    if "community_id" in units:
        by_unit = pd.Series(units["community_id"].to_numpy(float), index=units["id"].to_numpy())
        via_main = main["unit_id"].map(by_unit).reindex(compounds["id"].to_numpy()).to_numpy(float)
        own = np.where(np.isnan(own), via_main, own)
    return own


def _epsg_of_frames(*frames: gpd.GeoDataFrame) -> int:
    bounds = np.array([f.to_crs(STORAGE_SRID).total_bounds for f in frames if len(f)])
    if not len(bounds):
        return utm_epsg(0.0, 0.0)
    return utm_epsg((bounds[:, 0].min() + bounds[:, 2].max()) / 2, (bounds[:, 1].min() + bounds[:, 3].max()) / 2)


def _unit_sql(level: str) -> str:
    """The units of `level` in force at :ts with their community id."""
    if level == "grid":
        return "SELECT id, code, name, community_id, boundary_id, geom FROM grids_at(CAST(:ts AS timestamptz))"
    return ("SELECT m.id, m.code, m.name, g.community_id, m.boundary_id, m.geom "
            "FROM micro_grids_at(CAST(:ts AS timestamptz)) m JOIN grids g ON g.id = m.grid_id")


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise ClassifyError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    return level


def metric_epsg(conn: Connection) -> int:
    """The UTM zone at the centre of the compounds and grids stored (the CRS both implementations measure in)."""
    row = conn.execute(text(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) AS e FROM "
        "(SELECT geom FROM compounds UNION ALL SELECT geom FROM grid_boundaries) g) x")).one()
    if row[0] is None:
        raise NoBoundaryVersion("no compounds and no grids stored: nothing to classify")
    return utm_epsg((row[0] + row[2]) / 2, (row[1] + row[3]) / 2)


def measure_shapely(conn: Connection, level: str = "grid", at: dt.datetime | None = None,
                    rules: ClassifyRules | None = None, epsg: int | None = None) -> Classification:
    """Read compounds and the level's units at `at` (now when None) and classify them with shapely."""
    _check_level(level)
    t0 = time.perf_counter()
    epsg = epsg or metric_epsg(conn)
    crows = conn.execute(text("SELECT id, community_id, ST_AsBinary(geom) FROM compounds ORDER BY id")).all()
    urows = conn.execute(text(f"SELECT id, code, community_id, ST_AsBinary(geom) FROM ({_unit_sql(level)}) u"),
                         {"ts": at or _now(conn)}).all()
    compounds = _frame(crows, ["id", "community_id"])
    units = _frame(urows, ["id", "code", "community_id"])
    read_s = time.perf_counter() - t0
    result = measure_frames(compounds, units, level, rules, epsg)
    result.timings = {"read_s": read_s, **result.timings}
    return result


def _frame(rows, columns: list[str]) -> gpd.GeoDataFrame:
    data: list[tuple] = list(zip(*rows, strict=True)) if rows else [() for _ in range(len(columns) + 1)]
    geoms = shapely.from_wkb(np.array([bytes(b) for b in data[-1]], dtype=object)) if rows else np.array([], object)
    df = pd.DataFrame({c: list(v) for c, v in zip(columns, data[:-1], strict=True)})
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=STORAGE_SRID), crs=STORAGE_SRID)


def _now(conn: Connection) -> dt.datetime:
    return conn.execute(text("SELECT now()")).scalar_one()


# --------------------------------------------------------------------------------------------------------------
# Implementation 2: set-based SQL in PostGIS.

def _measure_statements(level: str) -> list[str]:
    """Set-based SQL: project once, join on the GiST indexes, intersect every pair, pick the main unit."""
    units = _unit_sql(level)
    return [
        "DROP TABLE IF EXISTS pg_temp.cls_c, pg_temp.cls_u, pg_temp.cls_p",
        # Each geometry is projected to metres once; the spatial join itself runs on the stored geometries,
        # where the GiST indexes are, and the projected shapes are joined back by id.
        "CREATE TEMP TABLE cls_c AS SELECT id, community_id, g, ST_Area(g) AS area_m2 "
        "FROM (SELECT id, community_id, ST_Transform(geom, :epsg) AS g FROM compounds OFFSET 0) c",
        "CREATE TEMP TABLE cls_u AS SELECT id, code, community_id, g, ST_Area(g) AS area_m2 "
        f"FROM (SELECT id, code, community_id, ST_Transform(geom, :epsg) AS g FROM ({units}) u OFFSET 0) u",
        "ALTER TABLE cls_c ADD PRIMARY KEY (id)",
        "ALTER TABLE cls_u ADD PRIMARY KEY (id)",
        "ANALYZE cls_c",
        "ANALYZE cls_u",
        f"""CREATE TEMP TABLE cls_p AS
            SELECT j.compound_id, j.unit_id, u.code AS unit_code, u.community_id AS unit_community_id,
                   u.area_m2 AS unit_area_m2, ST_Area(i.ix) AS overlap_m2, ST_Perimeter(i.ix) AS perimeter_m
            FROM (SELECT c.id AS compound_id, b.id AS unit_id
                  FROM compounds c JOIN ({units}) b ON ST_Intersects(c.geom, b.geom)) j
            JOIN cls_c c ON c.id = j.compound_id
            JOIN cls_u u ON u.id = j.unit_id
            CROSS JOIN LATERAL (SELECT CASE WHEN ST_ContainsProperly(u.g, c.g) THEN c.g
                                            ELSE ST_Intersection(c.g, u.g) END AS ix OFFSET 0) i""",
        "DELETE FROM cls_p WHERE overlap_m2 <= :noise",
        "ANALYZE cls_p",
    ]


_MEASURE_RESULT = """
    WITH main AS (
        SELECT DISTINCT ON (compound_id) compound_id, unit_id, unit_community_id
        FROM cls_p ORDER BY compound_id, round(overlap_m2::numeric, 3) DESC, unit_code
    ),
    hd AS MATERIALIZED (
        SELECT m.compound_id, m.unit_community_id, ST_HausdorffDistance(c.g, u.g) AS hausdorff_m
        FROM main m JOIN cls_c c ON c.id = m.compound_id JOIN cls_u u ON u.id = m.unit_id
    )
    SELECT c.id AS compound_id, coalesce(c.community_id, hd.unit_community_id) AS community_id,
           c.area_m2, hd.hausdorff_m,
           p.unit_id, p.unit_code, p.unit_area_m2, p.overlap_m2, p.perimeter_m
    FROM cls_c c
    LEFT JOIN hd ON hd.compound_id = c.id
    LEFT JOIN cls_p p ON p.compound_id = c.id
    ORDER BY c.id
"""


def measure_sql(conn: Connection, level: str = "grid", at: dt.datetime | None = None,
                rules: ClassifyRules | None = None, epsg: int | None = None) -> Classification:
    """Compute every measure in PostGIS with set-based statements over temporary tables, then classify."""
    _check_level(level)
    rules = rules or get_rules()
    t0 = time.perf_counter()
    epsg = epsg or metric_epsg(conn)
    params = {"ts": at or _now(conn), "epsg": epsg, "noise": NOISE_M2}
    # PostGIS functions carry high planner costs, which would make PostgreSQL spend a second JIT-compiling.
    jit = conn.execute(text("SELECT current_setting('jit')")).scalar_one()
    conn.execute(text("SELECT set_config('jit', 'off', true)"))
    try:
        for statement in _measure_statements(level):
            conn.execute(text(statement), params)
        rows = conn.execute(text(_MEASURE_RESULT)).all()
        conn.execute(text("DROP TABLE IF EXISTS pg_temp.cls_c, pg_temp.cls_u, pg_temp.cls_p"))
    finally:
        conn.execute(text("SELECT set_config('jit', :v, true)"), {"v": jit})
    timings = {"measure_s": time.perf_counter() - t0}
    cols = ["compound_id", "community_id", "area_m2", "hausdorff_m", "unit_id", "unit_code", "unit_area_m2",
            "overlap_m2", "perimeter_m"]
    df = pd.DataFrame(rows, columns=cols)
    compounds = (df.drop_duplicates("compound_id").set_index("compound_id")[["area_m2", "community_id",
                                                                             "hausdorff_m"]]
                 .astype({"area_m2": float, "community_id": float, "hausdorff_m": float}))
    compounds["repaired"] = False
    pairs = df.dropna(subset=["unit_id"]).astype({"unit_id": np.int64, "overlap_m2": float,
                                                   "perimeter_m": float, "unit_area_m2": float})
    pairs = pairs.assign(width_m=np.where(pairs["perimeter_m"] > 0, 2 * pairs["overlap_m2"] / pairs["perimeter_m"],
                                          0.0))[["compound_id", "unit_id", "unit_code", "overlap_m2", "width_m",
                                                 "unit_area_m2"]]
    return classify_measures(level, compounds, pairs, rules, "sql", epsg, timings)


IMPLEMENTATIONS = {"sql": measure_sql, "shapely": measure_shapely}


def compute(conn: Connection, level: str = "grid", at: dt.datetime | None = None,
            rules: ClassifyRules | None = None, implementation: str | None = None,
            epsg: int | None = None) -> Classification:
    """Classify every stored compound against the level's units in force at `at` (nothing is written)."""
    rules = rules or get_rules()
    impl = implementation or rules.implementation
    if impl not in IMPLEMENTATIONS:
        raise ClassifyError(f"unknown implementation {impl!r}; expected one of {', '.join(IMPLEMENTATIONS)}")
    t0 = time.perf_counter()
    result = IMPLEMENTATIONS[impl](conn, level, at, rules, epsg)
    result.timings["total_s"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------------------------------------------
# Storage per boundary version, recomputed when its inputs change.

def inputs_hash(conn: Connection, level: str, at: dt.datetime | None) -> str:
    """A fingerprint of what a classification depends on: the units in force (ids, codes, shapes) and compounds."""
    _check_level(level)
    return conn.execute(text(f"""
        SELECT md5(
          coalesce((SELECT string_agg(u.boundary_id || ':' || u.code || ':' || coalesce(u.community_id, 0) || ':'
                                      || md5(ST_AsEWKB(u.geom)), ',' ORDER BY u.boundary_id)
                    FROM ({_unit_sql(level)}) u), '')
          || '|' ||
          coalesce((SELECT string_agg(c.id || ':' || coalesce(c.community_id, 0) || ':' || md5(ST_AsEWKB(c.geom)),
                                      ',' ORDER BY c.id) FROM compounds c), ''))
    """), {"ts": at or _now(conn)}).scalar_one()


def _resolve_version(conn: Connection, at: dt.datetime | None) -> dict:
    version = version_at(conn, at)
    if version is None:
        when = at.isoformat() if at else "now"
        raise NoBoundaryVersion(f"no boundary version is in force at {when}: nothing to classify against")
    return version


def store(conn: Connection, result: Classification, version_id: int, digest: str,
          evaluated_at: dt.datetime) -> None:
    """Replace the stored results of (version, level) with `result` (bulk COPY)."""
    import json

    key = {"v": version_id, "l": result.level}
    conn.execute(text("DELETE FROM classification_runs WHERE version_id = :v AND level = :l"), key)
    conn.execute(text("""
        INSERT INTO classification_runs (version_id, level, evaluated_at, implementation, epsg, inputs_hash,
                                         thresholds, sensitivity, n_compounds, elapsed_s)
        VALUES (:v, :l, :at, :impl, :epsg, :hash, CAST(:thr AS jsonb), CAST(:sens AS jsonb), :n, :el)
    """), {**key, "at": evaluated_at, "impl": result.implementation, "epsg": result.epsg, "hash": digest,
           "thr": json.dumps(result.rules.thresholds()), "sens": json.dumps(result.sensitivity, ensure_ascii=False),
           "n": len(result.compounds), "el": result.timings.get("total_s", 0.0)})
    c = result.compounds
    cols = ["version_id", "level", "compound_id", "class", "community_id", "area_m2", "main_unit_id", "main_code",
            "main_overlap_m2", "main_unit_area_m2", "coverage", "fill", "iou", "hausdorff_m", "n_units",
            "n_contained", "repaired", "fragile"]
    n = len(c)
    values = [
        [version_id] * n, [result.level] * n, c.index.tolist(), c["class"].tolist(),
        _ints(c["community_id"]), c["area_m2"].tolist(), _ints(c["main_unit_id"]),
        [None if pd.isna(v) else v for v in c["main_code"].tolist()],
        c["main_overlap_m2"].tolist(), _floats(c["main_unit_area_m2"]), c["coverage"].tolist(),
        _floats(c["fill"]), _floats(c["iou"]), _floats(c["hausdorff_m"]), c["n_units"].tolist(),
        c["n_contained"].tolist(), c["repaired"].astype(bool).tolist(), c["fragile"].tolist(),
    ]
    copy_rows(conn, "compound_classifications", cols, zip(*values, strict=True))
    o = result.overlaps
    m = len(o)
    copy_rows(conn, "compound_overlaps",
              ["version_id", "level", "compound_id", "unit_id", "unit_code", "overlap_m2", "width_m",
               "unit_area_m2", "significant", "contained"],
              zip([version_id] * m, [result.level] * m, o["compound_id"].tolist(), o["unit_id"].tolist(),
                  o["unit_code"].tolist(), o["overlap_m2"].tolist(), o["width_m"].tolist(),
                  o["unit_area_m2"].tolist(), o["significant"].tolist(), o["contained"].tolist(), strict=True))


def _ints(s: pd.Series) -> list:
    return [None if pd.isna(v) else int(v) for v in s.tolist()]


def _floats(s: pd.Series) -> list:
    return [None if pd.isna(v) or not np.isfinite(v) else float(v) for v in s.tolist()]


def ensure_classification(conn: Connection, level: str = "grid", at: dt.datetime | None = None,
                          rules: ClassifyRules | None = None, force: bool = False,
                          implementation: str | None = None) -> dict:
    """The stored run for the version in force at `at`, recomputed first when missing or stale.

    Stale means the units in force, the compounds or the thresholds differ from those the stored run used.
    Returns the run (version, thresholds, sensitivity, computed_at …) with ``recomputed`` telling what happened.
    """
    _check_level(level)
    rules = rules or get_rules()
    ts = at or _now(conn)
    version = _resolve_version(conn, ts)
    # One writer per (version, level): concurrent readers wait instead of computing the same run twice.
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('gridatlas.classify'), :k)"),
                 {"k": version["id"] * 2 + (level == "micro_grid")})
    digest = inputs_hash(conn, level, ts)
    run = read_run(conn, version["id"], level)
    recomputed = False
    if force or run is None or run["inputs_hash"] != digest or run["thresholds"] != rules.thresholds():
        result = compute(conn, level, ts, rules, implementation)
        store(conn, result, version["id"], digest, ts)
        run = read_run(conn, version["id"], level)
        recomputed = True
    assert run is not None  # stored just above when it was missing
    return {**run, "version": version, "recomputed": recomputed}


def parse_when(at: str | dt.date | dt.datetime | None) -> dt.datetime | None:
    """The instant a request's `at` names (a bare date: the end of that local day; None: now); ClassifyError when
    it is neither a date nor an ISO datetime."""
    try:
        return parse_at(at, get_settings().timezone)
    except ValueError as exc:
        raise ClassifyError(str(exc)) from exc


def run_at(conn: Connection, level: str, at: str | dt.date | dt.datetime | None,
           rules: ClassifyRules | None = None) -> dict:
    """`ensure_classification` for a request's `at` (`parse_when`): the up-to-date run in force then."""
    return ensure_classification(conn, level, parse_when(at), rules or get_rules())


def compound_verdict(conn: Connection, compound_id: int, level: str, at: str | dt.date | dt.datetime | None,
                     rules: ClassifyRules | None = None) -> tuple[dict, dict, pd.DataFrame]:
    """(run, stored row, overlaps) of one compound at `at`; NotFound when there is no such compound (checked
    first) or the run has no row for it."""
    if conn.execute(text("SELECT 1 FROM compounds WHERE id = :i"), {"i": compound_id}).first() is None:
        raise errors.NotFound(f"there is no compound {compound_id}")
    run = run_at(conn, level, at, rules)
    rows = read_results(conn, run["version"]["id"], level, compound_id=compound_id)
    if rows.empty:  # the compound was added after the stored run; ensure_classification saw it, so unlikely
        raise errors.NotFound(f"compound {compound_id} has no classification in this version")
    return run, rows.iloc[0].to_dict(), read_overlaps(conn, run["version"]["id"], level, [compound_id])


def outlines(conn: Connection, level: str, at: dt.datetime | None, prefix: str | None
             ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None]:
    """(units, their grids) a classification map outlines: the level's units in force at `at` whose code starts
    with `prefix` (all when None), and for micro-grids the grids around them (None for grids)."""
    _check_level(level)

    def read(table: str) -> gpd.GeoDataFrame:
        where, params = ("WHERE starts_with(code, :p)", {"p": prefix}) if prefix else ("", {})
        return read_level(conn, table, at, where, params)

    return (read("grids"), None) if level == "grid" else (read("micro_grids"), read("grids"))


def refresh(conn: Connection, at: dt.datetime | None = None, rules: ClassifyRules | None = None) -> dict[str, bool]:
    """Bring both levels' stored results up to date for the version in force at `at` (call after a redraw)."""
    return {level: ensure_classification(conn, level, at, rules)["recomputed"] for level in LEVELS}


def read_run(conn: Connection, version_id: int, level: str) -> dict | None:
    """The stored run of (version, level), or None."""
    row = conn.execute(text(
        "SELECT version_id, level, computed_at, evaluated_at, implementation, epsg, inputs_hash, thresholds, "
        "sensitivity, n_compounds, elapsed_s FROM classification_runs WHERE version_id = :v AND level = :l"),
        {"v": version_id, "l": level}).mappings().first()
    return dict(row) if row else None


_RESULT_SELECT = """
    SELECT r.compound_id, c.name, r.class, r.area_m2, r.main_unit_id, r.main_code, mu.name AS main_name,
           r.main_overlap_m2, r.main_unit_area_m2, r.coverage, r.fill, r.iou, r.hausdorff_m, r.n_units,
           r.n_contained, r.repaired, r.fragile, cm.code AS community_code, cm.name AS community_name,
           s.code AS street_code, s.name AS street_name {geom}
    FROM compound_classifications r
    JOIN compounds c ON c.id = r.compound_id
    LEFT JOIN communities cm ON cm.id = r.community_id
    LEFT JOIN streets s ON s.id = cm.street_id
    LEFT JOIN {units} mu ON mu.id = r.main_unit_id
    WHERE r.version_id = :v AND r.level = :l {where}
    ORDER BY s.code NULLS LAST, cm.code NULLS LAST, r.compound_id
"""


def read_results(conn: Connection, version_id: int, level: str, *, jurisdiction: str | None = None,
                 street: str | None = None, community: str | None = None, compound_id: int | None = None,
                 with_geometry: bool = False) -> pd.DataFrame:
    """Stored rows of (version, level) with names and codes; `jurisdiction` keeps the rows a code prefix covers.

    A row is inside a jurisdiction when its main unit's code or its community's code starts with the
    jurisdiction's code (the same prefix test as Principal.covers).
    """
    _check_level(level)
    where, params = [], {"v": version_id, "l": level}
    if jurisdiction:
        where.append("(starts_with(r.main_code, :j) OR starts_with(cm.code, :j))")
        params["j"] = jurisdiction
    if street:
        where.append("s.code = :street")
        params["street"] = street
    if community:
        where.append("cm.code = :community")
        params["community"] = community
    if compound_id is not None:
        where.append("r.compound_id = :cid")
        params["cid"] = compound_id
    sql = _RESULT_SELECT.format(
        geom=", ST_AsBinary(c.geom) AS geom" if with_geometry else "", units=LEVELS[level],
        where="".join(f" AND {w}" for w in where))
    df = pd.DataFrame(conn.execute(text(sql), params).mappings().all())
    if df.empty:
        df = pd.DataFrame(columns=["compound_id", "name", "class", "area_m2", "main_unit_id", "main_code",
                                   "main_name", "main_overlap_m2", "main_unit_area_m2", "coverage", "fill", "iou",
                                   "hausdorff_m", "n_units", "n_contained", "repaired", "fragile",
                                   "community_code", "community_name", "street_code", "street_name",
                                   *(["geom"] if with_geometry else [])])
    return df


def read_overlaps(conn: Connection, version_id: int, level: str, compound_ids=None) -> pd.DataFrame:
    """Stored overlap rows of (version, level), optionally only for some compounds, largest first."""
    params: dict = {"v": version_id, "l": level}
    where = ""
    if compound_ids is not None:
        where = " AND o.compound_id = ANY(:ids)"
        params["ids"] = [int(i) for i in compound_ids]
    rows = conn.execute(text(
        f"SELECT o.compound_id, o.unit_id, o.unit_code, u.name AS unit_name, o.overlap_m2, o.width_m, "
        f"o.unit_area_m2, o.significant, o.contained FROM compound_overlaps o "
        f"LEFT JOIN {LEVELS[level]} u ON u.id = o.unit_id "
        f"WHERE o.version_id = :v AND o.level = :l{where} ORDER BY o.compound_id, o.overlap_m2 DESC"),
        params).mappings().all()
    cols = ["compound_id", "unit_id", "unit_code", "unit_name", "overlap_m2", "width_m", "unit_area_m2",
            "significant", "contained"]
    return pd.DataFrame(rows, columns=cols)


def summary(results: pd.DataFrame) -> dict:
    """Counts per class in total, per street and per community (seed 001's table), from read_results rows."""
    def counts(df: pd.DataFrame) -> dict[str, int]:
        vc = df["class"].value_counts()
        return {c: int(vc.get(c, 0)) for c in CLASSES} | {"total": int(len(df))}

    frame = results.assign(street_code=results["street_code"].fillna(""),
                           community_code=results["community_code"].fillna(""),
                           street_name=results["street_name"].fillna("(未知街道)"),
                           community_name=results["community_name"].fillna("(未知社区)"))
    streets = []
    for (scode, sname), sdf in frame.groupby(["street_code", "street_name"], sort=True):
        communities = [{"code": ccode or None, "name": cname, "counts": counts(cdf)}
                       for (ccode, cname), cdf in sdf.groupby(["community_code", "community_name"], sort=True)]
        streets.append({"code": scode or None, "name": sname, "counts": counts(sdf), "communities": communities})
    return {"counts": counts(frame), "streets": streets}


# --------------------------------------------------------------------------------------------------------------
# Explaining one verdict in words (Chinese and English) and numbers.

def _pct(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{100 * float(x):.1f}%"


def _m(x, digits: int = 1) -> str:
    return "—" if x is None or pd.isna(x) else f"{float(x):,.{digits}f}"


def reclassify_one(row: dict, overlaps: pd.DataFrame, rules: ClassifyRules) -> pd.DataFrame:
    """One compound's class under `rules`, from its stored measures and overlaps."""
    comp = pd.DataFrame([{k: row.get(k) for k in ("coverage", "iou", "hausdorff_m")}],
                        index=pd.Index([row["compound_id"]], name="compound_id")).astype(float)
    pairs = overlaps.assign(compound_id=row["compound_id"])[["compound_id", "overlap_m2", "width_m",
                                                               "unit_area_m2"]]
    return assign_classes(comp, pairs, rules)


def explain(row: dict, overlaps: pd.DataFrame, rules: ClassifyRules, level: str = "grid") -> dict:
    """Why a compound got its class: sentences in Chinese and English, the deciding numbers, fragile thresholds."""
    cls = row["class"]
    unit_zh, unit_en = LEVEL_ZH[level], level.replace("_", "-")
    r = rules
    main = f"{row.get('main_code') or ''} {row.get('main_name') or ''}".strip()
    sig = overlaps[overlaps["significant"].astype(bool)]
    slivers = overlaps[~overlaps["significant"].astype(bool)]
    contained = overlaps[overlaps["contained"].astype(bool)]
    area = _m(row["area_m2"], 0)
    zh: list[str] = [f"小区面积 {area} m²。"]
    en: list[str] = [f"The compound covers {area} m²."]
    if cls == "outside":
        zh.append(f"没有任何{unit_zh}与它的重叠超过碎片容差（面积 ≥ {r.sliver_area_m2:g} m² 且平均宽度 ≥ "
                  f"{r.sliver_width_m:g} m），判为“未入格”。")
        en.append(f"No {unit_en} overlaps it beyond the sliver tolerance (at least {r.sliver_area_m2:g} m² and "
                  f"{r.sliver_width_m:g} m wide on average), so it lies in no {unit_en}.")
    else:
        zh.append(f"重叠最大的{unit_zh}是 {main}：重叠 {_m(row['main_overlap_m2'], 0)} m²，占小区 "
                  f"{_pct(row['coverage'])}，占该{unit_zh} {_pct(row['fill'])}；交并比 IoU {_m(row['iou'], 3)}，"
                  f"轮廓最大偏离（豪斯多夫距离）{_m(row['hausdorff_m'])} m。")
        en.append(f"Its main {unit_en} is {main}: the overlap is {_m(row['main_overlap_m2'], 0)} m², "
                  f"{_pct(row['coverage'])} of the compound and {_pct(row['fill'])} of the {unit_en}; IoU "
                  f"{_m(row['iou'], 3)}, Hausdorff distance {_m(row['hausdorff_m'])} m.")
        iou = clean(row["iou"]) or 0.0
        hd = clean(row["hausdorff_m"])
        hd = np.inf if hd is None else hd
        if cls == "same":
            zh.append(f"IoU ≥ {r.same_iou_min:g} 且最大偏离 ≤ {r.same_hausdorff_m:g} m，两条边界在容差内重合，"
                      f"判为“同等”（小区即{unit_zh}）。")
            en.append(f"IoU ≥ {r.same_iou_min:g} and Hausdorff ≤ {r.same_hausdorff_m:g} m: the outlines coincide "
                      f"within tolerance, so the compound is the same as its {unit_en}.")
        else:
            why_zh, why_en = [], []
            if iou < r.same_iou_min:
                why_zh.append(f"IoU {iou:.3f} < {r.same_iou_min:g}")
                why_en.append(f"IoU {iou:.3f} < {r.same_iou_min:g}")
            if hd > r.same_hausdorff_m:
                why_zh.append(f"最大偏离 {_m(hd)} m > {r.same_hausdorff_m:g} m")
                why_en.append(f"Hausdorff {_m(hd)} m > {r.same_hausdorff_m:g} m")
            if why_zh:
                zh.append("不算同等：" + "，".join(why_zh) + "。")
                en.append("Not the same: " + ", ".join(why_en) + ".")
        if cls == "larger":
            codes = "、".join(contained["unit_code"].astype(str))
            beyond_zh = beyond_en = ""
            if len(sig) < 2:
                beyond_zh = f"，另有 {_pct(1 - row['coverage'])} 的面积在该{unit_zh}之外"
                beyond_en = f", and {_pct(1 - row['coverage'])} of it lies outside that {unit_en}"
            zh.append(f"它与 {len(sig)} 个{unit_zh}有实质重叠，完整包含其中 {len(contained)} 个（覆盖该{unit_zh} ≥ "
                      f"{_pct(r.contain_share_min)}）：{codes}{beyond_zh}，判为“大于{unit_zh}”。")
            en.append(f"It overlaps {len(sig)} {unit_en}(s) beyond the sliver tolerance and contains "
                      f"{len(contained)} (covering ≥ {_pct(r.contain_share_min)} of each): "
                      f"{codes.replace('、', ', ')}{beyond_en}; so it is larger than its {unit_en}.")
        elif cls == "smaller":
            zh.append(f"小区 {_pct(row['coverage'])} 的面积位于该{unit_zh}内（≥ {_pct(r.within_share_min)}），"
                      f"该{unit_zh}还有其他用地或小区，判为“小于{unit_zh}”。")
            en.append(f"{_pct(row['coverage'])} of the compound lies in that {unit_en} (≥ "
                      f"{_pct(r.within_share_min)}), which also holds other land or compounds: smaller than its "
                      f"{unit_en}.")
        elif cls == "straddling":
            outside_share = 1.0 - float(overlaps["overlap_m2"].sum()) / float(row["area_m2"]) if row["area_m2"] else 0
            if len(sig) >= 2:
                codes = "、".join(sig["unit_code"].astype(str))
                zh.append(f"它跨越 {len(sig)} 个{unit_zh}（{codes}），最大部分只占小区 {_pct(row['coverage'])}"
                          f"（< {_pct(r.within_share_min)}），也没有完整包含任何{unit_zh}，判为“跨界”。")
                en.append(f"It straddles {len(sig)} {unit_en}s ({codes.replace('、', ', ')}); the largest part is "
                          f"only {_pct(row['coverage'])} of it (< {_pct(r.within_share_min)}) and it contains none, "
                          f"so it is reported as straddling.")
            else:
                zh.append(f"只有 {_pct(row['coverage'])} 的面积在该{unit_zh}内，约 {_pct(outside_share)} 不在任何"
                          f"{unit_zh}内，判为“跨界”。")
                en.append(f"Only {_pct(row['coverage'])} of it lies in that {unit_en} and about "
                          f"{_pct(outside_share)} lies in no {unit_en}, so it is reported as straddling.")
    if len(slivers):
        codes = "、".join(slivers["unit_code"].astype(str))
        total = _m(slivers["overlap_m2"].sum(), 2)
        zh.append(f"与 {codes} 的重叠共 {total} m²，低于碎片容差，已忽略。")
        en.append(f"Overlaps with {codes.replace('、', ', ')} ({total} m² in all) are below the sliver tolerance "
                  f"and ignored.")
    fragile = list(row.get("fragile") or [])
    if fragile:
        zh.append("注意：以下阈值变动 ±5% 会改变结论：" + "、".join(THRESHOLD_ZH[f] for f in fragile) + "。")
        en.append("Fragile: moving these thresholds by ±5% changes the verdict: " + ", ".join(fragile) + ".")
    if row.get("repaired"):
        zh.append("小区边界原为无效多边形，已用 make_valid 修复后计算。")
        en.append("The compound's polygon was invalid and was repaired with make_valid before measuring.")
    return {"zh": "".join(zh), "en": " ".join(en)}


def fragile_detail(row: dict, overlaps: pd.DataFrame, rules: ClassifyRules) -> list[dict]:
    """For each threshold: the class this compound would get at −step and +step."""
    out = []
    for name in THRESHOLDS:
        value = float(getattr(rules, name))
        item = {"threshold": name, "label_zh": THRESHOLD_ZH[name], "value": value}
        for side, factor in (("minus", 1 - rules.sensitivity_step), ("plus", 1 + rules.sensitivity_step)):
            moved = rules.model_copy(update={name: value * factor})
            item[side] = {"value": value * factor, "class": str(reclassify_one(row, overlaps, moved)["class"].iat[0])}
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------------------------
# Export: stored rows as records (JSON-safe dicts), CSV and GeoJSON.

def clean(value):
    """JSON-safe scalars: numpy to Python, NaN and NaT to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT or (not isinstance(value, (list, tuple, dict, str)) and pd.isna(value)):
        return None
    return value


def _round(value, digits: int):
    value = clean(value)
    return round(value, digits) if isinstance(value, float) else value


def row_record(row: dict, level: str) -> dict:
    """One result row as JSON: identity, class (with Chinese and English labels) and measures."""
    return {
        "compound_id": int(row["compound_id"]),
        "name": clean(row["name"]),
        "street": {"code": clean(row["street_code"]), "name": clean(row["street_name"])},
        "community": {"code": clean(row["community_code"]), "name": clean(row["community_name"])},
        "class": row["class"],
        "class_zh": (CLASS_ZH if level == "grid" else CLASS_ZH_MICRO)[row["class"]],
        "class_en": CLASS_EN[row["class"]],
        "main_unit": ({"id": int(row["main_unit_id"]), "code": row["main_code"], "name": clean(row["main_name"])}
                      if clean(row["main_unit_id"]) is not None else None),
        "area_m2": _round(row["area_m2"], 1),
        "main_overlap_m2": _round(row["main_overlap_m2"], 1),
        "main_unit_area_m2": _round(row["main_unit_area_m2"], 1),
        "coverage": _round(row["coverage"], 4),
        "fill": _round(row["fill"], 4),
        "iou": _round(row["iou"], 4),
        "hausdorff_m": _round(row["hausdorff_m"], 2),
        "n_units": int(row["n_units"]),
        "n_contained": int(row["n_contained"]),
        "repaired": bool(row["repaired"]),
        "fragile": list(row["fragile"] or []),
    }


def overlap_record(o: dict) -> dict:
    """One compound × unit overlap as JSON."""
    return {"unit_id": int(o["unit_id"]), "code": o["unit_code"], "name": clean(o["unit_name"]),
            "overlap_m2": _round(o["overlap_m2"], 2), "width_m": _round(o["width_m"], 2),
            "unit_area_m2": _round(o["unit_area_m2"], 1),
            "share_of_unit": _round(o["overlap_m2"] / o["unit_area_m2"], 4) if o["unit_area_m2"] else None,
            "significant": bool(o["significant"]), "contained": bool(o["contained"])}


def records(rows: pd.DataFrame, overlaps: pd.DataFrame, level: str) -> list[dict]:
    """read_results rows as records, each with its overlaps (largest first)."""
    grouped: dict[int, list[dict]] = {}
    for o in overlaps.to_dict("records"):
        grouped.setdefault(int(o["compound_id"]), []).append(overlap_record(o))
    return [row_record(r, level) | {"overlaps": grouped.get(int(r["compound_id"]), [])}
            for r in rows.to_dict("records")]


CSV_COLUMNS = ["compound_id", "name", "street_code", "street_name", "community_code", "community_name", "class",
               "class_zh", "main_code", "main_name", "area_m2", "main_overlap_m2", "main_unit_area_m2", "coverage",
               "fill", "iou", "hausdorff_m", "n_units", "n_contained", "fragile", "repaired", "overlaps"]


def to_csv(items: list[dict]) -> str:
    """The table as CSV (UTF-8 with BOM so spreadsheet programs read the Chinese), overlaps as code:m² pairs."""
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for it in items:
        main = it["main_unit"] or {}
        w.writerow([
            it["compound_id"], it["name"], it["street"]["code"], it["street"]["name"], it["community"]["code"],
            it["community"]["name"], it["class"], it["class_zh"], main.get("code"), main.get("name"), it["area_m2"],
            it["main_overlap_m2"], it["main_unit_area_m2"], it["coverage"], it["fill"], it["iou"],
            it["hausdorff_m"], it["n_units"], it["n_contained"], ";".join(it["fragile"]), it["repaired"],
            ";".join(f"{o['code']}:{o['overlap_m2']}" for o in it["overlaps"]),
        ])
    return buf.getvalue()


def to_geojson(items: list[dict], geoms) -> dict:
    """The table as a GeoJSON FeatureCollection of compound polygons (WGS-84)."""
    shapes = np.array([], dtype=object)
    if len(geoms):
        shapes = shapely.set_precision(shapely.from_wkb(np.array([bytes(g) for g in geoms], dtype=object)), 1e-7)
    return {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "id": it["compound_id"], "properties": it,
                      "geometry": shapely.geometry.mapping(g)} for it, g in zip(items, shapes, strict=True)],
    }
