"""Incidents (网格事件) and their closed loop, KPIs (考核指标) and heatmap aggregates (热力图) over HTTP.

Reads need a signed-in caller and see only their jurisdiction; transitions need the worker, planner or admin role
inside the incident's jurisdiction and ``If-Match`` naming the incident's revision (its ETag; 428 without, 412 when
stale). An illegal transition is a 409 problem+json listing the allowed next states
(`geo.incidents.errors`; every domain refusal is answered by the one handler in `api.problems`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Response, UploadFile
from fastapi.responses import JSONResponse

from api.auth import Admin, AuditDep, CurrentUser, Planner, scoped
from api.deps import ReadSessionDep, SessionDep, SettingsDep
from api.incident_params import (
    CommunityCode,
    GridCode,
    HeatmapQueryDep,
    StreetCode,
    check_filter_codes,
    incident_etag,
    required_incident_revision,
    saved_upload,
    scope_of,
    upload_name,
)
from api.problems import problem_responses
from api.schemas.incidents import (
    NO_NUL,
    ClassTableReport,
    HeatmapAnswer,
    IncidentClass,
    IncidentImportReport,
    IncidentIn,
    IncidentOut,
    IncidentPage,
    KpiAnswer,
    StateMachine,
    TransitionIn,
    heatmap_geojson_schema,
)
from geo.access.users import Principal
from geo.incidents import closed_loop as inc
from geo.incidents import heatmap as hm
from geo.incidents.classes import import_class_table
from geo.incidents.importer import HistoryOptions, import_incident_history
from geo.incidents.kpi import GROUPS, Grouping, KpiQuery, compute_kpis
from geo.incidents.periods import month_to_date, parse_period

router = APIRouter(tags=["incidents"])

#: Who may move an incident along the closed loop (inside the incident's jurisdiction).
WRITER_ROLES = ("worker", "planner", "admin")
IncidentWriter = Annotated[Principal, Depends(scoped(*WRITER_ROLES))]
IncidentReader = Annotated[Principal, Depends(scoped())]


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
    row = inc.require_incident(conn, incident_id)
    current = inc.current_attribution(conn, [incident_id]).get(incident_id)
    return incident_out(row, principal, inc.history(conn, incident_id), current)


@router.get("/v1/incident-classes", response_model=list[IncidentClass], responses=problem_responses(401))
def incident_classes(principal: CurrentUser, session: SessionDep) -> list[dict]:
    """The class table (GB/T 30428.2 major classes and their minor classes) with per-class time limits."""
    return inc.incident_classes(session.connection())


@router.post("/v1/incident-classes/import", status_code=201, response_model=ClassTableReport,
             responses={200: {"description": "a dry run: the plan, nothing written", "model": ClassTableReport},
                        **problem_responses(401, 403, 413, 422)})
def import_classes(
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
    response: Response,
    file: Annotated[UploadFile, File(description="the class table: .csv (UTF-8 or GBK) or .xlsx; columns code, "
                                                 "name, parent, time limit, department (中文表头 too)")],
    dry_run: Annotated[bool, Form(description="show what would be added, changed and refused; write nothing")]
    = False,
    map: Annotated[str | None, Form(max_length=2000, pattern=NO_NUL,
                                    description="column mapping, e.g. code=分类代码,name=分类名称")] = None,
    encoding: Annotated[str | None, Form(max_length=40, pattern=NO_NUL,
                                         description="the CSV's encoding (default: detected)")] = None,
) -> dict:
    """Import the city's own class table (事件分类表), all or nothing: 201 with what was added and changed, 200 for
    a dry run, 422 ``class-table-refused`` (the plan in ``plan``) when any record is refused. Classes the file
    does not name are kept."""
    with saved_upload(file, settings.max_upload_bytes) as path:
        plan = import_class_table(session.connection(), path, dry_run=dry_run, filename=upload_name(file.filename),
                                  encoding=encoding, mapping=map)
    out = plan.to_json()
    audit("incident_classes.import" + (".dry_run" if dry_run else ""), "incident_classes", plan.source, None,
          after={"counts": out["counts"], "added": [a["code"] for a in plan.added],
                 "changed": {c["code"]: c["changes"] for c in plan.changed}})
    if dry_run:
        response.status_code = 200
    return out


@router.post("/v1/incidents/import", status_code=201, response_model=IncidentImportReport,
             responses={200: {"description": "a dry run: the report, nothing written", "model": IncidentImportReport},
                        **problem_responses(401, 403, 413, 422)})
def import_incidents(
    principal: Planner,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
    response: Response,
    file: Annotated[UploadFile, File(description="incidents with their history: .csv (UTF-8 or GBK), .xlsx "
                                                 "(经度/纬度 columns) or .geojson")],
    dry_run: Annotated[bool, Form(description="map, check and attribute; write nothing")] = False,
    category_map: Annotated[str | None, Form(max_length=20000, pattern=NO_NUL,
                                             description="source category → class code, e.g. 违章搭建=F05")] = None,
    state_map: Annotated[str | None, Form(max_length=5000, pattern=NO_NUL,
                                          description="source state → state code, e.g. 已办结=closed")] = None,
    map: Annotated[str | None, Form(max_length=2000, pattern=NO_NUL,
                                    description="column mapping, e.g. category=问题分类")] = None,
    crs: Annotated[str | None, Form(max_length=2000, pattern=NO_NUL,
                                    description="the file's CRS: EPSG code, PROJ string, gcj02 or bd09")] = None,
    encoding: Annotated[str | None, Form(max_length=40, pattern=NO_NUL)] = None,
    source_layer: Annotated[str | None, Form(max_length=200, pattern=NO_NUL, description="sheet or layer")] = None,
    skip_refused: Annotated[bool, Form(description="import the records that pass and list the others")] = False,
) -> dict:
    """Import incidents with their real report times, states and history, attributed to the boundaries in force at
    their report times; all or nothing. 201 with true counts, 200 for a dry run (the category and state mapping
    it would use), 422 ``incident-import-refused`` (the report in ``report``) when any record is refused and
    `skip_refused` is not set. Incidents outside your jurisdiction are refused."""
    options = HistoryOptions(category_map=category_map, state_map=state_map, mapping=map, crs=crs,
                             encoding=encoding, source_layer=source_layer, filename=upload_name(file.filename),
                             dry_run=dry_run, skip_refused=skip_refused, actor=principal.actor,
                             jurisdiction=scope_of(principal))
    with saved_upload(file, settings.max_upload_bytes) as path:
        report = import_incident_history(session.connection(), path, options)
    out = report.to_json()
    juris = (report.codes[0] if len(report.codes) == 1 else scope_of(principal))
    audit("incident.import" + (".dry_run" if dry_run else ""), "incidents", report.source, juris,
          after={"counts": out["counts"], "by_state": out["by_state"], "period": out["period"],
                 "category_mapping": {m["category"]: m["class_code"] for m in out["category_mapping"]}})
    if dry_run:
        response.status_code = 200
    return out


@router.get("/v1/incident-states", response_model=StateMachine, responses=problem_responses(401))
def incident_states(principal: CurrentUser) -> dict:
    """The state machine as data: the states and every legal transition."""
    return {
        "states": [vars(s) for s in inc.states().values()],
        "transitions": [vars(t) for t in inc.transitions()],
    }


@router.post("/v1/incidents", status_code=201, response_model=IncidentOut, response_model_exclude_unset=True,
             responses=problem_responses(401, 403, 422))
def create_incident(body: IncidentIn, principal: CurrentUser, session: SessionDep, audit: AuditDep,
                    response: Response) -> dict:
    """Report an incident at a point; it is attributed to the units whose boundaries are in force at its report
    time and must lie inside the caller's jurisdiction."""
    row = inc.report_incident(session.connection(), principal, body.model_dump())
    audit("incident.create", "incident", row["id"], inc.unit_code(row),
          after={k: row[k] for k in ("state", "class_code", "source", "lon", "lat", "grid_code", "reported_at")})
    out = incident_out(row, principal, inc.history(session.connection(), row["id"]))
    response.headers["ETag"] = incident_etag(row["id"], len(out["history"]))
    return out


@router.get("/v1/incidents", response_model=IncidentPage, response_model_exclude_unset=True,
            responses=problem_responses(401, 403, 422))
def list_incidents(
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    state: Annotated[str | None, Query(max_length=500, pattern=NO_NUL, description="comma-separated states")] = None,
    class_code: Annotated[str | None, Query(alias="class", max_length=16, pattern=NO_NUL,
                                            description="class code; a major class includes its minor ones")] = None,
    street: StreetCode = None,
    community: CommunityCode = None,
    grid: GridCode = None,
    source: Annotated[str | None, Query(max_length=32, pattern=NO_NUL)] = None,
    light: Annotated[Literal["green", "yellow", "red"] | None, Query()] = None,
    start: Annotated[str | None, Query(alias="from", max_length=64, pattern=NO_NUL,
                                       description="reported from (date or datetime)")] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64, pattern=NO_NUL,
                                     description="reported until (a date includes that day)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> dict:
    """Incidents in the caller's jurisdiction, newest first, with filters; `total` counts every match."""
    check_filter_codes(principal, street=street, community=community, grid=grid)
    s, e = parse_period(start, end, settings.timezone)
    flt = inc.IncidentFilter(scope=scope_of(principal), street=street, community=community, grid=grid,
                             class_code=class_code, states=state.split(",") if state else None, source=source,
                             light=light, start=s, end=e)
    rows, total = inc.list_incidents(session.connection(), flt, limit, offset)
    return {"items": [incident_out(r, principal) for r in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/v1/incidents/{incident_id}", response_model=IncidentOut, response_model_exclude_unset=True,
            responses=problem_responses(401, 403, 404, 422))
def get_incident(incident_id: int, principal: IncidentReader, session: SessionDep, response: Response) -> dict:
    """One incident with its full history, its attribution at report time and its re-attribution by today's
    boundaries. `ETag`: its revision, to send as `If-Match` with a transition."""
    out = _detail(session, incident_id, principal)
    response.headers["ETag"] = incident_etag(incident_id, len(out["history"]))
    return out


@router.post("/v1/incidents/{incident_id}/transitions", response_model=IncidentOut,
             response_model_exclude_unset=True,
             responses=problem_responses(401, 403, 404, 409, 412, 422, 428))
def transition(incident_id: int, body: TransitionIn, principal: IncidentWriter, session: SessionDep,
               audit: AuditDep, response: Response, if_match: Annotated[str | None, Header()] = None) -> dict:
    """Move the incident along the closed loop; 409 with the allowed next states when the move is illegal.

    `If-Match` is required (428 without it): the incident's ETag from its last answer. When the incident moved
    on meanwhile the transition is refused with 412 (`stale-incident`, `current_etag`) and nothing is written, so
    of concurrent transitions on one revision exactly one wins."""
    conn = session.connection()
    before = inc.require_incident(conn, incident_id)
    revision = required_incident_revision(if_match, incident_id)
    t = inc.apply_transition(conn, incident_id, actor=principal.username, action=body.action, to_state=body.to,
                             note=body.note, hours=body.hours, evaluation=body.evaluation,
                             department=body.department, if_revision=revision)
    out = _detail(session, incident_id, principal)
    response.headers["ETag"] = incident_etag(incident_id, len(out["history"]))
    audit(f"incident.{t.action}", "incident", incident_id, inc.unit_code(before),
          before={"state": before["state"], "due_at": before["due_at"]},
          after={"state": out["state"], "due_at": out["deadline"]["due_at"], "note": body.note})
    return out


@router.get("/v1/kpi", response_model=KpiAnswer, responses=problem_responses(401, 403, 422))
def kpi(
    principal: CurrentUser,
    session: ReadSessionDep,  # lag-tolerant: the standby when one is configured
    settings: SettingsDep,
    by: Annotated[Grouping, Query(description="grouping: " + ", ".join(GROUPS))] = "district",
    start: Annotated[str | None, Query(alias="from", description="period start (date, YYYY-MM or datetime); "
                                                                 "default: the start of this month")] = None,
    end: Annotated[str | None, Query(alias="to",
                                     description="period end (a date includes that day); default now")] = None,
    street: StreetCode = None,
    community: CommunityCode = None,
    grid: GridCode = None,
    class_code: Annotated[str | None, Query(alias="class", max_length=16, pattern=NO_NUL)] = None,
    department: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
) -> dict:
    """结案率, 按期结案率, 处置率, 返工率, 延期率 and their counts per group for a period, in the caller's
    jurisdiction, plus the deadline light of the open cases now."""
    check_filter_codes(principal, street=street, community=community, grid=grid)
    s, e = month_to_date(*parse_period(start, end, settings.timezone), settings.timezone)
    q = KpiQuery(start=s, end=e, by=by, scope=scope_of(principal), street=street, community=community, grid=grid,
                 class_code=class_code, department=department, timezone=settings.timezone)
    return compute_kpis(session.connection(), q)


@router.get("/v1/heatmap", response_model=HeatmapAnswer,
            responses={200: {"description": "the aggregates in compact JSON (default) or one layer as GeoJSON "
                                            "(`format=geojson`, `layer`)",
                             "content": {"application/geo+json": {"schema": heatmap_geojson_schema()}}},
                       **problem_responses(401, 403, 422)})
def heatmap(
    principal: CurrentUser,
    session: SessionDep,
    q: HeatmapQueryDep,
    format: Annotated[Literal["json", "geojson"], Query()] = "json",
    layer: Annotated[Literal["hex", "grid"], Query(description="GeoJSON layer")] = "hex",
) -> Any:
    """Server-side aggregates: hexagon counts per month, incidents per 1,000 households by grid, Gi* hot and
    cold spots. `format=geojson` gives one layer as a FeatureCollection."""
    h = hm.build_heatmap(session.connection(), q, with_grids=(format == "json" or layer == "grid"),
                         with_hotspots=q.permutations > 0 and (format == "json" or layer == "hex"))
    if format == "geojson":
        body = hm.hex_geojson(h) if layer == "hex" else hm.grid_geojson(h)
        return JSONResponse(body, media_type="application/geo+json")
    return hm.compact(h)
