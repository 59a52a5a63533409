"""`/maps/heatmap`: the offline incident heatmap page (事件热力图) for leaders, in Chinese."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser
from api.deps import SessionDep, SettingsDep
from api.problems import Problem
from api.routers.incidents import heatmap_query
from geo.incidents import heatmap as hm
from geo.incidents.closed_loop import IncidentError
from maps.heatmap import heatmap_page

router = APIRouter(tags=["maps"])


@router.get("/maps/heatmap", response_class=HTMLResponse)
def heatmap_map(
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    start: Annotated[str | None, Query(alias="from", description="date, YYYY-MM or datetime; default: 12 months")] = None,
    end: Annotated[str | None, Query(alias="to", description="a date includes that day")] = None,
    class_code: Annotated[str | None, Query(alias="class")] = None,
    street: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    community: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
    grid: Annotated[str | None, Query(pattern=r"^\d{15}$")] = None,
    cell_m: Annotated[float, Query(ge=hm.MIN_CELL_M, le=hm.MAX_CELL_M, description="hexagon edge, metres")] = 150.0,
    permutations: Annotated[int, Query(ge=0, le=9999, description="Gi* permutations")] = 999,
) -> HTMLResponse:
    """Hexagons per month with a time slider, incidents per 1,000 households by grid, Gi* hot and cold spots;
    aggregated on the server, limited to the caller's jurisdiction."""
    q = heatmap_query(principal, settings, start, end, class_code, street, community, grid, cell_m, permutations)
    try:
        h = hm.build_heatmap(session.connection(), q, with_grids=True, with_hotspots=permutations > 0)
    except IncidentError as exc:
        raise Problem(422, str(exc), type="validation-error", title="Invalid request") from None
    filters = {"class": class_code, "street": street, "community": community, "grid": grid}
    return HTMLResponse(heatmap_page(hm.compact(h), filters))
