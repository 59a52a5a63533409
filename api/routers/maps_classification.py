"""`/maps/classification`: the offline classification map (小区分类图) for leaders, in Chinese."""

from __future__ import annotations

import numpy as np
import shapely
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser
from api.deps import SessionDep
from api.routers.classification import Scope, ScopeDep
from geo.store.load import parse_at, read_level
from maps.classification import classification_page

router = APIRouter(tags=["maps"])


def _units(conn, table: str, at, prefix: str | None):
    where, params = ("WHERE starts_with(code, :p)", {"p": prefix}) if prefix else ("", {})
    return read_level(conn, table, at, where, params)


def _page(session, principal, q: Scope) -> str:
    level, street, community = q.level, q.street, q.community
    run, rows = q.read(session, principal, with_geometry=True)
    geoms = shapely.from_wkb(np.array([bytes(g) for g in rows["geom"]], dtype=object)) if len(rows) else []
    # Outlines of the area asked for: the narrowest of filter and jurisdiction (codes are prefixes).
    prefixes = [p for p in (community, street, None if principal.unrestricted else principal.jurisdiction_code) if p]
    prefix = max(prefixes, key=len) if prefixes else None
    conn, when = session.connection(), parse_at(q.at)
    if level == "grid":
        units, parents = _units(conn, "grids", when, prefix), None
    else:
        units, parents = _units(conn, "micro_grids", when, prefix), _units(conn, "grids", when, prefix)
    subtitle = " ".join(p for p in (street, community) if p)
    return classification_page(rows, geoms, units, level, run["version"]["label"], parents, subtitle)


@router.get("/maps/classification", response_class=HTMLResponse)
def classification_map(principal: CurrentUser, session: SessionDep, q: ScopeDep) -> HTMLResponse:
    """Compounds coloured by class (同等 / 大于 / 小于 / 跨界 / 未入格) over grid outlines; works offline."""
    return HTMLResponse(_page(session, principal, q))
