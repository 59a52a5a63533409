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


# ---------------------------------------------------------------------------------------------------------------
# compact bodies (maps.leader_pack): label points in 1e-5°, boxes as integer offsets from them, ids as differences


class PackedPlace(BaseModel):
    """A unit's label point (WGS-84, 1e-5°) and, where a page zooms to it, its box: integer offsets in 1e-5° from
    the point (west, south, east, north)."""

    code: str
    name: str | None = None
    lon: float | None
    lat: float | None
    box: list[int] | None = None


class PackedCoverageGrid(BaseModel):
    code: str
    name: str | None
    community: str | None
    kind: str
    households: int
    status: str  # one status letter per role filter, in the order of `filters`
    issues: list[str]
    people: list[tuple[str, str, str | None]]  # [name, role, phone] of the grid's chiefs and workers
    more: bool = False  # staff left out (a district's data names whom to call; `?grid=` names everyone)
    lon: float | None
    lat: float | None
    box: list[int] | None = None


class PackedBuildings(BaseModel):
    """Buildings by id (the first id, then differences), each one's grid (index into `grids`, -1: none) and per
    role filter one status letter each ("grid": the three grid roles, which leave buildings neutral)."""

    id: list[int]
    grid: list[int]
    status: dict[str, str]


class CoveragePageData(BaseModel):
    kind: str
    title: str
    scope: str
    at: str
    legend: list[LegendItem]
    filters: list[RoleFilter]
    roles: dict[str, str]  # grid role → its Chinese name
    grids: list[PackedCoverageGrid]
    buildings: PackedBuildings
    communities: list[PackedPlace]
    streets: list[PackedPlace]
    totals: dict[str, float | int | None]


class PackedCompound(BaseModel):
    id: int
    name: str | None
    model_config = ConfigDict(populate_by_name=True)

    klass: str = Field(alias="class", description="same / larger / smaller / straddling / outside")
    community: str | None
    main_code: str | None  # its name is among `units` (or the page's unit labels)
    area_m2: float | None
    coverage: float | None
    fill: float | None
    iou: float | None
    hausdorff_m: float | None
    n_units: int
    units: list[tuple[str, str | None, float]]  # [code, name, share of the compound's area], largest first
    lon: float | None
    lat: float | None
    box: list[int] | None = None


class ClassificationPageData(BaseModel):
    kind: str
    title: str
    level: str
    unit: str
    scope: str
    at: str
    legend: list[LegendItem]
    compounds: list[PackedCompound]
    units: list[PackedPlace]
    communities: list[PackedPlace]
    streets: list[PackedPlace] = []


class PackedHeatCube(HeatCubeData):
    delta: list[str] = []  # columns sent as differences from the previous entry (entries sorted by cell, grid …)


class PackedHeatGrid(PackedPlace):
    community: str | None = None
    households: int


class HeatmapPageData(HeatmapMapData):
    cube: PackedHeatCube
    grids: list[PackedHeatGrid]  # type: ignore[assignment]
    communities: list[PackedPlace]  # type: ignore[assignment]
    streets: list[PackedPlace]  # type: ignore[assignment]
