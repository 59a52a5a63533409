"""Open311 GeoReport v2 (`/open311/v2/`) over the incident store, so civic-reporting clients can talk to GridAtlas.

- services: the incident class table (GB/T 30428.2 major classes as `group`, every class a service).
- requests: incidents; `status` is open/closed from the state table's `open311_status`, `status_notes` the Chinese
  state name; `agency_responsible` the department; `expected_datetime` the deadline; lat/long WGS-84.
- POST requests creates an incident with source `open311` in state `collected`, attributed like any other. Its
  `requested_datetime` is the report time when the API key is trusted (`gridatlas incidents trust-key`); any other
  caller's request is recorded at the server's time, and `service_notice` says so.

Discovery, the service list and service definitions are public, as Open311 clients expect (no key; only the
class table's public fields). Requests need an API key: Open311's `api_key` parameter (query or form) or the
`X-API-Key` header, checked by the project's one authentication path; reads are limited to the key owner's
jurisdiction. Errors in the routes are Open311 error lists (`[{"code", "description"}]` / `<errors>`); a missing or
bad key is a 401 problem+json.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, Response

from api.auth import AuditDep, CurrentUser
from api.deps import SessionDep
from api.incident_params import scope_of
from api.problems import problem_responses
from api.schemas.incidents import (
    Open311Created,
    Open311Definition,
    Open311Discovery,
    Open311Error,
    Open311Request,
    Open311Service,
)
from geo.errors import DomainError
from geo.incidents import closed_loop as inc
from geo.incidents.open311 import key_trusted

router = APIRouter(prefix="/open311/v2", tags=["open311"])

Format = Literal["json", "xml"]
#: GeoReport v2: without a date range, requests from the last 90 days; never more than 1000 in one answer.
DEFAULT_DAYS = 90
MAX_REQUESTS = 1000
#: When this endpoint's behaviour last changed (the discovery document's changeset).
CHANGESET = "2026-12-04T00:00:00Z"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
MEDIA = {"json": "application/json", "xml": "text/xml"}


def _use_key(request: Request, api_key: str | None) -> None:
    # Open311 sends the key as a parameter; hand it to the shared authentication as the X-API-Key header.
    if api_key and "x-api-key" not in request.headers:
        request.scope["headers"] = [*request.scope["headers"], (b"x-api-key", api_key.encode())]
        request.__dict__.pop("_headers", None)  # Starlette caches the parsed headers


def key_from_query(request: Request, api_key: Annotated[str | None, Query(description="Open311 api_key")] = None):
    """Accept Open311's `api_key` query parameter as the API key."""
    _use_key(request, api_key)


def key_from_form(request: Request, api_key: Annotated[str | None, Form(description="Open311 api_key")] = None):
    """Accept Open311's `api_key` form field as the API key."""
    _use_key(request, api_key)


QueryKey = Annotated[None, Depends(key_from_query)]
FormKey = Annotated[None, Depends(key_from_form)]


class Open311Refusal(Exception):
    """An error answered in Open311's format (an error list, not problem+json)."""

    def __init__(self, code: int, description: str):
        super().__init__(description)
        self.code = code
        self.description = description


def _xml(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def _value(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return str(v)


def render(items: list[dict], fmt: str, root: str, item: str, status: int = 200) -> Response:
    """A list of flat records as Open311 JSON (an array) or XML (<root><item>…</item></root>)."""
    if fmt == "json":
        body = [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in d.items()} for d in items]
        return JSONResponse(body, status_code=status, media_type="application/json; charset=utf-8")
    top = ET.Element(root)
    for d in items:
        el = ET.SubElement(top, item)
        for k, v in d.items():
            child = ET.SubElement(el, k)
            text = _value(v)
            if text is not None:
                child.text = text
    return Response(_xml(top), status_code=status, media_type="text/xml; charset=utf-8")


def error(fmt: str, code: int, description: str) -> Response:
    """Open311's error list."""
    return render([{"code": code, "description": description}], fmt, "errors", "error", status=code)


def service_list(conn) -> list[dict]:
    """Every class as an Open311 service; the major class is the group."""
    out = []
    for c in inc.incident_classes(conn):
        group = c["major_name"] or c["name"]
        out.append({
            "service_code": c["code"],
            "service_name": c["name"],
            "description": f"{group} / {c['name']}（处置时限 {c['time_limit_hours']:g} 小时）",
            "metadata": False,
            "type": "realtime",
            "keywords": ",".join(dict.fromkeys([group, c["name"]])),
            "group": group,
        })
    return out


def as_request(row: dict) -> dict:
    """An incident as an Open311 service request."""
    state = inc.states()[row["state"]]
    return {
        "service_request_id": str(row["id"]),
        "status": state.open311_status,
        "status_notes": state.name,
        "service_name": row["class_name"],
        "service_code": row["class_code"],
        "description": row["description"],
        "agency_responsible": row["department"],
        "service_notice": None,
        "requested_datetime": row["reported_at"],
        "updated_datetime": row["updated_at"],
        "expected_datetime": row["due_at"],
        "address": row["address"],
        "address_id": None,
        "zipcode": None,
        "lat": row["lat"],
        "long": row["lon"],
        "media_url": row["media_url"],
    }


def _w3c(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Refusal(400, f"{name} is not a W3C datetime (e.g. 2025-03-01T08:00:00+08:00)") from None
    if t.tzinfo is None:
        raise Open311Refusal(400, f"{name} needs a time zone (Z or ±HH:MM)")
    return t


def _answers(success: int, *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI answers of an Open311 route besides its JSON model: the same records as XML (by the path's format),
    Open311 error lists with these statuses, and problem+json without a valid API key (401) or for a request
    FastAPI cannot read (422)."""
    xml = {"text/xml": {"schema": {"type": "string", "description": "the same records as GeoReport v2 XML"}}}
    out: dict[int | str, dict[str, Any]] = {success: {"content": xml}}
    for status in errors:
        out[status] = {"description": "an Open311 error list", "model": list[Open311Error], "content": xml}
    return {**out, **problem_responses(401, 422)}


def _public_answers(success: int, *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI answers of a public Open311 route: XML besides JSON, Open311 error lists, 422 for a bad path."""
    answers = _answers(success, *errors)
    answers.pop(401, None)
    return answers


def _tree(tag: str, value: Any) -> ET.Element:
    """A nested JSON value as XML: lists repeat the singular child (endpoints → endpoint, formats → format)."""
    el = ET.Element(tag)
    if isinstance(value, dict):
        for k, v in value.items():
            el.append(_tree(k, v))
    elif isinstance(value, list):
        child = tag[:-1] if tag.endswith("s") else "item"
        for v in value:
            el.append(_tree(child, v))
    elif value is not None:
        el.text = _value(value)
    return el


def render_document(body: dict, fmt: str, root: str) -> Response:
    """One nested Open311 document (discovery, a service definition) as JSON or XML."""
    if fmt == "json":
        return JSONResponse(body, media_type="application/json; charset=utf-8")
    return Response(_xml(_tree(root, body)), media_type="text/xml; charset=utf-8")


@router.get("/discovery.{format}", response_model=Open311Discovery, responses=_public_answers(200))
def discovery(format: Format, request: Request) -> Response:
    """GeoReport v2 service discovery (public): this endpoint, its formats, and how to get an API key."""
    url = str(request.url_for("services", format="json")).rsplit("/", 1)[0] + "/"
    return render_document({
        "changeset": CHANGESET,
        "contact": "the administrator of this GridAtlas deployment",
        "key_service": "API keys are issued by an administrator (gridatlas keys create); report times are kept "
                       "only for trusted keys (gridatlas incidents trust-key)",
        "endpoints": [{"specification": SPECIFICATION, "url": url, "changeset": CHANGESET, "type": "production",
                       "formats": list(MEDIA.values())}],
    }, format, "discovery")


@router.get("/services.{format}", response_model=list[Open311Service], responses=_public_answers(200))
def services(format: Format, session: SessionDep) -> Response:
    """GeoReport v2 service list (public): the incident class table, its public fields only."""
    return render(service_list(session.connection()), format, "services", "service")


@router.get("/services/{service_code}.{format}", response_model=Open311Definition,
            responses=_public_answers(200, 404))
def service_definition(service_code: str, format: Format, session: SessionDep) -> Response:
    """GeoReport v2 service definition (public): GridAtlas services ask for no extra attributes."""
    if inc.incident_class(session.connection(), service_code) is None:
        return error(format, 404, f"there is no service {service_code} (see services.{format})")
    return render_document({"service_code": service_code, "attributes": []}, format, "service_definition")


@router.get("/requests.{format}", response_model=list[Open311Request],
            responses=_answers(200, 400))
def get_requests(
    format: Format,
    _key: QueryKey,
    principal: CurrentUser,
    session: SessionDep,
    service_request_id: Annotated[str | None, Query(description="comma-separated ids")] = None,
    service_code: Annotated[str | None, Query(description="comma-separated service codes")] = None,
    start_date: Annotated[str | None, Query()] = None,
    end_date: Annotated[str | None, Query()] = None,
    status: Annotated[str | None, Query(description="open, closed or both comma-separated")] = None,
    jurisdiction_id: Annotated[str | None,
                               Query(description="accepted and ignored: one jurisdiction per server")] = None,
) -> Response:
    """GeoReport v2 requests in the key owner's jurisdiction, newest first, with the standard filters."""
    try:
        ids = None
        if service_request_id:
            parts = [p.strip() for p in service_request_id.split(",") if p.strip()]
            if not all(p.isdigit() for p in parts):
                raise Open311Refusal(400, "service_request_id must be numbers separated by commas")
            ids = [int(p) for p in parts]
        start, end = _w3c(start_date, "start_date"), _w3c(end_date, "end_date")
        if ids is None and start is None and end is None:
            start = dt.datetime.now(dt.UTC) - dt.timedelta(days=DEFAULT_DAYS)
        wanted_states = None
        if status:
            statuses = {s.strip() for s in status.split(",") if s.strip()}
            if not statuses <= {"open", "closed"}:
                raise Open311Refusal(400, "status is open, closed, or both separated by a comma")
            wanted_states = [s.code for s in inc.states().values() if s.open311_status in statuses]
        codes = [c.strip() for c in service_code.split(",") if c.strip()] if service_code else None
        flt = inc.IncidentFilter(scope=scope_of(principal), start=start, end=end, ids=ids, states=wanted_states,
                                 class_codes=codes)
        rows, _ = inc.list_incidents(session.connection(), flt, limit=MAX_REQUESTS)
    except Open311Refusal as exc:
        return error(format, exc.code, exc.description)
    return render([as_request(r) for r in rows], format, "service_requests", "request")


@router.get("/requests/{service_request_id}.{format}", response_model=list[Open311Request],
            responses=_answers(200, 404))
def get_request(service_request_id: str, format: Format, _key: QueryKey, principal: CurrentUser,
                session: SessionDep) -> Response:
    """GeoReport v2 single request (a list of one, as the standard has it)."""
    if not service_request_id.isdigit():
        return error(format, 404, f"there is no service request {service_request_id}")
    row = inc.get_incident(session.connection(), int(service_request_id))
    if row is None or not principal.covers(inc.unit_code(row)):
        return error(format, 404, f"there is no service request {service_request_id} in your jurisdiction")
    return render([as_request(row)], format, "service_requests", "request")


@router.post("/requests.{format}", status_code=201, response_model=list[Open311Created],
             responses=_answers(201, 400, 403))
def post_request(
    format: Format,
    _key: FormKey,
    principal: CurrentUser,
    session: SessionDep,
    audit: AuditDep,
    service_code: Annotated[str | None, Form()] = None,
    lat: Annotated[str | None, Form()] = None,
    long: Annotated[str | None, Form()] = None,
    address_string: Annotated[str | None, Form()] = None,
    address_id: Annotated[str | None, Form()] = None,
    email: Annotated[str | None, Form()] = None,
    device_id: Annotated[str | None, Form()] = None,
    account_id: Annotated[str | None, Form()] = None,
    first_name: Annotated[str | None, Form()] = None,
    last_name: Annotated[str | None, Form()] = None,
    phone: Annotated[str | None, Form()] = None,
    description: Annotated[str | None, Form()] = None,
    media_url: Annotated[str | None, Form()] = None,
    requested_datetime: Annotated[str | None, Form(description="when it was reported (W3C datetime); kept for "
                                                               "trusted API keys, else the server's time")] = None,
) -> Response:
    """GeoReport v2 POST: report a new incident at lat/long (WGS-84). Address-only requests are refused:
    GridAtlas attributes by location and does not geocode. `requested_datetime` is the report time for a trusted
    API key; for any other caller the server's time, and `service_notice` says so."""
    conn = session.connection()
    if not service_code or inc.incident_class(conn, service_code) is None:
        return error(format, 400, f"service_code {service_code!r} is not a service (see services.{format})")
    if not lat or not long:
        return error(format, 400, "lat and long (WGS-84) are required; address-only requests are not supported")
    try:
        lat_f, lon_f = float(lat), float(long)
    except ValueError:
        return error(format, 400, "lat and long must be decimal degrees")
    try:
        requested = _w3c(requested_datetime, "requested_datetime")
    except Open311Refusal as exc:
        return error(format, exc.code, exc.description)
    trusted = key_trusted(conn, principal.via)
    notice = None
    if requested is not None and not trusted:
        notice = (f"requested_datetime {requested_datetime} not used: this API key is not trusted to set report "
                  "times, so the request is recorded at the server's time")
    name = "".join(p for p in (last_name, first_name) if p) or None  # Chinese order: family name first
    fields = {"lon": lon_f, "lat": lat_f, "coordsys": "wgs84", "class_code": service_code, "source": "open311",
              "description": description, "reporter": name, "reporter_phone": phone, "reporter_email": email,
              "address": address_string, "media_url": media_url,
              "reported_at": requested if trusted else None}
    try:
        row = inc.report_incident(session.connection(), principal, fields)
    except DomainError as exc:  # Open311 clients read its own error list, not problem+json
        return error(format, 403 if exc.kind == "forbidden" else 400, exc.message)
    audit("incident.create", "incident", row["id"], inc.unit_code(row),
          after={"via": "open311", "service_code": service_code, "lat": lat_f, "long": lon_f,
                 "device_id": device_id, "account_id": account_id, "requested_datetime": requested_datetime,
                 "reported_at": row["reported_at"], "requested_datetime_kept": bool(requested and trusted)})
    return render([{"service_request_id": str(row["id"]), "service_notice": notice, "account_id": account_id}],
                  format, "service_requests", "request", status=201)
