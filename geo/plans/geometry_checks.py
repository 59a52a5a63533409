"""What geometry a plan accepts (方案几何校验): checked before anything is written, and again before a publish.

Input (`checked_geojson`): a GeoJSON geometry whose coordinates are finite longitude/latitude pairs, at most
`Settings.plan_max_vertices` of them, every polygon ring closed (first position = last) with four or more positions,
and polygons valid as drawn (no self-crossing "bow-tie" rings; a ring is never silently repaired into another
shape). Placement (`check_near`): a unit's geometry lies inside its community, give or take
`Settings.plan_max_outside_m` (so swapped longitude/latitude or a polygon in Paris is refused). Refusals are
`InvalidPlanGeometry` (kind "invalid").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import shapely
from shapely.geometry import shape

from geo.plans.errors import InvalidPlanGeometry
from geo.settings import get_settings

#: Metres per degree of latitude (the conservative conversion of a distance in metres to degrees).
M_PER_DEG = 111_320.0

_DEPTH = {"Point": 0, "LineString": 1, "MultiPoint": 1, "Polygon": 2, "MultiLineString": 2, "MultiPolygon": 3}


def _positions(coords: Any, depth: int, what: str) -> Iterator[list]:
    if depth == 0:
        yield coords
        return
    if not isinstance(coords, (list, tuple)):
        raise InvalidPlanGeometry(f"{what}: coordinates must be nested arrays")
    for c in coords:
        yield from _positions(c, depth - 1, what)


def _check_position(p: Any, what: str) -> None:
    if not isinstance(p, (list, tuple)) or len(p) < 2 or len(p) > 3:
        raise InvalidPlanGeometry(f"{what}: a position is [longitude, latitude]")
    for v in p:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidPlanGeometry(f"{what}: coordinates must be numbers")
        if not math.isfinite(v):
            raise InvalidPlanGeometry(f"{what}: coordinates must be finite numbers (NaN and infinity are refused)")
    lon, lat = p[0], p[1]
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidPlanGeometry(f"{what}: ({lon}, {lat}) is not a longitude/latitude (longitude first, WGS-84)")


def _rings(value: dict) -> Iterator[list]:
    kind, coords = value["type"], value["coordinates"]
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    for poly in polygons:
        if not isinstance(poly, (list, tuple)) or not poly:
            raise InvalidPlanGeometry("a polygon needs an outer ring")
        yield from poly


def checked_geojson(value: Any, what: str = "geometry") -> shapely.Geometry:
    """A shapely geometry from a GeoJSON geometry (dict, or a Feature's geometry) after the input checks above;
    `InvalidPlanGeometry` otherwise."""
    if isinstance(value, dict) and value.get("type") == "Feature":
        value = value.get("geometry")
    if not isinstance(value, dict) or value.get("type") not in _DEPTH or "coordinates" not in value:
        raise InvalidPlanGeometry(f"{what} must be a GeoJSON geometry ({', '.join(_DEPTH)}) with coordinates")
    limit = get_settings().plan_max_vertices
    for count, p in enumerate(_positions(value["coordinates"], _DEPTH[value["type"]], what), start=1):
        _check_position(p, what)
        if count > limit:
            raise InvalidPlanGeometry(f"{what} has more than {limit:,} vertices (GRIDATLAS_PLAN_MAX_VERTICES)",
                                      max_vertices=limit)
    for ring in _rings(value):
        if len(ring) < 4:
            raise InvalidPlanGeometry(f"{what}: a polygon ring needs four or more positions (closed)")
        if list(ring[0][:2]) != list(ring[-1][:2]):
            raise InvalidPlanGeometry(f"{what}: a polygon ring is not closed (its last position must repeat its "
                                      f"first, {ring[0]}); unclosed rings are refused, not guessed")
    try:
        geom = shape(value)
    except Exception as exc:  # shapely raises several types for malformed input
        raise InvalidPlanGeometry(f"{what}: invalid GeoJSON geometry: {exc}") from exc
    if shapely.get_type_id(geom) in (3, 6) and not shapely.is_valid(geom):
        raise InvalidPlanGeometry(f"{what} is not a valid polygon ({shapely.is_valid_reason(geom)}): draw it "
                                  "again without crossing or touching edges", reason=shapely.is_valid_reason(geom))
    return geom


def check_near(geom: shapely.Geometry, community: shapely.Geometry, what: str) -> None:
    """`InvalidPlanGeometry` unless `geom` lies inside `community` give or take `plan_max_outside_m`."""
    if geom is None or shapely.is_empty(geom):
        return
    tolerance = get_settings().plan_max_outside_m / M_PER_DEG
    if shapely.covered_by(geom, community):
        return
    if not shapely.covered_by(geom, shapely.buffer(community, tolerance)):
        far = shapely.hausdorff_distance(geom, community) * M_PER_DEG
        raise InvalidPlanGeometry(f"{what} reaches about {far:,.0f} m beyond its community (at most "
                                  f"{get_settings().plan_max_outside_m:,.0f} m): is it the right place, longitude "
                                  "first?", max_outside_m=get_settings().plan_max_outside_m)


def check_publishable(rows: list[dict], community: shapely.Geometry, where: str) -> None:
    """Before a publish, whatever `allow_errors` says: every live unit's geometry is valid and near its community."""
    for r in rows:
        if r["retired"] or r["geom"] is None:
            continue
        name = f"{r.get('name') or r['key']} ({r['key']}) in {where}"
        if not shapely.is_valid(r["geom"]):
            raise InvalidPlanGeometry(f"{name} is not a valid polygon ({shapely.is_valid_reason(r['geom'])}); "
                                      "it cannot be published, even with allow_errors")
        try:
            check_near(r["geom"], community, name)
        except InvalidPlanGeometry as exc:
            raise InvalidPlanGeometry(f"{exc.message}; it cannot be published, even with allow_errors") from exc
