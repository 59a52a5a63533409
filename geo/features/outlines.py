"""The district's outlines for a basemap preview (底图对齐预览): streets, communities and grids in force, as a small
GeoJSON placed where a basemap in WGS-84/CGCS2000, GCJ-02 or BD-09 draws them.

Read through `geo.store.load.read_level`, simplified in metres (a preview needs the shape, not every vertex), then
shifted with the same formulas the pages use (`geo.spatial.coords`), so an admin sees whether a basemap lines up.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import shapely

from geo.spatial.coords import wgs84_to_bd09, wgs84_to_gcj02
from geo.spatial.crs import STORAGE_SRID, metric_epsg_for, to_metric
from geo.store.load import read_level

LEVELS = {"streets": "street", "communities": "community", "grids": "grid"}
#: Below a pixel at zoom 16 (about 2.4 m): nothing a preview could show is lost.
SIMPLIFY_M = 2.0
COORDSYS = ("wgs84", "cgcs2000", "gcj02", "bd09")
_SHIFT = {"gcj02": wgs84_to_gcj02, "bd09": wgs84_to_bd09}


def _shifted(geoms: np.ndarray, coordsys: str) -> np.ndarray:
    """The geometries where a basemap in `coordsys` draws them (WGS-84 and CGCS2000 agree to centimetres)."""
    shift = _SHIFT.get(coordsys)
    if shift is None:
        return geoms
    return shapely.transform(geoms, lambda xy: np.column_stack(shift(xy[:, 0], xy[:, 1])))


def preview_outlines(conn, coordsys: str = "wgs84", at: dt.datetime | None = None) -> dict:
    """A GeoJSON FeatureCollection of the streets, communities and grids in force at `at` (now), each with its
    level, code and name, simplified to SIMPLIFY_M and placed for a basemap in `coordsys`."""
    if coordsys not in COORDSYS:
        raise ValueError(f"unknown coordinate system {coordsys!r}")
    frames = [read_level(conn, table, at)[["code", "name", "geom"]].assign(level=level)
              for table, level in LEVELS.items()]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return {"type": "FeatureCollection", "coordsys": coordsys, "features": []}
    units = pd.concat(frames, ignore_index=True).set_geometry("geom")
    metric = to_metric(units, metric_epsg_for(units))
    simple = metric.geometry.simplify(SIMPLIFY_M, preserve_topology=True).to_crs(STORAGE_SRID).to_numpy()
    # six decimals of a degree are ~0.1 m: finer digits only weigh
    geoms = shapely.set_precision(_shifted(simple, coordsys), 1e-6, mode="pointwise")
    features = [{"type": "Feature", "properties": {"level": lv, "code": c, "name": n},
                 "geometry": json.loads(g)}
                for lv, c, n, g in zip(units["level"], units["code"], units["name"], shapely.to_geojson(geoms),
                                       strict=True)]
    return {"type": "FeatureCollection", "coordsys": coordsys, "features": features}
