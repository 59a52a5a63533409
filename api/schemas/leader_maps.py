"""The small JSON the leaders' map pages draw with (`/maps/coverage/data`, `/maps/classification/data`): the
shapes come from the vector tiles, these bodies say how to colour, label, list and zoom to them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LegendItem(BaseModel):
    key: str  # status letter (m o u c e) or class (same larger smaller straddling outside)
    colour: str
    label: str
    note: str


class RoleFilter(BaseModel):
    key: str
    label: str


class Place(BaseModel):
    """A unit's label point and box (WGS-84)."""

    code: str
    name: str | None = None
    lon: float
    lat: float
    bbox: list[float]


class Contact(BaseModel):
    name: str
    role: str
    phone: str | None = None


class CoverageGrid(BaseModel):
    code: str
    name: str | None
    community: str | None
    kind: str
    households: int
    status: dict[str, str]  # role filter ("" = all) → status letter
    issues: list[str]
    contacts: list[Contact]
    staff: dict[str, list[str]]
    lon: float | None
    lat: float | None
    bbox: list[float] | None


class BuildingStatuses(BaseModel):
    """Parallel arrays: building ids, their grid codes, and per role filter one status letter per building."""

    id: list[int]
    grid: list[str]
    status: dict[str, str]


class CoverageMapData(BaseModel):
    kind: str
    title: str
    scope: str
    at: str
    legend: list[LegendItem]
    filters: list[RoleFilter]
    grids: list[CoverageGrid]
    buildings: BuildingStatuses
    communities: list[Place]
    streets: list[Place]
    totals: dict[str, float | int | None]


class MapCompound(BaseModel):
    id: int
    name: str | None
    model_config = ConfigDict(populate_by_name=True)

    klass: str = Field(alias="class", description="same / larger / smaller / straddling / outside")
    community: str | None
    main_code: str | None
    main_name: str | None
    area_m2: float | None
    coverage: float | None
    fill: float | None
    iou: float | None
    hausdorff_m: float | None
    n_units: int
    units: list[tuple[str, str | None, float]]  # [code, name, share of the compound's area], largest first
    lon: float | None
    lat: float | None
    bbox: list[float] | None


class ClassificationMapData(BaseModel):
    kind: str
    title: str
    level: str
    unit: str
    scope: str
    at: str
    legend: list[LegendItem]
    compounds: list[MapCompound]
    units: list[Place]
    communities: list[Place]
