"""The basemap preview's outlines (`/v1/basemaps/outlines`): GeoJSON of streets, communities and grids."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class OutlineProperties(BaseModel):
    level: Literal["street", "community", "grid"]
    code: str
    name: str | None


class OutlineFeature(BaseModel):
    type: Literal["Feature"]
    properties: OutlineProperties
    geometry: dict[str, Any]


class OutlineCollection(BaseModel):
    """A GeoJSON FeatureCollection placed for a basemap in `coordsys` (coordinates as that basemap draws them)."""

    type: Literal["FeatureCollection"]
    coordsys: Literal["wgs84", "cgcs2000", "gcj02", "bd09"]
    features: list[OutlineFeature]
