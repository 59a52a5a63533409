"""Redraw plans over HTTP (改划方案): drafts, operations, undo, live validation, diff, publish, suggest, rollback.

A plan covers one community (``community_code``) or a whole street (``street_code``). Reads need a signed-in
caller whose jurisdiction overlaps the plan's community or street; writes need the planner or admin role with the
community or street inside the caller's jurisdiction (a community planner cannot draft or publish a street plan),
and are audited. A plan answers with an ``ETag``
(its revision); an edit or publish carrying a stale ``If-Match`` gets 412 problem+json listing what changed since.
Publishing also checks the community's published boundaries against the plan's base (and against ``If-Match``
when it names the published version's ETag), so two planners never overwrite each other.
"""

from __future__ import annotations

import time

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Response
from pydantic import BaseModel, Field, model_validator

from api.auth import AuditDep, CurrentUser, Planner, ensure_covers
from api.deps import SessionDep
from api.problems import Problem
from geo.plans import drafts as gp
from geo.access.users import Principal

router = APIRouter(tags=["plans"])


class PlanIn(BaseModel):
    """A new draft plan of one community's (or one street's) grids and micro-grids: give exactly one code."""

    community_code: str | None = Field(None, min_length=12, max_length=12, description="a community (12 digits)")
    street_code: str | None = Field(None, min_length=9, max_length=9, description="a whole street (9 digits)")
    label: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _one_scope(self):
        if (self.community_code is None) == (self.street_code is None):
            raise ValueError("give exactly one of community_code and street_code")
        return self


class OperationIn(BaseModel):
    """One operation: ``type`` and its arguments (see geo/plans.py)."""

    type: str = Field(description="replace_geometry, split, merge, move_buildings, move_compounds, create, retire")
    key: str | None = None
    keys: list[str] | None = None
    to: str | None = None
    into: str | None = None
    parent: str | None = None
    level: str | None = None
    name: str | None = Field(None, max_length=100)
    kind: str | None = None
    dedicated_type: str | None = None
    geometry: dict[str, Any] | None = None
    line: dict[str, Any] | None = None
    building_ids: list[int] | None = None
    compound_ids: list[int] | None = None
    carve: bool | None = None
    community: str | None = Field(None, description="street plans: the community a new grid goes to (12 digits); "
                                                    "otherwise the community of the units named")


class PublishIn(BaseModel):
    """Publish options."""

    label: str | None = Field(None, max_length=200)
    allow_errors: bool = Field(False, description="publish even when validation reports errors")


class SuggestIn(BaseModel):
    """Suggestion options."""

    seed: int = 0
    apply: bool = Field(False, description="apply the suggestion to the plan as one operation")


def _conn(session):
    return session.connection()


def _plan_for(session, plan_id: int, principal: Principal, write: bool) -> dict:
    try:
        info = gp.plan_info(_conn(session), plan_id)
    except gp.PlanNotFound as exc:
        raise Problem(404, str(exc), type="not-found") from None
    code = info["scope_code"]
    what = f"{info['scope']} {code}"
    if write:
        ensure_covers(principal, code, what)
    elif not principal.overlaps(code):
        ensure_covers(principal, code, what)
    return info


def _stale(exc: gp.StaleRevision, plan_id: int) -> Problem:
    return Problem(412, str(exc), type="stale-plan", current_revision=exc.current,
                   current_etag=gp.plan_etag(plan_id, exc.current) if exc.current >= 0 else None, changes=exc.changes)


def _revision(if_match: str | None, plan_id: int) -> int | None:
    try:
        return gp.parse_etag(if_match, plan_id)
    except gp.StaleRevision as exc:
        raise Problem(412, str(exc), type="stale-plan") from None


def _plan_body(session, plan_id: int) -> dict:
    conn = _conn(session)
    info = gp.plan_info(conn, plan_id)
    state = gp.load_state(conn, plan_id)
    info["etag"] = gp.plan_etag(plan_id, info["revision"])
    info["published_etag"] = gp.version_etag(gp.scope_token(conn, info))
    info["units"] = gp.plan_geojson(state)
    return info


@router.post("/v1/plans", status_code=201)
def create_plan(body: PlanIn, principal: Planner, session: SessionDep, audit: AuditDep, response: Response) -> dict:
    """Draft a plan from a community's (or a whole street's) grids and micro-grids in force now."""
    code = body.community_code or body.street_code
    scope = "community" if body.community_code else "street"
    ensure_covers(principal, code, f"{scope} {code}")
    try:
        plan_id = gp.create_plan(_conn(session), code, principal.actor, body.label)
    except gp.PlanError as exc:
        raise Problem(404 if f"no {scope}" in str(exc) else 422, str(exc), type="plan-error") from None
    audit("plan.create", "plan", plan_id, code, after={scope: code, "label": body.label})
    out = _plan_body(session, plan_id)
    response.headers["ETag"] = out["etag"]
    response.headers["Location"] = f"/v1/plans/{plan_id}"
    return out


@router.get("/v1/plans/{plan_id}")
def get_plan(plan_id: int, principal: CurrentUser, session: SessionDep, response: Response) -> dict:
    """The plan: header, operations and its grids and micro-grids as GeoJSON; ETag = its revision."""
    _plan_for(session, plan_id, principal, write=False)
    out = _plan_body(session, plan_id)
    response.headers["ETag"] = out["etag"]
    return out


@router.post("/v1/plans/{plan_id}/operations")
def operate(plan_id: int, body: OperationIn, principal: Planner, session: SessionDep, audit: AuditDep,
            response: Response, if_match: Annotated[str | None, Header()] = None) -> dict:
    """Apply one operation; answers the new revision (ETag) and the live validation."""
    from geo.plans.validation import validate

    info = _plan_for(session, plan_id, principal, write=True)
    op = body.model_dump(exclude_none=True)
    try:
        out = gp.apply_operation(_conn(session), plan_id, op, principal.actor, _revision(if_match, plan_id))
    except gp.StaleRevision as exc:
        raise _stale(exc, plan_id) from None
    except gp.PlanError as exc:
        raise Problem(422, str(exc), type="plan-operation") from None
    audit(f"plan.operation.{body.type}", "plan", plan_id, info["scope_code"],
          after={"seq": out["seq"], "revision": out["revision"], "op": {k: v for k, v in op.items()
                                                                         if k not in ("geometry", "line")},
                 "changed": out["changed"]})
    out["validation"] = validate(_conn(session), plan_id)
    out["etag"] = gp.plan_etag(plan_id, out["revision"])
    response.headers["ETag"] = out["etag"]
    return out


@router.post("/v1/plans/{plan_id}/undo")
def undo(plan_id: int, principal: Planner, session: SessionDep, audit: AuditDep, response: Response,
         if_match: Annotated[str | None, Header()] = None) -> dict:
    """Undo the latest operation not yet undone."""
    from geo.plans.validation import validate

    info = _plan_for(session, plan_id, principal, write=True)
    try:
        out = gp.undo(_conn(session), plan_id, principal.actor, _revision(if_match, plan_id))
    except gp.StaleRevision as exc:
        raise _stale(exc, plan_id) from None
    except gp.PlanError as exc:
        raise Problem(409, str(exc), type="nothing-to-undo") from None
    audit("plan.undo", "plan", plan_id, info["scope_code"], after=out)
    out["validation"] = validate(_conn(session), plan_id)
    out["etag"] = gp.plan_etag(plan_id, out["revision"])
    response.headers["ETag"] = out["etag"]
    return out


@router.get("/v1/plans/{plan_id}/validation")
def validation(plan_id: int, principal: CurrentUser, session: SessionDep, response: Response) -> dict:
    """Live validation: every problem with its location as GeoJSON, and households per grid."""
    from geo.plans.validation import validate

    _plan_for(session, plan_id, principal, write=False)
    out = validate(_conn(session), plan_id)
    response.headers["ETag"] = gp.plan_etag(plan_id, out["revision"])
    return out


@router.get("/v1/plans/{plan_id}/diff")
def plan_diff(plan_id: int, principal: CurrentUser, session: SessionDep, geometry: bool = False) -> dict:
    """What publishing would change against the boundaries in force now."""
    from geo.plans.diff import diff

    _plan_for(session, plan_id, principal, write=False)
    return diff(_conn(session), plan_id, geometry)


@router.post("/v1/plans/{plan_id}/publish")
def publish(plan_id: int, principal: Planner, session: SessionDep, audit: AuditDep, response: Response,
            background: BackgroundTasks, body: PublishIn | None = None,
            if_match: Annotated[str | None, Header()] = None) -> dict:
    """Publish the plan as a new boundary version (If-Match: the plan's or the published version's ETag)."""
    from geo.locate.lookup import notify_boundaries_changed

    before_commit = time.monotonic()
    from geo.plans.publish import StalePublished, publish as do_publish

    body = body or PublishIn()
    info = _plan_for(session, plan_id, principal, write=True)
    conn = _conn(session)
    plan_match = if_match if if_match and f"plan-{plan_id}-r" in if_match else None
    version_match = if_match if if_match and not plan_match else None
    try:
        wanted = _revision(plan_match, plan_id)
        if wanted is not None and wanted != info["revision"]:
            raise gp.StaleRevision(f"plan {plan_id} is at revision {info['revision']}, not {wanted}",
                                   info["revision"], [o for o in info["operations"] if o["revision"] > wanted])
        out = do_publish(conn, plan_id, principal.actor, version_match, body.label, body.allow_errors)
    except gp.StaleRevision as exc:
        raise _stale(exc, plan_id) from None
    except StalePublished as exc:
        raise Problem(412, str(exc), type="stale-version", current_etag=gp.version_etag(exc.current),
                      changes=exc.changes) from None
    except gp.PlanError as exc:
        raise Problem(409, str(exc), type="plan-not-publishable") from None
    audit("plan.publish", "boundary_version", out["version_id"], info["scope_code"],
          after={"plan_id": plan_id, **{k: out[k] for k in ("version_id", "valid_from", "grids", "micro_grids")}})
    background.add_task(notify_boundaries_changed, before_commit)
    out["etag"] = gp.version_etag(out["token"])
    response.headers["ETag"] = out["etag"]
    return out


@router.post("/v1/plans/{plan_id}/suggest")
def suggest(plan_id: int, principal: Planner, session: SessionDep, audit: AuditDep, response: Response,
            body: SuggestIn | None = None, if_match: Annotated[str | None, Header()] = None) -> dict:
    """Suggest comprehensive grids within the household band (see geo/suggest.py); optionally apply it."""
    from geo.plans import suggest as gs

    body = body or SuggestIn()
    info = _plan_for(session, plan_id, principal, write=True)
    conn = _conn(session)
    try:
        out = gs.suggest_for_plan(conn, plan_id, seed=body.seed)
        if body.apply and out["feasible"]:
            applied = gp.apply_operation(conn, plan_id, gs.as_operation(out), principal.actor,
                                         _revision(if_match, plan_id))
            out["applied"] = {"revision": applied["revision"], "seq": applied["seq"]}
            response.headers["ETag"] = gp.plan_etag(plan_id, applied["revision"])
    except gp.StaleRevision as exc:
        raise _stale(exc, plan_id) from None
    except gp.PlanError as exc:
        raise Problem(422, str(exc), type="plan-suggest") from None
    audit("plan.suggest", "plan", plan_id, info["scope_code"],
          after={"seed": body.seed, "feasible": out["feasible"], "applied": body.apply and out["feasible"]})
    out.pop("regions", None)
    for part in out.get("per_community", []):
        part.pop("regions", None)
    return out


def _stale_version(exc) -> Problem:
    """412 problem+json for a stale published version; a community rollback also names the ETag of every community
    the caller must send (``current_etags``; ``current_etag`` is then the whole If-Match value to send)."""
    if exc.etags:
        etags = {code: gp.version_etag(t) for code, t in exc.etags.items()}
        return Problem(412, str(exc), type="stale-version", current_etag=", ".join(etags.values()),
                       current_etags=etags, changes=exc.changes)
    return Problem(412, str(exc), type="stale-version", current_etag=gp.version_etag(exc.current),
                   changes=exc.changes)


@router.post("/v1/versions/{version_id}/rollback")
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
    from geo.locate.lookup import notify_boundaries_changed
    from geo.plans.publish import StalePublished, rollback as do_rollback, version_scope

    before_commit = time.monotonic()

    conn = _conn(session)
    scope = version_scope(conn, version_id)
    street = scope["street"] if scope else None
    if street is not None:
        ensure_covers(principal, street["code"], f"street {street['code']} (version {version_id} is a street version)")
    elif scope is not None:
        for code in scope["communities"].values():
            ensure_covers(principal, code, f"community {code}")
    try:
        out = do_rollback(conn, version_id, principal.actor, if_match)
    except StalePublished as exc:
        raise _stale_version(exc) from None
    except gp.PlanError as exc:
        raise Problem(404 if "no boundary version" in str(exc) else 409, str(exc), type="rollback") from None
    if out.get("scope") == "street":
        audit("version.rollback", "boundary_version", out["version_id"], out["street"],
              after={"rolled_back": version_id, "version_id": out["version_id"], "plan_id": out["plan_id"],
                     "street": out["street"], "communities": out["communities"],
                     "grids": out["results"][0]["grids"], "micro_grids": out["results"][0]["micro_grids"]})
        out["etag"] = gp.version_etag(out["token"])
        response.headers["ETag"] = out["etag"]
    else:
        for r in out["results"]:
            audit("version.rollback", "boundary_version", r["version_id"], r["community"],
                  after={"rolled_back": version_id, "version_id": r["version_id"], "grids": r["grids"]})
            response.headers["ETag"] = gp.version_etag(r["token"])
    background.add_task(notify_boundaries_changed, before_commit)
    return out
