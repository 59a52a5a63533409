"""Locate (定位): which street, community, grid, micro-grid, compound and building a point lies in.

Two implementations that must agree exactly:

- `LocateIndex`: an in-memory index of one boundary set (the boundaries in force over one interval of time),
  built from PostGIS. Each level has a shapely 2 STRtree over prepared polygons, and in front of it a cell
  raster: every cell of a regular lattice that no boundary touches is "pure" and stores its owner, so most points
  are answered by numpy arithmetic alone. Each cell that a boundary touches ("mixed") lists the few units whose
  boundary touches it (and the first unit holding the whole cell, if any); a point there is tested exactly
  against those candidates in tie-break order with ``shapely.intersects_xy`` (``covers`` for a polygon and a
  point), without creating Point objects. `locate_many` is vectorised end to end.
- `locate_sql` / `locate_sql_many`: the PostGIS reference (``ST_Covers`` with the GiST indexes) the tests and the
  benchmark compare against.

Rules shared by both (and by `geo.incidents.attribution`):

- A point on a shared edge or vertex belongs to the covering unit with the smallest code (streets, communities,
  grids, micro-grids, compared as text in C collation) or the smallest id (compounds, buildings). ``match`` is
  ``boundary`` when the point lies on the owning grid's boundary (covered but not contained).
- A point in no grid gets the nearest grid within ``accuracy_m`` metres (``match: nearest``); distances are
  measured in the UTM zone of the grid layer's centre; equal distances (within `TIE_M`) go to the smallest code.
- A level left empty is filled up the chain: community from the grid, street from the community, compound from
  the building, so a worker standing on the road beside a grid still sees the whole chain.

`IndexHolder` keeps the index of the current boundaries (and a few past ones for ``at=`` dates), rebuilds in a
background thread when boundaries change and swaps the new index in with one reference assignment, so a reader
never sees a half-built index. It hears of changes from the database itself (`ChangeListener`: ``LISTEN`` on the
notifications the triggers of migration 0013 send at commit, whoever wrote), from `notify_boundaries_changed` in
this process, and, as a last resort, from a cheap fingerprint poll. From the moment it hears until the new index
is in, lookups wait for the rebuild instead of answering from boundaries that are no longer in force.
"""

from __future__ import annotations

import bisect
import ctypes
import datetime as dt
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import shapely
from pyproj import Transformer
from sqlalchemy import Connection, Engine, text

from geo.spatial.crs import STORAGE_SRID, utm_epsg
from geo.runtime import paused_gc

log = logging.getLogger("gridatlas.lookup")

#: Owner value for "no unit covers the point".
NONE = -1
#: Raster value for "a boundary touches this cell: ask the exact path".
MIXED = -2
#: Distances closer than this (metres) count as equal; the smaller code wins.
TIE_M = 1e-6
#: Match kinds (int8 codes in `LocateBatch.match`).
MATCH_NONE, MATCH_INSIDE, MATCH_BOUNDARY, MATCH_NEAREST = 0, 1, 2, 3
MATCH_NAMES = {MATCH_NONE: None, MATCH_INSIDE: "inside", MATCH_BOUNDARY: "boundary", MATCH_NEAREST: "nearest"}

#: Cells per level at most (memory bound: 4 M cells are 8-16 MB); coarser cells when the district is larger.
DEFAULT_MAX_CELLS = 4_000_000
#: A level's cell edge is its median unit's size divided by this, clamped to [MIN_CELL_M, MAX_CELL_M].
CELLS_PER_UNIT = 48
MIN_CELL_M = 2.0
MAX_CELL_M = 60.0
#: Cells per level at least (unless that makes them smaller than MIN_CELL_M).
MIN_CELLS = 1_000_000
#: Cell-space tolerance when marking boundary cells: covers floating-point error of the cell arithmetic.
_CELL_EPS = 1e-6


@dataclass(frozen=True)
class LevelSpec:
    """One level of the chain: its key in answers, its table, whether boundaries are versioned, tie-break column."""

    key: str
    table: str
    versioned: bool
    columns: tuple[str, ...]
    order: str


LEVEL_SPECS: tuple[LevelSpec, ...] = (
    LevelSpec("street", "streets", True, (), "code"),
    LevelSpec("community", "communities", True, ("street_id",), "code"),
    LevelSpec("grid", "grids", True, ("kind", "dedicated_type", "community_id"), "code"),
    LevelSpec("micro_grid", "micro_grids", True, ("grid_id",), "code"),
    LevelSpec("compound", "compounds", False, ("kind", "community_id"), "id"),
    LevelSpec("building", "buildings", False, ("compound_id", "community_id", "floors", "use"), "id"),
)
LEVEL_KEYS = tuple(s.key for s in LEVEL_SPECS)
_SPEC = {s.key: s for s in LEVEL_SPECS}
#: Boundary tables of the versioned levels: (table, foreign key, identity table).
BOUNDARY_TABLES = {
    "street": ("street_boundaries", "street_id", "streets"),
    "community": ("community_boundaries", "community_id", "communities"),
    "grid": ("grid_boundaries", "grid_id", "grids"),
    "micro_grid": ("micro_grid_boundaries", "micro_grid_id", "micro_grids"),
}


# ------------------------------------------------------------------------------------------- cell raster

#: Points created at once while building (bounds the memory of the temporary shapely objects).
_POINT_BATCH = 32_768


def _points(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """shapely points, with the cyclic garbage collector paused while they are created."""
    with paused_gc():
        return shapely.points(x, y)


def _release_free_memory() -> None:
    """Hand the heap freed by a build's temporaries back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    The build's large numpy temporaries raise glibc's dynamic mmap threshold, so later ones come from the heap
    and stay in the resident set after they are freed: some 100 MB at scale 1, for an index of about 50 MB."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Distinct values, ascending (a sort and a mask: faster than np.unique's hashing on these int64 keys)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _metres_per_degree(lat: float) -> tuple[float, float]:
    return 111_320.0 * math.cos(math.radians(lat)), 110_574.0


@dataclass
class CellRaster:
    """A lattice over a level's extent: each cell holds its owner when no boundary touches it, else MIXED."""

    x0: float
    y0: float
    isx: float  # cells per degree of longitude
    isy: float
    nx: int
    ny: int
    cell_m: float
    cells: np.ndarray  # (ny * nx,) smallest signed int dtype that fits

    def cell_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous cell-space coordinates; the cell is their floor. Used alike for building and querying."""
        return (x - self.x0) * self.isx, (y - self.y0) * self.isy

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The stored value for each point: owner position, NONE, or MIXED; points off the lattice get NONE."""
        fx, fy = self.cell_coords(x, y)
        inside = (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)  # NaN compares False: NONE
        out = np.full(x.shape, NONE, dtype=np.int32)
        if inside.all():
            out[:] = self.cells[fy.astype(np.int64) * self.nx + fx.astype(np.int64)]
        elif inside.any():
            out[inside] = self.cells[fy[inside].astype(np.int64) * self.nx + fx[inside].astype(np.int64)]
        return out

    @classmethod
    def build(cls, geoms: np.ndarray, owners: Callable[[np.ndarray], np.ndarray], cell_m: float,
              max_cells: int = DEFAULT_MAX_CELLS, tree: shapely.STRtree | None = None) -> CellRaster:
        """Mark every cell a boundary touches as MIXED; give each run of untouched cells its owner (one exact query);
        list for each MIXED cell the units that can cover a point of it."""
        minx, miny, maxx, maxy = shapely.total_bounds(geoms)
        mx, my = _metres_per_degree((miny + maxy) / 2.0)
        while True:
            sx, sy = cell_m / mx, cell_m / my
            # Two cells of margin: every covered point lies strictly inside the lattice, so "off the lattice" = NONE.
            x0, y0 = minx - 2 * sx, miny - 2 * sy
            nx = int(math.ceil((maxx - x0) / sx)) + 3
            ny = int(math.ceil((maxy - y0) / sy)) + 3
            if nx * ny <= max_cells:
                break
            cell_m *= 1.25
        raster = cls(x0, y0, 1.0 / sx, 1.0 / sy, nx, ny, cell_m, np.empty(0, np.int8))
        keys, unit = raster._boundary_cells(geoms)
        mixed = np.zeros(nx * ny, dtype=bool)
        mixed[keys] = True

        # Runs of untouched cells along a row have one owner: adjacent untouched cells share an edge no boundary
        # touches, so the set of covering units cannot change between them.
        n = nx * ny
        start = ~mixed
        start[1:] &= mixed[:-1] | (np.arange(1, n) % nx == 0)
        first = np.flatnonzero(start)
        cx = x0 + (first % nx + 0.5) * sx
        cy = y0 + (first // nx + 0.5) * sy
        run_owner = np.concatenate([owners(_points(cx[i:i + _POINT_BATCH], cy[i:i + _POINT_BATCH]))
                                    for i in range(0, len(first), _POINT_BATCH)] or [np.empty(0, np.int32)])
        dtype = np.int16 if len(geoms) < np.iinfo(np.int16).max else np.int32
        run = np.cumsum(start) - 1
        cells = np.where(mixed, MIXED, run_owner[np.maximum(run, 0)] if len(first) else MIXED).astype(dtype)
        raster.cells = cells
        raster._candidates(geoms, keys, unit, tree if tree is not None else shapely.STRtree(geoms))
        return raster

    def _candidates(self, geoms: np.ndarray, keys: np.ndarray, unit: np.ndarray, tree: shapely.STRtree) -> None:
        """Per MIXED cell: the units whose boundary touches it (to test, ascending) and the first unit holding the
        whole cell in its interior (`sure`, answered without a test).

        A unit covering some point of a cell either has its boundary in the cell (then the conservative supercover
        listed it) or holds the whole closed cell in its interior (then it covers the cell's centre). Units to test
        that come after `sure` in tie-break order can never win, so they are dropped.
        """
        n_units = len(geoms)
        pair = _sorted_unique(keys * n_units + unit)
        cell_of_pair = pair // n_units
        unit_of_pair = (pair % n_units).astype(np.int32)
        first = np.flatnonzero(np.r_[True, cell_of_pair[1:] != cell_of_pair[:-1]])
        self.mixed_cells = cell_of_pair[first]
        m = len(self.mixed_cells)
        # Units covering each mixed cell's centre whose boundary does not touch the cell hold it whole.
        cx = self.x0 + (self.mixed_cells % self.nx + 0.5) / self.isx
        cy = self.y0 + (self.mixed_cells // self.nx + 0.5) / self.isy
        found = [tree.query(_points(cx[i:i + _POINT_BATCH], cy[i:i + _POINT_BATCH]), predicate="intersects")
                 + np.array([[i], [0]]) for i in range(0, m, _POINT_BATCH)]
        inp, idx = np.concatenate(found, axis=1) if found else np.empty((2, 0), np.int64)
        q = self.mixed_cells[inp] * n_units + idx
        at = np.minimum(np.searchsorted(pair, q), len(pair) - 1)
        whole = pair[at] != q
        big = np.iinfo(np.int32).max
        sure = np.full(m, big, dtype=np.int64)
        np.minimum.at(sure, inp[whole], idx[whole])
        pair_cell = np.repeat(np.arange(m), np.diff(np.r_[first, len(pair)]))
        keep = unit_of_pair < sure[pair_cell]
        counts = np.bincount(pair_cell[keep], minlength=m)
        self.cand_ptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
        self.cand = unit_of_pair[keep]  # grouped by cell, ascending within a cell (pairs were sorted)
        self.sure = np.where(sure == big, NONE, sure).astype(np.int32)

    def _boundary_cells(self, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat indices, unit positions) of every cell whose closure a polygon boundary touches, with the unit
        whose boundary it is (a conservative supercover; a cell may be listed many times)."""
        parts, part_unit = shapely.get_parts(geoms, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        coords, ring = shapely.get_coordinates(rings, return_index=True)
        same = ring[1:] == ring[:-1]
        seg_unit = part_unit[ring_part[ring[:-1][same]]]
        u, v = self.cell_coords(coords[:, 0], coords[:, 1])
        u0, v0, u1, v1 = u[:-1][same], v[:-1][same], u[1:][same], v[1:][same]
        keys, units = [], []

        def add(ix, iy, who):
            ix = np.clip(ix, 0, self.nx - 1).astype(np.int64)
            iy = np.clip(iy, 0, self.ny - 1).astype(np.int64)
            keys.append(iy * self.nx + ix)
            units.append(who)

        for du in (-_CELL_EPS, _CELL_EPS):
            for dv in (-_CELL_EPS, _CELL_EPS):
                add(np.floor(u0 + du), np.floor(v0 + dv), seg_unit)
        # Crossings of vertical lattice lines u = k mark the cells on both sides, likewise for horizontal ones;
        # every cell a segment passes through is either its first cell or entered through such a crossing.
        for a0, b0, a1, b1, swap in ((u0, v0, u1, v1, False), (v0, u0, v1, u1, True)):
            lo = np.ceil(np.minimum(a0, a1))
            hi = np.floor(np.maximum(a0, a1))
            count = np.where(a1 != a0, np.maximum(hi - lo + 1, 0), 0).astype(np.int64)
            total = int(count.sum())
            if total == 0:
                continue
            seg = np.repeat(np.arange(len(count)), count)
            offset = np.repeat(np.cumsum(count) - count, count)
            k = lo[seg] + (np.arange(total) - offset)
            b = b0[seg] + (k - a0[seg]) * (b1[seg] - b0[seg]) / (a1[seg] - a0[seg])
            who = seg_unit[seg]
            for side in (k - 1, k):
                for db in (-_CELL_EPS, _CELL_EPS):
                    other = np.floor(b + db)
                    add(other, side, who) if swap else add(side, other, who)
        return np.concatenate(keys), np.concatenate(units).astype(np.int64)

    def refine(self, geoms: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact owners of points in MIXED cells: (owner per point, whether a boundary-touching unit was tested and
        won). Each point is tested against its cell's candidates in tie-break order, stopping at the first that
        covers it, with `intersects_xy` (for a polygon and a point that is ``covers``: boundary included) and no
        Point objects."""
        fx, fy = self.cell_coords(x, y)
        m = np.searchsorted(self.mixed_cells, fy.astype(np.int64) * self.nx + fx.astype(np.int64))
        start = self.cand_ptr[m]
        count = self.cand_ptr[m + 1] - start
        owner = self.sure[m]
        tested = np.zeros(len(x), dtype=bool)
        active = np.flatnonzero(count)
        rank = 0
        while active.size:
            c = self.cand[start[active] + rank]
            ok = shapely.intersects_xy(geoms[c], x[active], y[active])
            won = active[ok]
            owner[won] = c[ok]
            tested[won] = True
            rank += 1
            active = active[~ok]
            active = active[count[active] > rank]
        return owner, tested

    def refine_one(self, geoms: np.ndarray, x: float, y: float) -> tuple[int, bool]:
        """`refine` for one point."""
        fx, fy = (x - self.x0) * self.isx, (y - self.y0) * self.isy
        m = int(np.searchsorted(self.mixed_cells, int(fy) * self.nx + int(fx)))
        for g in self.cand[self.cand_ptr[m]:self.cand_ptr[m + 1]].tolist():
            if shapely.intersects_xy(geoms[g], x, y):
                return g, True
        return int(self.sure[m]), False

    @property
    def nbytes(self) -> int:
        return int(self.cells.nbytes + self.mixed_cells.nbytes + self.cand_ptr.nbytes + self.cand.nbytes
                   + self.sure.nbytes)


# ------------------------------------------------------------------------------------------------ levels

class LevelIndex:
    """One level's units in tie-break order, their prepared polygons, STRtree and cell raster."""

    def __init__(self, spec: LevelSpec, frame: gpd.GeoDataFrame, max_cells: int = DEFAULT_MAX_CELLS):
        self.spec = spec
        frame = frame[~frame.geometry.isna() & ~frame.geometry.is_empty]
        if spec.order == "code":
            # Python str order = PostgreSQL COLLATE "C" order (byte order of the UTF-8 digits).
            frame = frame.iloc[np.argsort(frame["code"].astype(str).to_numpy(), kind="stable")]
        else:
            frame = frame.sort_values("id", kind="stable")
        frame = frame.reset_index(drop=True)
        self.attrs = pd.DataFrame(frame.drop(columns=frame.geometry.name))
        self.ids = frame["id"].to_numpy(np.int64)
        self.geoms = np.asarray(frame.geometry.to_numpy(), dtype=object)
        shapely.prepare(self.geoms)
        self.tree = shapely.STRtree(self.geoms)
        self._pos_of_id = pd.Index(self.ids)
        self.records = [self._make_record(r) for r in self.attrs.to_dict("records")]
        self.raster: CellRaster | None = None
        if len(self.geoms):
            cell_m = self._cell_size()
            self.raster = CellRaster.build(self.geoms, self.exact, cell_m, max_cells, self.tree)

    def __len__(self) -> int:
        return len(self.ids)

    def _cell_size(self) -> float:
        minx, miny, maxx, maxy = shapely.bounds(self.geoms).T
        mx, my = _metres_per_degree(float(np.nanmean((miny + maxy) / 2.0)))
        size = float(np.median(np.sqrt((maxx - minx) * mx * (maxy - miny) * my)))
        cell_m = min(max(size / CELLS_PER_UNIT, MIN_CELL_M), MAX_CELL_M)
        # Levels of few large units (streets, communities) would get few coarse cells, and their long, detailed
        # boundaries make the exact test dear: give them at least MIN_CELLS cells (a couple of MB).
        area = (np.nanmax(maxx) - np.nanmin(minx)) * mx * (np.nanmax(maxy) - np.nanmin(miny)) * my
        return max(min(cell_m, math.sqrt(area / MIN_CELLS)), MIN_CELL_M)

    def positions(self, ids) -> np.ndarray:
        """Positions of unit ids in this level (NONE for unknown or missing ids)."""
        values = pd.array(ids, dtype="Int64").fillna(-1).to_numpy(np.int64)
        return self._pos_of_id.get_indexer(values).astype(np.int32)

    def exact(self, pts: np.ndarray) -> np.ndarray:
        """Owner position per point by the exact rule: covering units, the first in tie-break order."""
        owner = np.full(len(pts), NONE, dtype=np.int32)
        if len(pts) == 0 or len(self.geoms) == 0:
            return owner
        inp, idx = self.tree.query(pts)
        if len(inp):
            ok = shapely.covers(self.geoms[idx], pts[inp])
            inp, idx = inp[ok], idx[ok]
            best = np.full(len(pts), np.iinfo(np.int32).max, dtype=np.int64)
            np.minimum.at(best, inp, idx)
            hit = best != np.iinfo(np.int32).max
            owner[hit] = best[hit]
        return owner

    def owners(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owner positions, indices of the points whose owner was decided by an exact test: only these can lie on
        their owner's boundary)."""
        if self.raster is None:
            return np.full(x.shape, NONE, dtype=np.int32), np.empty(0, np.int64)
        out = self.raster.lookup(x, y)
        mixed = np.flatnonzero(out == MIXED)
        if mixed.size:
            owner, tested = self.raster.refine(self.geoms, x[mixed], y[mixed])
            out[mixed] = owner
            return out, mixed[tested]
        return out, mixed

    def _make_record(self, row: dict) -> dict:
        out = {"id": int(row["id"]), "code": _clean(row.get("code")), "name": _clean(row.get("name"))}
        for col in self.spec.columns:
            if col in row:
                out[col] = _clean(row[col])
        return out

    def record(self, pos: int) -> dict | None:
        """The unit at `pos` as a plain dict (id, code, name and the level's attributes), None for NONE."""
        if pos is None or pos < 0:
            return None
        return dict(self.records[int(pos)])

    def owner_one(self, x: float, y: float) -> tuple[int, bool]:
        """Scalar fast path of `owners` for one point: (owner position, whether an exact test decided it)."""
        r = self.raster
        if r is None:
            return NONE, False
        fx = (x - r.x0) * r.isx
        fy = (y - r.y0) * r.isy
        if not (0 <= fx < r.nx and 0 <= fy < r.ny):
            return NONE, False
        value = int(r.cells[int(fy) * r.nx + int(fx)])
        if value != MIXED:
            return value, False
        return r.refine_one(self.geoms, x, y)

    @property
    def nbytes(self) -> int:
        """Approximate bytes held: polygons (as WKB size), attributes, raster."""
        geom_bytes = int(shapely.get_num_coordinates(self.geoms).sum()) * 16 + 200 * len(self.geoms)
        attr_bytes = int(self.attrs.memory_usage(deep=True).sum())
        return geom_bytes + attr_bytes + (self.raster.nbytes if self.raster else 0)


def _clean(value):
    """A stored value as plain JSON-friendly Python (None for SQL NULL / NaN, enums as their value)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if not isinstance(value, (str, int, float, bool)) and hasattr(value, "value"):
        return value.value
    return value


# ------------------------------------------------------------------------------------------- the index

@dataclass
class LocateBatch:
    """Vectorised answers for n points: owner positions per level, match kind, distance, nearest grid."""

    pos: dict[str, np.ndarray]
    match: np.ndarray  # int8, MATCH_*
    distance_m: np.ndarray  # 0 inside/boundary, metres for nearest, NaN otherwise
    nearest_pos: np.ndarray | None = None  # the nearest grid at any distance, for points with no grid
    nearest_m: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.match)


class LocateIndex:
    """The in-memory index of one boundary set: every level's units, plus metric grid outlines for 'nearest'."""

    def __init__(self, frames: dict[str, gpd.GeoDataFrame], *, valid_from: dt.datetime | None = None,
                 valid_until: dt.datetime | None = None, max_cells: int = DEFAULT_MAX_CELLS, label: str = ""):
        t0 = time.perf_counter()
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.label = label
        self.levels: dict[str, LevelIndex] = {s.key: LevelIndex(s, frames[s.key], max_cells) for s in LEVEL_SPECS}
        grid = self.levels["grid"]
        ref = grid if len(grid) else next((lv for lv in self.levels.values() if len(lv)), None)
        if ref is not None and len(ref):
            minx, miny, maxx, maxy = shapely.total_bounds(ref.geoms)
            self.bounds = (float(minx), float(miny), float(maxx), float(maxy))
        else:
            self.bounds = None
        self.epsg = utm_epsg((self.bounds[0] + self.bounds[2]) / 2, (self.bounds[1] + self.bounds[3]) / 2) \
            if self.bounds else None
        self._to_metric = Transformer.from_crs(STORAGE_SRID, self.epsg, always_xy=True) if self.epsg else None
        if len(grid):
            self.grid_metric = shapely.transform(grid.geoms, self._project_coords)
            self.grid_metric_tree = shapely.STRtree(self.grid_metric)
        else:
            self.grid_metric = np.empty(0, dtype=object)
            self.grid_metric_tree = None
        # Parent links by position, to fill a level left empty from the one below it.
        self.community_of_grid = self._parents("grid", "community_id", "community")
        self.street_of_community = self._parents("community", "street_id", "street")
        self.compound_of_building = self._parents("building", "compound_id", "compound")
        self._warm_up()
        _release_free_memory()
        self.build_seconds = time.perf_counter() - t0

    # -- construction helpers

    def _parents(self, child: str, column: str, parent: str) -> np.ndarray:
        attrs = self.levels[child].attrs
        ids = attrs[column] if column in attrs.columns else pd.Series([None] * len(attrs))
        return self.levels[parent].positions(ids)

    def _project_coords(self, xy: np.ndarray) -> np.ndarray:
        x, y = self._to_metric.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    def _warm_up(self) -> None:
        # GEOS builds prepared-geometry locators and tree nodes lazily on first use; do it here, in one thread,
        # so concurrent readers of a published index never race on that lazy initialisation.
        for level in self.levels.values():
            if len(level):
                pts = shapely.point_on_surface(level.geoms)
                xy = shapely.get_coordinates(pts)
                level.exact(pts)
                shapely.contains(level.geoms, pts)
                # The per-cell candidate tests and the boundary test use the xy predicates: warm them on every unit.
                shapely.intersects_xy(level.geoms, xy[:, 0], xy[:, 1])
                shapely.contains_xy(level.geoms, xy[:, 0], xy[:, 1])
                level.owners(xy[:, 0], xy[:, 1])
        if self.grid_metric_tree is not None:
            pts = shapely.point_on_surface(self.grid_metric[:1])
            self.grid_metric_tree.query(pts, predicate="dwithin", distance=1.0)
            self.grid_metric_tree.query_nearest(pts)

    @classmethod
    def from_db(cls, conn: Connection, ts: dt.datetime | None = None, **kw) -> LocateIndex:
        """Build from the boundaries in force at `ts` (now when None) and all compounds and buildings."""
        return cls(read_frames(conn, ts), **kw)

    # -- queries

    def to_metric(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Points (WGS-84) as shapely points in the index's UTM zone."""
        mx, my = self._to_metric.transform(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return shapely.points(mx, my)

    def _nearest_grid(self, pm: np.ndarray, distance: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For metric points: the grid within `distance` at the least distance (ties: smallest code), and it."""
        best = np.full(len(pm), NONE, dtype=np.int32)
        dist = np.full(len(pm), np.nan)
        if self.grid_metric_tree is None or len(pm) == 0:
            return best, dist
        inp, idx = self.grid_metric_tree.query(pm, predicate="dwithin", distance=distance)
        if len(inp) == 0:
            return best, dist
        d = shapely.distance(self.grid_metric[idx], pm[inp])
        dmin = np.full(len(pm), np.inf)
        np.minimum.at(dmin, inp, d)
        keep = d <= dmin[inp] + TIE_M
        inp, idx, d = inp[keep], idx[keep], d[keep]
        big = np.iinfo(np.int32).max
        first = np.full(len(pm), big, dtype=np.int64)
        np.minimum.at(first, inp, idx)
        hit = first != big
        best[hit] = first[hit]
        dist[hit] = dmin[hit]
        return best, dist

    def _nearest_one(self, pt: shapely.Point, distance: float) -> tuple[int, float]:
        """Scalar `_nearest_grid` for one metric point: (grid position or NONE, distance)."""
        idx = self.grid_metric_tree.query(pt, predicate="dwithin", distance=distance)
        if len(idx) == 0:
            return NONE, math.nan
        d = shapely.distance(self.grid_metric[idx], pt)
        dmin = float(d.min())
        return int(idx[d <= dmin + TIE_M].min()), dmin

    def locate_many(self, lons, lats, accuracy_m: float | None = None, *, nearest_beyond: bool = False,
                    boundary: bool = True) -> LocateBatch:
        """Locate n points (WGS-84 degrees) at once; NaN coordinates give no match."""
        x = np.ascontiguousarray(lons, dtype=np.float64).reshape(-1)
        y = np.ascontiguousarray(lats, dtype=np.float64).reshape(-1)
        if accuracy_m is None:
            from geo.settings import get_settings

            accuracy_m = get_settings().rules.locate_accuracy_m
        pos: dict[str, np.ndarray] = {}
        mixed_grid = np.empty(0, np.int64)
        for key, level in self.levels.items():
            pos[key], mixed = level.owners(x, y)
            if key == "grid":
                mixed_grid = mixed
        grid = pos["grid"]
        match = np.where(grid >= 0, MATCH_INSIDE, MATCH_NONE).astype(np.int8)
        distance = np.where(grid >= 0, 0.0, np.nan)
        if boundary and mixed_grid.size:
            # Only points whose owner a boundary-touching unit won can lie on its edge: covered, not contained.
            cand = mixed_grid
            on_edge = ~shapely.contains_xy(self.levels["grid"].geoms[grid[cand]], x[cand], y[cand])
            match[cand[on_edge]] = MATCH_BOUNDARY
        missing = np.flatnonzero((grid < 0) & np.isfinite(x) & np.isfinite(y))
        nearest_pos = np.full(len(x), NONE, dtype=np.int32) if nearest_beyond else None
        nearest_m = np.full(len(x), np.nan) if nearest_beyond else None
        if missing.size and self.grid_metric_tree is not None:
            pm = self.to_metric(x[missing], y[missing])
            finite = np.isfinite(shapely.get_x(pm)) & np.isfinite(shapely.get_y(pm))
            missing, pm = missing[finite], pm[finite]
            best, dist = self._nearest_grid(pm, float(accuracy_m))
            hit = best >= 0
            grid[missing[hit]] = best[hit]
            match[missing[hit]] = MATCH_NEAREST
            distance[missing[hit]] = dist[hit]
            far = np.flatnonzero(~hit)
            if nearest_beyond and far.size:
                pairs, d = self.grid_metric_tree.query_nearest(pm[far], return_distance=True)
                dmin = np.full(far.size, np.inf)
                np.minimum.at(dmin, pairs[0], d)
                # The tie set at that distance, by the same rule as within accuracy.
                b2, d2 = self._nearest_grid(pm[far], dmin + 2 * TIE_M)
                nearest_pos[missing[far]] = b2
                nearest_m[missing[far]] = d2
        # Fill the chain upwards where a level has no covering unit.
        comm = pos["community"]
        fill = (comm < 0) & (grid >= 0)
        if fill.any() and len(self.community_of_grid):
            comm[fill] = self.community_of_grid[grid[fill]]
        street = pos["street"]
        fill = (street < 0) & (comm >= 0)
        if fill.any() and len(self.street_of_community):
            street[fill] = self.street_of_community[comm[fill]]
        comp = pos["compound"]
        bld = pos["building"]
        fill = (comp < 0) & (bld >= 0)
        if fill.any() and len(self.compound_of_building):
            comp[fill] = self.compound_of_building[bld[fill]]
        return LocateBatch(pos, match, distance, nearest_pos, nearest_m)

    def locate(self, lon: float, lat: float, accuracy_m: float | None = None) -> dict:
        """Locate one point (WGS-84): the chain of units, match, distance, and the nearest grid when none matched."""
        x, y = float(lon), float(lat)
        pos = {}
        grid_mixed = False
        for key, level in self.levels.items():
            pos[key], mixed = level.owner_one(x, y)
            if key == "grid":
                grid_mixed = mixed
        g = pos["grid"]
        match, distance = MATCH_INSIDE, 0.0
        nearest = None
        if g >= 0:
            if grid_mixed and not shapely.contains_xy(self.levels["grid"].geoms[g], x, y):
                match = MATCH_BOUNDARY
        else:
            match, distance = MATCH_NONE, math.nan
            if accuracy_m is None:
                from geo.settings import get_settings

                accuracy_m = get_settings().rules.locate_accuracy_m
            if self.grid_metric_tree is not None and math.isfinite(x) and math.isfinite(y):
                mx, my = self._to_metric.transform(x, y)
                if math.isfinite(mx) and math.isfinite(my):
                    pt = shapely.Point(mx, my)
                    best, dist = self._nearest_one(pt, float(accuracy_m))
                    if best >= 0:
                        g, match, distance = best, MATCH_NEAREST, dist
                        pos["grid"] = g
                    else:
                        _, dmin = self.grid_metric_tree.query_nearest(pt, return_distance=True)
                        nearest = self._nearest_one(pt, float(dmin.min()) + 2 * TIE_M)
        if g >= 0 and pos["community"] < 0 and len(self.community_of_grid):
            pos["community"] = int(self.community_of_grid[g])
        if pos["street"] < 0 and pos["community"] >= 0 and len(self.street_of_community):
            pos["street"] = int(self.street_of_community[pos["community"]])
        if pos["compound"] < 0 and pos["building"] >= 0 and len(self.compound_of_building):
            pos["compound"] = int(self.compound_of_building[pos["building"]])
        out = {key: self.levels[key].record(pos[key]) for key in LEVEL_KEYS}
        out["match"] = MATCH_NAMES[match]
        out["distance_m"] = None if math.isnan(distance) else round(distance, 3)
        if nearest is not None and nearest[0] >= 0:
            out["nearest"] = {"grid": self.levels["grid"].record(nearest[0]), "distance_m": round(nearest[1], 3)}
        return out


    def describe(self, batch: LocateBatch, i: int) -> dict:
        """Answer `i` of a batch as a plain dict."""
        out = {key: self.levels[key].record(int(batch.pos[key][i])) for key in LEVEL_KEYS}
        kind = MATCH_NAMES[int(batch.match[i])]
        out["match"] = kind
        d = batch.distance_m[i]
        out["distance_m"] = None if np.isnan(d) else round(float(d), 3)
        if kind is None and batch.nearest_pos is not None and batch.nearest_pos[i] >= 0:
            out["nearest"] = {"grid": self.levels["grid"].record(int(batch.nearest_pos[i])),
                              "distance_m": round(float(batch.nearest_m[i]), 3)}
        return out

    def outlines(self, lon: float, lat: float, radius_m: float,
                 levels: Sequence[str] = ("grid", "micro_grid", "compound", "building"),
                 limit: int = 2000) -> list[dict]:
        """GeoJSON features of the units of `levels` within `radius_m` of a point (bounding-box test)."""
        mx, my = _metres_per_degree(lat)
        dx, dy = radius_m / mx, radius_m / my
        box = shapely.box(lon - dx, lat - dy, lon + dx, lat + dy)
        features = []
        for key in levels:
            level = self.levels[key]
            if not len(level):
                continue
            idx = np.sort(level.tree.query(box, predicate="intersects"))[:limit]
            for i, geom in zip(idx.tolist(), shapely.to_geojson(level.geoms[idx]).tolist()):
                props = level.record(i)
                props["level"] = key
                features.append({"type": "Feature", "geometry": orjson.loads(geom), "properties": props})
        return features

    @property
    def nbytes(self) -> int:
        """Approximate bytes held by the index (polygons, attributes, rasters, metric grid outlines)."""
        metric = int(shapely.get_num_coordinates(self.grid_metric).sum()) * 16 if len(self.grid_metric) else 0
        return sum(level.nbytes for level in self.levels.values()) + metric

    def summary(self) -> dict:
        """Counts, cell sizes and build time (for logs and the benchmark)."""
        return {
            "units": {k: len(v) for k, v in self.levels.items()},
            "cell_m": {k: (round(v.raster.cell_m, 2) if v.raster else None) for k, v in self.levels.items()},
            "mixed_share": {k: (round(float(np.mean(v.raster.cells == MIXED)), 4) if v.raster else None)
                            for k, v in self.levels.items()},
            "build_seconds": round(self.build_seconds, 3),
            "approx_mb": round(self.nbytes / 2**20, 1),
            "epsg": self.epsg,
        }


# ------------------------------------------------------------------------------------------ reading PostGIS

def read_frames(conn: Connection, ts: dt.datetime | None = None) -> dict[str, gpd.GeoDataFrame]:
    """Every level's units as GeoDataFrames (EPSG:4326): versioned levels at `ts` (now when None)."""
    from geo.store.load import read_level

    frames = {}
    for spec in LEVEL_SPECS:
        if spec.versioned:
            frames[spec.key] = read_level(conn, spec.table, ts)
    frames["compound"] = gpd.read_postgis(
        text("SELECT id, NULL::text AS code, name, kind, community_id, geom FROM compounds ORDER BY id"),
        conn, geom_col="geom")
    frames["building"] = gpd.read_postgis(
        text("SELECT id, code, name, compound_id, community_id, floors, use, geom FROM buildings ORDER BY id"),
        conn, geom_col="geom")
    return frames


def change_points(conn: Connection) -> list[dt.datetime]:
    """Every instant at which some boundary starts or ends, ascending: between two of them the set is constant."""
    parts = " UNION ".join(f"SELECT valid_from AS t FROM {t} UNION SELECT valid_to FROM {t}"
                           for t, _, _ in BOUNDARY_TABLES.values())
    return list(conn.execute(text(f"SELECT DISTINCT t FROM ({parts}) s WHERE t IS NOT NULL ORDER BY t")).scalars())


def boundary_versions(conn: Connection) -> list[dict]:
    """Every boundary version (id, valid_from, label), ascending."""
    rows = conn.execute(text("SELECT id, valid_from, label FROM boundary_versions ORDER BY valid_from")).mappings()
    return [dict(r) for r in rows]


def fingerprint(conn: Connection) -> str:
    """A cheap summary that changes when boundaries, compounds or buildings are added, ended or removed."""
    parts = [f"(SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || count(valid_to) FROM {t})"
             for t, _, _ in BOUNDARY_TABLES.values()]
    parts += [f"(SELECT count(*) || ':' || coalesce(max(id), 0) FROM {t})"
              for t in ("compounds", "buildings", "boundary_versions")]
    return conn.execute(text(f"SELECT concat_ws('|', {', '.join(parts)})")).scalar_one()


# ----------------------------------------------------------------------------------------------- staff

#: Order of roles in answers: the chain of responsibility first.
ROLE_ORDER = ("grid_chief", "grid_worker_fulltime", "grid_worker_parttime", "seconded_cadre", "building_head",
              "unit_head", "steward", "volunteer")


class StaffDirectory:
    """The staff assignments on grids, micro-grids and buildings with their people, held in memory."""

    def __init__(self, frame: pd.DataFrame):
        from geo.staff.register import ROLE_LABELS

        self.loaded_at = time.monotonic()
        frame = frame.copy()
        frame["role_rank"] = frame["role"].map({r: i for i, r in enumerate(ROLE_ORDER)}).fillna(len(ROLE_ORDER))
        frame = frame.sort_values(["role_rank", "person_id", "id"], kind="stable")
        # Plain tuples: (valid_from, valid_to, name, role, role label, phone, phone_public).
        self.by_target: dict[tuple[str, int], list[tuple]] = {}
        for rec in frame.to_dict("records"):
            vf, vt = _as_date(rec["valid_from"]), _as_date(rec["valid_to"])
            phone = rec["phone"] if isinstance(rec["phone"], str) and rec["phone"] else None
            item = (vf, vt, rec["name"], rec["role"], ROLE_LABELS.get(rec["role"]), phone, bool(rec["phone_public"]))
            self.by_target.setdefault((rec["target_type"], int(rec["target_id"])), []).append(item)

    @classmethod
    def load(cls, conn: Connection) -> StaffDirectory:
        """Read the assignments on grids, micro-grids and buildings (all periods)."""
        frame = pd.read_sql(text(
            """
            SELECT a.id, a.role, a.target_type, coalesce(a.grid_id, a.micro_grid_id, a.building_id) AS target_id,
                   a.valid_from, a.valid_to, p.id AS person_id, p.name, p.phone, p.phone_public
            FROM staff_assignments a JOIN people p ON p.id = a.person_id
            WHERE a.target_type IN ('grid', 'micro_grid', 'building')
            """), conn)
        return cls(frame)

    def staff(self, targets: Sequence[tuple[str, int | None]], day: dt.date, show_all_phones: bool) -> list[dict]:
        """People responsible for the targets on `day` (targets in the given order, then by role); the phone only
        when it is on the public notice board (公示) or `show_all_phones`."""
        out = []
        for target_type, target_id in targets:
            if target_id is None:
                continue
            for vf, vt, name, role, label, phone, public in self.by_target.get((target_type, int(target_id)), ()):
                if (vf is not None and vf > day) or (vt is not None and vt <= day):
                    continue
                out.append({"name": name, "role": role, "role_name": label, "target_type": target_type,
                            "target_id": int(target_id), "phone": phone if (public or show_all_phones) else None,
                            "phone_public": public})
        return out


def _as_date(value) -> dt.date | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    return value


# ---------------------------------------------------------------------------------------------- the holder

Connector = Callable[[], AbstractContextManager[Connection]]
_HOLDERS: weakref.WeakSet = weakref.WeakSet()


@dataclass
class _State:
    """An immutable snapshot: what the current index was built from; replaced whole, never mutated."""

    index: LocateIndex
    key: dt.datetime | None
    change_points: list[dt.datetime]
    versions: list[dict]
    fingerprint: str
    generation: int = 0
    cache: OrderedDict = field(default_factory=OrderedDict)


def _key_for(points: list[dt.datetime], ts: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The change point starting the interval holding `ts` (None before the first) and the next one."""
    i = bisect.bisect_right(points, ts) - 1
    return (points[i] if i >= 0 else None), (points[i + 1] if i + 1 < len(points) else None)


class IndexHolder:
    """Owns the current LocateIndex (and a few for past dates); rebuilds in the background and swaps atomically."""

    def __init__(self, connect: Connector, *, cache_size: int = 4, poll_seconds: float | None = 30.0,
                 staff_ttl_seconds: float = 60.0, max_cells: int = DEFAULT_MAX_CELLS,
                 listen: Callable[[], object] | None = None):
        self._connect = connect
        self._listen = listen
        self._listener: ChangeListener | None = None
        # Bumped by every change notification; a snapshot built from an older generation may be out of date.
        self._generation = 0
        self.cache_size = cache_size
        self.poll_seconds = poll_seconds
        self.staff_ttl_seconds = staff_ttl_seconds
        self.max_cells = max_cells
        self._state: _State | None = None
        self._build_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._key_locks: dict = {}
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._refresh_thread: threading.Thread | None = None
        self._next_poll = time.monotonic() + (poll_seconds or 0)
        self._staff: StaffDirectory | None = None
        self._staff_lock = threading.Lock()
        self._staff_loading = False
        self.swaps = 0
        _HOLDERS.add(self)

    @classmethod
    def for_engine(cls, engine: Engine, **kw) -> IndexHolder:
        """A holder reading through `engine`, each build inside one REPEATABLE READ snapshot, listening for the
        database's change notifications (migration 0013) on a connection of its own."""
        if engine.dialect.name == "postgresql" and "listen" not in kw:
            import psycopg

            plain = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            kw["listen"] = lambda: psycopg.connect(plain, autocommit=True, connect_timeout=5)
        return cls(lambda: engine.connect().execution_options(isolation_level="REPEATABLE READ"), **kw)

    # -- building

    def _build_state(self) -> _State:
        generation = self._generation  # read before the snapshot: a change committed after it bumps it again
        with self._connect() as conn:
            fp = fingerprint(conn)
            points = change_points(conn)
            versions = boundary_versions(conn)
            now = dt.datetime.now(dt.timezone.utc)
            key, until = _key_for(points, now)
            index = LocateIndex.from_db(conn, key or now, valid_from=key, valid_until=until,
                                        max_cells=self.max_cells)
        log.info("locate index built in %.2f s: %s", index.build_seconds, index.summary()["units"])
        return _State(index, key, points, versions, fp, generation)

    def _state_now(self) -> _State:
        state = self._state
        if state is None:
            with self._build_lock:
                if self._state is None:
                    self._start_listening()  # before the first snapshot, so no commit after it goes unheard
                    self._state = self._build_state()
                    self.swaps += 1
                state = self._state
        return state

    @property
    def ready(self) -> bool:
        """Whether an index is built (requests will not wait for a first build)."""
        return self._state is not None

    def peek(self) -> LocateIndex | None:
        """The current index when it is built and still in force (no waiting, no database), else None."""
        state = self._state
        if state is None or state.generation != self._generation:
            return None
        until = state.index.valid_until
        if until is not None and dt.datetime.now(dt.timezone.utc) >= until:
            return None
        return state.index

    @property
    def staff_loaded(self) -> bool:
        """Whether the staff directory is in memory (using it will not wait for the database)."""
        return self._staff is not None

    def index_for(self, ts: dt.datetime | None = None) -> LocateIndex:
        """The index for the boundaries in force at `ts` (now when None); built on first use, cached."""
        state = self._state_now()
        if state.generation != self._generation:
            # Boundaries changed since this snapshot: answering from it could name a grid that no longer owns the
            # place, so wait for the rebuild already under way (a failed rebuild leaves the old one in service).
            with self._cond:
                generation = self._generation
                self._cond.wait_for(lambda: self._state.generation >= generation or self._refresh_thread is None)
            state = self._state_now()
        self._maybe_poll()
        now = dt.datetime.now(dt.timezone.utc)
        key, _ = _key_for(state.change_points, ts or now)
        if key == state.key:
            return state.index
        if ts is None:
            # A version dated in the future has come into force since the last build: rebuild before answering.
            self.refresh(wait=True)
            return self._state_now().index
        return self._past_index(state, key, ts)

    def _past_index(self, state: _State, key: dt.datetime | None, ts: dt.datetime) -> LocateIndex:
        with self._cache_lock:
            if key in state.cache:
                state.cache.move_to_end(key)
                return state.cache[key]
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            with self._cache_lock:
                if key in state.cache:
                    return state.cache[key]
            _, until = _key_for(state.change_points, ts)
            with self._connect() as conn:
                index = LocateIndex.from_db(conn, key or ts, valid_from=key, valid_until=until,
                                            max_cells=self.max_cells)
            with self._cache_lock:
                state.cache[key] = index
                while len(state.cache) > self.cache_size:
                    state.cache.popitem(last=False)
                self._key_locks.pop(key, None)
            return index

    def version_at(self, ts: dt.datetime | None = None) -> dict | None:
        """The boundary version in force at `ts` (now when None), from the snapshot."""
        state = self._state_now()
        ts = ts or dt.datetime.now(dt.timezone.utc)
        found = None
        for v in state.versions:
            if v["valid_from"] <= ts:
                found = v
            else:
                break
        return dict(found) if found else None

    # -- refreshing

    def refresh(self, wait: bool = False) -> None:
        """Rebuild the current index in a background thread and swap it in when complete; `wait` blocks until then."""
        with self._cond:
            ticket = self._request_locked()
            if wait:
                self._cond.wait_for(lambda: self._completed >= ticket)

    def _request_locked(self) -> int:
        self._requested += 1
        if self._refresh_thread is None:
            self._refresh_thread = threading.Thread(target=self._refresh_loop, name="locate-index-refresh",
                                                    daemon=True)
            self._refresh_thread.start()
        return self._requested

    def _refresh_loop(self) -> None:
        while True:
            with self._cond:
                target = self._requested
            try:
                new = self._build_state()
            except Exception:  # keep serving the old index; the next poll or notify tries again
                log.exception("rebuilding the locate index failed; the previous index stays in service")
                new = None
            if new is not None:
                self._state = new  # one reference assignment: readers see the old or the new snapshot, whole
                self.swaps += 1
            with self._cond:
                self._completed = target
                self._cond.notify_all()
                if self._requested == target:
                    self._refresh_thread = None
                    return

    def _maybe_poll(self) -> None:
        if not self.poll_seconds or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + self.poll_seconds
        threading.Thread(target=self._poll, name="locate-index-poll", daemon=True).start()

    def _poll(self) -> None:
        try:
            with self._connect() as conn:
                fp = fingerprint(conn)
        except Exception:
            log.exception("locate index poll failed")
            return
        state = self._state
        if state is not None and fp != state.fingerprint:
            self.refresh()

    # -- staff

    def staff_directory(self) -> StaffDirectory:
        """The staff directory; reloaded in the background once older than the TTL."""
        directory = self._staff
        if directory is None:
            with self._staff_lock:
                if self._staff is None:
                    with self._connect() as conn:
                        self._staff = StaffDirectory.load(conn)
                directory = self._staff
        elif time.monotonic() - directory.loaded_at > self.staff_ttl_seconds and not self._staff_loading:
            self._staff_loading = True
            threading.Thread(target=self._reload_staff, name="locate-staff-reload", daemon=True).start()
        return directory

    def _reload_staff(self) -> None:
        try:
            with self._connect() as conn:
                self._staff = StaffDirectory.load(conn)
        except Exception:
            log.exception("reloading the staff directory failed")
        finally:
            self._staff_loading = False

    def invalidate_staff(self) -> None:
        """Forget the staff directory (it is read again on next use)."""
        self._staff = None

    # -- change notifications

    def boundaries_changed(self) -> None:
        """Boundaries (or compounds, buildings) changed and are committed: stop answering from the old snapshot."""
        with self._cond:  # one step, so a reader never sees the new generation with no rebuild under way
            self._generation += 1
            self._request_locked()

    def _start_listening(self) -> None:
        if self._listen is not None and self._listener is None:
            self._listener = ChangeListener(self, self._listen)
            self._listener.start()

    def close(self) -> None:
        """Stop listening for change notifications (the index stays usable)."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


def notify_boundaries_changed(since: float | None = None) -> None:
    """Tell every index holder in this process that boundaries changed (call after the commit): each rebuilds in the
    background and, until it has, answers only after waiting for the rebuild.

    `since` is a `time.monotonic()` taken before the commit: a holder whose listener has heard the database's
    notification since then already knows (so no second rebuild); one that has not within a moment is told here.
    """
    for holder in list(_HOLDERS):
        listener = holder._listener
        if since is not None and listener is not None and listener.heard_since(since, timeout=2.0):
            continue
        holder.boundaries_changed()


CHANGE_CHANNEL = "gridatlas_changes"  # sent by the triggers of migration 0013


class ChangeListener:
    """A daemon thread LISTENing for the database's change notifications on behalf of one IndexHolder.

    Other processes (a second uvicorn worker, an import from the command line) write boundaries too; the triggers
    of migration 0013 notify on commit, and this thread turns `boundaries` into `IndexHolder.boundaries_changed`
    and `staff` into `invalidate_staff`. After a lost connection it reconnects and assumes it missed a change.
    """

    def __init__(self, holder: IndexHolder, connect: Callable[[], object], *, wait_seconds: float = 5.0):
        self._holder = weakref.ref(holder)
        self._connect = connect
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._wait = wait_seconds
        self._heard = threading.Condition()
        self._last_heard = -math.inf
        self._thread = threading.Thread(target=self._run, name="locate-change-listener", daemon=True)

    def start(self) -> None:
        """Start the thread and wait (bounded) until it is listening."""
        self._thread.start()
        if not self._listening.wait(self._wait):
            log.warning("not listening for change notifications yet; the fingerprint poll still applies")

    def stop(self) -> None:
        """Ask the thread to end (within about a second)."""
        self._stop.set()

    @property
    def listening(self) -> bool:
        """Whether the LISTEN is established."""
        return self._listening.is_set()

    def _run(self) -> None:
        first = True
        while not self._stop.is_set() and self._holder() is not None:
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                    self._listening.set()
                    if not first:
                        self._deliver("boundaries")
                        self._deliver("staff")
                    first = False
                    while not self._stop.is_set() and self._holder() is not None:
                        for note in conn.notifies(timeout=1.0):
                            self._deliver(note.payload)
            except Exception:
                self._listening.clear()
                if self._stop.wait(2.0):
                    return
                log.warning("change listener lost its connection; reconnecting", exc_info=True)

    def heard_since(self, since: float, timeout: float) -> bool:
        """Whether a boundary notification arrived after monotonic time `since` (waiting up to `timeout` s)."""
        with self._heard:
            return self._heard.wait_for(lambda: self._last_heard >= since, timeout if self.listening else 0)

    def _deliver(self, payload: str) -> None:
        holder = self._holder()
        if holder is None:
            return
        if payload == "staff":
            holder.invalidate_staff()
            return
        holder.boundaries_changed()
        with self._heard:
            self._last_heard = time.monotonic()
            self._heard.notify_all()


def notify_staff_changed() -> None:
    """Tell every live index holder that staff assignments changed: the directory is read again on next use."""
    for holder in list(_HOLDERS):
        holder.invalidate_staff()


# ---------------------------------------------------------------------------------- PostGIS reference

def _in_force(alias: str) -> str:
    return f"{alias}.valid_from <= e.ts AND ({alias}.valid_to IS NULL OR {alias}.valid_to > e.ts)"


def _owner_sql(key: str, extra: str = "") -> str:
    table, fk, ident = BOUNDARY_TABLES[key]
    return (f"LEFT JOIN LATERAL (SELECT u.id{extra} FROM {table} b JOIN {ident} u ON u.id = b.{fk} "
            f"WHERE ST_Covers(b.geom, p.g) AND {_in_force('b')} ORDER BY u.code COLLATE \"C\" LIMIT 1) {key} ON TRUE")


def _nearest_sql(alias: str, where: str, max_d: str | None) -> str:
    within = f"WHERE c0.d <= {max_d}" if max_d else ""
    return f"""
    LEFT JOIN LATERAL (
        SELECT c.id, c.d FROM (
            SELECT c0.*, min(c0.d) OVER () AS dmin FROM (
                SELECT u.id, u.code, ST_Distance(ST_Transform(b.geom, e.epsg), ST_Transform(p.g, e.epsg)) AS d
                FROM grid_boundaries b JOIN grids u ON u.id = b.grid_id
                WHERE {where} AND {_in_force('b')}
            ) c0 {within}
        ) c WHERE c.d <= c.dmin + {TIE_M!r} ORDER BY c.code COLLATE "C" LIMIT 1
    ) {alias} ON TRUE"""


def _reference_sql(unbounded: bool) -> str:
    # A degree radius no smaller than accuracy_m metres at the point's latitude (1 deg of longitude >= 110 km
    # x cos(lat)) lets the GiST index find the candidates; the metric test follows.
    deg = "(e.acc / (110000.0 * cos(radians(least(abs(ST_Y(p.g)) + 0.1, 89.0)))))"
    near = _nearest_sql("nr", f"grid.id IS NULL AND ST_DWithin(b.geom, p.g, {deg})", "e.acc")
    far = _nearest_sql("nf", "grid.id IS NULL AND nr.id IS NULL", None) if unbounded else \
        "LEFT JOIN LATERAL (SELECT NULL::int AS id, NULL::float8 AS d) nf ON TRUE"
    return f"""
    WITH e AS (SELECT CAST(:ts AS timestamptz) AS ts, CAST(:epsg AS int) AS epsg, CAST(:acc AS float8) AS acc),
    p AS (SELECT o, ST_SetSRID(ST_MakePoint(x, y), 4326) AS g
          FROM unnest(CAST(:xs AS float8[]), CAST(:ys AS float8[])) WITH ORDINALITY AS t(x, y, o)),
    r AS (
        SELECT p.o, street.id AS street_id, community.id AS community_id, grid.id AS grid_id, grid.on_edge,
               micro_grid.id AS micro_grid_id, compound.id AS compound_id, building.id AS building_id,
               nr.id AS nearest_id, nr.d AS nearest_m, nf.id AS far_id, nf.d AS far_m
        FROM p CROSS JOIN e
        {_owner_sql('street')}
        {_owner_sql('community')}
        {_owner_sql('grid', ', NOT ST_Contains(b.geom, p.g) AS on_edge')}
        {_owner_sql('micro_grid')}
        LEFT JOIN LATERAL (SELECT c.id FROM compounds c WHERE ST_Covers(c.geom, p.g) ORDER BY c.id LIMIT 1) compound
          ON TRUE
        LEFT JOIN LATERAL (SELECT bl.id FROM buildings bl WHERE ST_Covers(bl.geom, p.g) ORDER BY bl.id LIMIT 1)
          building ON TRUE
        {near}
        {far}
    ),
    -- A level left empty is filled up the chain: community from the grid, street from the community.
    f AS (
        SELECT r.*, coalesce(r.grid_id, r.nearest_id) AS grid_any,
               coalesce(r.community_id, (SELECT g.community_id FROM grids g
                                         WHERE g.id = coalesce(r.grid_id, r.nearest_id))) AS community_any
        FROM r
    )
    SELECT f.o, coalesce(f.street_id, (SELECT c.street_id FROM communities c WHERE c.id = f.community_any))
             AS street_id,
           f.community_any AS community_id, f.grid_id, f.on_edge, f.micro_grid_id,
           coalesce(f.compound_id, (SELECT b.compound_id FROM buildings b WHERE b.id = f.building_id)) AS compound_id,
           f.building_id, f.nearest_id, f.nearest_m, f.far_id, f.far_m
    FROM f ORDER BY f.o
    """


def reference_epsg(conn: Connection, ts: dt.datetime | None = None) -> int | None:
    """The UTM zone of the centre of the grid layer in force at `ts` (the index's metric CRS)."""
    row = conn.execute(text(
        "SELECT ST_XMin(x), ST_YMin(x), ST_XMax(x), ST_YMax(x) FROM (SELECT ST_Extent(geom) AS x "
        "FROM grids_at(coalesce(CAST(:ts AS timestamptz), now()))) s"), {"ts": ts}).first()
    if row is None or row[0] is None:
        return None
    return utm_epsg((row[0] + row[2]) / 2.0, (row[1] + row[3]) / 2.0)


def locate_sql_many(conn: Connection, lons, lats, at: dt.datetime | None = None,
                    accuracy_m: float | None = None, *, unbounded: bool = False,
                    epsg: int | None = None) -> pd.DataFrame:
    """The PostGIS reference for many points: ids per level, match, distance_m (one set-based query)."""
    if accuracy_m is None:
        from geo.settings import get_settings

        accuracy_m = get_settings().rules.locate_accuracy_m
    ts = at or conn.execute(text("SELECT now()")).scalar_one()
    epsg = epsg or reference_epsg(conn, ts) or utm_epsg(float(np.ravel(lons)[0]), float(np.ravel(lats)[0]))
    xs = np.asarray(lons, dtype=np.float64).tolist()
    ys = np.asarray(lats, dtype=np.float64).tolist()
    df = pd.read_sql(text(_reference_sql(unbounded)), conn,
                     params={"xs": xs, "ys": ys, "ts": ts, "epsg": epsg, "acc": float(accuracy_m)})
    grid = df["grid_id"].copy()
    match = np.where(grid.notna(), np.where(df["on_edge"].fillna(False).astype(bool), "boundary", "inside"), None)
    near = grid.isna() & df["nearest_id"].notna()
    grid[near] = df.loc[near, "nearest_id"]
    match[near.to_numpy()] = "nearest"
    df["grid_id"] = grid
    df["match"] = pd.Series(list(match), index=df.index, dtype=object)
    df["distance_m"] = np.where(df["match"].isin(["inside", "boundary"]), 0.0,
                                np.where(near, df["nearest_m"].astype(float), np.nan))
    for col in ("street_id", "community_id", "grid_id", "micro_grid_id", "compound_id", "building_id",
                "far_id", "nearest_id"):
        df[col] = df[col].astype("Int64")
    return df.drop(columns=["o", "on_edge"])


def locate_sql(conn: Connection, lon: float, lat: float, at: dt.datetime | None = None,
               accuracy_m: float | None = None, *, epsg: int | None = None, unbounded: bool = True) -> dict:
    """The PostGIS reference for one point (one query): {level: id or None, match, distance_m, nearest_id,
    nearest_m}; `unbounded` also finds the nearest grid beyond `accuracy_m` when no grid matched."""
    if accuracy_m is None:
        from geo.settings import get_settings

        accuracy_m = get_settings().rules.locate_accuracy_m
    ts = at or conn.execute(text("SELECT now()")).scalar_one()
    epsg = epsg or reference_epsg(conn, ts) or utm_epsg(lon, lat)
    row = conn.execute(text(_reference_sql(unbounded)),
                       {"xs": [float(lon)], "ys": [float(lat)], "ts": ts, "epsg": epsg,
                        "acc": float(accuracy_m)}).mappings().one()
    out = {k: row[f"{k}_id"] for k in LEVEL_KEYS}
    if row["grid_id"] is not None:
        out["match"], out["distance_m"] = ("boundary" if row["on_edge"] else "inside"), 0.0
    elif row["nearest_id"] is not None:
        out["grid"], out["match"], out["distance_m"] = row["nearest_id"], "nearest", float(row["nearest_m"])
    else:
        out["match"], out["distance_m"] = None, None
    out["nearest_id"] = row["far_id"]
    out["nearest_m"] = None if row["far_m"] is None else float(row["far_m"])
    return out


# ------------------------------------------------------------------------------------- agreement check

def agreement_points(index: LocateIndex, n: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """n points over the district: half uniform over its extent plus a 20% margin outside, a quarter exactly on
    boundary vertices (shared by grids, micro-grids and the levels above), a quarter on boundary edges."""
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = index.bounds
    dx, dy = (maxx - minx) * 0.2, (maxy - miny) * 0.2
    n_uniform = n // 2
    ux = rng.uniform(minx - dx, maxx + dx, n_uniform)
    uy = rng.uniform(miny - dy, maxy + dy, n_uniform)
    rings = np.concatenate([shapely.get_rings(shapely.get_parts(index.levels[k].geoms))
                            for k in ("grid", "micro_grid", "community", "street")])
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    n_vertex = n // 4
    vi = rng.integers(0, len(xy), n_vertex)
    same = np.flatnonzero(ring[1:] == ring[:-1])
    si = same[rng.integers(0, len(same), n - n_uniform - n_vertex)]
    t = np.where(rng.random(len(si)) < 0.5, 0.5, rng.random(len(si)))
    ex = xy[si, 0] + t * (xy[si + 1, 0] - xy[si, 0])
    ey = xy[si, 1] + t * (xy[si + 1, 1] - xy[si, 1])
    return np.r_[ux, xy[vi, 0], ex], np.r_[uy, xy[vi, 1], ey]


def compare_with_reference(index: LocateIndex, conn, lon, lat, accuracy_m: float = 30.0) -> dict:
    """Locate with the index and the PostGIS reference: disagreements per level, in match, in distance."""
    got = index.locate_many(lon, lat, accuracy_m)
    ref = locate_sql_many(conn, lon, lat, accuracy_m=accuracy_m)
    out = {}
    for level in ("street", "community", "grid", "micro_grid", "compound", "building"):
        ids = index.levels[level].ids
        mine = np.where(got.pos[level] >= 0, ids[np.maximum(got.pos[level], 0)], -1)
        out[level] = int((mine != ref[f"{level}_id"].fillna(-1).to_numpy(np.int64)).sum())
    names = np.array([None, "inside", "boundary", "nearest"], dtype=object)[got.match]
    theirs = np.array([m if isinstance(m, str) else None for m in ref["match"]], dtype=object)
    out["match"] = int((names != theirs).sum())
    d_ref = ref["distance_m"].to_numpy(np.float64)
    both = np.isfinite(got.distance_m) & np.isfinite(d_ref)
    out["distance"] = int((np.abs(got.distance_m[both] - d_ref[both]) > 1e-3).sum()) + \
        int((np.isfinite(got.distance_m) != np.isfinite(d_ref)).sum())
    out["kinds"] = {k: int((names == k).sum()) for k in ("inside", "boundary", "nearest")}
    out["kinds"]["none"] = int((names == None).sum())  # noqa: E711
    return out
