"""Incidents: the closed-loop state machine, KPI arithmetic, attribution across a redraw, Open311, heatmap bins.

Most tests use a tiny hand-built district (one street, two communities, three grids, three buildings) in a fresh
database, so every expected number below is counted by hand. Each test runs in a transaction rolled back at its
end. A few tests at the end use the suite's synthetic district to check the same code at scale.
"""

from __future__ import annotations

import datetime as dt
import uuid
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.schemas.incidents import Open311Created, Open311Error, Open311Request, Open311Service
from geo.incidents import closed_loop as inc
from geo.incidents import heatmap as hm
from geo.incidents import hexagons as hx
from geo.incidents import hotspots as hs
from geo.incidents.errors import IncidentError
from geo.incidents.kpi import KpiQuery, compute_kpis
from geo.store import db
from geo.store.load import copy_rows
from tests.conftest import _create_database, _drop_database
from tests.incident_data import (
    COMM_W,
    CST,
    EPSG,
    GRID_E,
    GRID_NW,
    GRID_SW,
    REDRAW,
    STREET,
    X0,
    Y0,
    box,
    build_tiny_district,
    lonlat,
)


@pytest.fixture(scope="module")
def tiny_engine():
    """A fresh migrated database holding the tiny district (module-wide; tests roll back their changes)."""
    url = _create_database("gridatlas_incidents")
    db.migrate(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        build_tiny_district(conn)
    yield engine
    engine.dispose()
    _drop_database(url)


@pytest.fixture
def tiny(tiny_engine):
    """A connection inside a transaction rolled back after the test."""
    conn = tiny_engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        outer.rollback()
        conn.close()


@pytest.fixture
def tiny_session(tiny):
    session = Session(bind=tiny, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield session
    session.close()


@pytest.fixture
def tiny_client(tiny_engine, tiny_session):
    """An HTTP client on the app over the tiny district, its sessions joined to the test's transaction."""
    from api.deps import session_dep
    from api.main import create_app

    app = create_app(tiny_engine)

    def _session():
        yield tiny_session
        tiny_session.flush()

    app.dependency_overrides[session_dep] = _session
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def tiny_user(tiny_session):
    """Create a user in the test transaction; returns its bearer headers and the User."""
    from api.auth import issue_token
    from geo.access.users import create_user

    def _make(role: str = "admin", jurisdiction: str | None = None) -> dict:
        user = create_user(tiny_session, f"{role}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, role, jurisdiction)
        tiny_session.flush()
        return {"user": user, "headers": {"Authorization": f"Bearer {issue_token(user)}"}}

    return _make


def report(conn, x=250.0, y=750.0, class_code="A01", at=None, **kw) -> int:
    lon, lat = lonlat(x, y)
    return inc.create_incident(conn, lon=lon, lat=lat, class_code=class_code, source=kw.pop("source", "patrol"),
                               actor="tester", reported_at=at, **kw)


def incident(conn, incident_id: int) -> dict:
    return inc.get_incident(conn, incident_id)


# ---------------------------------------------------------------------------------------------------------------
# the state machine


def test_transition_table_is_consistent_data():
    states = inc.states()
    assert set(states) == {"collected", "registered", "rejected", "dispatched", "handled", "reported", "closed",
                           "evaluated", "cancelled", "suspended"}
    actions = set(inc.actions())
    assert {"register", "reject", "dispatch", "handle", "report", "close", "evaluate", "cancel", "return", "rework",
            "extend", "suspend", "resume"} <= actions
    # every open state has a way forward, every finished one none
    for code, s in states.items():
        assert bool(inc.allowed_transitions(code)) == (s.is_open or code == "closed"), code


def _drive(conn, iid, path):
    for action in path:
        inc.apply_transition(conn, iid, actor="tester", action=action, hours=24 if action == "extend" else None)


#: A path from 'collected' to each state.
PATH_TO = {
    "collected": [],
    "registered": ["register"],
    "rejected": ["reject"],
    "dispatched": ["register", "dispatch"],
    "handled": ["register", "dispatch", "handle"],
    "reported": ["register", "dispatch", "handle", "report"],
    "closed": ["register", "dispatch", "handle", "report", "close"],
    "evaluated": ["register", "dispatch", "handle", "report", "close", "evaluate"],
    "cancelled": ["register", "cancel"],
    "suspended": ["register", "dispatch", "suspend"],
}


@pytest.mark.parametrize("state", sorted(PATH_TO))
def test_every_action_from_every_state(tiny, state):
    """From each state every action is tried: the legal ones land where the table says, the others raise
    IllegalTransition listing exactly the allowed moves, and nothing changes."""
    legal = {t.action: t.to_state for t in inc.allowed_transitions(state)}
    for action in inc.actions():
        sp = tiny.begin_nested()
        iid = report(tiny)
        _drive(tiny, iid, PATH_TO[state])
        assert incident(tiny, iid)["state"] == state
        events_before = len(inc.history(tiny, iid))
        if action in legal:
            t = inc.apply_transition(tiny, iid, actor="worker1", action=action,
                                     hours=12 if action == "extend" else None, note=f"do {action}")
            assert t.to_state == legal[action]
            row = incident(tiny, iid)
            assert row["state"] == legal[action]
            events = inc.history(tiny, iid)
            assert len(events) == events_before + 1
            last = events[-1]
            assert (last["from_state"], last["to_state"], last["action"], last["actor"], last["note"]) == (
                state, legal[action], action, "worker1", f"do {action}")
            assert last["at"] is not None and last["at"] >= events[-2]["at"]
        else:
            with pytest.raises(inc.IllegalTransition) as err:
                inc.apply_transition(tiny, iid, actor="worker1", action=action, hours=1)
            assert [a.action for a in err.value.allowed] == list(legal)
            assert incident(tiny, iid)["state"] == state
            assert len(inc.history(tiny, iid)) == events_before
        sp.rollback()


def test_transition_by_target_state_and_unknown_names(tiny):
    iid = report(tiny)
    assert inc.apply_transition(tiny, iid, actor="a", to_state="registered").action == "register"
    with pytest.raises(inc.IllegalTransition) as err:
        inc.apply_transition(tiny, iid, actor="a", to_state="closed")
    assert {a.to_state for a in err.value.allowed} == {"dispatched", "collected", "cancelled"}
    with pytest.raises(inc.IllegalTransition):
        inc.apply_transition(tiny, iid, actor="a", action="teleport")
    with pytest.raises(IncidentError):
        inc.apply_transition(tiny, iid, actor="a")
    with pytest.raises(inc.IncidentNotFound):
        inc.apply_transition(tiny, 999_999, actor="a", action="register")


def test_deadline_clock_extend_suspend_resume_rework(tiny):
    """Dispatch starts the class's time limit; extend adds hours; a suspension's pause is added back on resume;
    rework keeps the original deadline; closing before the deadline is on time."""
    t0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=CST)
    iid = report(tiny, class_code="A01", at=t0)  # 暴露垃圾: 24 h
    h = dt.timedelta(hours=1)
    inc.apply_transition(tiny, iid, actor="a", action="register", at=t0 + h)
    inc.apply_transition(tiny, iid, actor="a", action="dispatch", at=t0 + 2 * h, department="环卫所")
    row = incident(tiny, iid)
    assert row["due_at"] == t0 + 26 * h and row["time_limit_hours"] == 24 and row["department"] == "环卫所"
    inc.apply_transition(tiny, iid, actor="a", action="extend", hours=6, at=t0 + 3 * h)
    row = incident(tiny, iid)
    assert row["due_at"] == t0 + 32 * h and row["extended_hours"] == 6 and row["extension_count"] == 1
    inc.apply_transition(tiny, iid, actor="a", action="suspend", at=t0 + 4 * h)
    inc.apply_transition(tiny, iid, actor="a", action="resume", at=t0 + 14 * h)  # paused 10 h
    row = incident(tiny, iid)
    assert row["state"] == "dispatched" and row["due_at"] == t0 + 42 * h and row["suspended_at"] is None
    for action, hours in (("handle", 15), ("report", 16), ("rework", 17), ("handle", 18), ("report", 19),
                          ("close", 20)):
        inc.apply_transition(tiny, iid, actor="a", action=action, at=t0 + hours * h)
    row = incident(tiny, iid)
    assert row["rework_count"] == 1 and row["due_at"] == t0 + 42 * h
    assert row["closed_at"] == t0 + 20 * h and row["closed_at"] <= row["due_at"]
    assert row["light"] is None  # closed: no light
    with pytest.raises(IncidentError, match="precedes"):
        inc.apply_transition(tiny, iid, actor="a", action="evaluate", at=t0)
    inc.apply_transition(tiny, iid, actor="a", action="evaluate", evaluation=5, at=t0 + 21 * h)
    events = inc.history(tiny, iid)
    assert [e["action"] for e in events] == ["collect", "register", "dispatch", "extend", "suspend", "resume",
                                             "handle", "report", "rework", "handle", "report", "close", "evaluate"]
    assert events[-2]["detail"] == {"on_time": True}


def test_extend_needs_hours_and_return_restarts_clock(tiny):
    iid = report(tiny)
    _drive(tiny, iid, ["register", "dispatch"])
    with pytest.raises(IncidentError, match="hours"):
        inc.apply_transition(tiny, iid, actor="a", action="extend")
    inc.apply_transition(tiny, iid, actor="a", action="return", note="不属于本部门")
    row = incident(tiny, iid)
    assert row["state"] == "registered" and row["due_at"] is None and row["return_count"] == 1


@pytest.mark.parametrize("used,light", [(0.5, "green"), (0.79, "green"), (0.8, "yellow"), (0.99, "yellow"),
                                        (1.2, "red")])
def test_deadline_light(tiny, used, light):
    """Green under 80 % of the limit used, yellow 80–100 %, red beyond."""
    iid = report(tiny, class_code="C02")  # 道路破损: 120 h
    _drive(tiny, iid, ["register", "dispatch"])
    now = tiny.execute(text("SELECT now()")).scalar_one()
    tiny.execute(text("UPDATE incidents SET dispatched_at = :d, due_at = :d + interval '120 hours' WHERE id = :id"),
                 {"d": now - dt.timedelta(hours=120 * used), "id": iid})
    row = incident(tiny, iid)
    assert row["light"] == light
    assert float(row["deadline_used"]) == pytest.approx(used, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# attribution


def test_report_in_other_coordinate_systems_lands_in_the_same_grid(tiny):
    from geo.spatial.coords import wgs84_to_bd09, wgs84_to_gcj02

    lon, lat = lonlat(250, 250)
    ids = [inc.create_incident(tiny, lon=x, lat=y, coordsys=cs, class_code="A01", source="public", actor="t")
           for cs, (x, y) in (("wgs84", (lon, lat)), ("gcj02", wgs84_to_gcj02(lon, lat)),
                              ("bd09", wgs84_to_bd09(lon, lat)))]
    rows = [incident(tiny, i) for i in ids]
    assert {r["grid_code"] for r in rows} == {GRID_SW}
    for r in rows:
        assert r["lon"] == pytest.approx(lon, abs=1e-8) and r["lat"] == pytest.approx(lat, abs=1e-8)
    assert rows[1]["reported_coordsys"] == "gcj02" and rows[1]["reported_lon"] != pytest.approx(lon, abs=1e-4)
    with pytest.raises(IncidentError):
        inc.create_incident(tiny, lon=lon, lat=lat, coordsys="mars", class_code="A01", source="patrol", actor="t")
    with pytest.raises(IncidentError):
        inc.create_incident(tiny, lon=lon, lat=lat, class_code="ZZ", source="patrol", actor="t")


def test_attribution_across_a_boundary_redraw(tiny):
    """Grid NW/SW line moves from y=500 to y=700 on 1 July: an incident at y=600 reported before stays in NW,
    one reported after goes to SW; the re-attribution view puts both in SW; a shared edge goes to the smaller code."""
    before = report(tiny, 250, 600, at=dt.datetime(2025, 6, 1, tzinfo=CST))
    tiny.execute(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (2, :r, 'v2')"), {"r": REDRAW})
    tiny.execute(text("UPDATE grid_boundaries SET valid_to = :r WHERE grid_id IN (1, 2) AND valid_to IS NULL"),
                 {"r": REDRAW})
    tiny.execute(text(f"INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom) VALUES "
                      f"(1, 2, :r, {box(0, 700, 500, 1000)}), (2, 2, :r, {box(0, 0, 500, 700)})"), {"r": REDRAW})
    after = report(tiny, 250, 600, at=dt.datetime(2025, 8, 1, tzinfo=CST))
    # the shared corner (0, 700) of the new NW and SW boundaries, transformed exactly as their vertices were
    vlon, vlat = tiny.execute(text(f"SELECT ST_X(p), ST_Y(p) FROM ST_Transform(ST_SetSRID(ST_MakePoint("
                                   f"{X0}, {Y0 + 700}), {EPSG}), 4326) p")).one()
    on_edge = inc.create_incident(tiny, lon=vlon, lat=vlat, class_code="A01", source="patrol", actor="t",
                                  reported_at=dt.datetime(2025, 8, 1, tzinfo=CST))
    assert incident(tiny, before)["grid_code"] == GRID_NW
    assert incident(tiny, before)["version_id"] == 1
    assert incident(tiny, after)["grid_code"] == GRID_SW
    assert incident(tiny, after)["version_id"] == 2
    assert incident(tiny, on_edge)["grid_code"] == GRID_NW  # shared edge: smallest code
    current = inc.current_attribution(tiny, [before, after])
    assert current[before]["grid_code"] == GRID_SW and current[after]["grid_code"] == GRID_SW
    assert incident(tiny, before)["grid_code"] == GRID_NW  # history not rewritten


# ---------------------------------------------------------------------------------------------------------------
# KPIs

MARCH = (dt.datetime(2025, 3, 1, tzinfo=CST), dt.datetime(2025, 4, 1, tzinfo=CST))


def _load_month(conn, received=1054, registered=996, due=972, closed=911, on_time=737, grid_id=3):
    """The DOMAIN.md monthly report as rows: every count is a distinct set of cases in March 2025."""
    lon, lat = lonlat(750, 500) if grid_id == 3 else lonlat(250, 750 if grid_id == 1 else 250)
    community = 2 if grid_id == 3 else 1
    geom = shapely.to_wkb(shapely.set_srid(shapely.Point(lon, lat), 4326), hex=True, include_srid=True)
    base = dt.datetime(2025, 3, 2, 8, 0, tzinfo=CST)
    h = dt.timedelta(hours=1)
    rows = []
    for k in range(received):
        reported = base + k * dt.timedelta(minutes=30)  # within 2–24 March
        state, reg, disp, due_at, closed_at, handled = "rejected", None, None, None, None, None
        if k < registered:
            state, reg = "registered", reported + h
        if k < due:  # dispatched with a deadline inside March
            disp, due_at, state = reg + h, reg + 25 * h, "dispatched"
        if k < closed:
            handled = disp + 2 * h
            closed_at = disp + (10 * h if k < on_time else 30 * h)  # on time, or six hours late
            state = "closed"
        if k >= due and k < registered and k % 2:  # some registered cases are due only in April
            disp, due_at, state = reg + h, dt.datetime(2025, 4, 20, tzinfo=CST), "dispatched"
        rows.append((geom, reported, "A01", "patrol", state, reg, disp, due_at, handled, closed_at, 24.0, 1, 1,
                     community, grid_id, "环卫所" if k % 3 else "城管中队"))
    copy_rows(conn, "incidents", ["geom", "reported_at", "class_code", "source", "state", "registered_at",
                                  "dispatched_at", "due_at", "handled_at", "closed_at", "time_limit_hours",
                                  "version_id", "street_id", "community_id", "grid_id", "department"], rows)


def test_kpi_worked_example_from_domain(tiny):
    """DOMAIN.md: 1,054 received, 996 registered, 972 due, 911 closed, 737 on time → 93.72 %, 75.82 %."""
    _load_month(tiny)
    out = compute_kpis(tiny, KpiQuery(start=MARCH[0], end=MARCH[1], by="district"))
    t = out["total"]
    assert (t["received"], t["registered"], t["rejected"], t["due"], t["closed"], t["closed_on_time"]) == (
        1054, 996, 58, 972, 911, 737)
    assert t["closure_rate_pct"] == 93.72 and t["on_time_rate_pct"] == 75.82
    assert t["closure_rate"] == pytest.approx(911 / 972) and t["on_time_rate"] == pytest.approx(737 / 972)
    assert t["disposal_rate"] == pytest.approx(911 / 972)
    april = compute_kpis(tiny, KpiQuery(start=MARCH[1], end=dt.datetime(2025, 5, 1, tzinfo=CST)))["total"]
    assert april["due"] == 12 and april["received"] == 0  # the 12 registered cases due on 20 April


def test_kpi_groupings_sum_to_the_total(tiny):
    _load_month(tiny, received=60, registered=50, due=40, closed=30, on_time=20, grid_id=3)
    _load_month(tiny, received=10, registered=10, due=10, closed=10, on_time=10, grid_id=1)
    total = compute_kpis(tiny, KpiQuery(*MARCH))["total"]
    assert (total["due"], total["closed"], total["closed_on_time"]) == (50, 40, 30)
    for by in ("street", "community", "grid", "department", "month"):
        out = compute_kpis(tiny, KpiQuery(*MARCH, by=by))
        for c in ("received", "registered", "due", "closed", "closed_on_time"):
            assert sum(g[c] for g in out["groups"]) == total[c], (by, c)
    grids = {g["key"]: g for g in compute_kpis(tiny, KpiQuery(*MARCH, by="grid"))["groups"]}
    assert grids[GRID_E]["due"] == 40 and grids[GRID_E]["closure_rate"] == pytest.approx(30 / 40)
    assert grids[GRID_NW]["on_time_rate"] == 1.0 and grids[GRID_NW]["name"] == "西北网格"
    months = compute_kpis(tiny, KpiQuery(*MARCH, by="month"))["groups"]
    assert [m["key"] for m in months] == ["2025-03"]
    # the jurisdiction filter keeps only its own cases
    scoped = compute_kpis(tiny, KpiQuery(*MARCH, scope=COMM_W))["total"]
    assert (scoped["due"], scoped["closed"]) == (10, 10)


def test_kpi_rework_extension_and_light_counts(tiny):
    t0 = dt.datetime(2025, 3, 3, 9, tzinfo=CST)
    h = dt.timedelta(hours=1)
    a = report(tiny, 750, 500, class_code="A01", at=t0)
    for action, k in (("register", 1), ("dispatch", 2), ("extend", 3), ("handle", 4), ("report", 5), ("rework", 6),
                      ("handle", 7), ("report", 8), ("close", 9)):
        inc.apply_transition(tiny, a, actor="x", action=action, at=t0 + k * h, hours=10 if action == "extend" else None)
    b = report(tiny, 750, 500, class_code="A01", at=t0)
    for action, k in (("register", 1), ("dispatch", 2), ("handle", 3), ("report", 4), ("close", 40)):
        inc.apply_transition(tiny, b, actor="x", action=action, at=t0 + k * h)
    c = report(tiny, 750, 500, class_code="C02")  # open now, just dispatched: green
    _drive(tiny, c, ["register", "dispatch"])
    t = compute_kpis(tiny, KpiQuery(*MARCH))["total"]
    assert (t["due"], t["closed"], t["closed_on_time"], t["handled"], t["reworked"], t["extended"]) == (
        2, 2, 1, 2, 1, 1)
    assert t["rework_rate"] == 0.5 and t["extension_rate"] == 0.5 and t["on_time_rate_pct"] == 50.0
    assert (t["open_green"], t["open_yellow"], t["open_red"]) == (1, 0, 0)


def test_bulk_loaded_rows_get_a_lifecycle(tiny):
    """Rows written with only state/due/closed (the synthetic loader) get the timestamps their state implies."""
    lon, lat = lonlat(750, 500)
    geom = shapely.to_wkb(shapely.set_srid(shapely.Point(lon, lat), 4326), hex=True, include_srid=True)
    rep = dt.datetime(2025, 3, 2, 8, tzinfo=CST)
    copy_rows(tiny, "incidents", ["geom", "reported_at", "class_code", "source", "state", "due_at", "closed_at"], [
        (geom, rep, "A01", "patrol", "closed", rep + dt.timedelta(hours=25), rep + dt.timedelta(hours=20)),
        (geom, rep, "D01", "patrol", "dispatched", None, None),
        (geom, rep, "A01", "patrol", "collected", None, None),
    ])
    rows = tiny.execute(text("SELECT state, registered_at, dispatched_at, due_at, handled_at, time_limit_hours "
                             "FROM incidents ORDER BY id")).mappings().all()
    closed, dispatched, collected = rows
    assert closed["registered_at"] == rep and closed["dispatched_at"] == rep + dt.timedelta(hours=1)
    assert closed["handled_at"] == rep + dt.timedelta(hours=20) and closed["time_limit_hours"] == 24
    assert dispatched["due_at"] == rep + dt.timedelta(hours=2)  # D01 路面塌陷: 2 h
    assert collected["registered_at"] is None and collected["due_at"] is None


# ---------------------------------------------------------------------------------------------------------------
# heatmap aggregation


def test_hexagon_binning_sql_matches_numpy_and_geometry(tiny):
    """Random points: SQL bins = numpy bins, and each point lies in its hexagon's polygon (drawn in WGS-84)."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 1000, (400, 2))
    for x, y in xy:
        report(tiny, x, y, at=dt.datetime(2025, 3, 5, tzinfo=CST))
    frame = hm.district_frame(tiny)
    q = hm.HeatmapQuery(start=MARCH[0], end=MARCH[1])
    got = hm.hex_counts(tiny, q, frame, 80.0)
    assert got["n"].sum() == 400 and set(got["month"]) == {"2025-03"}
    lon, lat = np.array([lonlat(x, y) for x, y in xy]).T
    ax, ar = hx.hex_axial(*frame.forward(lon, lat), 80.0)
    assert Counter(zip(ax.tolist(), ar.tolist(), strict=True)) == {
        (a, b): n for a, b, n in zip(got["q"], got["r"], got["n"], strict=True)}
    cx, cy = hx.hex_centres(ax, ar, 80.0)
    polys = frame.to_wgs84(hx.hex_polygons(cx, cy, 80.0))
    assert shapely.covers(polys, shapely.points(lon, lat)).all()
    # the frame's metres are true metres: an 80 m hexagon's edge measured on the ellipsoid
    from pyproj import Geod

    ring = shapely.get_coordinates(polys[0])
    edge = Geod(ellps="WGS84").inv(ring[0, 0], ring[0, 1], ring[1, 0], ring[1, 1])[2]
    assert edge == pytest.approx(80.0, rel=1e-3)


def test_floor_formula_equals_cube_rounding():
    """The floor-only hexagon formula used in SQL agrees with textbook cube rounding on 200,000 random points."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-5000, 5000, (2, 200_000))
    for size in (25.0, 150.0, 999.0):
        a, b = hx.hex_axial(x, y, size), hx.hex_axial_cube(x, y, size)
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


def test_heatmap_hand_counted(tiny):
    """Cell 100 m. Hexagon A gets 3 incidents in March and 1 in April, its neighbour B 2 in April, a far cell C 1 in
    March; a class filter and the period cut the counts as counted by hand."""
    size = 100.0
    frame = hm.district_frame(tiny)

    def cell_of(x, y):
        q, r = hx.hex_axial(*frame.forward(*lonlat(x, y)), size)
        return int(q), int(r)

    def at_centre(q, r, dx=0.0, dy=0.0, **kw):
        cx, cy = hx.hex_centres(np.array([q]), np.array([r]), size)
        lon, lat = frame.inverse(cx[0] + dx, cy[0] + dy)
        return inc.create_incident(tiny, lon=float(lon), lat=float(lat), class_code=kw.get("class_code", "A01"),
                                   source="patrol", actor="t", reported_at=kw["at"])

    qa, ra = cell_of(300, 300)
    qc, rc = cell_of(800, 800)
    mar, apr = dt.datetime(2025, 3, 10, tzinfo=CST), dt.datetime(2025, 4, 10, tzinfo=CST)
    for dx, dy in ((0, 0), (30, 20), (-40, -30)):
        at_centre(qa, ra, dx, dy, at=mar)  # A, March ×3 (within 86 m of the centre: inside)
    at_centre(qa, ra, 10, -50, at=apr, class_code="E03")  # A, April, another major class
    at_centre(qa + 1, ra, at=apr)
    at_centre(qa + 1, ra, -20, 40, at=apr)  # B, April ×2
    at_centre(qc, rc, at=mar)  # C, March
    at_centre(qa, ra, at=dt.datetime(2025, 6, 1, tzinfo=CST))  # outside the period
    q = hm.HeatmapQuery(start=MARCH[0], end=dt.datetime(2025, 5, 1, tzinfo=CST), cell_m=size, permutations=99)
    h = hm.build_heatmap(tiny, q)
    assert h.months == ["2025-03", "2025-04"]
    cells = h.cells.set_index(["q", "r"])
    col = {k: i for i, k in enumerate(zip(h.cells["q"], h.cells["r"], strict=True))}
    assert h.monthly[:, col[(qa, ra)]].tolist() == [3, 1]
    assert h.monthly[:, col[(qa + 1, ra)]].tolist() == [0, 2]
    assert h.monthly[:, col[(qc, rc)]].tolist() == [1, 0]
    assert h.incident_count == 7 and int(cells["total"].sum()) == 7
    # the study area's empty cells are there too (zeros for Gi*): about 1 km² / 25,981 m² per cell
    assert 30 <= int(cells["in_area"].sum()) <= 45 and (cells["total"] == 0).sum() >= 25
    only_a = hm.build_heatmap(tiny, hm.HeatmapQuery(start=MARCH[0], end=dt.datetime(2025, 5, 1, tzinfo=CST),
                                                    cell_m=size, class_code="A", permutations=0))
    assert only_a.incident_count == 6
    # choropleth: incidents per 1,000 households by grid (NW: 200 households, SW: 100, E: 500)
    grids = h.grids.set_index("code")
    assert grids.loc[GRID_SW, "households"] == 100 and grids.loc[GRID_NW, "households"] == 200
    n_sw = int(grids.loc[GRID_SW, "incidents"])
    assert grids.loc[GRID_SW, "per_1000"] == pytest.approx(1000.0 * n_sw / 100)
    assert int(grids["incidents"].sum()) == 7
    # the compact form, decoded as its `encoding` says, draws cell A around its incidents, with their months
    data = hm.compact(h)
    k = col[(qa, ra)]
    f, lattice = data["frame"], data["lattice"]
    centre = (np.asarray(lattice["origin"]) + data["hex"]["q"][k] * np.asarray(lattice["step_q"])
              + data["hex"]["r"][k] * np.asarray(lattice["step_r"]))
    ring = shapely.Polygon(centre + np.asarray(lattice["corners"]))
    pts = tiny.execute(text("SELECT lon, lat FROM incidents WHERE reported_at < :e"), {"e": MARCH[1]}).all()
    assert sum(ring.contains(shapely.Point(p)) for p in pts) == 3
    # the cell the page draws from the lattice is the server's polygon (the GeoJSON answer's)
    feature = next(ft for ft in hm.hex_geojson(h)["features"]
                   if (ft["properties"]["q"], ft["properties"]["r"]) == (qa, ra))
    assert shapely.hausdorff_distance(ring, shapely.Polygon(feature["geometry"]["coordinates"][0])) < 1e-6
    a = data["active"].index(k)
    assert [data["monthly"][m][a] for m in range(2)] == [3, 1]
    for code, rings in zip(data["grids"]["code"], data["grids"]["rings"], strict=True):  # outlines survive the encoding
        original = h.grids.set_index("code").loc[code, "geometry"]
        decoded = shapely.MultiPolygon([shapely.Polygon(p[0], p[1:]) for p in
                                        hm.decode_rings(rings, f["lon0"], f["lat0"])])
        assert shapely.hausdorff_distance(original, decoded) < 1e-5


def test_getis_ord_finds_a_planted_hot_spot():
    """A 31×31 hexagon patch with Poisson(1) counts and a planted cluster of 20s: the cluster's centre is a 99 % hot
    spot, and with seed fixed the result is reproducible."""
    rng = np.random.default_rng(5)
    q, r = np.meshgrid(np.arange(-15, 16), np.arange(-15, 16))
    q, r = q.ravel(), r.ravel()
    counts = rng.poisson(1.0, q.size)
    hot = (q == 0) & (r == 0)
    ring = np.array([(a, b) in {(0, 0), *hx.NEIGHBOURS} for a, b in zip(q, r, strict=True)])
    counts[ring] = 20
    z, p, cls = hs.getis_ord(counts, q, r, permutations=999, seed=1)
    assert cls[hot][0] == 3 and z[hot][0] > 5 and p[hot][0] <= 0.01
    assert (cls[ring] >= 2).all()  # the whole cluster is hot at 95 % at least
    # far from the cluster, 99 % hot spots are chance findings: about 1 % of 900 cells at most
    far = np.maximum(np.abs(q), np.maximum(np.abs(r), np.abs(q + r))) > 3
    assert (cls[far] == 3).sum() <= 15
    z2, p2, cls2 = hs.getis_ord(counts, q, r, permutations=999, seed=1)
    assert np.array_equal(p, p2) and np.array_equal(cls, cls2)
    flat = hs.getis_ord(np.zeros(q.size, dtype=int), q, r, permutations=99)
    assert (flat[2] == 0).all() and np.isnan(flat[0]).all()


def test_permutation_p_values_agree_with_esda():
    """Our vectorised conditional randomisation against esda's own (slow without numba) on 100 hexagons: the same
    folded pseudo p-values up to Monte Carlo error."""
    import warnings

    import esda

    rng = np.random.default_rng(8)
    q, r = np.meshgrid(np.arange(10), np.arange(10))
    q, r = q.ravel(), r.ravel()
    counts = rng.poisson(3.0, q.size).astype(float)
    counts[(q < 3) & (r < 3)] += 6
    neighbours = hx.hex_neighbours(q, r)
    ours = hs.conditional_permutation_p(counts, neighbours, 999, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = esda.G_Local(counts, hs.hex_weights(q, r), transform="B", permutations=999, star=True, seed=1,
                              n_jobs=1).p_sim
    diff = np.abs(ours - theirs)
    assert diff.mean() < 0.02 and diff.max() < 0.1
    assert ((ours <= 0.05) == (theirs <= 0.05)).mean() > 0.9


def test_households_by_grid_follows_the_data(tiny):
    """Households per grid (cached) by the building's point on surface; a change of the units is seen."""
    at = dt.datetime(2025, 6, 1, tzinfo=CST)
    assert hm.households_by_grid(tiny, at) == {1: 200, 2: 100, 3: 500}
    tiny.execute(text("UPDATE units SET households = 130 WHERE building_id = 2"))
    assert hm.households_by_grid(tiny, at) == {1: 200, 2: 130, 3: 500}
    # a redraw moving the NW/SW line north to y = 800 puts building 1 (y 700–720) in SW from then on
    tiny.execute(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (2, :r, 'v2')"), {"r": REDRAW})
    tiny.execute(text("UPDATE grid_boundaries SET valid_to = :r WHERE grid_id IN (1, 2) AND valid_to IS NULL"),
                 {"r": REDRAW})
    tiny.execute(text(f"INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom) VALUES "
                      f"(1, 2, :r, {box(0, 800, 500, 1000)}), (2, 2, :r, {box(0, 0, 500, 800)})"), {"r": REDRAW})
    assert hm.households_by_grid(tiny, dt.datetime(2025, 8, 1, tzinfo=CST)) == {2: 330, 3: 500}
    assert hm.households_by_grid(tiny, at) == {1: 200, 2: 130, 3: 500}


def test_heatmap_of_an_empty_period_renders(tiny):
    from maps.heatmap import heatmap_page

    q = hm.HeatmapQuery(start=dt.datetime(2030, 1, 1, tzinfo=CST), end=dt.datetime(2030, 3, 1, tzinfo=CST))
    h = hm.build_heatmap(tiny, q)
    assert h.incident_count == 0 and h.months == ["2030-01", "2030-02"] and (h.cells["hotspot"] == 0).all()
    assert len(h.cells) > 0 and h.monthly.shape == (2, len(h.cells))  # the study area's cells, all zero
    page = heatmap_page(hm.compact(h), {})
    assert "网格事件热力图" in page and "0 起" in page


def test_cell_size_grows_to_keep_the_answer_bounded():
    area = shapely.box(0, 0, 20_000, 20_000)  # 400 km²
    assert hm.choose_cell_size(area, 150, 12, 250_000) == 150
    big = hm.choose_cell_size(area, 25, 36, 250_000)
    cells = area.area / (1.5 * np.sqrt(3) * big * big)
    assert big > 25 and cells * 38 <= 250_000


# ---------------------------------------------------------------------------------------------------------------
# HTTP API


def test_api_report_and_loop_with_roles_and_jurisdiction(tiny_client, tiny_user):
    worker = tiny_user("worker", GRID_SW)
    other = tiny_user("worker", GRID_NW)
    leader = tiny_user("leader", STREET)
    lon, lat = lonlat(250, 250)
    body = {"lon": lon, "lat": lat, "class_code": "A01", "source": "patrol", "description": "垃圾堆放",
            "reporter": "张三", "reporter_phone": "13800000000"}
    r = tiny_client.post("/v1/incidents", json=body, headers=worker["headers"])
    assert r.status_code == 201, r.text
    created = r.json()
    created_etag = r.headers["ETag"]
    iid = created["id"]
    assert created["state"] == "collected" and created["attribution"]["grid"]["code"] == GRID_SW
    assert created["history"][0]["action"] == "collect"
    # outside the worker's grid: refused, nothing written
    nlon, nlat = lonlat(250, 750)
    r = tiny_client.post("/v1/incidents", json={**body, "lon": nlon, "lat": nlat}, headers=worker["headers"])
    assert r.status_code == 403 and r.json()["type"].endswith("out-of-jurisdiction")
    far = tiny_client.post("/v1/incidents", json={**body, "lon": 100.0, "lat": 20.0}, headers=leader["headers"])
    assert far.status_code == 422
    # reads: the other grid's worker cannot see it, the street leader can
    assert tiny_client.get(f"/v1/incidents/{iid}", headers=other["headers"]).status_code == 403
    seen = tiny_client.get(f"/v1/incidents/{iid}", headers=leader["headers"]).json()
    assert seen["reporter"]["name"] == "张三" and seen["current_attribution"]["grid_code"] == GRID_SW
    assert [i["id"] for i in tiny_client.get("/v1/incidents", headers=other["headers"]).json()["items"]] == []
    listed = tiny_client.get("/v1/incidents", params={"state": "collected"}, headers=leader["headers"]).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == iid
    # transitions: the leader may not write, the other grid's worker neither
    r = tiny_client.post(f"/v1/incidents/{iid}/transitions", json={"action": "register"}, headers=leader["headers"])
    assert r.status_code == 403
    r = tiny_client.post(f"/v1/incidents/{iid}/transitions", json={"action": "register"}, headers=other["headers"])
    assert r.status_code == 403
    # a transition names the revision it moves on from (If-Match): 428 without, 412 weak or stale
    etag = tiny_client.get(f"/v1/incidents/{iid}", headers=worker["headers"]).headers["ETag"]
    assert etag == created_etag
    r = tiny_client.post(f"/v1/incidents/{iid}/transitions", json={"action": "register"}, headers=worker["headers"])
    assert r.status_code == 428 and r.json()["type"].endswith("precondition-required")
    r = tiny_client.post(f"/v1/incidents/{iid}/transitions", json={"action": "register"},
                         headers={**worker["headers"], "If-Match": f"W/{etag}"})
    assert r.status_code == 412 and r.json()["type"].endswith("weak-etag")
    r = tiny_client.post(f"/v1/incidents/{iid}/transitions", json={"action": "close"},
                         headers={**worker["headers"], "If-Match": etag})
    assert r.status_code == 409
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["allowed"] == ["registered", "rejected"] and problem["state"] == "collected"
    for step in ({"action": "register"}, {"to": "dispatched", "department": "环卫所"},
                 {"action": "extend", "hours": 4}, {"action": "handle", "note": "已清理"}):
        r = tiny_client.post(f"/v1/incidents/{iid}/transitions", json=step,
                             headers={**worker["headers"], "If-Match": etag})
        assert r.status_code == 200, r.text
        stale, etag = etag, r.headers["ETag"]
    out = r.json()
    r = tiny_client.post(f"/v1/incidents/{iid}/transitions", json={"action": "report"},
                         headers={**worker["headers"], "If-Match": stale})
    assert r.status_code == 412 and r.json()["current_etag"] == etag
    assert out["state"] == "handled" and out["deadline"]["light"] == "green"
    assert out["deadline"]["time_limit_hours"] == 24 and out["counts"]["extensions"] == 1
    assert [e["action"] for e in out["history"]] == ["collect", "register", "dispatch", "extend", "handle"]
    assert all(e["actor"] == worker["user"].username for e in out["history"][1:])
    r = tiny_client.post(f"/v1/incidents/{iid}/transitions", json={"action": "extend"},
                         headers={**worker["headers"], "If-Match": etag})
    assert r.status_code == 409  # handled: no extension any more
    classes = tiny_client.get("/v1/incident-classes", headers=worker["headers"]).json()
    assert {"code": "D04", "name": "火灾", "major_code": "D", "major_name": "突发事件",
            "time_limit_hours": 1.0, "department": None} in classes
    machine = tiny_client.get("/v1/incident-states", headers=worker["headers"]).json()
    assert {"from_state": "reported", "action": "rework", "to_state": "dispatched", "name": "返工"} in \
        machine["transitions"]
    audit = tiny_client.get("/v1/audit", params={"action": "incident."}, headers=tiny_user("admin")["headers"])
    assert audit.status_code == 200
    assert {e["action"] for e in audit.json()["items"]} >= {"incident.create", "incident.register"}


def test_api_kpi_and_heatmap(tiny_client, tiny_user, tiny):
    _load_month(tiny)
    admin = tiny_user("admin")
    r = tiny_client.get("/v1/kpi", params={"from": "2025-03-01", "to": "2025-03-31"}, headers=admin["headers"])
    assert r.status_code == 200, r.text
    t = r.json()["total"]
    assert (t["due"], t["closed"], t["closed_on_time"]) == (972, 911, 737)
    assert (t["closure_rate_pct"], t["on_time_rate_pct"]) == (93.72, 75.82)
    by_grid = tiny_client.get("/v1/kpi", params={"from": "2025-03", "to": "2025-03", "by": "grid"},
                              headers=admin["headers"]).json()
    assert [g["key"] for g in by_grid["groups"]] == [GRID_E]
    w = tiny_user("worker", GRID_NW)
    mine = tiny_client.get("/v1/kpi", params={"from": "2025-03", "to": "2025-03"}, headers=w["headers"]).json()
    assert mine["total"]["due"] == 0
    r = tiny_client.get("/v1/heatmap", params={"from": "2025-03", "to": "2025-03", "cell_m": 100,
                                               "permutations": 99}, headers=admin["headers"])
    assert r.status_code == 200, r.text
    data = r.json()
    assert sum(data["hex"]["total"]) == 1054 and data["meta"]["hotspots"]["permutations"] == 99
    assert data["meta"]["months"] == ["2025-03"]
    gj = tiny_client.get("/v1/heatmap", params={"from": "2025-03", "to": "2025-03", "format": "geojson",
                                                "layer": "grid", "permutations": 0}, headers=admin["headers"])
    assert gj.headers["content-type"].startswith("application/geo+json")
    feats = {f["properties"]["code"]: f["properties"] for f in gj.json()["features"]}
    assert feats[GRID_E]["incidents"] == 1054 and feats[GRID_E]["households"] == 500
    assert feats[GRID_E]["per_1000"] == pytest.approx(2108.0)
    hexes = tiny_client.get("/v1/heatmap", params={"from": "2025-03", "to": "2025-03", "format": "geojson",
                                                   "cell_m": 100, "permutations": 99}, headers=admin["headers"]).json()
    assert sum(f["properties"]["count"] for f in hexes["features"]) == 1054
    assert all(len(f["geometry"]["coordinates"][0]) == 7 for f in hexes["features"])
    assert hexes["properties"]["hotspots"]["permutations"] == 99
    assert tiny_client.get("/v1/heatmap").status_code == 401


# ---------------------------------------------------------------------------------------------------------------
# Open311 GeoReport v2


@pytest.fixture
def api_key(tiny_session, tiny_user):
    from geo.access.apikeys import create_key

    user = tiny_user("worker", STREET)["user"]
    _, key = create_key(tiny_session, user, "citizen app")
    tiny_session.flush()
    return key


def test_open311_services(tiny_client, api_key):
    r = tiny_client.get("/open311/v2/services.json", params={"api_key": api_key})
    assert r.status_code == 200, r.text
    services = {s["service_code"]: s for s in r.json()}
    assert all(Open311Service.model_validate(s) for s in r.json())  # the JSON the OpenAPI document describes
    assert services["A01"]["service_name"] == "暴露垃圾" and services["A01"]["group"] == "市容环境"
    assert services["A01"]["metadata"] is False and services["A01"]["type"] == "realtime"
    x = tiny_client.get("/open311/v2/services.xml", headers={"X-API-Key": api_key})
    assert x.headers["content-type"].startswith("text/xml") or x.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(x.content)
    assert root.tag == "services" and len(root.findall("service")) == len(services)
    # public, as Open311 clients expect: the same list without a key
    assert tiny_client.get("/open311/v2/services.json").json() == r.json()


def test_open311_round_trip_json_and_xml(tiny_client, api_key):
    lon, lat = lonlat(250, 250)
    form = {"api_key": api_key, "service_code": "B01", "lat": f"{lat:.8f}", "long": f"{lon:.8f}",
            "description": "电线杆上小广告", "first_name": "李", "last_name": "四", "phone": "13900000000",
            "email": "li@example.org"}
    r = tiny_client.post("/open311/v2/requests.json", data=form)
    assert r.status_code == 201, r.text
    (created,) = r.json()
    rid = created["service_request_id"]
    Open311Created.model_validate(created)
    x = tiny_client.post("/open311/v2/requests.xml", data={**form, "description": "第二条"})
    assert x.status_code == 201
    rid2 = ET.fromstring(x.content).find("request/service_request_id").text

    (got,) = tiny_client.get(f"/open311/v2/requests/{rid}.json", params={"api_key": api_key}).json()
    Open311Request.model_validate(got)
    assert got["service_code"] == "B01" and got["status"] == "open" and got["description"] == "电线杆上小广告"
    assert got["lat"] == pytest.approx(lat, abs=1e-7) and got["long"] == pytest.approx(lon, abs=1e-7)
    assert got["service_name"] == "非法小广告" and got["requested_datetime"]
    xml = ET.fromstring(tiny_client.get(f"/open311/v2/requests/{rid2}.xml", params={"api_key": api_key}).content)
    assert xml.tag == "service_requests" and xml.find("request/description").text == "第二条"
    assert xml.find("request/status").text == "open"

    listed = tiny_client.get("/open311/v2/requests.json",
                             params={"api_key": api_key, "service_request_id": f"{rid},{rid2}"}).json()
    assert sorted(r["service_request_id"] for r in listed) == sorted([rid, rid2])
    assert tiny_client.get("/open311/v2/requests.json",
                           params={"api_key": api_key, "status": "closed"}).json() == []
    assert len(tiny_client.get("/open311/v2/requests.json", params={"api_key": api_key, "service_code": "B01",
                                                                     "status": "open"}).json()) == 2
    # bad requests in Open311's error format
    bad = tiny_client.post("/open311/v2/requests.json", data={**form, "service_code": "NOPE"})
    assert bad.status_code == 400 and Open311Error.model_validate(bad.json()[0]).code == 400
    no_loc = {k: v for k, v in form.items() if k not in ("lat", "long")}
    assert tiny_client.post("/open311/v2/requests.json", data=no_loc).status_code == 400
    bad_xml = tiny_client.post("/open311/v2/requests.xml", data={**form, "service_code": "NOPE"})
    assert ET.fromstring(bad_xml.content).tag == "errors"
    assert tiny_client.get("/open311/v2/requests/999999.json", params={"api_key": api_key}).status_code == 404
    assert tiny_client.post("/open311/v2/requests.json", data={**form, "api_key": "ga_bad"}).status_code == 401


# ---------------------------------------------------------------------------------------------------------------
# the suite's synthetic district (scale 0.05): the same code on generated data


def test_synthetic_kpis_match_an_independent_count(db_session):
    """compute_kpis by street over the generated year equals the definitions applied row by row in pandas."""
    import pandas as pd

    conn = db_session.connection()
    df = pd.read_sql(text("SELECT i.*, s.code AS street_code FROM incidents i LEFT JOIN streets s "
                          "ON s.id = i.street_id"), conn)
    assert len(df) > 100
    start = df["reported_at"].min().floor("D")
    end = df["reported_at"].max() + pd.Timedelta(seconds=1)
    out = compute_kpis(conn, KpiQuery(start=start.to_pydatetime(), end=end.to_pydatetime(), by="street"))
    moment = df[["due_at", "closed_at"]].min(axis=1)
    due = df[df["due_at"].notna() & (moment >= start) & (moment < end) & ~df["state"].isin(["cancelled", "suspended"])]
    closed = due[due["closed_at"] < end]
    expect = {code: (len(g), int((closed["street_code"] == code).sum()),
                     int(((closed["street_code"] == code) & (closed["closed_at"] <= closed["due_at"])).sum()))
              for code, g in due.groupby("street_code")}
    got = {g["key"]: (g["due"], g["closed"], g["closed_on_time"]) for g in out["groups"] if g["due"]}
    assert got == expect
    received = df[(df["reported_at"] >= start) & (df["reported_at"] < end)]
    assert out["total"]["received"] == len(received)
    assert out["total"]["rejected"] == int((received["state"] == "rejected").sum())


def test_synthetic_heatmap_finds_the_planted_clusters(db_session):
    """The generator plants 5–10 incident clusters: Gi* marks 99 % hot spots, and every incident is binned."""
    conn = db_session.connection()
    n = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
    h = hm.build_heatmap(conn, hm.HeatmapQuery(start=dt.datetime(2000, 1, 1, tzinfo=CST),
                                               end=dt.datetime(2100, 1, 1, tzinfo=CST), cell_m=100,
                                               permutations=199))
    assert h.incident_count == n
    assert (h.cells["hotspot"] == 3).sum() >= 1
    assert h.grids["incidents"].sum() == conn.execute(
        text("SELECT count(*) FROM incidents WHERE grid_id IS NOT NULL")).scalar_one()
    assert (h.grids["households"] > 0).mean() > 0.5


def test_synthetic_listing_respects_jurisdiction(client, make_user, db_session):
    conn = db_session.connection()
    grid_code, n = conn.execute(text("SELECT g.code, count(*) FROM incidents i JOIN grids g ON g.id = i.grid_id "
                                     "GROUP BY g.code ORDER BY count(*) DESC, g.code LIMIT 1")).one()
    worker = make_user("worker", grid_code)
    out = client.get("/v1/incidents", params={"limit": 1000}, headers=worker["headers"]).json()
    assert out["total"] == n and {i["attribution"]["grid"]["code"] for i in out["items"]} == {grid_code}
    other = conn.execute(text("SELECT i.id FROM incidents i JOIN grids g ON g.id = i.grid_id "
                              "WHERE g.code <> :c LIMIT 1"), {"c": grid_code}).scalar_one()
    assert client.get(f"/v1/incidents/{other}", headers=worker["headers"]).status_code == 403
    r = client.post(f"/v1/incidents/{other}/transitions", json={"action": "evaluate"}, headers=worker["headers"])
    assert r.status_code == 403
