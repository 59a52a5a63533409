"""`/maps/plan/{plan_id}`: the offline map of a redraw plan (改划方案图), of a community or a whole street."""

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
    from geo.plans.diff import diff
    from geo.plans.validation import contexts_for, validate
    from geo.plans.drafts import _published_rows, load_state
    from maps.plan import plan_page

    info = _plan_for(session, plan_id, principal, write=False)
    conn = session.connection()
    state = load_state(conn, plan_id)
    communities = None
    if state.is_street:
        # a street plan: outline each community, so grids are read against the community they must stay in
        ctxs = contexts_for(conn, list(state.communities))
        names = {c["code"]: c["name"] for c in info["communities"]}
        communities = [(code, names.get(code, code), ctxs[cid].community) for cid, code in state.communities.items()]
    page = plan_page(info, state, validate(conn, plan_id), diff(conn, plan_id, geometry=True),
                     _published_rows(conn, list(state.communities)), communities)
    return HTMLResponse(page)
