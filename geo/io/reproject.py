"""Coordinate systems on import: the CRS a file declares or the one `--crs` names, checks that the coordinates
are plausible for China, and reprojection to the storage CRS (EPSG:4326).

`--crs` accepts an EPSG code (``4547``, ``EPSG:4490``), a PROJ string (a city's local Gauss-Krüger grid:
``+proj=tmerc +lon_0=121.2 +x_0=350000 +y_0=-3400000 +ellps=GRS80 +units=m``), WKT, or ``gcj02`` / ``bd09``
for coordinates copied from Chinese web maps (converted with the published formulas in `geo.spatial.coords`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from geo.errors import DomainError
from geo.spatial import coords
from geo.spatial.crs import GEOGRAPHIC_EQUIVALENT_SRIDS, STORAGE_SRID

#: Named coordinate systems that are not in EPSG/PROJ (or are treated as storage-equivalent).
NAMED = {"gcj02": "gcj02", "gcj": "gcj02", "火星坐标": "gcj02", "bd09": "bd09", "bd": "bd09", "百度坐标": "bd09",
         "wgs84": "wgs84", "cgcs2000": "wgs84"}


class CoordinateError(DomainError, ValueError):
    """Coordinates that look wrong (swapped, outside China, not degrees without a CRS); names the features."""

    slug = "implausible-coordinates"
    title = "Coordinates refused"

    def __init__(self, message: str, features: list[dict] | None = None):
        super().__init__(message, features=features or [])
        self.features = features or []


@dataclass(frozen=True)
class SourceCrs:
    """How to read a file's coordinates: a pyproj CRS, or a named Chinese web-map system."""

    crs: CRS | None
    named: str | None = None
    origin: str = "file"

    @property
    def label(self) -> str:
        if self.named:
            return {"gcj02": "GCJ-02 (火星坐标)", "bd09": "BD-09 (百度坐标)", "wgs84": "WGS-84"}[self.named]
        if self.crs is None:
            return "none"
        epsg = self.crs.to_epsg(min_confidence=90)
        return f"EPSG:{epsg} {self.crs.name}" if epsg else self.crs.name

    @property
    def geographic(self) -> bool:
        return self.named is not None or (self.crs is not None and self.crs.is_geographic)

    @property
    def is_storage(self) -> bool:
        """Whether coordinates are already WGS-84/CGCS2000 longitude, latitude (no transformation)."""
        if self.named:
            return self.named == "wgs84"
        if self.crs is None:
            return False
        return self.crs.to_epsg(min_confidence=90) in GEOGRAPHIC_EQUIVALENT_SRIDS


def parse_crs(text: str) -> SourceCrs:
    """An `--crs` value as a SourceCrs; a clear error when PROJ does not know it."""
    raw = str(text).strip()
    key = raw.lower().replace("-", "").replace("_", "").replace(" ", "")
    if key in NAMED:
        named = NAMED[key]
        return SourceCrs(CRS.from_epsg(STORAGE_SRID) if named == "wgs84" else None, named, "option")
    try:
        crs = CRS.from_epsg(int(raw)) if raw.isdigit() else CRS.from_user_input(raw)
    except (CRSError, ValueError) as exc:
        raise CoordinateError(f"--crs {raw!r} is not a coordinate system PROJ knows (an EPSG code such as 4547, a "
                              f"PROJ string such as '+proj=tmerc +lon_0=121.2 ...', WKT, gcj02 or bd09): {exc}"
                              ) from exc
    return SourceCrs(crs, None, "option")


def source_crs(file_crs: CRS | None, override: str | None) -> SourceCrs:
    """The CRS to read the file with: the override when given, else the file's own (None when it has none)."""
    if override:
        return parse_crs(override)
    return SourceCrs(file_crs, None, "file" if file_crs is not None else "none")


def _bbox_masks(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per geometry: inside the China rectangle, looks swapped (latitude first), looks like metres."""
    b = shapely.bounds(geoms)
    minx, miny, maxx, maxy = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    lon_min, lat_min, lon_max, lat_max = coords.CHINA_BBOX
    inside = (minx >= lon_min) & (maxx <= lon_max) & (miny >= lat_min) & (maxy <= lat_max)
    swapped = (miny >= lon_min) & (maxy <= lon_max) & (minx >= lat_min) & (maxx <= lat_max)
    metres = np.asarray((np.abs(b) > 360).any(axis=1))
    return inside, swapped, metres


def _named(labels: Sequence[str], idx: np.ndarray, geoms: np.ndarray, limit: int = 5) -> tuple[str, list[dict]]:
    pts = shapely.get_coordinates(shapely.point_on_surface(geoms[idx[:limit]]))
    parts = [f"{labels[i]} at ({x:.6f}, {y:.6f})" for i, (x, y) in zip(idx[:limit], pts, strict=True)]
    more = f" and {idx.size - limit} more" if idx.size > limit else ""
    located = shapely.get_coordinates(shapely.point_on_surface(geoms[idx[:50]]))
    feats = [{"feature": labels[i], "record": int(i) + 1, "x": float(x), "y": float(y)}
             for i, (x, y) in zip(idx[:50], located, strict=True)]
    return "; ".join(parts) + more, feats


def check_degrees(geoms: np.ndarray, labels: Sequence[str], axis_order: str = "auto",
                  allow_outside_china: bool = False, after: str = "") -> np.ndarray:
    """Raise CoordinateError for swapped-looking (unless axis_order is 'as-is') or out-of-China lon/lat."""
    present = np.flatnonzero(~shapely.is_missing(geoms) & ~shapely.is_empty(geoms))
    if not present.size:
        return geoms
    inside, swapped, _ = _bbox_masks(geoms[present])
    if axis_order == "auto" and swapped.any():
        names, feats = _named(labels, present[swapped], geoms)
        raise CoordinateError(
            f"{int(swapped.sum())} feature(s) have coordinates that look swapped (latitude first){after}: {names}. "
            "Re-run with --swap-axes if the file is latitude, longitude; or --axis-order as-is to keep them.",
            feats)
    if not allow_outside_china and not inside.all():
        out = present[~inside]
        names, feats = _named(labels, out, geoms)
        raise CoordinateError(
            f"{out.size} feature(s) lie outside China{after}: {names}. Check the coordinate system (--crs), or "
            "re-run with --allow-outside-china if that is intended.", feats)
    return geoms


def _transform_named(geoms: np.ndarray, named: str) -> np.ndarray:
    def convert(xy: np.ndarray) -> np.ndarray:
        lon, lat = coords.to_wgs84(xy[:, 0], xy[:, 1], named)
        return np.column_stack([lon, lat])

    return shapely.transform(geoms, convert)


def to_storage(geoms: np.ndarray, crs: SourceCrs, labels: Sequence[str], axis_order: str = "auto",
               allow_outside_china: bool = False) -> np.ndarray:
    """Geometries reprojected to EPSG:4326 after the plausibility checks (vectorised over all coordinates)."""
    geoms = np.asarray(geoms, dtype=object)
    present = np.flatnonzero(~shapely.is_missing(geoms) & ~shapely.is_empty(geoms))
    if axis_order not in ("auto", "swap", "as-is"):
        raise CoordinateError(f"axis order {axis_order!r}: expected auto, swap or as-is")
    if axis_order == "swap" and present.size:
        geoms = geoms.copy()
        geoms[present] = shapely.transform(geoms[present], lambda xy: xy[:, ::-1])
        axis_order = "auto"
    if crs.crs is None and crs.named is None:
        # No CRS in the file (a Shapefile without .prj, a table): degrees are read as WGS-84, anything else is refused.
        _, _, metres = _bbox_masks(geoms[present]) if present.size else (None, None, np.zeros(0, bool))
        if metres.any():
            names, feats = _named(labels, present[metres], geoms)
            raise CoordinateError(
                "the file declares no coordinate system and its coordinates are not degrees (e.g. " + names + "); "
                "give it with --crs (an EPSG code, a PROJ string for a local grid, gcj02 or bd09)", feats)
        crs = SourceCrs(CRS.from_epsg(STORAGE_SRID), None, "assumed")
    if crs.geographic:
        geoms = check_degrees(geoms, labels, axis_order, allow_outside_china)
        if crs.is_storage:
            return geoms
        if crs.named:
            out = geoms.copy()
            out[present] = _transform_named(geoms[present], crs.named)
            return out
    transformer = Transformer.from_crs(crs.crs, STORAGE_SRID, always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    out = geoms.copy()
    if present.size:
        out[present] = shapely.transform(geoms[present], project)
        bad = present[~np.isfinite(shapely.bounds(out[present])).all(axis=1)]
        if bad.size:
            names, feats = _named(labels, bad, geoms)
            raise CoordinateError(f"{bad.size} feature(s) cannot be projected from {crs.label}: {names}; "
                                  "check --crs", feats)
        if not crs.geographic:
            # Only wrong-way-round or wrong-CRS data lands outside China after projection: say which.
            check_degrees(out, labels, "as-is", allow_outside_china, after=f" after projection from {crs.label}")
    return out


# --- CRS plausibility: which usual CRS puts the features where they belong ------------------------------------

def _usual_candidates(projected: bool) -> list[tuple[str, CRS | str]]:
    """The CRSs Chinese boundary files usually come in: CGCS2000 Gauss-Krüger 3° zones (EPSG:4513–4533 with the
    zone number in the false easting, 4534–4554 without) and 6° zones (4491–4501 with, 4502–4512 without), plus the
    same on Xi'an 80 / Beijing 54 are rare enough to leave out; in degrees WGS-84/CGCS2000, GCJ-02 and BD-09."""
    if not projected:
        return [("EPSG:4326", CRS.from_epsg(4326)), ("gcj02", "gcj02"), ("bd09", "bd09")]
    codes = [*range(4513, 4555), *range(4491, 4513)]
    return [(f"EPSG:{c}", CRS.from_epsg(c)) for c in codes]


def _lonlat(points: np.ndarray, crs: CRS | str) -> np.ndarray:
    if isinstance(crs, str):
        lon, lat = coords.to_wgs84(points[:, 0], points[:, 1], crs)
        return np.column_stack([lon, lat])
    t = Transformer.from_crs(crs, STORAGE_SRID, always_xy=True)
    x, y = t.transform(points[:, 0], points[:, 1])
    return np.column_stack([x, y])


def distance_km(lonlat: np.ndarray, lon: float, lat: float) -> np.ndarray:
    """Great-circle distances (km) from points (n × 2, degrees) to one point."""
    p1, p2 = np.radians(lonlat[:, 1]), np.radians(lat)
    dl = np.radians(lonlat[:, 0] - lon)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 6371.0 * 2 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def likely_crs(points: np.ndarray, lon: float, lat: float, projected: bool, limit: int = 3) -> list[dict]:
    """The usual CRSs ranked by how near they put `points` (source coordinates, n × 2) to (lon, lat): the
    median distance in km of each candidate, nearest first (axes also tried swapped)."""
    points = np.asarray(points, dtype=float)
    out: list[dict[str, Any]] = []
    for label, crs in _usual_candidates(projected):
        for swapped in (False, True):
            xy = points[:, ::-1] if swapped else points
            try:
                with np.errstate(all="ignore"):
                    ll = _lonlat(xy, crs)
            except Exception:  # noqa: BLE001 - a candidate PROJ cannot apply is simply no candidate
                continue
            ok = np.isfinite(ll).all(axis=1)
            if not ok.any():
                continue
            km = float(np.median(distance_km(ll[ok], lon, lat)))
            out.append({"crs": label + (" (axes swapped)" if swapped else ""), "distance_km": round(km, 2)})
    out.sort(key=lambda c: c["distance_km"])
    return out[:limit]
