"""Answers of locate (定位): one point's chain of units with the responsible staff, and unit outlines as GeoJSON.

Field names are those of the JSON the service has always sent (`geo.locate.index.LocateIndex.locate` and the
router add to it). The batch answers are CSV or JSON lines, declared by media type on the route.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Unit(BaseModel):
    """A unit of one level: its id, code and name."""

    id: int
    code: str | None = Field(description="the unit's code (compounds have none)")
    name: str | None


class Street(Unit):
    """The street (街道)."""


class Community(Unit):
    """The community (社区)."""

    street_id: int | None


class Grid(Unit):
    """The grid (网格)."""

    kind: str | None = Field(description="comprehensive or dedicated (综合网格 / 专属网格)")
    dedicated_type: str | None = Field(description="what a dedicated grid serves (school, hospital …)")
    community_id: int | None
    version_id: int | None = Field(None, description="the boundary version this grid's boundary comes from")


class CoveringGrid(Unit):
    """Another grid whose boundary also covers the point (an overlap between grids)."""

    version_id: int | None = Field(None, description="the boundary version of that grid's boundary")


class MicroGrid(Unit):
    """The micro-grid (微网格)."""

    grid_id: int | None


class Compound(Unit):
    """The compound (小区)."""

    kind: str | None
    community_id: int | None


class Building(Unit):
    """The building (楼栋)."""

    compound_id: int | None
    community_id: int | None
    floors: int | None
    use: str | None


class PointInput(BaseModel):
    """The point as the caller sent it."""

    lon: float
    lat: float
    coordsys: str = Field(description="wgs84, cgcs2000, gcj02 or bd09")


class StaffMember(BaseModel):
    """A person responsible for the grid, micro-grid or building on the day asked about."""

    name: str
    role: str
    role_name: str | None = Field(description="the role in Chinese (网格长, 专职网格员 …)")
    target_type: Literal["grid", "micro_grid", "building"]
    target_id: int
    phone: str | None = Field(description="shown when on the public notice board (公示) or the caller may see it")
    phone_public: bool


class VersionInfo(BaseModel):
    """The boundary version the answer comes from."""

    id: int
    label: str | None
    valid_from: dt.datetime


class LocateAnswer(BaseModel):
    """Where a point lies: the chain street → community → grid → micro-grid → compound → building, how it matched,
    and who is responsible there."""

    input: PointInput
    lon: float = Field(description="the point in WGS-84")
    lat: float = Field(description="the point in WGS-84")
    street: Street | None
    community: Community | None
    grid: Grid
    micro_grid: MicroGrid | None
    compound: Compound | None
    building: Building | None
    match: Literal["inside", "boundary", "nearest"] = Field(
        description="inside a grid, on its boundary (a shared edge goes to the smallest code), or the nearest grid "
                    "within accuracy_m")
    distance_m: float = Field(description="0 inside or on the boundary, else the distance to the nearest grid")
    also_covered_by: list[CoveringGrid] = Field(
        default_factory=list, description="the other grids whose area holds the point (it lies in an overlap), "
                                          "smallest code first; `grid` is the one the shared-edge rule picks")
    staff: list[StaffMember]
    phones: Literal["all", "public"] = Field(description="all phones (the caller's jurisdiction covers the grid) or "
                                                         "only those on the public notice board")
    version: VersionInfo | None = Field(description="the boundary version of the answering grid's boundary")
    at: dt.datetime | None = Field(description="the instant asked about (null: now)")


class Geometry(BaseModel):
    """A GeoJSON geometry (WGS-84)."""

    type: str
    coordinates: list[Any]


class OutlineProperties(BaseModel):
    """A unit near the point: its level, id, code, name, and the level's attributes (as in `LocateAnswer`)."""

    # The other members are the level's own (grid: kind, community_id …; building: floors, use …).
    model_config = ConfigDict(extra="allow")

    level: Literal["grid", "micro_grid", "compound", "building"]
    id: int
    code: str | None
    name: str | None


class OutlineFeature(BaseModel):
    """A unit's outline as a GeoJSON Feature."""

    type: Literal["Feature"]
    geometry: Geometry
    properties: OutlineProperties


class FeatureCollection(BaseModel):
    """The outlines near a point as a GeoJSON FeatureCollection."""

    type: Literal["FeatureCollection"]
    features: list[OutlineFeature]
