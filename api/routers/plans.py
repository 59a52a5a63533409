"""Redraw plans over HTTP (改划方案): drafts, operations, undo, live validation, diff, publish, suggest, rollback.

A plan covers one community (``community_code``) or a whole street (``street_code``). Reads need a signed-in
caller whose jurisdiction overlaps the plan's community or street; writes need the planner or admin role with the
community or street inside the caller's jurisdiction (a community planner cannot draft or publish a street plan),
and are audited. A plan answers with an ``ETag``
(its revision); edits (operations, undo, applying a suggestion) and publishes must carry it in ``If-Match``: 428
problem+json without it, 412 with a stale or weak one (listing what changed since).
Publishing also checks the community's published boundaries against the plan's base (and against ``If-Match``
when it names the published version's ETag), so two planners never overwrite each other.

The domain's refusals (`geo.plans.errors`) answer as problem+json through the one handler of `api.problems`; this
module reads the ``If-Match`` header (`api.preconditions`) and hands the domain plain tokens and revisions.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Response
from sqlalchemy.orm import Session

from api.auth import AuditDep, CurrentUser, Planner, ensure_covers
from api.deps import SessionDep
from api.plan_access import if_match_revision, plan_for, required_revision
from api.preconditions import if_match_tokens, required_if_match
from api.problems import problem_responses
from api.schemas.plans import (
    DiffOut,
    OperationIn,
    OperationOut,
    PublishIn,
    PublishOut,
    RedrawPlanIn,
    RedrawPlanOut,
    RollbackOut,
    SuggestIn,
    SuggestionOut,
    UndoOut,
    ValidationOut,
)
from geo.plans import drafts as gp
from geo.plans.etags import names_plan, plan_etag, version_etag

router = APIRouter(tags=["plans"])

#: Every plan route needs a signed-in caller with the plan inside (writes) or overlapping (reads) their jurisdiction.
_ACCESS = (401, 403)


def _plan_body(session: Session, plan_id: int) -> dict:
    conn = session.connection()
    info = gp.plan_info(conn, plan_id)
    state = gp.load_state(conn, plan_id)
    info["etag"] = plan_etag(plan_id, info["revision"])
    info["published_etag"] = version_etag(gp.scope_token(conn, info))
    info["units"] = gp.plan_geojson(state)
    return info


@router.post("/v1/plans", status_code=201, response_model=RedrawPlanOut, response_model_exclude_unset=True,
             responses=problem_responses(*_ACCESS, 404, 422))
def create_plan(body: RedrawPlanIn, principal: Planner, session: SessionDep, audit: AuditDep,
                response: Response) -> dict:
    """Draft a plan from a community's (or a whole street's) grids and micro-grids in force now."""
    code = body.community_code or body.street_code or ""
    scope = "community" if body.community_code else "street"
    ensure_covers(principal, code, f"{scope} {code}")
    plan_id = gp.create_plan(session.connection(), code, principal.actor, body.label)
    audit("plan.create", "plan", plan_id, code, after={scope: code, "label": body.label})
    out = _plan_body(session, plan_id)
    response.headers["ETag"] = out["etag"]
    response.headers["Location"] = f"/v1/plans/{plan_id}"
    return out


@router.get("/v1/plans/{plan_id}", response_model=RedrawPlanOut, response_model_exclude_unset=True,
            responses=problem_responses(*_ACCESS, 404))
def get_plan(plan_id: int, principal: CurrentUser, session: SessionDep, response: Response) -> dict:
    """The plan: header, operations and its grids and micro-grids as GeoJSON; ETag = its revision."""
    plan_for(session, plan_id, principal, write=False)
    out = _plan_body(session, plan_id)
    response.headers["ETag"] = out["etag"]
    return out


@router.post("/v1/plans/{plan_id}/operations", response_model=OperationOut, response_model_exclude_unset=True,
             responses=problem_responses(*_ACCESS, 404, 412, 422, 428))
def operate(plan_id: int, body: OperationIn, principal: Planner, session: SessionDep, audit: AuditDep,
            response: Response, if_match: Annotated[str | None, Header()] = None) -> dict:
    """Apply one operation; answers the new revision (ETag) and the live validation. `If-Match` (the plan's ETag)
    is required: 428 without it, 412 when the plan moved on. Geometry that is invalid (a bow-tie, an unclosed
    ring, NaN), lies outside the community or exceeds the size limits is refused with 422 before any write."""
    from geo.plans.validation import validate

    info = plan_for(session, plan_id, principal, write=True)
    revision = required_revision(if_match, plan_id, "a plan operation")
    op = body.model_dump(exclude_none=True)
    out = gp.apply_operation(session.connection(), plan_id, op, principal.actor, revision)
    audit(f"plan.operation.{body.type}", "plan", plan_id, info["scope_code"],
          after={"seq": out["seq"], "revision": out["revision"], "op": {k: v for k, v in op.items()
                                                                         if k not in ("geometry", "line")},
                 "changed": out["changed"]})
    out["validation"] = validate(session.connection(), plan_id)
    out["etag"] = plan_etag(plan_id, out["revision"])
    response.headers["ETag"] = out["etag"]
    return out


@router.post("/v1/plans/{plan_id}/undo", response_model=UndoOut, response_model_exclude_unset=True,
             responses=problem_responses(*_ACCESS, 404, 409, 412, 428))
def undo(plan_id: int, principal: Planner, session: SessionDep, audit: AuditDep, response: Response,
         if_match: Annotated[str | None, Header()] = None) -> dict:
    """Undo the latest operation not yet undone (`If-Match`: the plan's ETag, required)."""
    from geo.plans.validation import validate

    info = plan_for(session, plan_id, principal, write=True)
    revision = required_revision(if_match, plan_id, "undo")
    out = gp.undo(session.connection(), plan_id, principal.actor, revision)
    audit("plan.undo", "plan", plan_id, info["scope_code"], after=out)
    out["validation"] = validate(session.connection(), plan_id)
    out["etag"] = plan_etag(plan_id, out["revision"])
    response.headers["ETag"] = out["etag"]
    return out


@router.get("/v1/plans/{plan_id}/validation", response_model=ValidationOut, response_model_exclude_unset=True,
            responses=problem_responses(*_ACCESS, 404))
def validation(plan_id: int, principal: CurrentUser, session: SessionDep, response: Response) -> dict:
    """Live validation: every problem with its location as GeoJSON, and households per grid."""
    from geo.plans.validation import validate

    plan_for(session, plan_id, principal, write=False)
    out = validate(session.connection(), plan_id)
    response.headers["ETag"] = plan_etag(plan_id, out["revision"])
    return out


@router.get("/v1/plans/{plan_id}/diff", response_model=DiffOut, response_model_exclude_unset=True,
            responses=problem_responses(*_ACCESS, 404))
def plan_diff(plan_id: int, principal: CurrentUser, session: SessionDep, geometry: bool = False) -> dict:
    """What publishing would change against the boundaries in force now."""
    from geo.plans.diff import diff

    plan_for(session, plan_id, principal, write=False)
    return diff(session.connection(), plan_id, geometry)


@router.post("/v1/plans/{plan_id}/publish", response_model=PublishOut, response_model_exclude_unset=True,
             responses=problem_responses(*_ACCESS, 404, 409, 412, 422, 428))
def publish(plan_id: int, principal: Planner, session: SessionDep, audit: AuditDep, response: Response,
            background: BackgroundTasks, body: PublishIn | None = None,
            if_match: Annotated[str | None, Header()] = None) -> dict:
    """Publish the plan as a new boundary version. `If-Match` is required: the plan's or the published
    boundaries' ETag (428 without it). `allow_errors` publishes over validation errors of the layout (gaps,
    overlaps, the household band …) but never geometry that is invalid or lies outside its community."""
    from geo.locate.holder import notify_boundaries_changed
    from geo.plans.publish import publish as do_publish

    before_commit = time.monotonic()
    body = body or PublishIn()
    info = plan_for(session, plan_id, principal, write=True)
    token = required_if_match(if_match, "publishing a plan")
    # one If-Match names either the plan's revision or the published boundaries the plan replaces
    for_plan = names_plan(token, plan_id)
    out = do_publish(session.connection(), plan_id, principal.actor, None if for_plan else token, body.label,
                     body.allow_errors, if_revision=if_match_revision(if_match, plan_id) if for_plan else None)
    audit("plan.publish", "boundary_version", out["version_id"], info["scope_code"],
          after={"plan_id": plan_id, **{k: out[k] for k in ("version_id", "valid_from", "grids", "micro_grids")}})
    background.add_task(notify_boundaries_changed, before_commit)
    out["etag"] = version_etag(out["token"])
    response.headers["ETag"] = out["etag"]
    return out


@router.post("/v1/plans/{plan_id}/suggest", response_model=SuggestionOut, response_model_exclude_unset=True,
             responses=problem_responses(*_ACCESS, 404, 412, 422, 428))
def suggest(plan_id: int, principal: Planner, session: SessionDep, audit: AuditDep, response: Response,
            body: SuggestIn | None = None, if_match: Annotated[str | None, Header()] = None) -> dict:
    """Suggest comprehensive grids within the household band (see geo/plans/suggest.py); optionally apply it
    (`apply`: an edit, so `If-Match` with the plan's ETag is required)."""
    from geo.plans import suggest as gs

    body = body or SuggestIn()
    info = plan_for(session, plan_id, principal, write=True)
    revision = required_revision(if_match, plan_id, "applying a suggestion") if body.apply else None
    conn = session.connection()
    out = gs.suggest_for_plan(conn, plan_id, seed=body.seed)
    if body.apply and out["feasible"]:
        applied = gs.apply_suggestion(conn, plan_id, out, principal.actor, revision)
        out["applied"] = {"revision": applied["revision"], "seq": applied["seq"]}
        response.headers["ETag"] = plan_etag(plan_id, applied["revision"])
    audit("plan.suggest", "plan", plan_id, info["scope_code"],
          after={"seed": body.seed, "feasible": out["feasible"], "applied": body.apply and out["feasible"]})
    out.pop("regions", None)
    for part in out.get("per_community", []):
        part.pop("regions", None)
    return out


@router.post("/v1/versions/{version_id}/rollback", response_model=RollbackOut, response_model_exclude_unset=True,
             responses=problem_responses(*_ACCESS, 404, 409, 412))
def rollback(version_id: int, principal: Planner, session: SessionDep, audit: AuditDep, response: Response,
             background: BackgroundTasks, if_match: Annotated[str | None, Header()] = None) -> dict:
    """Publish, as a new version, the boundaries in force before this version (回滚).

    A version a street plan published is rolled back as one street version (needs the street in your jurisdiction);
    any other version as one new version per community it changed (needs each of them in your jurisdiction).

    Rolling back never silently overwrites later work: when the boundaries it would restore were changed again by a
    later version, the rollback is refused with 412 (type ``stale-version``; ``changes`` lists the later versions,
    ``current_etag`` the ETag to send) and nothing is written. To roll back over the later changes on purpose,
    send ``If-Match`` with the current published ETag: the street's ETag for a street version; for a community
    version, the ETag of each community that changed since (a comma-separated If-Match list when the version, e.g.
    an import, changed several; ``current_etags`` names them per community). An If-Match that is not current is
    refused with 412 as well; ``If-Match: *`` counts as none. Rolling back the newest version needs no If-Match.
    """
    from geo.locate.holder import notify_boundaries_changed
    from geo.plans.publish import rollback as do_rollback
    from geo.plans.publish import version_scope

    before_commit = time.monotonic()
    conn = session.connection()
    scope = version_scope(conn, version_id)
    street = scope["street"] if scope else None
    if street is not None:
        ensure_covers(principal, street["code"], f"street {street['code']} (version {version_id} is a street version)")
    elif scope is not None:
        for code in scope["communities"].values():
            ensure_covers(principal, code, f"community {code}")
    out = do_rollback(conn, version_id, principal.actor, if_match_tokens(if_match))
    if out.get("scope") == "street":
        audit("version.rollback", "boundary_version", out["version_id"], out["street"],
              after={"rolled_back": version_id, "version_id": out["version_id"], "plan_id": out["plan_id"],
                     "street": out["street"], "communities": out["communities"],
                     "grids": out["results"][0]["grids"], "micro_grids": out["results"][0]["micro_grids"]})
        out["etag"] = version_etag(out["token"])
        response.headers["ETag"] = out["etag"]
    else:
        for r in out["results"]:
            audit("version.rollback", "boundary_version", r["version_id"], r["community"],
                  after={"rolled_back": version_id, "version_id": r["version_id"], "grids": r["grids"]})
            response.headers["ETag"] = version_etag(r["token"])
    background.add_task(notify_boundaries_changed, before_commit)
    return out
