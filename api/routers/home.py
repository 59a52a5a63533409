"""The leader's home page (`/`, 首页), the list of maps (`/maps`), and the figures behind the home page as JSON
(`/v1/overview`): the caller's jurisdiction by name, grids, staff coverage, open incidents, 按期结案率 this month
against last month, compounds by class against the grids."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from api.auth import CurrentUser
from api.deps import SessionDep, SettingsDep
from api.problems import problem_responses
from geo.access.users import Principal
from geo.features.overview import keep_ready, overview, warm
from geo.settings import get_settings
from maps.home import render_home_page, render_maps_page

router = APIRouter(tags=["home"])
log = logging.getLogger(__name__)


class Jurisdiction(BaseModel):
    code: str | None
    level: str
    level_zh: str
    name: str
    parents: list[dict[str, Any]]


class MonthKpi(BaseModel):
    month: str
    due: int
    closed: int
    closed_on_time: int
    on_time_rate: float | None
    closure_rate: float | None


class Overview(BaseModel):
    """The home page's figures for the caller's jurisdiction."""

    jurisdiction: Jurisdiction
    version: dict[str, Any] | None
    units: dict[str, int]
    coverage: dict[str, float | int | None]
    incidents: dict[str, int]
    kpi: dict[str, MonthKpi]
    compound_classes: dict[str, int] | None


def _scope(principal: Principal) -> str | None:
    return None if principal.unrestricted else principal.jurisdiction_code


@router.get("/v1/overview", response_model=Overview, responses=problem_responses(401))
def overview_json(principal: CurrentUser, session: SessionDep, settings: SettingsDep) -> Any:
    """The figures of the home page for your jurisdiction."""
    return overview(session.connection(), _scope(principal), settings.timezone)


@router.get("/", response_class=HTMLResponse, responses=problem_responses(401))
def home_page(principal: CurrentUser, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """首页: your jurisdiction by name, its figures, and links to every map and list."""
    figures = overview(session.connection(), _scope(principal), settings.timezone)
    return HTMLResponse(render_home_page(figures, principal.username, principal.role),
                        headers={"Cache-Control": "private, no-cache"})


@router.get("/maps", response_class=HTMLResponse, responses=problem_responses(401))
def maps_page(principal: CurrentUser) -> HTMLResponse:
    """Every map and list of the service, with what each answers."""
    return HTMLResponse(render_maps_page(principal.username, _scope(principal)),
                        headers={"Cache-Control": "private, no-cache"})


#: Seconds between two keep-alives of the coverage change watch (it ends after a minute unused).
KEEP_READY_S = 20.0


def _warm(app: FastAPI, tz: str, stop: threading.Event, done: threading.Event) -> None:
    engine = app.state.engine
    t0 = time.perf_counter()
    try:
        timings = warm(engine, tz)
    except Exception as exc:  # a start-up nicety: the first request computes whatever is missing
        log.warning("home page figures not gathered at start: %s", exc)
        return
    finally:
        done.set()
    log.info("home page figures gathered at start in %.1f s %s", time.perf_counter() - t0,
             {k: round(v, 2) for k, v in timings.items()})
    while not stop.wait(KEEP_READY_S):
        try:
            keep_ready(engine)
        except Exception as exc:  # the database went away: the next request starts a new watch
            log.info("home page figures no longer kept ready: %s", exc)
            return


def warm_at_start(app: FastAPI) -> None:
    """Start-up hook: gather the district's home-page figures in a background thread and keep them ready until
    shutdown (GRIDATLAS_WARM_AT_START)."""
    settings = get_settings()
    if not settings.warm_at_start:
        return
    stop, done = threading.Event(), threading.Event()
    thread = threading.Thread(target=_warm, args=(app, settings.timezone, stop, done), name="gridatlas-warm-home",
                              daemon=True)
    app.state.warm_home_thread = thread
    app.state.warm_home_done = done  # set once the figures are gathered (or could not be)
    app.state.shutdown_hooks.append(lambda _app: stop.set())
    thread.start()
