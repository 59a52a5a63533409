"""Basemaps (底图) for admins: `/v1/basemaps` (read, save, reset to the settings) and the page `/admin/basemaps`.

A saved list applies to every leader's page at once (they read it per request, `api.basemaps`); without one the
settings' layers (`GRIDATLAS_BASEMAPS`, `GRIDATLAS_TILE_URL`) apply. Every save and reset is audited.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.auth import Admin, AuditDep
from api.deps import SessionDep, SettingsDep
from api.problems import problem_responses
from api.schemas.basemap_outlines import OutlineCollection
from api.schemas.basemaps import BasemapList, BasemapSave
from api.security import content_security_policy
from geo.features import basemaps as bm
from geo.features.outlines import preview_outlines
from geo.settings import Settings
from maps.basemaps_admin import render_basemaps_admin

router = APIRouter(tags=["basemaps"])


def _answer(conn, settings: Settings) -> dict:
    saved = bm.stored(conn)
    layers = saved["layers"] if saved else settings.basemap_layers()
    return {"source": "database" if saved else "settings", "revision": saved["revision"] if saved else 0,
            "updated_at": saved["updated_at"] if saved else None, "updated_by": saved["updated_by"] if saved else None,
            "layers": [b.model_dump() for b in layers],
            "defaults": [b.model_dump() for b in settings.basemap_layers()],
            "tile_origins": bm.tile_origins(layers)}


@router.get("/v1/basemaps", response_model=BasemapList, responses=problem_responses(401, 403))
def basemaps(admin: Admin, session: SessionDep, settings: SettingsDep) -> Any:
    """The basemap layers the pages draw (bottom first), whether saved or the settings' default, and the default."""
    return _answer(session.connection(), settings)


@router.put("/v1/basemaps", response_model=BasemapList, responses=problem_responses(401, 403, 409, 422))
def save_basemaps(body: BasemapSave, admin: Admin, session: SessionDep, settings: SettingsDep,
                  audit: AuditDep) -> Any:
    """Save the whole list (add, edit, remove, reorder); every page uses it from its next load."""
    conn = session.connection()
    before = bm.stored(conn)
    layers = bm.parse_layers([x.model_dump() for x in body.layers])
    bm.save_layers(conn, layers, admin.username, body.revision)
    audit("basemaps.save", "basemaps", "1", None,
          before=[b.model_dump() for b in before["layers"]] if before else None,
          after=[b.model_dump() for b in layers])
    return _answer(conn, settings)


@router.delete("/v1/basemaps", response_model=BasemapList, responses=problem_responses(401, 403))
def reset_basemaps(admin: Admin, session: SessionDep, settings: SettingsDep, audit: AuditDep) -> Any:
    """Forget the saved list: the settings' layers apply again."""
    conn = session.connection()
    before = bm.stored(conn)
    bm.reset(conn)
    audit("basemaps.reset", "basemaps", "1", None,
          before=[b.model_dump() for b in before["layers"]] if before else None)
    return _answer(conn, settings)


@router.get("/admin/basemaps", response_class=HTMLResponse,
            responses={200: {"description": "the page (HTML)"}, **problem_responses(401, 403)})
def basemaps_page(admin: Admin) -> HTMLResponse:
    """The admin page: the layers as a table to edit, reorder, add and remove, a preview map, save and reset."""
    # the preview loads layers not saved yet, from any host: images only, and only on this admins' page
    csp = content_security_policy(None).replace("img-src 'self' data: blob:", "img-src 'self' data: blob: http: https:")
    return HTMLResponse(render_basemaps_admin(admin.username), headers={"Content-Security-Policy": csp})


@router.get("/v1/basemaps/outlines", response_model=OutlineCollection, responses=problem_responses(401, 403, 422))
def basemap_outlines(
    admin: Admin, session: SessionDep,
    coordsys: Annotated[Literal["wgs84", "cgcs2000", "gcj02", "bd09"],
                        Query(description="the basemap's coordinate system: outlines are placed where it draws them")]
    = "wgs84",
) -> Any:
    """The streets', communities' and grids' outlines (simplified GeoJSON) for the admin page's preview, shifted
    for a GCJ-02 or BD-09 basemap, so an admin sees whether the basemap lines up."""
    return preview_outlines(session.connection(), coordsys)
