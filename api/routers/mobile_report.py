"""`/m/report?lon=&lat=`: the phone page where a signed-in grid worker reports an incident at a point (上报事件).

Linked from the mobile locate page (`/m`). Small, self-contained (inline CSS and script, no map, no CDN) for weak
signal; it posts to `POST /v1/incidents` with the login cookie and keeps reports in the phone's storage when the
network is down, sending them when it returns. Its pin map moves the point; `GET /v1/mobile/attribution` says
where the moved point's report would be attributed (the same preview the form shows when it opens).
`/m/cases/{id}` is a case on the phone: its photos before (上报) and after (处置) handling, its history, and adding
the after photos (处置照片). `GET /v1/mobile/reports` is the worker's own reports (我的上报), newest first, which /m
lists (and keeps for offline) beside the reports still queued on the phone.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser, scoped
from api.deps import SessionDep, SettingsDep
from api.problems import problem_responses
from api.schemas.mobile import AttributionPreview
from api.schemas.mobile_reports import MyReports
from geo.access.users import Principal
from geo.incidents import closed_loop as inc
from geo.incidents import photos
from geo.locate.points import coordsys_key
from geo.settings import get_settings
from maps.mobile import render_case_page, render_report_page

router = APIRouter(tags=["maps"])


@router.get("/m/report", response_class=HTMLResponse, responses=problem_responses(401, 422))
def mobile_report(
    principal: CurrentUser,
    session: SessionDep,
    lon: Annotated[float, Query(ge=-180, le=180)],
    lat: Annotated[float, Query(ge=-90, le=90)],
    coordsys: Annotated[str, Query(description="wgs84, cgcs2000, gcj02 or bd09")] = "wgs84",
    place: Annotated[str | None, Query(max_length=200, description="a searched compound or building (the address)")]
    = None,
) -> HTMLResponse:
    """The report form for a point, showing the grid, community and street it will be attributed to."""
    key = coordsys_key(coordsys)
    conn = session.connection()
    preview = inc.preview_attribution(conn, lon, lat, key)
    code = next((preview[k]["code"] for k in ("grid", "community", "street") if preview[k]), None)
    page = render_report_page(
        lon, lat, key, preview, in_jurisdiction=code is None or principal.covers(code),
        jurisdiction=principal.jurisdiction_code or "全区", classes=inc.incident_classes(conn),
        sources=list(inc.SOURCES.items())[:5], username=principal.username,
        jurisdiction_code=None if principal.unrestricted else principal.jurisdiction_code,
        place=(place or "").replace("\x00", "") or None, tile_url=get_settings().tile_url)
    return HTMLResponse(page)


@router.get("/v1/mobile/attribution", response_model=AttributionPreview, responses=problem_responses(401, 422))
def attribution_preview(
    principal: CurrentUser,
    session: SessionDep,
    lon: Annotated[float, Query(ge=-180, le=180)],
    lat: Annotated[float, Query(ge=-90, le=90)],
    coordsys: Annotated[str, Query(description="wgs84, cgcs2000, gcj02 or bd09")] = "wgs84",
) -> dict:
    """Where a report at this point would be attributed (street, community, grid in force now) and whether that
    lies in the caller's jurisdiction; nothing is written."""
    preview = inc.preview_attribution(session.connection(), lon, lat, coordsys_key(coordsys))
    code = next((preview[k]["code"] for k in ("grid", "community", "street") if preview[k]), None)
    return {**preview, "in_jurisdiction": code is not None and principal.covers(code)}


@router.get("/m/cases/{incident_id}", response_class=HTMLResponse, responses=problem_responses(401, 403, 404, 422))
def mobile_case(incident_id: int, principal: Annotated[Principal, Depends(scoped())], session: SessionDep,
                settings: SettingsDep) -> HTMLResponse:
    """A case on the phone (事件详情): photos before and after handling, the history, adding 处置照片."""
    conn = session.connection()
    row = inc.require_incident(conn, incident_id)
    kept = [dict(p, url=f"/v1/incidents/{incident_id}/photos/{p['id']}") for p in photos.list_photos(conn, incident_id)]
    page = render_case_page(row, inc.history(conn, incident_id), kept, max_photos=settings.photo_max_per_stage,
                            tz=settings.timezone, username=principal.username)
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


@router.get("/v1/mobile/reports", response_model=MyReports, responses=problem_responses(401, 422))
def my_reports(principal: CurrentUser, session: SessionDep,
               limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict:
    """The caller's own reports (我的上报), newest first: state, report time and photo counts."""
    conn = session.connection()
    rows, total = inc.list_incidents(conn, inc.IncidentFilter(created_by=principal.username), limit)
    # The newest filed first from the database; shown by report time (a report queued offline keeps its own).
    rows.sort(key=lambda r: (r["reported_at"], r["id"]), reverse=True)
    counts = photos.photo_counts(conn, [r["id"] for r in rows])
    items = [{**{k: r[k] for k in ("id", "state", "state_name", "class_code", "class_name", "reported_at", "address",
                                   "grid_name", "community_name")},
              "photos": counts[r["id"]]["report"], "handling_photos": counts[r["id"]]["handling"]} for r in rows]
    return {"items": items, "total": total, "limit": limit, "generated_at": dt.datetime.now(dt.UTC)}
