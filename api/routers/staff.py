"""The staff register over HTTP: people (人员), their assignments (任职), ending an assignment, importing a sheet.

Reads need a signed-in caller and list only people and assignments tied to their jurisdiction; a phone number
not on the public notice board is shown only to callers whose jurisdiction covers the person. Writes need the
planner or admin role and are decided on what they write, never on the caller's own jurisdiction: the target of an
assignment AND every person touched must be the caller's (`geo.staff.register.covers_person`, the rule that also decides
who sees a person). The domain functions check it; this module maps their refusals to problems. Writes are audited
under the target's code and every unit the person is tied to, so the owning community sees them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy import text

from api.auth import AuditDep, CurrentUser, Planner, ensure_covers
from api.deps import SessionDep, SettingsDep
from api.problems import Problem
from geo.staff import register as staff
from geo.store.models import Person, StaffAssignment
from geo.access.users import Principal

router = APIRouter(tags=["staff"])


class PersonIn(BaseModel):
    """A person on the staff register."""

    name: str = Field(min_length=1, max_length=100)
    phone: str | None = Field(None, max_length=32)
    phone_public: bool = Field(False, description="the phone is on the public notice board (公示牌)")
    party_member: bool = False
    home_building_id: int | None = Field(None, description="the building the person lives in (for planning)")


class PersonChange(BaseModel):
    """Fields to change (omitted fields stay as they are)."""

    name: str | None = Field(None, min_length=1, max_length=100)
    phone: str | None = Field(None, max_length=32)
    phone_public: bool | None = None
    party_member: bool | None = None
    home_building_id: int | None = None


class AssignmentIn(BaseModel):
    """A role over a target for a period: role and target type in English or Chinese (e.g. 管家, 单元)."""

    person_id: int
    role: str = Field(max_length=32, description="grid_chief, grid_worker_fulltime, …, steward (or 网格长 … 管家)")
    target_type: str = Field(max_length=32, description="grid, micro_grid, building or unit (网格/微网格/楼栋/单元)")
    target_id: int | None = Field(None, description="the grid, micro-grid, building or unit id")
    target_code: str | None = Field(None, max_length=18, description="a grid or micro-grid code, instead of the id")
    households: int | None = Field(None, gt=0, description="for a steward: the households of the target served")
    valid_from: dt.date | None = Field(None, description="first day in force (default today)")
    valid_to: dt.date | None = Field(None, description="first day no longer in force (default open)")


class AssignmentEnd(BaseModel):
    """When an assignment stops: from this day on it is no longer in force (default today)."""

    valid_to: dt.date | None = None


def _problem(exc: staff.StaffError, principal: Principal | None = None) -> Problem:
    if isinstance(exc, staff.OutOfJurisdiction):
        mine = principal.jurisdiction_code if principal is not None else None
        return Problem(403, f"{exc} ({mine})", type="out-of-jurisdiction", required_jurisdiction=exc.required,
                       your_jurisdiction=mine)
    if isinstance(exc, staff.NotFound):
        return Problem(404, str(exc), type="not-found")
    return Problem(422, str(exc), type="staff-invalid", title="Invalid staff change")


def _audit_all(audit, codes, action: str, target_type: str, target_id, **change) -> None:
    """One audit entry under each code of `staff.audit_codes(codes)` (the target's first)."""
    for code in staff.audit_codes(codes):
        audit(action, target_type, target_id, code, **change)


def _scope(principal: Principal) -> str:
    return "" if principal.covers(None) else principal.jurisdiction_code


def person_out(row: dict, principal: Principal) -> dict:
    """A person as the caller may see them: the phone only when public or the caller's jurisdiction covers them."""
    codes = list(row.get("codes") or [])
    visible = bool(row.get("phone_public")) or staff.covers_person(codes, principal.covers)
    return {
        "id": row["id"], "name": row["name"], "phone": row.get("phone") if visible else None,
        "phone_hidden": bool(row.get("phone")) and not visible, "phone_public": bool(row.get("phone_public")),
        "party_member": bool(row.get("party_member")), "home_building_id": row.get("home_building_id"),
        "roles": list(row.get("roles") or []), "codes": codes,
    }


def _person_row(session, principal: Principal, person_id: int, at: dt.date | None = None) -> dict:
    """The person's register row if the caller reaches them (`staff.covers_person`), else a 404/403 problem."""
    try:
        return staff.person_in_reach(session.connection(), person_id, principal.covers, at)
    except staff.NotFound:
        raise Problem(404, f"there is no person {person_id}", type="not-found")
    except staff.StaffError as exc:
        raise _problem(exc, principal)


@router.get("/v1/people")
def list_people(
    principal: CurrentUser, session: SessionDep,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
    role: Annotated[str | None, Query(max_length=32, description="holders of this role on `at`")] = None,
    at: Annotated[dt.date | None, Query(description="the day (default today)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    """People tied to your jurisdiction (home building or an assignment in force), with their roles."""
    try:
        rows, total = staff.list_people(session.connection(), _scope(principal), at, q, role, limit=limit,
                                        offset=offset)
    except staff.StaffError as exc:
        raise _problem(exc)
    return {"total": total, "items": [person_out(r, principal) for r in rows]}


@router.post("/v1/people", status_code=201)
def create_person(body: PersonIn, principal: Planner, session: SessionDep, audit: AuditDep) -> dict:
    """Register a person; the home building must lie in your jurisdiction (admins may omit it)."""
    code = None
    if body.home_building_id is not None:
        codes = staff.building_codes(session.connection(), [body.home_building_id])
        if body.home_building_id not in codes:
            raise Problem(404, f"there is no building {body.home_building_id}", type="not-found")
        code = codes[body.home_building_id]
    ensure_covers(principal, code, "the person's home building" if body.home_building_id else "a person without home")
    try:
        person = staff.create_person(session, **body.model_dump())
    except staff.StaffError as exc:
        raise _problem(exc)
    audit("staff.person.create", "person", person.id, code, after=staff.person_dict(person))
    return person_out(_person_row(session, principal, person.id), principal)


@router.get("/v1/people/{person_id}")
def get_person(person_id: int, principal: CurrentUser, session: SessionDep,
               at: Annotated[dt.date | None, Query()] = None) -> dict:
    """One person with their assignments in force on `at` (and ended ones)."""
    row = _person_row(session, principal, person_id, at)
    items, _ = staff.list_assignments(session.connection(), _scope(principal), at, person_id=person_id,
                                      include_ended=True, limit=1000)
    out = person_out(row, principal)
    out["assignments"] = items
    return out


@router.patch("/v1/people/{person_id}")
def change_person(person_id: int, body: PersonChange, principal: Planner, session: SessionDep,
                  audit: AuditDep) -> dict:
    """Change a person tied to your jurisdiction; a new home building must lie in it too."""
    row = _person_row(session, principal, person_id)
    changes = body.model_dump(exclude_unset=True)
    person = session.get(Person, person_id)
    before = staff.person_dict(person)
    try:
        staff.update_person(session, person_id, allowed=principal.covers, **changes)
        after_codes = staff.person_codes(session, person_id)
    except staff.StaffError as exc:
        raise _problem(exc, principal)
    _audit_all(audit, [*row["codes"], *after_codes], "staff.person.update", "person", person_id, before=before,
               after=staff.person_dict(person))
    return person_out(_person_row(session, principal, person_id), principal)


@router.get("/v1/assignments")
def list_assignments(
    principal: CurrentUser, session: SessionDep,
    person_id: Annotated[int | None, Query()] = None,
    role: Annotated[str | None, Query(max_length=32)] = None,
    at: Annotated[dt.date | None, Query(description="the day (default today)")] = None,
    include_ended: Annotated[bool, Query(description="also assignments not in force on `at`")] = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    """Assignments whose target lies in your jurisdiction."""
    try:
        items, total = staff.list_assignments(session.connection(), _scope(principal), at, person_id, role,
                                              include_ended, limit, offset)
    except staff.StaffError as exc:
        raise _problem(exc)
    return {"total": total, "items": items}


@router.post("/v1/assignments", status_code=201)
def create_assignment(body: AssignmentIn, principal: Planner, session: SessionDep, audit: AuditDep) -> dict:
    """Give a person a role over a target in your jurisdiction."""
    try:
        ttype = staff.normalise_target_type(body.target_type)
        target_id = body.target_id
        if target_id is None:
            if not body.target_code or ttype not in ("grid", "micro_grid"):
                raise staff.StaffError("give target_id (or target_code for a grid or micro-grid)")
            table = "grids" if ttype == "grid" else "micro_grids"
            target_id = session.scalar(text(f"SELECT id FROM {table} WHERE code = :c"), {"c": body.target_code})
            if target_id is None:
                raise staff.NotFound(f"no {ttype.replace('_', '-')} with code {body.target_code}")
        code = staff.target_code(session, ttype, target_id, body.valid_from)
        ensure_covers(principal, code, f"{ttype.replace('_', '-')} {target_id}")
        # the domain checks the target and the person against the caller's jurisdiction (covers_person)
        a = staff.create_assignment(session, body.person_id, body.role, ttype, target_id, body.households,
                                    body.valid_from, body.valid_to, allowed=principal.covers)
        person_codes = staff.person_codes(session, body.person_id)
    except staff.StaffError as exc:
        raise _problem(exc, principal)
    out = staff.assignment_dict(a)
    _audit_all(audit, [code, *person_codes], "staff.assignment.create", "assignment", a.id, after=out)
    return {**out, "code": code}


def _assignment_code(session, a: StaffAssignment) -> str | None:
    ttype = a.target_type.value if hasattr(a.target_type, "value") else a.target_type
    return staff.target_code(session, ttype, staff._target_id(a), a.valid_from)


@router.get("/v1/assignments/{assignment_id}")
def get_assignment(assignment_id: int, principal: CurrentUser, session: SessionDep) -> dict:
    """One assignment in your jurisdiction."""
    a = session.get(StaffAssignment, assignment_id)
    if a is None:
        raise Problem(404, f"there is no assignment {assignment_id}", type="not-found")
    code = _assignment_code(session, a)
    ensure_covers(principal, code, f"assignment {assignment_id}")
    return {**staff.assignment_dict(a), "code": code}


@router.post("/v1/assignments/{assignment_id}/end")
def end_assignment(assignment_id: int, body: AssignmentEnd, principal: Planner, session: SessionDep,
                   audit: AuditDep) -> dict:
    """End an assignment (it stays on record with its period); from `valid_to` on it is no longer in force."""
    a = session.get(StaffAssignment, assignment_id)
    if a is None:
        raise Problem(404, f"there is no assignment {assignment_id}", type="not-found")
    code = _assignment_code(session, a)
    ensure_covers(principal, code, f"assignment {assignment_id}")
    before = staff.assignment_dict(a)
    try:
        person_codes = staff.person_codes(session, a.person_id)
        # the domain checks the target and the person against the caller's jurisdiction (covers_person)
        staff.end_assignment(session, assignment_id, body.valid_to, allowed=principal.covers)
    except staff.StaffError as exc:
        raise _problem(exc, principal)
    out = staff.assignment_dict(a)
    _audit_all(audit, [code, *person_codes], "staff.assignment.end", "assignment", assignment_id, before=before,
               after=out)
    return {**out, "code": code}


@router.post("/v1/staff/import", status_code=201)
async def import_staff(principal: Planner, session: SessionDep, settings: SettingsDep, audit: AuditDep,
                       file: Annotated[UploadFile, File(description="a .csv or .xlsx sheet (Chinese or English "
                                                                   "headers)")],
                       valid_from: Annotated[dt.date | None, Query(description="default start date")] = None) -> dict:
    """Import people and assignments from a sheet, all or nothing; every target must lie in your jurisdiction."""
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise Problem(413, f"the file is larger than {settings.max_upload_bytes} bytes", type="too-large")
    from starlette.concurrency import run_in_threadpool

    def work():
        return staff.import_staff(session, data, file.filename, valid_from, allowed=principal.covers)

    try:
        result = await run_in_threadpool(work)
    except staff.StaffImportError as exc:
        raise Problem(422, str(exc), type="import-refused", title="Import refused",
                      problems=[{"row": p.row, "column": p.column, "message": p.message} for p in exc.problems])
    except staff.StaffError as exc:
        raise _problem(exc, principal)
    after = {**result.as_dict(), "assignment_ids": result.assignment_ids[:1000]}
    audit("staff.import", "staff", file.filename, None if principal.covers(None) else principal.jurisdiction_code,
          after=after)
    # registered people it gave roles to who are also tied elsewhere: that community sees the import too
    elsewhere = [c for c in result.person_codes if not principal.covers(c)]
    if elsewhere:
        _audit_all(audit, elsewhere, "staff.import", "staff", file.filename, after=after)
    return result.as_dict()
