"""Bodies of the plan routes (改划方案): drafts, operations, undo, validation, diff, publish, suggestion, rollback.

Field names are those the API has always answered. Members that only some answers carry (a street plan's
``scope``, an operation's ``buildings`` …) are optional; the routes leave out what an answer does not carry
(``response_model_exclude_unset``), so no member appears that was not there before.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GeoJSONGeometry = dict[str, Any]
#: Text the database can store: no NUL byte (PostgreSQL text refuses it).
NO_NUL = r"^[^\x00]*$"
#: A row id (32-bit serial columns).
RowId = Annotated[int, Field(ge=1, le=2**31 - 1)]


# ------------------------------------------------------------------------------------------------ requests

class RedrawPlanIn(BaseModel):
    """A new draft plan of one community's (or one street's) grids and micro-grids: give exactly one code."""

    community_code: str | None = Field(None, pattern=r"^\d{10,12}$", description="a community or village (12/10)")
    street_code: str | None = Field(None, pattern=r"^\d{9}$", description="a whole street (9 digits)")
    label: str | None = Field(None, max_length=200, pattern=NO_NUL)

    @model_validator(mode="after")
    def _one_scope(self) -> RedrawPlanIn:
        if (self.community_code is None) == (self.street_code is None):
            raise ValueError("give exactly one of community_code and street_code")
        return self


class OperationIn(BaseModel):
    """One operation: ``type`` and its arguments (see geo/plans/drafts.py)."""

    type: str = Field(max_length=32, pattern=NO_NUL,
                      description="replace_geometry, reshape, split, merge, move_buildings, move_compounds, "
                                  "create, retire, rename")
    key: str | None = Field(None, max_length=64, pattern=NO_NUL)
    keys: list[Annotated[str, Field(max_length=64, pattern=NO_NUL)]] | None = None
    to: str | None = Field(None, max_length=64, pattern=NO_NUL)
    into: str | None = Field(None, max_length=64, pattern=NO_NUL)
    parent: str | None = Field(None, max_length=64, pattern=NO_NUL)
    level: str | None = Field(None, max_length=64, pattern=NO_NUL)
    name: str | None = Field(None, max_length=100, pattern=NO_NUL)
    kind: str | None = Field(None, max_length=64, pattern=NO_NUL)
    dedicated_type: str | None = Field(None, max_length=64, pattern=NO_NUL)
    geometry: dict[str, Any] | None = None
    line: dict[str, Any] | None = None
    building_ids: list[RowId] | None = None
    compound_ids: list[RowId] | None = None
    carve: bool | None = None
    snap_m: float | None = Field(None, ge=0, le=50, description="reshape: metres within which the outline's vertices "
                                 "snap to the neighbours', the compound walls' and its own old vertices "
                                 "(default GRIDATLAS_PLAN_SNAP_M, 1 m)")
    community: str | None = Field(None, pattern=r"^\d{10,12}$",
                                  description="street plans: the community a new grid goes to (12 digits; "
                                              "10: a village); "
                                              "otherwise the community of the units named")


class PublishIn(BaseModel):
    """Publish options."""

    label: str | None = Field(None, max_length=200, pattern=NO_NUL)
    allow_errors: bool = Field(False, description="publish even when validation reports errors")


class SuggestIn(BaseModel):
    """Suggestion options."""

    seed: int = Field(0, ge=0, le=2**32 - 1,
                      description="random seed (0 … 2^32 − 1): the same seed, the same suggestion")
    apply: bool = Field(False, description="apply the suggestion to the plan as one operation")


# ------------------------------------------------------------------------------------------------ the plan

class CommunityRef(BaseModel):
    """A community a plan covers."""

    id: int
    code: str
    name: str


class OperationRecord(BaseModel):
    """One operation of a plan as stored: its sequence number, the revision it made, the operation as given."""

    seq: int
    revision: int
    op: dict[str, Any] = Field(description="the operation as given (see OperationIn)")
    actor: str | None
    at: dt.datetime
    undone_at: dt.datetime | None


class UnitProperties(BaseModel):
    """A grid or micro-grid of a plan: ``g<id>``/``m<id>`` for published units, ``gn<n>``/``mn<n>`` for new ones."""

    key: str
    level: Literal["grid", "micro_grid"]
    unit_id: int | None = Field(description="the published unit's id (null for a new one)")
    parent_key: str | None = Field(description="a micro-grid's grid")
    code: str | None
    name: str | None
    kind: str | None
    dedicated_type: str | None
    retired: bool
    community_id: int | None


class UnitFeature(BaseModel):
    """A unit of the plan as a GeoJSON Feature (id = its key)."""

    type: Literal["Feature"]
    id: str
    properties: UnitProperties
    geometry: GeoJSONGeometry | None


class UnitCollection(BaseModel):
    """The plan's live units as a GeoJSON FeatureCollection (EPSG:4326)."""

    type: Literal["FeatureCollection"]
    features: list[UnitFeature]


class RedrawPlanOut(BaseModel):
    """A plan: header, operations and units; ``etag`` is its revision, ``published_etag`` the boundaries' now."""

    id: int
    scope: Literal["community", "street"]
    scope_code: str
    scope_name: str
    community_id: int | None
    community_code: str | None
    community_name: str | None
    street_id: int | None
    street_code: str | None
    street_name: str | None
    label: str | None
    status: str = Field(description="draft, published or discarded")
    revision: int
    base_token: str = Field(description="the published boundaries' token when the plan was drafted")
    published_version_id: int | None
    created_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    communities: list[CommunityRef]
    operations: list[OperationRecord]
    etag: str
    published_etag: str
    units: UnitCollection


# ------------------------------------------------------------------------------------------------ validation

class ValidationProblem(BaseModel):
    """One problem of a plan; members beyond these depend on the rule (``keys``, ``area_m2``, ``households`` …)."""

    model_config = ConfigDict(extra="allow")

    rule: str = Field(description="overlap, gap, outside_community, micro_tiling, not_contiguous, households_band, "
                                  "building_cut, compound_split")
    severity: Literal["error", "warning"]
    message: str
    geometry: GeoJSONGeometry | None = Field(description="where, EPSG:4326")


class GridCount(BaseModel):
    """Households, population and buildings of a draft grid, and where it stands against the band."""

    key: str
    code: str | None
    name: str | None
    kind: str | None
    households: int
    population: int
    status: str = Field(description="below, ok or above the household band")
    buildings: int
    community: str | None = Field(None, description="street plans: the grid's community")


class ValidationRulesOut(BaseModel):
    """The validator's tolerances."""

    overlap_m2: float
    gap_area_m2: float
    gap_width_m: float
    outside_m2: float
    cut_share: float
    band_severity: str | None


class CommunityValidation(BaseModel):
    """A street plan: one community's share of the validation (``validated``: recomputed, not cached)."""

    community: str
    validated: bool
    errors: int
    warnings: int
    elapsed_ms: float
    epsg: int


class ValidationOut(BaseModel):
    """Live validation: every problem with its location, and households per grid."""

    plan_id: int
    revision: int
    ok: bool
    errors: int
    warnings: int
    problems: list[ValidationProblem]
    grids: list[GridCount]
    band: list[int] = Field(description="[min, max] households of a comprehensive grid")
    rules: ValidationRulesOut
    epsg: int | None
    elapsed_ms: float
    total_ms: float | None = None
    scope: Literal["street"] | None = None
    communities: list[CommunityValidation] | None = None
    validated_communities: int | None = None


# ------------------------------------------------------------------------------------------------ operations

class OperationResult(BaseModel):
    """What an operation did: the keys it made or kept, and per type a few more members."""

    type: str
    keys: list[str] | None = None
    community: str | None = Field(None, description="the community the operation worked in")
    communities: list[str] | None = Field(None, description="a street suggestion: the communities it redrew")
    buildings: list[int] | None = Field(None, description="move_buildings / move_compounds: the buildings moved")
    lost_area_left_as_gap: bool | None = Field(None, description="replace_geometry with carve: land left as a gap")
    gained_m2: float | None = Field(None, description="reshape: land taken from the neighbours (m²)")
    lost_m2: float | None = Field(None, description="reshape: land handed to the neighbours across its edges (m²)")


class OperationOut(BaseModel):
    """An operation applied: the plan's new revision (``etag``), what changed, the live validation."""

    revision: int
    seq: int
    result: OperationResult
    changed: list[str] = Field(description="keys of the units the operation changed")
    validation: ValidationOut
    etag: str


class UndoneOperation(BaseModel):
    """The operation undone."""

    seq: int
    op: dict[str, Any]


class UndoOut(BaseModel):
    """An operation undone: the plan's new revision, the units restored, the live validation."""

    revision: int
    undone: UndoneOperation
    restored: list[str]
    validation: ValidationOut
    etag: str


# ------------------------------------------------------------------------------------------------ diff

class UnitCreated(BaseModel):
    """A unit the plan creates."""

    key: str
    name: str | None
    parent_key: str | None
    community: str | None = None


class UnitRetired(BaseModel):
    """A published unit the plan retires."""

    key: str
    code: str | None
    name: str | None
    community: str | None = None


class UnitChanged(BaseModel):
    """A published unit whose boundary (or grid) the plan changes."""

    key: str
    code: str | None
    name: str | None
    changed_m2: float = Field(description="area gained plus lost, m²")
    parent_changed: bool
    renamed_from: str | None = Field(None, description="the published name, when the plan renames the unit")
    community: str | None = None


class LevelChanges(BaseModel):
    """Per level: units created, retired, changed, and how many stay as they are."""

    created: list[UnitCreated]
    retired: list[UnitRetired]
    changed: list[UnitChanged]
    unchanged: int


class BuildingMove(BaseModel):
    """A building that changes grid (from / to: plan keys), with its units, households and population."""

    model_config = ConfigDict(populate_by_name=True)

    building_id: int
    compound_id: int | None
    from_: str | None = Field(alias="from")
    to: str | None
    units: int
    households: int
    population: int
    community: str | None = None


class MoveTotal(BaseModel):
    """Buildings, units, households and population moving from one grid to another."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(alias="from")
    to: str | None
    buildings: int
    units: int
    households: int
    population: int
    community: str | None = None


class Totals(BaseModel):
    """What moves in all."""

    buildings: int
    units: int
    households: int
    population: int


class StaffAffected(BaseModel):
    """An open staff assignment the redraw touches, and why."""

    id: int
    person_id: int
    person: str
    role: str
    target_type: str
    target_id: int
    building_id: int | None
    reason: Literal["grid_retired", "grid_changed", "micro_grid_retired", "micro_grid_changed", "building_moved"]


class ClassificationChange(BaseModel):
    """A compound whose class against the grids changes."""

    compound_id: int
    name: str | None
    before: str | None
    after: str | None
    community: str | None = None


class ClassificationChanges(BaseModel):
    """Classification verdicts that change (``available`` false, with ``error``, when they could not be made)."""

    available: bool
    changed: list[ClassificationChange]
    error: str | None = None


class MovedFeature(BaseModel):
    """A moved building as a GeoJSON Feature."""

    type: Literal["Feature"]
    properties: BuildingMove
    geometry: GeoJSONGeometry


class MovedCollection(BaseModel):
    """The moved buildings as a GeoJSON FeatureCollection (EPSG:4326)."""

    type: Literal["FeatureCollection"]
    features: list[MovedFeature]


class DiffOut(BaseModel):
    """What publishing the plan would change against the boundaries in force now."""

    plan_id: int
    revision: int
    grid: LevelChanges
    micro_grid: LevelChanges
    buildings: list[BuildingMove]
    moves: list[MoveTotal]
    totals: Totals
    staff: list[StaffAffected]
    classification: ClassificationChanges
    scope: Literal["street"] | None = None
    communities: list[str] | None = None
    moved_geojson: MovedCollection | None = Field(None, description="with ?geometry=true")


# ------------------------------------------------------------------------------------------------ publish

class SkippedCode(BaseModel):
    """A new code passed over because it would collide by prefix with codes in force."""

    code: str
    collides_with: list[str]


class CodesWritten(BaseModel):
    """Per level: codes of the units created, ended and changed, and how many stayed as they were."""

    created: list[str]
    ended: list[str]
    changed: list[str]
    unchanged: int
    skipped: list[SkippedCode] = []


class CommunityWritten(BaseModel):
    """A street version: what one community got."""

    grids: CodesWritten
    micro_grids: CodesWritten


class ClassificationRefresh(BaseModel):
    """Whether the stored classification was recomputed for the new version (per level), or why not."""

    refreshed: dict[str, bool] | bool
    error: str | None = None


class ValidationCounts(BaseModel):
    """Validation errors and warnings the plan had when published."""

    errors: int
    warnings: int


class PublishOut(BaseModel):
    """The boundary version a publish wrote; ``etag`` (= ``token``) names the published boundaries now."""

    version_id: int
    valid_from: str
    grids: CodesWritten
    micro_grids: CodesWritten
    communities: dict[str, CommunityWritten] | None = Field(None, description="a street plan: per community")
    classification: ClassificationRefresh
    token: str
    validation: ValidationCounts
    etag: str | None = None


class CommunityRollback(PublishOut):
    """One version a rollback wrote: per community (community version), or the street's (street version)."""

    plan_id: int
    community: str | None = None
    street: str | None = None


class RollbackOut(BaseModel):
    """A rollback: the versions it wrote (``results``); a street version also names the street and communities."""

    rolled_back: int
    results: list[CommunityRollback]
    scope: Literal["street"] | None = None
    street: str | None = None
    communities: list[str] | None = None
    version_id: int | None = None
    plan_id: int | None = None
    token: str | None = None
    etag: str | None = None


# ------------------------------------------------------------------------------------------------ suggestion

class SplitCompound(BaseModel):
    """A compound with more households than the band's maximum: its buildings are placed one by one."""

    compound_id: int
    name: str | None
    households: int


class BandCheckOut(BaseModel):
    """Whether the atoms pack into k grids of the band (contiguity ignored)."""

    k: int
    status: Literal["infeasible", "feasible", "unknown"]
    reason: str | None


class ContiguousSearch(BaseModel):
    """One CP-SAT search for a contiguous partition into k grids."""

    k: int
    atoms: int
    edges: int
    status: str
    deterministic_time: float
    wall_s: float
    households_moved_atoms: int | None = None
    cut_edges: int | None = None


class RepairSearch(BaseModel):
    """The exact step after ReCom (CP-SAT): packing checks, contiguous searches and, when none fits, why."""

    k: int | None
    band_checks: list[BandCheckOut]
    contiguous: list[ContiguousSearch]
    reasons: list[str]
    band_infeasible: bool
    why: str | None = None


class SearchStats(BaseModel):
    """How the search went (``stopped_by``: steps, converged, or time when the wall-clock guard cut it)."""

    steps: int
    accepted: int
    households: dict[int, int] = Field(description="households per district label")
    stopped_by: Literal["steps", "converged", "time"]
    elapsed_s: float
    k: int
    repair: RepairSearch | None = None


class Applied(BaseModel):
    """The suggestion applied: the plan's new revision and the operation's sequence number."""

    revision: int
    seq: int


class CommunitySuggestion(BaseModel):
    """A suggestion for one community (or the plan's, for a community plan): numbers, explanation, search."""

    community: str | None = None
    method: str
    seed: int
    feasible: bool
    households: int | None = None
    band: list[int] | None = None
    grids_needed: list[int] | None = None
    atoms: int | None = None
    split_compounds: list[SplitCompound] | None = None
    explanation: str | None = None
    reasons: list[str] | None = None
    in_band: bool | None = None
    reproducible: bool | None = None
    grids: int | None = None
    households_per_grid: list[int] | None = None
    max_deviation_from_middle: float | None = None
    households_moved: int | None = None
    compounds_split: int | None = None
    fitting_compounds_split: int | None = None
    search: SearchStats | None = None
    band_reasons: list[str] | None = None
    band_infeasible: bool | None = None


class SuggestionOut(CommunitySuggestion):
    """Suggested comprehensive grids within the household band; a street plan answers per community."""

    plan_id: int
    scope: Literal["street"] | None = None
    all_feasible: bool | None = None
    per_community: list[CommunitySuggestion] | None = None
    applied: Applied | None = None
