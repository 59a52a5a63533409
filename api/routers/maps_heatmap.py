"""`/maps/heatmap`: the incident heatmap page (事件热力图) for leaders, in Chinese, on vector tiles and small JSON.

The page draws street, community and grid outlines from the vector tiles (`/tiles/…`); `/maps/heatmap/data` is its
data cube (counts per hexagon, month, class, state and grid), filtered in the browser; `/maps/heatmap/hotspots`
the Gi* hot and cold spots of the filtered counts; `/maps/heatmap/incidents` the incidents of a clicked hexagon or
grid. Every answer is limited to the caller's jurisdiction; old links (`?class=…&from=…&to=…`) keep working.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from api.auth import CurrentUser
from api.basemaps import page_basemaps
from api.deps import ReadSessionDep, SessionDep, SettingsDep
from api.incident_params import HeatmapQueryDep
from api.problems import problem_responses
from api.schemas.leader_maps import HeatHotspots, HeatIncidents, HeatmapPageData
from geo.features import places
from geo.features.tiles import version_in_force
from geo.incidents import heat_cube as hc
from geo.incidents.closed_loop import incident_classes
from geo.incidents.closed_loop import states as loop_states
from geo.incidents.heatmap import HeatmapQuery
from geo.staff.coverage_cache import cached_page
from geo.store.load import parse_at
from maps.heatmap import heatmap_data, render_heatmap_page

router = APIRouter(tags=["maps"])

StatusQ = Annotated[str | None, Query(max_length=16, pattern=r"^[a-z_]*$",
                                      description="open, closed or a closed-loop state code (default: every state)")]
MonthQ = Annotated[str | None, Query(pattern=r"^(\d{4}-\d{2})?$", description="the month the page opens on (YYYY-MM)")]
AtQ = Annotated[str | None, Query(max_length=40, description="boundaries in force on this date (YYYY-MM-DD); "
                                                             "default now")]


def _api_query(q: HeatmapQuery, *, raw_from: str | None, raw_to: str | None) -> dict[str, str]:
    """The parameters the page's own requests keep: units, period as given, cell size, permutations."""
    params = {"from": raw_from, "to": raw_to, "street": q.street, "community": q.community, "grid": q.grid,
              "cell_m": f"{q.cell_m:g}", "permutations": str(q.permutations)}
    return {k: v for k, v in params.items() if v}


@router.get("/maps/heatmap", response_class=HTMLResponse,
            responses={200: {"description": "the page (HTML)"}, **problem_responses(401, 403, 422)})
def heatmap_map(principal: CurrentUser, session: SessionDep, settings: SettingsDep, q: HeatmapQueryDep,
                status: StatusQ = None, month: MonthQ = None, at: AtQ = None,
                start: Annotated[str | None, Query(alias="from", include_in_schema=False)] = None,
                end: Annotated[str | None, Query(alias="to", include_in_schema=False)] = None) -> HTMLResponse:
    """Incidents as hexagons (or per grid) over grid outlines and names from vector tiles; month, class and status
    filters in the page; click-through to a cell's incidents; Gi* hot and cold spots with zoom-to; PNG and CSV."""
    hc.states_for(status)  # a bad status is refused here, not by the data call
    when = parse_at(at, settings.timezone)
    conn = session.connection()
    api = _api_query(q, raw_from=start, raw_to=end)
    data = api | {k: v for k, v in {"class": q.class_code, "status": status, "month": month, "at": at}.items() if v}
    bounds = places.extent(conn, "grid", q.area_code(), when)
    tiles = "?" + urlencode({"at": at}) if at else ""
    basemaps, csp = page_basemaps(session, settings)
    return HTMLResponse(render_heatmap_page("/maps/heatmap/data?" + urlencode(data), tiles, basemaps,
                                            principal.username, bounds, urlencode(api)), headers=csp)


@router.get("/maps/heatmap/data", response_model=HeatmapPageData, response_model_by_alias=True,
            responses=problem_responses(401, 403, 422))
def heatmap_map_data(principal: CurrentUser, session: ReadSessionDep, settings: SettingsDep, q: HeatmapQueryDep,
                     status: StatusQ = None, month: MonthQ = None, at: AtQ = None) -> Any:
    """What the heatmap page adds up and draws: incident counts per hexagon, month, class, state and grid (the
    page filters them without a request), the lattice placing the hexagons, class and state names, grid label
    points with households, community and street label points."""
    hc.states_for(status)
    when = parse_at(at, settings.timezone)
    conn = session.connection()
    prefix = q.area_code()
    classes = incident_classes(conn)
    states = [{"code": s.code, "name": s.name, "is_open": s.is_open} for s in loop_states().values()]
    filters = {"class": q.class_code, "status": status, "month": month, "cell_m": f"{q.cell_m:g}"}
    version = version_in_force(conn, when)
    fingerprint = hc.incidents_fingerprint(conn)

    def labels() -> dict:
        around = hc.label_prefixes(conn, prefix)  # the area's grid, community and street, in any code scheme
        return {"grids": places.unit_places(conn, "grid", when, around["grid"]),
                "households": hc.grid_households(conn, when, around["grid"]),
                "communities": places.unit_places(conn, "community", when, around["community"]),
                "streets": places.unit_places(conn, "street", when, around["street"]),
                "scope": places.scope_name(conn, prefix, when)}

    def build() -> bytes:
        # the labels (not the counts) are reused until a boundary, building or unit changes, per boundary version
        lab = cached_page(conn, ("heatmap-labels", prefix, at, version), labels, lambda v: len(v["grids"]))
        data = heatmap_data(
            hc.compact_cube(hc.heat_cube(conn, q)), classes, states, lab["grids"], lab["households"],
            lab["communities"], lab["streets"], lab["scope"], (when.date().isoformat() if when else "现行边界"),
            filters, q.permutations)
        # checked against the schema once, kept as the bytes sent
        return HeatmapPageData.model_validate(data).model_dump_json(by_alias=True).encode()

    # the answer is reused while no incident (its fingerprint), boundary (the change watch), class or state
    # changed, for the same query
    key = ("heatmap-data", fingerprint, *hc.cube_key(q), prefix, at, version, str(filters), q.permutations,
           repr(classes), repr(states))
    return Response(cached_page(conn, key, build, lambda b: len(b) // 400), media_type="application/json")


@router.get("/maps/heatmap/hotspots", response_model=HeatHotspots, response_model_by_alias=True,
            responses=problem_responses(401, 403, 422))
def heatmap_hotspots(principal: CurrentUser, session: SessionDep, q: HeatmapQueryDep,
                     status: StatusQ = None) -> Any:
    """Getis-Ord Gi* hot and cold spots (热点 / 冷点 with 置信度) of the incidents the filters select, over every
    hexagon of the study area: the significant cells, strongest first."""
    q.states = hc.states_for(status)
    return hc.hotspot_cells(session.connection(), q)


@router.get("/maps/heatmap/incidents", response_model=HeatIncidents,
            responses=problem_responses(401, 403, 422))
def heatmap_incidents(principal: CurrentUser, session: ReadSessionDep, q: HeatmapQueryDep, status: StatusQ = None,
                      cell_q: Annotated[int | None, Query(alias="q", ge=-1_000_000, le=1_000_000)] = None,
                      cell_r: Annotated[int | None, Query(alias="r", ge=-1_000_000, le=1_000_000)] = None) -> Any:
    """The incidents the filters select in one hexagon (`q`, `r` of `cell_m`) or one grid (`grid`), newest first,
    with a link to each case."""
    q.states = hc.states_for(status)
    cell = (cell_q, cell_r) if cell_q is not None and cell_r is not None else None
    out = hc.cell_incidents(session.connection(), q, cell)
    for item in out["items"]:
        item["href"] = f"/ogc/collections/incidents/items/{item['id']}?f=html"
    return out

