"""The validation report of an import (校验报告): every problem found, what was done about it, and where it is.

Each `Issue` says what is wrong (`kind`), what the import did (`action`: refused, repaired, merged, flagged), which
source records it concerns, and, where it has one, a location (a point, the overlap, the gap) in EPSG:4326 so the
report can be drawn as a GeoJSON layer. Areas are square metres (PostGIS geography, or UTM for in-file checks).

Checks on the file alone run vectorised with shapely; checks against the database (outside the parent, overlaps
between siblings, gaps in the parent's coverage, households per grid) run as set-based PostGIS SQL on the staged
rows inside the import's transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, text

from geo.spatial.geometry import polygonal_parts, repair_polygons, with_empty
from geo.store.load import BOUNDARY_TABLES

#: What each issue kind means (the report's legend).
ISSUE_KINDS = {
    "empty-geometry": "the record has no geometry or an empty one",
    "wrong-geometry-type": "the geometry is not of the layer's type (polygon or point)",
    "invalid-geometry": "the geometry is invalid (GEOS's reason given); repaired losslessly (make_valid 'structure': "
                        "every part of the drawn area kept), area before and after given",
    "repair-changed-area": "the only repair found changes the drawn area by more than the tolerance: refused (or "
                           "imported as repaired when asked), both outlines in the problem layer",
    "implausible-crs": "the features lie far from their parents or the boundaries in the database: the file's CRS is "
                       "likely wrong (the usual CRSs that would put them there are listed)",
    "unrepairable-geometry": "the geometry is invalid and make_valid left nothing of the layer's type",
    "ring-fixed": "a ring was not closed or had too few points and was closed on reading",
    "ring-to-polygon": "a closed line (ring) was given where a polygon belongs and was turned into one",
    "curve-linearised": "a curved geometry (arc, CurvePolygon) was linearised",
    "bad-value": "an attribute value cannot be read as its field's type or is not an allowed value",
    "missing-value": "a required attribute is empty",
    "bad-code": "the code does not have the level's number of digits or does not start with its parent's code",
    "code-prefix-collision": "the code has another unit's code of the same level as a proper prefix, or is such a "
                             "prefix (in the file, or a code in use in the database at the import date: retired "
                             "units' codes do not count): jurisdiction is a code-prefix test, so the shorter code's "
                             "staff would cover the longer one; refused, both codes named (also for parents derived "
                             "from codes)",
    "duplicate-id": "several records carry the same id but differ: none of them is imported",
    "split-pieces-merged": "pieces of one feature split across records (same id, same attributes) were merged",
    "duplicate-record": "the same feature appears more than once (same id and attributes, overlapping): merged",
    "missing-parent": "the parent unit (street, community, grid) named by the record does not exist",
    "parent-without-boundary": "the parent unit has no boundary in force at the import date: containment unchecked",
    "outside-parent": "part of the feature lies outside its parent's boundary",
    "overlap": "the feature overlaps a sibling unit; details.resolution proposes which of the two keeps the "
               "overlapping part (the named owner, else the longer shared edge), applied with resolve_overlaps",
    "coverage-gap": "part of the parent is covered by none of its children",
    "households-out-of-band": "the grid's household count is outside the configured band",
    "not-found": "a referenced unit, building, person or class does not exist",
    "ambiguous-reference": "a reference matches several rows",
    "exists": "the row exists in the database already (imports never overwrite it)",
    "boundary-exists-in-version": "the unit already has a boundary starting at the import date",
    "outside-every-community": "the feature lies in no community",
}
ACTIONS = ("refused", "repaired", "merged", "flagged")


@dataclass
class Issue:
    """One problem: its kind, the action taken, the records concerned and a location in EPSG:4326."""

    kind: str
    action: str
    message: str
    records: list[int] = field(default_factory=list)
    feature: str | None = None
    area_m2: float | None = None
    geom: object | None = None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind, "action": self.action, "message": self.message,
                               "records": self.records, "feature": self.feature}
        if self.area_m2 is not None:
            out["area_m2"] = round(float(self.area_m2), 2)
        if self.details:
            out["details"] = self.details
        return out


def issues_geojson(issues: Sequence[Issue]) -> dict:
    """The problem locations as a GeoJSON FeatureCollection (issues without a location get a null geometry)."""
    geoms = np.array([i.geom for i in issues], dtype=object)
    present = ~shapely.is_missing(geoms) if len(geoms) else np.zeros(0, bool)
    as_json = np.full(len(geoms), None, dtype=object)
    if present.any():
        as_json[present] = shapely.to_geojson(geoms[present])
    return {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": issue.as_dict(),
             "geometry": json.loads(g) if g is not None else None}
            for issue, g in zip(issues, as_json, strict=True)
        ],
    }


_REASON_POINT = re.compile(r"\[\s*(-?[0-9.eE+-]+)\s+(-?[0-9.eE+-]+)\s*\]")


def reason_location(reason: str):
    """The point GEOS names in a validity reason ('Self-intersection[113.1 29.3]'), or None."""
    m = _REASON_POINT.search(reason or "")
    return shapely.Point(float(m.group(1)), float(m.group(2))) if m else None


def _geom_type(geoms: np.ndarray, i) -> str:
    """The GEOS type name of geometry `i` ('Polygon', 'LineString' …)."""
    geom: BaseGeometry = geoms[int(i)]
    return geom.geom_type


@dataclass
class GeometryCheck:
    """Outcome of the geometry checks: cleaned geometries, refused and repaired masks, issues."""

    geoms: np.ndarray
    refused: np.ndarray
    repaired: np.ndarray
    issues: list[Issue]


def check_geometries(geoms: np.ndarray, kind: str, labels: Sequence[str], records: Sequence[list[int]],
                     ring_fixed: np.ndarray | None = None, curved: np.ndarray | None = None,
                     repair_tolerance: float = 0.001, repair_over_tolerance: str = "refuse") -> GeometryCheck:
    """Null/empty, type, ring, curve and validity checks; invalid polygons repaired losslessly.

    The repair is `repair_polygons` with make_valid "structure" (every lobe of a self-crossing ring kept, holes
    cut from their shell only); each repaired feature's area before (the region its rings enclose as drawn) and
    after is reported. A repair that drops or adds more than `repair_tolerance` (a fraction of the drawn area) is a
    ``repair-changed-area`` problem with both outlines: refused, or with `repair_over_tolerance` = "flag" imported
    as repaired and flagged.
    """
    geoms = np.asarray(geoms, dtype=object)
    has_z = shapely.has_z(geoms)
    if has_z.any():
        geoms = geoms.copy()
        geoms[has_z] = shapely.force_2d(geoms[has_z])
    n = len(geoms)
    refused = np.zeros(n, dtype=bool)
    repaired = np.zeros(n, dtype=bool)
    issues: list[Issue] = []

    def add(kind_: str, action: str, idx: np.ndarray, message, geom_of=None):
        for i in idx:
            issues.append(Issue(kind_, action, message(i) if callable(message) else message, list(records[i]),
                                labels[i], geom=geom_of(i) if geom_of else None))

    missing = shapely.is_missing(geoms)
    empty = ~missing & shapely.is_empty(geoms)  # is_empty(None) is False
    bad = np.flatnonzero(missing | empty)
    add("empty-geometry", "refused", bad, lambda i: "no geometry" if missing[i] else "empty geometry")
    refused[bad] = True

    for mask, kind_, msg in ((ring_fixed, "ring-fixed", "ring closed on reading"),
                             (curved, "curve-linearised", "curved geometry linearised")):
        if mask is not None:
            idx = np.flatnonzero(mask & ~refused)
            add(kind_, "repaired", idx, msg, lambda i: shapely.point_on_surface(geoms[i]))
            repaired[idx] = True

    types = shapely.get_type_id(geoms)
    ok = ~refused
    if kind == "point":
        multi_single = ok & (types == 4) & (shapely.get_num_geometries(geoms) == 1)
        geoms = geoms.copy()
        geoms[multi_single] = shapely.get_geometry(geoms[multi_single], 0)
        types = shapely.get_type_id(geoms)
        wrong = np.flatnonzero(ok & (types != 0))
        add("wrong-geometry-type", "refused", wrong,
            lambda i: f"expected a point, got {shapely.get_type_id(geoms[i])} ({_geom_type(geoms, i)})")
        refused[wrong] = True
        return GeometryCheck(geoms, refused, repaired, issues)

    # Polygon layers: closed lines become polygons, collections keep their polygonal parts.
    geoms = geoms.copy()
    lines = ok & np.isin(types, (1, 2, 5))
    if lines.any():
        idx = np.flatnonzero(lines)
        closed = shapely.is_closed(shapely.line_merge(geoms[idx])) & (shapely.get_num_coordinates(geoms[idx]) >= 4)
        ring_idx = idx[closed]
        if ring_idx.size:
            coords, owner = shapely.get_coordinates(shapely.line_merge(geoms[ring_idx]), return_index=True)
            geoms[ring_idx] = shapely.polygons(shapely.linearrings(coords, indices=owner))
            add("ring-to-polygon", "repaired", ring_idx, "closed line turned into a polygon",
                lambda i: shapely.point_on_surface(geoms[i]))
            repaired[ring_idx] = True
        open_idx = idx[~closed]
        add("wrong-geometry-type", "refused", open_idx,
            lambda i: f"expected a polygon, got an open {_geom_type(geoms, i)}")
        refused[open_idx] = True
    types = shapely.get_type_id(geoms)
    other = np.flatnonzero(~refused & ~np.isin(types, (3, 6, 7)))
    add("wrong-geometry-type", "refused", other, lambda i: f"expected a polygon, got a {_geom_type(geoms, i)}")
    refused[other] = True
    coll = np.flatnonzero(~refused & (types == 7))
    if coll.size:
        geoms[coll] = polygonal_parts(geoms[coll])
        none = coll[shapely.is_missing(geoms[coll])]
        add("wrong-geometry-type", "refused", none, "a geometry collection without polygons")
        refused[none] = True

    live = np.flatnonzero(~refused)
    fixed, report = repair_polygons(geoms[live], measure=True)
    if len(report):
        invalid = live[report.index]
        before = with_empty(report.before, shapely.is_missing(report.before))
        after = with_empty(fixed[report.index], report.lost)
        both = metric_area(np.concatenate([before, after]))  # one projection for both
        m2_before, m2_after = both[: len(before)], both[len(before):]
        # the lost and added parts in m² by the same scale as the whole (areas here are in square degrees)
        scale = np.divide(m2_before, report.area_before, out=np.zeros(len(before)), where=report.area_before > 0)
        changed = report.changed(repair_tolerance)
        over = np.zeros(len(invalid), dtype=bool)
        for j, (i, reason, gone) in enumerate(zip(invalid, report.reasons, report.lost, strict=True)):
            loc = reason_location(reason) or shapely.point_on_surface(geoms[i])
            areas = {"area_before_m2": round(float(m2_before[j]), 2), "area_after_m2": round(float(m2_after[j]), 2),
                     "lost_m2": round(float(report.area_lost[j] * scale[j]), 2),
                     "added_m2": round(float(report.area_added[j] * scale[j]), 2)}
            if gone:
                issues.append(Issue("unrepairable-geometry", "refused", f"{reason}; make_valid left no polygon",
                                    list(records[i]), labels[i], geom=loc, details={"reason": reason, **areas}))
            elif changed[j]:
                share = max(areas["lost_m2"], areas["added_m2"]) / m2_before[j] if m2_before[j] > 0 else 1.0
                refuse = repair_over_tolerance != "flag"
                over[j] = refuse
                outlines = shapely.GeometryCollection([shapely.boundary(before[j]), shapely.boundary(after[j])])
                issues.append(Issue(
                    "repair-changed-area", "refused" if refuse else "flagged",
                    f"{reason}; the repair would change the area from {m2_before[j]:.1f} m² to {m2_after[j]:.1f} m² "
                    f"({areas['lost_m2']:.1f} m² dropped, {areas['added_m2']:.1f} m² added: {share:.2%}, more than "
                    f"the tolerance of {repair_tolerance:.2%}); "
                    + ("refused: fix the outline or import with the repair flagged" if refuse
                       else "imported as repaired; check the outlines (drawn, then repaired)"),
                    list(records[i]), labels[i], area_m2=float(m2_after[j]), geom=outlines,
                    details={"reason": reason, **areas, "outlines": ["drawn", "repaired"]}))
            else:
                issues.append(Issue("invalid-geometry", "repaired",
                                    f"{reason}; repaired losslessly: {m2_before[j]:.1f} m² before, "
                                    f"{m2_after[j]:.1f} m² after", list(records[i]), labels[i],
                                    area_m2=float(m2_after[j]), geom=loc, details={"reason": reason, **areas}))
        geoms[live] = fixed
        refused[invalid[report.lost | over]] = True
        repaired[invalid[~report.lost & ~over]] = True
    live = np.flatnonzero(~refused)
    # One orientation (exterior counter-clockwise, RFC 7946) whatever the source format wrote.
    geoms[live] = polygonal_parts(shapely.orient_polygons(geoms[live], exterior_cw=False))
    return GeometryCheck(geoms, refused, repaired, issues)


def _signature(frame: pd.DataFrame) -> pd.Series:
    """Per row: a hashable tuple of its values (None for missing) for comparing records."""
    cols = [frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns]
    return pd.Series(list(zip(*cols, strict=True)) if cols else [()] * len(frame), index=frame.index)


@dataclass
class MergeResult:
    """Records after merging pieces: which rows survive, their geometries and records, and the issues."""

    keep: np.ndarray
    geoms: np.ndarray
    records: list[list[int]]
    refused: np.ndarray
    issues: list[Issue]
    merged_records: int


def merge_and_deduplicate(frame: pd.DataFrame, geoms: np.ndarray, key: Sequence[str], labels: Sequence[str],
                          records: Sequence[list[int]], live: np.ndarray) -> MergeResult:
    """Records sharing a key: merged when their attributes agree (split pieces), all refused when they differ."""
    n = len(frame)
    keep = live.copy()
    refused = np.zeros(n, dtype=bool)
    geoms = geoms.copy()
    records = [list(r) for r in records]
    issues: list[Issue] = []
    key = [k for k in key if k in frame.columns]
    nothing = MergeResult(keep, geoms, records, refused, issues, 0)
    if not key or not live.any():
        return nothing
    keyed = frame.loc[live, key]
    keyed = keyed[keyed.notna().any(axis=1)]
    if keyed.empty:
        return nothing
    group = _signature(keyed)
    multi = group[group.map(group.value_counts()) > 1]
    if multi.empty:
        return nothing
    gid, uniques = pd.factorize(multi)
    rows = multi.index.to_numpy()
    attrs = frame.loc[rows, [c for c in frame.columns if c not in key and not c.startswith("_")]]
    distinct = _signature(attrs).groupby(gid).nunique().to_numpy()
    pos = pd.Series(gid).groupby(gid).cumcount().to_numpy()
    first = np.full(len(uniques), -1)
    first[gid[pos == 0]] = rows[pos == 0]

    # Union every group's pieces at once: a groups × pieces array padded with None, unioned along its rows.
    table = np.full((len(uniques), int(pos.max()) + 1), None, dtype=object)
    table[gid, pos] = geoms[rows]
    polygonal = np.isin(shapely.get_type_id(geoms[first]), (3, 6))
    union = np.full(len(uniques), None, dtype=object)
    if polygonal.any():
        union[polygonal] = polygonal_parts(shapely.make_valid(shapely.union_all(table[polygonal], axis=1)))
    total = np.nansum(np.where(shapely.is_missing(table), np.nan, shapely.area(table)), axis=1)
    repeated = ~polygonal | (shapely.area(union) < 0.5 * total)

    merged_records = 0
    for g, gkey in enumerate(uniques):
        members = rows[gid == g]
        head = first[g]
        recs = sorted(r for i in members for r in records[i])
        name = ", ".join(f"{k}={v}" for k, v in zip(key, gkey, strict=True) if v is not None)
        if distinct[g] > 1:
            refused[members] = True
            keep[members] = False
            loc = shapely.point_on_surface(geoms[head]) if geoms[head] is not None else None
            issues.append(Issue("duplicate-id", "refused",
                                f"{len(members)} records share {name} but their attributes differ", recs,
                                labels[head], geom=loc))
            continue
        if polygonal[g]:
            geoms[head] = union[g]
        keep[members[members != head]] = False
        records[head] = recs
        merged_records += len(members) - 1
        kind = "duplicate-record" if repeated[g] else "split-pieces-merged"
        message = (f"{len(members)} copies of {name} merged into one" if repeated[g]
                   else f"{len(members)} pieces of {name} merged into one feature")
        issues.append(Issue(kind, "merged", message, recs, labels[head],
                            geom=shapely.point_on_surface(geoms[head]) if geoms[head] is not None else None))
    return MergeResult(keep, geoms, records, refused, issues, merged_records)


# --- checks against the database (set-based SQL on a staged temp table) ---------------------------------------

def _wkb(value):
    return shapely.from_wkb(bytes(value)) if value is not None else None


def live_codes_sql(level: str, at_param: str = "at") -> str:
    """SQL of the codes of `level` that a new unit starting at :at must not collide with (编码在用): units with a
    boundary in force at :at or starting later, and units with no boundary yet (parents derived by an import).
    A unit whose every boundary ended by :at is retired: its code no longer names anything staff cover."""
    btable, fk = BOUNDARY_TABLES[level]
    return f"""SELECT u.code FROM {level} u
               WHERE NOT EXISTS (SELECT 1 FROM {btable} b WHERE b.{fk} = u.id)
                  OR EXISTS (SELECT 1 FROM {btable} b WHERE b.{fk} = u.id
                             AND (b.valid_to IS NULL OR b.valid_to > CAST(:{at_param} AS timestamptz)))"""


def _prefix_pairs_sql(codes: str) -> str:
    """The (long, short) pairs among `codes` (a query of row_idx, code; row_idx NULL for stored codes) where the
    short code is a proper prefix of the long one and at least one side is new: one hash join of every code's
    leading digits (from :shortest on) against all the codes, set-based."""
    return f"""
        WITH codes AS ({codes})
        SELECT DISTINCT l.row_idx AS long_idx, l.code AS long_code, p.row_idx AS short_idx, p.code AS short_code
        FROM codes l
        CROSS JOIN LATERAL generate_series(:shortest, length(l.code) - 1) AS n
        JOIN codes p ON p.code = left(l.code, n)
        WHERE l.row_idx IS NOT NULL OR p.row_idx IS NOT NULL
        ORDER BY long_code, short_code
    """


def code_prefix_collisions(conn: Connection, stage: str, level: str, shortest: int, labels: Sequence[str],
                           records: Sequence[list[int]], at=None) -> list[Issue]:
    """Refuse the staged units whose code starts with another unit's code of the level, or starts another's (编码前缀
    冲突: a 15-digit grid …001 would cover the dedicated grid …0010), against the file's codes and the stored codes
    in use at `at` (the import's valid_from: `live_codes_sql`; every stored code when None)."""
    stored = f"SELECT u.code FROM ({live_codes_sql(level)}) u" if at is not None else f"SELECT u.code FROM {level} u"
    rows = conn.execute(text(_prefix_pairs_sql(f"""
            SELECT s.row_idx, s.code FROM {stage} s WHERE NOT s.refused
            UNION ALL
            SELECT NULL, u.code FROM ({stored}) u
            WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE NOT s.refused AND s.code = u.code)
    """)), {"shortest": shortest, "at": at}).all()
    issues: list[Issue] = []
    for r in rows:
        # each staged side of a pair is refused, naming the other code and where it is
        sides = ((r.long_idx, r.long_code, "starts with", r.short_code, r.short_idx),
                 (r.short_idx, r.short_code, "is the start of", r.long_code, r.long_idx))
        for idx, code, how, other, other_idx in sides:
            if idx is None:
                continue
            where = "in the file" if other_idx is not None else "in the database"
            issues.append(Issue("code-prefix-collision", "refused",
                                f"code {code} {how} the code {other} of another unit ({where}): the staff of the "
                                "shorter code would be taken to cover the longer one", list(records[idx]),
                                labels[idx], details={"codes": [r.short_code, r.long_code]}))
    refused = sorted({i for r in rows for i in (r.long_idx, r.short_idx) if i is not None})
    if refused:
        conn.execute(text(f"UPDATE {stage} SET refused = true WHERE row_idx = ANY(:ids)"), {"ids": refused})
    return sorted(issues, key=lambda i: (i.records, i.message))


def colliding_codes(conn: Connection, level: str, codes: Sequence[str], shortest: int, at) -> dict[str, list[str]]:
    """The new `codes` of `level` that collide by prefix (编码前缀冲突) with one another or with the stored codes in
    use at `at` (`live_codes_sql`), each with the codes it collides with: the check imports make, for codes made
    elsewhere (derived parents, codes a publish assigns)."""
    if not codes:
        return {}
    rows = conn.execute(text(_prefix_pairs_sql(f"""
            SELECT c.ord AS row_idx, c.code FROM unnest(CAST(:codes AS text[])) WITH ORDINALITY AS c(code, ord)
            UNION ALL
            SELECT NULL, u.code FROM ({live_codes_sql(level)}) u WHERE u.code <> ALL(CAST(:codes AS text[]))
    """)), {"codes": list(codes), "shortest": shortest, "at": at}).all()
    out: dict[str, list[str]] = {}
    for r in rows:
        if r.long_idx is not None:
            out.setdefault(r.long_code, []).append(r.short_code)
        if r.short_idx is not None:
            out.setdefault(r.short_code, []).append(r.long_code)
    return out


def outside_parent(conn: Connection, stage: str, parent_level: str, at, tolerance_m2: float,
                   labels: Sequence[str], records: Sequence[list[int]]) -> list[Issue]:
    """Features reaching outside their parent's boundary at `at` by more than the tolerance (m²)."""
    rows = conn.execute(text(f"""
        SELECT s.row_idx, s.parent_code, p.geom IS NULL AS no_boundary,
               ST_Area(ST_Difference(s.geom, p.geom)::geography) AS area,
               ST_AsBinary(ST_Difference(s.geom, p.geom)) AS loc
        FROM {stage} s
        LEFT JOIN {parent_level}_at(CAST(:at AS timestamptz)) p ON p.code = s.parent_code
        WHERE NOT s.refused AND s.parent_code IS NOT NULL
          AND (p.geom IS NULL OR NOT ST_CoveredBy(s.geom, p.geom))
    """), {"at": at}).mappings().all()
    issues = []
    for r in rows:
        i = r["row_idx"]
        if r["no_boundary"]:
            issues.append(Issue("parent-without-boundary", "flagged",
                                f"parent {r['parent_code'] or ''} has no boundary in force at {at:%Y-%m-%d %H:%M}",
                                list(records[i]), labels[i]))
        elif r["area"] is not None and r["area"] > tolerance_m2:
            issues.append(Issue("outside-parent", "flagged",
                                f"{r['area']:.1f} m² lie outside the parent {r['parent_code']}", list(records[i]),
                                labels[i], area_m2=r["area"], geom=_wkb(r["loc"])))
    return issues


def overlaps(conn: Connection, result: str, tolerance_m2: float, labels: Sequence[str],
             records: Sequence[list[int]]) -> list[Issue]:
    """Overlaps above the tolerance between units of the resulting layer, at least one of them imported."""
    rows = conn.execute(text(f"""
        SELECT a.row_idx AS a_idx, b.row_idx AS b_idx, a.code AS a_code, b.code AS b_code,
               ST_Area(ST_Intersection(a.geom, b.geom)::geography) AS area,
               ST_AsBinary(ST_Intersection(a.geom, b.geom)) AS geom
        FROM {result} a JOIN {result} b
          ON a.code < b.code AND ST_Intersects(a.geom, b.geom) AND NOT ST_Touches(a.geom, b.geom)
        WHERE a.row_idx IS NOT NULL OR b.row_idx IS NOT NULL
    """)).mappings().all()
    issues = []
    for r in rows:
        if r["area"] is None or r["area"] <= tolerance_m2:
            continue
        i = r["a_idx"] if r["a_idx"] is not None else r["b_idx"]
        other = r["b_code"] if i == r["a_idx"] else r["a_code"]
        recs = sorted(set(records[i]) | (set(records[r["b_idx"]]) if r["a_idx"] is not None
                                         and r["b_idx"] is not None else set()))
        issues.append(Issue("overlap", "flagged", f"overlaps {other} by {r['area']:.1f} m²", recs, labels[i],
                            area_m2=r["area"], geom=_wkb(r["geom"]),
                            details={"codes": [r["a_code"], r["b_code"]]}))
    return issues


def coverage_gaps(conn: Connection, result: str, parent_level: str, at, tolerance_m2: float) -> list[Issue]:
    """Parts of each affected parent covered by none of its children (the resulting layer), above the tolerance."""
    rows = conn.execute(text(f"""
        WITH kids AS (
            SELECT parent_code, ST_Union(geom) AS geom, bool_or(row_idx IS NOT NULL) AS touched
            FROM {result} GROUP BY parent_code
        ), gaps AS (
            SELECT p.code, ST_Difference(p.geom, k.geom) AS geom
            FROM kids k JOIN {parent_level}_at(CAST(:at AS timestamptz)) p ON p.code = k.parent_code
            WHERE k.touched
        )
        SELECT code, ST_Area(geom::geography) AS area, ST_AsBinary(geom) AS geom FROM gaps
        WHERE NOT ST_IsEmpty(geom)
    """), {"at": at}).mappings().all()
    return [Issue("coverage-gap", "flagged", f"{r['area']:.1f} m² of {r['code']} lie in none of its units",
                  [], r["code"], area_m2=r["area"], geom=_wkb(r["geom"]))
            for r in rows if r["area"] is not None and r["area"] > tolerance_m2]


def household_band(conn: Connection, stage: str, low: int, high: int, labels: Sequence[str],
                   records: Sequence[list[int]]) -> tuple[list[Issue], str]:
    """Comprehensive grids whose households (the file's count, else the units of the buildings inside) are
    outside [low, high]; returns the issues and where the counts came from.

    A check that cannot apply is skipped and says so: when the file gives no household counts and no unit of any
    building lies in the imported grids (boundaries loaded before their buildings), no grid is "0 households".
    """
    given_any = conn.execute(text(f"SELECT bool_or(households IS NOT NULL) FROM {stage} WHERE NOT refused")).scalar()
    rows = conn.execute(text(f"""
        WITH inside AS (
            SELECT s.row_idx, sum(u.households) AS households
            FROM {stage} s
            JOIN buildings b ON ST_Intersects(s.geom, b.geom) AND ST_Covers(s.geom, ST_PointOnSurface(b.geom))
            JOIN units u ON u.building_id = b.id
            WHERE NOT s.refused AND EXISTS (SELECT 1 FROM units)
            GROUP BY s.row_idx
        )
        SELECT s.row_idx, s.households AS given, i.households AS counted
        FROM {stage} s LEFT JOIN inside i USING (row_idx)
        WHERE NOT s.refused AND coalesce(s.kind, 'comprehensive') = 'comprehensive'
    """)).mappings().all()
    counted_any = any(r["counted"] is not None for r in rows)
    if not given_any and not counted_any:
        return [], ("none: check skipped (the file gives no households and no units lie in these grids; "
                    "import buildings and units, then check)")
    issues = []
    sources = set()
    for r in rows:
        given = r["given"]
        value = given if given is not None else ((r["counted"] or 0) if counted_any else None)
        if value is None:
            continue
        sources.add("file" if given is not None else "units in the database")
        if not low <= value <= high:
            i = r["row_idx"]
            issues.append(Issue("households-out-of-band", "flagged",
                                f"{value} households, outside the band {low}–{high}", list(records[i]), labels[i],
                                details={"households": int(value), "min": low, "max": high}))
    return issues, " and ".join(sorted(sources)) or "unknown (no households column, no units in the database)"


def metric_area(geoms: np.ndarray) -> np.ndarray:
    """Areas in m² of EPSG:4326 geometries (projected to their UTM zone)."""
    from geo.spatial.crs import to_metric

    geoms = np.asarray(geoms, dtype=object)
    present = ~shapely.is_missing(geoms)
    present[present] = ~shapely.is_empty(geoms[present])
    if not present.any():
        return np.zeros(len(geoms))
    s = gpd.GeoSeries(geoms, crs=4326)
    return np.nan_to_num(to_metric(s).area.to_numpy())
