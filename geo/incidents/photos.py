"""Incident photos (事件照片): pictures of a case taken at report (上报) or as evidence of its handling (处置).

The bytes are files under the data directory (`Settings.photo_dir`, ``var/photos`` by default), one folder per
incident, named by their SHA-256 so that a phone re-sending a queued photo after a lost answer adds nothing twice.
A photo is accepted only when its declared type is allowed (`Settings.photo_types`) and its first bytes say the
same (JPEG ``FF D8 FF``, PNG ``89 50 4E 47 0D 0A 1A 0A``, WebP ``RIFF....WEBP``), within `Settings.photo_max_bytes`
and `Settings.photo_max_per_stage`. Each upload is also an event of the case history (action ``photo``, the state
unchanged), so the history lists it. Who may see or add a case's photos is the HTTP layer's rule (the case's
jurisdiction), as for the case itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar

from sqlalchemy import Connection, text

from geo.errors import Kind, NotFound
from geo.incidents.closed_loop import require_incident
from geo.incidents.errors import IncidentError
from geo.settings import Settings

STAGES = {"report": "上报照片", "handling": "处置照片"}
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


class PhotoRefused(IncidentError):
    """A photo that cannot be kept: unreadable, not what it says it is, or one too many."""

    slug = "invalid-photo"


class PhotoTooLarge(IncidentError):
    """A photo larger than `Settings.photo_max_bytes`."""

    slug = "photo-too-large"
    kind: ClassVar[Kind] = "too-large"


class PhotoTypeRefused(IncidentError):
    """A photo of a type not in `Settings.photo_types`."""

    slug = "unsupported-photo-type"
    kind: ClassVar[Kind] = "unsupported"


class PhotoNotFound(NotFound):
    """No such photo of that incident (or its file is gone)."""

    slug = "photo-not-found"


def sniff(data: bytes) -> str | None:
    """The image type the first bytes say, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def photo_root(settings: Settings) -> Path:
    """The folder photos are stored under."""
    return settings.photo_dir or settings.var_dir / "photos"


def _columns() -> str:
    return "id, incident_id, stage, media_type, size_bytes, sha256, taken_at, uploaded_at, uploaded_by"


def add_photo(conn: Connection, settings: Settings, incident_id: int, data: bytes, media_type: str, *,
              stage: str = "report", taken_at: dt.datetime | None = None, actor: str | None = None) -> dict:
    """Keep a photo of an incident; returns its row (the existing one when the same bytes were sent before)."""
    row = require_incident(conn, incident_id)
    if stage not in STAGES:
        raise PhotoRefused(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    declared = (media_type or "").split(";")[0].strip().lower()
    if declared not in settings.photo_types:
        raise PhotoTypeRefused(f"photos must be {', '.join(settings.photo_types)}; got {declared or 'no type'}",
                               allowed=list(settings.photo_types))
    if not data:
        raise PhotoRefused("the photo is empty")
    if len(data) > settings.photo_max_bytes:
        raise PhotoTooLarge(f"the photo has {len(data)} bytes, more than the {settings.photo_max_bytes} allowed",
                            max_bytes=settings.photo_max_bytes)
    actual = sniff(data)
    if actual != declared:
        raise PhotoRefused(f"the content is not {declared} (its first bytes say {actual or 'no image type'})")
    digest = hashlib.sha256(data).hexdigest()
    existing = conn.execute(text(f"SELECT {_columns()} FROM incident_photos WHERE incident_id = :i AND sha256 = :s"),
                            {"i": incident_id, "s": digest}).mappings().first()
    if existing:
        return dict(existing)
    # One writer at a time per incident, so two uploads cannot both pass the count.
    conn.execute(text("SELECT id FROM incidents WHERE id = :i FOR UPDATE"), {"i": incident_id})
    count = conn.execute(text("SELECT count(*) FROM incident_photos WHERE incident_id = :i AND stage = :s"),
                         {"i": incident_id, "s": stage}).scalar_one()
    if count >= settings.photo_max_per_stage:
        raise PhotoRefused(f"incident {incident_id} already has {count} {stage} photos, the most allowed",
                           max_photos=settings.photo_max_per_stage)
    relative = f"{incident_id}/{digest}.{EXTENSIONS[declared]}"
    target = photo_root(settings) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    photo = conn.execute(
        text("INSERT INTO incident_photos (incident_id, stage, media_type, size_bytes, sha256, path, taken_at, "
             f"uploaded_by) VALUES (:i, :stage, :t, :n, :s, :p, :taken, :by) RETURNING {_columns()}"),
        {"i": incident_id, "stage": stage, "t": declared, "n": len(data), "s": digest, "p": relative,
         "taken": taken_at, "by": actor},
    ).mappings().one()
    conn.execute(
        text("INSERT INTO incident_events (incident_id, from_state, to_state, at, actor, note, action, detail) "
             "VALUES (:id, :st, :st, now(), :actor, :note, 'photo', CAST(:detail AS jsonb))"),
        {"id": incident_id, "st": row["state"], "actor": actor, "note": STAGES[stage],
         "detail": json.dumps({"photo_id": photo["id"], "stage": stage, "bytes": len(data),
                               **({"taken_at": taken_at.isoformat()} if taken_at else {})})},
    )
    return dict(photo)


def photo_counts(conn: Connection, incident_ids: list[int]) -> dict[int, dict[str, int]]:
    """Photos per incident and stage ({id: {"report": n, "handling": m}}), for lists of cases."""
    rows = conn.execute(text("SELECT incident_id, stage, count(*) FROM incident_photos "
                             "WHERE incident_id = ANY(:ids) GROUP BY incident_id, stage"),
                        {"ids": list(incident_ids)}).all()
    out: dict[int, dict[str, int]] = {i: dict.fromkeys(STAGES, 0) for i in incident_ids}
    for incident_id, stage, n in rows:
        out[incident_id][stage] = n
    return out


def list_photos(conn: Connection, incident_id: int) -> list[dict]:
    """An incident's photos, oldest first (NotFound when the incident does not exist)."""
    require_incident(conn, incident_id)
    rows = conn.execute(text(f"SELECT {_columns()} FROM incident_photos WHERE incident_id = :i ORDER BY id"),
                        {"i": incident_id}).mappings().all()
    return [dict(r) for r in rows]


def photo_file(conn: Connection, settings: Settings, incident_id: int, photo_id: int) -> tuple[dict, Path]:
    """One photo's row and its file; PhotoNotFound when either is missing."""
    row = conn.execute(text(f"SELECT {_columns()}, path FROM incident_photos WHERE id = :p AND incident_id = :i"),
                       {"p": photo_id, "i": incident_id}).mappings().first()
    if row is None:
        raise PhotoNotFound(f"incident {incident_id} has no photo {photo_id}")
    path = photo_root(settings) / row["path"]
    if not path.is_file():
        raise PhotoNotFound(f"the file of photo {photo_id} is missing")
    return dict(row), path
