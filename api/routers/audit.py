"""Reading the audit log: admins see everything, planners the entries inside their jurisdiction. No writes here."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Planner
from api.deps import SessionDep
from api.problems import problem_responses
from api.schemas.access import AuditEntryOut, AuditPage
from geo.access import audit

router = APIRouter(tags=["audit"])


@router.get("/v1/audit", response_model=AuditPage, responses=problem_responses(401, 403, 422))
def audit_log(
    principal: Planner,
    session: SessionDep,
    jurisdiction: Annotated[str | None,
                            Query(description="only entries whose jurisdiction code starts with this")] = None,
    since: Annotated[dt.datetime | None, Query()] = None,
    until: Annotated[dt.datetime | None, Query()] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100, description="exact name, or a prefix ending in '.'")] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    before_id: Annotated[int | None, Query(description="page on: the next_before_id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Audit entries newest first. Planners get only entries inside their jurisdiction (403 for another one)."""
    within = jurisdiction
    if principal.unrestricted:
        include_unscoped = jurisdiction is None
    else:
        if jurisdiction is not None:
            principal.ensure_covers(jurisdiction, f"jurisdiction {jurisdiction}")
        within = jurisdiction or principal.jurisdiction_code
        include_unscoped = False
    rows = audit.entries(session, within=within, include_unscoped=include_unscoped, since=since, until=until,
                         actor=actor, action=action, target_type=target_type, target_id=target_id,
                         before_id=before_id, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(items=[AuditEntryOut.model_validate(audit.entry_dict(r)) for r in rows],
                     next_before_id=rows[-1].id if more and rows else None)
