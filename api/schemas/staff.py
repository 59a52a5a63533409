"""Request and response bodies of the staff register (人员, 任职), the coverage report (人员覆盖) and steward
planning (管家分配)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from geo.staff.stewards import DEFAULT_SPLIT_SECONDS

# ------------------------------------------------------------------------------------------------ the register


class PersonIn(BaseModel):
    """A person on the staff register."""

    name: str = Field(min_length=1, max_length=100)
    phone: str | None = Field(None, max_length=32)
    phone_public: bool = Field(False, description="the phone is on the public notice board (公示牌)")
    party_member: bool = False
    home_building_id: int | None = Field(None, description="the building the person lives in (for planning)")


class PersonChange(BaseModel):
    """Fields to change (omitted fields stay as they are)."""

    name: str | None = Field(None, min_length=1, max_length=100)
    phone: str | None = Field(None, max_length=32)
    phone_public: bool | None = None
    party_member: bool | None = None
    home_building_id: int | None = None


class AssignmentIn(BaseModel):
    """A role over a target for a period: role and target type in English or Chinese (e.g. 管家, 单元)."""

    person_id: int
    role: str = Field(max_length=32, description="grid_chief, grid_worker_fulltime, …, steward (or 网格长 … 管家)")
    target_type: str = Field(max_length=32, description="grid, micro_grid, building or unit (网格/微网格/楼栋/单元)")
    target_id: int | None = Field(None, description="the grid, micro-grid, building or unit id")
    target_code: str | None = Field(None, max_length=19, description="a grid or micro-grid code, instead of the id")
    households: int | None = Field(None, gt=0, description="for a steward: the households of the target served")
    valid_from: dt.date | None = Field(None, description="first day in force (default today)")
    valid_to: dt.date | None = Field(None, description="first day no longer in force (default open)")


class AssignmentEnd(BaseModel):
    """When an assignment stops: from this day on it is no longer in force (default today)."""

    valid_to: dt.date | None = None


class AssignmentOut(BaseModel):
    """An assignment (任职): a person's role over a target for a half-open period, and the target's jurisdiction."""

    id: int
    person_id: int
    role: str
    role_label: str | None = Field(description="the role in Chinese (网格长 …)")
    target_type: Literal["grid", "micro_grid", "building", "unit"]
    target_id: int | None
    households: int | None = Field(description="for a steward: the households served (null: the whole target)")
    valid_from: dt.date
    valid_to: dt.date | None = Field(description="first day no longer in force (null: open)")
    code: str | None = Field(description="the jurisdiction code of the target (a building's grid, else community)")


class AssignmentListed(AssignmentOut):
    """An assignment in a list, with the person's name."""

    person_name: str | None


class AssignmentPage(BaseModel):
    """Assignments whose target lies in the caller's jurisdiction: one page and the total."""

    total: int
    items: list[AssignmentListed]


class PersonOut(BaseModel):
    """A person as the caller may see them: the phone only when public or in the caller's jurisdiction."""

    id: int
    name: str
    phone: str | None = Field(description="null when there is none or it is hidden from the caller")
    phone_hidden: bool = Field(description="the person has a phone the caller may not see")
    phone_public: bool
    party_member: bool
    home_building_id: int | None
    roles: list[str] = Field(description="roles in force on the day asked")
    codes: list[str] = Field(description="the units the person is tied to (home building, assignments in force)")


class PersonDetail(PersonOut):
    """A person with their assignments (in force on the day asked, and ended ones)."""

    assignments: list[AssignmentListed]


class PeoplePage(BaseModel):
    """People tied to the caller's jurisdiction: one page and the total."""

    total: int
    items: list[PersonOut]


class StaffImportOut(BaseModel):
    """What a staff sheet import wrote."""

    rows: int
    people_created: int
    people_matched: int
    assignments_created: int


# ------------------------------------------------------------------------------------------ the coverage report

Status = Literal["missing_role", "over_capacity", "under_capacity", "covered", "empty"]


class BoundaryVersionRef(BaseModel):
    """A boundary version: id, label, first instant in force (ISO 8601)."""

    id: int
    label: str | None
    valid_from: str


class Responsible(BaseModel):
    """A person responsible for a grid, building or unit, in one role."""

    id: int
    name: str | None
    role: str


class StewardServing(Responsible):
    """A steward serving a building or unit: the households served here and their load over all assignments."""

    households: int = Field(description="households served here")
    hh: int = Field(description="the same as `households`")
    load: int = Field(description="households the steward serves over all their assignments")


class GridCoverage(BaseModel):
    """A grid's staffing (1+3+N) and the buildings located in it."""

    id: int
    code: str
    name: str | None
    kind: str | None = Field(description="comprehensive (综合网格) or a dedicated grid (专属网格)")
    community_code: str | None
    status: Status
    grid_chief: int
    grid_worker_fulltime: int
    grid_worker_parttime: int
    volunteer: int
    seconded_cadre: int
    people: list[Responsible]
    buildings: int = Field(description="buildings with households located in the grid")
    households: int
    buildings_missing: int
    buildings_without_head: int
    units_without_head: int
    unserved: int = Field(description="households no steward serves")


class BuildingCoverage(BaseModel):
    """A building's head, its units' state, and who serves it."""

    id: int
    code: str | None
    name: str | None
    compound_id: int | None
    use: str | None
    grid_id: int | None
    grid_code: str | None
    community_id: int | None
    community_code: str | None
    scope_code: str | None = Field(description="the jurisdiction code: the grid's, else the community's")
    status: Status
    households: int
    units: int = Field(description="units with households")
    building_heads: int
    units_without_head: int
    stewarded: int
    unserved: int
    people: list[Responsible]
    building_stewards: list[StewardServing]


class UnitCoverage(BaseModel):
    """A unit's head and stewards."""

    id: int
    building_id: int
    building_code: str | None
    building_name: str | None
    scope_code: str | None
    number: int
    status: Status
    households: int
    unit_heads: int
    stewarded: int
    steward_claims: int = Field(description="households the stewards claim here (may exceed the unit's)")
    unserved: int
    over: bool
    under: bool
    people: list[Responsible]
    stewards: list[StewardServing]


class StewardLoad(BaseModel):
    """A steward serving something in scope, with their load over all their assignments."""

    id: int
    name: str | None
    households: int
    n_assignments: int
    status: Literal["over", "under", "ok"]


class CoverageTotals(BaseModel):
    """The headline figures of a coverage report."""

    grids: int
    comprehensive_grids: int
    grids_with_fulltime_worker: int
    grids_with_grid_chief: int
    buildings: int
    buildings_with_head: int
    units: int
    units_with_head: int
    households: int
    households_with_steward: int
    stewards: int
    stewards_over: int
    stewards_under: int
    buildings_outside_grids: int
    share_grids_with_fulltime_worker: float | None
    share_buildings_with_head: float | None
    share_units_with_head: float | None
    share_households_with_steward: float | None
    status_counts: dict[str, dict[str, int]] = Field(description="per level (grid, building, unit), per status")
    steward_households_min: int
    steward_households_max: int


class PersonCard(BaseModel):
    """A person named in a coverage report."""

    name: str
    phone: str | None = Field(description="only when on the public board or in the caller's jurisdiction")
    phone_public: bool
    party_member: bool


class CoverageReportOut(BaseModel):
    """Coverage of a scope on a day: every grid, building and unit with its status, steward loads and totals."""

    at: dt.date
    scope: str | None = Field(description="the code prefix covered (null: the whole district)")
    version: BoundaryVersionRef | None
    rules: dict[str, Any] = Field(description="the rules' numbers applied (GRIDATLAS_RULE_*)")
    totals: CoverageTotals
    stewards_over: list[StewardLoad]
    stewards_under: list[StewardLoad]
    grids: list[GridCoverage]
    buildings: list[BuildingCoverage]
    units: list[UnitCoverage] | None = Field(description="null when include_units=false")
    people: dict[str, PersonCard] = Field(description="everyone named above, by person id")


# --------------------------------------------------------------------------------------------- steward planning


class PlanIn(BaseModel):
    """What to plan: a street or community (default your jurisdiction), on a day, and what may move."""

    street: str | None = Field(None, pattern=r"^\d{9}$")
    community: str | None = Field(None, pattern=r"^\d{10,12}$", description="community (12 digits) or village (10)")
    at: dt.date | None = Field(None, description="the plan's day: moved assignments end and new ones start then")
    allow_move: bool = Field(False, description="existing steward assignments may be moved")
    release_over_capacity: bool = Field(True, description="even without allow_move, assignments of a steward over "
                                                          "the maximum (or of an over-claimed unit) may move")
    extra_stewards: list[int] = Field(default_factory=list, description="people to plan who hold no steward role yet")
    time_limit_s: float = Field(DEFAULT_SPLIT_SECONDS, ge=0, le=60,
                                description="seconds per community searching the fewest unit splits (distance is "
                                            "exact regardless)")
    details: bool = Field(True, description="list the assignments to create and end (up to 5,000)")


class CommunityPlanOut(BaseModel):
    """One community's steward plan: feasibility (or why not, in numbers), walking distance, unit splits."""

    community_id: int
    code: str
    name: str
    feasible: bool
    explanation: str | None
    households: int
    stewards: int
    kept_households: int
    assigned_households: int
    distance_m: float
    greedy_distance_m: float | None
    greedy_unserved: int
    greedy_stewards_under: int
    greedy_stewards_over: int
    pairs: int
    splits: int
    flow_pairs: int
    splits_optimal: bool
    splits_lower_bound: int
    solve_s: float
    released: int
    gap_to_greedy: float | None
    numbers: dict[str, Any] = Field(description="the figures behind the verdict (households, stewards, …)")


class PlanSummary(BaseModel):
    """A steward plan's totals over its communities."""

    at: str
    scope: str
    allow_move: bool
    communities: int
    feasible: int
    infeasible: int
    households: int
    stewards: int
    distance_m: float
    greedy_distance_m: float
    gap_to_greedy: float | None
    greedy_unserved: int
    greedy_stewards_under: int
    greedy_stewards_over: int
    splits: int
    flow_splits: int
    splits_lower_bound: int
    splits_proven_optimal: bool
    communities_splits_proven: int
    to_end: int
    to_create: int
    unchanged: int
    stewards_without_home: int
    solve_s: float
    load_s: float


class PlannedAssignment(BaseModel):
    """A steward assignment the plan creates."""

    person_id: int
    person_name: str | None
    unit_id: int
    households: int


class PlanWritten(BaseModel):
    """What applying the plan wrote."""

    ended: int
    created: int


class PlanOut(BaseModel):
    """A steward plan: a dry run unless applied; with `details`, the assignments to create and end."""

    summary: PlanSummary
    applied: bool
    communities: list[CommunityPlanOut]
    infeasible: list[str | None] = Field(description="why each infeasible community has no plan")
    to_create: list[PlannedAssignment] | None = None
    to_end: list[int] | None = Field(None, description="ids of the assignments to end")
    truncated: bool | None = Field(None, description="more than 5,000 to create or end were left out")
    written: PlanWritten | None = None
