"""The staff register (人员) and their assignments (任职): register, end (never delete), import from CSV/XLSX.

An assignment gives a person a role over a target (grid, micro-grid, building or unit) for a period. Periods are
half-open: an assignment is in force on day ``d`` when ``valid_from <= d`` and (``valid_to`` is NULL or
``valid_to > d``), so a handover ends the old assignment and starts the new one on the same date. Ending an
assignment sets ``valid_to``; the row stays, so the history of who was responsible when is kept.

A building's jurisdiction code is that of the grid in force whose boundary covers the building (a point on its
surface; on a shared edge the grid with the smallest code), else its community's code.

Who may write is decided on the jurisdiction of what is written, never on the caller's own: the writes on people
and assignments (`update_person`, `create_assignment`, `end_assignment`, `import_staff`) take the ``caller`` (a
`Caller`, such as `geo.access.users.Principal`; None = no restriction, the local CLI) and check the target of an
assignment AND every person touched with `covers_person`, the same rule that decides whether a caller sees a
person at all (and their phone: `phone_visible`). A refusal is `OutOfJurisdiction` (403), naming the jurisdiction
needed and the caller's own.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.orm import Session

from geo import errors
from geo.errors import DomainError, Kind
from geo.settings import get_settings
from geo.store.models import Building, Grid, MicroGrid, Person, StaffAssignment, StaffRole, TargetType, Unit
from geo.store.versions import in_force

#: Chinese names of the roles (for pages, exports and imports).
ROLE_LABELS: dict[str, str] = {
    "grid_chief": "网格长",
    "grid_worker_fulltime": "专职网格员",
    "grid_worker_parttime": "兼职网格员",
    "volunteer": "志愿者",
    "building_head": "楼栋长",
    "unit_head": "单元长",
    "steward": "管家",
    "seconded_cadre": "下沉干部",
}
TARGET_LABELS: dict[str, str] = {"grid": "网格", "micro_grid": "微网格", "building": "楼栋", "unit": "单元"}

#: Which targets each role may hold. Stewards serve households counted by unit, or a whole building.
ROLE_TARGETS: dict[str, frozenset[str]] = {
    "grid_chief": frozenset({"grid", "micro_grid"}),
    "grid_worker_fulltime": frozenset({"grid", "micro_grid"}),
    "grid_worker_parttime": frozenset({"grid", "micro_grid"}),
    "volunteer": frozenset({"grid", "micro_grid", "building", "unit"}),
    "seconded_cadre": frozenset({"grid", "micro_grid", "building", "unit"}),
    "building_head": frozenset({"building"}),
    "unit_head": frozenset({"unit"}),
    "steward": frozenset({"unit", "building"}),
}

#: Role names accepted on import (Chinese as used in the seeds, and English), normalised by `_norm`.
ROLE_ALIASES: dict[str, str] = {
    **{r: r for r in ROLE_LABELS},
    **{v: k for k, v in ROLE_LABELS.items()},
    "网格长": "grid_chief", "gridchief": "grid_chief", "chief": "grid_chief",
    "专职网格员": "grid_worker_fulltime", "网格员": "grid_worker_fulltime",
    "fulltimegridworker": "grid_worker_fulltime", "fulltime": "grid_worker_fulltime",
    "gridworker": "grid_worker_fulltime",
    "兼职网格员": "grid_worker_parttime", "parttimegridworker": "grid_worker_parttime",
    "parttime": "grid_worker_parttime",
    "志愿者": "volunteer", "网格志愿者": "volunteer",
    "楼栋长": "building_head", "楼长": "building_head", "buildinghead": "building_head",
    "单元长": "unit_head", "unithead": "unit_head",
    "管家": "steward", "里巷管家": "steward", "红领管家": "steward", "楼道管家": "steward",
    "下沉干部": "seconded_cadre", "secondedcadre": "seconded_cadre", "cadre": "seconded_cadre",
}
TARGET_ALIASES: dict[str, str] = {
    **{t: t for t in TARGET_LABELS}, **{v: k for k, v in TARGET_LABELS.items()},
    "微网格": "micro_grid", "micro": "micro_grid", "microgrid": "micro_grid", "楼": "building", "楼栋": "building",
}

#: Import columns: canonical name -> accepted headers (Chinese or English; compared after `_norm`).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "person_id": ("person_id", "personid", "人员id", "人员编号"),
    "name": ("name", "姓名", "名字", "person", "personname"),
    "phone": ("phone", "电话", "手机", "手机号", "联系电话", "mobile", "tel"),
    "phone_public": ("phone_public", "phonepublic", "电话公示", "公示", "公示电话", "public"),
    "party_member": ("party_member", "partymember", "党员", "是否党员", "party"),
    "role": ("role", "角色", "职务", "岗位"),
    "target_type": ("target_type", "targettype", "对象类型", "范围类型", "负责类型", "type"),
    "target_code": ("target_code", "targetcode", "网格编码", "对象编码", "编码", "code", "gridcode"),
    "community_code": ("community_code", "communitycode", "社区编码", "社区代码"),
    "building_code": ("building_code", "buildingcode", "楼栋编码", "楼栋编号", "楼号"),
    "building_id": ("building_id", "buildingid", "楼栋id"),
    "unit_number": ("unit_number", "unitnumber", "unit", "单元", "单元号"),
    "households": ("households", "户数", "服务户数", "管理户数"),
    "home_community_code": ("home_community_code", "homecommunitycode", "居住社区编码"),
    "home_building_code": ("home_building_code", "homebuildingcode", "居住楼栋编码", "住址楼栋", "居住楼栋"),
    "home_building_id": ("home_building_id", "homebuildingid", "居住楼栋id"),
    "valid_from": ("valid_from", "validfrom", "起始日期", "开始日期", "任职日期", "from", "start"),
    "valid_to": ("valid_to", "validto", "结束日期", "截止日期", "离任日期", "to", "end"),
}

#: SQL: each building's grid (in force at :ts) and community; reused by coverage. Needs a `b` alias in FROM.
BUILDING_LOCATION_SQL = """
    LEFT JOIN LATERAL (
        SELECT g.id AS grid_id, g.code AS grid_code, g.community_id AS grid_community_id
        FROM grids_covering(CAST(:ts AS timestamptz), ST_PointOnSurface(b.geom)) g  -- the shared-edge rule
    ) loc ON TRUE
    LEFT JOIN communities bc ON bc.id = coalesce(loc.grid_community_id, b.community_id)
"""

#: SQL predicate: assignment alias `a` in force on date :d.
ACTIVE_SQL = in_force("a", "CAST(:d AS date)")


class StaffError(DomainError, ValueError):
    """A staff write refused (unknown person or target, a role on the wrong target, a bad period)."""

    slug: ClassVar[str] = "staff-invalid"
    kind: ClassVar[Kind] = "invalid"
    title: ClassVar[str | None] = "Invalid staff change"


class NotFound(StaffError, errors.NotFound):
    """The person, assignment or target does not exist."""

    slug = "not-found"
    kind = "not-found"
    title = None


class OutOfJurisdiction(StaffError, errors.OutOfJurisdiction):
    """A write on a target or person outside the caller's jurisdiction. `required` is a code the caller would need
    to cover (None: the whole district), `codes` the units the person is tied to (for a person), `yours` the
    caller's own jurisdiction; the message names it, the problem carries both codes."""

    slug = "out-of-jurisdiction"
    kind = "forbidden"
    title = None

    def __init__(self, message: str, required: str | None = None, codes: Iterable[str] = (),
                 yours: str | None = None):
        super().__init__(f"{message} ({yours})", required_jurisdiction=required, your_jurisdiction=yours)
        self.required = required
        self.codes = list(codes)


#: ``allowed(code)``: whether the caller's jurisdiction covers a unit code (None = the whole district), as
#: `geo.access.users.Principal.covers`.
Allowed = Callable[[str | None], bool]


class Caller(Protocol):
    """Who writes, as far as the staff rules care (`geo.access.users.Principal` is one): what their jurisdiction
    covers, and its code (named in a refusal)."""

    @property
    def jurisdiction_code(self) -> str | None: ...

    def covers(self, code: str | None) -> bool: ...


@dataclass
class ImportProblem:
    """One refused row of an import file: spreadsheet row number (header = row 1), column, reason."""

    row: int
    column: str | None
    message: str

    def __str__(self) -> str:
        return f"row {self.row}{f' [{self.column}]' if self.column else ''}: {self.message}"


class StaffImportError(StaffError):
    """An import refused as a whole; `problems` names every bad row (nothing was written)."""

    slug = "import-refused"
    title = "Import refused"

    def __init__(self, problems: list[ImportProblem]):
        head = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} problem(s) in the import file, nothing written: {head}{more}",
                         problems=[{"row": p.row, "column": p.column, "message": p.message} for p in problems])
        self.problems = problems


@dataclass
class ImportResult:
    """What an import wrote."""

    rows: int
    people_created: int
    people_matched: int
    assignments_created: int
    person_ids: list[int] = field(default_factory=list)
    assignment_ids: list[int] = field(default_factory=list)
    #: the units the registered people matched by the import were tied to before it (for auditing), when vetted
    person_codes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "people_created": self.people_created, "people_matched": self.people_matched,
                "assignments_created": self.assignments_created}


def today(tz: str | None = None) -> dt.date:
    """Today's date in the configured timezone (Asia/Shanghai by default)."""
    return dt.datetime.now(ZoneInfo(tz or get_settings().timezone)).date()


def as_date(value: str | dt.date | dt.datetime | None, default: dt.date | None = None) -> dt.date | None:
    """A date from a date, a datetime (its local date) or an ISO string; `default` when empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, dt.datetime):
        if value.tzinfo:
            value = value.astimezone(ZoneInfo(get_settings().timezone))
        return value.date()
    if isinstance(value, dt.date):
        return value
    s = str(value).strip()
    try:
        return dt.datetime.fromisoformat(s).date() if ("T" in s or " " in s) else dt.date.fromisoformat(s)
    except ValueError as exc:
        raise StaffError(f"'{value}' is not a date (YYYY-MM-DD)") from exc


def end_of_day(d: dt.date) -> dt.datetime:
    """The boundaries in force on a date are those at the close of that local day (as geo.store.load.parse_at)."""
    return dt.datetime.combine(d, dt.time.max, tzinfo=ZoneInfo(get_settings().timezone))


def normalise_role(value: str) -> str:
    """A role from its Chinese or English name."""
    role = _ROLES_BY_NORM.get(_norm(value))
    if role is None:
        known = ", ".join(f"{k} ({v})" for k, v in ROLE_LABELS.items())
        raise StaffError(f"unknown role {value!r}; expected one of {known}")
    return role


def normalise_target_type(value: str) -> str:
    """A target type from its Chinese or English name."""
    t = TARGET_ALIASES.get(_norm(value))
    if t is None:
        raise StaffError(f"unknown target type {value!r}; expected grid, micro_grid, building or unit")
    return t


def _norm(s) -> str:
    return re.sub(r"[\s_\-()（）/:：]+", "", str(s)).lower()


#: ROLE_ALIASES by normalised name (``grid_worker_fulltime`` and ``Grid worker (fulltime)`` alike).
_ROLES_BY_NORM: dict[str, str] = {_norm(k): v for k, v in ROLE_ALIASES.items()}


# ---------------------------------------------------------------------------------------------------------------
# jurisdiction codes of targets


def building_codes(conn: Connection, building_ids: Iterable[int], at: dt.date | None = None) -> dict[int, str | None]:
    """Each building's jurisdiction code on date `at`: its grid's code, else its community's (None if neither)."""
    ids = sorted({int(i) for i in building_ids})
    if not ids:
        return {}
    rows = conn.execute(
        text(f"SELECT b.id, coalesce(loc.grid_code, bc.code) AS code FROM buildings b {BUILDING_LOCATION_SQL} "
             "WHERE b.id = ANY(:ids)"),
        {"ids": ids, "ts": end_of_day(at or today())},
    ).all()
    return {r.id: r.code for r in rows}


def target_code(session: Session, target_type: str, target_id: int, at: dt.date | None = None) -> str | None:
    """The jurisdiction code of an assignment's target (a grid, micro-grid, building or unit; None for a building
    in no grid and no community); NotFound if the target does not exist."""
    target_type = normalise_target_type(target_type)
    if target_type in ("grid", "micro_grid"):
        model = Grid if target_type == "grid" else MicroGrid
        code = session.scalar(select(model.code).where(model.id == target_id))
        if code is None:
            raise NotFound(f"no {target_type} with id {target_id}")
        return code
    building_id: int | None = target_id
    if target_type == "unit":
        building_id = session.scalar(select(Unit.building_id).where(Unit.id == target_id))
    elif session.scalar(select(Building.id).where(Building.id == target_id)) is None:
        building_id = None
    if building_id is None:
        raise NotFound(f"no {target_type} with id {target_id}")
    return building_codes(session.connection(), [building_id], at).get(building_id)


def person_codes(session: Session, person_id: int, at: dt.date | None = None) -> list[str]:
    """The jurisdiction codes a person is tied to on `at`: their home building's and their active targets'."""
    rows, _ = list_people(session.connection(), "", at, person_ids=[person_id], limit=1)
    if not rows:
        raise NotFound(f"no person with id {person_id}")
    return sorted(rows[0]["codes"])


# ---------------------------------------------------------------------------------------------------------------
# who may see and change a person


def covers_person(codes: Iterable[str | None], allowed: Allowed) -> bool:
    """THE rule for people, for reads and writes alike: a caller reaches a person (sees a phone not on the public
    board, changes them, gives them or ends their assignments, names them in an import or a steward plan) when
    their jurisdiction covers a unit the person is tied to — the home building's code or the target of an
    assignment in force (`list_people`'s codes).

    A person tied to no unit (registered without a home building, or whose assignments have all ended) belongs to
    no community, so only district-wide callers (``allowed(None)``: admins, the CLI) reach them. Planners cannot
    register such a person (``POST /v1/people`` needs a home building in their jurisdiction, an import row a target
    or home there), so this refuses no planner a person they just registered; someone left untied is placed again
    by an admin.
    """
    codes = [c for c in codes if c]
    return any(allowed(c) for c in codes) if codes else allowed(None)


def phone_visible(phone_public: bool | None, codes: Iterable[str | None], allowed: Allowed) -> bool:
    """THE phone rule: a person's phone shows when it is on the public notice board (公示牌) or the caller reaches
    the person through one of `codes` (`covers_person`); otherwise it is hidden."""
    return bool(phone_public) or covers_person(codes, allowed)


def people_in_reach(conn: Connection, person_ids: Iterable[int], allowed: Allowed | None = None,
                    at: dt.date | None = None) -> dict[int, dict]:
    """The register rows (as `list_people`: codes, roles) of those `person_ids` that exist and that `allowed`
    reaches by `covers_person` on `at` (today); every existing one when `allowed` is None. A person outside is
    left out exactly like a person that does not exist, so callers can answer both the same way."""
    ids = sorted({int(i) for i in person_ids})
    if not ids:
        return {}
    rows, _ = list_people(conn, "", at, person_ids=ids, limit=len(ids))
    return {int(r["id"]): r for r in rows if allowed is None or covers_person(r["codes"], allowed)}


def person_in_reach(conn: Connection, person_id: int, caller: Caller | None, at: dt.date | None = None) -> dict:
    """One person's register row when the `caller` reaches them (`covers_person`); NotFound when there is no such
    person, OutOfJurisdiction (naming the units they are tied to) when they are someone else's."""
    rows, _ = list_people(conn, "", at, person_ids=[int(person_id)], limit=1)
    if not rows:
        raise NotFound(f"there is no person {person_id}")
    row = rows[0]
    if caller is not None and not covers_person(row["codes"], caller.covers):
        codes = list(row["codes"])
        raise OutOfJurisdiction(f"person {person_id} is tied to {', '.join(codes) or 'no unit'}, outside your "
                                "jurisdiction", required=codes[0] if codes else None, codes=codes,
                                yours=caller.jurisdiction_code)
    return row


def ensure_target_allowed(code: str | None, caller: Caller | None, what: str) -> None:
    """OutOfJurisdiction unless the `caller`'s jurisdiction covers the target's jurisdiction `code`."""
    if caller is not None and not caller.covers(code):
        raise OutOfJurisdiction(f"{what} lies in {code or 'the whole district (admin)'}, outside your jurisdiction",
                                required=code, yours=caller.jurisdiction_code)


def audit_codes(codes: Iterable[str | None]) -> list[str | None]:
    """The jurisdiction codes a staff write is audited under, so that every unit it concerns sees the entry (a
    planner reads the entries whose code starts with theirs): the distinct codes given, in order, less those that
    another given code lies inside (that one's entry is already visible there); [None] when none is given."""
    given = list(dict.fromkeys(c for c in codes if c))
    out: list[str | None] = [c for c in given if not any(o != c and o.startswith(c) for o in given)]
    return out or [None]


# ---------------------------------------------------------------------------------------------------------------
# people and assignments


def create_person(session: Session, name: str, phone: str | None = None, phone_public: bool = False,
                  party_member: bool = False, home_building_id: int | None = None) -> Person:
    """Register a person on the staff register."""
    name = (name or "").strip()
    if not name:
        raise StaffError("a person needs a name")
    if home_building_id is not None and session.get(Building, home_building_id) is None:
        raise NotFound(f"no building with id {home_building_id} (home building)")
    person = Person(name=name, phone=(phone or None), phone_public=bool(phone_public),
                    party_member=bool(party_member), home_building_id=home_building_id)
    session.add(person)
    session.flush()
    return person


PERSON_FIELDS = ("name", "phone", "phone_public", "party_member", "home_building_id")


def update_person(session: Session, person_id: int, *, caller: Caller | None = None, **changes) -> Person:
    """Change a person's name, phone, public-board flag, party membership or home building.

    With a `caller`, the person must be one the caller reaches (`covers_person`) and a new home building must lie
    in the caller's jurisdiction; OutOfJurisdiction otherwise.
    """
    person = session.get(Person, person_id)
    if person is None:
        raise NotFound(f"no person with id {person_id}")
    unknown = set(changes) - set(PERSON_FIELDS)
    if unknown:
        raise StaffError(f"cannot change {', '.join(sorted(unknown))}")
    if "name" in changes and not (changes["name"] or "").strip():
        raise StaffError("a person needs a name")
    required = sorted(k for k in ("phone_public", "party_member") if k in changes and changes[k] is None)
    if required:
        raise StaffError(f"{', '.join(required)} is true or false, never null")
    if caller is not None:
        person_in_reach(session.connection(), person_id, caller)
    if changes.get("home_building_id") is not None:
        home = changes["home_building_id"]
        codes = building_codes(session.connection(), [home])
        if home not in codes:
            raise NotFound(f"no building with id {home} (home building)")
        ensure_target_allowed(codes[home], caller, f"the new home building {home}")
    for k, v in changes.items():
        setattr(person, k, v.strip() if k == "name" else v)
    session.flush()
    return person


def person_dict(person: Person) -> dict:
    """A person as plain data (phone included: callers mask it by jurisdiction)."""
    return {"id": person.id, "name": person.name, "phone": person.phone, "phone_public": person.phone_public,
            "party_member": person.party_member, "home_building_id": person.home_building_id}


def assignment_dict(a: StaffAssignment) -> dict:
    """An assignment as plain data."""
    role = a.role.value if isinstance(a.role, StaffRole) else a.role
    ttype = a.target_type.value if isinstance(a.target_type, TargetType) else a.target_type
    return {
        "id": a.id, "person_id": a.person_id, "role": role, "role_label": ROLE_LABELS.get(role),
        "target_type": ttype, "target_id": _target_id(a), "households": a.households,
        "valid_from": a.valid_from, "valid_to": a.valid_to,
    }


def _target_type(a: StaffAssignment) -> str:
    return a.target_type.value if isinstance(a.target_type, TargetType) else a.target_type


def _target_id(a: StaffAssignment) -> int:
    target = {"grid": a.grid_id, "micro_grid": a.micro_grid_id, "building": a.building_id, "unit": a.unit_id}[
        _target_type(a)]
    assert target is not None  # the table's check constraint: the column of the target type is set
    return target


def get_person(session: Session, person_id: int) -> Person:
    """A person on the register; NotFound when there is none."""
    person = session.get(Person, person_id)
    if person is None:
        raise NotFound(f"there is no person {person_id}")
    return person


def get_assignment(session: Session, assignment_id: int) -> StaffAssignment:
    """An assignment (in force or not); NotFound when there is none."""
    a = session.get(StaffAssignment, assignment_id)
    if a is None:
        raise NotFound(f"there is no assignment {assignment_id}")
    return a


def assignment_code(session: Session, a: StaffAssignment) -> str | None:
    """The jurisdiction code of an assignment: its target's, on the day the assignment starts."""
    return target_code(session, _target_type(a), _target_id(a), a.valid_from)


def home_building_code(conn: Connection, building_id: int | None) -> str | None:
    """The jurisdiction code of a person's home building (None without one); NotFound when there is no building."""
    if building_id is None:
        return None
    codes = building_codes(conn, [building_id])
    if building_id not in codes:
        raise NotFound(f"there is no building {building_id}")
    return codes[building_id]


def resolve_target(session: Session, target_type: str, target_id: int | None = None,
                   code: str | None = None) -> tuple[str, int]:
    """(target type, target id) of an assignment named by id, or a grid or micro-grid by its code."""
    ttype = normalise_target_type(target_type)
    if target_id is not None:
        return ttype, target_id
    if not code or ttype not in ("grid", "micro_grid"):
        raise StaffError("give target_id (or target_code for a grid or micro-grid)")
    model = Grid if ttype == "grid" else MicroGrid
    found = session.scalar(select(model.id).where(model.code == code))
    if found is None:
        raise NotFound(f"no {ttype.replace('_', '-')} with code {code}")
    return ttype, found


def _check_role_target(role: str, target_type: str) -> None:
    if target_type not in ROLE_TARGETS[role]:
        allowed = " or ".join(sorted(ROLE_TARGETS[role]))
        raise StaffError(f"a {role} ({ROLE_LABELS[role]}) is assigned to a {allowed}, not a {target_type}")


def create_assignment(session: Session, person_id: int, role: str, target_type: str, target_id: int,
                      households: int | None = None, valid_from: dt.date | str | None = None,
                      valid_to: dt.date | str | None = None, caller: Caller | None = None) -> StaffAssignment:
    """Give a person a role over a target from `valid_from` (today by default) until `valid_to` (open).

    With a `caller`, both the target (its jurisdiction on `valid_from`) and the person (tied today to a unit the
    caller covers: `covers_person`) must be the caller's; OutOfJurisdiction otherwise. So no one can pull a person
    of another community into their own grid and then read or change them.
    """
    role = normalise_role(role)
    target_type = normalise_target_type(target_type)
    _check_role_target(role, target_type)
    if session.get(Person, person_id) is None:
        raise NotFound(f"no person with id {person_id}")
    start = as_date(valid_from) or today()
    end = as_date(valid_to)
    if end is not None and end < start:
        raise StaffError(f"the assignment ends ({end}) before it starts ({start})")
    model = {"grid": Grid, "micro_grid": MicroGrid, "building": Building, "unit": Unit}[target_type]
    target = session.get(model, target_id)
    if target is None:
        raise NotFound(f"no {target_type} with id {target_id}")
    if caller is not None:
        ensure_target_allowed(target_code(session, target_type, target_id, start), caller,
                              f"{target_type.replace('_', '-')} {target_id}")
        person_in_reach(session.connection(), person_id, caller)
    if households is not None:
        if role != "steward":
            raise StaffError("only a steward's assignment counts households")
        if households <= 0:
            raise StaffError("households must be a positive number")
        available = (target.households if isinstance(target, Unit) else
                     session.scalar(text("SELECT coalesce(sum(households), 0) FROM units WHERE building_id = :b"),
                                    {"b": target_id}))
        if households > available:
            raise StaffError(f"the {target_type} has {available} households; cannot serve {households}")
    a = StaffAssignment(person_id=person_id, role=role, target_type=target_type, households=households,
                        valid_from=start, valid_to=end, **{f"{target_type}_id": target_id})
    session.add(a)
    session.flush()
    return a


def end_assignment(session: Session, assignment_id: int, valid_to: dt.date | str | None = None,
                   caller: Caller | None = None) -> StaffAssignment:
    """End an assignment on `valid_to` (today by default; it is no longer in force from that day); never deletes.

    With a `caller`, the assignment's target (its jurisdiction on `valid_from`) must be the caller's and its person
    one the caller reaches today (`covers_person`; an assignment in force ties its person to its target, so this
    refuses only ending a not-yet-started or past assignment of someone who is otherwise another community's).
    """
    a = session.get(StaffAssignment, assignment_id)
    if a is None:
        raise NotFound(f"no assignment with id {assignment_id}")
    if caller is not None:
        ensure_target_allowed(assignment_code(session, a), caller, f"assignment {assignment_id}")
        person_in_reach(session.connection(), a.person_id, caller)
    end = as_date(valid_to) or today()
    if a.valid_to is not None and a.valid_to <= end:
        raise StaffError(f"assignment {assignment_id} already ended on {a.valid_to}")
    if end < a.valid_from:
        raise StaffError(f"assignment {assignment_id} starts on {a.valid_from}; it cannot end on {end}")
    a.valid_to = end
    session.flush()
    return a


# ---------------------------------------------------------------------------------------------------------------
# import


def read_staff_table(source: str | Path | bytes, filename: str | None = None) -> pd.DataFrame:
    """Read a staff sheet (CSV in UTF-8 or GB18030, or XLSX) with Chinese or English headers, as canonical columns."""
    name = (filename or (str(source) if not isinstance(source, bytes) else "")).lower()
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if name.endswith((".xlsx", ".xlsm")) or data[:2] == b"PK":
        df = pd.read_excel(io.BytesIO(data), dtype=str, engine="openpyxl")
    elif name.endswith(".csv") or not name:
        text_ = None
        for enc in ("utf-8-sig", "gb18030"):
            try:
                text_ = data.decode(enc)
                break
            except UnicodeDecodeError:
                continue
        if text_ is None:
            raise StaffError("the CSV file is neither UTF-8 nor GB18030 text")
        df = pd.read_csv(io.StringIO(text_), dtype=str, keep_default_na=False)
    else:
        raise StaffError(f"{filename or str(source)}: expected a .csv or .xlsx file")
    return canonical_columns(df)


def canonical_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A staff sheet's columns renamed to the canonical names; StaffError when name or role is missing."""
    lookup = {_norm(alias): canon for canon, aliases in COLUMN_ALIASES.items() for alias in aliases}
    renamed: dict[str, str] = {}
    unknown: list[str] = []
    for col in df.columns:
        canon = lookup.get(_norm(col))
        if canon is None:
            unknown.append(str(col))
        elif canon in renamed.values():
            raise StaffError(f"two columns mean {canon!r} (the second is {col!r})")
        else:
            renamed[col] = canon
    df = df.rename(columns=renamed)[list(renamed.values())]
    for col in ("name", "role"):
        if col not in df.columns:
            raise StaffError(f"the file has no {col!r} column ({' / '.join(COLUMN_ALIASES[col][:3])}); "
                             f"columns not understood: {', '.join(unknown) or 'none'}")
    df = df.fillna("").astype(str).apply(lambda s: s.str.strip())
    # Excel turns codes into numbers and dates into timestamps; keep codes as digit strings.
    for col in ("target_code", "community_code", "building_code", "home_community_code", "home_building_code",
                "building_id", "home_building_id", "unit_number", "households"):
        if col in df.columns:
            df[col] = df[col].str.replace(r"\.0$", "", regex=True)
    df = df[(df != "").any(axis=1)].reset_index(drop=True)
    df.attrs["unknown_columns"] = unknown
    return df


_TRUE = {"1", "true", "yes", "y", "是", "对", "√", "公示", "党员", "中共党员"}
_FALSE = {"", "0", "false", "no", "n", "否", "不", "×", "非党员", "群众"}


def _flag(series: pd.Series, column: str, problems: list[ImportProblem]) -> pd.Series:
    low = series.str.lower()
    bad = ~low.isin(_TRUE | _FALSE)
    for i in np.flatnonzero(bad.to_numpy()):
        problems.append(ImportProblem(int(i) + 2, column, f"{series.iloc[i]!r} is not yes/no (是/否)"))
    return low.isin(_TRUE)


def _dates(series: pd.Series, column: str, problems: list[ImportProblem], default: dt.date | None) -> list:
    out = []
    for i, v in enumerate(series.tolist()):
        try:
            out.append(as_date(v[:10] if re.match(r"^\d{4}-\d{2}-\d{2}[ T]", v) else v.replace("/", "-"), default))
        except StaffError as exc:
            problems.append(ImportProblem(i + 2, column, str(exc)))
            out.append(None)
    return out


def _lookup(conn: Connection, sql: str, **params) -> pd.DataFrame:
    return pd.DataFrame(conn.execute(text(sql), params).mappings().all())


def import_staff(session: Session, source: str | Path | bytes | pd.DataFrame, filename: str | None = None,
                 default_valid_from: dt.date | None = None,
                 caller: Caller | None = None) -> ImportResult:
    """Import people and their assignments from a sheet, all or nothing; the `caller`'s jurisdiction vets every row.

    One row per assignment (a person repeats on several rows); a row with a role but no target only registers the
    person. A row names a registered person by ``person_id`` (人员ID), else people are matched to the register by
    name and phone. Targets: ``target_code`` (grid or micro-grid code), or a building by ``community_code`` +
    ``building_code`` (or ``building_id``), plus ``unit_number`` for a unit. Raises StaffImportError listing every
    problem by spreadsheet row when anything is wrong.

    With a `caller` (over HTTP), each row's target and a new person's home building must lie in the caller's
    jurisdiction, a ``person_id`` must be a person the caller reaches (`covers_person`; "no person N in your
    jurisdiction" whether they are someone else's or do not exist), and name-and-phone matching only considers
    the people the caller reaches (a namesake elsewhere gets a new register entry, never this caller's role).
    """
    allowed = caller.covers if caller is not None else None
    df = canonical_columns(source) if isinstance(source, pd.DataFrame) else read_staff_table(source, filename)
    for col in COLUMN_ALIASES:
        if col not in df.columns:
            df[col] = ""
    df = df.fillna("").astype(str)
    n = len(df)
    problems: list[ImportProblem] = []
    if n == 0:
        raise StaffImportError([ImportProblem(1, None, "the file has no data rows")])
    conn = session.connection()
    start_default = default_valid_from or today()

    for i in np.flatnonzero((df["name"] == "").to_numpy()).tolist():
        problems.append(ImportProblem(i + 2, "name", "empty name"))
    roles = [_ROLES_BY_NORM.get(_norm(v)) if v else None for v in df["role"]]
    for i, (raw, role) in enumerate(zip(df["role"], roles, strict=True)):
        if raw and role is None:
            problems.append(ImportProblem(i + 2, "role", f"unknown role {raw!r}"))
    phone_public = _flag(df["phone_public"], "phone_public", problems)
    party = _flag(df["party_member"], "party_member", problems)
    valid_from = _dates(df["valid_from"], "valid_from", problems, start_default)
    valid_to = _dates(df["valid_to"], "valid_to", problems, None)
    households = pd.to_numeric(df["households"].replace("", np.nan), errors="coerce")
    for i in np.flatnonzero((households.isna() & (df["households"] != "")).to_numpy()).tolist():
        problems.append(ImportProblem(i + 2, "households", f"{df['households'].iloc[i]!r} is not a number"))
    for i in np.flatnonzero((households <= 0).to_numpy()).tolist():
        problems.append(ImportProblem(i + 2, "households", "households must be positive"))

    # Buildings by id or by (community code, building code): one lookup for the whole file.
    blds = _lookup(conn, "SELECT b.id, b.code, c.code AS community_code FROM buildings b "
                         "LEFT JOIN communities c ON c.id = b.community_id")
    if blds.empty:
        blds = pd.DataFrame(columns=["id", "code", "community_code"])
    by_code = {(r.community_code, r.code): int(r.id) for r in blds.itertuples() if r.code}
    known_ids = set(blds["id"].astype(int).tolist())

    def building_of(prefix: str, i: int) -> int | None:
        bid, bcode = df[f"{prefix}building_id"].iloc[i], df[f"{prefix}building_code"].iloc[i]
        ccode = df[f"{prefix}community_code"].iloc[i]
        if bid:
            if not bid.isdigit() or int(bid) not in known_ids:
                problems.append(ImportProblem(i + 2, f"{prefix}building_id", f"no building with id {bid}"))
                return None
            return int(bid)
        if bcode:
            if not ccode and len(bcode) > 12:  # a community code and building code written together
                ccode, bcode = bcode[:12], bcode[12:]
            key = (ccode, bcode)
            if key not in by_code:
                problems.append(ImportProblem(i + 2, f"{prefix}building_code",
                                              f"no building {bcode!r} in community {ccode or '(none given)'}"))
                return None
            return by_code[key]
        return None

    home = [building_of("home_", i) for i in range(n)]
    grids = {r.code: int(r.id) for r in _lookup(conn, "SELECT id, code FROM grids").itertuples()}
    micros = {r.code: int(r.id) for r in _lookup(conn, "SELECT id, code FROM micro_grids").itertuples()}
    unit_rows = _lookup(conn, "SELECT id, building_id, number, households FROM units")
    units = ({(int(r.building_id), int(r.number)): (int(r.id), int(r.households)) for r in unit_rows.itertuples()}
             if not unit_rows.empty else {})

    targets: list[tuple[str, int] | None] = []
    for i in range(n):
        role = roles[i]
        ttype_raw, code, unit_no = df["target_type"].iloc[i], df["target_code"].iloc[i], df["unit_number"].iloc[i]
        has_building = bool(df["building_code"].iloc[i] or df["building_id"].iloc[i])
        if not (ttype_raw or code or has_building or unit_no):
            targets.append(None)  # register the person only
            continue
        if ttype_raw:
            t = TARGET_ALIASES.get(_norm(ttype_raw))
            if t is None:
                problems.append(ImportProblem(i + 2, "target_type", f"unknown target type {ttype_raw!r}"))
                targets.append(None)
                continue
        elif unit_no:
            t = "unit"
        elif has_building:
            t = "building"
        else:
            t = "micro_grid" if len(code) in (17, 18, 19) else "grid"
        if role is not None and t not in ROLE_TARGETS[role]:
            problems.append(ImportProblem(i + 2, "target_type",
                                          f"a {ROLE_LABELS[role]} is assigned to a "
                                          f"{' or '.join(TARGET_LABELS[x] for x in sorted(ROLE_TARGETS[role]))}, "
                                          f"not a {TARGET_LABELS[t]}"))
            targets.append(None)
            continue
        if t in ("grid", "micro_grid"):
            table = grids if t == "grid" else micros
            if code not in table:
                problems.append(ImportProblem(i + 2, "target_code", f"no {t.replace('_', '-')} with code {code!r}"))
                targets.append(None)
            else:
                targets.append((t, table[code]))
            continue
        if not has_building and code:
            df.loc[i, "building_code"] = code  # the building given in target_code
        b = building_of("", i)
        if b is None:
            if not problems or problems[-1].row != i + 2:
                problems.append(ImportProblem(i + 2, "building_code", "no building given for this target"))
            targets.append(None)
            continue
        if t == "building":
            targets.append(("building", b))
            continue
        if not unit_no.isdigit() or (b, int(unit_no)) not in units:
            problems.append(ImportProblem(i + 2, "unit_number", f"building {b} has no unit {unit_no!r}"))
            targets.append(None)
            continue
        uid, uhh = units[(b, int(unit_no))]
        if not np.isnan(households.iloc[i]) and households.iloc[i] > uhh:
            problems.append(ImportProblem(i + 2, "households",
                                          f"the unit has {uhh} households; cannot serve {int(households.iloc[i])}"))
        targets.append(("unit", uid))

    for i in range(n):
        if targets[i] is not None and roles[i] is None:
            problems.append(ImportProblem(i + 2, "role", "a target needs a role"))
        if not np.isnan(households.iloc[i]) and roles[i] != "steward":
            problems.append(ImportProblem(i + 2, "households", "only a steward's assignment counts households"))
        if valid_to[i] is not None and valid_from[i] is not None and valid_to[i] < valid_from[i]:
            problems.append(ImportProblem(i + 2, "valid_to", "ends before it starts"))

    # People named by register id: they must exist and be the caller's; one answer for both, so an import cannot
    # probe for people elsewhere.
    named_ids: dict[int, int] = {}  # row -> person id
    for i, raw in enumerate(df["person_id"]):
        if raw:
            if not raw.isdigit():
                problems.append(ImportProblem(i + 2, "person_id", f"{raw!r} is not a person id"))
            else:
                named_ids[i] = int(raw)
    reach = people_in_reach(conn, named_ids.values(), allowed)
    where = "in your jurisdiction" if allowed is not None else "on the register"
    for i, pid in named_ids.items():
        if pid not in reach:
            problems.append(ImportProblem(i + 2, "person_id", f"no person {pid} {where}"))
        elif reach[pid]["name"] != df["name"].iloc[i]:
            problems.append(ImportProblem(i + 2, "name", f"person {pid} is {reach[pid]['name']!r} on the register, "
                                                         f"not {df['name'].iloc[i]!r}"))

    if allowed is not None:
        codes = building_codes(conn, [t[1] for t in targets if t and t[0] == "building"] +
                               [b for b in home if b is not None], start_default)
        unit_building = {v[0]: k[0] for k, v in units.items()}
        grid_code = {v: k for k, v in grids.items()}
        micro_code = {v: k for k, v in micros.items()}
        unit_codes = building_codes(conn, [unit_building[t[1]] for t in targets if t and t[0] == "unit"], start_default)
        for i, tgt in enumerate(targets):
            if tgt is None:
                code = None
            elif tgt[0] == "grid":
                code = grid_code[tgt[1]]
            elif tgt[0] == "micro_grid":
                code = micro_code[tgt[1]]
            elif tgt[0] == "building":
                code = codes.get(tgt[1])
            else:
                code = unit_codes.get(unit_building[tgt[1]])
            own_home = home[i]
            if (tgt is not None or (own_home is None and i not in named_ids)) and not allowed(code):
                problems.append(ImportProblem(i + 2, None, f"the target ({code or 'no jurisdiction'}) lies outside "
                                                           "your jurisdiction"))
            if own_home is not None and i not in named_ids and not allowed(codes.get(own_home)):
                problems.append(ImportProblem(i + 2, "home_building_code",
                                              f"the home building ({codes.get(own_home) or 'no jurisdiction'}) lies "
                                              "outside your jurisdiction"))
    if problems:
        raise StaffImportError(sorted(problems, key=lambda p: p.row))

    # People: by register id where the sheet gives one, else one per distinct (name, phone) in the file, matched
    # to the register by name and phone among the people the caller reaches (`covers_person`): someone of another
    # community with the same name is a different person to this caller, never silently taken over.
    keys = [("#id", str(named_ids[i])) if i in named_ids else (name, phone)
            for i, (name, phone) in enumerate(zip(df["name"], df["phone"], strict=True))]
    existing: dict[tuple[str, str], int] = {}
    named = sorted({k[0] for k in keys if k[0] != "#id"})
    candidates = session.execute(select(Person.id, Person.name, Person.phone).where(Person.name.in_(named))
                                 .order_by(Person.id)).all()
    if allowed is not None:
        visible = people_in_reach(conn, [r.id for r in candidates], allowed)
        reach.update(visible)
        candidates = [r for r in candidates if r.id in visible]
    for r in candidates:
        existing.setdefault((r.name, r.phone or ""), r.id)
    person_of: dict[tuple[str, str], int] = {}
    created = matched = 0
    for i, key in enumerate(keys):
        if key in person_of:
            continue
        if key[0] == "#id":
            person_of[key] = int(key[1])
            matched += 1
            continue
        if key in existing:
            person_of[key] = existing[key]
            matched += 1
            continue
        p = create_person(session, key[0], key[1] or None, bool(phone_public.iloc[i]), bool(party.iloc[i]), home[i])
        person_of[key] = p.id
        created += 1
    touched = sorted({c for pid in person_of.values() if pid in reach for c in reach[pid]["codes"] if c})
    rows = []
    for i, tgt in enumerate(targets):
        if tgt is None:
            continue
        t = tgt[0]
        rows.append({
            "person_id": person_of[keys[i]], "role": roles[i], "target_type": t,
            "grid_id": tgt[1] if t == "grid" else None, "micro_grid_id": tgt[1] if t == "micro_grid" else None,
            "building_id": tgt[1] if t == "building" else None, "unit_id": tgt[1] if t == "unit" else None,
            "households": None if np.isnan(households.iloc[i]) else int(households.iloc[i]),
            "valid_from": valid_from[i], "valid_to": valid_to[i],
        })
    ids: list[int] = []
    if rows:
        ids = list(session.scalars(insert(StaffAssignment).returning(StaffAssignment.id), rows))
    session.flush()
    return ImportResult(rows=n, people_created=created, people_matched=matched, assignments_created=len(rows),
                        person_ids=sorted(set(person_of.values())), assignment_ids=ids, person_codes=touched)


# ---------------------------------------------------------------------------------------------------------------
# reads


def _codes_sql() -> str:
    """SQL (needs :d, :ts): every (person_id, code) a person is tied to on a day — home building and targets."""
    return f"""
        SELECT p.id AS person_id, coalesce(loc.grid_code, bc.code) AS code
        FROM people p JOIN buildings b ON b.id = p.home_building_id {BUILDING_LOCATION_SQL}
        UNION ALL
        SELECT a.person_id, g.code FROM staff_assignments a JOIN grids g ON g.id = a.grid_id WHERE {ACTIVE_SQL}
        UNION ALL
        SELECT a.person_id, m.code FROM staff_assignments a JOIN micro_grids m ON m.id = a.micro_grid_id
        WHERE {ACTIVE_SQL}
        UNION ALL
        SELECT a.person_id, coalesce(loc.grid_code, bc.code)
        FROM staff_assignments a JOIN units u ON u.id = a.unit_id JOIN buildings b ON b.id = u.building_id
        {BUILDING_LOCATION_SQL} WHERE {ACTIVE_SQL}
        UNION ALL
        SELECT a.person_id, coalesce(loc.grid_code, bc.code)
        FROM staff_assignments a JOIN buildings b ON b.id = a.building_id {BUILDING_LOCATION_SQL} WHERE {ACTIVE_SQL}
    """


def list_people(conn: Connection, prefix: str = "", at: dt.date | None = None, q: str | None = None,
                role: str | None = None, person_ids: list[int] | None = None, limit: int = 100,
                offset: int = 0) -> tuple[list[dict], int]:
    """People tied to a code starting with `prefix` on `at` ('' = everyone), with their codes and roles; (rows, total).

    `q` matches the name (substring), `role` keeps holders of that role on `at`.
    """
    d = at or today()
    role = normalise_role(role) if role else None
    sql = f"""
        WITH pc AS ({_codes_sql()}),
        roles AS (SELECT a.person_id, array_agg(DISTINCT a.role ORDER BY a.role) AS roles
                  FROM staff_assignments a WHERE {ACTIVE_SQL} GROUP BY a.person_id),
        hits AS (
            SELECT p.id, p.name, p.phone, p.phone_public, p.party_member, p.home_building_id,
                   coalesce(array_agg(DISTINCT pc.code) FILTER (WHERE pc.code IS NOT NULL), '{{}}') AS codes,
                   coalesce(r.roles, '{{}}') AS roles
            FROM people p LEFT JOIN pc ON pc.person_id = p.id LEFT JOIN roles r ON r.person_id = p.id
            WHERE (CAST(:q AS text) IS NULL OR p.name LIKE '%' || CAST(:q AS text) || '%')
              AND (CAST(:ids AS int[]) IS NULL OR p.id = ANY(CAST(:ids AS int[])))
            GROUP BY p.id, r.roles
            HAVING :prefix = '' OR bool_or(starts_with(pc.code, :prefix))
        )
        SELECT *, count(*) OVER () AS total FROM hits
        WHERE CAST(:role AS text) IS NULL OR CAST(:role AS text) = ANY(roles)
        ORDER BY id LIMIT :limit OFFSET :offset
    """
    rows = conn.execute(text(sql), {"d": d, "ts": end_of_day(d), "prefix": prefix or "", "q": q or None,
                                    "role": role, "ids": person_ids, "limit": limit, "offset": offset}).mappings().all()
    total = rows[0]["total"] if rows else 0
    return [{k: v for k, v in r.items() if k != "total"} for r in rows], int(total)


def list_assignments(conn: Connection, prefix: str = "", at: dt.date | None = None, person_id: int | None = None,
                     role: str | None = None, include_ended: bool = False, limit: int = 500,
                     offset: int = 0) -> tuple[list[dict], int]:
    """Assignments whose target's code starts with `prefix` (in force on `at`, or all with `include_ended`)."""
    d = at or today()
    role = normalise_role(role) if role else None
    where = "TRUE" if include_ended else ACTIVE_SQL
    sql = f"""
        WITH x AS (
            SELECT a.id, a.person_id, p.name AS person_name, a.role, a.target_type,
                   coalesce(a.grid_id, a.micro_grid_id, a.building_id, a.unit_id) AS target_id,
                   a.households, a.valid_from, a.valid_to,
                   coalesce(m.code, g.code, loc.grid_code, bc.code) AS code
            FROM staff_assignments a JOIN people p ON p.id = a.person_id
            LEFT JOIN grids g ON g.id = a.grid_id LEFT JOIN micro_grids m ON m.id = a.micro_grid_id
            LEFT JOIN units u ON u.id = a.unit_id
            LEFT JOIN buildings b ON b.id = coalesce(a.building_id, u.building_id)
            {BUILDING_LOCATION_SQL}
            WHERE {where}
              AND (CAST(:person AS int) IS NULL OR a.person_id = CAST(:person AS int))
              AND (CAST(:role AS text) IS NULL OR a.role = CAST(:role AS text))
        )
        SELECT *, count(*) OVER () AS total FROM x WHERE coalesce(code, '') LIKE :prefix || '%'
        ORDER BY id LIMIT :limit OFFSET :offset
    """
    rows = conn.execute(text(sql), {"d": d, "ts": end_of_day(d), "prefix": prefix or "", "person": person_id,
                                    "role": role, "limit": limit, "offset": offset}).mappings().all()
    total = rows[0]["total"] if rows else 0
    out = []
    for r in rows:
        item = {k: v for k, v in r.items() if k != "total"}
        item["role_label"] = ROLE_LABELS.get(item["role"])
        out.append(item)
    return out, int(total)
