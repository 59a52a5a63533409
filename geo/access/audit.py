"""The audit log (审计日志): who changed what, when, from where, with before/after; append-only by trigger.

Every write goes through `record`. The HTTP layer (api/auth.py) fills who and where from the request and adds a
fallback entry for a write request that recorded none, so a forgotten call still leaves a trace.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from geo.store.models import AuditEntry

#: session.info key counting the entries recorded through that session (the fallback compares it).
COUNTER_KEY = "gridatlas_audit_entries"


@dataclass(frozen=True)
class RequestInfo:
    """Where a change came from: HTTP method and path, and the remote address ("local" for the CLI)."""

    method: str | None = None
    path: str | None = None
    remote_addr: str | None = None


#: Changes made on the server itself (CLI, startup).
LOCAL = RequestInfo(None, None, "local")


def actor_name(actor: Any) -> str | None:
    """The audit name of a Principal, a User or a plain string."""
    if actor is None:
        return None
    if isinstance(actor, str):
        return actor[:100]
    name = getattr(actor, "actor", None) or getattr(actor, "username", None)
    return str(name)[:100] if name is not None else None


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types: geometries become GeoJSON, ORM rows their columns, dates ISO strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "model_dump"):  # pydantic
        return jsonable(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if _is_wkb(value):
        from geoalchemy2.shape import to_shape

        return jsonable(to_shape(value))
    if hasattr(value, "__geo_interface__"):  # shapely geometry
        return json.loads(json.dumps(value.__geo_interface__))
    if hasattr(value, "__table__"):  # ORM instance
        return snapshot(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    return str(value)


def _is_wkb(value: Any) -> bool:
    try:
        from geoalchemy2.elements import WKBElement, WKTElement
    except ImportError:  # pragma: no cover - geoalchemy2 is a dependency
        return False
    return isinstance(value, (WKBElement, WKTElement))


def snapshot(obj: Any, exclude: tuple[str, ...] = ("password_hash", "key_hash")) -> dict:
    """An ORM row's column values as JSON (geometry as GeoJSON), for `before`/`after`; secrets left out."""
    state = sa_inspect(obj)
    return {
        attr.key: jsonable(getattr(obj, attr.key))
        for attr in state.mapper.column_attrs
        if attr.key not in exclude
    }


def recorded_count(session: Session) -> int:
    """How many entries were recorded through this session so far."""
    return session.info.get(COUNTER_KEY, 0)


def record(
    session: Session,
    actor: Any,
    action: str,
    target_type: str | None = None,
    target_id: Any = None,
    jurisdiction_code: str | None = None,
    before: Any = None,
    after: Any = None,
    request_info: RequestInfo | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction: it is kept exactly when the change it describes is."""
    info = request_info or RequestInfo()
    entry = AuditEntry(
        at=func.clock_timestamp(),
        actor=actor_name(actor),
        action=action[:100],
        method=info.method,
        path=info.path,
        remote_addr=(info.remote_addr or None) and info.remote_addr[:64],
        target_type=target_type,
        target_id=None if target_id is None else str(target_id)[:64],
        jurisdiction_code=jurisdiction_code,
    )
    # set only when given: an explicit None would be stored as JSON null instead of SQL NULL
    if before is not None:
        entry.before = jsonable(before)
    if after is not None:
        entry.after = jsonable(after)
    session.add(entry)
    session.flush()
    session.info[COUNTER_KEY] = recorded_count(session) + 1
    return entry


def entries(
    session: Session,
    *,
    within: str | None = None,
    include_unscoped: bool = True,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries newest first; `within` keeps those whose jurisdiction code starts with it (then never unscoped)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if within is not None:
        query = query.where(func.starts_with(AuditEntry.jurisdiction_code, within))
    elif not include_unscoped:
        query = query.where(AuditEntry.jurisdiction_code.is_not(None))
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        # "boundary." matches every boundary action; an exact name matches itself only
        query = (query.where(func.starts_with(AuditEntry.action, action)) if action.endswith(".")
                 else query.where(AuditEntry.action == action))
    if target_type:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == str(target_id))
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query))


def entry_dict(entry: AuditEntry) -> dict:
    """One entry as JSON."""
    return {
        "id": entry.id,
        "at": entry.at.isoformat() if entry.at else None,
        "actor": entry.actor,
        "action": entry.action,
        "method": entry.method,
        "path": entry.path,
        "remote_addr": entry.remote_addr,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "jurisdiction_code": entry.jurisdiction_code,
        "before": entry.before,
        "after": entry.after,
    }
