"""Staff coverage (人员覆盖) and steward planning (管家分配) over HTTP.

`GET /v1/coverage` reports every grid, building and unit of the caller's jurisdiction (narrowed by street,
community or grid) with its status and the totals; `GET /v1/coverage/gaps` exports the gaps as CSV or XLSX.
`POST /v1/coverage/plan` plans stewards community by community: a dry run unless `apply=true`. Refusals are the
domain's errors (`geo.staff.coverage.CoverageError`, `geo.staff.stewards.PlanError`), answered by `api.problems`.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.auth import AuditDep, CurrentUser, Planner, ensure_covers
from api.deps import SessionDep
from api.problems import Problem, problem_responses
from api.schemas.staff import CoverageReportOut, PlanIn, PlanOut
from api.scopes import CoverageScopeDep
from geo.access.users import Principal
from geo.staff import coverage as cov
from geo.staff import stewards

router = APIRouter(tags=["coverage"])

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _records(frame, drop: tuple[str, ...] = ()) -> list[dict]:
    out = []
    for r in frame.drop(columns=[c for c in drop if c in frame.columns]).to_dict("records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return out


@router.get("/v1/coverage", response_model=CoverageReportOut, responses=problem_responses(401, 403, 422))
def coverage(
    principal: CurrentUser, session: SessionDep, q: CoverageScopeDep,
    only_gaps: Annotated[bool, Query(description="leave out covered and empty grids, buildings and units")] = False,
    include_units: Annotated[bool, Query(description="list every unit (the largest part of the answer)")] = True,
) -> dict:
    """Status of every grid, building and unit (covered / missing_role / over_capacity / under_capacity) and totals."""
    r = q.report(session, principal)
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
        "people": cov.people_index(session.connection(), r, principal.covers),
    }


@router.get("/v1/coverage/gaps", response_class=Response,
            responses={200: {"description": "the gaps as a sheet (with a totals sheet in XLSX)",
                             "content": {"text/csv": {"schema": {"type": "string"}},
                                         XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
                       **problem_responses(401, 403, 422)})
def coverage_gaps(
    principal: CurrentUser, session: SessionDep, q: CoverageScopeDep,
    format: Annotated[Literal["csv", "xlsx"], Query(description="csv (UTF-8, Excel-friendly) or xlsx")] = "xlsx",
) -> Response:
    """The gaps (缺岗、超负荷、不足额) as a sheet for the community office to act on."""
    r = q.report(session, principal)
    name = f"coverage-gaps-{r.prefix or 'district'}-{r.at.isoformat()}.{format}"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        return Response(cov.gaps_csv(r), media_type="text/csv; charset=utf-8", headers=disposition)
    return Response(cov.gaps_xlsx(r), media_type=XLSX_MEDIA_TYPE, headers=disposition)


def _plan_prefix(principal: Principal, body: PlanIn) -> str:
    """The street or community planned: the body's, narrowed to the caller's jurisdiction (403 when disjoint)."""
    prefix = cov.scope_prefix(body.street, body.community)
    if principal.covers(None) or (prefix and principal.covers(prefix)):
        return prefix
    j = principal.jurisdiction_code or ""
    if len(j) > 12:
        raise Problem(403, f"stewards are planned community by community; your jurisdiction ({j}) is one grid",
                      type="out-of-jurisdiction", your_jurisdiction=j)
    if not prefix or principal.overlaps(prefix):
        return j
    ensure_covers(principal, prefix, prefix)
    return prefix  # not reached: ensure_covers refused


@router.post("/v1/coverage/plan", response_model=PlanOut, response_model_exclude_unset=True,
             responses=problem_responses(401, 403, 422))
def plan(body: PlanIn, principal: Planner, session: SessionDep, audit: AuditDep,
         apply: Annotated[bool, Query(description="write the plan (default: dry run)")] = False) -> dict:
    """Assign stewards to households unit by unit: 5–15 households each, minimal walking distance (exact)."""
    prefix = _plan_prefix(principal, body)
    conn = session.connection()
    p = stewards.plan_stewards(conn, prefix, body.at, body.allow_move, body.release_over_capacity,
                               body.extra_stewards, time_limit_s=body.time_limit_s, caller=principal)
    summary = p.summary()
    out = {"summary": summary, "applied": False,
           "communities": [c.as_dict() for c in p.communities],
           "infeasible": [c.explanation for c in p.communities if not c.feasible]}
    if body.details:
        out |= stewards.plan_changes(conn, p)
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
    # numpy and pandas figures as plain JSON values (dates and other objects as their text)
    return json.loads(json.dumps(out, default=str))
