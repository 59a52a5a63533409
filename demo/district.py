"""The result type, a synthetic district (合成辖区) of ten layers, and where it lies: code, centre, CRS, layers."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import Transformer

from demo.geometry import as_multi
from geo.spatial.crs import STORAGE_SRID, utm_epsg

DISTRICT_CODE = "430602"
DISTRICT_NAME = "岳阳楼区"
CENTER_LONLAT = (113.1, 29.37)
METRIC_EPSG = utm_epsg(*CENTER_LONLAT)
#: Layer names in output order (also the GeoPackage layer names).
LAYERS = (
    "streets",
    "communities",
    "grids",
    "micro_grids",
    "compounds",
    "buildings",
    "units",
    "people",
    "assignments",
    "incidents",
)


@dataclass
class District:
    """A synthetic district (合成辖区): ten layers in EPSG:4326, rows in a stable order."""

    streets: gpd.GeoDataFrame
    communities: gpd.GeoDataFrame
    grids: gpd.GeoDataFrame
    micro_grids: gpd.GeoDataFrame
    compounds: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    units: pd.DataFrame
    people: pd.DataFrame
    assignments: pd.DataFrame
    incidents: gpd.GeoDataFrame

    def layers(self) -> dict[str, pd.DataFrame]:
        """The layers by name, in output order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def counts(self) -> dict[str, int]:
        """Row count of every layer."""
        return {name: len(df) for name, df in self.layers().items()}

    def to_gpkg(self, path: str | os.PathLike) -> None:
        """Write every layer (attribute tables too) into one GeoPackage, replacing the file."""
        path = os.fspath(path)
        if os.path.exists(path):
            os.remove(path)
        for name, df in self.layers().items():
            if isinstance(df, gpd.GeoDataFrame):
                pyogrio.write_dataframe(df, path, layer=name, driver="GPKG", promote_to_multi=name != "incidents")
            else:
                out = df.copy()
                for col in out.columns:
                    if out[col].dtype == object and len(out) and hasattr(out[col].iloc[0], "isoformat"):
                        out[col] = pd.to_datetime(out[col])
                pyogrio.write_dataframe(out, path, layer=name, driver="GPKG")

    def fingerprint(self) -> str:
        """SHA-256 over every layer's columns, geometry as WKB, in order: equal iff the data are equal."""
        h = hashlib.sha256()
        for name, df in self.layers().items():
            h.update(f"{name}:{len(df)}:{','.join(map(str, df.columns))}\n".encode())
            for col in df.columns:
                s = df[col]
                if isinstance(s.dtype, gpd.array.GeometryDtype):
                    # each WKB prefixed by its length; one update over the joined bytes hashes the same stream
                    wkb = shapely.to_wkb(np.asarray(s.values), byte_order=1)
                    h.update(b"".join(len(b).to_bytes(4, "little") + b for b in wkb))
                else:
                    h.update(str(s.dtype).encode())
                    h.update("\x1f".join(map(str, s.tolist())).encode())
                h.update(b"\x1e")
        return h.hexdigest()


@functools.cache
def _utm_offset() -> np.ndarray:
    """Where (0, 0) of the plan lies in the metric CRS: Yueyang's UTM position."""
    e0, n0 = Transformer.from_crs(STORAGE_SRID, METRIC_EPSG, always_xy=True).transform(*CENTER_LONLAT)
    return np.array([e0, n0])


def place(geoms: np.ndarray) -> np.ndarray:
    """Move geometries drawn around (0, 0) onto Yueyang's UTM position (METRIC_EPSG)."""
    off = _utm_offset()
    return np.asarray(shapely.transform(np.asarray(geoms, dtype=object), lambda c: c + off))


def layer_frame(columns: Mapping[str, object], geoms: np.ndarray, order: np.ndarray) -> gpd.GeoDataFrame:
    """A polygon layer in EPSG:4326: columns and (multi)polygons drawn around (0, 0), rows in `order`."""
    cols = {
        k: (v[order] if isinstance(v, pd.api.extensions.ExtensionArray) else np.asarray(v)[order])
        for k, v in columns.items()
    }
    df = gpd.GeoDataFrame(cols, geometry=place(as_multi(geoms))[order], crs=METRIC_EPSG)
    return df.to_crs(STORAGE_SRID).reset_index(drop=True)
