"""Incidents (网格事件) and their closed loop, KPIs (考核指标) and heatmap aggregates (热力图) over HTTP.

Reads need a signed-in caller and see only their jurisdiction; transitions need the worker, planner or admin role
inside the incident's jurisdiction. An illegal transition is a 409 problem+json listing the allowed next states.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import AuditDep, CurrentUser, ensure_covers, scoped
from api.deps import SessionDep, SettingsDep
from api.problems import Problem
from geo.incidents import heatmap as hm
from geo.incidents import closed_loop as inc
from geo.incidents.kpi import GROUPS, KpiQuery, compute_kpis
from geo.access.users import Principal

router = APIRouter(tags=["incidents"])

#: Who may move an incident along the closed loop (inside the incident's jurisdiction).
WRITER_ROLES = ("worker", "planner", "admin")
IncidentWriter = Annotated[Principal, Depends(scoped(*WRITER_ROLES))]
IncidentReader = Annotated[Principal, Depends(scoped())]


class IncidentIn(BaseModel):
    """A reported incident: a point in any coordinate system the locate API takes, a class and a source."""

    lon: float = Field(description="longitude in `coordsys`")
    lat: float = Field(description="latitude in `coordsys`")
    coordsys: str = Field("wgs84", description="wgs84, cgcs2000, gcj02 (AMap/Tencent) or bd09 (Baidu)")
    class_code: str = Field(max_length=16, description="a code of the class table (GET /v1/incident-classes)")
    source: str = Field("patrol", description="patrol, public, hotline_12345, video, department, open311")
    description: str | None = Field(None, max_length=4000)
    reporter: str | None = Field(None, max_length=100)
    reporter_phone: str | None = Field(None, max_length=32)
    reporter_email: str | None = Field(None, max_length=200)
    department: str | None = Field(None, max_length=100)
    address: str | None = Field(None, max_length=500)
    media_url: str | None = Field(None, max_length=2000)
    reported_at: dt.datetime | None = Field(None, description="when it was reported; default now")


class TransitionIn(BaseModel):
    """A move along the closed loop: an action (e.g. 'dispatch') or the target state (e.g. 'dispatched')."""

    action: str | None = Field(None, max_length=32)
    to: str | None = Field(None, max_length=32, description="target state, instead of the action")
    note: str | None = Field(None, max_length=4000)
    hours: float | None = Field(None, gt=0, le=24 * 365, description="extension in hours (extend)")
    evaluation: int | None = Field(None, ge=1, le=5, description="score 1–5 (evaluate)")
    department: str | None = Field(None, max_length=100, description="the department dispatched to (dispatch)")


def scope_of(principal: Principal) -> str | None:
    """The jurisdiction code reads are limited to (None: the whole district)."""
    return None if principal.covers(None) else principal.jurisdiction_code


def parse_period(start: str | None, end: str | None, tz: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`from`/`to` as a half-open period: a bare date `from` is that day's start, a bare date `to` includes the day."""
    zone = ZoneInfo(tz)

    def one(value: str | None, is_end: bool) -> dt.datetime | None:
        if not value:
            return None
        try:
            if "T" in value or " " in value:
                t = dt.datetime.fromisoformat(value)
                return t if t.tzinfo else t.replace(tzinfo=zone)
            if len(value) == 7:  # YYYY-MM: a whole month
                d = dt.date.fromisoformat(value + "-01")
                if is_end:
                    d = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
                return dt.datetime.combine(d, dt.time.min, tzinfo=zone)
            d = dt.date.fromisoformat(value)
        except ValueError:
            raise Problem(422, f"{value!r} is not a date (YYYY-MM-DD or YYYY-MM) or ISO datetime",
                          type="validation-error", title="Invalid request") from None
        return dt.datetime.combine(d + dt.timedelta(days=1) if is_end else d, dt.time.min, tzinfo=zone)

    s, e = one(start, False), one(end, True)
    if s and e and e <= s:
        raise Problem(422, "'to' must come after 'from'", type="validation-error", title="Invalid request")
    return s, e


def _check_filter_codes(principal: Principal, **codes: str | None) -> None:
    for name, code in codes.items():
        if code and not principal.overlaps(code):
            ensure_covers(principal, code, f"{name} {code}")


def incident_out(row: dict, principal: Principal, events: list[dict] | None = None,
                 current: dict | None = None) -> dict:
    """An incident as JSON; reporter details only for callers whose jurisdiction contains it."""
    code = inc.unit_code(row)
    state = inc.states()[row["state"]]

    def unit(prefix: str) -> dict | None:
        c = row.get(f"{prefix}_code")
        return {"code": c, "name": row.get(f"{prefix}_name")} if c else None

    out: dict[str, Any] = {
        "id": row["id"],
        "state": row["state"],
        "state_name": row["state_name"],
        "open": state.is_open,
        "class": {"code": row["class_code"], "name": row["class_name"], "major_code": row["major_code"],
                  "major_name": row["major_name"]},
        "source": row["source"],
        "source_name": inc.SOURCES.get(row["source"], row["source"]),
        "description": row["description"],
        "department": row["department"],
        "address": row["address"],
        "media_url": row["media_url"],
        "location": {"lon": row["lon"], "lat": row["lat"], "coordsys": "wgs84",
                     "as_reported": ({"lon": row["reported_lon"], "lat": row["reported_lat"],
                                      "coordsys": row["reported_coordsys"]} if row["reported_coordsys"] else None)},
        "times": {k: row[k] for k in ("reported_at", "registered_at", "dispatched_at", "handled_at", "feedback_at",
                                      "closed_at", "evaluated_at", "updated_at", "suspended_at")},
        "deadline": {"due_at": row["due_at"], "time_limit_hours": row["time_limit_hours"],
                     "extended_hours": row["extended_hours"], "light": row["light"],
                     "used_fraction": (round(float(row["deadline_used"]), 4)
                                       if row["deadline_used"] is not None else None),
                     "closed_on_time": (row["closed_at"] <= row["due_at"]
                                        if row["closed_at"] and row["due_at"] else None)},
        "counts": {"extensions": row["extension_count"], "reworks": row["rework_count"],
                   "returns": row["return_count"]},
        "evaluation": row["evaluation"],
        "attribution": {
            "basis": "boundaries in force at the report time",
            "version_id": row["version_id"],
            "street": unit("street"), "community": unit("community"), "grid": unit("grid"),
            "micro_grid": unit("micro_grid"),
            "compound": {"id": row["compound_id"], "name": row["compound_name"]} if row["compound_id"] else None,
            "building": {"id": row["building_id"], "name": row["building_name"]} if row["building_id"] else None,
        },
        "allowed_transitions": [{"action": t.action, "to": t.to_state, "name": t.name}
                                for t in inc.allowed_transitions(row["state"])],
        "created_by": row["created_by"],
    }
    if principal.covers(code):
        out["reporter"] = {"name": row["reporter"], "phone": row["reporter_phone"], "email": row["reporter_email"]}
    if events is not None:
        out["history"] = events
    if current is not None:
        out["current_attribution"] = {"basis": "boundaries in force now (re-attribution view)", **current}
    return out


def _detail(session, incident_id: int, principal: Principal) -> dict:
    conn = session.connection()
    row = inc.get_incident(conn, incident_id)
    if row is None:
        raise Problem(404, f"there is no incident {incident_id}", type="not-found")
    current = inc.current_attribution(conn, [incident_id]).get(incident_id)
    return incident_out(row, principal, inc.history(conn, incident_id), current)


@router.get("/v1/incident-classes")
def incident_classes(principal: CurrentUser, session: SessionDep) -> list[dict]:
    """The class table (GB/T 30428.2 major classes and their minor classes) with per-class time limits."""
    return inc.incident_classes(session.connection())


@router.get("/v1/incident-states")
def incident_states(principal: CurrentUser) -> dict:
    """The state machine as data: the states and every legal transition."""
    return {
        "states": [vars(s) for s in inc.states().values()],
        "transitions": [vars(t) for t in inc.transitions()],
    }


@router.post("/v1/incidents", status_code=201)
def create_incident(body: IncidentIn, principal: CurrentUser, session: SessionDep, audit: AuditDep) -> dict:
    """Report an incident at a point; it is attributed to the units whose boundaries are in force at its report
    time and must lie inside the caller's jurisdiction."""
    row = report_incident(session, principal, body.model_dump())
    audit("incident.create", "incident", row["id"], inc.unit_code(row),
          after={k: row[k] for k in ("state", "class_code", "source", "lon", "lat", "grid_code", "reported_at")})
    return incident_out(row, principal, inc.history(session.connection(), row["id"]))


def report_incident(session, principal: Principal, fields: dict) -> dict:
    """Create an incident for the caller, all or nothing: refused (and not written) when its location lies
    outside the district or the caller's jurisdiction. Returns the stored row."""
    with session.begin_nested():  # a refusal below rolls the insert back even inside a longer transaction
        conn = session.connection()
        try:
            incident_id = inc.create_incident(conn, actor=principal.username, **fields)
        except inc.IncidentError as exc:
            raise Problem(422, str(exc), type="invalid-incident") from None
        row = inc.get_incident(conn, incident_id)
        code = inc.unit_code(row)
        if code is None:
            raise Problem(422, f"({fields['lon']}, {fields['lat']}) {fields.get('coordsys', 'wgs84')} lies outside "
                               "every street of the district", type="outside-district")
        ensure_covers(principal, code, "the incident's location")
    return row


@router.get("/v1/incidents")
def list_incidents(
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    state: Annotated[str | None, Query(description="comma-separated states")] = None,
    class_code: Annotated[str | None, Query(alias="class", description="class code; a major class includes its minor ones")] = None,
    street: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    community: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
    grid: Annotated[str | None, Query(pattern=r"^\d{15}$")] = None,
    source: Annotated[str | None, Query()] = None,
    light: Annotated[Literal["green", "yellow", "red"] | None, Query()] = None,
    start: Annotated[str | None, Query(alias="from", description="reported from (date or datetime)")] = None,
    end: Annotated[str | None, Query(alias="to", description="reported until (a date includes that day)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    """Incidents in the caller's jurisdiction, newest first, with filters; `total` counts every match."""
    _check_filter_codes(principal, street=street, community=community, grid=grid)
    s, e = parse_period(start, end, settings.timezone)
    flt = inc.IncidentFilter(scope=scope_of(principal), street=street, community=community, grid=grid,
                             class_code=class_code, states=state.split(",") if state else None, source=source,
                             light=light, start=s, end=e)
    try:
        rows, total = inc.list_incidents(session.connection(), flt, limit, offset)
    except inc.IncidentError as exc:
        raise Problem(422, str(exc), type="validation-error", title="Invalid request") from None
    return {"items": [incident_out(r, principal) for r in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/v1/incidents/{incident_id}")
def get_incident(incident_id: int, principal: IncidentReader, session: SessionDep) -> dict:
    """One incident with its full history, its attribution at report time and its re-attribution by today's
    boundaries."""
    return _detail(session, incident_id, principal)


@router.post("/v1/incidents/{incident_id}/transitions")
def transition(incident_id: int, body: TransitionIn, principal: IncidentWriter, session: SessionDep,
               audit: AuditDep) -> dict:
    """Move the incident along the closed loop; 409 with the allowed next states when the move is illegal."""
    conn = session.connection()
    before = inc.get_incident(conn, incident_id)
    if before is None:
        raise Problem(404, f"there is no incident {incident_id}", type="not-found")
    try:
        t = inc.apply_transition(conn, incident_id, actor=principal.username, action=body.action,
                                 to_state=body.to, note=body.note, hours=body.hours, evaluation=body.evaluation,
                                 department=body.department)
    except inc.IllegalTransition as exc:
        raise Problem(409, str(exc), type="illegal-transition", title="Illegal transition", state=exc.state,
                      attempted=exc.attempted, allowed=[a.to_state for a in exc.allowed],
                      allowed_actions=[{"action": a.action, "to": a.to_state, "name": a.name}
                                       for a in exc.allowed]) from None
    except inc.IncidentError as exc:
        raise Problem(422, str(exc), type="invalid-transition") from None
    out = _detail(session, incident_id, principal)
    audit(f"incident.{t.action}", "incident", incident_id, inc.unit_code(before),
          before={"state": before["state"], "due_at": before["due_at"]},
          after={"state": out["state"], "due_at": out["deadline"]["due_at"], "note": body.note})
    return out


@router.get("/v1/kpi")
def kpi(
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    by: Annotated[Literal[GROUPS], Query(description="grouping: " + ", ".join(GROUPS))] = "district",
    start: Annotated[str | None, Query(alias="from", description="period start (date, YYYY-MM or datetime); "
                                                                 "default: the start of this month")] = None,
    end: Annotated[str | None, Query(alias="to", description="period end (a date includes that day); default now")] = None,
    street: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    community: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
    grid: Annotated[str | None, Query(pattern=r"^\d{15}$")] = None,
    class_code: Annotated[str | None, Query(alias="class")] = None,
    department: Annotated[str | None, Query(max_length=100)] = None,
) -> dict:
    """结案率, 按期结案率, 处置率, 返工率, 延期率 and their counts per group for a period, in the caller's
    jurisdiction, plus the deadline light of the open cases now."""
    _check_filter_codes(principal, street=street, community=community, grid=grid)
    s, e = parse_period(start, end, settings.timezone)
    now = dt.datetime.now(ZoneInfo(settings.timezone))
    e = e or now
    s = s or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    q = KpiQuery(start=s, end=e, by=by, scope=scope_of(principal), street=street, community=community, grid=grid,
                 class_code=class_code, department=department, timezone=settings.timezone)
    return compute_kpis(session.connection(), q)


def heatmap_query(principal: Principal, settings, start, end, class_code, street, community, grid, cell_m,
                  permutations) -> hm.HeatmapQuery:
    """The heatmap query of a request (filters checked against the caller's jurisdiction)."""
    _check_filter_codes(principal, street=street, community=community, grid=grid)
    s, e = parse_period(start, end, settings.timezone)
    return hm.HeatmapQuery(start=s, end=e, class_code=class_code or None, street=street or None,
                           community=community or None, grid=grid or None, scope=scope_of(principal),
                           cell_m=cell_m, timezone=settings.timezone, permutations=permutations)


@router.get("/v1/heatmap")
def heatmap(
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
    class_code: Annotated[str | None, Query(alias="class")] = None,
    street: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    community: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
    grid: Annotated[str | None, Query(pattern=r"^\d{15}$")] = None,
    cell_m: Annotated[float, Query(ge=hm.MIN_CELL_M, le=hm.MAX_CELL_M, description="hexagon edge in metres")] = 150.0,
    permutations: Annotated[int, Query(ge=0, le=9999, description="Gi* permutations (0: no hot spots)")] = 999,
    format: Annotated[Literal["json", "geojson"], Query()] = "json",
    layer: Annotated[Literal["hex", "grid"], Query(description="GeoJSON layer")] = "hex",
):
    """Server-side aggregates: hexagon counts per month, incidents per 1,000 households by grid, Gi* hot and
    cold spots. `format=geojson` gives one layer as a FeatureCollection."""
    q = heatmap_query(principal, settings, start, end, class_code, street, community, grid, cell_m, permutations)
    try:
        h = hm.build_heatmap(session.connection(), q, with_grids=(format == "json" or layer == "grid"),
                             with_hotspots=permutations > 0 and (format == "json" or layer == "hex"))
    except inc.IncidentError as exc:
        raise Problem(422, str(exc), type="validation-error", title="Invalid request") from None
    if format == "geojson":
        body = hm.hex_geojson(h) if layer == "hex" else hm.grid_geojson(h)
        return JSONResponse(body, media_type="application/geo+json")
    return hm.compact(h)
