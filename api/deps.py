"""FastAPI dependencies as `Annotated` aliases: settings, engine, database session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from geo.settings import Settings, get_settings
from geo.store import db
from geo.store.db import session_scope


def settings_dep() -> Settings:
    """The process settings."""
    return get_settings()


def engine_dep(request: Request) -> Engine:
    """The application's engine (set by `create_app`)."""
    return request.app.state.engine


def session_dep(engine: Annotated[Engine, Depends(engine_dep)]) -> Iterator[Session]:
    """A session per request, committed on success and rolled back on error (all-or-nothing writes)."""
    with session_scope(engine) as session:
        yield session


def read_engine_dep(request: Request) -> Engine:
    """The engine of the read replica (`GRIDATLAS_READ_DATABASE_URL`; tests set ``app.state.read_engine``), else
    the application's engine."""
    state = request.app.state
    replica = getattr(state, "read_engine", None)
    if replica is None:
        replica = state.read_engine = db.get_read_engine() if db.read_database_url() else state.engine
    return replica


#: Where `read_session_dep` records the lag of the replica a request read from (api/replica.py sends it).
REPLICA_LAG_STATE = "replica_lag_s"


def read_session_dep(
    request: Request, replica: Annotated[Engine, Depends(read_engine_dep)],
    primary: Annotated[Session, Depends(session_dep, scope="function")],
) -> Iterator[Session]:
    """A session for reads that tolerate lag (tiles, OGC features, maps data, KPIs, exports): on the hot standby
    when one is configured and answering, else the request's primary session (a Session connects only when
    used, so the unused one costs nothing). Never for writes: a standby refuses them."""
    engine, lag = db.choose_read_engine(request.app.state.engine, replica)
    if engine is request.app.state.engine:
        yield primary
        return
    setattr(request.state, REPLICA_LAG_STATE, lag)
    with session_scope(engine) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(settings_dep)]
EngineDep = Annotated[Engine, Depends(engine_dep)]
# scope="function": commit before the response is sent, so a failed commit is an error, never a false 200.
SessionDep = Annotated[Session, Depends(session_dep, scope="function")]
ReadEngineDep = Annotated[Engine, Depends(read_engine_dep)]
#: A session on the read replica (or the primary without one): for routes that only read and tolerate lag.
ReadSessionDep = Annotated[Session, Depends(read_session_dep, scope="function")]
