"""Bodies of the browse endpoints (浏览): unit lists and details per level, boundary versions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class BrowseLink(BaseModel):
    href: str
    rel: str
    title: str | None = None


class UnitItem(BaseModel):
    """A unit as listed: code (compounds: none), name then, parent, area, households, boundary version, links."""

    id: int
    code: str | None
    name: str | None
    level: str
    parent_level: str | None
    parent_code: str | None
    parent_name: str | None
    area_m2: float | None
    households: int | None = Field(description="households (户) of the unit's buildings")
    version_id: int | None = Field(description="the boundary version of the row in force (versioned levels)")
    valid_from: str | None
    feature_id: int | None = Field(description="the OGC feature id (a boundary row for versioned levels)")
    links: list[BrowseLink]


class UnitPage(BaseModel):
    items: list[UnitItem]
    total: int
    limit: int
    offset: int
    at: str
    links: list[BrowseLink]


class ParentRef(BaseModel):
    level: str
    id: int
    code: str | None
    name: str | None


class UnitVersion(BaseModel):
    """One boundary row of the unit: its version, period, name then, and who published it why."""

    feature_id: int
    version_id: int
    valid_from: str
    valid_to: str | None
    name: str | None
    label: str | None
    note: str | None
    created_by: str | None


class UnitDetail(UnitItem):
    at: str
    in_force: bool = Field(description="whether the unit has a boundary in force at `at`")
    geometry: dict[str, Any] | None = Field(description="GeoJSON MultiPolygon (EPSG:4326), absent with geometry=false")
    parents: list[ParentRef]
    children: dict[str, int]
    versions: list[UnitVersion]


class VersionItem(BaseModel):
    """A boundary version: a demo load, an import, a published plan or a rollback, with what it changed."""

    id: int
    kind: str = Field(description="demo | import | plan | rollback")
    valid_from: str
    label: str
    note: str | None
    created_by: str | None
    created_at: str
    plan_id: int | None
    rolls_back: int | None = Field(description="the version a rollback undid")
    changes: int = Field(description="boundary rows started or ended within your jurisdiction")
    started: dict[str, int]
    ended: dict[str, int]
    links: list[BrowseLink]


class VersionPage(BaseModel):
    items: list[VersionItem]
    total: int
    limit: int
    offset: int
    links: list[BrowseLink]


class VersionUnit(BaseModel):
    level: str
    code: str
    change: str = Field(description="started | ended")


class VersionDetail(VersionItem):
    units: list[VersionUnit]
    units_truncated: bool
