"""Input points for locate (定位输入): coordinate systems, and the checks that refuse impossible or swapped numbers.

A single point that fails a check is refused with `CoordinateError` (a 422 problem naming the swap or the range);
in a batch each bad row gets its message in place (`range_errors`) and the others go on.
"""

from __future__ import annotations

import math

import numpy as np

from geo.errors import DomainError
from geo.spatial.coords import COORDSYS, to_wgs84

#: Systems read as WGS-84 without transformation (CGCS2000 and WGS-84 differ by centimetres).
WGS84_LIKE = ("wgs84", "cgcs2000")


class UnknownCoordsys(DomainError):
    """The coordinate system named is not one locate reads."""

    slug = "validation-error"
    kind = "invalid"
    title = "Invalid request"


class CoordinateError(DomainError):
    """A point's coordinates are not finite, out of range, or look swapped (lon and lat exchanged)."""

    slug = "coordinates-out-of-range"
    kind = "invalid"
    title = "Invalid coordinates"


def coordsys_key(value: str) -> str:
    """The canonical name of a coordinate system ('WGS-84' -> 'wgs84'); `UnknownCoordsys` when it is not one."""
    key = value.strip().lower().replace("-", "").replace("_", "")
    if key not in COORDSYS:
        raise UnknownCoordsys(f"coordsys {value!r} is not one of {', '.join(sorted(COORDSYS))}")
    return key


def checked_wgs84(lon: float, lat: float, coordsys: str, bounds: tuple | None) -> tuple[float, float]:
    """One point in `coordsys` (a canonical key) as WGS-84, checked before and after conversion against the
    district's `bounds`; `CoordinateError` when it is refused."""
    problem = coordinate_problem(lon, lat, bounds if coordsys in WGS84_LIKE else None)
    if problem:
        raise _refusal(problem, lon, lat)
    if coordsys in WGS84_LIKE:
        return lon, lat
    x, y = to_wgs84(lon, lat, coordsys)
    problem = coordinate_problem(x, y, bounds)
    if problem:
        raise _refusal(problem, lon, lat)
    return x, y


def _refusal(problem: str, lon: float, lat: float) -> CoordinateError:
    slug = "coordinates-swapped" if "swapped" in problem else "coordinates-out-of-range"
    finite = math.isfinite(lon) and math.isfinite(lat)
    return CoordinateError(problem, slug=slug, lon=lon if finite else None, lat=lat if finite else None)


def range_errors(lon: np.ndarray, lat: np.ndarray, bounds: tuple | None) -> dict[int, str]:
    """Out-of-range or swapped coordinates, by position (vectorised; only bad rows cost Python work)."""
    errors: dict[int, str] = {}
    finite = np.isfinite(lon) & np.isfinite(lat)
    out = finite & ((np.abs(lat) > 90) | (np.abs(lon) > 180))
    swapped_range = out & (np.abs(lon) <= 90) & (np.abs(lat) <= 180)
    for i in np.flatnonzero(out).tolist():
        if swapped_range[i]:
            errors[i] = f"lat {lat[i]} is out of range but lon {lon[i]} is a valid latitude: lon and lat look swapped"
        else:
            errors[i] = f"lon {lon[i]} / lat {lat[i]} out of range (lon -180..180, lat -90..90)"
    if bounds is not None:
        near = _near(lon, lat, bounds)
        swapped = finite & ~out & ~near & _near(lat, lon, bounds)
        for i in np.flatnonzero(swapped).tolist():
            errors[i] = (f"({lon[i]}, {lat[i]}) is far from the district but ({lat[i]}, {lon[i]}) lies in it: "
                         "lon and lat look swapped")
    return errors


def _near(lon, lat, bounds, margin_deg: float = 0.5):
    minx, miny, maxx, maxy = bounds
    return (lon >= minx - margin_deg) & (lon <= maxx + margin_deg) & (lat >= miny - margin_deg) & \
        (lat <= maxy + margin_deg)


def coordinate_problem(lon: float, lat: float, bounds: tuple | None) -> str | None:
    """Why a single point's coordinates are refused (non-finite, out of range, swapped), or None."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return "lon and lat must be finite numbers"
    if abs(lat) > 90 or abs(lon) > 180:
        if abs(lon) <= 90 and abs(lat) <= 180:
            return f"lat {lat} is out of range but lon {lon} is a valid latitude: lon and lat look swapped"
        return f"lon {lon} / lat {lat} out of range (lon -180..180, lat -90..90)"
    if bounds is not None and not _near_one(lon, lat, bounds) and _near_one(lat, lon, bounds):
        return (f"({lon}, {lat}) is far from the district but ({lat}, {lon}) lies in it: "
                "lon and lat look swapped")
    return None


def _near_one(lon: float, lat: float, bounds, margin_deg: float = 0.5) -> bool:
    minx, miny, maxx, maxy = bounds
    return minx - margin_deg <= lon <= maxx + margin_deg and miny - margin_deg <= lat <= maxy + margin_deg
