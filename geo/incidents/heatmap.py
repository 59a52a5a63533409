"""Incident heatmaps (事件热力图) aggregated on the server, so what is sent does not grow with the incident count.

- Hexagon counts per local month, for a time slider: cells sized in metres in the district's metric frame
  (`geo.incidents.hexagons`: the one hexagon implementation, numpy and SQL, and why not ST_HexagonGrid or H3). The
  frame's origin is the district's centre rounded to 0.01°, so a cell is the same cell in every query; binning is
  arithmetic on the stored lon/lat columns; the drawn cells come from the same module, so every point lies in the
  hexagon it was counted in.
- A choropleth of incidents per 1,000 households (每千户事件数) by grid: incidents counted by the grid they were
  attributed to at report time; households of the buildings a grid boundary in force at the period's end covers
  (by a point on each building's surface, the shared-edge rule: smallest code).
- Hot and cold spots (冷热点): Getis-Ord Gi* (`geo.incidents.hotspots`) of the period's counts over every cell of
  the study area (zeros included).

Rollups: a request without class or unit filters reads the whole months of its period from the hexagon rollup
(`geo.incidents.heat_rollup`: a size is built on its first such request, without blocking incident writes), and
the grid choropleth's counts from `incident_rollup` (migration 0011); the partial months at the period's ends come
from the incidents. Both paths give the same numbers (tests/test_incident_rollup.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from geo.incidents.closed_loop import unit_and_class_filters
from geo.incidents.errors import InvalidQuery
from geo.incidents.heat_rollup import built_sql, ensure_heat_rollup
from geo.incidents.hexagons import (
    SQRT3,
    LocalFrame,
    cell_lattice,
    hex_axial_sql,
    hex_cells_in,
    hex_centres,
    hex_polygons,
)
from geo.incidents.hotspots import HOTSPOT_LABELS, getis_ord
from geo.incidents.kpi import rollup_level, rollup_timezone
from geo.incidents.periods import month_starts, whole_months
from geo.store.units import grid_code_of, level_of
from geo.store.versions import in_force

MIN_CELL_M = 20.0
MAX_CELL_M = 5000.0
#: A size made coarser to bound the answer is rounded up to a multiple of this, so few sizes recur (and the
#: hexagon rollup of each is reused).
CELL_STEP_M = 10.0


@dataclass
class HeatmapQuery:
    """What to aggregate: a period [start, end), filters, the cell size and the Gi* settings."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    class_code: str | None = None
    street: str | None = None
    community: str | None = None
    grid: str | None = None
    scope: str | None = None  # the caller's jurisdiction code
    #: Closed-loop states kept (empty: every state); the rollups have no state key.
    states: tuple[str, ...] = ()
    cell_m: float = 150.0
    timezone: str = "Asia/Shanghai"
    permutations: int = 999
    seed: int = 20240601
    #: Upper bound on cells × (months + 2) kept in one answer; larger requests get coarser cells.
    max_values: int = 250_000
    #: Read whole months from the rollups (registering the hexagon size when missing); False: incidents only.
    use_rollup: bool = True

    def where(self, alias: str = "i") -> tuple[str, dict]:
        """Filters on incidents (period, class, units, jurisdiction)."""
        parts, params = unit_and_class_filters(alias, self.class_code, scope=self.scope, street=self.street,
                                               community=self.community, grid=self.grid)
        if self.states:
            parts.append(f"{alias}.state = ANY(:states)")
            params["states"] = list(self.states)
        if self.start:
            parts.append(f"{alias}.reported_at >= :start")
            params["start"] = self.start
        if self.end:
            parts.append(f"{alias}.reported_at < :end")
            params["end"] = self.end
        return " AND ".join(parts) or "TRUE", params

    def unfiltered(self) -> bool:
        """No class, state or unit filter and no jurisdiction: the hexagon rollup (which has no such keys) applies."""
        return not (self.class_code or self.street or self.community or self.grid or self.scope or self.states)

    def area_code(self) -> str | None:
        """The most specific unit code bounding the study area (filters, else the jurisdiction)."""
        codes = [c for c in (self.grid, self.community, self.street, self.scope) if c]
        return max(codes, key=len) if codes else None


@dataclass
class Heatmap:
    """The aggregates of one query."""

    query: HeatmapQuery
    frame: LocalFrame
    cell_m: float
    months: list[str]
    cells: pd.DataFrame  # q, r, x, y (metric centre), lon, lat, total, in_area, gi_z, gi_p, hotspot
    monthly: np.ndarray  # months × cells counts
    grids: pd.DataFrame  # id, code, name, incidents, households, per_1000, geojson
    incident_count: int
    permutations: int
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# queries


def district_frame(conn: Connection) -> LocalFrame:
    """The district's metric frame: origin at the centre of the street boundaries (else of the incidents), rounded
    to 0.01° so that it, and every hexagon, stays put while the data changes."""
    row = conn.execute(text(
        "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Extent(geom)::geometry) AS c FROM street_boundaries) s"
    )).first()
    if row is None or row[0] is None:
        row = conn.execute(text("SELECT avg(lon), avg(lat) FROM (SELECT lon, lat FROM incidents LIMIT 10000) s")
                           ).first()
    if row is None or row[0] is None:
        return LocalFrame(121.47, 31.23)  # an empty store: any frame answers "nothing" the same way
    return LocalFrame(round(float(row[0]), 2), round(float(row[1]), 2))


def default_period(conn: Connection, q: HeatmapQuery, months: int = 12) -> tuple[dt.datetime, dt.datetime]:
    """The last `months` months of data matching the filters (by report time), when no period is given."""
    where, params = HeatmapQuery(class_code=q.class_code, street=q.street, community=q.community, grid=q.grid,
                                 scope=q.scope).where()
    last = conn.execute(text(f"SELECT max(i.reported_at) FROM incidents i WHERE {where}"), params).scalar()
    end = q.end or ((last + dt.timedelta(microseconds=1)) if last else dt.datetime.now(dt.UTC))
    start = q.start or conn.execute(
        text("SELECT date_trunc('month', (CAST(:end AS timestamptz) AT TIME ZONE :tz) - make_interval(months => :m)"
             " + interval '1 month') AT TIME ZONE :tz"),
        {"end": end, "tz": q.timezone, "m": months},
    ).scalar_one()
    return start, end


def period_months(conn: Connection, q: HeatmapQuery
                  ) -> tuple[dt.datetime, dt.datetime, LocalFrame, list[dt.datetime], list[str]]:
    """Fill `q`'s period when it is open (the last 12 months with data) and check it; then its start and end, the
    district's frame, the local month boundaries of the period and the months' labels (YYYY-MM)."""
    if q.start is None or q.end is None:
        q.start, q.end = default_period(conn, q)
    if q.end <= q.start:
        raise InvalidQuery("the period's end must come after its start")
    bounds = month_starts(q.start, q.end, q.timezone)
    return q.start, q.end, district_frame(conn), bounds, [m.strftime("%Y-%m") for m in bounds[:-1]]


def month_labels(start: dt.datetime, end: dt.datetime, tz: str) -> list[str]:
    """'YYYY-MM' of every local month the period [start, end) touches."""
    return [m.strftime("%Y-%m") for m in month_starts(start, end, tz)[:-1]]


def study_area(conn: Connection, q: HeatmapQuery, frame: LocalFrame):
    """The area the hot-spot analysis covers, in the frame's metres: the filtered unit's boundary at the period's
    end, else the union of the street boundaries then in force."""
    code = q.area_code()
    at = q.end or dt.datetime.now(dt.UTC)
    if code:
        level = level_of(conn, code) or "micro_grids"
        sql = f"SELECT ST_AsBinary(ST_Union(geom)) FROM {level}_at(:at) WHERE code = :code"
        params = {"at": at, "code": code}
    else:
        sql = "SELECT ST_AsBinary(ST_Union(geom)) FROM streets_at(:at)"
        params = {"at": at}
    wkb = conn.execute(text(sql), params).scalar()
    return frame.to_metric(shapely.from_wkb(bytes(wkb))) if wkb is not None else None


def _empty_counts() -> pd.DataFrame:
    return pd.DataFrame({"q": [], "r": [], "month": [], "n": []}).astype({"q": np.int64, "r": np.int64, "n": np.int64})


def hex_counts(conn: Connection, q: HeatmapQuery, frame: LocalFrame, size: float,
               months: list[dt.datetime] | None = None) -> pd.DataFrame:
    """Incident counts per hexagon and local month: columns q, r, month ('YYYY-MM'), n.

    One aggregate per month, concatenated: each is small enough for the planner to aggregate inside its parallel
    workers (over an index-only scan of ix_incidents_heat), and the month needs no per-row computation. Whole
    months of an unfiltered query come from incident_heat_rollup instead (when `q.use_rollup`).
    """
    where, params = q.where("i")
    if months is None:
        lo, hi = conn.execute(text(f"SELECT min(i.reported_at), max(i.reported_at) FROM incidents i WHERE {where}"),
                              params).one()
        if lo is None:
            return _empty_counts()
        months = month_starts(lo, hi + dt.timedelta(microseconds=1), q.timezone)
    whole = []
    if q.use_rollup and q.unfiltered() and len(months) > 1 and rollup_timezone(conn) == q.timezone:
        whole = [k for k in range(len(months) - 1)
                 if (q.start is None or months[k] >= q.start) and (q.end is None or months[k + 1] <= q.end)]
        if whole and not ensure_heat_rollup(conn, frame, size):
            whole = []
    counts = _hex_counts(conn, where, params, frame, size, months, whole)
    if counts is None:  # the size was retired between the check and the read: the incidents answer
        counts = _hex_counts(conn, where, params, frame, size, months, [])
    return counts if counts is not None else _empty_counts()


def _hex_counts(conn: Connection, where: str, params: dict, frame: LocalFrame, size: float,
                months: list[dt.datetime], whole: list[int]) -> pd.DataFrame | None:
    """`hex_counts` with the months `whole` from the rollup; None when the rollup no longer holds the size."""
    x, y = frame.forward_sql("i.lon", "i.lat")
    cq, cr = hex_axial_sql(x, y, size)
    branches = []
    for k in range(len(months) - 1):
        if k in whole:
            continue
        window = f"i.reported_at >= :m{k} AND i.reported_at < :m{k + 1}"
        branches.append(f"""
            SELECT q, r, {k} AS month, count(*) AS n FROM (
                SELECT {cq} AS q, {cr} AS r FROM incidents i WHERE {where} AND {window}) h
            GROUP BY q, r""")
    built, built_params = built_sql(frame, size) if whole else ("TRUE", {})
    if whole:  # consecutive whole months: one range of the rollup's primary key
        branches.append(f"""
            SELECT h.q, h.r, width_bucket(h.month, CAST(:months AS timestamptz[])) - 1 AS month, h.n
            FROM incident_heat_rollup h
            WHERE h.cell_m = :cell_m AND h.month >= :m{whole[0]} AND h.month < :m{whole[-1] + 1} AND h.n <> 0""")
    if not branches:
        return _empty_counts()
    # JIT compiling these expressions costs more than it saves
    conn.execute(text("SET LOCAL jit = off"))
    # four arrays in one row: 100,000 result rows would cost more in the client than in the database; and whether
    # the rollup still held the size, seen from the same snapshot
    *arrays, still_built = conn.execute(
        text(f"SELECT array_agg(q), array_agg(r), array_agg(month), array_agg(n), {built} "
             f"FROM ({' UNION ALL '.join(branches)}) u"),
        {**params, **built_params, **{f"m{k}": m for k, m in enumerate(months)}, "months": list(months),
         "cell_m": float(size)}).one()
    if not still_built:
        return None
    labels = np.array([m.strftime("%Y-%m") for m in months[:-1]], dtype=object)
    df = pd.DataFrame({c: np.asarray(a or [], dtype=np.int64)
                       for c, a in zip(("q", "r", "k", "n"), arrays, strict=True)})
    df["month"] = labels[df["k"].to_numpy(dtype=np.int64)] if len(df) else []
    return df[["q", "r", "month", "n"]].astype({"q": np.int64, "r": np.int64, "n": np.int64})


#: Households per grid, by (database, grid boundaries in force, buildings and units fingerprints): they change only
#: when those do, and locating 80,000 buildings costs about a second.
_HOUSEHOLDS_CACHE: OrderedDict[tuple, dict[int, int]] = OrderedDict()
_HOUSEHOLDS_CACHE_SIZE = 8


def _households_key(conn: Connection, at: dt.datetime) -> tuple:
    row = conn.execute(text(
        f"""
        SELECT current_database(),
               (SELECT md5(coalesce(string_agg(b.id::text, ',' ORDER BY b.id), '')) FROM grid_boundaries b
                 WHERE {in_force("b", ":at")}),
               (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || coalesce(max(xmin::text::bigint), 0)
                  FROM buildings),
               (SELECT count(*) || ':' || coalesce(sum(households), 0) || ':' ||
                       coalesce(max(xmin::text::bigint), 0) FROM units),
               (SELECT count(*) || ':' || coalesce(max(xmin::text::bigint), 0) FROM grids),
               (SELECT coalesce(max(xmin::text::bigint), 0) FROM grid_boundaries)
        """), {"at": at}).one()
    return tuple(row)


#: Grid outlines (id, code, name, simplified geometry) by (_households_key, simplification, frame): they change
#: only with the grids and their boundaries, and simplifying 10,000 outlines costs a quarter of a second.
_OUTLINES_CACHE: OrderedDict[tuple, pd.DataFrame] = OrderedDict()


def grid_outlines(conn: Connection, at: dt.datetime, simplify_m: float, key: tuple | None = None) -> pd.DataFrame:
    """The grids in force at `at` in code order: id, code, name and the outline simplified to `simplify_m` metres
    (WGS-84 shapely geometries). Cached."""
    frame = district_frame(conn)
    full_key = (key or _households_key(conn, at), float(simplify_m), frame)
    if full_key in _OUTLINES_CACHE:
        _OUTLINES_CACHE.move_to_end(full_key)
        return _OUTLINES_CACHE[full_key]
    rows = conn.execute(text("SELECT id, code, name, ST_AsBinary(geom) FROM grids_at(:at) ORDER BY code"),
                        {"at": at}).all()
    df = pd.DataFrame.from_records([tuple(r) for r in rows], columns=["id", "code", "name", "wkb"])
    geoms = shapely.from_wkb([bytes(w) for w in df["wkb"]]) if len(df) else np.empty(0, dtype=object)
    df["geometry"] = frame.to_wgs84(shapely.simplify(frame.to_metric(geoms), simplify_m, preserve_topology=True)) \
        if len(df) else geoms
    df = df.drop(columns="wkb")
    _OUTLINES_CACHE[full_key] = df
    while len(_OUTLINES_CACHE) > _HOUSEHOLDS_CACHE_SIZE:
        _OUTLINES_CACHE.popitem(last=False)
    return df


def households_by_grid(conn: Connection, at: dt.datetime, key: tuple | None = None) -> dict[int, int]:
    """Households per grid id: a building's units count in the grid whose boundary in force at `at` covers a point
    on the building's surface (smallest code on shared edges, as everywhere). Vectorised, cached."""
    key = key or _households_key(conn, at)
    if key in _HOUSEHOLDS_CACHE:
        _HOUSEHOLDS_CACHE.move_to_end(key)
        return _HOUSEHOLDS_CACHE[key]
    b = conn.execute(text(
        "SELECT u.hh, ST_X(p.g), ST_Y(p.g) FROM (SELECT building_id, sum(households) AS hh FROM units "
        "GROUP BY building_id) u JOIN buildings bl ON bl.id = u.building_id "
        "CROSS JOIN LATERAL (SELECT ST_PointOnSurface(bl.geom) AS g) p"
    )).all()
    g = conn.execute(text("SELECT id, ST_AsBinary(geom) FROM grids_at(:at) ORDER BY code"), {"at": at}).all()
    out: dict[int, int] = {}
    if b and g:
        hh = np.array([r[0] for r in b], dtype=np.int64)
        pts = shapely.points(np.array([r[1] for r in b]), np.array([r[2] for r in b]))
        ids = np.array([r[0] for r in g], dtype=np.int64)
        tree = shapely.STRtree(shapely.from_wkb([bytes(r[1]) for r in g]))
        pi, gi = tree.query(pts, predicate="covered_by")
        order = np.lexsort((gi, pi))  # grids are in code order: the first hit per building is the smallest code
        pi, gi = pi[order], gi[order]
        first = np.r_[True, pi[1:] != pi[:-1]] if pi.size else np.zeros(0, bool)
        sums = np.bincount(gi[first], weights=hh[pi[first]], minlength=len(ids))
        out = {int(i): int(v) for i, v in zip(ids, sums, strict=True) if v}
    _HOUSEHOLDS_CACHE[key] = out
    while len(_HOUSEHOLDS_CACHE) > _HOUSEHOLDS_CACHE_SIZE:
        _HOUSEHOLDS_CACHE.popitem(last=False)
    return out


def grid_rollup_span(conn: Connection, q: HeatmapQuery) -> tuple[dt.datetime, dt.datetime] | None:
    """The whole months of the period whose incidents per grid incident_rollup can count (None: read incidents)."""
    if not q.use_rollup or q.start is None or q.end is None or q.states:
        return None  # incident_rollup has no state key
    if any(c and len(c) not in (9, 12, 15) for c in (q.scope, q.street, q.community, q.grid)):
        return None  # micro-grids are not a rollup key
    tz = rollup_timezone(conn)
    return whole_months(q.start, q.end, tz) if tz else None


def grid_rates(conn: Connection, q: HeatmapQuery, at: dt.datetime, simplify_m: float = 2.0) -> pd.DataFrame:
    """Per grid in force at `at` (inside the filters): incidents, households, incidents per 1,000 households and
    the outline simplified to `simplify_m` metres (WGS-84 shapely geometries)."""
    where, params = q.where("i")
    code = q.area_code()
    if code:  # a micro-grid: its grid
        code = grid_code_of(conn, code)
    counts = f"SELECT i.grid_id, count(*) AS incidents FROM incidents i WHERE {where} GROUP BY i.grid_id"
    span = grid_rollup_span(conn, q)
    if span:  # whole months from incident_rollup (received = reported in the period), the ends from incidents
        params.update(m1=span[0], m2=span[1], level=rollup_level("grid", q.class_code, None))
        units, _ = HeatmapQuery(class_code=q.class_code, street=q.street, community=q.community, grid=q.grid,
                                scope=q.scope).where("r")
        counts = f"""
            SELECT grid_id, sum(n)::bigint AS incidents FROM (
                SELECT i.grid_id, count(*) AS n FROM incidents i
                WHERE {where} AND (i.reported_at < :m1 OR i.reported_at >= :m2) GROUP BY i.grid_id
                UNION ALL
                SELECT r.grid_id, sum(r.received) FROM incident_rollup r
                WHERE r.level = :level AND r.month >= :m1 AND r.month < :m2 AND {units}
                GROUP BY r.grid_id) u
            GROUP BY grid_id"""
    rows = conn.execute(text(f"SELECT grid_id, incidents FROM ({counts}) n WHERE grid_id IS NOT NULL"), params).all()
    counts_by_grid: dict[int, int] = {int(g): int(n) for g, n in rows}
    key = _households_key(conn, at)
    df = grid_outlines(conn, at, simplify_m, key)
    if code:
        df = df[df["code"].str.startswith(code)]
    df = df.reset_index(drop=True).copy()
    df["incidents"] = df["id"].map(counts_by_grid).fillna(0).astype(np.int64)
    df["households"] = df["id"].map(households_by_grid(conn, at, key)).fillna(0).astype(np.int64)
    df = df[["id", "code", "name", "incidents", "households", "geometry"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        df["per_1000"] = np.where(df["households"] > 0, 1000.0 * df["incidents"] / df["households"].clip(lower=1),
                                  np.nan)
    return df


def choose_cell_size(area, requested: float, months: int, max_values: int) -> float:
    """The requested cell size, made coarser when the area would need more than `max_values` cell-months."""
    size = min(max(float(requested), MIN_CELL_M), MAX_CELL_M)
    if area is None or area.is_empty:
        return size
    cell_area = 1.5 * SQRT3 * size * size
    cells = area.area / cell_area
    budget = max_values / (months + 2)
    if cells > budget:
        size = size * math.sqrt(cells / budget) * 1.05
        size = min(MAX_CELL_M, math.ceil(size / CELL_STEP_M) * CELL_STEP_M)
    return size


def build_heatmap(conn: Connection, q: HeatmapQuery, with_grids: bool = True,
                  with_hotspots: bool = True) -> Heatmap:
    """Aggregate incidents into hexagons per month, grids per 1,000 households, and Gi* hot/cold spots."""
    timings: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    _, end, frame, bounds, months = period_months(conn, q)
    area = study_area(conn, q, frame)
    size = choose_cell_size(area, q.cell_m, len(months), q.max_values)
    if size > q.cell_m * 1.0001:
        notes.append(f"单元格由 {q.cell_m:g} 米放大到 {size:.0f} 米，以控制数据量")
    timings["setup_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    counts = hex_counts(conn, q, frame, size, bounds)
    timings["hex_sql_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    aq, ar = hex_cells_in(area, size)
    keys = pd.concat([pd.DataFrame({"q": aq, "r": ar}), counts[["q", "r"]]]).drop_duplicates(ignore_index=True)
    keys = keys.sort_values(["r", "q"], ignore_index=True)
    area_keys = pd.MultiIndex.from_arrays([aq, ar])
    keys["in_area"] = pd.MultiIndex.from_frame(keys[["q", "r"]]).isin(area_keys) if len(aq) else False
    cell_index = pd.Series(np.arange(len(keys)), index=pd.MultiIndex.from_frame(keys[["q", "r"]]))
    month_index = {m: k for k, m in enumerate(months)}
    monthly = np.zeros((len(months), len(keys)), dtype=np.int64)
    if len(counts):
        ci = cell_index.reindex(pd.MultiIndex.from_frame(counts[["q", "r"]])).to_numpy()
        mi = counts["month"].map(month_index).to_numpy()
        ok = ~pd.isna(mi)
        np.add.at(monthly, (mi[ok].astype(np.int64), ci[ok].astype(np.int64)), counts["n"].to_numpy()[ok])
    keys["total"] = monthly.sum(axis=0)
    x, y = hex_centres(keys["q"].to_numpy(), keys["r"].to_numpy(), size)
    lon, lat = frame.inverse(x, y)
    keys["x"], keys["y"], keys["lon"], keys["lat"] = x, y, lon, lat
    timings["cells_s"] = time.perf_counter() - t0

    keys["gi_z"], keys["gi_p"], keys["hotspot"] = np.nan, np.nan, 0
    if with_hotspots and len(keys):
        t0 = time.perf_counter()
        z, p, cls = getis_ord(keys["total"].to_numpy(), keys["q"].to_numpy(), keys["r"].to_numpy(),
                              q.permutations, q.seed)
        keys["gi_z"], keys["gi_p"], keys["hotspot"] = z, p, cls
        timings["getis_ord_s"] = time.perf_counter() - t0

    grids = pd.DataFrame(columns=["id", "code", "name", "incidents", "households", "geometry", "per_1000"])
    if with_grids:
        t0 = time.perf_counter()
        grids = grid_rates(conn, q, end)
        timings["grids_sql_s"] = time.perf_counter() - t0
    return Heatmap(query=q, frame=frame, cell_m=size, months=months, cells=keys, monthly=monthly, grids=grids,
                   incident_count=int(monthly.sum()), permutations=q.permutations if with_hotspots else 0,
                   timings=timings, notes=notes)


# ---------------------------------------------------------------------------------------------------------------
# outputs


def _num(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return v


def hex_geojson(h: Heatmap) -> dict:
    """The hexagons as a GeoJSON FeatureCollection (WGS-84) with totals, monthly counts and Gi* results."""
    polys = h.frame.to_wgs84(hex_polygons(h.cells["x"].to_numpy(), h.cells["y"].to_numpy(), h.cell_m))
    coords = [[[round(x, 6), round(y, 6)] for x, y in shapely.get_coordinates(p).tolist()] for p in polys]
    features = []
    for k, row in enumerate(h.cells.itertuples(index=False)):
        monthly = {m: int(h.monthly[j, k]) for j, m in enumerate(h.months) if h.monthly[j, k]}
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [coords[k]]},
            "properties": {"q": int(row.q), "r": int(row.r), "count": int(row.total), "months": monthly,
                           "in_area": bool(row.in_area), "gi_z": _num(float(row.gi_z)),
                           "gi_p": _num(float(row.gi_p)), "hotspot": int(row.hotspot),
                           "hotspot_label": HOTSPOT_LABELS[int(row.hotspot)]},
        })
    return {"type": "FeatureCollection", "features": features, "properties": meta(h)}


def grid_geojson(h: Heatmap) -> dict:
    """The grid choropleth as a GeoJSON FeatureCollection."""
    features = [
        {"type": "Feature", "geometry": json.loads(shapely.to_geojson(g.geometry)),
         "properties": {"code": g.code, "name": g.name, "incidents": int(g.incidents),
                        "households": int(g.households), "per_1000": _num(float(g.per_1000))}}
        for g in h.grids.itertuples(index=False)
    ]
    return {"type": "FeatureCollection", "features": features, "properties": meta(h)}


def meta(h: Heatmap) -> dict:
    """What the aggregates are: period, filters, cell size, Gi* method."""
    q = h.query
    return {
        "from": q.start.isoformat() if q.start else None,
        "to": q.end.isoformat() if q.end else None,
        "class": q.class_code, "street": q.street, "community": q.community, "grid": q.grid,
        "cell_m": round(h.cell_m, 1), "cell_shape": "hexagon (pointy-top), circumradius = edge length, metres",
        "metric_frame": h.frame.describe(), "months": h.months, "incidents": h.incident_count,
        "hotspots": {"method": "Getis-Ord Gi* (esda.G_Local, star=True, binary contiguity of the six neighbours); "
                               "conditional permutations as esda's crand, vectorised in numpy",
                     "permutations": h.permutations,
                     "p_value": "two-sided conditional-permutation pseudo p-value (2 × esda p_sim, at most 1)",
                     "classes": {str(k): v for k, v in HOTSPOT_LABELS.items()}} if h.permutations else None,
        "notes": h.notes,
    }


#: Grid outlines in the compact form: integer steps of this many degrees (about 1 m; outlines are simplified to 2 m).
GRID_QUANTUM_DEG = 1e-5

COMPACT_ENCODING = (
    "hexagon k is centred at [lon, lat] = lattice.origin + hex.q[k]·lattice.step_q + hex.r[k]·lattice.step_r; its "
    "corners are that centre + each of lattice.corners (in the metric frame: centre x = cell_m·√3·(q + r/2), "
    "y = cell_m·1.5·r; lon = lon0 + x/kx, lat = lat0 + y/ky). monthly[m][a] is the count of cell active[a] in month m "
    "(cells never active are all zero). hot: [cell, class, z, p]. Grid rings: integers in steps of 1e-5° from "
    "(lon0, lat0), each vertex as the step from the previous one (x, y pairs); grids are columns: grids[field][i] "
    "for grid i."
)


def _delta_rings(geometry, lon0: float, lat0: float) -> list[list[list[int]]]:
    """A shapely (Multi)Polygon as polygons → rings → flat [dx, dy, …] integer steps of GRID_QUANTUM_DEG."""
    out = []
    for polygon in shapely.get_parts(geometry):
        rings = []
        for ring in [polygon.exterior, *polygon.interiors]:
            xy = np.rint((shapely.get_coordinates(ring) - [lon0, lat0]) / GRID_QUANTUM_DEG).astype(np.int64)
            steps = np.diff(xy, axis=0, prepend=np.zeros((1, 2), dtype=np.int64))
            rings.append(steps.ravel().tolist())
        out.append(rings)
    return out


def decode_rings(rings: list[list[list[int]]], lon0: float, lat0: float) -> list[list[list[tuple[float, float]]]]:
    """The inverse of the compact grid encoding: polygons → rings → (lon, lat) vertices."""
    out = []
    for polygon in rings:
        decoded = []
        for flat in polygon:
            xy = np.cumsum(np.asarray(flat, dtype=np.int64).reshape(-1, 2), axis=0) * GRID_QUANTUM_DEG
            decoded.append([(lon0 + x, lat0 + y) for x, y in xy.tolist()])
        out.append(decoded)
    return out


def compact(h: Heatmap) -> dict:
    """A compact JSON form for pages and dashboards (see COMPACT_ENCODING): cells as axial integers with the
    lattice that places them (`hexagons.cell_lattice`), per-month counts of the cells that have any, Gi* results of
    the significant cells, grid outlines as integer steps. Its size follows the number of cells, months and grids,
    not of incidents."""
    c, g = h.cells, h.grids
    active = np.flatnonzero(c["total"].to_numpy() > 0)
    hot = np.flatnonzero(c["hotspot"].to_numpy() != 0)
    f = h.frame
    return {
        "meta": meta(h),
        "encoding": COMPACT_ENCODING,
        "frame": {"lon0": f.lon0, "lat0": f.lat0, "kx": f.kx, "ky": f.ky},
        "cell_m": h.cell_m,
        "lattice": cell_lattice(f, h.cell_m),
        "hex": {"q": c["q"].astype(int).tolist(), "r": c["r"].astype(int).tolist(),
                "total": c["total"].astype(int).tolist()},
        "active": active.tolist(),
        "monthly": h.monthly[:, active].tolist(),
        "hot": [[int(k), int(c["hotspot"].iat[k]), round(float(c["gi_z"].iat[k]), 2),
                 round(float(c["gi_p"].iat[k]), 4)] for k in hot],
        # grids as columns (no repeated keys): grids[field][i] describes grid i
        "grids": {
            "code": g["code"].tolist(),
            "name": g["name"].tolist(),
            "incidents": g["incidents"].astype(int).tolist(),
            "households": g["households"].astype(int).tolist(),
            "per_1000": [None if not math.isfinite(v) else round(v, 1) for v in g["per_1000"].astype(float).tolist()],
            "rings": [_delta_rings(geom, f.lon0, f.lat0) for geom in g["geometry"]],
        },
    }
