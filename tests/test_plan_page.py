"""The plan map (/maps/plan/{id}) in headless Chromium with the internet cut off."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.browser import screenshot
from tests.test_coverage_page import _open

pytestmark = pytest.mark.browser


@pytest.fixture
def plan_app(migrated_engine, district):
    """The scale-0.05 district in a fresh database, a plan with one building moved, a planner's headers."""
    from api.auth import issue_token
    from api.main import create_app
    from geo.access.users import create_user
    from geo.plans import drafts as plans
    from geo.store.load import load_district

    load_district(migrated_engine, district)
    with migrated_engine.begin() as conn:
        code, cid = conn.execute(text("SELECT code, id FROM communities ORDER BY code LIMIT 1")).one()
        pid = plans.create_plan(conn, code, "tester")
        state = plans.load_state(conn, pid)
        rows = state.live("grid")
        a, b = next((x, y) for i, x in enumerate(rows) for y in rows[i + 1:]
                    if shapely.length(shapely.intersection(shapely.boundary(x["geom"]),
                                                           shapely.boundary(y["geom"]))) > 1e-5)
        bf = plans.buildings_frame(conn, cid)
        pts = shapely.point_on_surface(bf["geom"])
        d = shapely.distance(pts, b["geom"])
        d[~shapely.covers(a["geom"], pts)] = np.inf
        moved = int(bf["id"][np.argmin(d)])
        plans.apply_operation(conn, pid, {"type": "move_buildings", "building_ids": [moved], "to": b["key"]})
        # and an overlap, so a problem is drawn: b (after the move) grows into a; ties in the overlap go to a (the
        # smaller key), and the moved building, no longer in a, stays moved
        cur = plans.load_state(conn, pid)
        ga, gb = cur.rows[a["key"]]["geom"], cur.rows[b["key"]]["geom"]
        grown = shapely.union(gb, shapely.intersection(ga, shapely.buffer(gb, 0.0003)))
        plans.apply_operation(conn, pid, {"type": "replace_geometry", "key": b["key"],
                                          "geometry": shapely.geometry.mapping(grown)})
    with Session(migrated_engine) as session:
        user = create_user(session, "planner1", "x" * 12, "planner", code)
        session.flush()
        headers = {"Authorization": f"Bearer {issue_token(user)}"}
        session.commit()
    return create_app(migrated_engine), headers, pid, moved


def test_plan_map_in_a_browser(plan_app, live_server, browser):
    from fastapi.testclient import TestClient

    from maps.assets import external_resources

    app, headers, pid, moved = plan_app
    with TestClient(app) as client:
        r = client.get(f"/maps/plan/{pid}", headers=headers)
        assert r.status_code == 200, r.text
        assert '<html lang="zh-CN">' in r.text and external_resources(r.text) == []
        assert "改划方案" in r.text and "花" not in external_resources(r.text)
    base = live_server(app)
    context, page, external, errors = _open(browser, base, f"/maps/plan/{pid}", headers)
    try:
        assert external == [] and errors == []
        assert page.title().startswith("改划方案")
        fills = page.eval_on_selector_all("path.leaflet-interactive", "els => els.map(e => e.getAttribute('fill'))")
        assert "#ffd92f" in fills  # the moved building
        assert "#e31a1c" in fills  # the overlap problem
        assert any(f in fills for f in ("#4575b4", "#1a9850", "#7b3294"))
        dashed = page.eval_on_selector_all("path[stroke-dasharray]", "els => els.length")
        assert dashed > 0  # published outlines
        assert "调整楼栋" in page.inner_text("#plan-summary") and "错误" in page.inner_text("#plan-summary")
        controls = page.inner_text(".leaflet-control-layers")
        for word in ("已发布边界", "调整的楼栋", "校验问题", "方案网格"):
            assert word in controls, word
        legend = page.inner_text(".ga-legend")
        assert "户数在区间内" in legend and "超过上限" in legend
        screenshot(page, "plan_map")
    finally:
        context.close()


@pytest.fixture
def street_plan_app(migrated_engine, district):
    """The district in a fresh database, a street plan with one grid split in one of its communities."""
    from api.auth import issue_token
    from api.main import create_app
    from geo.access.users import create_user
    from geo.plans import drafts as plans
    from geo.store.load import load_district

    load_district(migrated_engine, district)
    with migrated_engine.begin() as conn:
        street = conn.execute(text("""
            SELECT s.code FROM streets s JOIN communities c ON c.street_id = s.id
            GROUP BY s.code ORDER BY count(*) DESC, s.code LIMIT 1
        """)).scalar()
        pid = plans.create_plan(conn, street, "tester")
        state = plans.load_state(conn, pid)
        big = max(state.live("grid"), key=lambda r: shapely.area(r["geom"]))
        minx, miny, maxx, maxy = shapely.bounds(big["geom"])
        mid = (minx + maxx) / 2
        plans.apply_operation(conn, pid, {"type": "split", "key": big["key"], "line": shapely.geometry.mapping(
            shapely.LineString([(mid, miny - 1e-3), (mid, maxy + 1e-3)]))})
    with Session(migrated_engine) as session:
        user = create_user(session, "streetplanner", "x" * 12, "planner", street)
        session.flush()
        headers = {"Authorization": f"Bearer {issue_token(user)}"}
        session.commit()
    return create_app(migrated_engine), headers, pid, len(state.communities)


def test_street_plan_map_in_a_browser(street_plan_app, live_server, browser):
    app, headers, pid, n = street_plan_app
    base = live_server(app)
    context, page, external, errors = _open(browser, base, f"/maps/plan/{pid}", headers)
    try:
        assert external == [] and errors == []
        summary = page.inner_text("#plan-summary")
        assert "街道方案" in summary and f"{n} 个社区" in summary
        draft = page.eval_on_selector_all("path.leaflet-interactive", "els => els.length")
        assert draft > n  # grids of every community are drawn
        outlines = page.eval_on_selector_all("path[stroke='#08306b']", "els => els.length")
        assert outlines == n  # one outline per community of the street
        assert "社区边界" in page.inner_text(".leaflet-control-layers")
        screenshot(page, "street_plan_map")
    finally:
        context.close()
