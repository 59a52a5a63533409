"""Vectorised geometry helpers shared by import, storage and analysis (shapely 2 array functions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import shapely

from geo.spatial.crs import STORAGE_SRID


class GeometryError(ValueError):
    """A geometry that cannot be stored; `problems` lists (index, reason) pairs."""

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None):
        super().__init__(message)
        self.problems = problems or []


def as_multipolygons(geoms) -> np.ndarray:
    """Polygons and MultiPolygons as MultiPolygons (other types raise), keeping order and length."""
    geoms = np.asarray(geoms, dtype=object)
    types = shapely.get_type_id(geoms)
    bad = np.flatnonzero(~np.isin(types, (3, 6)))
    if bad.size:
        raise GeometryError(
            f"{bad.size} geometries are not polygons",
            [(int(i), f"expected Polygon or MultiPolygon, got {shapely.get_type_id(geoms[i])}") for i in bad[:20]],
        )
    parts, index = shapely.get_parts(geoms, return_index=True)
    return np.asarray(shapely.multipolygons(parts, indices=index), dtype=object)


def invalid_reasons(geoms) -> list[tuple[int, str]]:
    """(index, GEOS reason) for every null, empty or invalid geometry."""
    geoms = np.asarray(geoms, dtype=object)
    problems: list[tuple[int, str]] = []
    null = shapely.is_missing(geoms)
    problems += [(int(i), "null geometry") for i in np.flatnonzero(null)]
    present = ~null
    empty = present & shapely.is_empty(np.where(present, geoms, None))
    problems += [(int(i), "empty geometry") for i in np.flatnonzero(empty)]
    check = present & ~empty
    invalid = np.flatnonzero(check & ~shapely.is_valid(np.where(check, geoms, None)))
    problems += [(int(i), shapely.is_valid_reason(geoms[i])) for i in invalid]
    return sorted(problems)


def require_valid(geoms, what: str = "geometry") -> None:
    """Raise GeometryError naming every null, empty or invalid geometry."""
    problems = invalid_reasons(geoms)
    if problems:
        first = "; ".join(f"#{i}: {r}" for i, r in problems[:5])
        raise GeometryError(f"{len(problems)} invalid {what}: {first}", problems)


def ewkb_hex(geoms, srid: int = STORAGE_SRID) -> np.ndarray:
    """Hex EWKB strings with the SRID embedded: the text form PostGIS accepts in COPY."""
    return shapely.to_wkb(shapely.set_srid(np.asarray(geoms, dtype=object), srid), hex=True, include_srid=True)


def polygonal_parts(geoms) -> np.ndarray:
    """Per geometry, its polygons (MultiPolygons and collections opened, two levels deep, empty polygons dropped)
    as one MultiPolygon, or None where it has none; order and length kept."""
    geoms = np.asarray(geoms, dtype=object)
    parts, idx = shapely.get_parts(geoms, return_index=True)
    sub, sub_idx = shapely.get_parts(parts, return_index=True)
    owner = idx[sub_idx]
    keep = (shapely.get_type_id(sub) == 3) & ~shapely.is_empty(sub)
    out = np.full(len(geoms), None, dtype=object)
    if keep.any():
        shapely.multipolygons(sub[keep], indices=owner[keep], out=out)
    return out


@dataclass(frozen=True)
class RepairReport:
    """What `repair_polygons` did (修复报告): which inputs were invalid, GEOS's reason for each, which were lost."""

    #: Positions (ascending) of the invalid inputs, i.e. of every geometry the repair replaced.
    index: np.ndarray
    #: GEOS's validity reason for each of them ('Self-intersection[113.1 29.3]'), aligned with `index`.
    reasons: list[str]
    #: Aligned with `index`: True where the repair left no polygon (that output is None).
    lost: np.ndarray
    #: Aligned with `index` (input units): the area the rings enclose as drawn (`ring_regions`), the repaired
    #: area, and the parts of the drawn region the repair dropped / added (0 for a lossless repair).
    area_before: np.ndarray = field(default_factory=lambda: np.zeros(0))
    area_after: np.ndarray = field(default_factory=lambda: np.zeros(0))
    area_lost: np.ndarray = field(default_factory=lambda: np.zeros(0))
    area_added: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Aligned with `index`: the region the rings enclose as drawn (None where it is empty).
    before: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    @property
    def repaired_index(self) -> np.ndarray:
        """Positions of the inputs repaired into a polygon."""
        return self.index[~self.lost]

    @property
    def lost_index(self) -> np.ndarray:
        """Positions of the inputs the repair left without any polygon (None in the output)."""
        return self.index[self.lost]

    def __len__(self) -> int:
        return len(self.index)

    def changed(self, tolerance: float) -> np.ndarray:
        """Aligned with `index`: True where the repair dropped or added more than `tolerance` (a fraction, 0.001 =
        0.1 %) of the area the rings enclose as drawn, or where that area is empty."""
        if not len(self.index):
            return np.zeros(0, dtype=bool)
        base = np.where(self.area_before > 0, self.area_before, np.nan)
        share = np.maximum(self.area_lost, self.area_added) / base
        return ~(share <= tolerance)


def with_empty(geoms: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of `geoms` with an empty polygon where `mask` is set (so area and difference need no None checks)."""
    out = np.array(geoms, dtype=object)
    out[np.asarray(mask, dtype=bool)] = shapely.from_wkt("POLYGON EMPTY")
    return out


def _valid_region(geoms: np.ndarray) -> np.ndarray:
    """Per polygon (valid or not), the region its outline encloses, every lobe kept (make_valid "structure")."""
    return polygonal_parts(shapely.make_valid(geoms, method="structure", keep_collapsed=False))


def ring_regions(geoms) -> np.ndarray:
    """Per geometry, the region its rings enclose as drawn (绘制区域): for each polygon part, the region of its
    shell (every lobe of a self-crossing or self-touching ring kept) less the regions of its own holes, then the
    parts unioned; None where nothing is left. A repair that keeps every part of the input returns exactly this.

    Holes are subtracted only from their own shell: a hole drawn outside its shell removes nothing (and adds
    nothing). Vectorised over parts and rings; one union per geometry with several parts.
    """
    geoms = np.asarray(geoms, dtype=object)
    out = np.full(len(geoms), None, dtype=object)
    present = np.flatnonzero(~shapely.is_missing(geoms))
    if not present.size:
        return out
    parts, owner = shapely.get_parts(geoms[present], return_index=True)
    polygon = shapely.get_type_id(parts) == 3
    parts, owner = parts[polygon], owner[polygon]
    if not len(parts):
        return out
    shells = _valid_region(shapely.polygons(shapely.get_exterior_ring(parts)))
    rings, ring_owner = shapely.get_rings(parts, return_index=True)
    # get_rings lists each part's exterior first, then its holes
    first = np.r_[True, ring_owner[1:] != ring_owner[:-1]] if len(ring_owner) else np.zeros(0, dtype=bool)
    holes, hole_owner = rings[~first], ring_owner[~first]
    regions = shells.copy()
    if len(holes):
        hole_regions = _valid_region(shapely.polygons(holes))
        table = np.full((len(parts), int(np.bincount(hole_owner).max())), None, dtype=object)
        pos = np.arange(len(hole_owner)) - np.searchsorted(hole_owner, hole_owner)
        table[hole_owner, pos] = hole_regions
        cut = np.unique(hole_owner)
        cut = cut[~shapely.is_missing(regions[cut])]
        if cut.size:
            removed = shapely.union_all(table[cut], axis=1)
            regions[cut] = polygonal_parts(shapely.difference(regions[cut], removed))
    keep = ~shapely.is_missing(regions)
    if keep.any():
        kept_parts, kept_owner = regions[keep], owner[keep]
        merged = np.full(len(present), None, dtype=object)
        width = int(np.bincount(kept_owner).max())
        table = np.full((len(present), width), None, dtype=object)
        pos = np.arange(len(kept_owner)) - np.searchsorted(kept_owner, kept_owner)
        table[kept_owner, pos] = kept_parts
        has = np.unique(kept_owner)
        merged[has] = polygonal_parts(shapely.union_all(table[has], axis=1))
        out[present] = merged
    return out


def repair_polygons(geoms, method: Literal["structure", "linework"] = "structure",
                    min_area: float | None = None, measure: bool = False) -> tuple[np.ndarray, RepairReport]:
    """The one geometry repair (几何修复): invalid polygons made valid, keeping only their polygonal parts.

    Returns a new object array of the same length and order plus a `RepairReport`. Exactly what happens:

    - null, empty and valid inputs are returned unchanged (same object, type and orientation) and not reported;
    - each invalid input is passed to GEOS ``make_valid`` with `method` ("structure": ``keep_collapsed=False``, so
      parts that collapse to lines or points vanish; "linework": GEOS's default, lines and points from a collapse
      are then dropped here), its polygons are collected (collections and MultiPolygons opened two levels deep,
      empty polygons dropped; see `polygonal_parts`) and, when `min_area` is given, polygons whose area (in the
      input's units) is not above it are dropped too; the rest becomes one MultiPolygon;
    - an invalid input left with no polygon becomes None and is marked ``lost`` in the report.

    With `measure`, the report also gives, per invalid input, the area its rings enclose as drawn
    (`ring_regions`), the repaired area, and the areas the repair dropped from or added to the drawn region, so a
    caller can tell a lossless repair from one that changed the shape (`RepairReport.changed`).

    Vectorised: one shapely call per step over all invalid inputs. Ring orientation is not normalised.
    """
    geoms = np.array(geoms, dtype=object)  # a copy: the caller's array is never changed
    present = ~shapely.is_missing(geoms)
    invalid = np.flatnonzero(present & ~shapely.is_valid(np.where(present, geoms, None)))
    if not invalid.size:
        return geoms, RepairReport(invalid, [], np.zeros(0, dtype=bool))
    bad = geoms[invalid]
    reasons = [str(r) for r in shapely.is_valid_reason(bad)]
    if method == "structure":
        made = shapely.make_valid(bad, method="structure", keep_collapsed=False)
    else:
        made = shapely.make_valid(bad, method="linework")
    fixed = polygonal_parts(made)
    if min_area is not None:
        kept = ~shapely.is_missing(fixed)
        if kept.any():
            parts, owner = shapely.get_parts(fixed[kept], return_index=True)
            large = shapely.area(parts) > min_area
            trimmed = np.full(int(kept.sum()), None, dtype=object)
            if large.any():
                shapely.multipolygons(parts[large], indices=owner[large], out=trimmed)
            fixed[kept] = trimmed
    lost = shapely.is_missing(fixed)
    geoms[invalid] = fixed
    if not measure:
        return geoms, RepairReport(invalid, reasons, lost)
    before = ring_regions(bad)
    b = with_empty(before, shapely.is_missing(before))
    a = with_empty(fixed, lost)
    return geoms, RepairReport(invalid, reasons, lost, shapely.area(b), shapely.area(a),
                               shapely.area(shapely.difference(b, a)), shapely.area(shapely.difference(a, b)),
                               before)
