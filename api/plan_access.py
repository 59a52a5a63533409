"""What the plan routes (`api.routers.plans`, `api.routers.maps_plan`) share: who may read or change a plan, and
which revision an ``If-Match`` names (改划方案的访问与前提条件)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.auth import ensure_covers
from api.preconditions import if_match_token, required_if_match
from api.problems import Problem
from geo.access.users import Principal
from geo.plans.drafts import plan_info
from geo.plans.etags import revision_in_token


def plan_for(session: Session, plan_id: int, principal: Principal, write: bool) -> dict:
    """The plan's header (404 when unknown). Writing needs its community or street inside the caller's
    jurisdiction; reading, a jurisdiction overlapping it (a community planner reads the plan of their street)."""
    info = plan_info(session.connection(), plan_id)
    code = info["scope_code"]
    if write or not principal.overlaps(code):
        ensure_covers(principal, code, f"{info['scope']} {code}")
    return info


def if_match_revision(value: str | None, plan_id: int) -> int | None:
    """The plan revision an If-Match header names (None when absent or ``*``); 412 when it is not this plan's."""
    token = if_match_token(value)
    if token is None:
        return None
    revision = revision_in_token(token, plan_id)
    if revision is None:
        raise Problem(412, f"If-Match {value} is not an ETag of plan {plan_id}", type="stale-plan")
    return revision


def required_revision(value: str | None, plan_id: int, what: str) -> int:
    """The plan revision an edit's If-Match names: 428 without it (or with ``*``), 412 when it is weak or not an
    ETag of this plan."""
    token = required_if_match(value, what)
    revision = revision_in_token(token, plan_id)
    if revision is None:
        raise Problem(412, f"If-Match {value} is not an ETag of plan {plan_id}", type="stale-plan")
    return revision
