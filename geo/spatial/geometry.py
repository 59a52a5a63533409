"""Vectorised geometry helpers shared by import, storage and analysis (shapely 2 array functions)."""

from __future__ import annotations

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
    return shapely.multipolygons(parts, indices=index)


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
