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


# ---------------------------------------------------------------------------------------------------------------
# the heatmap page (/maps/heatmap/data, /hotspots, /incidents)


class Lattice(BaseModel):
    """Where hexagon (q, r) lies: centre = origin + q·step_q + r·step_r, corners = centre + corners ([lon, lat])."""

    origin: list[float]
    step_q: list[float]
    step_r: list[float]
    corners: list[list[float]]


class HeatCells(BaseModel):
    q: list[int]
    r: list[int]


class HeatColumns(BaseModel):
    """Sparse counts, one entry per (cell, month, class, state, grid) holding incidents: indexes into the lists."""

    cell: list[int]
    month: list[int]
    cls: list[int]
    state: list[int]
    grid: list[int]
    n: list[int]


class HeatCubeData(BaseModel):
    cell_m: float
    lattice: Lattice
    months: list[str]
    from_: str | None = Field(None, alias="from")
    to: str | None
    cells: HeatCells
    class_codes: list[str]
    state_codes: list[str]
    grid_codes: list[str | None]
    columns: HeatColumns
    incidents: int
    model_config = ConfigDict(populate_by_name=True)


class HeatClass(BaseModel):
    code: str
    name: str
    major_code: str | None


class HeatState(BaseModel):
    code: str
    name: str
    is_open: bool


class HeatGrid(Place):
    community: str | None = None
    households: int


class HeatmapMapData(BaseModel):
    kind: str
    title: str
    scope: str
    at: str
    cube: HeatCubeData
    classes: list[HeatClass]
    states: list[HeatState]
    status_groups: list[RoleFilter]
    grids: list[HeatGrid]
    communities: list[Place]
    streets: list[Place]
    colours: dict[str, list[str]]
    hotspot_colours: dict[str, str]
    method: str  # Gi* in a statistician's words (the tooltip)
    plain: str  # hot and cold spots in plain words
    filters: dict[str, str | None]
    notes: list[str]


class HotspotItem(BaseModel):
    q: int
    r: int
    klass: int = Field(alias="class", description="−3 … 3: cold 99/95/90 %, not significant, hot 90/95/99 %")
    label: str
    z: float
    p: float
    count: int
    lon: float
    lat: float
    model_config = ConfigDict(populate_by_name=True)


class HeatHotspots(BaseModel):
    cell_m: float
    permutations: int
    incidents: int
    cells: int
    items: list[HotspotItem]


class HeatIncident(BaseModel):
    id: int
    class_code: str
    class_name: str
    reported_at: str
    state: str
    state_name: str
    grid_code: str | None
    grid_name: str | None
    address: str | None
    href: str


class HeatIncidents(BaseModel):
    total: int
    items: list[HeatIncident]
