"""The in-memory locate index (定位索引): which street, community, grid, micro-grid, compound and building a point
lies in, for one boundary set (the boundaries in force over one interval of time), built from PostGIS.

Each level (`LevelIndex`) holds its units in tie-break order with prepared polygons, an STRtree and a
`geo.locate.raster.CellRaster` in front of them; `LocateIndex.locate_many` is vectorised end to end and
`LocateIndex.locate` is the same path for one point. The rules (shared with `geo.locate.reference`, the PostGIS
reference, and `geo.incidents.attribution`):

- A point on a shared edge or vertex belongs to the covering unit with the smallest code (streets, communities,
  grids, micro-grids, compared as text in C collation) or the smallest id (compounds, buildings). ``match`` is
  ``boundary`` when the point lies on the owning grid's boundary (covered but not contained).
- A point in no grid gets the nearest grid within ``accuracy_m`` metres (``match: nearest``); distances are
  measured in the UTM zone of the grid layer's centre; equal distances (within `TIE_M`) go to the smallest code.
- A level left empty is filled up the chain: community from the grid, street from the community, compound from
  the building, so a worker standing on the road beside a grid still sees the whole chain.
- Grids of real layers overlap (tens of m² between neighbours). A point inside an overlap still gets one grid by
  the rule above, and ``also_covered_by`` names the other grids whose interior holds it (smallest code first); the
  PostGIS reference answers the same with ``ST_Contains``.
- Every answer carries its grid's boundary version (``version_id``, `LocateIndex.versions`), not the newest one.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import shapely
from pyproj import Transformer
from sqlalchemy import Connection, text

from geo.errors import DomainError
from geo.locate.raster import DEFAULT_MAX_CELLS, MIXED, NONE, CellRaster, RasterStack, metres_per_degree
from geo.spatial.crs import STORAGE_SRID, utm_epsg

#: Distances closer than this (metres) count as equal; the smaller code wins.
TIE_M = 1e-6
#: Match kinds (int8 codes in `LocateBatch.match`).
MATCH_NONE, MATCH_INSIDE, MATCH_BOUNDARY, MATCH_NEAREST = 0, 1, 2, 3
MATCH_NAMES = {MATCH_NONE: None, MATCH_INSIDE: "inside", MATCH_BOUNDARY: "boundary", MATCH_NEAREST: "nearest"}

#: A level's cell edge is its median unit's size divided by this, clamped to [MIN_CELL_M, MAX_CELL_M].
CELLS_PER_UNIT = 48
MIN_CELL_M = 2.0
MAX_CELL_M = 60.0
#: Cells per level at least (unless that makes them smaller than MIN_CELL_M).
MIN_CELLS = 1_000_000


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
    LevelSpec("grid", "grids", True, ("kind", "dedicated_type", "community_id", "version_id"), "code"),
    LevelSpec("micro_grid", "micro_grids", True, ("grid_id",), "code"),
    LevelSpec("compound", "compounds", False, ("kind", "community_id"), "id"),
    LevelSpec("building", "buildings", False, ("compound_id", "community_id", "floors", "use"), "id"),
)
LEVEL_KEYS = tuple(s.key for s in LEVEL_SPECS)
#: Boundary tables of the versioned levels: (table, foreign key, identity table).
BOUNDARY_TABLES = {
    "street": ("street_boundaries", "street_id", "streets"),
    "community": ("community_boundaries", "community_id", "communities"),
    "grid": ("grid_boundaries", "grid_id", "grids"),
    "micro_grid": ("micro_grid_boundaries", "micro_grid_id", "micro_grids"),
}



def _release_free_memory() -> None:
    """Hand the heap freed by a build's temporaries back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    The build's large numpy temporaries raise glibc's dynamic mmap threshold, so later ones come from the heap
    and stay in the resident set after they are freed: some 100 MB at scale 1, for an index of about 50 MB."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass



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
        mx, my = metres_per_degree(float(np.nanmean((miny + maxy) / 2.0)))
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
        return self.resolve(self.raster.lookup(x, y), x, y)

    def resolve(self, values: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`owners` from the raster's values for the points (`CellRaster.lookup`; changed in place): the points in
        MIXED cells are tested against their cell's candidates."""
        mixed = np.flatnonzero(values == MIXED)
        if mixed.size and self.raster is not None:
            owner, tested = self.raster.refine(self.geoms, x[mixed], y[mixed])
            values[mixed] = owner
            return values, mixed[tested]
        return values, mixed

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

class NotInAnyGrid(DomainError):
    """No grid covers the point or lies within the accuracy radius (不在任何网格内)."""

    slug = "not-in-any-grid"
    kind = "not-found"
    title = "Not in any grid"

    @classmethod
    def for_answer(cls, found: dict, accuracy_m: float, **members: Any) -> NotInAnyGrid:
        """The error for an answer of `LocateIndex.locate` with no grid, naming the nearest grid when there is one."""
        nearest = found.get("nearest")
        detail = unanswered(nearest["grid"] if nearest else None, nearest["distance_m"] if nearest else None,
                            accuracy_m)
        return cls(detail, nearest_grid=nearest["grid"] if nearest else None,
                   distance_m=nearest["distance_m"] if nearest else None, accuracy_m=accuracy_m, **members)


def unanswered(nearest: dict | None, distance_m: float | None, accuracy_m: float | None) -> str:
    """Why a point has no grid, in the words of the single answer's 404 (`NotInAnyGrid`)."""
    if nearest is None or distance_m is None:
        return "no grid boundaries are in force at this date"
    within = f"within {accuracy_m:g} m " if accuracy_m is not None else ""
    return (f"no grid {within}of this point; the nearest grid is {nearest['name']} ({nearest['code']}), "
            f"{distance_m:.1f} m away")


@dataclass
class LocateBatch:
    """Vectorised answers for n points: owner positions per level, match kind, distance, nearest grid."""

    pos: dict[str, np.ndarray]
    match: np.ndarray  # int8, MATCH_*
    distance_m: np.ndarray  # 0 inside/boundary, metres for nearest, NaN otherwise
    # With `nearest_beyond`: the nearest grid at any distance for points with no grid (None when no point needs it).
    nearest_pos: np.ndarray | None = None
    nearest_m: np.ndarray | None = None
    #: Point index → positions of the other grids whose interior holds it (points in an overlap only).
    also: dict[int, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.match)


class LocateIndex:
    """The in-memory index of one boundary set: every level's units, plus metric grid outlines for 'nearest'."""

    def __init__(self, frames: dict[str, gpd.GeoDataFrame], *, valid_from: dt.datetime | None = None,
                 valid_until: dt.datetime | None = None, max_cells: int = DEFAULT_MAX_CELLS, label: str = "",
                 versions: dict[int, dict] | None = None):
        t0 = time.perf_counter()
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.label = label
        #: The boundary versions the grids come from, by id ({id, label, valid_from}): the answers' versions.
        self.versions: dict[int, dict] = versions or {}
        self.levels: dict[str, LevelIndex] = {s.key: LevelIndex(s, frames[s.key], max_cells) for s in LEVEL_SPECS}
        grid = self.levels["grid"]
        ref = grid if len(grid) else next((lv for lv in self.levels.values() if len(lv)), None)
        self.bounds: tuple[float, float, float, float] | None = None
        self.epsg: int | None = None
        self._to_metric: Transformer | None = None
        if ref is not None and len(ref):
            minx, miny, maxx, maxy = shapely.total_bounds(ref.geoms)
            self.bounds = (float(minx), float(miny), float(maxx), float(maxy))
            self.epsg = utm_epsg((self.bounds[0] + self.bounds[2]) / 2, (self.bounds[1] + self.bounds[3]) / 2)
            self._to_metric = Transformer.from_crs(STORAGE_SRID, self.epsg, always_xy=True)
        self.grid_metric: np.ndarray = np.empty(0, dtype=object)
        self.grid_metric_tree: shapely.STRtree | None = None
        if len(grid):
            self.grid_metric = shapely.transform(grid.geoms, self._project_coords)
            self.grid_metric_tree = shapely.STRtree(self.grid_metric)
        # The levels' rasters are looked up together (one pass of cell arithmetic for all).
        self._rastered = [key for key, level in self.levels.items() if level.raster is not None]
        self._stack = RasterStack([r for r in (level.raster for level in self.levels.values()) if r is not None])
        # Parent links by position, to fill a level left empty from the one below it.
        self.community_of_grid = self._parents("grid", "community_id", "community")
        self.street_of_community = self._parents("community", "street_id", "street")
        self.compound_of_building = self._parents("building", "compound_id", "compound")
        self.grid_overlaps = self._overlapping(grid)
        self._warm_up()
        _release_free_memory()
        self.build_seconds = time.perf_counter() - t0

    # -- construction helpers

    @staticmethod
    def _overlapping(level: LevelIndex) -> np.ndarray:
        """Per unit of a level, whether its interior meets another's (an overlap, not a shared edge)."""
        mask = np.zeros(len(level), dtype=bool)
        if len(level) > 1:
            i, j = level.tree.query(level.geoms, predicate="intersects")
            keep = i < j
            i, j = i[keep], j[keep]
            inner = shapely.relate_pattern(level.geoms[i], level.geoms[j], "T********")
            mask[i[inner]] = True
            mask[j[inner]] = True
        return mask

    def _also_covering(self, grid: np.ndarray, match: np.ndarray, x: np.ndarray,
                       y: np.ndarray) -> dict[int, list[int]]:
        """For points whose grid overlaps another: the other grids whose interior holds them (in code order)."""
        if not self.grid_overlaps.any():
            return {}
        inside = (match == MATCH_INSIDE) | (match == MATCH_BOUNDARY)
        cand = np.flatnonzero(inside & self.grid_overlaps[np.maximum(grid, 0)] & (grid >= 0))
        if not cand.size:
            return {}
        level = self.levels["grid"]
        pi, gi = level.tree.query(shapely.points(x[cand], y[cand]))
        pts = cand[pi]
        ok = (gi != grid[pts]) & shapely.contains_xy(level.geoms[gi], x[pts], y[pts])
        also: dict[int, list[int]] = {}
        for p, g in sorted(zip(pts[ok].tolist(), gi[ok].tolist(), strict=True)):
            also.setdefault(p, []).append(g)  # positions are in code order: sorted pairs keep it
        return also

    def _parents(self, child: str, column: str, parent: str) -> np.ndarray:
        attrs = self.levels[child].attrs
        ids = attrs[column] if column in attrs.columns else pd.Series([None] * len(attrs))
        return self.levels[parent].positions(ids)

    def _transformer(self) -> Transformer:
        if self._to_metric is None:
            raise ValueError("the index holds no units: it has no metric frame")
        return self._to_metric

    def _project_coords(self, xy: np.ndarray) -> np.ndarray:
        x, y = self._transformer().transform(xy[:, 0], xy[:, 1])
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
    def from_db(cls, conn: Connection, ts: dt.datetime | None = None, **kw: Any) -> LocateIndex:
        """Build from the boundaries in force at `ts` (now when None) and all compounds and buildings."""
        if "versions" not in kw:
            kw["versions"] = {r["id"]: dict(r) for r in conn.execute(
                text("SELECT id, label, valid_from FROM boundary_versions")).mappings()}
        return cls(read_frames(conn, ts), **kw)

    # -- queries

    def to_metric(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Points (WGS-84) as shapely points in the index's UTM zone."""
        mx, my = self._transformer().transform(np.asarray(x, np.float64), np.asarray(y, np.float64))
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

    def locate_many(self, lons: Any, lats: Any, accuracy_m: float | None = None, *, nearest_beyond: bool = False,
                    boundary: bool = True) -> LocateBatch:
        """Locate n points (WGS-84 degrees) at once; NaN coordinates give no match."""
        x = np.ascontiguousarray(lons, dtype=np.float64).reshape(-1)
        y = np.ascontiguousarray(lats, dtype=np.float64).reshape(-1)
        if accuracy_m is None:
            from geo.settings import get_settings

            accuracy_m = get_settings().rules.locate_accuracy_m
        values = self._stack.lookup(x, y)
        any_mixed = (values == MIXED).any(axis=1).tolist()
        pos = {key: np.full(len(x), NONE, dtype=np.int32) for key in self.levels if key not in self._rastered}
        mixed_grid = np.empty(0, np.int64)
        for row, key in enumerate(self._rastered):
            if not any_mixed[row]:
                pos[key] = values[row]
                continue
            pos[key], tested = self.levels[key].resolve(values[row], x, y)
            if key == "grid":
                mixed_grid = tested
        grid = pos["grid"]
        has_grid = grid >= 0
        match = has_grid.astype(np.int8)  # MATCH_INSIDE (1) where a grid covers the point, else MATCH_NONE (0)
        distance = np.where(has_grid, 0.0, np.nan)
        if boundary and mixed_grid.size:
            # Only points whose owner a boundary-touching unit won can lie on its edge: covered, not contained.
            cand = mixed_grid
            on_edge = ~shapely.contains_xy(self.levels["grid"].geoms[grid[cand]], x[cand], y[cand])
            match[cand[on_edge]] = MATCH_BOUNDARY
        nearest_pos: np.ndarray | None = None  # made only when some point needs them
        nearest_m: np.ndarray | None = None
        if not has_grid.all() and self.grid_metric_tree is not None:
            missing = np.flatnonzero(~has_grid & np.isfinite(x) & np.isfinite(y))
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
                nearest_pos = np.full(len(x), NONE, dtype=np.int32)
                nearest_m = np.full(len(x), np.nan)
                nearest_pos[missing[far]] = b2
                nearest_m[missing[far]] = d2
        # Fill the chain upwards where a level has no covering unit.
        _fill_up(pos["community"], grid, self.community_of_grid)
        _fill_up(pos["street"], pos["community"], self.street_of_community)
        _fill_up(pos["compound"], pos["building"], self.compound_of_building)
        also = self._also_covering(grid, match, x, y)
        return LocateBatch(pos, match, distance, nearest_pos, nearest_m, also)

    def locate(self, lon: float, lat: float, accuracy_m: float | None = None) -> dict:
        """Locate one point (WGS-84): the chain of units, match, distance, and the nearest grid when none matched."""
        batch = self.locate_many(np.array([lon], np.float64), np.array([lat], np.float64), accuracy_m,
                                 nearest_beyond=True)
        return self.describe(batch, 0)

    def describe(self, batch: LocateBatch, i: int) -> dict:
        """Answer `i` of a batch as a plain dict."""
        out: dict[str, Any] = {key: self.levels[key].record(int(batch.pos[key][i])) for key in LEVEL_KEYS}
        kind = MATCH_NAMES[int(batch.match[i])]
        out["match"] = kind
        d = batch.distance_m[i]
        out["distance_m"] = None if np.isnan(d) else round(float(d), 3)
        near, near_m = batch.nearest_pos, batch.nearest_m
        if kind is None and near is not None and near_m is not None and near[i] >= 0:
            out["nearest"] = {"grid": self.levels["grid"].record(int(near[i])),
                              "distance_m": round(float(near_m[i]), 3)}
        grids = self.levels["grid"]
        out["also_covered_by"] = [self.brief(grids.records[p]) for p in batch.also.get(i, ())]
        return out

    @staticmethod
    def brief(record: dict) -> dict:
        """A grid as `also_covered_by` names it: id, code, name and its boundary version."""
        return {"id": record["id"], "code": record["code"], "name": record["name"],
                "version_id": record.get("version_id")}

    def version_of(self, record: dict | None) -> dict | None:
        """The boundary version a unit's record comes from ({id, label, valid_from}), None when unknown."""
        if not record or record.get("version_id") is None:
            return None
        found = self.versions.get(int(record["version_id"]))
        return dict(found) if found else None

    def outlines(self, lon: float, lat: float, radius_m: float,
                 levels: Sequence[str] = ("grid", "micro_grid", "compound", "building"),
                 limit: int = 2000) -> list[dict]:
        """GeoJSON features of the units of `levels` within `radius_m` of a point (bounding-box test)."""
        mx, my = metres_per_degree(lat)
        dx, dy = radius_m / mx, radius_m / my
        box = shapely.box(lon - dx, lat - dy, lon + dx, lat + dy)
        features = []
        for key in levels:
            level = self.levels[key]
            if not len(level):
                continue
            idx = np.sort(level.tree.query(box, predicate="intersects"))[:limit]
            for i, geom in zip(idx.tolist(), shapely.to_geojson(level.geoms[idx]).tolist(), strict=True):
                props = dict(level.records[i])
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


def _fill_up(parent: np.ndarray, child: np.ndarray, parent_of: np.ndarray) -> None:
    """Where `parent` holds NONE and `child` a unit, put the child's parent there (in place)."""
    lacking = parent < 0
    if len(parent_of) and lacking.any():
        fill = lacking & (child >= 0)
        parent[fill] = parent_of[child[fill]]


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

