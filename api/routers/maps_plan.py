"""`/maps/plan/{plan_id}`: the offline map of a redraw plan (改划方案图)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser
from api.deps import SessionDep
from api.routers.plans import _plan_for

router = APIRouter(tags=["maps"])


@router.get("/maps/plan/{plan_id}", response_class=HTMLResponse)
def plan_map(plan_id: int, principal: CurrentUser, session: SessionDep) -> HTMLResponse:
    """Published and draft boundaries overlaid, households against the band, moved buildings, problems."""
    from geo.plan_diff import diff
    from geo.plan_validation import validate
    from geo.plans import _published_rows, load_state
    from maps.plan import plan_page

    info = _plan_for(session, plan_id, principal, write=False)
    conn = session.connection()
    state = load_state(conn, plan_id)
    page = plan_page(info, state, validate(conn, plan_id), diff(conn, plan_id, geometry=True),
                     _published_rows(conn, state.community_id))
    return HTMLResponse(page)
