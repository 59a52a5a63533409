"""What the locate routes share over HTTP (`api.routers.locate`, `api.routers.mobile`): the app's index holder, the
index for a request's date, the ``at`` query parameter, GeoJSON answers, and the phone's offline pack of a
jurisdiction (`jurisdiction_pack`: the grids simplified for the phone with their staff, from the same index).

Not a router: routers import it, never one another.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Annotated

import numpy as np
import shapely
from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.problems import Problem
from geo.access.users import Principal
from geo.locate.directory import StaffDirectory
from geo.locate.holder import IndexHolder
from geo.locate.index import LocateIndex
from geo.settings import get_settings
from geo.store.load import parse_at

_holder_lock = threading.Lock()


async def get_index(request: Request) -> IndexHolder:
    """The app's locate index holder, created on first use and kept on `app.state` (the index builds lazily)."""
    state = request.app.state
    holder = getattr(state, "locate_index", None)
    if holder is None:
        with _holder_lock:
            holder = getattr(state, "locate_index", None)
            if holder is None:
                holder = IndexHolder.for_engine(state.engine)  # waits as settings say (locate_stale_wait_s)
                state.locate_index = holder
                getattr(state, "shutdown_hooks", []).append(lambda app: holder.close())
    return holder


IndexDep = Annotated[IndexHolder, Depends(get_index)]


async def index_at(holder: IndexHolder, ts: dt.datetime | None) -> LocateIndex:
    """The index for `ts` (now when None), built in a worker thread when it is not ready (never blocks the event
    loop); `geo.locate.holder.IndexUnavailable` (503) when it cannot be built."""
    if ts is None:
        index = holder.peek()
        if index is not None:
            return index
    return await run_in_threadpool(holder.index_for, ts)


def at_param(value: str | None) -> dt.datetime | None:
    """The ``at`` query parameter (YYYY-MM-DD or an ISO datetime, local time) as an aware datetime, or None."""
    try:
        return parse_at(value, get_settings().timezone)
    except ValueError as exc:  # named after the query parameter, as a validation error of the request
        raise Problem(422, f"at: {exc}", type="validation-error", title="Invalid request") from exc


class GeoJSONResponse(JSONResponse):
    """A JSON answer of media type application/geo+json (RFC 7946)."""

    media_type = "application/geo+json"


#: Simplification of the phone's offline boundaries (degrees, about 1 cm: drops redundant vertices, never moves an
#: edge further) and the decimals its coordinates keep (1 cm), both inside the 5 cm the phone's offline locate
#: treats as "on the boundary" (`PACK_BOUNDARY_M`, maps/static/mobile/locate.js): its answers are the server's
#: except within a few centimetres of an edge, far below what a phone's position can tell.
PACK_SIMPLIFY_DEG = 1e-7
PACK_DECIMALS = 7
PACK_BOUNDARY_M = 0.05


def _rings(geom) -> list[list[list[list[float]]]]:
    """A (Multi)Polygon as a list of polygons, each a list of rings of [lon, lat]."""
    out = []
    for part in getattr(geom, "geoms", [geom]):
        rings = [part.exterior, *part.interiors]
        out.append([np.round(np.asarray(r.coords)[:, :2], PACK_DECIMALS).tolist() for r in rings])
    return out


def jurisdiction_pack(index: LocateIndex, directory: StaffDirectory, principal: Principal, day: dt.date,
                      version: dict | None, accuracy_m: float) -> dict:
    """The caller's grids for offline locate on the phone: each grid's outline (simplified, topology kept), its
    community and street, its staff on `day` (with phones: the caller's own jurisdiction), and the boundary
    version, so the phone can say which version its answers come from."""
    grids = index.levels["grid"]
    communities, streets = index.levels["community"], index.levels["street"]
    simplified = (shapely.simplify(grids.geoms, PACK_SIMPLIFY_DEG, preserve_topology=True) if len(grids)
                  else np.empty(0, dtype=object))
    items = []
    for pos in range(len(grids)):
        rec = grids.record(pos)
        if rec is None or not principal.covers(rec["code"]):
            continue
        cpos = int(index.community_of_grid[pos])
        community = communities.record(cpos)
        street = streets.record(int(index.street_of_community[cpos])) if cpos >= 0 else None
        geom = simplified[pos]
        items.append({
            "id": rec["id"], "code": rec["code"], "name": rec["name"],
            "community": {"id": community["id"], "code": community["code"], "name": community["name"]}
            if community else None,
            "street": {"id": street["id"], "code": street["code"], "name": street["name"]} if street else None,
            "bbox": [round(float(v), PACK_DECIMALS) for v in shapely.bounds(geom)],
            "polygons": _rings(geom),
            "staff": directory.staff([("grid", rec["id"])], day, True),
        })
    return {
        "jurisdiction": principal.jurisdiction_code,
        "version": {"id": version["id"], "label": version["label"], "valid_from": version["valid_from"].isoformat()}
        if version else None,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "day": day.isoformat(),
        "accuracy_m": accuracy_m,
        "boundary_tolerance_m": PACK_BOUNDARY_M,
        "grids": items,
    }
