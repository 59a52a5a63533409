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


class PlaceHit(BaseModel):
    """A compound (小区) or building (楼栋) found by name, with a point inside it (WGS-84)."""

    kind: str = Field(description="compound or building")
    id: int
    name: str | None = Field(description="none for a building known by its address only")
    label: str = Field(description="what the phone shows: the compound's name, or compound and building")
    address: str | None = Field(None, description="地址, e.g. 巴陵东路129号3栋")
    compound_id: int | None
    compound: str | None
    lon: float
    lat: float


class PlaceSearch(BaseModel):
    """Places of the caller's jurisdiction matching a name, best first."""

    query: str
    items: list[PlaceHit]


class PlacesPack(BaseModel):
    """The jurisdiction's named places, compact, for searching offline on the phone."""

    jurisdiction: str | None
    generated_at: str
    compounds: list[tuple[int, str | None, float, float, str | None]] = Field(
        description="[id, name, lon, lat, address]")
    buildings: list[tuple[int, str | None, int | None, float, float, str | bool | None]] = Field(
        description="[id, name, compound id, lon, lat, address] (address true: the compound's address + the name)")


class AttributionUnit(BaseModel):
    code: str
    name: str | None


class AttributionPreview(BaseModel):
    """Where a report at a point would be attributed, as the report form shows it."""

    lon: float = Field(description="WGS-84")
    lat: float = Field(description="WGS-84")
    street: AttributionUnit | None
    community: AttributionUnit | None
    grid: AttributionUnit | None
    in_jurisdiction: bool = Field(description="whether the caller may report there")
