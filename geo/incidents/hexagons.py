"""Hexagon cells of the incident heatmap (六边形网格): one implementation, for numpy, SQL and the page.

Cells are pointy-top hexagons of circumradius (= edge length) `size` metres in the district's local metric frame
(`LocalFrame`: an equirectangular projection tangent at the district's centre, scaled by the WGS-84 ellipsoid
there; within 10 km of the centre lengths are off by under 0.1 %), addressed by axial coordinates (q, r). A point
falls in the cell `_axial` computes: Charles Chambers' floor-only rounding, written ONCE over an abstract number
type, so the same lines bin numpy arrays (`hex_axial`) and generate the SQL that bins rows in PostgreSQL
(`hex_axial_sql`, through `SqlFloat`), operation for operation: both give the same cell for every point, to the
bit. `hex_centres` and `hex_polygons` are the cells' geometry, and `cell_lattice` hands the page the same geometry
(where cell (q, r) lies in WGS-84 and its corner offsets), so the page draws what the server defines.

The rollup triggers of migration 0011 carry this formula as SQL text: a migration is frozen history, so it cannot
call into this module; tests/test_incident_rollup.py checks that the cells the triggers keep are the cells binned
here, and tests/test_incidents.py that the SQL and numpy bins agree and that every point lies in its polygon.

Why not PostGIS `ST_HexagonGrid` or H3 (decided for the heatmap's needs: any cell size in metres from 20 m to
5 km, rollup keys that are small integers, and the same counts as before):
- `ST_HexagonGrid(size, bounds)` generates flat-top hexagon polygons over a box; it has no point → cell function,
  so binning a million incidents becomes a spatial join, where a point on a shared edge matches two or three cells
  (counted twice unless a tie-break is added) and the grid is generated per request. Arithmetic on the stored
  lon/lat is an index-only scan and gives every point exactly one cell. Its flat-top (i, j) cells would also move
  every cell and change today's answers and stored rollup keys.
- H3 (`h3`) has fixed resolutions (aperture 7: about 26, 69, 184, 483, 1,281 m edges), not a size in metres, and
  its cells vary in area and orientation across the district's latitude span and include pentagons; a leader's
  150 m (or the 10 m steps a large area is coarsened in) cannot be honoured, and the answers would change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import shapely

SQRT3 = math.sqrt(3.0)
#: Axial offsets of a hexagon's six neighbours.
NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, -1), (-1, 1))

WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3


class SqlFloat:
    """A double precision SQL expression that Python's arithmetic operators extend, so a formula written for numbers
    (`_axial`, `LocalFrame`) also writes its SQL, in the same order of operations. Constants are written with
    `repr`, which PostgreSQL reads back to the same double."""

    __slots__ = ("sql",)

    def __init__(self, sql: str):
        self.sql = sql

    @staticmethod
    def _of(value: SqlFloat | float) -> str:
        return value.sql if isinstance(value, SqlFloat) else repr(float(value))

    def __add__(self, other: SqlFloat | float) -> SqlFloat:
        return SqlFloat(f"({self.sql} + {self._of(other)})")

    def __radd__(self, other: float) -> SqlFloat:
        return SqlFloat(f"({self._of(other)} + {self.sql})")

    def __sub__(self, other: SqlFloat | float) -> SqlFloat:
        return SqlFloat(f"({self.sql} - {self._of(other)})")

    def __rsub__(self, other: float) -> SqlFloat:
        return SqlFloat(f"({self._of(other)} - {self.sql})")

    def __mul__(self, other: SqlFloat | float) -> SqlFloat:
        return SqlFloat(f"({self.sql} * {self._of(other)})")

    def __rmul__(self, other: float) -> SqlFloat:
        return SqlFloat(f"({self._of(other)} * {self.sql})")

    def __truediv__(self, other: SqlFloat | float) -> SqlFloat:
        return SqlFloat(f"({self.sql} / {self._of(other)})")

    def __rtruediv__(self, other: float) -> SqlFloat:
        return SqlFloat(f"({self._of(other)} / {self.sql})")


def sql_floor(value: SqlFloat) -> SqlFloat:
    """SQL floor() of an expression."""
    return SqlFloat(f"floor({value.sql})")


#: What `_axial` and the frame compute on: numpy arrays (the numbers) or SQL expressions (the query).
Num = TypeVar("Num", np.ndarray, SqlFloat)


def _axial(a: Num, b: Num, floor: Callable[[Num], Num]) -> tuple[Num, Num]:
    """Axial (q, r) of the hexagon holding each point, from a = x/(√3·size), b = y/(√3·size): Charles Chambers'
    floor-only formula, t = ⌊a + √3·b + 1⌋, q' = ⌊(⌊2a + 1⌋ + t)/3⌋, r = ⌊(t + ⌊√3·b − a + 1⌋)/3⌋, q = q' − r
    (three floors instead of cube rounding's comparisons; `hex_axial_cube` is the textbook method it is tested
    against)."""
    t = floor(a + SQRT3 * b + 1.0)
    r = floor((t + floor(SQRT3 * b - a + 1.0)) / 3.0)
    return floor((floor(2.0 * a + 1.0) + t) / 3.0) - r, r


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

    def _forward(self, lon: Num, lat: Num) -> tuple[Num, Num]:
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky

    def forward(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """(lon, lat) degrees → (x, y) metres."""
        return self._forward(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))

    def forward_sql(self, lon: str, lat: str) -> tuple[SqlFloat, SqlFloat]:
        """SQL of (x, y) metres from SQL expressions of lon, lat degrees (the arithmetic of `forward`)."""
        return self._forward(SqlFloat(lon), SqlFloat(lat))

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


def hex_axial(x, y, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial coordinates (q, r) of the hexagon holding each metric point (numpy)."""
    k = SQRT3 * float(size)
    q, r = _axial(np.asarray(x, dtype=np.float64) / k, np.asarray(y, dtype=np.float64) / k, np.floor)
    return q.astype(np.int64), r.astype(np.int64)


def hex_axial_sql(x: SqlFloat, y: SqlFloat, size: float) -> tuple[str, str]:
    """SQL of the integer axial coordinates (q, r) of the hexagon holding the metric point (x, y): `hex_axial`'s
    arithmetic, as PostgreSQL double precision."""
    k = SQRT3 * float(size)
    q, r = _axial(x / k, y / k, sql_floor)
    return f"({q.sql})::int", f"({r.sql})::int"


def hex_axial_cube(x, y, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial coordinates by cube rounding (the textbook method, to test `hex_axial` against)."""
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


def hex_centres(q, r, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Metric centres of the hexagons with axial coordinates (q, r) and circumradius `size`."""
    q = np.asarray(q, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    return size * SQRT3 * (q + r / 2.0), size * 1.5 * r


def hex_corners(size: float) -> np.ndarray:
    """The six corners of a hexagon centred on (0, 0), metric, counter-clockwise from 30°: shape (6, 2)."""
    angles = np.deg2rad(30.0 + 60.0 * np.arange(6))
    return np.column_stack([size * np.cos(angles), size * np.sin(angles)])


def hex_polygons(x, y, size: float) -> np.ndarray:
    """Hexagon polygons (metric) around the centres."""
    corners = hex_corners(size)
    ring = np.stack([np.asarray(x, dtype=np.float64)[:, None] + corners[None, :, 0],
                     np.asarray(y, dtype=np.float64)[:, None] + corners[None, :, 1]], axis=-1)
    ring = np.concatenate([ring, ring[:, :1, :]], axis=1)
    return np.asarray(shapely.polygons(ring))


def cell_lattice(frame: LocalFrame, size: float) -> dict:
    """Where the cells lie in WGS-84, for drawing: cell (q, r) is centred at origin + q·step_q + r·step_r (the frame
    is affine in lon/lat, so this is exact) and its corners are that centre plus `corners`, all as [lon, lat]."""
    x, y = hex_centres([0, 1, 0], [0, 0, 1], size)
    lon, lat = frame.inverse(x, y)
    corners = hex_corners(size)
    clon, clat = frame.inverse(corners[:, 0], corners[:, 1])
    return {"origin": [float(lon[0]), float(lat[0])],
            "step_q": [float(lon[1] - lon[0]), float(lat[1] - lat[0])],
            "step_r": [float(lon[2] - lon[0]), float(lat[2] - lat[0])],
            "corners": [[float(a - lon[0]), float(b - lat[0])] for a, b in zip(clon, clat, strict=True)]}


def hex_neighbours(q: np.ndarray, r: np.ndarray) -> dict[int, list[int]]:
    """For each hexagon (by position), the positions of its neighbours among the given hexagons."""
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(q.tolist(), r.tolist(), strict=True))}
    return {k: [index[(a + da, b + db)] for da, db in NEIGHBOURS if (a + da, b + db) in index]
            for (a, b), k in index.items()}


def hex_cells_in(area, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial coordinates of every hexagon whose centre lies in `area` (a metric shapely geometry)."""
    if area is None or area.is_empty:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    minx, miny, maxx, maxy = area.bounds
    r0, r1 = math.floor(miny / (1.5 * size)) - 1, math.ceil(maxy / (1.5 * size)) + 1
    rs = np.arange(r0, r1 + 1)
    q_lo = (np.floor(minx / (SQRT3 * size) - rs / 2.0) - 1).astype(np.int64)
    q_hi = (np.ceil(maxx / (SQRT3 * size) - rs / 2.0) + 1).astype(np.int64)
    r = np.repeat(rs, q_hi - q_lo + 1)
    q = np.concatenate([np.arange(a, b + 1) for a, b in zip(q_lo, q_hi, strict=True)])
    x, y = hex_centres(q, r, size)
    shapely.prepare(area)
    inside = shapely.contains_xy(area, x, y)
    return q[inside].astype(np.int64), r[inside].astype(np.int64)
