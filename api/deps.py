"""FastAPI dependencies as `Annotated` aliases: settings, engine, database session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from geo.settings import Settings, get_settings
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


SettingsDep = Annotated[Settings, Depends(settings_dep)]
EngineDep = Annotated[Engine, Depends(engine_dep)]
# scope="function": commit before the response is sent, so a failed commit is an error, never a false 200.
SessionDep = Annotated[Session, Depends(session_dep, scope="function")]
