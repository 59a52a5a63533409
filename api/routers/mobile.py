"""`/m`: the mobile locate page for grid workers (手机定位): which grid am I in, who is responsible, report here.

Also what makes it an installable, offline page: the service worker at `/m/sw.js` (served from /m so that its
scope covers `/m` and `/m/report`; assets, manifest and icons live in `maps/static/mobile/`) and
`GET /v1/mobile/jurisdiction`, the signed-in worker's grids simplified for the phone with their staff, which the
page caches and locates against when the network is gone; `GET /v1/mobile/places/search` finds a compound
(小区) or building (楼栋) of the jurisdiction by name for the report pin, and `GET /v1/mobile/places` is the
compact list the phone caches to search the same way offline. `/m` names its user in `X-GA-User` (URL-encoded),
which the service worker compares with its cached copy: a page kept for one worker is never used as another's.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from api.auth import CurrentUser, OptionalUser
from api.deps import SessionDep
from api.locating import IndexDep, index_at, jurisdiction_pack
from api.problems import problem_responses
from api.schemas.mobile import JurisdictionPack, PlaceSearch, PlacesPack
from geo.access.users import Principal
from geo.features import places
from geo.locate.points import coordsys_key
from geo.settings import get_settings
from maps.mobile import render_mobile_page, service_worker_source

router = APIRouter(tags=["maps"])


@router.get("/m", response_class=HTMLResponse, responses=problem_responses(401, 422, 503))
async def mobile_page(
    holder: IndexDep,
    principal: OptionalUser,
    lon: Annotated[float | None, Query(description="locate this point at once instead of asking the device")] = None,
    lat: Annotated[float | None, Query()] = None,
    coordsys: Annotated[str, Query(description="wgs84, cgcs2000, gcj02 or bd09")] = "wgs84",
) -> HTMLResponse:
    """The phone page: browser geolocation or a tapped point, the chain of units, staff with tap-to-call links."""
    index = await index_at(holder, None)
    start = {"lon": lon, "lat": lat, "coordsys": coordsys_key(coordsys)} if lon is not None and lat is not None \
        else None
    page = render_mobile_page(index.bounds, start, tile_url=get_settings().tile_url,
                              pack_url="/v1/mobile/jurisdiction" if principal is not None else None,
                              username=principal.username if principal is not None else None)
    # Whose page this is: the service worker compares it with its cached copy (a shared phone, see sw.js).
    user = quote(principal.username, safe="") if principal is not None else ""
    return HTMLResponse(page, headers={"Cache-Control": "no-cache", "X-GA-User": user})


@router.get("/m/sw.js", response_class=Response, include_in_schema=False)  # a script for browsers, not an API
def service_worker() -> Response:
    """The phone pages' service worker (offline shell, assets and jurisdiction pack; scope /m)."""
    return Response(service_worker_source(), media_type="text/javascript",
                    headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/m"})


@router.get("/v1/mobile/jurisdiction", response_model=JurisdictionPack, responses=problem_responses(401, 503))
async def mobile_jurisdiction(principal: CurrentUser, holder: IndexDep) -> dict:
    """The caller's grids simplified for the phone, with their staff and the boundary version: the phone caches
    it and answers locate from it while offline (the same answers as `GET /v1/locate` for that version)."""
    settings = get_settings()
    index = await index_at(holder, None)
    directory = holder.staff_directory() if holder.staff_loaded else await run_in_threadpool(holder.staff_directory)
    day = dt.datetime.now(ZoneInfo(settings.timezone)).date()
    return await run_in_threadpool(jurisdiction_pack, index, directory, principal, day, holder.version_at(None),
                                   settings.rules.locate_accuracy_m)


def _prefix(principal: Principal) -> str | None:
    return None if principal.unrestricted else principal.jurisdiction_code


@router.get("/v1/mobile/places/search", response_model=PlaceSearch, responses=problem_responses(401, 422, 503))
def search_places(
    principal: CurrentUser,
    session: SessionDep,
    q: Annotated[str, Query(min_length=1, max_length=100, description='e.g. "阳光小区 3栋", "阳光小区", "3号楼"')],
    limit: Annotated[int, Query(ge=1, le=50)] = places.SEARCH_LIMIT,
) -> dict:
    """Compounds and buildings of the caller's jurisdiction by name, best first, each with a point inside it."""
    return {"query": q, "items": places.search_places(session.connection(), q, _prefix(principal), None, limit)}


@router.get("/v1/mobile/places", response_model=PlacesPack, responses=problem_responses(401, 503))
def mobile_places(principal: CurrentUser, session: SessionDep) -> dict:
    """The jurisdiction's named compounds and buildings with a point each: the phone searches them offline."""
    return {"jurisdiction": principal.jurisdiction_code, "generated_at": dt.datetime.now(dt.UTC).isoformat(),
            **places.jurisdiction_places(session.connection(), _prefix(principal))}
