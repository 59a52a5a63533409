"""Coordinate reference systems: the storage CRS and the metric CRS used for areas and distances."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
from pyproj import CRS

#: Everything is stored as WGS-84 longitude/latitude (EPSG:4326); CGCS2000 (EPSG:4490) differs by centimetres.
STORAGE_SRID = 4326
#: Datums accepted as "the same as storage" on input: WGS-84 and CGCS2000 geographic.
GEOGRAPHIC_EQUIVALENT_SRIDS = frozenset({4326, 4490})


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS-84 UTM zone holding (lon, lat): the metric CRS for local areas and distances."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def metric_epsg_for(gdf: gpd.GeoSeries | gpd.GeoDataFrame) -> int:
    """The UTM zone EPSG code at the centre of a layer's extent (stored in EPSG:4326)."""
    minx, miny, maxx, maxy = gdf.total_bounds
    if not np.all(np.isfinite([minx, miny, maxx, maxy])):
        raise ValueError("cannot choose a metric CRS for an empty layer")
    return utm_epsg((minx + maxx) / 2.0, (miny + maxy) / 2.0)


def to_metric(gdf: gpd.GeoSeries | gpd.GeoDataFrame, epsg: int | None = None):
    """Project a layer to metres (its own UTM zone unless `epsg` is given)."""
    return gdf.to_crs(epsg or metric_epsg_for(gdf.to_crs(STORAGE_SRID)))


def is_geographic(crs: CRS | str | int) -> bool:
    """Whether a CRS is in degrees (longitude/latitude) rather than metres."""
    return CRS.from_user_input(crs).is_geographic
