"""The incident rollups (migration 0011) give exactly the numbers of the raw incidents.

A year of varied cases on the tiny hand-built district (late closings across month ends, handling after the
deadline, rework, extension, cancelled, suspended, rejected and open cases), some of them moved through the state
machine so the triggers see updates too: every KPI row and every heatmap aggregate is the same from the rollup
path and from the incidents alone, for whole months, mid-month spans and the whole year, every grouping and filter.
The year is committed (a hexagon size is built in transactions of its own, which see committed rows only) and
removed after each test. A new size builds while incidents are written, without making the writers wait.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import shapely
from sqlalchemy import text

from geo.incidents import closed_loop as inc
from geo.incidents import heat_rollup as hr
from geo.incidents import heatmap as hm
from geo.incidents.hexagons import LocalFrame
from geo.incidents.kpi import GROUPS, KpiQuery, compute_kpis, rollup_applies, rollup_timezone
from geo.store.load import copy_rows
from tests.incident_data import COMM_E, COMM_W, CST, GRID_E, STREET, lonlat
from tests.test_incidents import _load_month, tiny, tiny_engine  # noqa: F401  (fixtures)

H = dt.timedelta(hours=1)
YEAR = (dt.datetime(2025, 1, 1, tzinfo=CST), dt.datetime(2026, 1, 1, tzinfo=CST))
PERIODS = [
    YEAR,
    (dt.datetime(2025, 3, 1, tzinfo=CST), dt.datetime(2025, 6, 1, tzinfo=CST)),  # whole months
    (dt.datetime(2025, 2, 14, 10, 30, tzinfo=CST), dt.datetime(2025, 7, 9, 15, 45, tzinfo=CST)),  # mid-month ends
    (dt.datetime(2025, 4, 20, tzinfo=CST), dt.datetime(2025, 6, 1, tzinfo=CST)),  # mid-month start, whole end
    (dt.datetime(2025, 5, 1, tzinfo=CST), dt.datetime(2025, 6, 3, 12, tzinfo=CST)),  # whole start, mid-month end
    (dt.datetime(2025, 8, 3, tzinfo=CST), dt.datetime(2025, 8, 27, tzinfo=CST)),  # no whole month: raw only
]
FILTERS = [{}, {"class_code": "A"}, {"class_code": "C02"}, {"department": "环卫所"}, {"scope": COMM_W},
           {"grid": GRID_E}, {"street": STREET, "class_code": "E"}]
CLASSES = ["A01", "A03", "C02", "E03"]
DEPARTMENTS = ["环卫所", "城管中队", "市政所", None]
#: (grid id, community id, x, y range) of the three grids, and None for a point attributed to no grid
GRIDS = [(1, 1, (0, 500), (500, 1000)), (2, 1, (0, 500), (0, 500)), (3, 2, (500, 1000), (0, 1000))]


def load_year(conn, n: int = 1500, seed: int = 11) -> None:
    """n cases over 2025 with lifecycles that cross month ends; their points spread over the three grids."""
    rng = np.random.default_rng(seed)
    t0 = YEAR[0].timestamp()
    rows = []
    for _ in range(n):
        g = rng.integers(0, 4)
        if g == 3:  # attributed to the street only
            grid_id, comm_id, x, y = None, None, rng.uniform(0, 1000), rng.uniform(0, 1000)
        else:
            grid_id, comm_id, xr, yr = GRIDS[g]
            x, y = rng.uniform(*xr), rng.uniform(*yr)
        lon, lat = lonlat(x, y)
        geom = shapely.to_wkb(shapely.set_srid(shapely.Point(lon, lat), 4326), hex=True, include_srid=True)
        reported = dt.datetime.fromtimestamp(t0 + rng.uniform(0, 364 * 86400), tz=CST)
        limit = float(rng.choice([2.0, 24.0, 72.0, 240.0]))
        reg = disp = due = handled = closed = None
        rework = extension = 0
        kind = rng.choice(["rejected", "collected", "registered", "open", "closed", "cancelled", "suspended"],
                          p=[0.08, 0.03, 0.05, 0.08, 0.68, 0.04, 0.04])
        state = {"open": "dispatched"}.get(kind, kind)
        if kind not in ("rejected", "collected"):
            reg = reported + rng.uniform(0.1, 30) * H
        if kind in ("open", "closed", "cancelled", "suspended"):
            disp = reg + rng.uniform(0.1, 5) * H
            extension = int(rng.random() < 0.15)
            due = disp + (limit + 24 * extension) * H
        if kind == "open" and rng.random() < 0.5:
            state, handled = "handled", disp + rng.uniform(0.5, 2.0) * limit * H
        if kind == "closed":
            state = "closed" if rng.random() < 0.7 else "evaluated"
            rework = int(rng.random() < 0.2)
            closed = disp + rng.uniform(0.2, 3.0) * limit * H  # a third late, some by weeks
            handled = disp + rng.uniform(0.1, 1.0) * (closed - disp) / H * H
        rows.append((geom, reported, CLASSES[rng.integers(0, 4)], "patrol", state, reg, disp, due, handled, closed,
                     limit, 24.0 * extension, extension, rework, 1, 1, comm_id, grid_id,
                     DEPARTMENTS[rng.integers(0, 4)]))
    copy_rows(conn, "incidents", ["geom", "reported_at", "class_code", "source", "state", "registered_at",
                                  "dispatched_at", "due_at", "handled_at", "closed_at", "time_limit_hours",
                                  "extended_hours", "extension_count", "rework_count", "version_id", "street_id",
                                  "community_id", "grid_id", "department"], rows)


def drive_some(conn) -> None:
    """State-machine updates on top of the bulk rows (the UPDATE trigger), and a few reports (INSERT)."""
    ids = conn.execute(text("SELECT id FROM incidents WHERE state = 'dispatched' ORDER BY id LIMIT 20")).scalars()
    for k, iid in enumerate(list(ids)):
        last = conn.execute(text("SELECT greatest(dispatched_at, registered_at) FROM incidents WHERE id = :i"),
                            {"i": iid}).scalar_one()
        if k % 4 == 0:
            inc.apply_transition(conn, iid, actor="t", action="extend", hours=48, at=last + H)
        inc.apply_transition(conn, iid, actor="t", action="handle", at=last + 2 * H)
        inc.apply_transition(conn, iid, actor="t", action="report", at=last + 3 * H)
        if k % 3 == 0:
            inc.apply_transition(conn, iid, actor="t", action="rework", at=last + 4 * H)
            inc.apply_transition(conn, iid, actor="t", action="handle", at=last + (30 + 24 * k) * H)
            inc.apply_transition(conn, iid, actor="t", action="report", at=last + (31 + 24 * k) * H)
        inc.apply_transition(conn, iid, actor="t", action="close", at=last + (40 + 30 * k) * H)
    for k in range(5):
        lon, lat = lonlat(100 + 150 * k, 300)
        iid = inc.create_incident(conn, lon=lon, lat=lat, class_code="A01", source="public", actor="t",
                                  reported_at=dt.datetime(2025, 6, 10 + k, 9, tzinfo=CST))
        inc.apply_transition(conn, iid, actor="t", action="register", at=dt.datetime(2025, 6, 30, 23, tzinfo=CST))
    conn.execute(text("DELETE FROM incidents WHERE id IN (SELECT id FROM incidents WHERE state = 'collected' "
                      "ORDER BY id LIMIT 3)"))


@pytest.fixture
def year(tiny_engine):  # noqa: F811
    """A connection reading the committed year; the incidents, rollups and hexagon sizes are removed afterwards."""
    with tiny_engine.begin() as conn:
        load_year(conn)
        drive_some(conn)
    conn = tiny_engine.connect()
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()
        with tiny_engine.begin() as c:
            c.execute(text("TRUNCATE incidents CASCADE"))  # its trigger empties both rollups
            c.execute(text("DELETE FROM incident_heat_sizes"))


def test_triggers_keep_the_rollups_equal_to_a_rebuild(year, tiny_engine):  # noqa: F811
    """After COPY, updates by the state machine, reports and deletes, the maintained rollup equals a rebuild."""
    frame = hm.district_frame(year)
    assert hr.ensure_heat_rollup(year, frame, 100.0)
    with tiny_engine.begin() as conn:  # written after the hexagon size was built
        load_year(conn, n=200, seed=5)
        drive_some(conn)
    keys = "level, month, closed_month, handled_month, street_id, community_id, grid_id, class_code, department"
    counts = "received, rejected, registered, due, on_time, reworked, extended"
    kpi = (f"SELECT {keys}, {counts} FROM incident_rollup WHERE (received, registered, due) <> (0, 0, 0) "
           f"ORDER BY {keys}")
    heat = "SELECT cell_m, month, q, r, n FROM incident_heat_rollup WHERE n <> 0 ORDER BY 1, 2, 3, 4"
    kept = (year.execute(text(kpi)).all(), year.execute(text(heat)).all())
    assert len(kept[0]) > 100 and sum(r.n for r in kept[1]) == year.execute(
        text("SELECT count(*) FROM incidents")).scalar_one()
    year.execute(text("SELECT incident_rollup_refresh()"))
    assert (year.execute(text(kpi)).all(), year.execute(text(heat)).all()) == kept
    year.commit()
    # the hexagons the triggers kept equal those built afresh by geo.incidents.heat_rollup, and the raw path
    year.execute(text("DELETE FROM incident_heat_sizes"))
    year.commit()
    assert hr.ensure_heat_rollup(year, frame, 100.0)
    assert year.execute(text(heat)).all() == kept[1]
    year.execute(text("DELETE FROM incident_heat_sizes"))
    year.commit()
    assert hr.ensure_heat_rollup(year, frame, 60.0)
    with tiny_engine.begin() as conn:
        load_year(conn, n=300, seed=8)
    raw, rolled = (hm.build_heatmap(year, hm.HeatmapQuery(*PERIODS[2], cell_m=60.0, use_rollup=use),
                                    with_hotspots=False) for use in (False, True))
    assert np.array_equal(raw.monthly, rolled.monthly) and raw.cells[["q", "r"]].equals(rolled.cells[["q", "r"]])
    year.execute(text("TRUNCATE incidents CASCADE"))
    assert year.execute(text("SELECT (SELECT count(*) FROM incident_rollup) + "
                             "(SELECT count(*) FROM incident_heat_rollup)")).scalar_one() == 0


@pytest.mark.parametrize("period", PERIODS, ids=lambda p: f"{p[0]:%m%d%H%M}-{p[1]:%m%d%H%M}")
def test_kpi_rollup_path_equals_raw_path(year, period):
    """Every grouping and filter: the KPI rows through the rollup are exactly the rows from the incidents."""
    tz = rollup_timezone(year)
    assert tz == "Asia/Shanghai"
    used = 0
    for by in GROUPS:
        for flt in FILTERS:
            q = KpiQuery(start=period[0], end=period[1], by=by, **flt)
            used += rollup_applies(q, tz) is not None
            raw = compute_kpis(year, q, use_rollup=False)
            assert compute_kpis(year, q) == raw, (by, flt)
    assert used == (0 if period == PERIODS[-1] else len(GROUPS) * len(FILTERS))


def test_kpi_rollup_counts_are_not_trivial(year):
    """The compared rows hold every kind of count, including late closings counted at the period's end."""
    t = compute_kpis(year, KpiQuery(*PERIODS[2]))["total"]
    for c in ("received", "rejected", "registered", "due", "closed", "closed_on_time", "handled", "reworked",
              "extended", "open_red"):
        assert t[c] > 0, c
    assert t["closed"] < t["due"] and t["closed_on_time"] < t["closed"]
    # a case due in June but closed after the period's end in July is due and not closed
    june_due = compute_kpis(year, KpiQuery(dt.datetime(2025, 6, 1, tzinfo=CST), dt.datetime(2025, 7, 9, tzinfo=CST),
                                           by="month"))["groups"][0]
    june_only = compute_kpis(year, KpiQuery(dt.datetime(2025, 6, 1, tzinfo=CST),
                                            dt.datetime(2025, 7, 1, tzinfo=CST)))["total"]
    assert june_due["due"] == june_only["due"] and june_due["closed"] > june_only["closed"]


def test_worked_example_through_the_rollup(tiny):  # noqa: F811
    """DOMAIN.md's month (972 due, 911 closed, 737 on time) answered from the rollup, and the same raw."""
    _load_month(tiny)
    march = KpiQuery(dt.datetime(2025, 3, 1, tzinfo=CST), dt.datetime(2025, 4, 1, tzinfo=CST))
    assert rollup_applies(march, rollup_timezone(tiny)) is not None
    t = compute_kpis(tiny, march)["total"]
    assert (t["received"], t["registered"], t["due"], t["closed"], t["closed_on_time"]) == (1054, 996, 972, 911, 737)
    assert (t["closure_rate_pct"], t["on_time_rate_pct"]) == (93.72, 75.82)
    assert compute_kpis(tiny, march, use_rollup=False) == compute_kpis(tiny, march)


@pytest.mark.parametrize("period", PERIODS[:4], ids=lambda p: f"{p[0]:%m%d%H%M}-{p[1]:%m%d%H%M}")
@pytest.mark.parametrize("flt", [{}, {"class_code": "A"}, {"community": COMM_E}])
def test_heatmap_rollup_path_equals_raw_path(year, period, flt):
    """Hexagon counts per month and incidents per grid: the same from the rollups and from the incidents."""
    def build(use_rollup: bool) -> hm.Heatmap:
        q = hm.HeatmapQuery(start=period[0], end=period[1], cell_m=60.0, permutations=0, use_rollup=use_rollup,
                            **flt)
        return hm.build_heatmap(year, q, with_hotspots=False)

    raw, rolled = build(False), build(True)
    assert raw.months == rolled.months and raw.cell_m == rolled.cell_m
    assert raw.cells[["q", "r", "total", "in_area"]].equals(rolled.cells[["q", "r", "total", "in_area"]])
    assert np.array_equal(raw.monthly, rolled.monthly) and raw.incident_count == rolled.incident_count > 0
    assert raw.grids[["code", "incidents", "households"]].equals(rolled.grids[["code", "incidents", "households"]])
    registered = year.execute(text("SELECT count(*) FROM incident_heat_sizes WHERE cell_m = 60")).scalar_one()
    assert registered == (0 if flt else 1)
    expect = year.execute(text("SELECT count(*) FROM incidents i WHERE i.reported_at >= :s AND i.reported_at < :e"
                               + (" AND i.community_id = 2" if flt.get("community") else "")
                               + (" AND i.class_code LIKE 'A%'" if flt.get("class_code") else "")),
                          {"s": period[0], "e": period[1]}).scalar_one()
    assert rolled.incident_count == expect


def test_heat_rollup_follows_a_new_frame_and_keeps_few_sizes(year):
    """A size binned in another frame is rebuilt; at most MAX_ROLLUP_SIZES sizes are maintained."""
    frame = hm.district_frame(year)
    assert hr.ensure_heat_rollup(year, LocalFrame(frame.lon0 + 0.01, frame.lat0), 80.0)
    assert hr.ensure_heat_rollup(year, frame, 80.0)
    assert year.execute(text("SELECT lon0 FROM incident_heat_sizes WHERE cell_m = 80")).scalar_one() == frame.lon0
    for size in (90.0, 110.0, 120.0, 130.0):
        assert hr.ensure_heat_rollup(year, frame, size)
    sizes = year.execute(text("SELECT cell_m FROM incident_heat_sizes ORDER BY cell_m")).scalars().all()
    assert len(sizes) == hr.MAX_ROLLUP_SIZES and 130.0 in sizes
    per_size = year.execute(text("SELECT cell_m, sum(n) FROM incident_heat_rollup GROUP BY 1")).all()
    n = year.execute(text("SELECT count(*) FROM incidents")).scalar_one()
    assert {s for s, _ in per_size} == set(sizes) and all(total == n for _, total in per_size)


def _report(conn, x: float, y: float, at: dt.datetime) -> int:
    lon, lat = lonlat(x, y)
    return inc.create_incident(conn, lon=lon, lat=lat, class_code="A01", source="patrol", actor="t", reported_at=at)


def test_a_new_size_builds_without_making_writers_wait(year, tiny_engine, monkeypatch):  # noqa: F811
    """No incident write waits for a hexagon size to build, nor the build for a write in flight (that request
    answers from the incidents). Writes committed while the size builds, before and after its snapshot, are all
    counted: the size then equals a rebuild, and its heatmap the one from the incidents."""
    frame = hm.district_frame(year)
    period = hm.HeatmapQuery(*YEAR, cell_m=70.0, permutations=0)
    raw = hm.build_heatmap(year, hm.HeatmapQuery(*YEAR, cell_m=70.0, use_rollup=False), with_hotspots=False)
    monkeypatch.setattr(hr, "REGISTER_ATTEMPTS", 2)
    with tiny_engine.connect() as writer:  # a write in flight
        _report(writer, 300, 300, dt.datetime(2025, 5, 5, tzinfo=CST))
        assert not hr.ensure_heat_rollup(writer, frame, 70.0)  # its own rows: a build elsewhere would miss them
        assert not hr.build_heat_size(tiny_engine, frame, 70.0)  # registering would wait for it: not now
        meanwhile = hm.build_heatmap(year, period, with_hotspots=False)  # from the incidents
        assert np.array_equal(meanwhile.monthly, raw.monthly) and meanwhile.cells[["q", "r"]].equals(
            raw.cells[["q", "r"]])
        writer.rollback()
    assert year.execute(text("SELECT count(*) FROM incident_heat_sizes")).scalar_one() == 0

    late = tiny_engine.connect()

    def write_while_building() -> None:
        # lock_timeout: a write that had to wait for the build would fail here instead of waiting
        with tiny_engine.connect() as early:
            early.execute(text("SET lock_timeout = '2s'"))
            _report(early, 300, 300, dt.datetime(2025, 5, 5, tzinfo=CST))  # committed before the build's snapshot
            early.commit()
        late.execute(text("SET lock_timeout = '2s'"))
        _report(late, 5000, 5000, dt.datetime(2025, 6, 6, tzinfo=CST))  # committed after the build

    assert hr.build_heat_size(tiny_engine, frame, 70.0, after_registration=write_while_building)
    late.commit()
    late.close()
    heat = "SELECT month, q, r, n FROM incident_heat_rollup WHERE cell_m = 70 AND n <> 0 ORDER BY 1, 2, 3"
    built = year.execute(text(heat)).all()
    assert sum(r.n for r in built) == year.execute(text("SELECT count(*) FROM incidents")).scalar_one()
    year.execute(text("SELECT incident_rollup_refresh()"))
    assert year.execute(text(heat)).all() == built
    year.rollback()
    raw = hm.build_heatmap(year, hm.HeatmapQuery(*YEAR, cell_m=70.0, use_rollup=False), with_hotspots=False)
    rolled = hm.build_heatmap(year, period, with_hotspots=False)
    assert np.array_equal(raw.monthly, rolled.monthly) and raw.cells[["q", "r"]].equals(rolled.cells[["q", "r"]])
    assert rolled.incident_count == raw.incident_count > 1500
