"""The staff register over HTTP: people (人员), their assignments (任职), ending an assignment, importing a sheet.

Reads need a signed-in caller and list only people and assignments tied to their jurisdiction; a phone number
not on the public notice board is shown only to callers whose jurisdiction covers the person
(`geo.staff.register.phone_visible`). Writes need the planner or admin role and are decided on what they write,
never on the caller's own jurisdiction: the target of an assignment AND every person touched must be the caller's
(`geo.staff.register.covers_person`, the rule that also decides who sees a person). The domain functions check it
and raise its errors (`StaffError` and kin), which `api.problems` answers. Writes are audited under the target's
code and every unit the person is tied to, so the owning community sees them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, File, Path, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import AuditDep, CurrentUser, Planner, ensure_covers
from api.deps import SessionDep, SettingsDep
from api.problems import Problem, problem_responses
from api.schemas.staff import (
    AssignmentEnd,
    AssignmentIn,
    AssignmentOut,
    AssignmentPage,
    PeoplePage,
    PersonChange,
    PersonDetail,
    PersonIn,
    PersonOut,
    StaffImportOut,
)
from geo.access.users import Principal
from geo.staff import register as staff

#: A row id in a path (32-bit serial columns: a larger number names nothing, and is refused before any query).
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]

router = APIRouter(tags=["staff"])


def _audit_all(audit, codes: Iterable[str | None], action: str, target_type: str, target_id, **change) -> None:
    """One audit entry under each code of `staff.audit_codes(codes)` (the target's first)."""
    for code in staff.audit_codes(codes):
        audit(action, target_type, target_id, code, **change)


def _scope(principal: Principal) -> str:
    return "" if principal.covers(None) else principal.jurisdiction_code or ""


def person_out(row: dict, principal: Principal) -> dict:
    """A person as the caller may see them: the phone only where `staff.phone_visible` says so."""
    codes = list(row.get("codes") or [])
    visible = staff.phone_visible(row.get("phone_public"), codes, principal.covers)
    return {
        "id": row["id"], "name": row["name"], "phone": row.get("phone") if visible else None,
        "phone_hidden": bool(row.get("phone")) and not visible, "phone_public": bool(row.get("phone_public")),
        "party_member": bool(row.get("party_member")), "home_building_id": row.get("home_building_id"),
        "roles": list(row.get("roles") or []), "codes": codes,
    }


@router.get("/v1/people", response_model=PeoplePage, responses=problem_responses(401, 422))
def list_people(
    principal: CurrentUser, session: SessionDep,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
    role: Annotated[str | None, Query(max_length=32, description="holders of this role on `at`")] = None,
    at: Annotated[dt.date | None, Query(description="the day (default today)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    """People tied to your jurisdiction (home building or an assignment in force), with their roles."""
    rows, total = staff.list_people(session.connection(), _scope(principal), at, q, role, limit=limit, offset=offset)
    return {"total": total, "items": [person_out(r, principal) for r in rows]}


@router.post("/v1/people", status_code=201, response_model=PersonOut,
             responses=problem_responses(401, 403, 404, 422))
def create_person(body: PersonIn, principal: Planner, session: SessionDep, audit: AuditDep) -> dict:
    """Register a person; the home building must lie in your jurisdiction (admins may omit it)."""
    code = staff.home_building_code(session.connection(), body.home_building_id)
    ensure_covers(principal, code, "the person's home building" if body.home_building_id else "a person without home")
    person = staff.create_person(session, **body.model_dump())
    audit("staff.person.create", "person", person.id, code, after=staff.person_dict(person))
    return person_out(staff.person_in_reach(session.connection(), person.id, principal), principal)


@router.get("/v1/people/{person_id}", response_model=PersonDetail, responses=problem_responses(401, 403, 404, 422))
def get_person(person_id: RowId, principal: CurrentUser, session: SessionDep,
               at: Annotated[dt.date | None, Query()] = None) -> dict:
    """One person with their assignments in force on `at` (and ended ones)."""
    row = staff.person_in_reach(session.connection(), person_id, principal, at)
    items, _ = staff.list_assignments(session.connection(), _scope(principal), at, person_id=person_id,
                                      include_ended=True, limit=1000)
    return person_out(row, principal) | {"assignments": items}


@router.patch("/v1/people/{person_id}", response_model=PersonOut, responses=problem_responses(401, 403, 404, 422))
def change_person(person_id: RowId, body: PersonChange, principal: Planner, session: SessionDep,
                  audit: AuditDep) -> dict:
    """Change a person tied to your jurisdiction; a new home building must lie in it too."""
    row = staff.person_in_reach(session.connection(), person_id, principal)
    person = staff.get_person(session, person_id)
    before = staff.person_dict(person)
    staff.update_person(session, person_id, caller=principal, **body.model_dump(exclude_unset=True))
    after_codes = staff.person_codes(session, person_id)
    _audit_all(audit, [*row["codes"], *after_codes], "staff.person.update", "person", person_id, before=before,
               after=staff.person_dict(person))
    return person_out(staff.person_in_reach(session.connection(), person_id, principal), principal)


@router.get("/v1/assignments", response_model=AssignmentPage, responses=problem_responses(401, 422))
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
    items, total = staff.list_assignments(session.connection(), _scope(principal), at, person_id, role,
                                          include_ended, limit, offset)
    return {"total": total, "items": items}


@router.post("/v1/assignments", status_code=201, response_model=AssignmentOut,
             responses=problem_responses(401, 403, 404, 422))
def create_assignment(body: AssignmentIn, principal: Planner, session: SessionDep, audit: AuditDep) -> dict:
    """Give a person a role over a target in your jurisdiction."""
    ttype, target_id = staff.resolve_target(session, body.target_type, body.target_id, body.target_code)
    code = staff.target_code(session, ttype, target_id, body.valid_from)
    ensure_covers(principal, code, f"{ttype.replace('_', '-')} {target_id}")
    # the domain checks the target and the person against the caller's jurisdiction (covers_person)
    a = staff.create_assignment(session, body.person_id, body.role, ttype, target_id, body.households,
                                body.valid_from, body.valid_to, caller=principal)
    person_codes = staff.person_codes(session, body.person_id)
    out = staff.assignment_dict(a)
    _audit_all(audit, [code, *person_codes], "staff.assignment.create", "assignment", a.id, after=out)
    return {**out, "code": code}


@router.get("/v1/assignments/{assignment_id}", response_model=AssignmentOut,
            responses=problem_responses(401, 403, 404, 422))
def get_assignment(assignment_id: RowId, principal: CurrentUser, session: SessionDep) -> dict:
    """One assignment in your jurisdiction."""
    a = staff.get_assignment(session, assignment_id)
    code = staff.assignment_code(session, a)
    ensure_covers(principal, code, f"assignment {assignment_id}")
    return {**staff.assignment_dict(a), "code": code}


@router.post("/v1/assignments/{assignment_id}/end", response_model=AssignmentOut,
             responses=problem_responses(401, 403, 404, 422))
def end_assignment(assignment_id: RowId, body: AssignmentEnd, principal: Planner, session: SessionDep,
                   audit: AuditDep) -> dict:
    """End an assignment (it stays on record with its period); from `valid_to` on it is no longer in force."""
    a = staff.get_assignment(session, assignment_id)
    code = staff.assignment_code(session, a)
    ensure_covers(principal, code, f"assignment {assignment_id}")
    before = staff.assignment_dict(a)
    person_codes = staff.person_codes(session, a.person_id)
    # the domain checks the target and the person against the caller's jurisdiction (covers_person)
    staff.end_assignment(session, assignment_id, body.valid_to, caller=principal)
    out = staff.assignment_dict(a)
    _audit_all(audit, [code, *person_codes], "staff.assignment.end", "assignment", assignment_id, before=before,
               after=out)
    return {**out, "code": code}


@router.post("/v1/staff/import", status_code=201, response_model=StaffImportOut,
             responses=problem_responses(401, 403, 413, 422))
async def import_staff(principal: Planner, session: SessionDep, settings: SettingsDep, audit: AuditDep,
                       file: Annotated[UploadFile, File(description="a .csv or .xlsx sheet (Chinese or English "
                                                                   "headers)")],
                       valid_from: Annotated[dt.date | None, Query(description="default start date")] = None) -> dict:
    """Import people and assignments from a sheet, all or nothing; every target must lie in your jurisdiction."""
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise Problem(413, f"the file is larger than {settings.max_upload_bytes} bytes", type="too-large")

    def work() -> staff.ImportResult:
        return staff.import_staff(session, data, file.filename, valid_from, caller=principal)

    result = await run_in_threadpool(work)
    after = {**result.as_dict(), "assignment_ids": result.assignment_ids[:1000]}
    audit("staff.import", "staff", file.filename, None if principal.covers(None) else principal.jurisdiction_code,
          after=after)
    # registered people it gave roles to who are also tied elsewhere: that community sees the import too
    elsewhere = [c for c in result.person_codes if not principal.covers(c)]
    if elsewhere:
        _audit_all(audit, elsewhere, "staff.import", "staff", file.filename, after=after)
    return result.as_dict()
