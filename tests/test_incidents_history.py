"""A city's own class table and incidents with their history: dry runs, mapping, all-or-nothing, true counts.

The tiny district (tests/incident_data.py) here starts on 1 January 2024 and its NW/SW grid line moves from y=500 to
y=700 on 1 July 2025, so a file of two years of incidents is attributed to two boundary versions. The files are
generated (a few hundred incidents, GBK text, unknown categories and states, bad rows of every kind) and every
expected number comes from the generator.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid

import pytest
from fastapi.testclient import TestClient
from openpyxl import Workbook
from pyproj import Transformer
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.incidents import closed_loop as inc
from geo.incidents import heatmap as hm
from geo.incidents.classes import ClassTableRefused, import_class_table, parse_limit, plan_class_table
from geo.incidents.importer import HistoryOptions, IncidentImportRefused, import_incident_history
from geo.incidents.kpi import KpiQuery, compute_kpis
from geo.store import db
from tests.conftest import _create_database, _drop_database
from tests.incident_data import (
    CLASS_TABLE_HEADER,
    CLASS_TABLE_ROWS,
    CST,
    GRID_NW,
    GRID_SW,
    HISTORY_END,
    HISTORY_START,
    REDRAW,
    box,
    build_tiny_district,
    history_records,
    lonlat,
)

V0 = dt.datetime(2024, 1, 1, tzinfo=CST)


@pytest.fixture(scope="module")
def hist_engine():
    """The tiny district from 2024-01-01, redrawn on 2025-07-01 (module-wide; tests roll back their changes)."""
    url = _create_database("gridatlas_inc_history")
    db.migrate(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        build_tiny_district(conn)
        conn.execute(text("UPDATE boundary_versions SET valid_from = :v WHERE id = 1"), {"v": V0})
        for table in ("street_boundaries", "community_boundaries", "grid_boundaries"):
            conn.execute(text(f"UPDATE {table} SET valid_from = :v"), {"v": V0})
        conn.execute(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (2, :r, 'v2')"),
                     {"r": REDRAW})
        conn.execute(text("UPDATE grid_boundaries SET valid_to = :r WHERE grid_id IN (1, 2)"), {"r": REDRAW})
        conn.execute(text(f"INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom) VALUES "
                          f"(1, 2, :r, {box(0, 700, 500, 1000)}), (2, 2, :r, {box(0, 0, 500, 700)})"),
                     {"r": REDRAW})
    yield engine
    engine.dispose()
    _drop_database(url)


@pytest.fixture
def conn(hist_engine):
    c = hist_engine.connect()
    outer = c.begin()
    try:
        yield c
    finally:
        outer.rollback()
        c.close()


@pytest.fixture
def session(conn):
    s = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield s
    s.close()


@pytest.fixture
def client(hist_engine, session):
    from api.deps import session_dep
    from api.main import create_app

    app = create_app(hist_engine)

    def _session():
        yield session
        session.flush()

    app.dependency_overrides[session_dep] = _session
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _headers(session, role: str = "admin", jurisdiction: str | None = None) -> dict:
    from api.auth import issue_token
    from geo.access.users import create_user

    user = create_user(session, f"{role}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, role, jurisdiction)
    session.flush()
    return {"Authorization": f"Bearer {issue_token(user)}"}


def _csv(header: list[str], rows: list[list] | list[dict], encoding: str = "gbk") -> bytes:
    buf = io.StringIO()
    if rows and isinstance(rows[0], dict):
        w = csv.DictWriter(buf, fieldnames=header)
        w.writeheader()
        w.writerows(rows)  # type: ignore[arg-type]
    else:
        w2 = csv.writer(buf)
        w2.writerow(header)
        w2.writerows(rows)
    return buf.getvalue().encode(encoding)


def _write(tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _count(conn, table: str) -> int:
    return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def _audits(conn, action: str) -> int:
    return conn.execute(text("SELECT count(*) FROM audit_log WHERE action = :a"), {"a": action}).scalar_one()


# ---------------------------------------------------------------------------------------------------------------
# the class table


def test_parse_limit_reads_hours_days_and_working_days():
    assert parse_limit("24") == (24.0, None)
    assert parse_limit("24小时") == (24.0, None)
    assert parse_limit("3天") == (72.0, None)
    assert parse_limit("2个工作日") == (48.0, None)
    assert parse_limit("30分钟") == (0.5, None)
    assert parse_limit("2", unit_hours=24) == (48.0, None)
    assert parse_limit("") == (None, None)
    assert parse_limit("尽快")[0] is None and "not a number" in parse_limit("尽快")[1]
    assert parse_limit("0")[0] is None


def test_class_table_dry_run_then_import_gbk_csv(conn, tmp_path):
    """A GBK table: the dry run lists what is added and changed and writes nothing; the import then writes exactly
    that; existing classes and incidents keep working; names like 其他災情 are kept as written."""
    x, y = lonlat(250, 250)
    old = inc.create_incident(conn, lon=x, lat=y, class_code="A01", source="patrol", actor="t",
                              reported_at=dt.datetime(2025, 3, 1, tzinfo=CST))
    before = _count(conn, "incident_classes")
    path = _write(tmp_path, "分类.csv", _csv(CLASS_TABLE_HEADER, CLASS_TABLE_ROWS))
    plan = import_class_table(conn, path, dry_run=True)
    assert plan.encoding.upper() in ("GB18030", "GBK")
    assert any("'分类编码' as code" in line for line in plan.columns_read)
    assert [a["code"] for a in plan.added] == ["G", "G01", "G02", "G0201"]
    added = {a["code"]: a for a in plan.added}
    assert added["G01"]["time_limit_hours"] == 72 and added["G01"]["major_code"] == "G"
    assert added["G02"]["major_code"] == "G"  # the parent named by its name (城市管理)
    assert added["G02"]["name"] == "其他災情" and added["G02"]["time_limit_hours"] == 48
    assert added["G0201"]["time_limit_hours"] == 48  # no limit: the parent's
    assert plan.changed == [{"code": "A01", "record": 5, "changes": {"time_limit_hours": [24.0, 12.0],
                                                                     "department": [None, "环卫所"]}}]
    assert plan.kept == before - 1 and not plan.refused
    assert _count(conn, "incident_classes") == before  # the dry run wrote nothing

    done = import_class_table(conn, path)
    assert done.committed and _count(conn, "incident_classes") == before + 4
    a01 = inc.incident_class(conn, "A01")
    assert a01["time_limit_hours"] == 12 and a01["department"] == "环卫所" and a01["major_code"] == "A"
    assert inc.incident_class(conn, "G02")["name"] == "其他災情"
    # the old incident still reads; dispatching it now takes the new limit and the class's department
    inc.apply_transition(conn, old, actor="t", action="register")
    inc.apply_transition(conn, old, actor="t", action="dispatch")
    row = inc.get_incident(conn, old)
    assert row["time_limit_hours"] == 12 and row["department"] == "环卫所"
    # a filter on a major class reaches every level below it (G → G02 → G0201)
    x2, y2 = lonlat(700, 300)
    deep = inc.create_incident(conn, lon=x2, lat=y2, class_code="G0201", source="patrol", actor="t")
    rows, total = inc.list_incidents(conn, inc.IncidentFilter(class_code="G"))
    assert total == 1 and rows[0]["id"] == deep
    # a second run changes nothing
    again = plan_class_table(conn, path)
    assert not again.added and not again.changed and again.unchanged == 5


def test_class_table_flattened_two_levels(conn, tmp_path):
    """大类编码/大类名称/小类编码/小类名称 on every row (limits in days): the majors come from the minor rows."""
    header = ["大类编码", "大类名称", "小类编码", "小类名称", "时限（天）"]
    rows = [["K", "园林绿化", "K01", "树木倒伏", "1"], ["K", "园林绿化", "K02", "绿地损毁", "3"],
            ["L", "市政设施", "L01", "井盖缺失", "0.5"], ["A", "市容环境", "A06", "其他災情", "2"],
            ["M", "甲", "M01", "乙", "1"], ["M", "丙", "M02", "丁", "1"]]
    path = _write(tmp_path, "flat.csv", _csv(header, rows))
    plan = plan_class_table(conn, path)
    added = {a["code"]: a for a in plan.added}
    assert set(added) == {"K", "K01", "K02", "L", "L01", "A06", "M", "M01"}
    assert added["K01"]["major_code"] == "K" and added["K01"]["time_limit_hours"] == 24
    assert added["L01"]["time_limit_hours"] == 12 and added["K"]["name"] == "园林绿化"
    assert added["A06"]["major_code"] == "A" and "A" not in {c["code"] for c in plan.changed}  # A kept as it is
    # one major named twice with two names: the second naming is refused, and so is the minor class naming it so
    assert sorted((r["record"], r["code"]) for r in plan.refused) == [(6, "M"), (6, "M02")]
    assert any("read in days" in n for n in plan.notes)


def test_class_table_refusal_writes_nothing(conn, tmp_path):
    rows = [*CLASS_TABLE_ROWS, ["H01", "井盖缺失", "H", "24", ""], ["H02", "", "", "24", ""],
            ["G01", "违章建筑（重复）", "G", "24", ""], ["J1", "甲", "J2", "1", ""], ["J2", "乙", "J1", "1", ""]]
    path = _write(tmp_path, "bad.csv", _csv(CLASS_TABLE_HEADER, rows, "utf-8"))
    before = _count(conn, "incident_classes")
    plan = import_class_table(conn, path, dry_run=True)
    reasons = {r["record"]: r["reason"] for r in plan.refused}
    assert set(reasons) == {6, 7, 8, 9, 10}, reasons
    assert "parent 'H'" in reasons[6] and "no name" in reasons[7] and "appears again" in reasons[8]
    assert "own ancestor" in reasons[9] and "own ancestor" in reasons[10]
    with pytest.raises(ClassTableRefused) as exc:
        import_class_table(conn, path)
    assert exc.value.extra["plan"]["counts"]["refused"] == 5
    assert _count(conn, "incident_classes") == before


def test_class_table_xlsx_over_http(client, session, conn, tmp_path):
    wb = Workbook()
    ws = wb.active
    ws.append(["code", "name", "parent", "time_limit_hours", "department"])
    for r in CLASS_TABLE_ROWS:
        ws.append(r)
    data = io.BytesIO()
    wb.save(data)
    files = {"file": ("classes.xlsx", data.getvalue(),
                      "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")}
    admin = _headers(session)
    dry = client.post("/v1/incident-classes/import", files=files, data={"dry_run": "true"}, headers=admin)
    assert dry.status_code == 200, dry.text
    assert dry.json()["counts"] == {"records": 5, "added": 4, "changed": 1, "unchanged": 0, "kept": 29,
                                    "refused": 0}
    assert _audits(conn, "incident_classes.import.dry_run") == 1
    r = client.post("/v1/incident-classes/import", files=files, headers=admin)
    assert r.status_code == 201 and r.json()["committed"] is True
    assert _audits(conn, "incident_classes.import") == 1
    listed = {c["code"]: c for c in client.get("/v1/incident-classes", headers=admin).json()}
    assert listed["G02"]["name"] == "其他災情" and listed["G01"]["department"] == "城管执法中队"
    planner = _headers(session, "planner", "320505001")
    assert client.post("/v1/incident-classes/import", files=files, headers=planner).status_code == 403
    bad = {"file": ("c.csv", _csv(CLASS_TABLE_HEADER, [["X1", "某类", "NOPE", "1", ""]], "utf-8"), "text/csv")}
    refused = client.post("/v1/incident-classes/import", files=bad, headers=admin)
    assert refused.status_code == 422 and refused.json()["type"].endswith("/class-table-refused")
    assert refused.json()["plan"]["refused"][0]["record"] == 1


# ---------------------------------------------------------------------------------------------------------------
# incidents with history


def _load_classes(conn, tmp_path):
    import_class_table(conn, _write(tmp_path, "cls.csv", _csv(CLASS_TABLE_HEADER, CLASS_TABLE_ROWS)))


HEADER = ["案件编号", "上报时间", "问题类型", "状态", "经度", "纬度", "问题描述", "立案时间", "派遣时间", "结案时间"]


def test_history_dry_run_maps_categories_and_lists_unknown_ones(conn, tmp_path):
    _load_classes(conn, tmp_path)
    records, expect = history_records(300)
    path = _write(tmp_path, "事件.csv", _csv(HEADER, records))
    before = _count(conn, "incidents")
    report = import_incident_history(conn, path, HistoryOptions(dry_run=True))
    mapped = {m["category"]: (m["class_code"], m["how"]) for m in report.category_mapping}
    assert mapped["暴露垃圾"] == ("A01", "name") and mapped["E02"] == ("E02", "code")
    assert mapped["市容环境/道路不洁"] == ("A03", "name") and mapped["其他災情"] == ("G02", "name")
    assert {u["category"]: u["records"] for u in report.unknown_categories} == expect["unknown"]
    assert {s["state"]: s["to"] for s in report.state_mapping} == {
        "已结案": "closed", "处置中": "dispatched", "已立案": "registered", "不予立案": "rejected",
        "已作废": "cancelled", "待受理": "collected"}
    assert report.unknown_states == [{"state": "已归档", "records": 1}]
    kinds = {p["kind"] for p in report.problems}
    assert "unknown-category" in kinds and report.imported == 0 and not report.committed
    assert _count(conn, "incidents") == before

    with pytest.raises(IncidentImportRefused) as exc:
        import_incident_history(conn, path)
    assert exc.value.extra["report"]["counts"]["refused"] == report.refused
    assert _count(conn, "incidents") == before and _count(conn, "incident_events") == 0


def test_history_import_with_mapping_true_counts_history_attribution_kpis(conn, tmp_path):
    _load_classes(conn, tmp_path)
    records, expect = history_records(300)
    path = _write(tmp_path, "事件.csv", _csv(HEADER, records))
    options = HistoryOptions(category_map="违章搭建=G01", skip_refused=True, actor="tester")
    report = import_incident_history(conn, path, options)
    bad = {k: 0 for k in expect["bad"]}
    for p in report.problems:
        bad[p["kind"]] += 1
    assert bad == expect["bad"], report.problems
    assert report.records == 300 + sum(expect["bad"].values())
    assert report.imported == report.passing == expect["good"] == _count(conn, "incidents")
    assert report.by_state == dict(sorted(expect["by_state"].items()))
    assert report.committed and report.attribution["grid"] == expect["good"]
    assert report.attribution["versions"] == 2
    # history rows with the original times, in the loop's order
    closed_rec = next(r for r in records[:300] if r["状态"] == "已结案")
    (iid,) = conn.execute(text("SELECT incident_id FROM incident_events WHERE detail->>'external_id' = :e"),
                          {"e": closed_rec["案件编号"]}).one()
    events = inc.history(conn, iid)
    assert [e["action"] for e in events] == ["collect", "register", "dispatch", "handle", "report", "close"]
    assert events[0]["at"] == dt.datetime.fromisoformat(closed_rec["上报时间"]).replace(tzinfo=CST)
    assert events[-1]["at"] == dt.datetime.fromisoformat(closed_rec["结案时间"]).replace(tzinfo=CST)
    assert events[3]["detail"]["time"] == "inferred"  # no 处置时间 in the file: the next known time
    row = inc.get_incident(conn, iid)
    assert row["state"] == "closed" and row["due_at"] == row["dispatched_at"] + dt.timedelta(
        hours=inc.incident_class(conn, row["class_code"])["time_limit_hours"])
    # attributed by the boundaries in force at the report time: y=600 is NW before the redraw, SW after
    at600 = conn.execute(text(f"""SELECT i.reported_at < :r AS before, g.code FROM incidents i
        JOIN grids g ON g.id = i.grid_id WHERE ST_Y(ST_Transform(i.geom, 32651)) - {lonlat_y0()} BETWEEN 510 AND 690
        AND ST_X(ST_Transform(i.geom, 32651)) - {lonlat_x0()} < 490"""), {"r": REDRAW}).all()
    assert at600 and all(code == (GRID_NW if before else GRID_SW) for before, code in at600)
    # KPIs and the heatmap include them at once (rollups kept by triggers)
    k = compute_kpis(conn, KpiQuery(start=HISTORY_START, end=HISTORY_END))
    assert k["total"]["received"] == expect["good"]
    assert k["total"]["rejected"] == expect["by_state"]["rejected"]
    assert k["total"]["closed"] == expect["by_state"]["closed"]
    raw = compute_kpis(conn, KpiQuery(start=HISTORY_START, end=HISTORY_END), use_rollup=False)
    assert raw["total"] == k["total"]
    h = hm.build_heatmap(conn, hm.HeatmapQuery(start=HISTORY_START, end=HISTORY_END, cell_m=100, permutations=0))
    assert h.incident_count == expect["good"]
    # a second run finds them all and adds nothing
    again = import_incident_history(conn, path, options)
    assert again.imported == 0 and again.already_imported == expect["good"] - 0
    assert _count(conn, "incidents") == expect["good"]


def lonlat_x0() -> float:
    from tests.incident_data import X0
    return X0


def lonlat_y0() -> float:
    from tests.incident_data import Y0
    return Y0


def test_history_geojson_in_a_projected_crs_over_http(client, session, conn, tmp_path):
    """GeoJSON in UTM 51N (the old `crs` member), by a planner of the street; a dry run first, then the import,
    audited; a worker may not import, and incidents outside the caller's jurisdiction are refused."""
    _load_classes(conn, tmp_path)
    records, _ = history_records(40, seed=3)
    records = [r for r in records[:40] if r["问题类型"] != "违章搭建"]
    to_utm = Transformer.from_crs(4326, 32651, always_xy=True)
    feats = []
    for r in records:
        x, y = to_utm.transform(float(r["经度"]), float(r["纬度"]))
        props = {k: v for k, v in r.items() if k not in ("经度", "纬度") and v != ""}
        feats.append({"type": "Feature", "properties": props, "geometry": {"type": "Point", "coordinates": [x, y]}})
    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32651"}},
           "features": feats}
    files = {"file": ("history.geojson", json.dumps(doc, ensure_ascii=False).encode(), "application/geo+json")}
    planner = _headers(session, "planner", "320505001")
    dry = client.post("/v1/incidents/import", files=files, data={"dry_run": "true"}, headers=planner)
    assert dry.status_code == 200, dry.text
    body = dry.json()
    assert body["counts"]["passing"] == len(records) and body["counts"]["imported"] == len(records)
    assert "32651" in body["crs"] and not body["committed"]
    assert _count(conn, "incidents") == 0
    r = client.post("/v1/incidents/import", files=files, headers=planner)
    assert r.status_code == 201, r.text
    assert r.json()["counts"]["imported"] == len(records) == _count(conn, "incidents")
    assert _audits(conn, "incident.import") == 1 and _audits(conn, "incident.import.dry_run") == 1
    worker = _headers(session, "worker", GRID_NW)
    assert client.post("/v1/incidents/import", files=files, headers=worker).status_code == 403
    # a community leader's planner colleague elsewhere: every incident lies outside that jurisdiction
    other = _headers(session, "planner", "320505001002")
    files2 = {"file": ("h.geojson", json.dumps({**doc, "features": [
        {**f, "properties": {**f["properties"], "案件编号": "X" + f["properties"]["案件编号"]}} for f in feats
        if float(f["geometry"]["coordinates"][0]) - lonlat_x0() < 480]}, ensure_ascii=False).encode(),
        "application/geo+json")}
    refused = client.post("/v1/incidents/import", files=files2, headers=other)
    assert refused.status_code == 422, refused.text
    assert {p["kind"] for p in refused.json()["report"]["problems"]} == {"out-of-jurisdiction"}


def test_history_without_state_column_reads_the_state_from_its_times(conn, tmp_path):
    _load_classes(conn, tmp_path)
    x, y = lonlat(300, 300)
    rows = [["A", "2025-02-01 08:00", "暴露垃圾", x, y, "2025-02-01 09:00", "2025-02-01 10:00", "2025-02-02 10:00"],
            ["B", "2025-02-03 08:00", "其他災情", x, y, "2025-02-03 09:00", "", ""],
            ["C", "2025-02-04 08:00", "G0201", x, y, "", "", ""]]
    header = ["编号", "上报时间", "类别", "lon", "lat", "立案时间", "派遣时间", "办结时间"]
    path = _write(tmp_path, "t.csv", _csv(header, rows, "utf-8"))
    report = import_incident_history(conn, path)
    assert report.by_state == {"closed": 1, "collected": 1, "registered": 1}
    assert report.events == 6 + 2 + 1


def test_cli_classes_history_and_trust(tmp_path, monkeypatch):
    """The commands on a database of their own (they commit): class table, incident history, trusted key."""
    from typer.testing import CliRunner

    import cli.incidents
    from cli import app

    url = _create_database("gridatlas_inc_cli")
    try:
        db.migrate(url)
        engine = db.make_engine(url)
        with engine.begin() as c:
            build_tiny_district(c)
            c.execute(text("UPDATE boundary_versions SET valid_from = :v"), {"v": V0})
            for table in ("street_boundaries", "community_boundaries", "grid_boundaries"):
                c.execute(text(f"UPDATE {table} SET valid_from = :v"), {"v": V0})
        monkeypatch.setattr(cli.incidents, "engine", lambda: engine)
        run = CliRunner()
        classes = _write(tmp_path, "分类.csv", _csv(CLASS_TABLE_HEADER, CLASS_TABLE_ROWS))
        dry = run.invoke(app, ["incidents", "classes", "import", str(classes), "--dry-run"], env={"COLUMNS": "200"})
        assert dry.exit_code == 0, dry.output
        assert "其他災情" in dry.output and "added 4" in dry.output and "changed 1" in dry.output
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM incident_classes WHERE code LIKE 'G%'")).scalar() == 0
        done = run.invoke(app, ["incidents", "classes", "import", str(classes)])
        assert done.exit_code == 0, done.output

        records, expect = history_records(120, seed=5)
        path = _write(tmp_path, "事件.csv", _csv(HEADER, records))
        refused = run.invoke(app, ["incidents", "import", str(path)], env={"COLUMNS": "200"})
        assert refused.exit_code == 1 and "unknown category '违章搭建'" in refused.output
        ok = run.invoke(app, ["incidents", "import", str(path), "--category", "违章搭建=G01", "--skip-refused",
                              "--json"])
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.output)["counts"]["imported"] == expect["good"]
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM incidents")).scalar() == expect["good"]
            assert c.execute(text("SELECT count(*) FROM audit_log WHERE action IN "
                                  "('incident.import', 'incident_classes.import')")).scalar() == 2
        from geo.access.apikeys import create_key
        from geo.access.users import create_user
        with Session(engine) as s:
            user = create_user(s, "hotline", uuid.uuid4().hex, "worker", "320505001")
            s.flush()
            row, _ = create_key(s, user, "12345")
            s.commit()
            prefix = row.prefix
        trust = run.invoke(app, ["incidents", "trust-key", prefix])
        assert trust.exit_code == 0 and "trusted" in trust.output, trust.output
        with engine.connect() as c:
            assert c.execute(text("SELECT trusted FROM api_keys WHERE prefix = :p"), {"p": prefix}).scalar()
        assert run.invoke(app, ["incidents", "trust-key", "nosuchkey"]).exit_code == 1
        engine.dispose()
    finally:
        _drop_database(url)
