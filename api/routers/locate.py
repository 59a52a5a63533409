"""Locate (定位): which grid, micro-grid, compound and building a place belongs to, and who is responsible there.

`GET /v1/locate` answers one point (public: phones only where on the public notice board, all phones for callers
whose jurisdiction covers the grid); `POST /v1/locate/batch` takes up to a million points streamed in as CSV or
GeoJSON (signed-in callers) and answers in input order; `GET /v1/locate/outlines` gives the unit outlines near a
point as GeoJSON for the mobile page. The index lives on `app.state.locate_index` (`get_index`). It learns of
committed boundary changes from the database's notifications (any writer, any process; migration 0013), and code
in this process that publishes calls `geo.locate.lookup.notify_boundaries_changed(since)` as well; until the rebuilt index
is swapped in, lookups wait for it rather than answer from the old boundaries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
import time
from collections import deque
from typing import Annotated
from zoneinfo import ZoneInfo

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import COOKIE_NAME, CurrentUser, authenticate_request
from api.deps import session_dep
from api.problems import Problem
from geo.spatial.coords import COORDSYS, to_wgs84
from geo.locate.batch import (BatchFormatter, BatchInputError, coordinate_problem, make_reader, range_errors,
                               truncate)
from geo.locate.lookup import IndexHolder, LocateIndex
from geo.settings import get_settings
from geo.store.load import parse_at
from geo.access.users import Principal

router = APIRouter(tags=["locate"])

#: The most points one batch request may carry.
BATCH_MAX_POINTS = 1_000_000
#: Body bytes gathered before handing them to the parser (fewer worker-thread hops).
FEED_BYTES = 1 << 20
#: Chunks located ahead of the one being rendered (the two overlap on two cores).
LOCATE_AHEAD = 1
_holder_lock = threading.Lock()


async def get_index(request: Request) -> IndexHolder:
    """The app's locate index holder, created on first use and kept on `app.state` (the index builds lazily)."""
    state = request.app.state
    holder = getattr(state, "locate_index", None)
    if holder is None:
        with _holder_lock:
            holder = getattr(state, "locate_index", None)
            if holder is None:
                holder = IndexHolder.for_engine(state.engine)
                state.locate_index = holder
                getattr(state, "shutdown_hooks", []).append(lambda app: holder.close())
    return holder


IndexDep = Annotated[IndexHolder, Depends(get_index)]


def _authenticate_with_session(request: Request) -> Principal | None:
    """api.auth's authentication, in a session from the app's (possibly overridden) session dependency."""
    call = request.app.dependency_overrides.get(session_dep)
    sessions = call() if call is not None else session_dep(request.app.state.engine)
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


OptionalCaller = Annotated[Principal | None, Depends(optional_caller)]


def _coordsys(value: str) -> str:
    key = value.strip().lower().replace("-", "").replace("_", "")
    if key not in COORDSYS:
        raise Problem(422, f"coordsys {value!r} is not one of {', '.join(sorted(COORDSYS))}",
                      type="validation-error", title="Invalid request")
    return key


def _at(value: str | None) -> dt.datetime | None:
    try:
        return parse_at(value, get_settings().timezone)
    except ValueError as exc:
        raise Problem(422, f"at: {exc}", type="validation-error", title="Invalid request")


async def _index(holder: IndexHolder, ts: dt.datetime | None) -> LocateIndex:
    """The index for `ts`, built in a worker thread when it is not ready (never blocks the event loop)."""
    if ts is None:
        index = holder.peek()
        if index is not None:
            return index
    try:
        return await run_in_threadpool(holder.index_for, ts)
    except Exception as exc:  # the database is down or not loaded: say so rather than 500
        raise Problem(503, f"the locate index could not be built: {exc}", type="locate-index-unavailable",
                      title="Service not ready") from exc


def _staff_day(ts: dt.datetime | None) -> dt.date:
    tz = ZoneInfo(get_settings().timezone)
    return (ts or dt.datetime.now(dt.timezone.utc)).astimezone(tz).date()


def _version(v: dict | None) -> dict | None:
    if not v:
        return None
    return {"id": v["id"], "label": v["label"], "valid_from": v["valid_from"].isoformat()}


def _json(body: dict, status: int = 200, headers: dict | None = None, media_type: str = "application/json"):
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=media_type)


def _refuse(problem: str, lon: float, lat: float) -> Problem:
    kind = "coordinates-swapped" if "swapped" in problem else "coordinates-out-of-range"
    finite = math.isfinite(lon) and math.isfinite(lat)
    return Problem(422, problem, type=kind, title="Invalid coordinates", lon=lon if finite else None,
                   lat=lat if finite else None)


def _to_wgs84(lon: float, lat: float, coordsys: str, bounds) -> tuple[float, float]:
    problem = coordinate_problem(lon, lat, bounds if coordsys in ("wgs84", "cgcs2000") else None)
    if problem:
        raise _refuse(problem, lon, lat)
    if coordsys in ("wgs84", "cgcs2000"):  # CGCS2000 and WGS-84 differ by centimetres: no transformation
        return lon, lat
    x, y = to_wgs84(lon, lat, coordsys)
    problem = coordinate_problem(x, y, bounds)
    if problem:
        raise _refuse(problem, lon, lat)
    return x, y


@router.get("/v1/locate")
async def locate(
    request: Request,
    lon: Annotated[float, Query(description="longitude (in `coordsys`)")],
    lat: Annotated[float, Query(description="latitude (in `coordsys`)")],
    coordsys: Annotated[str, Query(description="wgs84 | cgcs2000 | gcj02 (AMap, Tencent) | bd09 (Baidu)")] = "wgs84",
    accuracy_m: Annotated[float | None, Query(ge=0, le=5000, description="nearest-grid radius, metres")] = None,
    at: Annotated[str | None, Query(description="YYYY-MM-DD or ISO datetime: boundaries in force then")] = None,
):
    """Which street, community, grid, micro-grid, compound and building a point lies in, and who is responsible."""
    t0 = time.perf_counter()
    # Called here rather than declared as dependencies: the same answers, without the dependency machinery's
    # per-request cost on the hottest route (a lookup must cost well under a millisecond of server time).
    holder = await get_index(request)
    principal = await optional_caller(request)
    system = _coordsys(coordsys)
    ts = _at(at)
    index = await _index(holder, ts)
    x, y = _to_wgs84(lon, lat, system, index.bounds)
    accuracy = get_settings().rules.locate_accuracy_m if accuracy_m is None else accuracy_m
    found = index.locate(x, y, accuracy)
    version = _version(holder.version_at(ts))
    point = {"input": {"lon": lon, "lat": lat, "coordsys": system}, "lon": round(x, 8), "lat": round(y, 8)}
    if found["grid"] is None:
        nearest = found.get("nearest")
        if nearest:
            g = nearest["grid"]
            detail = (f"no grid within {accuracy:g} m of this point; the nearest grid is {g['name']} "
                      f"({g['code']}), {nearest['distance_m']:.1f} m away")
        else:
            detail = "no grid boundaries are in force at this date"
        raise Problem(404, detail, type="not-in-any-grid", title="Not in any grid", nearest_grid=nearest and
                      nearest["grid"], distance_m=nearest and nearest["distance_m"], accuracy_m=accuracy,
                      version=version, **point)
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


@router.get("/v1/locate/outlines")
async def locate_outlines(
    holder: IndexDep,
    lon: Annotated[float, Query()],
    lat: Annotated[float, Query()],
    coordsys: Annotated[str, Query()] = "wgs84",
    radius_m: Annotated[float, Query(gt=0, le=3000, description="half-width of the square searched, metres")] = 400,
    at: Annotated[str | None, Query()] = None,
):
    """Outlines (GeoJSON, WGS-84) of the grids, micro-grids, compounds and buildings near a point (public)."""
    system = _coordsys(coordsys)
    ts = _at(at)
    index = await _index(holder, ts)
    x, y = _to_wgs84(lon, lat, system, index.bounds)
    features = await run_in_threadpool(index.outlines, x, y, radius_m)
    return _json({"type": "FeatureCollection", "features": features}, media_type="application/geo+json")


@router.post("/v1/locate/batch")
async def locate_batch(
    request: Request,
    holder: IndexDep,
    principal: CurrentUser,
    coordsys: Annotated[str, Query()] = "wgs84",
    accuracy_m: Annotated[float | None, Query(ge=0, le=5000)] = None,
    at: Annotated[str | None, Query()] = None,
    format: Annotated[str | None, Query(pattern="^(csv|jsonl)$", description="csv | jsonl (default: Accept)")] = None,
):
    """Locate up to 1,000,000 points streamed in as CSV (lon,lat[,id]) or GeoJSON; answers come back in input
    order as CSV or JSON lines. A bad row is answered with its row number and an error; the others go on."""
    system = _coordsys(coordsys)
    ts = _at(at)
    accept = request.headers.get("accept", "")
    fmt = format or ("jsonl" if ("json" in accept and "csv" not in accept) else "csv")
    try:
        reader = make_reader(request.headers.get("content-type", ""), BATCH_MAX_POINTS)
    except BatchInputError as exc:
        raise Problem(415, str(exc), type="unsupported-media-type", title="Unsupported Media Type")
    index = await _index(holder, ts)
    directory = await run_in_threadpool(holder.staff_directory)
    accuracy = get_settings().rules.locate_accuracy_m if accuracy_m is None else accuracy_m
    formatter = await run_in_threadpool(
        lambda: BatchFormatter(index, fmt, version=holder.version_at(ts), staff=directory,
                               staff_day=_staff_day(ts), covers=principal.covers))
    stream = request.stream()
    state = {"done": 0, "stopped": False}
    # Rows parsed (PointChunk) and lines already final (bytes: an unreadable rest, the row limit), in input order.
    items: deque = deque()

    def keep(chunks) -> None:
        for chunk in chunks:
            if state["stopped"]:
                break
            room = BATCH_MAX_POINTS - state["done"]
            if len(chunk) > room:
                chunk = truncate(chunk, room)
                state["stopped"] = True
            if len(chunk):
                items.append(chunk)
                state["done"] += len(chunk)
            if state["stopped"]:
                items.append(formatter.limit_line(state["done"] + 1, BATCH_MAX_POINTS).encode())

    def take(data: bytes | None) -> None:
        try:
            chunks = reader.feed(data) if data is not None else reader.close()
        except BatchInputError as exc:
            items.append(formatter.error_line(reader.next_row, f"the rest of the input cannot be read: {exc}")
                         .encode())
            state["stopped"] = True
            return
        keep(chunks)

    # Read until the input's shape is known, so a body that cannot be read is refused with 422, not mid-stream.
    try:
        while not reader.started:
            data = await stream.__anext__()
            keep(await run_in_threadpool(reader.feed, data))
    except StopAsyncIteration:
        keep(await run_in_threadpool(reader.close))
        stream = None
    except BatchInputError as exc:
        raise Problem(422, str(exc), type="bad-batch-input", title="Unreadable batch input")

    # The body is parsed as it arrives (a few bytes per point kept), and answers are sent once it has ended: an
    # HTTP/1.1 client sends its whole body before it reads the response, so writing answers while it is still
    # sending would fill both socket buffers and stall the exchange. Locating and rendering then run while the
    # answers stream out, so the client's reading overlaps the work, and no answer is held whole in memory.
    if stream is not None:
        pending = bytearray()
        async for data in stream:
            if state["stopped"]:
                continue  # drain the rest of the upload
            pending += data
            if len(pending) >= FEED_BYTES:
                await run_in_threadpool(take, bytes(pending))
                pending.clear()
        if not state["stopped"]:
            if pending:
                await run_in_threadpool(take, bytes(pending))
            await run_in_threadpool(take, None)

    def start(item):
        if isinstance(item, bytes):
            return item
        return asyncio.ensure_future(run_in_threadpool(_locate, index, item, system, accuracy))

    async def answers():
        # One chunk is located ahead (numpy and GEOS release the GIL) while the previous one is rendered.
        window: deque = deque()
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
    return StreamingResponse(answers(), media_type=media, headers={"X-Locate-Points": str(state["done"])})


def _locate(index: LocateIndex, chunk, system: str, accuracy: float):
    """Convert, check and locate one chunk of rows: (chunk, LocateBatch or None, positions of the valid rows)."""
    lon, lat = chunk.lon, chunk.lat
    ok = np.isfinite(lon) & np.isfinite(lat)
    if system not in ("wgs84", "cgcs2000"):
        # Range first: a conversion of out-of-range numbers is meaningless.
        for i, msg in range_errors(lon, lat, None).items():
            chunk.errors.setdefault(i, msg)
        lon, lat = to_wgs84(lon, lat, system)
    for i, msg in range_errors(lon, lat, index.bounds).items():
        chunk.errors.setdefault(i, msg)
    if chunk.errors:
        ok[list(chunk.errors)] = False
    valid = np.flatnonzero(ok)
    batch = index.locate_many(lon[valid], lat[valid], accuracy) if len(valid) else None
    return chunk, batch, valid


def _locate_chunk(index: LocateIndex, formatter: BatchFormatter, chunk, system: str, accuracy: float) -> bytes:
    """Convert, check, locate and render one chunk of rows (UTF-8 bytes)."""
    return formatter.render(*_locate(index, chunk, system, accuracy))
