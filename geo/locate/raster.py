"""The cell raster (网格栅格) in front of a level's exact polygons: most points are answered by arithmetic alone.

Every cell of a regular lattice over a level's extent that no boundary touches is "pure" and stores its owner; each
cell a boundary touches ("mixed") lists the few units whose boundary touches it, in tie-break order, and the first
unit holding the whole cell (`sure`). A point in a mixed cell is tested exactly against those candidates with
``shapely.intersects_xy`` (``covers`` for a polygon and a point), without creating Point objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely

from geo.runtime import paused_gc

#: Owner value for "no unit covers the point".
NONE = -1
#: Raster value for "a boundary touches this cell: ask the exact path".
MIXED = -2

#: Cells per level at most (memory bound: 4 M cells are 8-16 MB); coarser cells when the district is larger.
DEFAULT_MAX_CELLS = 4_000_000
#: Cell-space tolerance when marking boundary cells: covers floating-point error of the cell arithmetic.
_CELL_EPS = 1e-6
#: Points created at once while building (bounds the memory of the temporary shapely objects).
_POINT_BATCH = 32_768


def _points(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """shapely points, with the cyclic garbage collector paused while they are created."""
    with paused_gc():
        return np.asarray(shapely.points(x, y))


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Distinct values, ascending (a sort and a mask: faster than np.unique's hashing on these int64 keys)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def metres_per_degree(lat: float) -> tuple[float, float]:
    """Approximate metres per degree of longitude and of latitude at latitude `lat`."""
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
    # Per MIXED cell (ascending flat index): its candidates cand[cand_ptr[i]:cand_ptr[i + 1]] and its sure owner.
    mixed_cells: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    cand_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    cand: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    sure: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))

    def cell_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous cell-space coordinates; the cell is their floor. Used alike for building and querying."""
        return (x - self.x0) * self.isx, (y - self.y0) * self.isy

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The stored value for each point: owner position, NONE, or MIXED; points off the lattice get NONE."""
        return RasterStack([self]).lookup(x, y)[0]

    @classmethod
    def build(cls, geoms: np.ndarray, owners: Callable[[np.ndarray], np.ndarray], cell_m: float,
              max_cells: int = DEFAULT_MAX_CELLS, tree: shapely.STRtree | None = None) -> CellRaster:
        """Mark every cell a boundary touches as MIXED; give each run of untouched cells its owner (one exact query);
        list for each MIXED cell the units that can cover a point of it."""
        minx, miny, maxx, maxy = shapely.total_bounds(geoms)
        mx, my = metres_per_degree((miny + maxy) / 2.0)
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

    @property
    def nbytes(self) -> int:
        return int(self.cells.nbytes + self.mixed_cells.nbytes + self.cand_ptr.nbytes + self.cand.nbytes
                   + self.sure.nbytes)



class RasterStack:
    """The rasters of several levels looked up together: one pass of cell arithmetic and one gather per cell dtype
    for all of them, so a single point costs a handful of numpy calls rather than a handful per level.

    The rasters' cells are concatenated per dtype and each raster's `cells` becomes a view into that array (no
    second copy is kept); with ``fuse=False`` (a patched index) nothing is copied and each raster is gathered on its
    own. A point off a lattice (or with a NaN coordinate) is clamped onto the lattice's outermost
    cells: the two-cell margin `CellRaster.build` leaves around the units holds NONE there, so it answers NONE
    without a range test.
    """

    #: Points per pass (bounds the memory of the (levels, points) temporaries).
    BLOCK = 65_536

    def __init__(self, rasters: list[CellRaster], fuse: bool = True):
        def column(values: Sequence[float], dtype: type = np.float64) -> np.ndarray:
            return np.array(values, dtype=dtype).reshape(-1, 1)

        self.n = len(rasters)
        self.x0 = column([r.x0 for r in rasters])
        self.y0 = column([r.y0 for r in rasters])
        self.isx = column([r.isx for r in rasters])
        self.isy = column([r.isy for r in rasters])
        self.x_max = column([r.nx - 1 for r in rasters])
        self.y_max = column([r.ny - 1 for r in rasters])
        self.nx = column([r.nx for r in rasters], np.int64)
        offsets = [0] * self.n
        #: (rows of the rasters in this group, or None for all; their cells end to end), one group per dtype.
        self.groups: list[tuple[np.ndarray | None, np.ndarray]] = []
        dtypes = list(dict.fromkeys(r.cells.dtype for r in rasters))
        if not fuse and self.n > 1:
            # each raster its own group, its cells not copied: a patched index shares the unchanged levels' cells
            # (one gather per level instead of one for all: a few microseconds more per lookup)
            self.groups = [(np.array([k]), r.cells) for k, r in enumerate(rasters)]
            dtypes = []
        for dtype in dtypes:
            rows = [k for k, r in enumerate(rasters) if r.cells.dtype == dtype]
            if len(rows) == 1:
                cells = rasters[rows[0]].cells
            else:
                cells = np.concatenate([rasters[k].cells for k in rows])
                at = 0
                for k in rows:
                    size = len(rasters[k].cells)
                    rasters[k].cells = cells[at:at + size]
                    offsets[k] = at
                    at += size
            self.groups.append((None if len(dtypes) == 1 else np.array(rows), cells))
        self.offset = column(offsets, np.int64)

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(rasters, points) stored values: owner position, NONE or MIXED."""
        n = len(x)
        if n <= self.BLOCK:
            return self._values(self._flat_cells(x, y))
        out = np.empty((self.n, n), dtype=np.int32)
        for start in range(0, n, self.BLOCK):
            part = slice(start, start + self.BLOCK)
            out[:, part] = self._values(self._flat_cells(x[part], y[part]))
        return out

    def _values(self, flat: np.ndarray) -> np.ndarray:
        rows, cells = self.groups[0]
        if rows is None:
            return cells[flat].astype(np.int32)
        out = np.empty(flat.shape, dtype=np.int32)
        for rows, cells in self.groups:
            out[rows] = cells[flat[rows]]
        return out

    def _flat_cells(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each point's cell in each raster, as an index into the raster's group of cells."""
        # The same arithmetic as CellRaster.cell_coords (so the same cell), then clamped: fmax/fmin map NaN to 0.
        fx = np.subtract(x, self.x0)
        fx *= self.isx
        np.fmax(fx, 0.0, out=fx)
        np.fmin(fx, self.x_max, out=fx)
        fy = np.subtract(y, self.y0)
        fy *= self.isy
        np.fmax(fy, 0.0, out=fy)
        np.fmin(fy, self.y_max, out=fy)
        flat = fy.astype(np.int64)
        flat *= self.nx
        flat += fx.astype(np.int64)
        flat += self.offset
        return flat
