"""`/maps/classification`: the classification map (小区分类图) for leaders, in Chinese.

The page draws the vector tiles (`/tiles/…`); `/maps/classification/data` is its small JSON (class, measures and
the grids each compound overlaps, label points), so its weight does not grow with the district's geometry.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from api.auth import CurrentUser
from api.basemaps import page_basemaps
from api.deps import SessionDep, SettingsDep
from api.problems import problem_responses
from api.schemas.leader_maps import ClassificationPageData
from api.scopes import ClassificationScopeDep, check_filters
from geo.classify import classification as gc
from geo.features import places
from geo.incidents.heat_cube import label_prefixes
from geo.staff.coverage_cache import cached_page
from maps.classification import classification_data, overlap_units
from maps.home import render_leader_map

router = APIRouter(tags=["maps"])


@router.get("/maps/classification", response_class=HTMLResponse, responses=problem_responses(401, 403, 404, 422))
def classification_map(principal: CurrentUser, session: SessionDep, settings: SettingsDep,
                       q: ClassificationScopeDep) -> HTMLResponse:
    """Compounds coloured by class (同等 / 大于 / 小于 / 跨界 / 未入格) over grid outlines from vector tiles, legend
    with counts, the compound list (straddling ones naming both grids) with search and zoom-to, PNG/CSV exports."""
    check_filters(principal, q.street, q.community)
    params = {k: v for k, v in {"level": q.level, "street": q.street, "community": q.community, "at": q.at}.items()
              if v}
    basemaps, csp = page_basemaps(session, settings)  # saved by an admin, else the settings' layers
    tiles = "?" + urlencode({"at": q.at}) if q.at else ""
    prefixes = [p for p in (q.community, q.street, None if principal.unrestricted else principal.jurisdiction_code)
                if p]
    bounds = places.extent(session.connection(), "grid", max(prefixes, key=len) if prefixes else None)
    return HTMLResponse(render_leader_map("classification", "小区与网格对应关系分类图",
                                          "/maps/classification/data?" + urlencode(params), tiles, basemaps,
                                          principal.username, bounds), headers=csp)


@router.get("/maps/classification/data", response_model=ClassificationPageData,
            responses=problem_responses(401, 403, 404, 422))
def classification_map_data(principal: CurrentUser, session: SessionDep, q: ClassificationScopeDep) -> Any:
    """What the classification page colours and lists: per compound its class, measures, main unit and every unit
    it overlaps with the share (a straddling compound names both), label points and boxes."""
    check_filters(principal, q.street, q.community)
    conn = session.connection()
    run = gc.run_at(conn, q.level, q.at)  # brought up to date first: a new run is a new key below
    when = gc.parse_when(q.at)
    jurisdiction = None if principal.unrestricted else principal.jurisdiction_code
    prefixes = [p for p in (q.community, q.street, jurisdiction) if p]
    prefix = max(prefixes, key=len) if prefixes else None

    def build() -> bytes:
        rows = gc.read_results(conn, run["version"]["id"], q.level, jurisdiction=jurisdiction, street=q.street,
                               community=q.community)
        ids = [int(i) for i in rows["compound_id"]]
        where = places.compound_places(conn, ids, q.level, when, with_units=False)
        # the units each compound overlaps, as the classification stored them (not intersected again)
        units = overlap_units(gc.read_overlaps(conn, run["version"]["id"], q.level, ids),
                              dict(zip(ids, rows["area_m2"], strict=True)))
        for cid, place in where.items():
            place["units"] = units.get(cid, [])
        around = label_prefixes(conn, prefix)  # the area's community and street, in any code scheme
        data = classification_data(
            rows, where, places.unit_places(conn, q.level, when, prefix),
            places.unit_places(conn, "community", when, around["community"]),
            q.level, run["version"]["label"], places.scope_name(conn, prefix, when),
            places.unit_places(conn, "street", when, around["street"]))
        # checked against the schema once, kept as the bytes sent (a district's ~10,000 rows)
        return ClassificationPageData.model_validate(data).model_dump_json(by_alias=True).encode()

    # reused until a boundary or compound changes or the classification is run again
    key = ("classification-map", q.level, run["version"]["id"], str(run["computed_at"]), run["inputs_hash"],
           q.street, q.community, jurisdiction, q.at)
    return Response(cached_page(conn, key, build, lambda b: len(b) // 400), media_type="application/json")
