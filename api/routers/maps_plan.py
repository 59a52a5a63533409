"""`/maps/plan/{plan_id}`: the offline map of a redraw plan (改划方案图), of a community or a whole street."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser
from api.deps import SessionDep
from api.plan_access import plan_for
from api.problems import problem_responses

router = APIRouter(tags=["maps"])


@router.get("/maps/plan/{plan_id}", response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {}}, "description": "the plan's map page"},
                       **problem_responses(401, 403, 404)})
def plan_map(plan_id: int, principal: CurrentUser, session: SessionDep) -> HTMLResponse:
    """Published and draft boundaries overlaid, households against the band, moved buildings, problems."""
    from geo.plans.diff import diff
    from geo.plans.drafts import load_state, published_rows
    from geo.plans.validation import contexts_for, validate
    from maps.plan import plan_page

    info = plan_for(session, plan_id, principal, write=False)
    conn = session.connection()
    state = load_state(conn, plan_id)
    communities = None
    if state.is_street:
        # a street plan: outline each community, so grids are read against the community they must stay in
        ctxs = contexts_for(conn, list(state.communities))
        names = {c["code"]: c["name"] for c in info["communities"]}
        communities = [(code, names.get(code, code), ctxs[cid].community) for cid, code in state.communities.items()]
    page = plan_page(info, state, validate(conn, plan_id), diff(conn, plan_id, geometry=True),
                     published_rows(conn, list(state.communities)), communities)
    return HTMLResponse(page)
