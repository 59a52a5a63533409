"""`/m/report?lon=&lat=`: the phone page where a signed-in grid worker reports an incident at a point (上报事件).

Linked from the mobile locate page (`/m`). Small, self-contained (inline CSS and script, no map, no CDN) for weak
signal; it posts to `POST /v1/incidents` with the login cookie and keeps reports in the phone's storage when the
network is down, sending them when it returns.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser
from api.deps import SessionDep
from api.problems import problem_responses
from geo.incidents import closed_loop as inc
from geo.locate.points import coordsys_key
from maps.mobile import render_report_page

router = APIRouter(tags=["maps"])


@router.get("/m/report", response_class=HTMLResponse, responses=problem_responses(401, 422))
def mobile_report(
    principal: CurrentUser,
    session: SessionDep,
    lon: Annotated[float, Query(ge=-180, le=180)],
    lat: Annotated[float, Query(ge=-90, le=90)],
    coordsys: Annotated[str, Query(description="wgs84, cgcs2000, gcj02 or bd09")] = "wgs84",
) -> HTMLResponse:
    """The report form for a point, showing the grid, community and street it will be attributed to."""
    key = coordsys_key(coordsys)
    conn = session.connection()
    preview = inc.preview_attribution(conn, lon, lat, key)
    code = next((preview[k]["code"] for k in ("grid", "community", "street") if preview[k]), None)
    page = render_report_page(
        lon, lat, key, preview, in_jurisdiction=code is None or principal.covers(code),
        jurisdiction=principal.jurisdiction_code or "全区", classes=inc.incident_classes(conn),
        sources=list(inc.SOURCES.items())[:5], username=principal.username)
    return HTMLResponse(page)
