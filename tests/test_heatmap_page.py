"""The heatmap page and the mobile report page in headless Chromium with the internet cut off.

A committed database (the live server has its own connections) holds the tiny district and 1,200 incidents over
six months with a planted cluster. Pages are opened with the login cookie; they must load with no external
request and no console error, draw their layers, and the report page must create an incident end to end, also
after the network was down when the worker pressed "submit".
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pytest
import shapely
from sqlalchemy import text

from geo.store import db
from geo.store.load import copy_rows
from tests.browser import screenshot
from tests.conftest import _create_database, _drop_database
from tests.incident_data import CST, GRID_SW, build_tiny_district, lonlat

pytestmark = pytest.mark.browser

MONTHS = [dt.datetime(2025, m, 1, tzinfo=CST) for m in range(1, 7)]


@pytest.fixture(scope="module")
def page_engine():
    url = _create_database("gridatlas_heatpage")
    db.migrate(url)
    engine = db.make_engine(url)
    rng = np.random.default_rng(11)
    n = 1200
    x = rng.uniform(20, 980, n)
    y = rng.uniform(20, 980, n)
    cluster = rng.random(n) < 0.35  # a third of them around (250, 250): a hot spot in grid SW
    x[cluster] = rng.normal(250, 40, cluster.sum()).clip(5, 495)
    y[cluster] = rng.normal(250, 40, cluster.sum()).clip(5, 495)
    lon, lat = np.array([lonlat(a, b) for a, b in zip(x, y, strict=True)]).T
    month = rng.integers(0, 6, n)
    reported = [MONTHS[m] + dt.timedelta(days=int(d), hours=int(h))
                for m, d, h in zip(month, rng.integers(0, 27, n), rng.integers(0, 24, n), strict=True)]
    classes = rng.choice(["A01", "B01", "E03", "F02"], n)
    geoms = shapely.to_wkb(shapely.set_srid(shapely.points(lon, lat), 4326), hex=True, include_srid=True)
    with engine.begin() as conn:
        build_tiny_district(conn)
        copy_rows(conn, "incidents", ["geom", "reported_at", "class_code", "source", "state"],
                  zip(geoms.tolist(), reported, classes.tolist(), ["patrol"] * n, ["collected"] * n, strict=True))
        from geo.incidents.attribution import attribute_incidents

        attribute_incidents(conn)
    yield engine
    engine.dispose()
    _drop_database(url)


@pytest.fixture
def served(page_engine, live_server):
    """(base URL, cookie for a worker of grid SW, cookie for an admin) on a live server over the page database."""
    from api.auth import COOKIE_NAME, issue_token
    from api.main import create_app
    from geo.access.users import create_user
    from geo.store.db import session_scope

    with session_scope(page_engine) as s:
        worker = create_user(s, f"worker-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, "worker", GRID_SW)
        admin = create_user(s, f"admin-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, "admin")
        tokens = issue_token(worker), issue_token(admin)
    base = live_server(create_app(page_engine))
    cookie = lambda token: {"name": COOKIE_NAME, "value": token, "url": base}  # noqa: E731
    return base, cookie(tokens[0]), cookie(tokens[1])


def _open(page_offline, base, cookie, path):
    res = page_offline(base + "/healthz")  # a public page first, to set the cookie on this origin
    res.page.context.add_cookies([cookie])
    response = res.page.goto(base + path, wait_until="networkidle")
    return res, response


def test_heatmap_page_offline(page_offline, served):
    base, _, admin_cookie = served
    res, response = _open(page_offline, base, admin_cookie, "/maps/heatmap?from=2025-01&to=2025-06&cell_m=60")
    page = res.page
    assert response.status == 200
    body = response.body()
    assert len(body) < 3 * 1024 * 1024
    assert res.problems == {}, res.problems
    assert page.title().startswith("网格事件热力图")
    state = page.evaluate("""() => ({
        hex: window.gaHeatmap.hex.getLayers().length,
        hot: window.gaHeatmap.hot.getLayers().length,
        grids: window.gaHeatmap.grids.getLayers().length,
        label: document.getElementById('ga-month-label').textContent,
        total: document.getElementById('ga-month-total').textContent,
        max: document.getElementById('ga-month').max,
        legend: document.getElementById('ga-heat-legend').children.length,
    })""")
    assert state["hex"] > 50 and state["grids"] == 3 and state["hot"] >= 1
    assert state["label"] == "全部月份" and state["total"].replace(",", "") == "1200" and state["max"] == "6"
    assert state["legend"] >= 2
    assert "999 次置换" in page.content()
    # the slider shows one month: the label and its total change
    page.eval_on_selector("#ga-month", "el => { el.value = 3; el.dispatchEvent(new Event('input')); }")
    month = page.evaluate("() => [document.getElementById('ga-month-label').textContent, "
                          "document.getElementById('ga-month-total').textContent]")
    assert month[0] == "2025-03" and 100 < int(month[1].replace(",", "")) < 320
    screenshot(page, "heatmap_page")
    # the other two layers instead of the hexagons, for a second look
    page.evaluate("() => { const h = window.gaHeatmap; h.map.removeLayer(h.hex); h.grids.addTo(h.map); "
                  "h.hot.addTo(h.map); }")
    page.wait_for_timeout(300)
    screenshot(page, "heatmap_page_hotspots")
    hot_classes = page.evaluate("() => window.gaHeatmap.hot.getLayers().map(l => l.options.fillColor)")
    assert "#b2182b" in hot_classes  # the planted cluster is a 99 % hot spot
    assert res.problems == {}, res.problems


def test_heatmap_page_needs_login_and_respects_jurisdiction(page_offline, served):
    base, worker_cookie, _ = served
    res = page_offline(base + "/maps/heatmap")
    assert "/login" in res.page.url or res.page.content().count("401") or "authentication" in res.page.content()
    res, response = _open(page_offline, base, worker_cookie, "/maps/heatmap?from=2025-01&to=2025-06")
    assert response.status == 200 and res.problems == {}, res.problems
    grids = res.page.evaluate("() => window.gaHeatmap.grids.getLayers().map(l => l.gaGrid.code)")
    assert grids == [GRID_SW]  # a grid worker's map holds only their grid


def test_mobile_report_end_to_end(page_offline, served, page_engine):
    base, worker_cookie, _ = served
    lon, lat = lonlat(250, 250)  # in grid SW, the worker's own grid
    res, response = _open(page_offline, base, worker_cookie, f"/m/report?lon={lon:.7f}&lat={lat:.7f}")
    page = res.page
    assert response.status == 200 and res.problems == {}, res.problems
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert "西南网格" in page.text_content("#ga-grid")
    page.select_option("#ga-class", "A01")
    page.fill("#ga-desc", "路边暴露垃圾两袋（测试）")
    page.click("#ga-submit")
    page.wait_for_selector("#ga-status.ok", timeout=10_000)
    status = page.text_content("#ga-status")
    assert "已上报" in status and "西南网格" in status
    screenshot(page, "mobile_report", full_page=True)
    iid = int(status.split("事件编号")[1].split("，")[0])
    with page_engine.connect() as conn:
        row = conn.execute(text("SELECT i.state, i.class_code, i.description, i.source, g.code, i.created_by "
                                "FROM incidents i JOIN grids g ON g.id = i.grid_id WHERE i.id = :id"),
                           {"id": iid}).one()
    assert row[:5] == ("collected", "A01", "路边暴露垃圾两袋（测试）", "patrol", GRID_SW)
    assert row[5].startswith("worker-")

    # weak signal: the network is down when submitting; the report waits in the phone and goes out later
    page.context.set_offline(True)
    page.select_option("#ga-class", "E03")
    page.fill("#ga-desc", "离线暂存的上报")
    page.click("#ga-submit")
    page.wait_for_selector("#ga-status.warn", timeout=10_000)
    assert page.evaluate("() => window.gaReport.queue().length") == 1
    page.context.set_offline(False)
    page.evaluate("() => window.gaReport.flush()")
    page.wait_for_function("() => window.gaReport.queue().length === 0", timeout=10_000)
    with page_engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM incidents WHERE description = '离线暂存的上报'")).scalar()
    assert n == 1
    # the failed fetch while offline is the only console noise allowed
    assert not res.page_errors and not res.external_requests and not res.failed_responses
