"""The leaders' pages export their visible list (导出清单 ▸ CSV / Excel) in headless Chromium with the internet cut
off: on the coverage, classification and heatmap pages, with a filter applied, the Excel file holds a title row,
the header and exactly the CSV's rows (numbers as numbers, Chinese text kept), column widths and a frozen header;
the Excel writer (vendored write-excel-file) is fetched on the click only, never by the first view."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import numpy as np
import pytest
import shapely
from openpyxl import load_workbook

from geo.store import db
from geo.store.load import copy_rows
from tests import staff_data as sd
from tests.browser import SCREENSHOT_DIR, screenshot
from tests.conftest import _create_database, _drop_database
from tests.incident_data import CST, build_tiny_district, lonlat

pytestmark = pytest.mark.browser

LIB = "write-excel-file"


def _lib_requests(page) -> list[str]:
    """Resources the page has fetched whose URL names the Excel writer."""
    return page.evaluate("(lib) => performance.getEntriesByType('resource').map(e => e.name)"
                         ".filter(u => u.includes(lib))", LIB)


def _exports(page) -> tuple[list[list[str]], object]:
    """The visible list as the CSV download's rows and as the Excel download's worksheet."""
    with page.expect_download() as dl:
        page.click("#ga-csv")
    rows = list(csv.reader(io.StringIO(dl.value.path().read_bytes().decode("utf-8").lstrip("\ufeff"))))
    with page.expect_download() as dl:
        page.click("#ga-xlsx")
    assert dl.value.suggested_filename.endswith(".xlsx"), dl.value.suggested_filename
    book = load_workbook(io.BytesIO(dl.value.path().read_bytes()))
    return rows, book.active


def _check_same_rows(page, rows: list[list[str]], ws, numeric: set[str]) -> list[list[object]]:
    """The Excel sheet is a title row, the CSV's header and the CSV's rows, cell for cell; returns its data rows."""
    head, body = rows[0], rows[1:]
    width = len(head)
    title = ws.cell(1, 1).value
    assert isinstance(title, str) and page.inner_text("#ga-list-title") in title, title
    assert any(str(r) == f"A1:{chr(64 + width)}1" for r in ws.merged_cells.ranges), ws.merged_cells.ranges
    assert ws.cell(1, 1).font.b and ws.cell(2, 1).font.b
    assert ws.freeze_panes == "A3"
    assert [ws.cell(2, c + 1).value for c in range(width)] == head
    data = [[ws.cell(r, c + 1).value for c in range(width)] for r in range(3, ws.max_row + 1)]
    assert len(data) == len(body) == int(page.inner_text("#ga-list-count").split(" ")[0])
    for got, want in zip(data, body, strict=True):
        for h, g, w in zip(head, got, want, strict=True):
            if h in numeric and w != "":
                assert isinstance(g, int | float) and not isinstance(g, bool) and float(w) == g, (h, g, w)
            else:
                assert (g if g is not None else "") == w, (h, g, w)
    for c in range(width):  # every column has a width fitted to its text
        letter = chr(65 + c)
        assert ws.column_dimensions[letter].width >= 8, (letter, ws.column_dimensions[letter].width)
    # the rows are the list on screen, in its order (the table shows the first 300)
    shown = page.evaluate("() => Array.from(document.querySelectorAll('#ga-table tbody tr'))"
                          ".map(tr => tr.cells[0].firstChild.textContent)")
    assert shown == [r[0] for r in body][:len(shown)] and len(shown) == min(len(body), 300)
    return data


def _open_signed_in(page_offline, base: str, path: str, *, headers: dict | None = None, cookie: dict | None = None):
    res = page_offline(base + "/healthz")  # a public page first, then the credentials on this origin
    if headers:
        res.page.context.set_extra_http_headers(headers)
    if cookie:
        res.page.context.add_cookies([cookie])
    res.page.goto(base + path, wait_until="networkidle")
    return res


def test_coverage_exports_the_filtered_gaps_as_excel(migrated_engine, live_server, page_offline):
    from api.main import create_app

    sd.build_staffed(migrated_engine)
    headers = sd.bearer_headers(migrated_engine, {"leader": ("leader", sd.COMMUNITY)})["leader"]
    base = live_server(create_app(migrated_engine))
    res = _open_signed_in(page_offline, base, "/maps/coverage?at=2025-03-01", headers=headers)
    page = res.page
    page.wait_for_function("() => window.gaMap && window.gaMap.ready && window.gaMap.tilesLoaded > 0")
    # the first view: the page names the writer's hashed URL but does not fetch it
    assert _lib_requests(page) == []
    src = page.get_attribute("#ga-xlsx", "data-lib")
    assert src.startswith(f"/static/vendor/{LIB}/") and "?v=" in src
    assert page.locator(f"script[src*='{LIB}']").count() == 0
    bar = page.locator(".ga-export")
    assert bar.inner_text().replace("\n", " ").split() == ["导出清单", "▸", "CSV", "Excel"]
    bar.screenshot(path=str(SCREENSHOT_DIR / "leader_export_menu.png"))
    screenshot(page, "leader_export_coverage")

    page.select_option("#ga-role", "building_head")  # the filter: building heads only
    rows, ws = _exports(page)
    assert rows[0] == ["网格", "编码", "社区", "缺什么", "联系谁"]
    data = _check_same_rows(page, rows, ws, numeric=set())
    assert any("1栋楼缺楼栋长" in str(r[3]) for r in data), data
    assert all(isinstance(r[1], str) for r in data)  # grid codes stay text
    assert len(_lib_requests(page)) == 1
    # a second export reuses the loaded writer
    rows2, ws2 = _exports(page)
    assert rows2 == rows and len(_lib_requests(page)) == 1
    # a long list (thousands of gaps in a whole district): the writer compresses a sheet over 160 kB in a worker
    # made from a blob: URL, which the page's Content-Security-Policy must let it start
    size = page.evaluate("""() => {
        const rows = [["网格", "编码", "事件数"]];
        for (let i = 0; i < 5000; i++) rows.push(["网格 " + i, "3205050010010" + i, {value: i, type: Number}]);
        const late = new Promise(done => setTimeout(() => done(-1), 20000));  // a blocked worker never answers
        return Promise.race([window.writeXlsxFile(rows, {stickyRowsCount: 1}).toBlob().then(b => b.size), late]);
    }""")
    assert size > 20_000
    assert res.problems == {}, res.problems


def test_classification_exports_the_filtered_compounds_as_excel(app, make_user, live_server, page_offline,
                                                                district):
    street = district.streets["code"].iloc[0]
    base = live_server(app)
    res = _open_signed_in(page_offline, base, "/maps/classification",
                          headers=make_user("leader", street)["headers"])
    page = res.page
    page.wait_for_function("() => window.gaMap && window.gaMap.ready && window.gaMap.tilesLoaded > 0")
    assert _lib_requests(page) == []
    before = int(page.inner_text("#ga-list-count").split(" ")[0])
    page.click("#ga-legend li[data-key='straddling']")  # the filter: straddling compounds hidden
    after = int(page.inner_text("#ga-list-count").split(" ")[0])
    assert 0 < after < before
    rows, ws = _exports(page)
    assert rows[0][0] == "小区" and all(r[3] != "跨界" for r in rows[1:])
    data = _check_same_rows(page, rows, ws, numeric={"编号"})
    assert all(isinstance(r[1], int) for r in data)  # compound ids as numbers
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in str(r[0])) for r in data)
    assert len(_lib_requests(page)) == 1
    assert res.problems == {}, res.problems


@pytest.fixture(scope="module")
def heat_engine():
    """A committed database: the tiny district and 1,200 incidents over six months with a planted cluster."""
    from geo.incidents.attribution import attribute_incidents

    url = _create_database("gridatlas_leaderexports")
    db.migrate(url)
    engine = db.make_engine(url)
    rng = np.random.default_rng(11)
    n = 1200
    x, y = rng.uniform(20, 980, n), rng.uniform(20, 980, n)
    cluster = rng.random(n) < 0.35
    x[cluster] = rng.normal(250, 40, cluster.sum()).clip(5, 495)
    y[cluster] = rng.normal(250, 40, cluster.sum()).clip(5, 495)
    lon, lat = np.array([lonlat(a, b) for a, b in zip(x, y, strict=True)]).T
    months = [dt.datetime(2025, m, 1, tzinfo=CST) for m in range(1, 7)]
    reported = [months[m] + dt.timedelta(days=int(d), hours=int(h)) for m, d, h in
                zip(rng.integers(0, 6, n), rng.integers(0, 27, n), rng.integers(0, 24, n), strict=True)]
    geoms = shapely.to_wkb(shapely.set_srid(shapely.points(lon, lat), 4326), hex=True, include_srid=True)
    with engine.begin() as conn:
        build_tiny_district(conn)
        copy_rows(conn, "incidents", ["geom", "reported_at", "class_code", "source", "state"],
                  zip(geoms.tolist(), reported, rng.choice(["A01", "B01", "E03", "F02"], n).tolist(),
                      ["patrol"] * n, rng.choice(["collected", "closed"], n, p=[0.7, 0.3]).tolist(), strict=True))
        attribute_incidents(conn)
    yield engine
    engine.dispose()
    _drop_database(url)


def test_heatmap_exports_the_filtered_hot_spots_as_excel(heat_engine, live_server, page_offline):
    from api.auth import COOKIE_NAME, issue_token
    from api.main import create_app
    from geo.access.users import create_user
    from geo.store.db import session_scope

    with session_scope(heat_engine) as s:
        token = issue_token(create_user(s, f"admin-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, "admin"))
    base = live_server(create_app(heat_engine))
    res = _open_signed_in(page_offline, base, "/maps/heatmap?from=2025-01&to=2025-06&cell_m=60",
                          cookie={"name": COOKIE_NAME, "value": token, "url": base})
    page = res.page
    page.wait_for_function("() => window.gaMap && window.gaMap.ready && window.gaMap.heat.hotReady", timeout=30_000)
    assert _lib_requests(page) == []
    classes = page.evaluate("() => window.gaMap.heat.hot.items.map(h => h['class'])")
    assert classes
    # the filter: the least frequent hot/cold class hidden in the legend (or a search when there is one class)
    counts = {k: classes.count(k) for k in set(classes)}
    if len(counts) > 1:
        hidden = min(counts, key=lambda k: (counts[k], k))
        page.click(f"#ga-legend li[data-key='h{hidden}']")
        assert int(page.inner_text("#ga-list-count").split(" ")[0]) == len(classes) - counts[hidden]
    else:
        page.fill("#ga-search", "点")
    rows, ws = _exports(page)
    assert rows[0] == ["冷热点", "所在网格", "网格编码", "事件数", "置信度与 z 值", "经度", "纬度"]
    data = _check_same_rows(page, rows, ws, numeric={"事件数", "经度", "纬度"})
    assert all(isinstance(r[3], int) and isinstance(r[5], float) and 119 < r[5] < 122 for r in data)
    assert ws.cell(3, 6).number_format == "0.000000"
    assert len(_lib_requests(page)) == 1
    page.set_viewport_size({"width": 1366, "height": 768})
    page.wait_for_timeout(200)
    screenshot(page, "leader_export_heatmap")
    assert res.problems == {}, res.problems
