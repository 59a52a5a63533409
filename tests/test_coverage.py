"""Staff coverage: statuses and totals on a hand-made community, history by date, the API, exports, staff import,
and the generator's planted gaps at scale 0.05 checked against counts computed independently from the district."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.access.users import Principal
from geo.staff import register as staff
from geo.staff.coverage import CoverageError, coverage_report, gaps, gaps_csv, gaps_xlsx, scope_prefix
from tests import staff_data as sd

RULES = sd.RULES


@pytest.fixture
def small(migrated_engine):
    """The hand-made community with the staff described in `staff_data.staff`."""
    return migrated_engine, sd.build_staffed(migrated_engine)


def _by(frame: pd.DataFrame, key: str = "id") -> dict:
    return {r[key]: r for r in frame.to_dict("records")}


def test_statuses_and_totals_on_a_known_community(small):
    engine, ids = small
    with engine.connect() as conn:
        r = coverage_report(conn, "", "2025-03-01", rules=RULES)
    units = _by(r.units)
    assert units[11]["status"] == "covered" and units[11]["stewarded"] == 12
    assert units[12]["status"] == "covered"
    assert units[21]["status"] == "missing_role" and units[21]["unserved"] == 5
    assert units[31]["status"] == "over_capacity" and units[31]["stewarded"] == 8  # 管家三 serves 18
    # B3's building steward fills what unit stewards leave, unit by unit: 4 of unit 2's 8 households.
    assert units[32]["stewarded"] == 4 and units[32]["unserved"] == 4 and units[32]["unit_heads"] == 0
    assert units[32]["status"] == "missing_role"
    b = _by(r.buildings)
    assert b[1]["status"] == "covered"
    assert b[2]["status"] == "missing_role" and b[2]["building_heads"] == 0
    assert b[3]["status"] == "missing_role" and b[3]["units_without_head"] == 1
    assert b[4]["status"] == "empty" and b[4]["grid_code"] == sd.GRID_E
    g = _by(r.grids, "code")
    assert g[sd.GRID_W]["status"] == "over_capacity"  # four part-time workers, the rule allows three
    assert g[sd.GRID_W]["grid_worker_parttime"] == 4
    assert g[sd.GRID_E]["status"] == "missing_role"  # no grid chief
    assert g[sd.GRID_W]["households"] == 42 and g[sd.GRID_E]["households"] == 16
    t = r.totals
    assert (t["grids"], t["grids_with_fulltime_worker"], t["share_grids_with_fulltime_worker"]) == (2, 2, 1.0)
    assert (t["buildings"], t["buildings_with_head"]) == (3, 2)
    assert (t["units"], t["units_with_head"], t["share_units_with_head"]) == (5, 4, 0.8)
    assert (t["households"], t["households_with_steward"]) == (58, 12 + 10 + 15 + 8 + 4)
    st = _by(r.stewards, "name")
    assert st["管家三"]["households"] == 18 and st["管家三"]["status"] == "over"
    assert st["管家五"]["status"] == "under" and st["管家一"]["status"] == "ok"
    assert (t["stewards"], t["stewards_over"], t["stewards_under"]) == (5, 1, 1)


def test_dates_pick_assignments_and_boundaries_in_force(small):
    engine, ids = small
    with engine.begin() as conn:
        with Session(bind=conn) as session:
            staff.end_assignment(session, ids["assignments"]["s1"], "2025-05-01")
            session.flush()
        before = coverage_report(conn, "", "2025-04-30", rules=RULES)
        after = coverage_report(conn, "", "2025-07-01", rules=RULES)
        # ended, not deleted: the row is still there with its period
        row = conn.execute(text("SELECT valid_from, valid_to FROM staff_assignments WHERE id = :i"),
                           {"i": ids["assignments"]["s1"]}).one()
    assert row == (dt.date(2025, 1, 1), dt.date(2025, 5, 1))
    assert _by(before.units)[11]["stewarded"] == 12
    assert _by(after.units)[11]["stewarded"] == 0 and _by(after.units)[11]["status"] == "missing_role"
    # the fourth part-timer left on 2025-04-01: grid W is no longer over capacity
    assert _by(before.grids, "code")[sd.GRID_W]["grid_worker_parttime"] == 3
    # from 2025-06-01 the new boundary puts B2 in the east grid
    assert _by(before.buildings)[2]["grid_code"] == sd.GRID_W
    assert _by(after.buildings)[2]["grid_code"] == sd.GRID_E
    assert _by(after.grids, "code")[sd.GRID_E]["households"] == 36
    assert _by(after.grids, "code")[sd.GRID_W]["households"] == 22


def test_scope_filters_and_prefix_rules(small):
    engine, _ = small
    with engine.connect() as conn:
        east = coverage_report(conn, sd.GRID_E, "2025-03-01", rules=RULES)
    assert set(east.grids["code"]) == {sd.GRID_E}
    assert set(east.buildings["id"]) == {3, 4}
    assert set(east.units["id"]) == {31, 32}
    assert east.totals["households"] == 16
    assert set(east.stewards["name"]) == {"管家三", "管家四", "管家五"}
    assert scope_prefix(street=sd.STREET, community=sd.COMMUNITY) == sd.COMMUNITY
    with pytest.raises(CoverageError):
        scope_prefix(street="320505002", community=sd.COMMUNITY)
    with pytest.raises(CoverageError):
        scope_prefix(grid="123")


def test_gap_exports(small):
    engine, _ = small
    with engine.connect() as conn:
        r = coverage_report(conn, "", "2025-03-01", rules=RULES)
    g = gaps(r)
    assert "缺楼栋长" in set(g["problem"])  # B2
    unit_b2 = g[(g["level"] == "单元") & (g["building_code"] == "00002")].iloc[0]
    assert "5户无管家" in unit_b2["problem"]
    assert any("管家三共服务18户，超过15户" in p for p in g["problem"])
    csv = gaps_csv(r).decode("utf-8-sig")
    assert csv.splitlines()[0].startswith("层级,状态,社区编码")
    back = pd.read_excel(io.BytesIO(gaps_xlsx(r)), sheet_name=None)
    assert set(back) == {"缺口", "汇总"} and len(back["缺口"]) == len(g)


# ----------------------------------------------------------------------------------------------- staff register


def test_register_assign_and_refusals(small):
    engine, ids = small
    with engine.begin() as conn, Session(bind=conn) as session:
        p = staff.create_person(session, "新管家", "13800000000", home_building_id=3)
        a = staff.create_assignment(session, p.id, "管家", "单元", 32, households=4, valid_from="2025-02-01")
        assert (a.role, a.target_type, a.unit_id, a.households) == ("steward", "unit", 32, 4)
        with pytest.raises(staff.StaffError, match="building_head"):
            staff.create_assignment(session, p.id, "building_head", "unit", 32)
        with pytest.raises(staff.StaffError, match="has 8 households"):
            staff.create_assignment(session, p.id, "steward", "unit", 32, households=9)
        with pytest.raises(staff.NotFound):
            staff.create_assignment(session, p.id, "unit_head", "unit", 999)
        with pytest.raises(staff.StaffError, match="ends"):
            staff.create_assignment(session, p.id, "unit_head", "unit", 32, valid_from="2025-03-01",
                                    valid_to="2025-02-01")
        staff.end_assignment(session, a.id, "2025-04-01")
        with pytest.raises(staff.StaffError, match="already ended"):
            staff.end_assignment(session, a.id, "2025-05-01")
        assert staff.target_code(session, "unit", 32, dt.date(2025, 3, 1)) == sd.GRID_E
        assert staff.target_code(session, "building", 2, dt.date(2025, 3, 1)) == sd.GRID_W
        assert staff.target_code(session, "building", 2, dt.date(2025, 7, 1)) == sd.GRID_E
        session.flush()
        r = coverage_report(conn, "", "2025-03-01", rules=RULES)
    assert _by(r.units)[32]["stewarded"] == 8  # the new steward's 4 plus the building steward's 4


def _sheet(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_import_chinese_xlsx_and_english_csv(small, tmp_path):
    engine, _ = small
    zh = _sheet([
        {"姓名": "陈一", "电话": "13900000001", "党员": "是", "角色": "单元长", "社区编码": sd.COMMUNITY,
         "楼栋编码": "00003", "单元号": "2", "起始日期": "2025-02-01", "居住楼栋": "00003",
         "居住社区编码": sd.COMMUNITY},
        {"姓名": "陈一", "电话": "13900000001", "党员": "是", "角色": "管家", "社区编码": sd.COMMUNITY,
         "楼栋编码": "00003", "单元号": "2", "户数": "4", "起始日期": "2025-02-01"},
        {"姓名": "周二", "电话": "", "角色": "楼栋长", "社区编码": sd.COMMUNITY, "楼栋编码": "00002",
         "起始日期": "2025-02-01"},
        {"姓名": "吴三", "角色": "网格长", "网格编码": sd.GRID_E, "起始日期": "2025-02-01"},
    ])
    path = tmp_path / "staff.xlsx"
    zh.to_excel(path, index=False)
    en = tmp_path / "staff.csv"
    pd.DataFrame([{"name": "Zheng Si", "role": "volunteer", "target_code": sd.GRID_W, "valid_from": "2025-02-01"}]
                 ).to_csv(en, index=False)
    with engine.begin() as conn, Session(bind=conn) as session:
        result = staff.import_staff(session, path)
        assert (result.rows, result.people_created, result.assignments_created) == (4, 3, 4)
        again = staff.import_staff(session, en)
        assert again.assignments_created == 1
        chen = conn.execute(text("SELECT party_member, home_building_id FROM people WHERE name = '陈一'")).one()
        assert chen == (True, 3)
        session.flush()
        r = coverage_report(conn, "", "2025-03-01", rules=RULES)
    assert _by(r.units)[32]["unit_heads"] == 1 and _by(r.units)[32]["stewarded"] == 8
    assert _by(r.buildings)[2]["building_heads"] == 1
    assert _by(r.grids, "code")[sd.GRID_E]["grid_chief"] == 1


def test_import_refuses_bad_rows_and_writes_nothing(small):
    engine, _ = small
    bad = _sheet([
        {"姓名": "甲", "角色": "单元长", "社区编码": sd.COMMUNITY, "楼栋编码": "00003", "单元号": "9"},
        {"姓名": "", "角色": "楼栋长", "社区编码": sd.COMMUNITY, "楼栋编码": "00002"},
        {"姓名": "丙", "角色": "厨师", "网格编码": sd.GRID_W},
        {"姓名": "丁", "角色": "楼栋长", "网格编码": sd.GRID_W},
        {"姓名": "戊", "角色": "管家", "社区编码": sd.COMMUNITY, "楼栋编码": "00001", "单元号": "1", "户数": "30"},
    ])
    buf = io.BytesIO()
    bad.to_excel(buf, index=False)
    with engine.begin() as conn, Session(bind=conn) as session:
        before = conn.execute(text("SELECT count(*) FROM staff_assignments")).scalar()
        with pytest.raises(staff.StaffImportError) as exc:
            staff.import_staff(session, buf.getvalue(), filename="bad.xlsx")
        rows = {p.row for p in exc.value.problems}
        assert rows == {2, 3, 4, 5, 6}
        assert "no unit" in str(exc.value) or "has no unit" in str(exc.value)
        assert conn.execute(text("SELECT count(*) FROM staff_assignments")).scalar() == before
        assert conn.execute(text("SELECT count(*) FROM people WHERE name IN ('甲','丙','丁','戊')")).scalar() == 0
        outside = _sheet([{"姓名": "己", "角色": "网格长", "网格编码": sd.GRID_W}])
        with pytest.raises(staff.StaffImportError, match="outside your jurisdiction"):
            staff.import_staff(session, outside, caller=Principal("east-planner", "planner", sd.GRID_E))


# ---------------------------------------------------------------------------------------------------------------
# HTTP, on the hand-made community


@pytest.fixture
def small_api(small):
    """(client, headers by user) on the hand-made community: admin, community planner, grid-E worker/planner."""
    engine, ids = small
    users = {"admin": ("admin", None), "planner": ("planner", sd.COMMUNITY), "east": ("worker", sd.GRID_E),
             "east_planner": ("planner", sd.GRID_E)}
    for client, headers in sd.api_client(engine, users):
        yield client, headers, ids


def test_coverage_api_filters_to_jurisdiction(small_api):
    client, h, _ = small_api
    r = client.get("/v1/coverage", params={"at": "2025-03-01"}, headers=h["admin"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totals"]["households"] == 58 and body["totals"]["units_with_head"] == 4
    assert {s["name"] for s in body["stewards_over"]} == {"管家三"}
    assert {s["name"] for s in body["stewards_under"]} == {"管家五"}
    east = client.get("/v1/coverage", params={"at": "2025-03-01"}, headers=h["east"]).json()
    assert east["scope"] == sd.GRID_E and {g["code"] for g in east["grids"]} == {sd.GRID_E}
    assert {u["id"] for u in east["units"]} == {31, 32}
    # asking for the whole community narrows to the caller's grid; asking for the other grid is refused
    assert client.get("/v1/coverage", params={"community": sd.COMMUNITY, "at": "2025-03-01"},
                      headers=h["east"]).json()["scope"] == sd.GRID_E
    refused = client.get("/v1/coverage", params={"grid": sd.GRID_W}, headers=h["east"])
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/coverage").status_code == 401
    gaps_only = client.get("/v1/coverage", params={"at": "2025-03-01", "only_gaps": True}, headers=h["admin"]).json()
    assert {u["id"] for u in gaps_only["units"]} == {21, 31, 32}


def test_gap_export_api(small_api):
    client, h, _ = small_api
    r = client.get("/v1/coverage/gaps", params={"at": "2025-03-01", "format": "csv"}, headers=h["east"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    text_ = r.content.decode("utf-8-sig")
    assert "缺单元长" in text_ and "00002" not in text_  # B2 lies in grid W, outside the caller's grid
    x = client.get("/v1/coverage/gaps", params={"at": "2025-03-01"}, headers=h["planner"])
    assert x.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert len(pd.read_excel(io.BytesIO(x.content), sheet_name="缺口")) > 0


def test_people_and_assignments_api(small_api):
    client, h, ids = small_api
    # a planner of grid E may register someone living there and give them a unit of grid E
    r = client.post("/v1/people", json={"name": "新单元长", "phone": "13700000000", "home_building_id": 3},
                    headers=h["east_planner"])
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    a = client.post("/v1/assignments", json={"person_id": pid, "role": "单元长", "target_type": "unit",
                                             "target_id": 32, "valid_from": "2025-02-01"}, headers=h["east_planner"])
    assert a.status_code == 201, a.text
    assert a.json()["code"] == sd.GRID_E and a.json()["role"] == "unit_head"
    # …but not in grid W, and a worker may not write at all
    w = client.post("/v1/assignments", json={"person_id": pid, "role": "unit_head", "target_type": "unit",
                                             "target_id": 11}, headers=h["east_planner"])
    assert w.status_code == 403, w.text
    assert client.post("/v1/assignments", json={"person_id": pid, "role": "unit_head", "target_type": "unit",
                                                "target_id": 32}, headers=h["east"]).status_code == 403
    bad = client.post("/v1/assignments", json={"person_id": pid, "role": "building_head", "target_type": "unit",
                                               "target_id": 32}, headers=h["east_planner"])
    assert bad.status_code == 422 and "building" in bad.json()["detail"]
    chief = client.post("/v1/assignments", json={"person_id": pid, "role": "grid_chief", "target_type": "grid",
                                                 "target_code": sd.GRID_E}, headers=h["east_planner"])
    assert chief.status_code == 201, chief.text
    # end it: history kept
    end = client.post(f"/v1/assignments/{a.json()['id']}/end", json={"valid_to": "2025-03-01"},
                      headers=h["east_planner"])
    assert end.status_code == 200 and end.json()["valid_to"] == "2025-03-01"
    detail = client.get(f"/v1/people/{pid}", headers=h["east"]).json()
    assert {x["id"] for x in detail["assignments"]} >= {a.json()["id"]}
    assert detail["phone"] == "13700000000"
    listed = client.get("/v1/people", params={"role": "steward", "at": "2025-03-01"}, headers=h["east"]).json()
    assert {p["name"] for p in listed["items"]} == {"管家三", "管家四", "管家五"}
    assert client.get("/v1/people", headers=h["east"]).json()["total"] < \
        client.get("/v1/people", headers=h["admin"]).json()["total"]
    # someone tied only to grid W is not visible to grid E
    wang = ids["people"]["王网格长"]
    assert client.get(f"/v1/people/{wang}", headers=h["east"]).status_code == 403
    assert client.get(f"/v1/people/{wang}", headers=h["planner"]).status_code == 200
    # writes are audited
    from sqlalchemy import text as sql

    with client.app.state.engine.connect() as conn:
        actions = set(conn.execute(sql("SELECT action FROM audit_log")).scalars())
    assert {"staff.person.create", "staff.assignment.create", "staff.assignment.end"} <= actions


def test_phone_visible_only_when_public_or_covered():
    from api.routers.staff import person_out

    row = {"id": 1, "name": "甲", "phone": "13600000000", "phone_public": False, "codes": [sd.GRID_W], "roles": []}
    east = Principal("e", "worker", sd.GRID_E)
    west = Principal("w", "worker", sd.GRID_W)
    assert person_out(row, east)["phone"] is None and person_out(row, east)["phone_hidden"]
    assert person_out(row, west)["phone"] == "13600000000"
    assert person_out({**row, "phone_public": True}, east)["phone"] == "13600000000"
    # one rule for the register and the coverage report: public, or a unit of the person's in the jurisdiction
    assert not staff.phone_visible(False, [sd.GRID_W], east.covers)
    assert staff.phone_visible(False, [sd.GRID_E, sd.GRID_W], east.covers)
    assert staff.phone_visible(True, [], east.covers) and not staff.phone_visible(False, [], east.covers)


def test_import_api(small_api):
    client, h, _ = small_api
    buf = io.BytesIO()
    pd.DataFrame([{"姓名": "钱七", "角色": "楼栋长", "社区编码": sd.COMMUNITY, "楼栋编码": "00003"}]).to_excel(
        buf, index=False)
    ok = client.post("/v1/staff/import", files={"file": ("staff.xlsx", buf.getvalue())}, headers=h["east_planner"])
    assert ok.status_code == 201, ok.text
    assert ok.json()["assignments_created"] == 1
    buf = io.BytesIO()
    pd.DataFrame([{"姓名": "孙八", "角色": "楼栋长", "社区编码": sd.COMMUNITY, "楼栋编码": "00001"}]).to_excel(
        buf, index=False)
    refused = client.post("/v1/staff/import", files={"file": ("staff.xlsx", buf.getvalue())},
                          headers=h["east_planner"])
    assert refused.status_code == 422 and refused.json()["problems"][0]["row"] == 2


def test_cli_import_report_and_plan(small, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli.staff
    from cli import app

    engine, _ = small
    monkeypatch.setattr(cli.staff, "engine", lambda: engine)
    runner = CliRunner()
    sheet = tmp_path / "staff.csv"
    pd.DataFrame([{"姓名": "冯九", "角色": "单元长", "社区编码": sd.COMMUNITY, "楼栋编码": "00003", "单元号": "2",
                   "起始日期": "2025-02-01"}]).to_csv(sheet, index=False, encoding="utf-8-sig")
    dry = runner.invoke(app, ["staff", "import", str(sheet), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM people WHERE name = '冯九'")).scalar() == 0
    done = runner.invoke(app, ["staff", "import", str(sheet)])
    assert done.exit_code == 0 and "assignments_created" in done.output
    out = tmp_path / "gaps.xlsx"
    rep = runner.invoke(app, ["coverage", "report", "--at", "2025-03-01", "--gaps", str(out), "--json"])
    assert rep.exit_code == 0, rep.output
    assert '"units_with_head": 5' in rep.output and out.exists()
    plan = runner.invoke(app, ["coverage", "plan", "--community", sd.COMMUNITY, "--at", "2025-03-01"])
    assert plan.exit_code == 0, plan.output
    assert "dry run" in plan.output and "320505001001" in plan.output
    bad = tmp_path / "bad.csv"
    pd.DataFrame([{"name": "x", "role": "cook"}]).to_csv(bad, index=False)
    refused = runner.invoke(app, ["staff", "import", str(bad)])
    assert refused.exit_code == 1 and "row 2" in refused.output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_log WHERE action = 'staff.import'")).scalar() == 1


# ---------------------------------------------------------------------------------------------------------------
# the generator's district (scale 0.05): planted gaps, checked against counts computed here from the district


def test_generator_planted_gaps_match_independent_counts(district, db_session):
    r = coverage_report(db_session.connection(), "")  # today: every generated assignment has started
    t = r.totals
    a = district.assignments
    a = a[pd.to_datetime(a["valid_from"]).dt.date <= staff.today()]
    units = district.units
    # comprehensive grids with a full-time worker
    comp = district.grids[district.grids["kind"] == "comprehensive"]
    fulltime = set(a.loc[a["role"] == "grid_worker_fulltime", "target_code"])
    assert t["comprehensive_grids"] == len(comp) and t["grids"] == len(district.grids)
    assert t["grids_with_fulltime_worker"] == int(comp["code"].isin(fulltime).sum())
    # buildings with households, and with a building head
    bhh = units.groupby("building_ref")["households"].sum()
    lived_in = set(bhh[bhh > 0].index.astype(int))
    heads = set(a.loc[a["role"] == "building_head", "target_building_ref"].astype(int))
    assert (t["buildings"], t["buildings_with_head"]) == (len(lived_in), len(lived_in & heads))
    # units with a unit head
    uh = a[a["role"] == "unit_head"]
    unit_heads = set(zip(uh["target_building_ref"].astype(int), uh["target_unit_number"].astype(int), strict=True))
    occupied = units[units["households"] > 0]
    keys = list(zip(occupied["building_ref"].astype(int), occupied["number"].astype(int), strict=True))
    assert t["units"] == len(occupied) and t["units_with_head"] == sum(k in unit_heads for k in keys)
    # households with a steward: per unit, the stewards' households up to the unit's
    st = a[a["role"] == "steward"].copy()
    st["key"] = list(zip(st["target_building_ref"].astype(int), st["target_unit_number"].astype(int), strict=True))
    claims = st.groupby("key")["households"].sum()
    served = np.minimum(occupied["households"].to_numpy(), claims.reindex(keys).fillna(0).to_numpy())
    assert t["households"] == int(occupied["households"].sum())
    assert t["households_with_steward"] == int(served.sum())
    # stewards over 15 and under 5, households summed over their assignments
    load = st.groupby("person_ref")["households"].sum()
    assert t["stewards"] == len(load)
    assert (t["stewards_over"], t["stewards_under"]) == (int((load > 15).sum()), int((load < 5).sum()))
    # the generator plants about 5 % gaps and a few stewards out of range
    for share in ("share_grids_with_fulltime_worker", "share_buildings_with_head", "share_units_with_head",
                  "share_households_with_steward"):
        assert 0.85 <= t[share] < 1.0, (share, t[share])
    assert t["stewards_over"] > 0 and t["stewards_under"] > 0
    # every unit status agrees with its own numbers
    u = r.units
    assert ((u["status"] == "missing_role") == ((u["unit_heads"] == 0) | (u["unserved"] > 0))).all()


def test_coverage_api_on_the_district(client, make_user, db_session):
    community = db_session.execute(text("SELECT code FROM communities ORDER BY code LIMIT 1")).scalar()
    leader = make_user("leader", community)
    body = client.get("/v1/coverage", headers=leader["headers"]).json()
    assert body["scope"] == community and body["grids"] and body["units"]
    assert all(g["code"].startswith(community) for g in body["grids"])
    assert all(b["scope_code"].startswith(community) for b in body["buildings"])
    admin = make_user("admin")
    whole = client.get("/v1/coverage", headers=admin["headers"]).json()
    assert whole["totals"]["households"] > body["totals"]["households"]
    # everyone named in the report is listed with a phone the caller may see (their jurisdiction covers them)
    assert body["people"] and all(p["phone"] for p in body["people"].values())
