"""`/maps/coverage`: the offline staff coverage map (人员覆盖图), in Chinese, for leaders and community offices."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser
from api.deps import SessionDep
from api.problems import Problem, problem_responses
from api.scopes import CoverageScopeDep
from maps.coverage import ROLE_FILTERS, coverage_page

router = APIRouter(tags=["maps"])

RoleQ = Annotated[str | None, Query(description="colour by one role: " + ", ".join(r for r in ROLE_FILTERS if r))]


@router.get("/maps/coverage", response_class=HTMLResponse, responses=problem_responses(401, 403, 422))
def coverage_map(principal: CurrentUser, session: SessionDep, q: CoverageScopeDep, role: RoleQ = None) -> HTMLResponse:
    """Grids and buildings coloured by coverage status (or by one role), popups naming who is responsible."""
    if role and role not in ROLE_FILTERS:
        raise Problem(422, f"role: unknown role filter {role!r}; expected one of "
                           f"{', '.join(r for r in ROLE_FILTERS if r)}", type="validation-error")
    report = q.report(session, principal, with_geometry=True)
    return HTMLResponse(coverage_page(report, role or "", q.subtitle))
