"""`/maps/classification`: the offline classification map (小区分类图) for leaders, in Chinese."""

from __future__ import annotations

import numpy as np
import shapely
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from api.auth import CurrentUser
from api.deps import SessionDep
from api.problems import problem_responses
from api.scopes import ClassificationScope, ClassificationScopeDep
from geo.access.users import Principal
from geo.classify import classification as gc
from maps.classification import classification_page

router = APIRouter(tags=["maps"])


def _page(session: Session, principal: Principal, q: ClassificationScope) -> str:
    run, rows = q.read(session, principal, with_geometry=True)
    geoms = (shapely.from_wkb(np.array([bytes(g) for g in rows["geom"]], dtype=object)) if len(rows)
             else np.array([], dtype=object))
    # Outlines of the area asked for: the narrowest of filter and jurisdiction (codes are prefixes).
    prefixes = [p for p in (q.community, q.street, None if principal.unrestricted else principal.jurisdiction_code)
                if p]
    prefix = max(prefixes, key=len) if prefixes else None
    units, parents = gc.outlines(session.connection(), q.level, gc.parse_when(q.at), prefix)
    subtitle = " ".join(p for p in (q.street, q.community) if p)
    return classification_page(rows, geoms, units, q.level, run["version"]["label"], parents, subtitle)


@router.get("/maps/classification", response_class=HTMLResponse, responses=problem_responses(401, 403, 404, 422))
def classification_map(principal: CurrentUser, session: SessionDep, q: ClassificationScopeDep) -> HTMLResponse:
    """Compounds coloured by class (同等 / 大于 / 小于 / 跨界 / 未入格) over grid outlines; works offline."""
    return HTMLResponse(_page(session, principal, q))
