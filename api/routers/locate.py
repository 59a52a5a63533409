"""Locate (定位): which grid, micro-grid, compound and building a place belongs to, and who is responsible there.

`GET /v1/locate` answers one point (public: phones only where on the public notice board, all phones for callers
whose jurisdiction covers the grid); `POST /v1/locate/batch` takes up to a million points streamed in as CSV or
GeoJSON (signed-in callers) and answers in input order; `GET /v1/locate/outlines` gives the unit outlines near a
point as GeoJSON for the mobile page. The index lives on `app.state.locate_index` (`api.locating.get_index`). A
publish, rollback or import in this process is patched into it as the writer's session commits, before that request
answers (`geo.locate.holder.apply_after_commit`); other processes patch it in when the database's notification
arrives (migration 0013). Lookups never wait for a rebuild (setting `locate_stale_wait_s`, 0): a large change is
rebuilt in the background while the previous index answers, and every answer names its grid's boundary version.
`at=` names grids and micro-grids as they were called then. Domain errors
(`NotInAnyGrid` 404, `CoordinateError` 422, `IndexUnavailable` 503, `BatchInputError` 422) are answered by the one
handler in `api.problems`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import deque
from collections.abc import Generator
from typing import Annotated, Any, cast
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import COOKIE_NAME, CurrentUser, authenticate_request
from api.deps import session_dep
from api.locating import GeoJSONResponse, IndexDep, at_param, get_index, index_at
from api.problems import Problem, problem_responses
from api.schemas.locate import FeatureCollection, LocateAnswer
from geo.access.users import Principal
from geo.locate.batch import BatchFormatter, BatchRows, PointChunk, locate_chunk, make_reader
from geo.locate.index import NotInAnyGrid
from geo.locate.points import checked_wgs84, coordsys_key
from geo.settings import get_settings

router = APIRouter(tags=["locate"])

#: The most points one batch request may carry.
BATCH_MAX_POINTS = 1_000_000
#: Body bytes gathered before handing them to the parser (fewer worker-thread hops).
FEED_BYTES = 1 << 20
#: Chunks located ahead of the one being rendered (the two overlap on two cores).
LOCATE_AHEAD = 1
#: Request media types a batch is read from, by input format (`geo.locate.batch.make_reader`).
BATCH_INPUT_MEDIA = {
    "text/csv": "csv", "application/csv": "csv", "text/plain": "csv", "text/tab-separated-values": "csv",
    "application/geo+json": "geojson", "application/json": "geojson", "application/geo+json-seq": "geojson",
    "application/x-ndjson": "geojson", "application/json-seq": "geojson",
}


def _authenticate_with_session(request: Request) -> Principal | None:
    """api.auth's authentication, in a session from the app's (possibly overridden) session dependency."""
    call = request.app.dependency_overrides.get(session_dep)
    # session_dep (or its override in tests) is a generator function: closing it ends the session
    sessions = cast(Generator[Session, None, None],
                    call() if call is not None else session_dep(request.app.state.engine))
    session = next(sessions)
    try:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        principal = authenticate_request(request, session, bearer, request.headers.get("x-api-key"))
        request.state.principal = principal
        return principal
    finally:
        sessions.close()


async def optional_caller(request: Request) -> Principal | None:
    """The caller when the request carries credentials (bearer, X-API-Key or the login cookie), else None.

    The same answer as `api.auth.OptionalUser`, but an anonymous request (the public mobile page, the common case)
    costs no database session and no worker-thread hop: locate must answer in a couple of milliseconds.
    """
    headers = request.headers
    if not (headers.get("authorization") or headers.get("x-api-key") or request.cookies.get(COOKIE_NAME)):
        return None
    return await run_in_threadpool(_authenticate_with_session, request)


def _staff_day(ts: dt.datetime | None) -> dt.date:
    tz = ZoneInfo(get_settings().timezone)
    return (ts or dt.datetime.now(dt.UTC)).astimezone(tz).date()


def _version(v: dict | None) -> dict | None:
    if not v:
        return None
    return {"id": v["id"], "label": v["label"], "valid_from": v["valid_from"].isoformat()}


def _json(body: dict, headers: dict | None = None, media_type: str = "application/json") -> Response:
    # orjson straight to bytes: the answer is already plain JSON types, so no model validation on the hot path
    return Response(orjson.dumps(body), headers=headers, media_type=media_type)


@router.get("/v1/locate", response_model=LocateAnswer, responses=problem_responses(404, 422, 503))
async def locate(
    request: Request,
    lon: Annotated[float, Query(description="longitude (in `coordsys`)")],
    lat: Annotated[float, Query(description="latitude (in `coordsys`)")],
    coordsys: Annotated[str, Query(description="wgs84 | cgcs2000 | gcj02 (AMap, Tencent) | bd09 (Baidu)")] = "wgs84",
    accuracy_m: Annotated[float | None, Query(ge=0, le=5000, description="nearest-grid radius, metres")] = None,
    at: Annotated[str | None, Query(description="YYYY-MM-DD or ISO datetime: boundaries in force then")] = None,
) -> Response:
    """Which street, community, grid, micro-grid, compound and building a point lies in, and who is responsible."""
    t0 = time.perf_counter()
    # Called here rather than declared as dependencies: the same answers, without the dependency machinery's
    # per-request cost on the hottest route (a lookup must cost well under a millisecond of server time).
    holder = await get_index(request)
    principal = await optional_caller(request)
    system = coordsys_key(coordsys)
    ts = at_param(at)
    index = await index_at(holder, ts)
    x, y = checked_wgs84(lon, lat, system, index.bounds)
    accuracy = get_settings().rules.locate_accuracy_m if accuracy_m is None else accuracy_m
    found = index.locate(x, y, accuracy)
    point = {"input": {"lon": lon, "lat": lat, "coordsys": system}, "lon": round(x, 8), "lat": round(y, 8)}
    if found["grid"] is None:
        raise NotInAnyGrid.for_answer(found, accuracy, version=_version(holder.version_at(ts)), **point)
    # the answering grid's own version (a grid not redrawn since an older version keeps that one)
    version = _version(index.version_of(found["grid"]) or holder.version_at(ts))
    if holder.staff_loaded:
        directory = holder.staff_directory()
    else:
        directory = await run_in_threadpool(holder.staff_directory)
    grid_code = found["grid"]["code"]
    show_all = principal is not None and principal.covers(grid_code)
    targets = [("grid", found["grid"]["id"]),
               ("micro_grid", found["micro_grid"]["id"] if found["micro_grid"] else None),
               ("building", found["building"]["id"] if found["building"] else None)]
    found["staff"] = directory.staff(targets, _staff_day(ts), show_all)
    found["phones"] = "all" if show_all else "public"
    body = {**point, **found, "version": version, "at": ts.isoformat() if ts else None}
    elapsed = (time.perf_counter() - t0) * 1000
    return _json(body, headers={"Server-Timing": f"locate;dur={elapsed:.3f}"})


@router.get("/v1/locate/outlines", response_model=FeatureCollection, response_class=GeoJSONResponse,
            responses=problem_responses(422, 503))
async def locate_outlines(
    holder: IndexDep,
    lon: Annotated[float, Query()],
    lat: Annotated[float, Query()],
    coordsys: Annotated[str, Query()] = "wgs84",
    radius_m: Annotated[float, Query(gt=0, le=3000, description="half-width of the square searched, metres")] = 400,
    at: Annotated[str | None, Query()] = None,
) -> Response:
    """Outlines (GeoJSON, WGS-84) of the grids, micro-grids, compounds and buildings near a point (public)."""
    system = coordsys_key(coordsys)
    ts = at_param(at)
    index = await index_at(holder, ts)
    x, y = checked_wgs84(lon, lat, system, index.bounds)
    features = await run_in_threadpool(index.outlines, x, y, radius_m)
    return _json({"type": "FeatureCollection", "features": features}, media_type=GeoJSONResponse.media_type)


class LocatedRows(StreamingResponse):
    """The answers of a batch, streamed in input order: CSV (or JSON lines, declared beside it)."""

    media_type = "text/csv"


#: The batch's request body as OpenAPI describes it (the route reads the raw stream, so FastAPI cannot infer it).
_BATCH_BODY: dict[str, Any] = {
    "required": True,
    "description": "points as CSV (a header naming lon and lat, optionally id) or GeoJSON (a FeatureCollection of "
                   "Points, or Features one per line)",
    "content": {"text/csv": {"schema": {"type": "string"}},
                "application/geo+json": {"schema": {"type": "object"}}},
}


@router.post(
    "/v1/locate/batch", response_class=LocatedRows, openapi_extra={"requestBody": _BATCH_BODY},
    responses={200: {"description": "one line per input row, in input order",
                     "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
               **problem_responses(401, 413, 415, 422, 503)})
async def locate_batch(
    request: Request,
    holder: IndexDep,
    principal: CurrentUser,
    coordsys: Annotated[str, Query()] = "wgs84",
    accuracy_m: Annotated[float | None, Query(ge=0, le=5000)] = None,
    at: Annotated[str | None, Query()] = None,
    format: Annotated[str | None, Query(pattern="^(csv|jsonl)$", description="csv | jsonl (default: Accept)")] = None,
) -> StreamingResponse:
    """Locate up to 1,000,000 points streamed in as CSV (lon,lat[,id]) or GeoJSON; answers come back in input
    order as CSV or JSON lines. A bad row is answered with its row number and an error; the others go on."""
    system = coordsys_key(coordsys)
    ts = at_param(at)
    accept = request.headers.get("accept", "")
    fmt = format or ("jsonl" if ("json" in accept and "csv" not in accept) else "csv")
    content_type = request.headers.get("content-type", "")
    input_format = BATCH_INPUT_MEDIA.get(content_type.split(";")[0].strip().lower())
    if input_format is None:
        raise Problem(415, f"unsupported Content-Type {content_type!r}: send text/csv or application/geo+json",
                      type="unsupported-media-type", title="Unsupported Media Type")
    reader = make_reader(input_format, BATCH_MAX_POINTS)
    index = await index_at(holder, ts)
    directory = await run_in_threadpool(holder.staff_directory)
    accuracy = get_settings().rules.locate_accuracy_m if accuracy_m is None else accuracy_m
    formatter = await run_in_threadpool(
        lambda: BatchFormatter(index, fmt, version=holder.version_at(ts), staff=directory,
                               staff_day=_staff_day(ts), covers=principal.covers, accuracy_m=accuracy))
    stream = request.stream()
    rows = BatchRows(reader, formatter, BATCH_MAX_POINTS)

    # Read until the input's shape is known, so a body that cannot be read is refused with 422
    # (`geo.locate.batch.BatchInputError`), not mid-stream.
    try:
        while not rows.started:
            data = await stream.__anext__()
            await run_in_threadpool(rows.start, data)
    except StopAsyncIteration:
        await run_in_threadpool(rows.start, None)
        ended = True
    else:
        ended = False

    # The body is parsed as it arrives (a few bytes per point kept), and answers are sent once it has ended: an
    # HTTP/1.1 client sends its whole body before it reads the response, so writing answers while it is still
    # sending would fill both socket buffers and stall the exchange. Locating and rendering then run while the
    # answers stream out, so the client's reading overlaps the work, and no answer is held whole in memory.
    if not ended:
        pending = bytearray()
        async for data in stream:
            if rows.stopped:
                continue  # drain the rest of the upload
            pending += data
            if len(pending) >= FEED_BYTES:
                await run_in_threadpool(rows.take, bytes(pending))
                pending.clear()
        if not rows.stopped:
            if pending:
                await run_in_threadpool(rows.take, bytes(pending))
            await run_in_threadpool(rows.take, None)

    def start(item: PointChunk | bytes) -> asyncio.Future | bytes:
        if isinstance(item, bytes):
            return item
        return asyncio.ensure_future(run_in_threadpool(locate_chunk, index, item, system, accuracy))

    async def answers():
        # One chunk is located ahead (numpy and GEOS release the GIL) while the previous one is rendered.
        window: deque[asyncio.Future | bytes] = deque()
        items = rows.items
        try:
            yield formatter.header().encode()
            while items or window:
                while items and len(window) < LOCATE_AHEAD + 1:
                    window.append(start(items.popleft()))
                head = window.popleft()
                if isinstance(head, bytes):
                    yield head
                    continue
                located = await head
                yield await run_in_threadpool(formatter.render, *located)
        finally:
            for task in window:
                if not isinstance(task, bytes):
                    task.cancel()

    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(answers(), media_type=media, headers={"X-Locate-Points": str(rows.done)})
