"""`/m/report?lon=&lat=`: the phone page where a signed-in grid worker reports an incident at a point (上报事件).

Linked from the mobile locate page (`/m`). Small, self-contained (inline CSS and script, no map, no CDN) for weak
signal; it posts to `POST /v1/incidents` with the login cookie and keeps reports in the phone's storage when the
network is down, sending them when it returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.auth import CurrentUser
from api.deps import SessionDep
from api.problems import Problem
from geo.incidents import closed_loop as inc
from geo.spatial.coords import COORDSYS

router = APIRouter(tags=["maps"])

TEMPLATES = Path(__file__).resolve().parents[2] / "maps" / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
COORDSYS_NAMES = {"wgs84": "WGS-84", "cgcs2000": "CGCS2000", "gcj02": "GCJ-02（高德/腾讯）", "bd09": "BD-09（百度）"}


def _grouped_classes(rows: list[dict]) -> list[dict]:
    majors = [dict(r, children=[]) for r in rows if r["major_code"] is None]
    by_code = {m["code"]: m for m in majors}
    for r in rows:
        if r["major_code"] in by_code:
            by_code[r["major_code"]]["children"].append(r)
    return majors


@router.get("/m/report", response_class=HTMLResponse)
def mobile_report(
    principal: CurrentUser,
    session: SessionDep,
    lon: Annotated[float, Query(ge=-180, le=180)],
    lat: Annotated[float, Query(ge=-90, le=90)],
    coordsys: Annotated[str, Query(description="wgs84, cgcs2000, gcj02 or bd09")] = "wgs84",
) -> HTMLResponse:
    """The report form for a point, showing the grid, community and street it will be attributed to."""
    key = coordsys.strip().lower().replace("-", "").replace("_", "")
    if key not in COORDSYS:
        raise Problem(422, f"coordsys: expected one of {', '.join(sorted(COORDSYS))}", type="validation-error",
                      title="Invalid request")
    conn = session.connection()
    preview = inc.preview_attribution(conn, lon, lat, key)
    code = next((preview[k]["code"] for k in ("grid", "community", "street") if preview[k]), None)
    page = _env.get_template("mobile_report.html").render(
        lon=lon, lat=lat, coordsys=key, coordsys_name=COORDSYS_NAMES.get(key, key), preview=preview,
        in_jurisdiction=code is None or principal.covers(code), jurisdiction=principal.jurisdiction_code or "全区",
        classes=_grouped_classes(inc.incident_classes(conn)), sources=list(inc.SOURCES.items())[:5],
        username=principal.username,
        point_json=json.dumps({"lon": lon, "lat": lat, "coordsys": key}),
    )
    return HTMLResponse(page)
