"""Vector tiles (Mapbox Vector Tiles, cut by PostGIS ``ST_AsMVT``) of the district's layers, and their TileJSON.

`/tiles/{layer}/{z}/{x}/{y}.mvt` for streets, communities, grids, micro_grids, compounds, buildings and incidents
(binned into heat cells below zoom 15): only what the caller's jurisdiction holds, at the boundary version in force
now or at `at`. Tiles carry a weak ETag (layer, boundary version, jurisdiction, content) and
``Cache-Control: private``; ``If-None-Match`` answers 304; gzip when the client accepts it; an empty tile is 204.

A tile comes from the process's tile cache when it holds it (`geo.features.tile_cache`: no database round trip, no
worker thread), else it is cut in one worker thread. The caller's credentials, once checked against the database,
are believed for `PRINCIPAL_TTL_S` seconds (`tile_principal`; a token's signature and expiry are checked on every
tile), so a pan's dozens of tiles a second cost one user lookup.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import COOKIE_NAME, CurrentUser, authenticate_request, decode_token, get_principal
from api.auth import _api_key as api_key_scheme
from api.auth import _oauth2 as oauth2_scheme
from api.deps import REPLICA_LAG_STATE, ReadSessionDep, SessionDep, SettingsDep
from api.problems import problem_responses
from geo.access.users import Principal
from geo.features import tiles as ft
from geo.features.collections import COLLECTIONS, get_collection
from geo.features.items import parse_when
from geo.features.tile_cache import MAX_AGE_S, TileCache
from geo.settings import get_settings

router = APIRouter(tags=["tiles"])

MVT = "application/vnd.mapbox-vector-tile"
#: Tiles hold what one caller may see: browsers may keep them a minute, shared caches never.
CACHE_CONTROL = f"private, max-age={MAX_AGE_S:.0f}, must-revalidate"
_cache_lock = threading.Lock()

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


#: How long (s) a caller's credentials, once checked against the database, are believed again for tiles without
#: it: a pan asks for dozens of tiles a second, and browsers already keep each tile a minute (max-age) unchecked.
PRINCIPAL_TTL_S = 10.0
#: Credentials remembered per process at most (forgotten all at once past it).
PRINCIPAL_CACHE_SIZE = 10_000


def _credential(request: Request, bearer: str | None, api_key: str | None) -> tuple[str, str] | None:
    if api_key:
        return "key", api_key
    if bearer:
        return "bearer", bearer
    cookie = request.cookies.get(COOKIE_NAME)
    return ("cookie", cookie) if cookie else None


async def tile_principal(
    request: Request, session: SessionDep, bearer: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The caller, as `CurrentUser` finds them, but a credential checked against the database within the last
    `PRINCIPAL_TTL_S` seconds is believed without it (a token's signature and expiry are checked every time)."""
    credential = _credential(request, bearer, api_key)
    remembered: dict | None = getattr(request.app.state, "tile_principals", None)
    if remembered is None:
        remembered = request.app.state.tile_principals = {}
    found = remembered.get(credential) if credential else None
    if credential and found is not None and found[1] > time.monotonic():
        principal, claims = found[0], found[2]
        if claims is not None:
            decode_token(credential[1])  # an expired or forged token: 401 as always
            request.state.token_claims = claims
    else:
        principal = await run_in_threadpool(authenticate_request, request, session, bearer, api_key)
        if credential and principal is not None:
            if len(remembered) >= PRINCIPAL_CACHE_SIZE:
                remembered.clear()
            remembered[credential] = (principal, time.monotonic() + PRINCIPAL_TTL_S,
                                      getattr(request.state, "token_claims", None))
    request.state.principal = principal
    return get_principal(request, principal)


# the access rule `route_access` reads: any signed-in role, as CurrentUser
vars(tile_principal).update(access_roles=None, access_scoped=False, access_authenticated=True)
TileUser = Annotated[Principal, Depends(tile_principal)]


def tile_cache(request: Request) -> TileCache:
    """The app's tile cache, created on first use and kept on `app.state` (it listens on the primary, which
    notifies)."""
    state = request.app.state
    cache = getattr(state, "tile_cache", None)
    if cache is None:
        with _cache_lock:
            cache = getattr(state, "tile_cache", None)
            if cache is None:
                settings = get_settings()
                cache = TileCache.for_engine(state.engine, int(settings.tile_cache_mb * 2 ** 20), tz=settings.timezone)
                state.tile_cache = cache
                getattr(state, "shutdown_hooks", []).append(lambda app: cache.close())
    return cache


@router.get("/tiles/{layer}/{z}/{x}/{y}.mvt", response_class=Response,
            responses={200: {"content": {MVT: {}}, "description": "the tile"},
                       204: {"description": "nothing of this layer in the tile"},
                       304: {"description": "the tile the client holds (If-None-Match) is current"},
                       **problem_responses(400, 401, 404)})
async def vector_tile(
    request: Request, principal: TileUser, session: ReadSessionDep, settings: SettingsDep, layer: Layer,
    z: Annotated[int, Path(ge=0, le=ft.MAX_ZOOM)], x: Annotated[int, Path(ge=0)], y: Annotated[int, Path(ge=0)],
    at: At = None, datetime: Datetime = None,
    if_none_match: Annotated[str | None, Header()] = None,
    accept_encoding: Annotated[str | None, Header()] = None,
) -> Response:
    """One tile of a layer, limited to your jurisdiction."""
    when = parse_when(datetime, at, settings.timezone)
    get_collection(layer)
    ft.check_tile(z, x, y)
    cache = tile_cache(request)
    scope = _scope(principal)
    # a tile in the cache costs no database round trip and no thread; only a miss is cut, in a worker thread
    tile = cache.get(cache.key(layer, z, x, y, when, scope))
    if tile is None:
        standby = hasattr(request.state, REPLICA_LAG_STATE)  # read_session_dep chose the standby
        tile = await run_in_threadpool(
            lambda: cache.tile(session.connection(), layer, z, x, y, when, scope, settings.timezone, standby))
    etag = f'W/"{tile.stamp}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL,
               "Vary": "Accept-Encoding, Authorization, Cookie, X-API-Key"}
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if tile.empty:
        return Response(status_code=204, headers=headers)
    if tile.gzipped and "gzip" in (accept_encoding or "").lower():
        headers["Content-Encoding"] = "gzip"
        return Response(tile.body, media_type=MVT, headers=headers)
    return Response(tile.plain(), media_type=MVT, headers=headers)


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
