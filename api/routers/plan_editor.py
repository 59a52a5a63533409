"""The planner's pages: `/plans` (drafts, versions with rollback, a new draft) and `/plans/{plan_id}` (the editor).

Both are HTML for a signed-in caller (the login cookie); every change a planner makes is sent by the page to the
plans API (`/v1/plans…`, `/v1/versions/{id}/rollback`), which checks roles, jurisdiction and ETags itself.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser
from api.deps import SessionDep
from api.problems import Problem, problem_responses

router = APIRouter(tags=["maps"])


def _user(principal) -> dict:
    return {"username": principal.username, "role": principal.role,
            "jurisdiction_code": principal.jurisdiction_code}


@router.get("/plans", response_class=HTMLResponse, responses=problem_responses(401))
def plans_page(principal: CurrentUser, session: SessionDep) -> HTMLResponse:
    """改划方案: the caller's drafts, others' drafts of the same area (who, when), published versions with
    rollback, and a form to draft a community or a whole street."""
    from geo.plans import listing
    from maps import plan_editor as pe

    conn = session.connection()
    overview = pe.plans_overview(listing.all_plans(conn), listing.boundary_versions_by_area(conn), listing.areas(conn),
                                 principal.username, principal.overlaps, principal.covers)
    return HTMLResponse(pe.render_plans_list(overview, _user(principal)), headers={"Cache-Control": "no-store"})


@router.get("/plans/{plan_id}", response_class=HTMLResponse, responses=problem_responses(401, 403, 404))
def plan_editor_page(plan_id: int, principal: CurrentUser, session: SessionDep) -> HTMLResponse:
    """The editor of one plan: the map, the tools, live figures, validation and diff (read-only when published
    or for a role that cannot edit)."""
    from geo.plans import listing
    from geo.settings import get_settings
    from maps import plan_editor as pe

    conn = session.connection()
    scope = listing.plan_scope(conn, plan_id)
    if scope is None:
        raise Problem(404, f"no plan {plan_id}", type="not-found")
    if not principal.overlaps(scope["scope_code"]):
        principal.ensure_covers(scope["scope_code"], f"{scope['scope']} {scope['scope_code']}")
    context = listing.editor_context(conn, [c["id"] for c in scope["communities"]])
    same_area = pe.drafts_of_same_area(listing.all_plans(conn), scope)
    settings = get_settings()
    page = pe.render_editor(scope, context, _user(principal), same_area,
                            (settings.rules.grid_households_min, settings.rules.grid_households_max),
                            settings.tile_url,
                            (settings.rules.steward_households_min, settings.rules.steward_households_max))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})
