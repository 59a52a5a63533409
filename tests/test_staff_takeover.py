"""Write-side takeovers of people across communities: every staff write is decided on the jurisdiction of what it
touches (the assignment's target AND the person), never on the caller's own.

A planner of community A must not pull a person of community B into A's grid, building or unit (after which the
phone would show and PATCH would pass), change B's person, end B's assignment, or name B's person in an import;
the same writes inside A pass, and an admin may do them all. `extra_stewards` of a steward plan answers the same
for a person of B as for an id that does not exist (no existence oracle). Audit entries of a cross-community
write land under the person's units too, so the owning community sees them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from api.problems import PROBLEM_MEDIA_TYPE
from geo.staff import register as staff

PHONE_B = "13911112222"


@dataclass
class Two:
    """Community A (the planner's) and B (the victim's), with a target of each kind in A, and one person each."""

    a: str
    b: str
    grid_a: int
    grid_a_code: str
    building_a: int
    unit_a: int
    grid_b: int
    person_a: int
    person_b: int
    assignment_a: int
    assignment_b: int


def _pick(conn) -> tuple[dict, dict]:
    """Two communities, each with a building inside one of its grids that has a unit."""
    rows = conn.execute(text("SELECT b.id AS building, min(u.id) AS unit FROM buildings b JOIN units u "
                             "ON u.building_id = b.id GROUP BY b.id ORDER BY b.id")).all()
    codes = staff.building_codes(conn, [r.building for r in rows])
    by_community: dict[str, dict] = {}
    for r in rows:
        code = codes.get(r.building)
        if code and len(code) == 15 and code[:12] not in by_community:
            by_community[code[:12]] = {"community": code[:12], "grid_code": code, "building": r.building,
                                       "unit": r.unit}
        if len(by_community) == 2:
            break
    assert len(by_community) == 2, "the test district needs two communities with a building in a grid"
    a, b = by_community.values()
    for x in (a, b):
        x["grid"] = conn.execute(text("SELECT id FROM grids WHERE code = :c"), {"c": x["grid_code"]}).scalar_one()
    return a, b


@pytest.fixture
def two(db_session) -> Two:
    conn = db_session.connection()
    a, b = _pick(conn)
    pa = staff.create_person(db_session, "甲社区人", "13900001111", home_building_id=a["building"])
    pb = staff.create_person(db_session, "乙社区人", PHONE_B, home_building_id=b["building"])
    aa = staff.create_assignment(db_session, pa.id, "volunteer", "grid", a["grid"], valid_from="2025-01-01")
    ab = staff.create_assignment(db_session, pb.id, "volunteer", "grid", b["grid"], valid_from="2025-01-01")
    db_session.flush()
    assert staff.person_codes(db_session, pb.id) == [b["grid_code"]]  # B's person is tied to B only
    return Two(a["community"], b["community"], a["grid"], a["grid_code"], a["building"], a["unit"], b["grid"],
               pa.id, pb.id, aa.id, ab.id)


@pytest.fixture
def planner_a(make_user, two) -> dict:
    return make_user("planner", two.a)["headers"]


@pytest.fixture
def admin(make_user) -> dict:
    return make_user("admin")["headers"]


def _refused(r) -> None:
    assert r.status_code in (403, 404), r.text
    assert r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert PHONE_B not in r.text


def _count(db_session, sql: str, **params) -> int:
    return db_session.execute(text(sql), params).scalar()


def _targets(two: Two) -> dict[str, int]:
    return {"grid": two.grid_a, "building": two.building_a, "unit": two.unit_a}


# ------------------------------------------------------------------------------------------------ assignments


@pytest.mark.parametrize("target_type", ["grid", "building", "unit"])
def test_planner_cannot_assign_another_communitys_person(client, db_session, two, planner_a, target_type):
    before = _count(db_session, "SELECT count(*) FROM staff_assignments WHERE person_id = :p", p=two.person_b)
    r = client.post("/v1/assignments", json={"person_id": two.person_b, "role": "volunteer",
                                             "target_type": target_type, "target_id": _targets(two)[target_type]},
                    headers=planner_a)
    _refused(r)
    assert r.json()["type"].endswith("/out-of-jurisdiction")
    assert _count(db_session, "SELECT count(*) FROM staff_assignments WHERE person_id = :p", p=two.person_b) == before
    # …so the person stays out of reach: no phone, no change
    _refused(client.get(f"/v1/people/{two.person_b}", headers=planner_a))
    listed = client.get("/v1/people", params={"limit": 1000, "q": "乙社区人"}, headers=planner_a).json()
    assert two.person_b not in {p["id"] for p in listed["items"]}
    _refused(client.patch(f"/v1/people/{two.person_b}", json={"phone": "13000000000"}, headers=planner_a))
    assert _count(db_session, "SELECT phone FROM people WHERE id = :p", p=two.person_b) == PHONE_B


def test_planner_cannot_assign_by_grid_code_either(client, two, planner_a):
    _refused(client.post("/v1/assignments", json={"person_id": two.person_b, "role": "volunteer",
                                                  "target_type": "grid", "target_code": two.grid_a_code},
                         headers=planner_a))


@pytest.mark.parametrize("target_type", ["grid", "building", "unit"])
def test_planner_assigns_own_person_and_admin_anyone(client, db_session, two, planner_a, admin, target_type):
    target = _targets(two)[target_type]
    ok = client.post("/v1/assignments", json={"person_id": two.person_a, "role": "volunteer",
                                              "target_type": target_type, "target_id": target}, headers=planner_a)
    assert ok.status_code == 201, ok.text
    by_admin = client.post("/v1/assignments", json={"person_id": two.person_b, "role": "volunteer",
                                                    "target_type": target_type, "target_id": target}, headers=admin)
    assert by_admin.status_code == 201, by_admin.text
    # the admin's cross-community assignment is audited where B sees it, not only under A's target
    codes = set(db_session.execute(text(
        "SELECT jurisdiction_code FROM audit_log WHERE action = 'staff.assignment.create' AND target_id = :i"),
        {"i": str(by_admin.json()["id"])}).scalars())
    assert by_admin.json()["code"] in codes and any(c and c.startswith(two.b) for c in codes)


def test_person_without_any_tie_is_the_districts(client, db_session, two, planner_a, admin):
    """Registered by an admin with no home building and no assignment: only district-wide callers place them."""
    loose = staff.create_person(db_session, "无归属", "13800009999")
    db_session.flush()
    body = {"person_id": loose.id, "role": "volunteer", "target_type": "grid", "target_id": two.grid_a}
    _refused(client.post("/v1/assignments", json=body, headers=planner_a))
    assert client.post("/v1/assignments", json=body, headers=admin).status_code == 201


# ---------------------------------------------------------------------------------------------- change, end


def test_patch_follows_the_persons_jurisdiction(client, db_session, two, planner_a, admin):
    _refused(client.patch(f"/v1/people/{two.person_b}", json={"name": "改名"}, headers=planner_a))
    assert _count(db_session, "SELECT name FROM people WHERE id = :p", p=two.person_b) == "乙社区人"
    ok = client.patch(f"/v1/people/{two.person_a}", json={"name": "甲改名"}, headers=planner_a)
    assert ok.status_code == 200 and ok.json()["name"] == "甲改名"
    by_admin = client.patch(f"/v1/people/{two.person_b}", json={"phone": "13000000001"}, headers=admin)
    assert by_admin.status_code == 200, by_admin.text
    codes = set(db_session.execute(text(
        "SELECT jurisdiction_code FROM audit_log WHERE action = 'staff.person.update' AND target_id = :i"),
        {"i": str(two.person_b)}).scalars())
    assert codes and all(c and c.startswith(two.b) for c in codes)  # B's office sees the change of B's person


def test_moving_own_person_home_into_another_community_is_refused(client, db_session, two, planner_a):
    b_building = _count(db_session, "SELECT home_building_id FROM people WHERE id = :p", p=two.person_b)
    _refused(client.patch(f"/v1/people/{two.person_a}", json={"home_building_id": b_building}, headers=planner_a))
    assert _count(db_session, "SELECT home_building_id FROM people WHERE id = :p", p=two.person_a) == two.building_a


def test_end_follows_the_target_and_person(client, db_session, two, planner_a, admin):
    r = client.post(f"/v1/assignments/{two.assignment_b}/end", json={}, headers=planner_a)
    _refused(r)
    assert _count(db_session, "SELECT valid_to FROM staff_assignments WHERE id = :i", i=two.assignment_b) is None
    ok = client.post(f"/v1/assignments/{two.assignment_a}/end", json={}, headers=planner_a)
    assert ok.status_code == 200, ok.text
    assert client.post(f"/v1/assignments/{two.assignment_b}/end", json={}, headers=admin).status_code == 200


# ---------------------------------------------------------------------------------------------------- import


def _sheet(rows: list[dict]) -> bytes:
    import pandas as pd

    return pd.DataFrame(rows).to_csv(index=False).encode("utf-8")


def _import(client, headers, rows):
    return client.post("/v1/staff/import", files={"file": ("staff.csv", _sheet(rows))}, headers=headers)


def _totals(db_session) -> tuple[int, int]:
    return (_count(db_session, "SELECT count(*) FROM people"),
            _count(db_session, "SELECT count(*) FROM staff_assignments"))


def test_import_naming_another_communitys_person_is_refused_whole(client, db_session, two, planner_a):
    before = _totals(db_session)
    rows = [
        {"name": "新人", "role": "volunteer", "target_code": two.grid_a_code},  # fine on its own
        {"person_id": two.person_b, "name": "乙社区人", "role": "volunteer", "target_code": two.grid_a_code},
    ]
    r = _import(client, planner_a, [{"person_id": "", **rows[0]}, rows[1]])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert [p["row"] for p in r.json()["problems"]] == [3]
    assert _totals(db_session) == before  # all or nothing
    # the same answer as for an id that does not exist: the import cannot probe the register
    ghost = _count(db_session, "SELECT coalesce(max(id), 0) + 1000 FROM people")
    g = _import(client, planner_a, [{"person_id": ghost, "name": "乙社区人", "role": "volunteer",
                                     "target_code": two.grid_a_code}])
    assert g.status_code == 422
    mine = r.json()["problems"][0]["message"].replace(str(two.person_b), "N")
    assert mine == g.json()["problems"][0]["message"].replace(str(ghost), "N") == "no person N in your jurisdiction"


def test_import_by_name_and_phone_never_matches_another_communitys_person(client, db_session, two, planner_a):
    before = _count(db_session, "SELECT count(*) FROM staff_assignments WHERE person_id = :p", p=two.person_b)
    r = _import(client, planner_a, [{"name": "乙社区人", "phone": PHONE_B, "role": "volunteer",
                                     "target_code": two.grid_a_code}])
    assert r.status_code == 201, r.text
    assert r.json()["people_created"] == 1 and r.json()["people_matched"] == 0
    assert _count(db_session, "SELECT count(*) FROM staff_assignments WHERE person_id = :p", p=two.person_b) == before
    _refused(client.get(f"/v1/people/{two.person_b}", headers=planner_a))


def test_import_of_own_person_and_admin_import_pass(client, db_session, two, planner_a, admin):
    own = _import(client, planner_a, [{"person_id": two.person_a, "name": "甲社区人", "role": "volunteer",
                                       "target_code": two.grid_a_code}])
    assert own.status_code == 201, own.text
    assert own.json()["people_matched"] == 1 and own.json()["assignments_created"] == 1
    by_name = _import(client, planner_a, [{"name": "甲社区人", "phone": "13900001111", "role": "volunteer",
                                           "target_code": two.grid_a_code}])
    assert by_name.status_code == 201 and by_name.json()["people_matched"] == 1
    by_admin = _import(client, admin, [{"person_id": two.person_b, "name": "乙社区人", "role": "volunteer",
                                        "target_code": two.grid_a_code}])
    assert by_admin.status_code == 201, by_admin.text
    assert _count(db_session, "SELECT count(*) FROM staff_assignments WHERE person_id = :p AND grid_id = :g",
                  p=two.person_b, g=two.grid_a) == 1


def test_import_home_building_outside_is_refused(client, db_session, two, planner_a):
    b_building = db_session.execute(text("SELECT home_building_id FROM people WHERE id = :p"),
                                    {"p": two.person_b}).scalar()
    before = _totals(db_session)
    r = _import(client, planner_a, [{"name": "住乙", "role": "volunteer", "target_code": two.grid_a_code,
                                     "home_building_id": b_building}])
    assert r.status_code == 422 and r.json()["problems"][0]["column"] == "home_building_code"
    assert _totals(db_session) == before


# ------------------------------------------------------------------------------------------ existence oracle


def test_extra_stewards_do_not_reveal_people_elsewhere(client, db_session, two, planner_a, admin):
    ghost = _count(db_session, "SELECT coalesce(max(id), 0) + 1000 FROM people")
    body = {"time_limit_s": 0, "details": False}
    foreign = client.post("/v1/coverage/plan", json={**body, "extra_stewards": [two.person_b]}, headers=planner_a)
    missing = client.post("/v1/coverage/plan", json={**body, "extra_stewards": [ghost]}, headers=planner_a)
    assert foreign.status_code == missing.status_code == 422, (foreign.text, missing.text)
    f, m = foreign.json(), missing.json()
    assert f["type"] == m["type"] and f["title"] == m["title"] and set(f) == set(m)
    assert re.sub(r"\d+", "N", f["detail"]) == re.sub(r"\d+", "N", m["detail"]) == "no person N in your jurisdiction"
    # the caller's own people are accepted, and an admin reaches B's person
    own = client.post("/v1/coverage/plan", json={**body, "extra_stewards": [two.person_a]}, headers=planner_a)
    assert own.status_code == 200, own.text
    assert client.post("/v1/coverage/plan", json={**body, "community": two.b, "extra_stewards": [two.person_b]},
                       headers=admin).status_code == 200
