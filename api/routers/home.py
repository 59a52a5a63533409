"""The leader's home page (`/`, 首页), the list of maps (`/maps`), and the figures behind the home page as JSON
(`/v1/overview`): the caller's jurisdiction by name, grids, staff coverage, open incidents, 按期结案率 this month
against last month, compounds by class against the grids."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from api.auth import CurrentUser
from api.deps import SessionDep, SettingsDep
from api.problems import problem_responses
from geo.access.users import Principal
from geo.features.overview import overview
from maps.home import render_home_page, render_maps_page

router = APIRouter(tags=["home"])


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
