"""What the locate routes share over HTTP (`api.routers.locate`, `api.routers.mobile`): the app's index holder, the
index for a request's date, the ``at`` query parameter, and GeoJSON answers.

Not a router: routers import it, never one another.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.problems import Problem
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
                holder = IndexHolder.for_engine(state.engine)
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
