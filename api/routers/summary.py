"""`/summary/{code}`: the printable one-page summary of a street, community or grid (一页纸概况), A4, in Chinese.

The figures, gaps and outlines come from `geo.features.summary.unit_summary`; `maps.summary` draws the page (the
map as inline SVG, so it prints offline with no tile server). The code must lie in the caller's jurisdiction.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from api.auth import ScopedUser
from api.deps import SessionDep, SettingsDep
from api.problems import problem_responses
from geo.features.summary import unit_summary
from geo.io.codes import filter_lengths
from maps.summary import render_summary_page

router = APIRouter(tags=["maps"])


def _code_pattern() -> str:
    spans = [filter_lengths()[level] for level in ("streets", "communities", "grids")]
    return rf"^\d{{{min(lo for lo, _ in spans)},{max(hi for _, hi in spans)}}}$"


SummaryCode = Annotated[str, Path(pattern=_code_pattern(), description="the code of a street, community or grid")]


@router.get("/summary/{code}", response_class=HTMLResponse, responses=problem_responses(401, 403, 404, 422))
def summary_page(code: SummaryCode, principal: ScopedUser, session: SessionDep,
                 settings: SettingsDep) -> HTMLResponse:
    """一页纸概况: the unit's names, boundary version, a map of it and its children, its figures and gaps; prints
    on one A4 page."""
    summary = unit_summary(session.connection(), code, principal.covers, settings.timezone)
    return HTMLResponse(render_summary_page(summary, principal.username),
                        headers={"Cache-Control": "private, no-cache"})
