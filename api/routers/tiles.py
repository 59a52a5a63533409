"""Vector tiles (Mapbox Vector Tiles, cut by PostGIS ``ST_AsMVT``) of the district's layers, and their TileJSON.

`/tiles/{layer}/{z}/{x}/{y}.mvt` for streets, communities, grids, micro_grids, compounds, buildings and incidents
(binned into heat cells below zoom 15): only what the caller's jurisdiction holds, at the boundary version in force
now or at `at`. Tiles carry a weak ETag (layer, boundary version, jurisdiction, content) and
``Cache-Control: private``; ``If-None-Match`` answers 304; gzip when the client accepts it; an empty tile is 204.
"""

from __future__ import annotations

import gzip
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from api.auth import CurrentUser
from api.deps import ReadSessionDep, SettingsDep
from api.problems import problem_responses
from geo.access.users import Principal
from geo.features import tiles as ft
from geo.features.collections import COLLECTIONS
from geo.features.items import parse_when

router = APIRouter(tags=["tiles"])

MVT = "application/vnd.mapbox-vector-tile"
#: Tiles hold what one caller may see: browsers may keep them a minute, shared caches never.
CACHE_CONTROL = "private, max-age=60, must-revalidate"
#: Tiles this small gain nothing from gzip.
GZIP_FROM = 512

Layer = Annotated[str, Path(description=", ".join(COLLECTIONS))]
At = Annotated[str | None, Query(description="boundaries in force on this date (YYYY-MM-DD) or instant; default "
                                             "now")]
Datetime = Annotated[str | None, Query(description="as at, or an interval a/b (incidents reported in it)")]


class VectorLayer(BaseModel):
    id: str
    description: str
    minzoom: int
    maxzoom: int
    fields: dict[str, str]


class TileJson(BaseModel):
    tilejson: str = "3.0.0"
    name: str
    description: str
    tiles: list[str]
    minzoom: int
    maxzoom: int
    bounds: list[float]
    center: list[float]
    vector_layers: list[VectorLayer]
    attribution: str | None = None
    scheme: str = "xyz"


def _scope(principal: Principal) -> str | None:
    return None if principal.unrestricted else principal.jurisdiction_code


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    strip = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == strip for tag in if_none_match.split(","))


@router.get("/tiles/{layer}/{z}/{x}/{y}.mvt", response_class=Response,
            responses={200: {"content": {MVT: {}}, "description": "the tile"},
                       204: {"description": "nothing of this layer in the tile"},
                       304: {"description": "the tile the client holds (If-None-Match) is current"},
                       **problem_responses(400, 401, 404)})
def vector_tile(
    principal: CurrentUser, session: ReadSessionDep, settings: SettingsDep, layer: Layer,
    z: Annotated[int, Path(ge=0, le=ft.MAX_ZOOM)], x: Annotated[int, Path(ge=0)], y: Annotated[int, Path(ge=0)],
    at: At = None, datetime: Datetime = None,
    if_none_match: Annotated[str | None, Header()] = None,
    accept_encoding: Annotated[str | None, Header()] = None,
) -> Response:
    """One tile of a layer, limited to your jurisdiction."""
    tile = ft.tile(session.connection(), layer, z, x, y, parse_when(datetime, at, settings.timezone),
                   _scope(principal), settings.timezone)
    etag = f'W/"{tile.stamp}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL,
               "Vary": "Accept-Encoding, Authorization, Cookie, X-API-Key"}
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if not tile.data:
        return Response(status_code=204, headers=headers)
    body = tile.data
    if len(body) >= GZIP_FROM and "gzip" in (accept_encoding or "").lower():
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=MVT, headers=headers)


@router.get("/tiles/{layer}.json", response_model=TileJson, responses=problem_responses(400, 401, 404))
def tile_json(principal: CurrentUser, session: ReadSessionDep, settings: SettingsDep, request: Request, layer: Layer,
              at: At = None) -> Any:
    """TileJSON 3.0 of a layer: the tile URL (keeping `at`), zooms, the bounds of your jurisdiction, attributes."""
    info = ft.tilejson(session.connection(), layer, _scope(principal), settings.timezone)
    url = str(request.base_url).rstrip("/") + f"/tiles/{layer}/{{z}}/{{x}}/{{y}}.mvt"
    if at:
        parse_when(None, at, settings.timezone)  # a bad date is refused here, not by every tile
        url += f"?at={quote(at, safe=':-')}"
    return TileJson(tiles=[url], attribution="GridAtlas", **info)
