"""Chinese map coordinate systems (火星坐标 GCJ-02, 百度坐标 BD-09) to and from WGS-84, vectorised with numpy.

GCJ-02 (AMap/Gaode, Tencent, Google China) and BD-09 (Baidu) are not in EPSG or PROJ; these are the
published formulas (Krasovsky ellipsoid constants). The inverses have no closed form and are solved by
fixed-point iteration to about 1e-9 degrees. CGCS2000 (EPSG:4490) is treated as WGS-84: they differ by centimetres.

Every function takes longitudes and latitudes as scalars or array-likes of the same shape and returns a
``(lon, lat)`` pair of float64 arrays (Python floats for scalar input).
"""

from __future__ import annotations

import numpy as np

#: Semi-major axis of the Krasovsky 1940 ellipsoid used by the GCJ-02 formula.
KRASOVSKY_A = 6378245.0
#: Its first eccentricity squared.
KRASOVSKY_EE = 0.00669342162296594323
#: Baidu's constant for BD-09.
X_PI = np.pi * 3000.0 / 180.0

#: The published rectangle outside which GCJ-02 equals WGS-84 (lon_min, lat_min, lon_max, lat_max).
CHINA_BBOX = (72.004, 0.8293, 137.8347, 55.8271)

#: Fixed-point iteration stops when every point moves less than this many degrees (~0.01 mm).
_INVERSE_TOL_DEG = 1e-10
_INVERSE_MAX_ITER = 30

COORDSYS = frozenset({"wgs84", "cgcs2000", "gcj02", "bd09"})


def _arrays(lon, lat) -> tuple[np.ndarray, np.ndarray, bool]:
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    if lon_a.shape != lat_a.shape:
        lon_a, lat_a = np.broadcast_arrays(lon_a, lat_a)
    return lon_a, lat_a, lon_a.ndim == 0


def _out(lon: np.ndarray, lat: np.ndarray, scalar: bool):
    if scalar:
        return float(lon), float(lat)
    return lon, lat


def out_of_china(lon, lat) -> np.ndarray | bool:
    """Whether points lie outside the published China rectangle, where GCJ-02 is WGS-84 unchanged."""
    lon_a, lat_a, scalar = _arrays(lon, lat)
    lon_min, lat_min, lon_max, lat_max = CHINA_BBOX
    out = (lon_a < lon_min) | (lon_a > lon_max) | (lat_a < lat_min) | (lat_a > lat_max)
    return bool(out) if scalar else out


def _transform_lat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    return ret


def _transform_lon(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    return ret


def _wgs_to_gcj(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d_lat = _transform_lat(lon - 105.0, lat - 35.0)
    d_lon = _transform_lon(lon - 105.0, lat - 35.0)
    rad_lat = lat / 180.0 * np.pi
    magic = 1.0 - KRASOVSKY_EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((KRASOVSKY_A * (1.0 - KRASOVSKY_EE)) / (magic * sqrt_magic) * np.pi)
    d_lon = (d_lon * 180.0) / (KRASOVSKY_A / sqrt_magic * np.cos(rad_lat) * np.pi)
    outside = out_of_china(lon, lat)
    return np.where(outside, lon, lon + d_lon), np.where(outside, lat, lat + d_lat)


def _gcj_to_bd(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _bd_to_gcj_approx(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = lon - 0.0065
    y = lat - 0.006
    z = np.hypot(x, y) - 0.00002 * np.sin(y * X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def _invert(forward, lon: np.ndarray, lat: np.ndarray, lon0: np.ndarray,
            lat0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve forward(x) = target by fixed-point iteration x <- x - (forward(x) - target); Jacobian is ~identity."""
    x, y = lon0.copy(), lat0.copy()
    for _ in range(_INVERSE_MAX_ITER):
        fx, fy = forward(x, y)
        dx, dy = fx - lon, fy - lat
        x -= dx
        y -= dy
        step = np.maximum(np.abs(dx), np.abs(dy))
        if not step.size or not np.any(step > _INVERSE_TOL_DEG):  # NaN compares False: NaN inputs stay NaN
            break
    return x, y


def wgs84_to_gcj02(lon, lat):
    """WGS-84 to GCJ-02 (火星坐标); identity outside China."""
    lon_a, lat_a, scalar = _arrays(lon, lat)
    return _out(*_wgs_to_gcj(lon_a, lat_a), scalar)


def gcj02_to_wgs84(lon, lat):
    """GCJ-02 to WGS-84 by iterating the forward formula (error below 1e-9 degree)."""
    lon_a, lat_a, scalar = _arrays(lon, lat)
    return _out(*_invert(_wgs_to_gcj, lon_a, lat_a, lon_a, lat_a), scalar)


def gcj02_to_bd09(lon, lat):
    """GCJ-02 to BD-09 (百度坐标)."""
    lon_a, lat_a, scalar = _arrays(lon, lat)
    return _out(*_gcj_to_bd(lon_a, lat_a), scalar)


def bd09_to_gcj02(lon, lat):
    """BD-09 to GCJ-02: Baidu's approximate closed-form inverse refined by iterating the forward formula."""
    lon_a, lat_a, scalar = _arrays(lon, lat)
    x0, y0 = _bd_to_gcj_approx(lon_a, lat_a)
    return _out(*_invert(_gcj_to_bd, lon_a, lat_a, x0, y0), scalar)


def wgs84_to_bd09(lon, lat):
    """WGS-84 to BD-09 (through GCJ-02)."""
    lon_a, lat_a, scalar = _arrays(lon, lat)
    return _out(*_gcj_to_bd(*_wgs_to_gcj(lon_a, lat_a)), scalar)


def bd09_to_wgs84(lon, lat):
    """BD-09 to WGS-84 (through GCJ-02)."""
    lon_a, lat_a, scalar = _arrays(lon, lat)
    gx0, gy0 = _bd_to_gcj_approx(lon_a, lat_a)
    gx, gy = _invert(_gcj_to_bd, lon_a, lat_a, gx0, gy0)
    return _out(*_invert(_wgs_to_gcj, gx, gy, gx, gy), scalar)


def to_wgs84(lon, lat, coordsys: str):
    """Convert from a named coordinate system ('wgs84', 'cgcs2000', 'gcj02', 'bd09') to WGS-84."""
    key = coordsys.strip().lower().replace("-", "").replace("_", "") if isinstance(coordsys, str) else coordsys
    if key in ("wgs84", "cgcs2000"):
        # CGCS2000 and WGS-84 agree to a few centimetres: no transformation is meaningful here.
        lon_a, lat_a, scalar = _arrays(lon, lat)
        return _out(lon_a.copy(), lat_a.copy(), scalar)
    if key == "gcj02":
        return gcj02_to_wgs84(lon, lat)
    if key == "bd09":
        return bd09_to_wgs84(lon, lat)
    raise ValueError(f"unknown coordinate system {coordsys!r}; expected one of {sorted(COORDSYS)}")
