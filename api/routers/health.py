"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep, ReadEngineDep
from api.problems import problem_responses
from api.schemas.io import Health, Readiness
from geo.store.db import readiness, replica_status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses=problem_responses(500))
def healthz() -> Health:
    """The process is alive (any answer but 200 means it is not)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
async def readyz(engine: EngineDep, read_engine: ReadEngineDep) -> Readiness:
    """The database is reachable, has PostGIS and its schema is at the code's migration head (503 otherwise)."""
    info = await run_in_threadpool(readiness, engine)  # DatabaseNotReady: 503 not-ready
    if read_engine is not engine:  # the read replica's lag, or that reads fall back to the primary
        info["replica"] = await run_in_threadpool(replica_status, read_engine)
    return Readiness(status="ready", **info)
