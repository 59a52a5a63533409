"""`/maps/coverage`: the staff coverage map (人员覆盖图), in Chinese, for leaders and community offices.

The page is a shell drawing the vector tiles (`/tiles/…`); `/maps/coverage/data` is its small JSON (statuses per
role, gaps and whom to call, label points), so its weight does not grow with the district's geometry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from api.auth import CurrentUser
from api.basemaps import page_basemaps
from api.deps import SessionDep, SettingsDep
from api.problems import Problem, problem_responses
from api.schemas.leader_maps import CoveragePageData
from api.scopes import CoverageScope, CoverageScopeDep, effective_prefix
from geo.features import places
from geo.incidents.heat_cube import label_prefixes
from geo.staff import coverage as cov
from maps.coverage import ROLE_FILTERS, coverage_data
from maps.home import render_leader_map

router = APIRouter(tags=["maps"])

RoleQ = Annotated[str | None, Query(description="colour by one role: " + ", ".join(r for r in ROLE_FILTERS if r))]


def _query(q: CoverageScope, **extra: str | None) -> str:
    params = {"street": q.street, "community": q.community, "grid": q.grid, "at": q.at, **extra}
    kept = {k: v for k, v in params.items() if v}
    return "?" + urlencode(kept) if kept else ""


@router.get("/maps/coverage", response_class=HTMLResponse, responses=problem_responses(401, 403, 422))
def coverage_map(principal: CurrentUser, session: SessionDep, settings: SettingsDep, q: CoverageScopeDep,
                 role: RoleQ = None) -> HTMLResponse:
    """Grids and buildings coloured by coverage status (or by one role) from vector tiles, legend with counts,
    the gaps list (what is missing, whom to call) with search and zoom-to, PNG and CSV exports."""
    if role and role not in ROLE_FILTERS:
        raise Problem(422, f"role: unknown role filter {role!r}; expected one of "
                           f"{', '.join(r for r in ROLE_FILTERS if r)}", type="validation-error")
    prefix = effective_prefix(principal, q.street, q.community, q.grid)  # 403 here, not in the data call
    basemaps, csp = page_basemaps(session, settings)  # saved by an admin, else the settings' layers
    tiles = "?" + urlencode({"at": q.at}) if q.at else ""
    bounds = places.extent(session.connection(), "grid", prefix or None)
    return HTMLResponse(render_leader_map("coverage", "人员覆盖图", "/maps/coverage/data" + _query(q), tiles,
                                          basemaps, principal.username, bounds), headers=csp)


@router.get("/maps/coverage/data", response_model=CoveragePageData, responses=problem_responses(401, 403, 422))
def coverage_map_data(principal: CurrentUser, session: SessionDep, q: CoverageScopeDep) -> Any:
    """What the coverage page colours and lists (compact): per grid its status under each role filter, what is
    missing and whom to call (phones as the phone rule allows; with `grid` every staff member), label point and box;
    per building one status letter per role."""
    conn = session.connection()

    def build(report: cov.CoverageReport) -> bytes:
        prefix = report.prefix or None
        # phones only of whom the gaps list names (grid staff): the people of buildings and units are not sent
        people = cov.people_index(conn, replace(report, buildings=report.buildings.iloc[:0],
                                                units=report.units.iloc[:0]), principal.covers)
        around = label_prefixes(conn, prefix)  # the area's community and street, in any code scheme
        data = coverage_data(
            report, people, places.unit_places(conn, "grid", report.ts, prefix),
            places.unit_places(conn, "community", report.ts, around["community"]),
            places.unit_places(conn, "street", report.ts, around["street"]),
            places.scope_name(conn, prefix, report.ts), all_staff=bool(q.grid))
        # checked against the schema once, kept as the bytes sent (a district's ~10,000 grids)
        return CoveragePageData.model_validate(data).model_dump_json().encode()

    prefix = effective_prefix(principal, q.street, q.community, q.grid)
    # reused until what it reads changes; phones shown depend on the caller's jurisdiction
    return Response(cov.derived_view(conn, "coverage-map-grid" if q.grid else "coverage-map", prefix, q.at,
                                     None if principal.unrestricted else principal.jurisdiction_code, build),
                    media_type="application/json")
