"""Incidents (网格事件) and their closed loop (闭环): report, attribute, move through the state machine.

The seven steps of digital city management — collect (信息收集) → register or reject (立案/不予立案) → dispatch
(派遣, the deadline clock starts) → handle (处置) → report back (处理反馈) → verify and close (核查结案) →
evaluate (综合评价) — with the side paths cancel (作废), return (回退), rework (返工), extend (延时) and
suspend (挂账, with resume) are DATA: data/incident_states.csv and data/incident_transitions.csv.
Every transition is checked against that table, timestamped, attributed to a user and kept in `incident_events`.

An incident is attributed (geo.incidents.attribution) to the boundaries in force at its report time; a later redraw
does not rewrite that. `current_attribution` is the separate, explicit view by today's boundaries.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Connection, text

from data import DATA_DIR
from geo.access.users import Principal
from geo.incidents.attribution import attribute_incidents, attribution_sql
from geo.incidents.errors import (
    IllegalTransition,
    IncidentError,
    IncidentNotFound,
    InvalidIncident,
    InvalidQuery,
    InvalidTransition,
    OutsideDistrict,
)
from geo.settings import get_settings
from geo.spatial.coords import COORDSYS, to_wgs84
from geo.store.units import unit_condition
from geo.store.versions import at_or_now

#: Where an incident came from (信息来源): patrol, the public, the 12345 hotline, video, Open311 clients.
SOURCES: dict[str, str] = {
    "patrol": "网格员巡查",
    "public": "群众上报",
    "hotline_12345": "12345热线",
    "video": "视频发现",
    "department": "部门上报",
    "open311": "Open311 接口",
    "imported": "历史导入（来源不详）",
}

#: Transitions that need a parameter in the request.
NEEDS_HOURS = frozenset({"extend"})


@dataclass(frozen=True)
class State:
    """A state of the closed loop; `clock` says what the deadline does in it (none/running/paused/stopped)."""

    code: str
    name: str
    rank: int
    is_open: bool
    clock: str
    open311_status: str


@dataclass(frozen=True)
class Transition:
    """One legal move: from a state, an action, to a state."""

    from_state: str
    action: str
    to_state: str
    name: str


def _read_csv(name: str) -> list[dict]:
    with (DATA_DIR / name).open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@lru_cache
def states() -> dict[str, State]:
    """The states table (data/incident_states.csv) by code."""
    return {
        r["code"]: State(r["code"], r["name"], int(r["rank"]), r["is_open"].strip().lower() == "true",
                         r["clock"], r["open311_status"])
        for r in _read_csv("incident_states.csv")
    }


@lru_cache
def transitions() -> tuple[Transition, ...]:
    """The transitions table (data/incident_transitions.csv), checked for unknown states and ambiguity."""
    known = states()
    rows = tuple(Transition(r["from_state"], r["action"], r["to_state"], r["name"])
                 for r in _read_csv("incident_transitions.csv"))
    seen_action: set[tuple[str, str]] = set()
    seen_target: set[tuple[str, str]] = set()
    for t in rows:
        for s in (t.from_state, t.to_state):
            if s not in known:
                raise RuntimeError(f"incident_transitions.csv names unknown state {s!r}")
        if (t.from_state, t.action) in seen_action or (t.from_state, t.to_state) in seen_target:
            raise RuntimeError(f"incident_transitions.csv is ambiguous at {t}")
        seen_action.add((t.from_state, t.action))
        seen_target.add((t.from_state, t.to_state))
    return rows


def allowed_transitions(state: str) -> list[Transition]:
    """The moves allowed from `state`, in table order."""
    return [t for t in transitions() if t.from_state == state]


def actions() -> list[str]:
    """Every action name, in table order."""
    return list(dict.fromkeys(t.action for t in transitions()))


def resolve_transition(state: str, action: str | None = None, to_state: str | None = None) -> Transition:
    """The transition from `state` by `action` or to `to_state`; IllegalTransition lists the allowed ones."""
    if not action and not to_state:
        raise InvalidTransition("give the action (e.g. 'dispatch') or the target state (e.g. 'dispatched')")
    allowed = allowed_transitions(state)
    for t in allowed:
        if (action is None or t.action == action) and (to_state is None or t.to_state == to_state):
            return t
    raise IllegalTransition(state, action or to_state or "", allowed)


# ---------------------------------------------------------------------------------------------------------------
# SQL fragments shared with geo.incidents.kpi and geo.incidents.heatmap


def light_sql(alias: str = "i", now: str = "now()") -> str:
    """SQL for the deadline light (green/yellow/red) of an open case with a running or paused clock, else NULL.

    The used fraction is 1 − remaining/limit, where remaining = due_at − now (frozen at `suspended_at` while
    suspended: resume pushes due_at by the pause) and limit = the class limit at dispatch + extensions.
    """
    rules = get_settings().rules
    used = _used_fraction_sql(alias, now)
    return (
        f"CASE WHEN {alias}.due_at IS NULL OR {alias}.state NOT IN ({_clock_states_sql()}) THEN NULL "
        f"WHEN {used} > {float(rules.deadline_red_fraction)!r} THEN 'red' "
        f"WHEN {used} >= {float(rules.deadline_yellow_fraction)!r} THEN 'yellow' ELSE 'green' END"
    )


def _used_fraction_sql(alias: str, now: str) -> str:
    limit_h = f"nullif(coalesce({alias}.time_limit_hours, 0) + {alias}.extended_hours, 0)"
    remaining_h = (f"extract(epoch FROM {alias}.due_at - coalesce({alias}.suspended_at, {now})) / 3600.0")
    return f"(1.0 - {remaining_h} / {limit_h})"


def used_fraction_sql(alias: str = "i", now: str = "now()") -> str:
    """SQL for the fraction of the time limit used so far (NULL without a deadline)."""
    return _used_fraction_sql(alias, now)


def _clock_states_sql() -> str:
    return ", ".join(f"'{s.code}'" for s in states().values() if s.clock in ("running", "paused"))


def open_states() -> list[str]:
    """States of cases still in the loop (not closed, evaluated, rejected or cancelled)."""
    return [s.code for s in states().values() if s.is_open]


def scope_sql(code: str | None, alias: str = "i", param: str = "scope_code") -> tuple[str, dict]:
    """A condition keeping incidents attributed inside the unit with this code (a street, community or village,
    grid or micro-grid, in any code scheme); TRUE for None (the whole district)."""
    if not code:
        return "TRUE", {}
    return unit_condition(code, alias, param)


def class_sql(class_code: str | None, alias: str = "i", param: str = "class_code") -> tuple[str, dict]:
    """A condition keeping incidents of a class and every class below it (a city's table may have more than two
    levels)."""
    if not class_code:
        return "TRUE", {}
    return (f"({alias}.class_code = :{param} OR {alias}.class_code IN "
            f"(WITH RECURSIVE below(code) AS (SELECT code FROM incident_classes WHERE major_code = :{param} "
            f"UNION SELECT c.code FROM incident_classes c JOIN below b ON c.major_code = b.code) "
            f"SELECT code FROM below))", {param: class_code})


def unit_and_class_filters(alias: str, class_code: str | None = None, **units: str | None) -> tuple[list[str], dict]:
    """Conditions keeping incidents inside every named unit (scope=, street=, community=, grid= codes) and class."""
    parts, params = [], {}
    for name, code in units.items():
        if code:
            sql, p = scope_sql(code, alias, f"{name}_code")
            parts.append(sql)
            params.update(p)
    if class_code:
        sql, p = class_sql(class_code, alias)
        parts.append(sql)
        params.update(p)
    return parts, params


# ---------------------------------------------------------------------------------------------------------------
# writes


def _now(conn: Connection) -> dt.datetime:
    return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def incident_class(conn: Connection, code: str) -> dict | None:
    """A class row (code, name, major_code, major_name, time_limit_hours, department) or None."""
    row = conn.execute(
        text("SELECT c.code, c.name, c.major_code, m.name AS major_name, c.time_limit_hours, c.department "
             "FROM incident_classes c LEFT JOIN incident_classes m ON m.code = c.major_code WHERE c.code = :c"),
        {"c": code},
    ).mappings().first()
    return dict(row) if row else None


def incident_classes(conn: Connection) -> list[dict]:
    """The class table, majors first then their minor classes, in code order."""
    rows = conn.execute(
        text("SELECT c.code, c.name, c.major_code, m.name AS major_name, c.time_limit_hours, c.department "
             "FROM incident_classes c LEFT JOIN incident_classes m ON m.code = c.major_code "
             "ORDER BY coalesce(c.major_code, c.code), c.major_code NULLS FIRST, c.code")
    ).mappings().all()
    return [dict(r) for r in rows]


def create_incident(
    conn: Connection,
    *,
    lon: float,
    lat: float,
    class_code: str,
    source: str,
    actor: str | None,
    coordsys: str = "wgs84",
    reported_at: dt.datetime | None = None,
    description: str | None = None,
    reporter: str | None = None,
    reporter_phone: str | None = None,
    reporter_email: str | None = None,
    department: str | None = None,
    address: str | None = None,
    media_url: str | None = None,
) -> int:
    """Record a reported incident (state 'collected') attributed by the boundaries in force at `reported_at`."""
    if coordsys is None or coordsys.strip().lower().replace("-", "").replace("_", "") not in COORDSYS:
        raise InvalidIncident(f"unknown coordinate system {coordsys!r}; expected one of {sorted(COORDSYS)}")
    try:
        lon_f, lat_f = float(lon), float(lat)
    except (TypeError, ValueError):
        raise InvalidIncident("lon and lat must be numbers") from None
    if not (math.isfinite(lon_f) and math.isfinite(lat_f) and -180 <= lon_f <= 180 and -90 <= lat_f <= 90):
        raise InvalidIncident(f"({lon}, {lat}) is not a longitude/latitude")
    if source not in SOURCES:
        raise InvalidIncident(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if incident_class(conn, class_code) is None:
        raise InvalidIncident(f"unknown incident class {class_code!r}; see the class table (GET /v1/incident-classes)")
    now = _now(conn)
    if reported_at is None:
        reported_at = now
    elif reported_at.tzinfo is None:
        raise InvalidIncident("reported_at needs a time zone (e.g. 2025-06-01T09:30:00+08:00)")
    elif reported_at > now + dt.timedelta(minutes=5):
        raise InvalidIncident(f"reported_at {reported_at.isoformat()} lies in the future")
    wlon, wlat = to_wgs84(lon_f, lat_f, coordsys)
    incident_id = conn.execute(
        text(
            """
            INSERT INTO incidents (geom, reported_at, class_code, source, state, description, reporter,
                                   reporter_phone, reporter_email, department, address, media_url, created_by,
                                   reported_lon, reported_lat, reported_coordsys, updated_at)
            VALUES (ST_SetSRID(ST_MakePoint(:wlon, :wlat), 4326), :reported_at, :class_code, :source, 'collected',
                    :description, :reporter, :reporter_phone, :reporter_email, :department, :address, :media_url,
                    :actor, :lon, :lat, :coordsys, :now)
            RETURNING id
            """
        ),
        {"wlon": wlon, "wlat": wlat, "reported_at": reported_at, "class_code": class_code, "source": source,
         "description": description, "reporter": reporter, "reporter_phone": reporter_phone,
         "reporter_email": reporter_email, "department": department, "address": address, "media_url": media_url,
         "actor": actor, "lon": lon_f, "lat": lat_f, "coordsys": coordsys.lower(), "now": now},
    ).scalar_one()
    conn.execute(
        text("INSERT INTO incident_events (incident_id, from_state, to_state, at, actor, action, detail) "
             "VALUES (:id, NULL, 'collected', :at, :actor, 'collect', CAST(:detail AS jsonb))"),
        # the collection happened at the report time; when it is entered later, the entry time is kept too
        {"id": incident_id, "at": reported_at, "actor": actor,
         "detail": json.dumps({"source": source, "coordsys": coordsys.lower(),
                               **({"recorded_at": now.isoformat()} if reported_at != now else {})})},
    )
    attribute_incidents(conn, where="i.id = :incident_id", params={"incident_id": incident_id})
    return incident_id


def report_incident(conn: Connection, principal: Principal, fields: dict) -> dict:
    """Record a report (上报) for the caller, all or nothing: refused, and not written, when its location lies
    outside the district (OutsideDistrict) or the caller's jurisdiction (OutOfJurisdiction). The stored row."""
    with conn.begin_nested():  # a refusal below rolls the insert back even inside a longer transaction
        row = require_incident(conn, create_incident(conn, actor=principal.username, **fields))
        code = unit_code(row)
        if code is None:
            raise OutsideDistrict(f"({fields['lon']}, {fields['lat']}) {fields.get('coordsys', 'wgs84')} lies outside "
                                  "every street of the district")
        principal.ensure_covers(code, "the incident's location")
    return row


class StaleIncident(IncidentError):
    """A transition naming a revision of the incident that is no longer its latest: someone moved it meanwhile
    (nothing was written; ``current_etag`` names the revision now)."""

    slug = "stale-incident"
    kind = "precondition-failed"
    title = "The incident changed"


def incident_token(incident_id: int, revision: int) -> str:
    """The entity-tag value naming an incident at a revision (its number of events: every transition adds one)."""
    return f"incident-{incident_id}-r{revision}"


def revision_in_token(token: str, incident_id: int) -> int | None:
    """The revision an incident token names; None when it is not a token of this incident."""
    prefix = f"incident-{incident_id}-r"
    rest = token[len(prefix):] if token.startswith(prefix) else ""
    return int(rest) if rest.isdigit() and len(rest) < 10 else None


def incident_revision(conn: Connection, incident_id: int) -> int:
    """The incident's revision: how many events its history holds (the report is the first)."""
    return int(conn.execute(text("SELECT count(*) FROM incident_events WHERE incident_id = :id"),
                            {"id": incident_id}).scalar_one())


def apply_transition(
    conn: Connection,
    incident_id: int,
    *,
    actor: str | None,
    if_revision: int | None = None,
    action: str | None = None,
    to_state: str | None = None,
    note: str | None = None,
    hours: float | None = None,
    evaluation: int | None = None,
    department: str | None = None,
    at: dt.datetime | None = None,
) -> Transition:
    """Move an incident along the closed loop, checked against the transition table and kept in its history.

    `hours` is required to extend (延时); `evaluation` (1–5) is recorded when evaluating; `department` may be
    set when dispatching. `at` defaults to the database clock and may not precede the last event.

    `if_revision`: the revision the caller saw (`incident_revision`); compared under the row lock taken here, so of
    concurrent transitions naming one revision exactly one wins and the others get `StaleIncident`.
    """
    row = conn.execute(
        text("SELECT i.*, (SELECT max(e.at) FROM incident_events e WHERE e.incident_id = i.id) AS last_at "
             "FROM incidents i WHERE i.id = :id FOR UPDATE OF i"),
        {"id": incident_id},
    ).mappings().first()
    if row is None:
        raise IncidentNotFound(f"there is no incident {incident_id}")
    if if_revision is not None:
        current = incident_revision(conn, incident_id)  # read under the lock: no transition can slip in between
        if current != if_revision:
            raise StaleIncident(f"incident {incident_id} is at revision {current}, not {if_revision} (it is now "
                                f"'{row['state']}'): reload it and retry", state=row["state"],
                                current_etag=f'"{incident_token(incident_id, current)}"')
    t = resolve_transition(row["state"], action, to_state)
    at = at or _now(conn)
    if at.tzinfo is None:
        raise InvalidTransition("the transition time needs a time zone")
    if row["last_at"] is not None and at < row["last_at"]:
        raise InvalidTransition(f"{at.isoformat()} precedes the incident's last event ({row['last_at'].isoformat()})")
    sets: dict[str, object] = {}
    detail: dict[str, object] = {}
    if t.action in NEEDS_HOURS and (hours is None or not math.isfinite(hours) or hours <= 0):
        raise InvalidTransition(f"'{t.action}' needs a positive number of hours")
    if t.action == "register":
        sets["registered_at"] = at
    elif t.action == "dispatch":
        limit, class_department = conn.execute(
            text("SELECT time_limit_hours, department FROM incident_classes WHERE code = :c"),
            {"c": row["class_code"]}).one()
        due_at = at + dt.timedelta(hours=limit)
        sets.update(dispatched_at=at, time_limit_hours=limit, extended_hours=0.0, due_at=due_at)
        # the class's own department (处置部门) when neither the dispatch nor the case names one
        department = department or (None if row["department"] else class_department)
        if department:
            sets["department"] = department
        detail.update(time_limit_hours=limit, due_at=due_at.isoformat(), department=department or row["department"])
    elif t.action == "return":
        sets["return_count"] = row["return_count"] + 1
        if t.to_state == "registered":  # the department sends it back: the clock restarts at re-dispatch
            sets.update(dispatched_at=None, due_at=None, time_limit_hours=None, extended_hours=0.0)
        elif t.to_state == "collected":
            sets["registered_at"] = None
    elif t.action == "handle":
        sets["handled_at"] = at
    elif t.action == "report":
        sets["feedback_at"] = at
    elif t.action == "close":
        sets["closed_at"] = at
        detail["on_time"] = bool(row["due_at"] is not None and at <= row["due_at"])
    elif t.action == "evaluate":
        if evaluation is not None and not (1 <= int(evaluation) <= 5):
            raise InvalidTransition("evaluation is a score from 1 (poor) to 5 (very good)")
        sets["evaluated_at"] = at
        sets["evaluation"] = evaluation
        detail["evaluation"] = evaluation
    elif t.action == "rework":  # verification failed: back to the department, the original deadline stands
        sets.update(rework_count=row["rework_count"] + 1, handled_at=None, feedback_at=None)
    elif t.action == "extend" and hours is not None:  # checked above: extending needs hours
        due_at = row["due_at"] + dt.timedelta(hours=hours)
        sets.update(due_at=due_at, extended_hours=row["extended_hours"] + hours,
                    extension_count=row["extension_count"] + 1)
        detail.update(hours=hours, due_at=due_at.isoformat())
    elif t.action == "suspend":
        sets.update(suspended_at=at, suspended_from=row["state"])
    elif t.action == "resume":
        paused = at - (row["suspended_at"] or at)
        if row["due_at"] is not None:
            due_at = row["due_at"] + paused
            sets["due_at"] = due_at
            detail["due_at"] = due_at.isoformat()
        sets.update(suspended_at=None, suspended_from=None)
        detail["paused_hours"] = paused.total_seconds() / 3600.0
    sets.update(state=t.to_state, updated_at=at)
    assignments = ", ".join(f"{k} = :{k}" for k in sets)
    conn.execute(text(f"UPDATE incidents SET {assignments} WHERE id = :id"), {**sets, "id": incident_id})
    conn.execute(
        text("INSERT INTO incident_events (incident_id, from_state, to_state, at, actor, note, action, detail) "
             "VALUES (:id, :f, :t, :at, :actor, :note, :action, CAST(:detail AS jsonb))"),
        {"id": incident_id, "f": row["state"], "t": t.to_state, "at": at, "actor": actor, "note": note,
         "action": t.action, "detail": json.dumps(detail) if detail else None},
    )
    return t


# ---------------------------------------------------------------------------------------------------------------
# reads


def preview_attribution(conn: Connection, lon: float, lat: float, coordsys: str = "wgs84",
                        at: dt.datetime | None = None) -> dict:
    """Where a report at this point would be attributed (the rule of geo.incidents.attribution: boundaries in force
    at `at`, default now; on a shared edge the smallest code), without writing anything."""
    wlon, wlat = to_wgs84(float(lon), float(lat), coordsys)
    ts = at_or_now(":at")
    parts = []
    for level in ("streets", "communities", "grids"):
        parts.append(
            f"(SELECT json_build_object('code', u.code, 'name', u.name) FROM {level}_at({ts}) u "
            f"WHERE ST_Covers(u.geom, p.g) ORDER BY u.code LIMIT 1) AS {level}"
        )
    row = conn.execute(
        text(f"SELECT {', '.join(parts)} FROM (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS g) p"),
        {"lon": wlon, "lat": wlat, "at": at},
    ).mappings().one()
    return {"lon": wlon, "lat": wlat, "street": row["streets"], "community": row["communities"],
            "grid": row["grids"]}


_SELECT = """
    SELECT i.id, i.state, st.name AS state_name, i.class_code, c.name AS class_name, c.major_code,
           m.name AS major_name, i.source, i.description, i.reporter, i.reporter_phone, i.reporter_email,
           i.department, i.address, i.media_url, i.reported_at, i.registered_at, i.dispatched_at, i.handled_at,
           i.feedback_at, i.closed_at, i.evaluated_at, i.updated_at, i.due_at, i.time_limit_hours,
           i.extended_hours, i.extension_count, i.rework_count, i.return_count, i.suspended_at, i.evaluation,
           i.created_by, i.reported_lon, i.reported_lat, i.reported_coordsys,
           i.lon, i.lat, i.version_id,
           s.code AS street_code, s.name AS street_name, cm.code AS community_code, cm.name AS community_name,
           g.code AS grid_code, g.name AS grid_name, mg.code AS micro_grid_code, mg.name AS micro_grid_name,
           i.compound_id, cp.name AS compound_name, i.building_id, b.name AS building_name,
           {light} AS light, {used} AS deadline_used
    FROM incidents i
    JOIN incident_states st ON st.code = i.state
    JOIN incident_classes c ON c.code = i.class_code
    LEFT JOIN incident_classes m ON m.code = c.major_code
    LEFT JOIN streets s ON s.id = i.street_id
    LEFT JOIN communities cm ON cm.id = i.community_id
    LEFT JOIN grids g ON g.id = i.grid_id
    LEFT JOIN micro_grids mg ON mg.id = i.micro_grid_id
    LEFT JOIN compounds cp ON cp.id = i.compound_id
    LEFT JOIN buildings b ON b.id = i.building_id
"""


def _select() -> str:
    return _SELECT.format(light=light_sql("i"), used=_used_fraction_sql("i", "now()"))


def unit_code(row: dict) -> str | None:
    """The most specific unit code an incident is attributed to (grid, else community, else street)."""
    return row.get("grid_code") or row.get("community_code") or row.get("street_code")


def get_incident(conn: Connection, incident_id: int) -> dict | None:
    """One incident with its attribution (names and codes) and deadline light, or None."""
    row = conn.execute(text(_select() + " WHERE i.id = :id"), {"id": incident_id}).mappings().first()
    return dict(row) if row else None


def require_incident(conn: Connection, incident_id: int) -> dict:
    """One incident as `get_incident` gives it; IncidentNotFound when there is none."""
    row = get_incident(conn, incident_id)
    if row is None:
        raise IncidentNotFound(f"there is no incident {incident_id}")
    return row


def history(conn: Connection, incident_id: int) -> list[dict]:
    """The incident's events, oldest first."""
    rows = conn.execute(
        text("SELECT e.id, e.action, e.from_state, e.to_state, st.name AS to_state_name, e.at, e.actor, e.note, "
             "e.detail FROM incident_events e JOIN incident_states st ON st.code = e.to_state "
             "WHERE e.incident_id = :id ORDER BY e.at, e.id"),
        {"id": incident_id},
    ).mappings().all()
    return [dict(r) for r in rows]


def current_attribution(conn: Connection, incident_ids: list[int]) -> dict[int, dict]:
    """Re-attribution by the boundaries in force now (an explicit view; the stored attribution is unchanged)."""
    if not incident_ids:
        return {}
    rows = conn.execute(
        text(
            f"""
            SELECT a.id, a.version_id, s.code AS street_code, s.name AS street_name,
                   cm.code AS community_code, cm.name AS community_name, g.code AS grid_code, g.name AS grid_name,
                   mg.code AS micro_grid_code, a.compound_id, a.building_id
            FROM ({attribution_sql(ts="now()", where="i.id = ANY(:ids)")}) a
            LEFT JOIN streets s ON s.id = a.street_id
            LEFT JOIN communities cm ON cm.id = a.community_id
            LEFT JOIN grids g ON g.id = a.grid_id
            LEFT JOIN micro_grids mg ON mg.id = a.micro_grid_id
            """
        ),
        {"ids": list(incident_ids)},
    ).mappings().all()
    return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in rows}


@dataclass
class IncidentFilter:
    """Filters of an incident listing; `scope` is the caller's jurisdiction code (None = everything)."""

    scope: str | None = None
    street: str | None = None
    community: str | None = None
    grid: str | None = None
    class_code: str | None = None
    class_codes: list[str] | None = None  # exact codes (Open311 service codes)
    states: list[str] | None = None
    source: str | None = None
    light: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    ids: list[int] | None = None
    updated_since: dt.datetime | None = None
    created_by: str | None = None  # who filed it (the phone's 我的上报)

    def where(self, alias: str = "i") -> tuple[str, dict]:
        """The WHERE clause and its parameters."""
        parts, params = unit_and_class_filters(alias, self.class_code, scope=self.scope, street=self.street,
                                               community=self.community, grid=self.grid)
        if self.class_codes is not None:
            parts.append(f"{alias}.class_code = ANY(:class_codes)")
            params["class_codes"] = list(self.class_codes)
        if self.states:
            unknown = sorted(set(self.states) - set(states()))
            if unknown:
                raise InvalidQuery(f"unknown state(s) {unknown}; expected some of {list(states())}")
            parts.append(f"{alias}.state = ANY(:states)")
            params["states"] = list(self.states)
        if self.source:
            parts.append(f"{alias}.source = :source")
            params["source"] = self.source
        if self.light:
            if self.light not in ("green", "yellow", "red"):
                raise InvalidQuery("light is one of green, yellow, red")
            parts.append(f"({light_sql(alias)}) = :light")
            params["light"] = self.light
        if self.start:
            parts.append(f"{alias}.reported_at >= :start")
            params["start"] = self.start
        if self.end:
            parts.append(f"{alias}.reported_at < :end")
            params["end"] = self.end
        if self.ids is not None:
            parts.append(f"{alias}.id = ANY(:ids)")
            params["ids"] = list(self.ids)
        if self.updated_since:
            parts.append(f"{alias}.updated_at >= :updated_since")
            params["updated_since"] = self.updated_since
        if self.created_by is not None:
            parts.append(f"{alias}.created_by = :created_by")
            params["created_by"] = self.created_by
        return (" AND ".join(parts) or "TRUE"), params


def list_incidents(conn: Connection, flt: IncidentFilter, limit: int = 100, offset: int = 0,
                   order: str = "i.id DESC") -> tuple[list[dict], int]:
    """A page of incidents matching the filter, newest first, and the total count."""
    where, params = flt.where("i")
    total = conn.execute(text(f"SELECT count(*) FROM incidents i WHERE {where}"), params).scalar_one()
    rows = conn.execute(
        text(_select() + f" WHERE {where} ORDER BY {order} LIMIT :limit OFFSET :offset"),
        {**params, "limit": int(limit), "offset": int(offset)},
    ).mappings().all()
    return [dict(r) for r in rows], total
