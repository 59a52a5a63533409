"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep
from api.problems import Problem
from geo.store.db import DatabaseNotReady, readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(engine: EngineDep) -> dict:
    """The database is reachable, has PostGIS and its schema is at the code's migration head."""
    try:
        info = await run_in_threadpool(readiness, engine)
    except DatabaseNotReady as exc:
        raise Problem(503, str(exc), type="not-ready", title="Service not ready")
    return {"status": "ready", **info}
