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
import dataclasses
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
    """Every level's units as GeoDataFrames (EPSG:4326): versioned levels at `ts` (now when None), grids and
    micro-grids under the names they had then (name history, migration 0017)."""
    return {spec.key: read_units(conn, spec.key, ts) for spec in LEVEL_SPECS}


#: Boundary tables keeping the unit's name with each version (migration 0017).
NAMED_BOUNDARIES = {"grid": "grid_boundaries", "micro_grid": "micro_grid_boundaries"}


def read_units(conn: Connection, key: str, ts: dt.datetime | None = None,
               ids: Sequence[int] | None = None) -> gpd.GeoDataFrame:
    """One level's units (only `ids` when given) as a GeoDataFrame: versioned levels in force at `ts` (now when
    None) under the name their boundary version keeps, compounds and buildings as they are."""
    from geo.store.load import read_level

    where, params = ("WHERE id = ANY(:ids)", {"ids": [int(i) for i in ids]}) if ids is not None else ("", None)
    spec = next(s for s in LEVEL_SPECS if s.key == key)
    if spec.versioned:
        table = NAMED_BOUNDARIES.get(key)
        if ids is not None and ts is None:
            # a few changed units: plain rows, names joined, WKB (read_postgis asks for the SRID in a query of its own)
            source = f"{spec.table}_at(now()) h" + (f" JOIN {table} b ON b.id = h.boundary_id" if table else "")
            named = f"{'coalesce(b.name, h.name)' if table else 'NULL'} AS name_then FROM {source}"
            result = conn.execute(text(f"SELECT h.*, ST_AsBinary(h.geom) AS wkb, {named} WHERE h.id = ANY(:ids) "
                                       "ORDER BY h.code"), params)
            found = result.all()
            names_out = list(result.keys())
            plain = pd.DataFrame({c: [r[i] for r in found] for i, c in enumerate(names_out) if c != "geom"})
            then = plain.pop("name_then")
            if table:
                plain["name"] = then
            wkb = np.array([bytes(w) for w in plain.pop("wkb")], dtype=object)
            return gpd.GeoDataFrame(plain, geometry=gpd.GeoSeries(shapely.from_wkb(wkb), crs=STORAGE_SRID,
                                                                  index=plain.index))
        frame = read_level(conn, spec.table, ts, where, params)
        if table is not None and len(frame):
            sql = text(f"SELECT id, name FROM {table} WHERE id = ANY(:b) AND name IS NOT NULL")
            rows = conn.execute(sql, {"b": frame["boundary_id"].astype("int64").tolist()}).all()
            names: dict[int, str] = {int(r[0]): r[1] for r in rows}
            frame["name"] = [names.get(int(b), n) for b, n in zip(frame["boundary_id"], frame["name"], strict=True)]
        return frame
    columns = ("id, NULL::text AS code, name, kind, community_id, geom" if key == "compound"
               else "id, code, name, compound_id, community_id, floors, use, geom")
    return gpd.read_postgis(text(f"SELECT {columns} FROM {spec.table} {where} ORDER BY id"), conn, geom_col="geom",
                            params=params)


# ------------------------------------------------------------------------------------ incremental updates

def _remap_values(values: np.ndarray, remap: np.ndarray, dtype: type | np.dtype) -> np.ndarray:
    """Raster values (positions, NONE, MIXED) with every position replaced by `remap[position]`."""
    if np.array_equal(remap, np.arange(len(remap))):  # no unit moved: a copy (readers keep the old array)
        return values.astype(dtype, copy=True)
    # MIXED (-2) and NONE (-1) index the table from its end
    lut = np.concatenate([remap, [MIXED, NONE]]).astype(dtype)
    return lut.take(values, mode="wrap")


def _patched_raster(old: CellRaster, remap: np.ndarray, geoms: np.ndarray, window_bounds: np.ndarray
                    ) -> CellRaster | None:
    """`old` with positions renumbered by `remap` and every cell of the windows (lon/lat bounds of what changed,
    old and new outlines, one row each) made MIXED with the units whose envelope meets the cell as candidates (no
    `sure`): the exact test then decides there, so the answers are the exact rule's. None when a window leaves the
    lattice's inner part (its two-cell margin must stay NONE): the level is then rebuilt."""
    n = old.nx * old.ny
    ranges = _cell_ranges(old, window_bounds)
    if ranges is None:
        return None
    in_window = np.zeros(n, dtype=bool)
    for ix0, iy0, ix1, iy1 in ranges.tolist():
        in_window.reshape(old.ny, old.nx)[iy0:iy1 + 1, ix0:ix1 + 1] = True
    window = np.flatnonzero(in_window)  # ascending flat cell indices
    # the units whose envelope meets a window cell's closure: each unit's cell range within the windows
    bounds = shapely.bounds(geoms)
    unit_ranges = _cell_ranges(old, bounds, margin=0, clip=True)
    assert unit_ranges is not None  # clipped ranges are never refused
    pair_cell_parts, pair_unit_parts = [], []
    wx0, wy0, wx1, wy1 = ranges.min(axis=0)[0], ranges.min(axis=0)[1], ranges.max(axis=0)[2], ranges.max(axis=0)[3]
    near = np.flatnonzero((unit_ranges[:, 2] >= wx0) & (unit_ranges[:, 0] <= wx1)
                          & (unit_ranges[:, 3] >= wy0) & (unit_ranges[:, 1] <= wy1))
    for u in near.tolist():
        ux0, uy0, ux1, uy1 = unit_ranges[u].tolist()
        sub = in_window.reshape(old.ny, old.nx)[uy0:uy1 + 1, ux0:ux1 + 1]
        iy, ix = np.nonzero(sub)
        if len(iy):
            pair_cell_parts.append((iy + uy0).astype(np.int64) * old.nx + (ix + ux0))
            pair_unit_parts.append(np.full(len(iy), u, np.int64))
    new_cell = np.concatenate(pair_cell_parts) if pair_cell_parts else np.empty(0, np.int64)
    unit = np.concatenate(pair_unit_parts) if pair_unit_parts else np.empty(0, np.int64)
    dtype = np.int16 if len(geoms) < np.iinfo(np.int16).max else np.int32
    cells = _remap_values(old.cells, remap, dtype)
    cells[window] = MIXED
    # the old mixed cells outside the windows keep their candidates (renumbered) and `sure`; the window's cells are
    # merged in by insertion (both lists are sorted), not by sorting everything again
    counts = np.diff(old.cand_ptr)
    keep_cell = ~in_window[old.mixed_cells]
    kept_cells, kept_counts = old.mixed_cells[keep_cell], counts[keep_cell]
    kept_cand = remap[old.cand[np.repeat(keep_cell, counts)]].astype(np.int32)
    kept_sure = _remap_values(old.sure[keep_cell], remap, np.int32)
    order = np.lexsort((unit, new_cell))
    new_cell, unit = new_cell[order], unit[order].astype(np.int32)
    win_counts = np.bincount(np.searchsorted(window, new_cell), minlength=len(window))
    at = np.searchsorted(kept_cells, window)
    mixed_cells = np.insert(kept_cells, at, window)
    per_cell = np.insert(kept_counts, at, win_counts)
    sure = np.insert(kept_sure, at, NONE).astype(np.int32)
    kept_ptr = np.r_[0, np.cumsum(kept_counts)]
    cand = np.insert(kept_cand, np.repeat(kept_ptr[at], win_counts), unit).astype(np.int32)
    return CellRaster(old.x0, old.y0, old.isx, old.isy, old.nx, old.ny, old.cell_m, cells, mixed_cells,
                      np.r_[0, np.cumsum(per_cell)].astype(np.int64), cand, sure)


def _cell_ranges(raster: CellRaster, bounds: np.ndarray, margin: int = 1, clip: bool = False) -> np.ndarray | None:
    """Inclusive cell ranges (ix0, iy0, ix1, iy1) of lon/lat bounds (one row each), widened by `margin` cells and
    by the build's tolerance; None when one leaves the lattice's inner part (unless `clip`: then clipped to it)."""
    b = np.atleast_2d(np.asarray(bounds, np.float64))
    u0, v0 = raster.cell_coords(b[:, 0], b[:, 1])
    u1, v1 = raster.cell_coords(b[:, 2], b[:, 3])
    eps = 1e-6
    r = np.column_stack([np.floor(u0 - eps) - margin, np.floor(v0 - eps) - margin,
                         np.floor(u1 + eps) + margin, np.floor(v1 + eps) + margin])
    hi = np.array([raster.nx - 2, raster.ny - 2, raster.nx - 2, raster.ny - 2], np.float64)
    if clip:
        return np.clip(np.nan_to_num(r, nan=1.0), 1, hi).astype(np.int64)
    if not np.isfinite(r).all() or (r < 1).any() or (r > hi).any():
        return None
    return r.astype(np.int64)


def patch_level(level: LevelIndex, rows: gpd.GeoDataFrame, touched: Any,
                max_cells: int = DEFAULT_MAX_CELLS) -> tuple[LevelIndex, np.ndarray, np.ndarray]:
    """A new level: the units with ids in `touched` replaced by `rows` (those of them still in force), everything
    else shared with `level` (left untouched: readers of the old index go on). Returns it, the old→new position
    map (NONE for units gone) and the new positions of the rows. Positions follow the tie-break order as a full
    build's would."""
    spec = level.spec
    rows = rows[~rows.geometry.isna() & ~rows.geometry.is_empty]
    touched = np.asarray(touched, np.int64)
    keep = ~np.isin(level.ids, touched)
    kept_pos = np.flatnonzero(keep)
    new_attrs = pd.DataFrame(rows.drop(columns=rows.geometry.name)).reset_index(drop=True)
    attrs = pd.concat([level.attrs.iloc[kept_pos], new_attrs[level.attrs.columns.intersection(new_attrs.columns)]],
                      ignore_index=True) if len(new_attrs) else level.attrs.iloc[kept_pos].reset_index(drop=True)
    attrs = attrs.reindex(columns=level.attrs.columns)
    new_geoms = np.asarray(rows.geometry.to_numpy(), dtype=object)
    shapely.prepare(new_geoms)
    geoms = np.concatenate([level.geoms[kept_pos], new_geoms]) if len(new_geoms) else level.geoms[kept_pos]
    key = attrs["code"].astype(str).to_numpy() if spec.order == "code" else attrs["id"].to_numpy(np.int64)
    order = np.argsort(key, kind="stable")
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.arange(len(order))
    remap = np.full(len(level), NONE, np.int64)
    remap[kept_pos] = inverse[:len(kept_pos)]
    new_pos = inverse[len(kept_pos):]
    # a unit whose outline did not change (a rename) changes no cell: its cells follow it to its new number
    touched_pos = np.flatnonzero(~keep)
    old_geoms = level.geoms[touched_pos]
    old_of_new = pd.Index(level.ids[touched_pos]).get_indexer(new_attrs["id"].to_numpy(np.int64))
    same = np.zeros(len(new_geoms), dtype=bool)
    hit = np.flatnonzero(old_of_new >= 0)
    same[hit] = shapely.equals_exact(old_geoms[old_of_new[hit]], new_geoms[hit], tolerance=0.0)
    gone = np.ones(len(old_geoms), dtype=bool)
    gone[old_of_new[same]] = False
    raster_remap = remap.copy()
    raster_remap[touched_pos[old_of_new[same]]] = new_pos[same]

    out = LevelIndex.__new__(LevelIndex)
    out.spec = spec
    out.attrs = attrs.iloc[order].reset_index(drop=True)
    out.ids = out.attrs["id"].to_numpy(np.int64)
    out.geoms = np.asarray(geoms[order], dtype=object)
    out.tree = shapely.STRtree(out.geoms)
    out._pos_of_id = pd.Index(out.ids)
    records = [level.records[p] for p in kept_pos] + [out._make_record(r) for r in new_attrs.to_dict("records")]
    out.records = [records[i] for i in order]
    out.raster = None
    if len(out.geoms):
        changed = [g for g in (old_geoms[gone], new_geoms[~same]) if len(g)]
        raster = None
        if level.raster is not None and changed:
            # one window per changed outline (old and new), so units changed far apart mark few cells
            raster = _patched_raster(level.raster, raster_remap, out.geoms,
                                     shapely.bounds(np.concatenate(changed)))
        elif level.raster is not None:
            old = level.raster
            raster = dataclasses.replace(old, cells=_remap_values(old.cells, raster_remap, old.cells.dtype),
                                         cand=_remap_values(old.cand, raster_remap, np.int32),
                                         sure=_remap_values(old.sure, raster_remap, np.int32))
        out.raster = raster if raster is not None else CellRaster.build(out.geoms, out.exact, out._cell_size(),
                                                                        max_cells, out.tree)
    return out, remap, new_pos


def patch_index(index: LocateIndex, frames: dict[str, gpd.GeoDataFrame], touched: dict[str, Any], *,
                versions: dict[int, dict] | None = None, valid_from: dt.datetime | None = None,
                valid_until: dt.datetime | None = None, max_cells: int = DEFAULT_MAX_CELLS) -> LocateIndex:
    """A new index equal to a full build after the units `touched[level]` (ids) changed to `frames[level]` (their
    rows in force now; a unit missing there has ended): only those units are read, re-prepared and re-rastered
    (增量更新), the rest is shared with `index`, which stays valid for its readers."""
    t0 = time.perf_counter()
    out = LocateIndex.__new__(LocateIndex)
    out.__dict__.update(index.__dict__)
    out.valid_from, out.valid_until = valid_from, valid_until
    out.versions = {**index.versions, **(versions or {})}
    out.levels = dict(index.levels)
    remaps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, ids in touched.items():
        if len(ids):
            out.levels[key], remap, new_pos = patch_level(index.levels[key], frames[key], ids, max_cells)
            remaps[key] = (remap, new_pos)
    grid = out.levels["grid"]
    if "grid" in remaps:
        remap, new_pos = remaps["grid"]
        old_grid = index.levels["grid"]
        metric = np.empty(len(grid), dtype=object)
        kept = remap >= 0
        if len(grid):
            if out._to_metric is None:  # an index that held no grids: nothing to reuse
                return LocateIndex({k: _frame_of(v) for k, v in out.levels.items()}, valid_from=valid_from,
                                   valid_until=valid_until, max_cells=max_cells, label=index.label,
                                   versions=out.versions)
            minx, miny, maxx, maxy = shapely.total_bounds(grid.geoms)
            if utm_epsg((minx + maxx) / 2, (miny + maxy) / 2) != out.epsg:  # another UTM zone: build it whole
                return LocateIndex({k: _frame_of(v) for k, v in out.levels.items()}, valid_from=valid_from,
                                   valid_until=valid_until, max_cells=max_cells, label=index.label,
                                   versions=out.versions)
            metric[remap[kept]] = index.grid_metric[kept]
            metric[new_pos] = shapely.transform(grid.geoms[new_pos], out._project_coords)
            out.grid_metric = metric
            out.grid_metric_tree = shapely.STRtree(metric)
            out.bounds = (float(minx), float(miny), float(maxx), float(maxy))
        else:
            out.grid_metric, out.grid_metric_tree = np.empty(0, dtype=object), None
        # overlap flags: renumbered, then recomputed for the new units and every unit meeting an old or new outline
        flags = np.zeros(len(grid), dtype=bool)
        flags[remap[kept]] = index.grid_overlaps[kept]
        changed = np.concatenate([old_grid.geoms[~kept], grid.geoms[new_pos]])
        near = np.unique(np.concatenate([new_pos, grid.tree.query(changed, predicate="intersects")[1]]))
        flags[near] = False
        if len(near) and len(grid) > 1:
            i, j = grid.tree.query(grid.geoms[near], predicate="intersects")
            i = near[i]
            other = i != j
            i, j = i[other], j[other]
            inner = shapely.relate_pattern(grid.geoms[i], grid.geoms[j], "T********")
            flags[i[inner]] = True
        out.grid_overlaps = flags
    for key in remaps:
        _warm_up_units(out.levels[key], remaps[key][1])
    out._rastered = [key for key, level in out.levels.items() if level.raster is not None]
    # not fused: the unchanged levels' cells are shared with the old index, not copied (nor re-pointed)
    out._stack = RasterStack([r for r in (level.raster for level in out.levels.values()) if r is not None],
                             fuse=False)
    out.community_of_grid = out._parents("grid", "community_id", "community")
    out.street_of_community = out._parents("community", "street_id", "street")
    out.compound_of_building = out._parents("building", "compound_id", "compound")
    if out.grid_metric_tree is not None:
        pts = shapely.point_on_surface(out.grid_metric[:1])
        out.grid_metric_tree.query(pts, predicate="dwithin", distance=1.0)
        out.grid_metric_tree.query_nearest(pts)
    out.build_seconds = time.perf_counter() - t0
    return out


def _warm_up_units(level: LevelIndex, positions: np.ndarray) -> None:
    """Build the lazily made GEOS structures of a patched level's new units and tree (see `_warm_up`)."""
    if not len(level):
        return
    geoms = level.geoms[positions] if len(positions) else level.geoms[:1]
    pts = shapely.point_on_surface(geoms)
    xy = shapely.get_coordinates(pts)
    level.exact(pts)
    shapely.contains(geoms, pts)
    shapely.intersects_xy(geoms, xy[:, 0], xy[:, 1])
    shapely.contains_xy(geoms, xy[:, 0], xy[:, 1])
    level.owners(xy[:, 0], xy[:, 1])


def _frame_of(level: LevelIndex) -> gpd.GeoDataFrame:
    """A level's units back as a GeoDataFrame (to build a whole index from a patched level)."""
    return gpd.GeoDataFrame(level.attrs.copy(), geometry=gpd.GeoSeries(level.geoms, crs=STORAGE_SRID))
