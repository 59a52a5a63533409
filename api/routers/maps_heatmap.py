"""`/maps/heatmap`: the offline incident heatmap page (事件热力图) for leaders, in Chinese."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.auth import CurrentUser
from api.deps import SessionDep
from api.incident_params import HeatmapQueryDep
from api.problems import problem_responses
from geo.incidents import heatmap as hm
from maps.heatmap import heatmap_page

router = APIRouter(tags=["maps"])


@router.get("/maps/heatmap", response_class=HTMLResponse,
            responses={200: {"description": "the page (HTML)"}, **problem_responses(401, 403, 422)})
def heatmap_map(principal: CurrentUser, session: SessionDep, q: HeatmapQueryDep) -> HTMLResponse:
    """Hexagons per month with a time slider, incidents per 1,000 households by grid, Gi* hot and cold spots;
    aggregated on the server, limited to the caller's jurisdiction."""
    h = hm.build_heatmap(session.connection(), q, with_grids=True, with_hotspots=q.permutations > 0)
    filters = {"class": q.class_code, "street": q.street, "community": q.community, "grid": q.grid}
    return HTMLResponse(heatmap_page(hm.compact(h), filters))
