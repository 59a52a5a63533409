"""Coverage reports proportional to what is asked, and reused until the data under them changes.

- a report of one grid, community or street equals the district's report narrowed to it (the answers of the
  whole-district computation), while reading only that scope's rows;
- a report is reused (no query for its rows) until a write commits, from this connection or another one,
  to boundaries, buildings, people or assignments; a transaction that has written is never served from the cache.
"""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.staff import coverage as cov
from geo.staff import register as staff
from tests import staff_data as sd


def _narrowed(whole: cov.CoverageReport, prefix: str) -> dict[str, pd.DataFrame]:
    """The district's frames narrowed to `prefix` the way the report defines its scope."""
    b = whole.buildings[whole.buildings["scope_code"].fillna("").str.startswith(prefix)]
    u = whole.units[whole.units["building_id"].isin(b["id"])]
    served = set()
    for lists in (b["building_stewards"], u["stewards"]):
        for people in lists:
            served |= {p["id"] for p in people}
    return {"grids": whole.grids[whole.grids["code"].str.startswith(prefix)], "buildings": b, "units": u,
            "stewards": whole.stewards[whole.stewards["id"].isin(served)]}


def _same(scoped: cov.CoverageReport, expected: dict[str, pd.DataFrame]) -> None:
    for level, frame in expected.items():
        pd.testing.assert_frame_equal(getattr(scoped, level).reset_index(drop=True), frame.reset_index(drop=True),
                                      check_dtype=False, obj=level)


def test_scoped_reports_equal_the_district_narrowed(engine, monkeypatch):
    cov.REPORTS.clear()
    with engine.connect() as conn:
        whole = cov.coverage_report(conn, "")
        grids = whole.grids["code"].tolist()
        # grids with buildings and units, communities and a street of the district
        busy = whole.buildings.dropna(subset=["grid_code"]).groupby("grid_code").size().sort_values().index
        prefixes = [busy[-1], busy[len(busy) // 2], grids[0], grids[0][:12], busy[-1][:12], grids[-1][:9]]
        fetched: list[int] = []
        real = cov._packed_frame

        def spy(*args, **kw):
            frame = real(*args, **kw)
            fetched.append(len(frame))
            return frame

        monkeypatch.setattr(cov, "_packed_frame", spy)
        for prefix in prefixes:
            cov.REPORTS.clear()
            fetched.clear()
            scoped = cov.coverage_report(conn, prefix)
            _same(scoped, _narrowed(whole, prefix))
            assert scoped.prefix == prefix and scoped.totals["grids"] == sum(g.startswith(prefix) for g in grids)
            if len(prefix) == 15:  # one grid reads its own rows, not the district's
                n_assignments = conn.execute(text("SELECT count(*) FROM staff_assignments")).scalar_one()
                assert max(fetched) < n_assignments / 20, (prefix, fetched, n_assignments)
        assert len(scoped.grids) > 1 and len(scoped.units) > 0


def test_scoped_reports_on_a_known_community_and_dates(small):
    engine, _ = small
    with engine.connect() as conn:
        for at in ("2025-03-01", "2025-07-01"):  # the second boundary version moves B2 into the east grid
            whole = cov.coverage_report(conn, "", at, rules=sd.RULES)
            for prefix in (sd.GRID_W, sd.GRID_E, sd.COMMUNITY, sd.STREET):
                _same(cov.coverage_report(conn, prefix, at, rules=sd.RULES), _narrowed(whole, prefix))
        east = cov.coverage_report(conn, sd.GRID_E, "2025-07-01", rules=sd.RULES)
    assert sorted(east.buildings["id"]) == [2, 3, 4]


@pytest.fixture
def small(migrated_engine):
    cov.REPORTS.clear()
    return migrated_engine, sd.build_staffed(migrated_engine)


def _queries(engine):
    """Count the statements run through `engine` (a list that grows)."""
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_reused_until_a_committed_write_elsewhere(small):
    engine, ids = small
    seen = _queries(engine)
    with engine.connect() as conn:
        first = cov.coverage_report(conn, sd.GRID_W, rules=sd.RULES)
        conn.rollback()
        n = len(seen)
        again = cov.coverage_report(conn, sd.GRID_W, rules=sd.RULES)
        conn.rollback()
        assert again.units is first.units  # the same frames: reused
        assert not any("string_agg" in q for q in seen[n:])
        stewarded = int(first.units["stewarded"].sum())
        # another connection ends a steward's assignment and commits: the very next report sees it
        with Session(engine) as other:
            staff.end_assignment(other, ids["assignments"]["s1"], sd.dt.date.today())
            other.commit()
        after = cov.coverage_report(conn, sd.GRID_W, rules=sd.RULES)
        conn.rollback()
    assert after.units is not first.units
    assert int(after.units["stewarded"].sum()) == stewarded - 12  # s1 served unit 11's 12 households


def test_reused_until_a_boundary_or_person_changes(small):
    engine, _ = small
    with engine.connect() as conn:
        first = cov.coverage_report(conn, sd.COMMUNITY, rules=sd.RULES)
        conn.rollback()
        with engine.begin() as other:
            other.execute(text("UPDATE people SET name = '改名' WHERE id = (SELECT min(person_id) "
                               "FROM staff_assignments WHERE grid_id IS NOT NULL)"))
        renamed = cov.coverage_report(conn, sd.COMMUNITY, rules=sd.RULES)
        conn.rollback()
        assert renamed.grids is not first.grids
        assert any(p["name"] == "改名" for people in renamed.grids["people"] for p in people)
        with engine.begin() as other:  # a building moved out of the community's grids
            other.execute(text("UPDATE buildings SET geom = ST_Translate(geom, 1, 0) WHERE id = 1"))
        moved = cov.coverage_report(conn, sd.COMMUNITY, rules=sd.RULES)
    grid_of = {r.id: r.grid_id for r in renamed.buildings.itertuples()}
    assert pd.notna(grid_of[1])
    assert all(pd.isna(r.grid_id) for r in moved.buildings.itertuples() if r.id == 1)


def test_a_transaction_that_wrote_is_not_served_from_the_cache(small):
    engine, ids = small
    with engine.connect() as conn:
        first = cov.coverage_report(conn, sd.GRID_W, rules=sd.RULES)
        conn.rollback()
        session = Session(bind=conn)  # uncommitted: only this transaction sees it
        staff.end_assignment(session, ids["assignments"]["s1"], sd.dt.date.today())
        session.flush()
        mine = cov.coverage_report(conn, sd.GRID_W, rules=sd.RULES)
        session.rollback()
        session.close()
        again = cov.coverage_report(conn, sd.GRID_W, rules=sd.RULES)
    assert int(mine.units["stewarded"].sum()) == int(first.units["stewarded"].sum()) - 12
    assert again.units is first.units  # the write was rolled back: the stored report still holds


def test_report_cache_bounds_rows():
    cache = cov.ReportCache(max_rows=10)
    cache.put(("a",), 1, "A", 6)
    cache.put(("b",), 1, "B", 4)
    assert cache.get(("a",), 1) == "A"
    cache.put(("c",), 1, "C", 4)  # over budget: the least recently used (b) goes
    assert cache.get(("b",), 1) is None and cache.get(("a",), 1) == "A" and cache.get(("c",), 1) == "C"
    cache.put(("d",), 1, "D", 11)  # larger than the budget: not kept
    assert cache.get(("d",), 1) is None
    assert cache.get(("a",), 2) is None and cache.get(("a",), 1) is None  # another generation drops it
    cache.put(("e",), 3, "E", 1)  # a new generation clears the old ones
    assert len(cache) == 1


def test_the_api_answers_a_committed_write_at_once(small):
    """Through the service: a report read, an assignment written (committed by the API), the report read again at
    once shows it; reading twice with nothing written in between reuses the stored report."""
    engine, _ = small
    for client, h in sd.api_client(engine, {"admin": ("admin", None)}):
        before = client.get("/v1/coverage", params={"grid": sd.GRID_E}, headers=h["admin"])
        assert before.status_code == 200, before.text
        hits = cov.REPORTS.hits
        again = client.get("/v1/coverage", params={"grid": sd.GRID_E}, headers=h["admin"])
        assert again.json() == before.json() and cov.REPORTS.hits == hits + 1
        unit = next(u for u in before.json()["units"] if u["unit_heads"] == 0 and u["households"] > 0)
        pid = client.post("/v1/people", json={"name": "新单元长"}, headers=h["admin"]).json()["id"]
        a = client.post("/v1/assignments", json={"person_id": pid, "role": "unit_head", "target_type": "unit",
                                                 "target_id": unit["id"]}, headers=h["admin"])
        assert a.status_code == 201, a.text
        after = client.get("/v1/coverage", params={"grid": sd.GRID_E}, headers=h["admin"]).json()
        assert next(u for u in after["units"] if u["id"] == unit["id"])["unit_heads"] == 1
        assert after["totals"]["units_with_head"] == before.json()["totals"]["units_with_head"] + 1


def test_the_coverage_page_data_is_reused_until_a_write(small):
    engine, _ = small
    users = {"admin": ("admin", None), "east": ("worker", sd.GRID_E)}
    for client, h in sd.api_client(engine, users):
        first = client.get("/maps/coverage/data", headers=h["admin"])
        assert first.status_code == 200, first.text
        hits = cov.VIEWS.hits
        assert client.get("/maps/coverage/data", headers=h["admin"]).json() == first.json()
        assert cov.VIEWS.hits == hits + 1
        # another audience (a grid worker: own grid, other phones) is not served the admin's data
        mine = client.get("/maps/coverage/data", headers=h["east"]).json()
        assert [g["code"] for g in mine["grids"]] == [sd.GRID_E] and cov.VIEWS.hits == hits + 1
        east = next(g for g in first.json()["grids"] if g["code"] == sd.GRID_E)
        assert east["status"][0] == "m" and "缺网格长" in east["issues"]  # no grid chief yet (overall: 1st letter)
        pid = client.post("/v1/people", json={"name": "新网格长"}, headers=h["admin"]).json()["id"]
        a = client.post("/v1/assignments", json={"person_id": pid, "role": "grid_chief", "target_type": "grid",
                                                 "target_code": sd.GRID_E}, headers=h["admin"])
        assert a.status_code == 201, a.text
        after = client.get("/maps/coverage/data", headers=h["admin"]).json()
        east = next(g for g in after["grids"] if g["code"] == sd.GRID_E)
        assert "缺网格长" not in east["issues"] and ["新网格长", "grid_chief"] in [p[:2] for p in east["people"]]
