"""Response bodies of the phone pages' JSON (手机端): the offline pack of a worker's jurisdiction."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PackUnit(BaseModel):
    id: int
    code: str
    name: str | None


class PackStaff(BaseModel):
    name: str
    role: str
    role_name: str | None
    target_type: str
    target_id: int
    phone: str | None
    phone_public: bool | None


class PackVersion(BaseModel):
    id: int
    label: str | None
    valid_from: str


class PackGrid(BaseModel):
    id: int
    code: str
    name: str | None
    community: PackUnit | None
    street: PackUnit | None
    bbox: list[float] = Field(description="minlon, minlat, maxlon, maxlat")
    polygons: list[list[list[list[float]]]] = Field(description="polygons, each a list of rings of [lon, lat]")
    staff: list[PackStaff]


class JurisdictionPack(BaseModel):
    """The caller's grids, simplified for the phone, with their staff: what the phone locates against offline."""

    jurisdiction: str | None
    version: PackVersion | None
    generated_at: str
    day: str
    accuracy_m: float
    boundary_tolerance_m: float
    grids: list[PackGrid]
