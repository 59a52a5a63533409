"""Incident heatmaps (事件热力图) aggregated on the server, so what is sent does not grow with the incident count.

- Hexagons sized in metres: pointy-top hexagons of circumradius (= edge length) `cell_m` in the district's local
  metric frame (`LocalFrame`: an equirectangular projection tangent at the district's centre, its scale taken from
  the WGS-84 ellipsoid there; within 10 km of the centre lengths are off by under 0.1 %). The frame's origin is
  the centre rounded to 0.01°, so a cell is the same cell in every query. Binning is plain arithmetic on the
  stored lon/lat columns in SQL (axial coordinates with cube rounding), per local month, for a time slider; the
  drawn hexagons come from the same frame, so every point lies in the hexagon it was counted in.
- A choropleth of incidents per 1,000 households (每千户事件数) by grid: incidents counted by the grid they were
  attributed to at report time; households of the buildings a grid boundary in force at the period's end covers
  (by a point on each building's surface, the shared-edge rule: smallest code).
- Hot and cold spots (冷热点): Getis-Ord Gi* (esda.G_Local, star=True, binary hexagon contiguity) of the period's
  counts over every cell of the study area (zeros included), with conditional permutation pseudo p-values.

Rollups (migration 0011, kept by triggers in every write's transaction): a request without class or unit filters
reads the whole months of its period from `incident_heat_rollup` (counts per hexagon size, month and cell, for the
sizes registered in `incident_heat_sizes` with the frame they were binned in; a size is registered and built on its
first such request), and the grid choropleth's counts from `incident_rollup`; the partial months at the period's
ends come from the incidents. Both paths give the same numbers (tests/test_incident_rollup.py).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from geo.incidents.kpi import month_starts, rollup_level, rollup_timezone, whole_months
from geo.incidents.closed_loop import IncidentError, unit_and_class_filters

SQRT3 = math.sqrt(3.0)
#: Axial offsets of a hexagon's six neighbours.
NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, -1), (-1, 1))
#: Gi* significance classes: (confidence, p-value threshold), strictest first.
CONFIDENCE = ((99, 0.01), (95, 0.05), (90, 0.10))
HOTSPOT_LABELS = {3: "热点 (99%)", 2: "热点 (95%)", 1: "热点 (90%)", 0: "不显著",
                  -1: "冷点 (90%)", -2: "冷点 (95%)", -3: "冷点 (99%)"}

MIN_CELL_M = 20.0
MAX_CELL_M = 5000.0
#: A size made coarser to bound the answer is rounded up to a multiple of this, so few sizes recur (and the
#: hexagon rollup of each is reused).
CELL_STEP_M = 10.0
#: Hexagon sizes kept in incident_heat_rollup at most (every write to incidents maintains each one).
MAX_ROLLUP_SIZES = 4


WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3


@dataclass(frozen=True)
class LocalFrame:
    """Metres east and north of an origin: x = (lon − lon0)·kx, y = (lat − lat0)·ky, with kx, ky the ellipsoid's
    metres per degree at the origin (prime-vertical and meridian radii of curvature)."""

    lon0: float
    lat0: float

    @property
    def kx(self) -> float:
        phi = math.radians(self.lat0)
        n = WGS84_A / math.sqrt(1.0 - WGS84_E2 * math.sin(phi) ** 2)
        return math.radians(1.0) * n * math.cos(phi)

    @property
    def ky(self) -> float:
        phi = math.radians(self.lat0)
        m = WGS84_A * (1.0 - WGS84_E2) / (1.0 - WGS84_E2 * math.sin(phi) ** 2) ** 1.5
        return math.radians(1.0) * m

    def forward(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """(lon, lat) degrees → (x, y) metres."""
        return ((np.asarray(lon, dtype=np.float64) - self.lon0) * self.kx,
                (np.asarray(lat, dtype=np.float64) - self.lat0) * self.ky)

    def inverse(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) metres → (lon, lat) degrees."""
        return (np.asarray(x, dtype=np.float64) / self.kx + self.lon0,
                np.asarray(y, dtype=np.float64) / self.ky + self.lat0)

    def to_metric(self, geom):
        """A WGS-84 shapely geometry in the frame's metres."""
        return shapely.transform(geom, lambda xy: np.column_stack(self.forward(xy[:, 0], xy[:, 1])))

    def to_wgs84(self, geom):
        """A shapely geometry in the frame's metres back to WGS-84."""
        return shapely.transform(geom, lambda xy: np.column_stack(self.inverse(xy[:, 0], xy[:, 1])))

    def describe(self) -> str:
        """The frame in words, for the aggregates' metadata."""
        return (f"local equirectangular frame at ({self.lon0:.2f}°E, {self.lat0:.2f}°N), "
                f"{self.kx:.1f} m per degree east, {self.ky:.1f} m per degree north")


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
        if self.start:
            parts.append(f"{alias}.reported_at >= :start")
            params["start"] = self.start
        if self.end:
            parts.append(f"{alias}.reported_at < :end")
            params["end"] = self.end
        return " AND ".join(parts) or "TRUE", params

    def unfiltered(self) -> bool:
        """No class or unit filter and no jurisdiction: the hexagon rollup (which has no such keys) applies."""
        return not (self.class_code or self.street or self.community or self.grid or self.scope)

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
# hexagon geometry (vectorised)


def hex_centres(q: np.ndarray, r: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Metric centres of pointy-top hexagons with axial coordinates (q, r) and circumradius `size`."""
    q = np.asarray(q, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    return size * SQRT3 * (q + r / 2.0), size * 1.5 * r


def hex_axial(x: np.ndarray, y: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial coordinates of the hexagon holding each metric point, the numpy twin of the SQL in `_round_sql`.

    Charles Chambers' floor-only formula (three floors instead of cube rounding's comparisons): with
    a = x/(√3·size), b = y/(√3·size), t = ⌊a + √3·b + 1⌋, q' = ⌊(⌊2a + 1⌋ + t)/3⌋, r = ⌊(t + ⌊√3·b − a + 1⌋)/3⌋
    and q = q' − r. `hex_axial_cube` is the textbook cube rounding it is tested against.
    """
    a = np.asarray(x, dtype=np.float64) / (SQRT3 * size)
    b = np.asarray(y, dtype=np.float64) / (SQRT3 * size)
    t = np.floor(a + SQRT3 * b + 1.0)
    qq = np.floor((np.floor(2.0 * a + 1.0) + t) / 3.0)
    r = np.floor((t + np.floor(SQRT3 * b - a + 1.0)) / 3.0)
    return (qq - r).astype(np.int64), r.astype(np.int64)


def hex_axial_cube(x: np.ndarray, y: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial coordinates by cube rounding (the textbook method)."""
    qf = (SQRT3 / 3.0 * np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64) / 3.0) / size
    rf = (2.0 / 3.0 * np.asarray(y, dtype=np.float64)) / size
    sf = -qf - rf
    rq, rr, rs = np.round(qf), np.round(rf), np.round(sf)
    dq, dr, ds = np.abs(rq - qf), np.abs(rr - rf), np.abs(rs - sf)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    q = np.where(fix_q, -rr - rs, rq)
    r = np.where(fix_r, -rq - rs, rr)
    return q.astype(np.int64), r.astype(np.int64)


def hex_polygons(x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """Hexagon polygons (metric) around the centres."""
    angles = np.deg2rad(30.0 + 60.0 * np.arange(6))
    vx = np.asarray(x)[:, None] + size * np.cos(angles)[None, :]
    vy = np.asarray(y)[:, None] + size * np.sin(angles)[None, :]
    ring = np.stack([vx, vy], axis=-1)
    ring = np.concatenate([ring, ring[:, :1, :]], axis=1)
    return shapely.polygons(ring)


def _round_sql(x: str, y: str, size: float) -> str:
    """SQL selecting axial (q, r) and `month` from a subquery `pts` of metric x, y: the formula of `hex_axial`."""
    k = SQRT3 * float(size)
    return f"""
        SELECT (qq - rr)::int AS q, rr::int AS r, month
        FROM (SELECT floor((floor(2.0 * a + 1.0) + t) / 3.0) AS qq, floor((t + floor({SQRT3!r} * b - a + 1.0)) / 3.0) AS rr,
                     month
              FROM (SELECT a, b, floor(a + {SQRT3!r} * b + 1.0) AS t, month
                    FROM (SELECT {x} / {k!r} AS a, {y} / {k!r} AS b, month FROM pts) ab) t) h"""


# ---------------------------------------------------------------------------------------------------------------
# queries


def district_frame(conn: Connection) -> LocalFrame:
    """The district's metric frame: origin at the centre of the street boundaries (else of the incidents), rounded
    to 0.01° so that it, and every hexagon, stays put while the data changes."""
    row = conn.execute(text(
        "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Extent(geom)::geometry) AS c FROM street_boundaries) s"
    )).first()
    if row is None or row[0] is None:
        row = conn.execute(text("SELECT avg(lon), avg(lat) FROM (SELECT lon, lat FROM incidents LIMIT 10000) s")).first()
    if row is None or row[0] is None:
        return LocalFrame(121.47, 31.23)  # an empty store: any frame answers "nothing" the same way
    return LocalFrame(round(float(row[0]), 2), round(float(row[1]), 2))


def default_period(conn: Connection, q: HeatmapQuery, months: int = 12) -> tuple[dt.datetime, dt.datetime]:
    """The last `months` months of data matching the filters (by report time), when no period is given."""
    where, params = HeatmapQuery(class_code=q.class_code, street=q.street, community=q.community, grid=q.grid,
                                 scope=q.scope).where()
    last = conn.execute(text(f"SELECT max(i.reported_at) FROM incidents i WHERE {where}"), params).scalar()
    end = q.end or ((last + dt.timedelta(microseconds=1)) if last else dt.datetime.now(dt.timezone.utc))
    start = q.start or conn.execute(
        text("SELECT date_trunc('month', (CAST(:end AS timestamptz) AT TIME ZONE :tz) - make_interval(months => :m)"
             " + interval '1 month') AT TIME ZONE :tz"),
        {"end": end, "tz": q.timezone, "m": months},
    ).scalar_one()
    return start, end


def month_labels(start: dt.datetime, end: dt.datetime, tz: str) -> list[str]:
    """'YYYY-MM' of every local month the period [start, end) touches."""
    return [m.strftime("%Y-%m") for m in month_starts(start, end, tz)[:-1]]


def study_area(conn: Connection, q: HeatmapQuery, frame: LocalFrame):
    """The area the hot-spot analysis covers, in the frame's metres: the filtered unit's boundary at the period's
    end, else the union of the street boundaries then in force."""
    code = q.area_code()
    at = q.end or dt.datetime.now(dt.timezone.utc)
    if code:
        level = {9: "streets", 12: "communities", 15: "grids"}.get(len(code), "micro_grids")
        sql = f"SELECT ST_AsBinary(ST_Union(geom)) FROM {level}_at(:at) WHERE code = :code"
        params = {"at": at, "code": code}
    else:
        sql = "SELECT ST_AsBinary(ST_Union(geom)) FROM streets_at(:at)"
        params = {"at": at}
    wkb = conn.execute(text(sql), params).scalar()
    return frame.to_metric(shapely.from_wkb(bytes(wkb))) if wkb is not None else None


def _frame_row(frame: LocalFrame, size: float) -> dict:
    return {"cell_m": float(size), "lon0": frame.lon0, "lat0": frame.lat0, "kx": frame.kx, "ky": frame.ky,
            "k": SQRT3 * float(size)}


def ensure_heat_rollup(conn: Connection, frame: LocalFrame, size: float) -> bool:
    """Make incident_heat_rollup hold hexagons of `size` binned in `frame` (registering the size, and building its
    counts from the incidents in one statement, when missing); False when it cannot here and now."""
    want = _frame_row(frame, size)
    row = conn.execute(text("SELECT cell_m, lon0, lat0, kx, ky, k FROM incident_heat_sizes WHERE cell_m = :cell_m"),
                       want).mappings().first()
    if row is not None and dict(row) == want:
        return True
    try:
        with conn.begin_nested():
            # writers wait, so no incident is written between the build and the registration's commit
            conn.execute(text("LOCK TABLE incidents IN SHARE MODE"))
            conn.execute(text("DELETE FROM incident_heat_sizes WHERE cell_m = :cell_m"), want)
            conn.execute(text(
                "DELETE FROM incident_heat_sizes WHERE cell_m IN (SELECT cell_m FROM incident_heat_sizes "
                "ORDER BY built_at DESC, cell_m OFFSET :keep)"), {"keep": MAX_ROLLUP_SIZES - 1})
            inserted = conn.execute(text(
                "INSERT INTO incident_heat_sizes (cell_m, lon0, lat0, kx, ky, k) "
                "VALUES (:cell_m, :lon0, :lat0, :kx, :ky, :k) ON CONFLICT DO NOTHING RETURNING cell_m"),
                want).first()
            if inserted is None:
                return False
            conn.execute(text("SET LOCAL jit = off"))
            conn.execute(text(f"""
                INSERT INTO incident_heat_rollup (cell_m, month, q, r, n)
                SELECT :cell_m, month, q, r, count(*) FROM (
                    WITH pts AS (
                        SELECT (i.lon - {frame.lon0!r}) * {frame.kx!r} AS x, (i.lat - {frame.lat0!r}) * {frame.ky!r} AS y,
                               date_trunc('month', i.reported_at, incident_rollup_tz()) AS month
                        FROM incidents i WHERE i.reported_at IS NOT NULL AND i.lon IS NOT NULL)
                    {_round_sql('x', 'y', float(size))}) h
                GROUP BY month, q, r"""), want)
    except Exception:  # noqa: BLE001  (a concurrent registration, a read-only transaction: answer from incidents)
        return False
    return True


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
    branches = []
    for k in range(len(months) - 1):
        if k in whole:
            continue
        window = f"i.reported_at >= :m{k} AND i.reported_at < :m{k + 1}"
        branches.append(f"""
            SELECT q, r, {k} AS month, count(*) AS n FROM (
                WITH pts AS (
                    SELECT (i.lon - {frame.lon0!r}) * {frame.kx!r} AS x, (i.lat - {frame.lat0!r}) * {frame.ky!r} AS y,
                           {k} AS month
                    FROM incidents i WHERE {where} AND {window})
                {_round_sql('x', 'y', float(size))}) h GROUP BY q, r""")
    if whole:  # consecutive whole months: one range of the rollup's primary key
        branches.append(f"""
            SELECT h.q, h.r, width_bucket(h.month, CAST(:months AS timestamptz[])) - 1 AS month, h.n
            FROM incident_heat_rollup h
            WHERE h.cell_m = :cell_m AND h.month >= :m{whole[0]} AND h.month < :m{whole[-1] + 1} AND h.n <> 0""")
    if not branches:
        return _empty_counts()
    # JIT compiling these expressions costs more than it saves
    conn.execute(text("SET LOCAL jit = off"))
    # four arrays in one row: 100,000 result rows would cost more in the client than in the database
    arrays = conn.execute(text(f"SELECT array_agg(q), array_agg(r), array_agg(month), array_agg(n) "
                               f"FROM ({' UNION ALL '.join(branches)}) u"),
                          {**params, **{f"m{k}": m for k, m in enumerate(months)}, "months": list(months),
                           "cell_m": float(size)}).one()
    labels = np.array([m.strftime("%Y-%m") for m in months[:-1]], dtype=object)
    df = pd.DataFrame({c: np.asarray(a or [], dtype=np.int64) for c, a in zip(("q", "r", "k", "n"), arrays)})
    df["month"] = labels[df["k"].to_numpy(dtype=np.int64)] if len(df) else []
    return df[["q", "r", "month", "n"]].astype({"q": np.int64, "r": np.int64, "n": np.int64})


#: Households per grid, by (database, grid boundaries in force, buildings and units fingerprints): they change only
#: when those do, and locating 80,000 buildings costs about a second.
_HOUSEHOLDS_CACHE: OrderedDict[tuple, dict[int, int]] = OrderedDict()
_HOUSEHOLDS_CACHE_SIZE = 8


def _households_key(conn: Connection, at: dt.datetime) -> tuple:
    row = conn.execute(text(
        """
        SELECT current_database(),
               (SELECT md5(coalesce(string_agg(b.id::text, ',' ORDER BY b.id), '')) FROM grid_boundaries b
                 WHERE b.valid_from <= :at AND (b.valid_to IS NULL OR b.valid_to > :at)),
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
        out = {int(i): int(v) for i, v in zip(ids, sums) if v}
    _HOUSEHOLDS_CACHE[key] = out
    while len(_HOUSEHOLDS_CACHE) > _HOUSEHOLDS_CACHE_SIZE:
        _HOUSEHOLDS_CACHE.popitem(last=False)
    return out


def grid_rollup_span(conn: Connection, q: HeatmapQuery) -> tuple[dt.datetime, dt.datetime] | None:
    """The whole months of the period whose incidents per grid incident_rollup can count (None: read incidents)."""
    if not q.use_rollup or q.start is None or q.end is None:
        return None
    if any(c and len(c) not in (9, 12, 15) for c in (q.scope, q.street, q.community, q.grid)):
        return None  # micro-grids are not a rollup key
    tz = rollup_timezone(conn)
    return whole_months(q.start, q.end, tz) if tz else None


def grid_rates(conn: Connection, q: HeatmapQuery, at: dt.datetime, simplify_m: float = 2.0) -> pd.DataFrame:
    """Per grid in force at `at` (inside the filters): incidents, households, incidents per 1,000 households and
    the outline simplified to `simplify_m` metres (WGS-84 shapely geometries)."""
    where, params = q.where("i")
    code = q.area_code()
    if code and len(code) > 15:  # a micro-grid: its grid
        code = code[:15]
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
    counts_by_grid = dict(conn.execute(text(f"SELECT grid_id, incidents FROM ({counts}) n WHERE grid_id IS NOT NULL"),
                                       params).all())
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


def hex_neighbours(q: np.ndarray, r: np.ndarray) -> dict[int, list[int]]:
    """For each hexagon (by position), the positions of its neighbours among the given hexagons."""
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(q.tolist(), r.tolist()))}
    return {k: [index[(a + da, b + db)] for da, db in NEIGHBOURS if (a + da, b + db) in index]
            for (a, b), k in index.items()}


def hex_weights(q: np.ndarray, r: np.ndarray):
    """Binary contiguity weights between hexagons (six neighbours each), as a libpysal W."""
    from libpysal.weights import W

    return W(hex_neighbours(q, r), silence_warnings=True)


def conditional_permutation_p(y: np.ndarray, neighbours: dict[int, list[int]], permutations: int,
                              seed: int | None = None, chunk: int = 500) -> np.ndarray:
    """Folded one-sided pseudo p-values of Gi* (binary weights, self included) by conditional randomisation.

    The scheme of esda's `crand`, vectorised with numpy instead of numba: cell i keeps its own value and its k_i
    neighbour values are replaced by k_i values drawn without replacement from the other n − 1 cells; one set of
    draws is shared by all cells (as in esda). p = (min(#sim ≥ obs, #sim < obs) + 1) / (permutations + 1).
    """
    n = len(y)
    y = np.asarray(y, dtype=np.float64)
    k = np.array([len(neighbours[i]) for i in range(n)], dtype=np.int64)
    kmax = int(k.max()) if n else 0
    if n < 2 or kmax == 0 or permutations <= 0:
        return np.full(n, np.nan)
    kmax = min(kmax, n - 1)
    rng = np.random.default_rng(seed)
    draws = np.empty((permutations, kmax), dtype=np.int64)
    for p in range(permutations):  # kmax distinct positions among the n − 1 others, per permutation
        draws[p] = rng.choice(n - 1, kmax, replace=False)
    obs = y + np.array([y[neighbours[i]].sum() for i in range(n)])
    out = np.empty(n)
    cols = np.arange(kmax)
    for lo in range(0, n, chunk):
        ids = np.arange(lo, min(n, lo + chunk))
        pos = draws[None, :, :] + (draws[None, :, :] >= ids[:, None, None])  # skip cell i itself
        mask = cols[None, None, :] < k[ids, None, None]
        sim = y[ids, None] + np.where(mask, y[pos], 0.0).sum(axis=2)
        larger = (sim >= obs[ids, None]).sum(axis=1)
        folded = np.minimum(larger, permutations - larger)
        out[ids] = (folded + 1.0) / (permutations + 1.0)
    return out


def getis_ord(counts: np.ndarray, q: np.ndarray, r: np.ndarray, permutations: int = 999,
              seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gi* z-scores (esda.G_Local), two-sided permutation pseudo p-values and classes (−3 … 3, HOTSPOT_LABELS)."""
    import esda

    n = len(counts)
    z = np.full(n, np.nan)
    p = np.full(n, np.nan)
    cls = np.zeros(n, dtype=np.int64)
    if n < 3 or counts.sum() == 0 or np.all(counts == counts[0]):
        return z, p, cls  # no variation: nothing can be hot or cold
    neighbours = hex_neighbours(q, r)
    from libpysal.weights import W

    w = W(neighbours, silence_warnings=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        # the statistic and its analytical z from esda; esda's own permutations need numba to be fast, so the
        # same conditional randomisation is done below in numpy
        g = esda.G_Local(counts.astype(np.float64), w, transform="B", permutations=0, star=True)
    z = np.asarray(g.Zs, dtype=np.float64)
    # A cell may be hot OR cold: the two-sided value is twice the folded one-sided one (at most 1).
    if permutations:
        p = np.minimum(1.0, 2.0 * conditional_permutation_p(counts, neighbours, permutations, seed))
    else:
        p = np.minimum(1.0, 2.0 * np.asarray(g.p_norm, dtype=np.float64))
    for level, (_, alpha) in zip((3, 2, 1), CONFIDENCE):
        unset = cls == 0
        cls = np.where(unset & (p <= alpha) & (z > 0), level, cls)
        cls = np.where(unset & (p <= alpha) & (z < 0), -level, cls)
    return z, p, cls


def _area_cells(area, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial coordinates of every hexagon whose centre lies in `area` (metric)."""
    if area is None or area.is_empty:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    minx, miny, maxx, maxy = area.bounds
    r0, r1 = math.floor(miny / (1.5 * size)) - 1, math.ceil(maxy / (1.5 * size)) + 1
    rs = np.arange(r0, r1 + 1)
    q_lo = np.floor(minx / (SQRT3 * size) - rs / 2.0) - 1
    q_hi = np.ceil(maxx / (SQRT3 * size) - rs / 2.0) + 1
    lengths = (q_hi - q_lo + 1).astype(np.int64)
    r = np.repeat(rs, lengths)
    q = np.concatenate([np.arange(a, b + 1) for a, b in zip(q_lo.astype(np.int64), q_hi.astype(np.int64))])
    x, y = hex_centres(q, r, size)
    shapely.prepare(area)
    inside = shapely.contains_xy(area, x, y)
    return q[inside].astype(np.int64), r[inside].astype(np.int64)


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
    if q.start is None or q.end is None:
        q.start, q.end = default_period(conn, q)
    if q.end <= q.start:
        raise IncidentError("the period's end must come after its start")
    frame = district_frame(conn)
    bounds = month_starts(q.start, q.end, q.timezone)
    months = [m.strftime("%Y-%m") for m in bounds[:-1]]
    area = study_area(conn, q, frame)
    size = choose_cell_size(area, q.cell_m, len(months), q.max_values)
    if size > q.cell_m * 1.0001:
        notes.append(f"单元格由 {q.cell_m:g} 米放大到 {size:.0f} 米，以控制数据量")
    timings["setup_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    counts = hex_counts(conn, q, frame, size, bounds)
    timings["hex_sql_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    aq, ar = _area_cells(area, size)
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
        grids = grid_rates(conn, q, q.end)
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
    import json

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
    "hexagon k: centre x = cell_m·√3·(q + r/2), y = cell_m·1.5·r metres in the frame; lon = lon0 + x/kx, "
    "lat = lat0 + y/ky; vertices at x + cell_m·cos(30° + 60°·j), y + cell_m·sin(30° + 60°·j). monthly[m][a] is the "
    "count of cell active[a] in month m (cells never active are all zero). hot: [cell, class, z, p]. Grid rings: "
    "integers in steps of 1e-5° from (lon0, lat0), each vertex as the step from the previous one (x, y pairs); "
    "grids are columns: grids[field][i] for grid i."
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
    """A compact JSON form for pages and dashboards (see COMPACT_ENCODING): cells as axial integers in the
    district frame, per-month counts of the cells that have any, Gi* results of the significant cells, grid
    outlines as integer steps. Its size follows the number of cells, months and grids, not of incidents."""
    c, g = h.cells, h.grids
    active = np.flatnonzero(c["total"].to_numpy() > 0)
    hot = np.flatnonzero(c["hotspot"].to_numpy() != 0)
    f = h.frame
    return {
        "meta": meta(h),
        "encoding": COMPACT_ENCODING,
        "frame": {"lon0": f.lon0, "lat0": f.lat0, "kx": f.kx, "ky": f.ky},
        "cell_m": h.cell_m,
        "hex": {"q": c["q"].astype(int).tolist(), "r": c["r"].astype(int).tolist(),
                "total": c["total"].astype(int).tolist()},
        "active": active.tolist(),
        "monthly": h.monthly[:, active].tolist(),
        "hot": [[int(k), int(c["hotspot"].iat[k]), round(float(c["gi_z"].iat[k]), 2), round(float(c["gi_p"].iat[k]), 4)]
                for k in hot],
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
