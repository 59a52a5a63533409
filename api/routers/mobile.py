"""`/m`: the mobile locate page for grid workers (手机定位): which grid am I in, who is responsible, report here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.locating import IndexDep, index_at
from api.problems import problem_responses
from geo.locate.points import coordsys_key
from geo.settings import get_settings
from maps.mobile import render_mobile_page

router = APIRouter(tags=["maps"])


@router.get("/m", response_class=HTMLResponse, responses=problem_responses(422, 503))
async def mobile_page(
    holder: IndexDep,
    lon: Annotated[float | None, Query(description="locate this point at once instead of asking the device")] = None,
    lat: Annotated[float | None, Query()] = None,
    coordsys: Annotated[str, Query(description="wgs84, cgcs2000, gcj02 or bd09")] = "wgs84",
) -> HTMLResponse:
    """The phone page: browser geolocation or a tapped point, the chain of units, staff with tap-to-call links."""
    index = await index_at(holder, None)
    start = {"lon": lon, "lat": lat, "coordsys": coordsys_key(coordsys)} if lon is not None and lat is not None \
        else None
    page = render_mobile_page(index.bounds, start, tile_url=get_settings().tile_url)
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
