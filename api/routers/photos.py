"""Incident photos (事件照片) over HTTP: `POST /v1/incidents/{id}/photos` takes one image as the request body
(``Content-Type: image/jpeg``, ``image/png`` or ``image/webp``; `stage` and `taken_at` in the query), the list and
each photo's bytes are served only to callers whose jurisdiction contains the case (as the case itself). Checks
(size, type, magic bytes, count) are the domain's (`geo.incidents.photos`); re-sending the same bytes answers
the photo already kept (200 instead of 201), so a phone's queue may retry safely.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import AuditDep, scoped
from api.deps import SessionDep, SettingsDep
from api.problems import problem_responses
from api.schemas.photos import PhotoList, PhotoOut
from geo.access.users import Principal
from geo.incidents import photos

router = APIRouter(tags=["incidents"])

PhotoWriter = Annotated[Principal, Depends(scoped("worker", "planner", "admin"))]
PhotoReader = Annotated[Principal, Depends(scoped())]


def _out(row: dict) -> dict:
    return {**{k: row[k] for k in PhotoOut.model_fields if k != "url"},
            "url": f"/v1/incidents/{row['incident_id']}/photos/{row['id']}"}


@router.post("/v1/incidents/{incident_id}/photos", status_code=201, response_model=PhotoOut,
             responses={200: {"description": "the same photo was already kept (a retry)", "model": PhotoOut},
                        **problem_responses(401, 403, 404, 413, 415, 422)},
             openapi_extra={"requestBody": {"required": True, "content": {
                 t: {"schema": {"type": "string", "format": "binary"}}
                 for t in ("image/jpeg", "image/png", "image/webp")}}})
async def add_photo(
    incident_id: int,
    request: Request,
    principal: PhotoWriter,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
    stage: Annotated[Literal["report", "handling"], Query()] = "report",
    taken_at: Annotated[dt.datetime | None, Query(description="when the photo was taken (ISO 8601)")] = None,
) -> JSONResponse:
    """Attach one photo (the request body) to a case."""
    data = await request.body()
    before = await run_in_threadpool(lambda: {r["id"] for r in photos.list_photos(session.connection(), incident_id)})
    row = await run_in_threadpool(photos.add_photo, session.connection(), settings, incident_id, data,
                                  request.headers.get("content-type", ""), stage=stage, taken_at=taken_at,
                                  actor=principal.username)
    created = row["id"] not in before
    if created:
        audit("incident.photo", "incident", incident_id, None,
              after={"photo_id": row["id"], "stage": stage, "bytes": row["size_bytes"], "sha256": row["sha256"]})
    body = PhotoOut.model_validate(_out(row)).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200)


@router.get("/v1/incidents/{incident_id}/photos", response_model=PhotoList,
            responses=problem_responses(401, 403, 404, 422))
def list_photos(incident_id: int, principal: PhotoReader, session: SessionDep) -> dict:
    """The case's photos, oldest first."""
    return {"items": [_out(r) for r in photos.list_photos(session.connection(), incident_id)]}


@router.get("/v1/incidents/{incident_id}/photos/{photo_id}", response_class=FileResponse,
            responses={**problem_responses(401, 403, 404, 422),
                       200: {"content": {t: {} for t in ("image/jpeg", "image/png", "image/webp")}}})
def photo_bytes(incident_id: int, photo_id: int, principal: PhotoReader, session: SessionDep,
                settings: SettingsDep) -> FileResponse:
    """The photo's bytes (private: never cached by shared caches)."""
    row, path = photos.photo_file(session.connection(), settings, incident_id, photo_id)
    return FileResponse(path, media_type=row["media_type"],
                        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})
