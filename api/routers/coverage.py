"""Staff coverage (人员覆盖) and steward planning (管家分配) over HTTP.

`GET /v1/coverage` reports every grid, building and unit of the caller's jurisdiction (narrowed by street,
community or grid) with its status and the totals; `GET /v1/coverage/gaps` exports the gaps as CSV or XLSX.
`POST /v1/coverage/plan` plans stewards community by community: a dry run unless `apply=true`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from api.auth import AuditDep, CurrentUser, Planner, ensure_covers
from api.deps import SessionDep
from api.problems import Problem
from geo.staff import coverage as cov
from geo.staff import stewards
from geo.access.users import Principal

router = APIRouter(tags=["coverage"])

Street = Annotated[str | None, Query(pattern=r"^\d{9}$", description="street code (9 digits)")]
CommunityQ = Annotated[str | None, Query(pattern=r"^\d{12}$", description="community code (12 digits)")]
GridQ = Annotated[str | None, Query(pattern=r"^\d{15}$", description="grid code (15 digits)")]
At = Annotated[str | None, Query(description="the day (YYYY-MM-DD) or instant; default today")]


def effective_prefix(principal: Principal, street: str | None = None, community: str | None = None,
                     grid: str | None = None) -> str:
    """The code prefix a read covers: the filter narrowed to the caller's jurisdiction (403 when disjoint)."""
    try:
        prefix = cov.scope_prefix(street, community, grid)
    except cov.CoverageError as exc:
        raise Problem(422, str(exc), type="validation-error", title="Invalid request")
    if principal.covers(None) or (prefix and principal.covers(prefix)):
        return prefix
    if principal.overlaps(prefix or None) or not prefix:
        return principal.jurisdiction_code  # the filter holds the jurisdiction: keep only the jurisdiction
    ensure_covers(principal, prefix, f"{prefix}")
    return prefix  # not reached


def _records(frame, drop: tuple[str, ...] = ()) -> list[dict]:
    out = []
    for r in frame.drop(columns=[c for c in drop if c in frame.columns]).to_dict("records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return out


def people_index(session, principal: Principal, report: cov.CoverageReport) -> dict[str, dict]:
    """Everyone named in the report, with the phone only where public or within the caller's jurisdiction."""
    codes: dict[int, set[str]] = {}

    def add(people, code):
        for p in people or []:
            codes.setdefault(int(p["id"]), set()).add(code)

    for r in report.grids.itertuples():
        add(r.people, r.code)
    for r in report.buildings.itertuples():
        add(r.people, r.scope_code)
        add(r.building_stewards, r.scope_code)
    for r in report.units.itertuples():
        add(r.people, r.scope_code)
        add(r.stewards, r.scope_code)
    if not codes:
        return {}
    rows = session.execute(text("SELECT id, name, phone, phone_public, party_member FROM people WHERE id = ANY(:i)"),
                           {"i": list(codes)}).mappings().all()
    out = {}
    for r in rows:
        visible = r["phone_public"] or any(principal.covers(c) for c in codes[r["id"]])
        out[str(r["id"])] = {"name": r["name"], "phone": r["phone"] if visible else None,
                             "phone_public": r["phone_public"], "party_member": r["party_member"]}
    return out


def _report(session, principal, street, community, grid, at, with_geometry=False) -> cov.CoverageReport:
    prefix = effective_prefix(principal, street, community, grid)
    try:
        return cov.coverage_report(session.connection(), prefix, at, with_geometry=with_geometry)
    except cov.CoverageError as exc:
        raise Problem(422, str(exc), type="validation-error", title="Invalid request")


@router.get("/v1/coverage")
def coverage(
    principal: CurrentUser, session: SessionDep, street: Street = None, community: CommunityQ = None,
    grid: GridQ = None, at: At = None,
    only_gaps: Annotated[bool, Query(description="leave out covered and empty grids, buildings and units")] = False,
    include_units: Annotated[bool, Query(description="list every unit (the largest part of the answer)")] = True,
) -> dict:
    """Status of every grid, building and unit (covered / missing_role / over_capacity / under_capacity) and totals."""
    r = _report(session, principal, street, community, grid, at)
    g, b, u = r.grids, r.buildings, r.units
    if only_gaps:
        g = g[~g["status"].isin(["covered", "empty"])]
        b = b[~b["status"].isin(["covered", "empty"])]
        u = u[~u["status"].isin(["covered", "empty"])]
    version = r.version and {"id": r.version["id"], "label": r.version["label"],
                             "valid_from": r.version["valid_from"].isoformat()}
    return {
        "at": r.at.isoformat(), "scope": r.prefix or None, "version": version, "rules": r.rules,
        "totals": r.totals,
        "stewards_over": _records(r.stewards[r.stewards["status"] == "over"]),
        "stewards_under": _records(r.stewards[r.stewards["status"] == "under"]),
        "grids": _records(g), "buildings": _records(b),
        "units": _records(u) if include_units else None,
        "people": people_index(session, principal, r),
    }


@router.get("/v1/coverage/gaps")
def coverage_gaps(
    principal: CurrentUser, session: SessionDep, street: Street = None, community: CommunityQ = None,
    grid: GridQ = None, at: At = None,
    format: Annotated[Literal["csv", "xlsx"], Query(description="csv (UTF-8, Excel-friendly) or xlsx")] = "xlsx",
) -> Response:
    """The gaps (缺岗、超负荷、不足额) as a sheet for the community office to act on."""
    r = _report(session, principal, street, community, grid, at)
    name = f"coverage-gaps-{r.prefix or 'district'}-{r.at.isoformat()}.{format}"
    if format == "csv":
        return Response(cov.gaps_csv(r), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return Response(cov.gaps_xlsx(r),
                    media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


class PlanIn(BaseModel):
    """What to plan: a street or community (default your jurisdiction), on a day, and what may move."""

    street: str | None = Field(None, pattern=r"^\d{9}$")
    community: str | None = Field(None, pattern=r"^\d{12}$")
    at: dt.date | None = Field(None, description="the plan's day: moved assignments end and new ones start then")
    allow_move: bool = Field(False, description="existing steward assignments may be moved")
    release_over_capacity: bool = Field(True, description="even without allow_move, assignments of a steward over "
                                                          "the maximum (or of an over-claimed unit) may move")
    extra_stewards: list[int] = Field(default_factory=list, description="people to plan who hold no steward role yet")
    time_limit_s: float = Field(stewards.DEFAULT_SPLIT_SECONDS, ge=0, le=60,
                                description="seconds per community searching the fewest unit splits (distance is "
                                            "exact regardless)")
    details: bool = Field(True, description="list the assignments to create and end (up to 5,000)")


def _plan_prefix(principal: Principal, body: PlanIn) -> str:
    try:
        prefix = cov.scope_prefix(body.street, body.community)
    except cov.CoverageError as exc:
        raise Problem(422, str(exc), type="validation-error", title="Invalid request")
    if principal.covers(None) or (prefix and principal.covers(prefix)):
        return prefix
    j = principal.jurisdiction_code
    if len(j) > 12:
        raise Problem(403, f"stewards are planned community by community; your jurisdiction ({j}) is one grid",
                      type="out-of-jurisdiction", your_jurisdiction=j)
    if not prefix or principal.overlaps(prefix):
        return j
    ensure_covers(principal, prefix, prefix)
    return prefix


@router.post("/v1/coverage/plan")
def plan(body: PlanIn, principal: Planner, session: SessionDep, audit: AuditDep,
         apply: Annotated[bool, Query(description="write the plan (default: dry run)")] = False) -> dict:
    """Assign stewards to households unit by unit: 5–15 households each, minimal walking distance (exact)."""
    prefix = _plan_prefix(principal, body)
    conn = session.connection()
    try:
        p = stewards.plan_stewards(conn, prefix, body.at, body.allow_move, body.release_over_capacity,
                                   body.extra_stewards, time_limit_s=body.time_limit_s, allowed=principal.covers)
    except stewards.PlanError as exc:
        raise Problem(422, str(exc), type="plan-invalid", title="Invalid plan request")
    summary = p.summary()
    out = {"summary": summary, "applied": False,
           "communities": [c.as_dict() for c in p.communities],
           "infeasible": [c.explanation for c in p.communities if not c.feasible]}
    if body.details:
        create = p.to_create.head(5000)
        names = {}
        if len(create):
            rows = session.execute(text("SELECT id, name FROM people WHERE id = ANY(:i)"),
                                   {"i": create["person_id"].astype(int).unique().tolist()}).all()
            names = dict(rows)
        out["to_create"] = [{"person_id": int(r.person_id), "person_name": names.get(int(r.person_id)),
                             "unit_id": int(r.unit_id), "households": int(r.households)}
                            for r in create.itertuples()]
        out["to_end"] = p.to_end[:5000]
        out["truncated"] = len(p.to_create) > 5000 or len(p.to_end) > 5000
    if apply:
        written = stewards.apply_plan(conn, p)
        out["applied"] = True
        out["written"] = {"ended": written["ended"], "created": written["created"]}
        for c in p.communities:
            if c.feasible:
                audit("coverage.plan.apply", "community", c.code, c.code,
                      after={**c.as_dict(), "plan_day": p.at.isoformat()})
        audit("coverage.plan.apply", "plan", prefix or "district", prefix or None,
              before={"ended_ids": written["ended_ids"][:5000]},
              after={"summary": summary, "created_ids": written["created_ids"][:5000]})
    else:
        audit("coverage.plan.dry_run", "plan", prefix or "district", prefix or None, after={"summary": summary})
    return json.loads(json.dumps(out, default=str))
