"""Request and response bodies of incidents (事件): reports, the closed loop, KPIs, heatmaps and Open311 GeoReport v2.

Field names are the JSON members clients already read. Open311 answers are written by the Open311 router in JSON or
XML as the path asks; their models here describe the JSON.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: A timestamp with its time zone (ISO 8601).
Timestamp = dt.datetime
Light = Literal["green", "yellow", "red"]
#: Text the database can store: no NUL byte (PostgreSQL text refuses it).
NO_NUL = r"^[^\x00]*$"


# ------------------------------------------------------------------------------------------------ requests

class IncidentIn(BaseModel):
    """A reported incident: a point in any coordinate system the locate API takes, a class and a source."""

    lon: float = Field(description="longitude in `coordsys`")
    lat: float = Field(description="latitude in `coordsys`")
    coordsys: str = Field("wgs84", max_length=16, pattern=NO_NUL,
                          description="wgs84, cgcs2000, gcj02 (AMap/Tencent) or bd09 (Baidu)")
    class_code: str = Field(max_length=16, pattern=NO_NUL,
                            description="a code of the class table (GET /v1/incident-classes)")
    source: str = Field("patrol", max_length=32, pattern=NO_NUL,
                        description="patrol, public, hotline_12345, video, department, open311")
    description: str | None = Field(None, max_length=4000, pattern=NO_NUL)
    reporter: str | None = Field(None, max_length=100, pattern=NO_NUL)
    reporter_phone: str | None = Field(None, max_length=32, pattern=NO_NUL)
    reporter_email: str | None = Field(None, max_length=200, pattern=NO_NUL)
    department: str | None = Field(None, max_length=100, pattern=NO_NUL)
    address: str | None = Field(None, max_length=500, pattern=NO_NUL)
    media_url: str | None = Field(None, max_length=2000, pattern=NO_NUL)
    reported_at: dt.datetime | None = Field(None, description="when it was reported; default now")


class TransitionIn(BaseModel):
    """A move along the closed loop: an action (e.g. 'dispatch') or the target state (e.g. 'dispatched')."""

    action: str | None = Field(None, max_length=32, pattern=NO_NUL)
    to: str | None = Field(None, max_length=32, pattern=NO_NUL, description="target state, instead of the action")
    note: str | None = Field(None, max_length=4000, pattern=NO_NUL)
    hours: float | None = Field(None, gt=0, le=24 * 365, description="extension in hours (extend)")
    evaluation: int | None = Field(None, ge=1, le=5, description="score 1–5 (evaluate)")
    department: str | None = Field(None, max_length=100, pattern=NO_NUL,
                                   description="the department dispatched to (dispatch)")


# ------------------------------------------------------------------------------------- the class table, states

class IncidentClass(BaseModel):
    """A class of the table (GB/T 30428.2): a major class has no major_code; the time limit in hours."""

    code: str
    name: str
    major_code: str | None
    major_name: str | None
    time_limit_hours: float
    department: str | None = Field(None, description="处置部门: where the class's cases go by default")


class ClassAdded(BaseModel):
    """A class the import adds."""

    code: str
    name: str
    major_code: str | None
    time_limit_hours: float
    department: str | None
    record: int = Field(description="its record (row) in the file, from 1")


class ClassChanged(BaseModel):
    """A class the import changes: each changed field as [before, after]."""

    code: str
    record: int
    changes: dict[str, list[Any]]


class RecordRefused(BaseModel):
    """A record of an imported file that cannot be written, and why."""

    record: int = Field(description="its record (row) in the file, from 1")
    code: str | None = None
    external_id: str | None = None
    kind: str | None = Field(None, description="bad-value, missing-value, unknown-category, unknown-state, "
                                               "time-order, future, duplicate, no-location, not-a-point, "
                                               "before-boundaries, outside-district, out-of-jurisdiction")
    reason: str


class ClassTableCounts(BaseModel):
    """How many records the file holds and what the import does with them."""

    records: int
    added: int
    changed: int
    unchanged: int
    kept: int = Field(description="classes in the table that the file does not name (kept as they are)")
    refused: int


class ClassTableReport(BaseModel):
    """What importing a class table adds, changes, keeps and refuses (a dry run writes nothing)."""

    source: str
    format: str
    encoding: str | None
    columns_read: list[str] = Field(description="we read column X as Y")
    ignored_columns: list[str]
    records: int
    added: list[ClassAdded]
    changed: list[ClassChanged]
    unchanged: int
    kept: int
    refused: list[RecordRefused]
    notes: list[str]
    counts: ClassTableCounts
    dry_run: bool
    committed: bool


class CategoryMapped(BaseModel):
    """A source category and the class it is mapped to (how: mapped by you, by code, by name)."""

    category: str
    class_code: str
    class_name: str
    how: Literal["mapped", "code", "name"]
    records: int


class CategoryUnknown(BaseModel):
    """A source category no class matches: its records are refused unless it is mapped."""

    category: str
    records: int
    reason: str


class StateMapped(BaseModel):
    """A source state word and the closed loop's state it is read as."""

    state: str
    to: str
    name: str
    records: int
    how: Literal["mapped", "recognised"]


class StateUnknown(BaseModel):
    """A source state word that is no state of the closed loop (refused unless mapped)."""

    state: str
    records: int


class HistoryCounts(BaseModel):
    """True counts: records read, passing, written, already imported before, refused; events written."""

    records: int
    passing: int
    imported: int
    already_imported: int
    refused: int
    events: int
    inferred_times: int = Field(description="steps of the loop without a time in the file (the next known time)")


class HistoryPeriod(BaseModel):
    """The report times of the incidents that pass."""

    first: str | None
    last: str | None


class IncidentImportReport(BaseModel):
    """What an incident import read, mapped, wrote, skipped and refused."""

    source: str
    format: str
    encoding: str | None
    crs: str
    columns_read: list[str]
    ignored_columns: list[str]
    counts: HistoryCounts
    category_mapping: list[CategoryMapped]
    unknown_categories: list[CategoryUnknown]
    state_mapping: list[StateMapped]
    unknown_states: list[StateUnknown]
    by_state: dict[str, int]
    attribution: dict[str, int] = Field(description="grid, community_only, street_only: where the incidents "
                                                    "fall by the boundaries in force at their report times; "
                                                    "versions: how many boundary versions that took")
    period: HistoryPeriod
    problems: list[RecordRefused]
    notes: list[str]
    dry_run: bool
    committed: bool


class StateOut(BaseModel):
    """A state of the closed loop; `clock` says what the deadline does in it (none/running/paused/stopped)."""

    code: str
    name: str
    rank: int
    is_open: bool
    clock: str
    open311_status: str


class TransitionOut(BaseModel):
    """One legal move: from a state, an action, to a state."""

    from_state: str
    action: str
    to_state: str
    name: str


class StateMachine(BaseModel):
    """The state machine as data."""

    states: list[StateOut]
    transitions: list[TransitionOut]


# ------------------------------------------------------------------------------------------------ incidents

class ClassRef(BaseModel):
    """The incident's class and its major class."""

    code: str
    name: str
    major_code: str | None
    major_name: str | None


class ReportedPoint(BaseModel):
    """The point as the reporter gave it."""

    lon: float | None
    lat: float | None
    coordsys: str


class Location(BaseModel):
    """Where: WGS-84, and as reported."""

    lon: float | None
    lat: float | None
    coordsys: Literal["wgs84"]
    as_reported: ReportedPoint | None


class Times(BaseModel):
    """When each step of the closed loop happened (None: not yet)."""

    reported_at: Timestamp | None
    registered_at: Timestamp | None
    dispatched_at: Timestamp | None
    handled_at: Timestamp | None
    feedback_at: Timestamp | None
    closed_at: Timestamp | None
    evaluated_at: Timestamp | None
    updated_at: Timestamp | None
    suspended_at: Timestamp | None


class Deadline(BaseModel):
    """The deadline: due time, the limit with extensions, the light (green < 80 % used ≤ yellow ≤ 100 % < red)."""

    due_at: Timestamp | None
    time_limit_hours: float | None
    extended_hours: float | None
    light: Light | None
    used_fraction: float | None
    closed_on_time: bool | None


class Counts(BaseModel):
    """How often the case was extended, reworked and returned."""

    extensions: int
    reworks: int
    returns: int


class UnitRef(BaseModel):
    """A unit by code and name."""

    code: str
    name: str | None


class NamedId(BaseModel):
    """A compound or building by id and name."""

    id: int
    name: str | None


class Attribution(BaseModel):
    """The units the incident was attributed to, by the boundaries in force at its report time."""

    basis: str
    version_id: int | None
    street: UnitRef | None
    community: UnitRef | None
    grid: UnitRef | None
    micro_grid: UnitRef | None
    compound: NamedId | None
    building: NamedId | None


class CurrentAttribution(BaseModel):
    """The units the incident lies in by today's boundaries (a view; the stored attribution is unchanged)."""

    basis: str
    version_id: int | None
    street_code: str | None
    street_name: str | None
    community_code: str | None
    community_name: str | None
    grid_code: str | None
    grid_name: str | None
    micro_grid_code: str | None
    compound_id: int | None
    building_id: int | None


class AllowedMove(BaseModel):
    """A move allowed from the current state."""

    action: str
    to: str
    name: str


class Reporter(BaseModel):
    """Who reported it (only for callers whose jurisdiction contains the incident)."""

    name: str | None
    phone: str | None
    email: str | None


class Event(BaseModel):
    """One step of the incident's history."""

    id: int
    action: str | None
    from_state: str | None
    to_state: str
    to_state_name: str
    at: Timestamp
    actor: str | None
    note: str | None
    detail: dict[str, Any] | None


class IncidentOut(BaseModel):
    """An incident. `reporter` only for callers whose jurisdiction contains it; `history` and
    `current_attribution` in the answers about one incident."""

    id: int
    state: str
    state_name: str
    open: bool
    class_: ClassRef = Field(alias="class")
    source: str
    source_name: str
    description: str | None
    department: str | None
    address: str | None
    media_url: str | None
    location: Location
    times: Times
    deadline: Deadline
    counts: Counts
    evaluation: int | None
    attribution: Attribution
    allowed_transitions: list[AllowedMove]
    created_by: str | None
    reporter: Reporter | None = None
    history: list[Event] | None = None
    current_attribution: CurrentAttribution | None = None


class IncidentPage(BaseModel):
    """A page of incidents, newest first; `total` counts every match."""

    items: list[IncidentOut]
    total: int
    limit: int
    offset: int


# ------------------------------------------------------------------------------------------------------ KPIs

class KpiCounts(BaseModel):
    """The counts of a KPI row (see geo.incidents.kpi for their definitions)."""

    received: int
    rejected: int
    registered: int
    due: int
    closed: int
    closed_on_time: int
    handled: int
    reworked: int
    extended: int
    open_green: int | None = Field(description="open cases with a green light now (None in a monthly total)")
    open_yellow: int | None
    open_red: int | None
    closure_rate: float | None = Field(description="结案率 = closed / due")
    on_time_rate: float | None = Field(description="按期结案率 = closed on time / due")
    disposal_rate: float | None = Field(description="处置率 = handled / due")
    rework_rate: float | None = Field(description="返工率 = reworked / handled")
    extension_rate: float | None = Field(description="延期率 = extended / due")
    closure_rate_pct: float | None
    on_time_rate_pct: float | None
    disposal_rate_pct: float | None
    rework_rate_pct: float | None
    extension_rate_pct: float | None


class KpiRow(KpiCounts):
    """One group's counts and rates: `key` the unit code, department or month (None for the district)."""

    key: str | None
    name: str


class Period(BaseModel):
    """A half-open period [from, to)."""

    from_: str = Field(alias="from")
    to: str


class KpiAnswer(BaseModel):
    """KPIs per group and for the whole selection."""

    by: str
    period: Period
    groups: list[KpiRow]
    total: KpiCounts


# --------------------------------------------------------------------------------------------------- heatmaps

class HotspotMethod(BaseModel):
    """How hot and cold spots were found."""

    method: str
    permutations: int
    p_value: str
    classes: dict[str, str]


class HeatmapMeta(BaseModel):
    """What the aggregates are: period, filters, cell size, Gi* method."""

    from_: str | None = Field(alias="from")
    to: str | None
    class_: str | None = Field(alias="class")
    street: str | None
    community: str | None
    grid: str | None
    cell_m: float
    cell_shape: str
    metric_frame: str
    months: list[str]
    incidents: int
    hotspots: HotspotMethod | None
    notes: list[str]


class Frame(BaseModel):
    """The district's metric frame: x = (lon − lon0)·kx, y = (lat − lat0)·ky metres."""

    lon0: float
    lat0: float
    kx: float
    ky: float


class Lattice(BaseModel):
    """Where cells lie: cell (q, r) is centred at origin + q·step_q + r·step_r, its corners at centre + corners
    (all [lon, lat], WGS-84)."""

    origin: list[float]
    step_q: list[float]
    step_r: list[float]
    corners: list[list[float]]


class HexColumns(BaseModel):
    """Every cell of the answer (the study area's and any with incidents): axial q, r and the period's total."""

    q: list[int]
    r: list[int]
    total: list[int]


class GridColumns(BaseModel):
    """The grids as columns: grids[field][i] describes grid i; rings encoded as the `encoding` says."""

    code: list[str]
    name: list[str]
    incidents: list[int]
    households: list[int]
    per_1000: list[float | None]
    rings: list[list[list[list[int]]]]


class HeatmapAnswer(BaseModel):
    """The heatmap aggregates in compact form (`encoding` says how to read them)."""

    meta: HeatmapMeta
    encoding: str
    frame: Frame
    cell_m: float
    lattice: Lattice
    hex: HexColumns
    active: list[int] = Field(description="positions (in `hex`) of the cells with any incident")
    monthly: list[list[int]] = Field(description="monthly[m][a]: the count of cell active[a] in month m")
    hot: list[tuple[int, int, float, float]] = Field(description="significant cells: [cell, class, z, p]")
    grids: GridColumns


def heatmap_geojson_schema() -> dict[str, Any]:
    """OpenAPI schema of a heatmap layer as GeoJSON: hexagons (`layer=hex`) or grids (`layer=grid`)."""
    return {
        "type": "object",
        "required": ["type", "features", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "features": {"type": "array", "items": {
                "type": "object",
                "required": ["type", "geometry", "properties"],
                "properties": {
                    "type": {"type": "string", "enum": ["Feature"]},
                    "geometry": {"type": "object", "description": "the cell's hexagon or the grid's outline (WGS-84)"},
                    "properties": {"type": "object", "description": (
                        "hex: q, r, count, months {YYYY-MM: count}, in_area, gi_z, gi_p, hotspot (−3 … 3), "
                        "hotspot_label; grid: code, name, incidents, households, per_1000")},
                }}},
            "properties": {"$ref": "#/components/schemas/HeatmapMeta"},
        },
    }


# --------------------------------------------------------------------------------------------- Open311 (v2)

class Open311Service(BaseModel):
    """GeoReport v2 service: a class of the incident class table."""

    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: Literal["realtime", "batch", "blackbox"]
    keywords: str
    group: str


class Open311Request(BaseModel):
    """GeoReport v2 service request: an incident."""

    service_request_id: str
    status: Literal["open", "closed"]
    status_notes: str | None
    service_name: str | None
    service_code: str
    description: str | None
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: Timestamp | None
    updated_datetime: Timestamp | None
    expected_datetime: Timestamp | None
    address: str | None
    address_id: str | None
    zipcode: str | None
    lat: float | None
    long: float | None
    media_url: str | None


class Open311Endpoint(BaseModel):
    """A GeoReport v2 endpoint of the discovery document."""

    specification: str
    url: str
    changeset: str
    type: Literal["production", "test"]
    formats: list[str]


class Open311Discovery(BaseModel):
    """GeoReport v2 service discovery: where the endpoint is, what it speaks, whom to ask for a key."""

    changeset: str
    contact: str
    key_service: str
    endpoints: list[Open311Endpoint]


class Open311Attribute(BaseModel):
    """An attribute of a service definition (GridAtlas services have none: metadata is false)."""

    variable: bool
    code: str
    datatype: str
    required: bool
    datatype_description: str | None
    order: int
    description: str


class Open311Definition(BaseModel):
    """GeoReport v2 service definition: the extra attributes a service asks for."""

    service_code: str
    attributes: list[Open311Attribute]


class Open311Created(BaseModel):
    """GeoReport v2 answer to POST requests: the new request's id."""

    service_request_id: str
    service_notice: str | None
    account_id: str | None


class Open311Error(BaseModel):
    """GeoReport v2 error (answered as a list of these)."""

    model_config = ConfigDict(title="Open311Error")

    code: int
    description: str
