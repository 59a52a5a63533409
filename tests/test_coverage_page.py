"""The coverage map (/maps/coverage) on vector tiles, in headless Chromium with the internet cut off: status as fill
with legend counts, the role filter as a repaint (no request, same view), the gaps list with search and zoom-to,
clicks naming who is responsible, exports (PNG with title and legend, CSV of the list); the data JSON and access."""

from __future__ import annotations

import csv
import io
import itertools

import pytest
from PIL import Image
from sqlalchemy import text

from tests import staff_data as sd
from tests.browser import _is_local, screenshot

pytestmark = pytest.mark.browser

AT = "2025-03-01"
RED = (0xd7, 0x19, 0x1c)


@pytest.fixture
def small_app(migrated_engine):
    """The hand-made community, an app on it and a community leader's bearer headers."""
    from api.main import create_app

    sd.build_staffed(migrated_engine)
    headers = sd.bearer_headers(migrated_engine, {"leader": ("leader", sd.COMMUNITY), "east": ("worker", sd.GRID_E)})
    return create_app(migrated_engine), headers


def test_page_is_a_small_offline_shell_and_data_is_escaped_json(small_app):
    from fastapi.testclient import TestClient

    from maps.assets import external_resources

    app, h = small_app
    with app.state.engine.begin() as conn:
        evil = sd.person(conn, "<script>alert(1)</script>", home=2)
        sd.assign(conn, evil, "grid_chief", "grid", 2)
    with TestClient(app) as client:
        r = client.get("/maps/coverage", params={"at": AT}, headers=h["leader"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        page = r.text
        assert '<html lang="zh-CN">' in page and "人员覆盖图" in page and external_resources(page) == []
        assert len(page.encode()) < 10_000  # a shell: the shapes come from tiles
        assert "/maps/coverage/data?at=2025-03-01" in page and "/tiles/{layer}/{z}/{x}/{y}.mvt?at=2025-03-01" in page
        d = client.get("/maps/coverage/data", params={"at": AT}, headers=h["leader"]).json()
        grids = {g["code"]: g for g in d["grids"]}
        assert set(grids) == {sd.GRID_W, sd.GRID_E}
        east = grids[sd.GRID_E]
        # text in JSON, shown with textContent; the chief first (whom the page calls)
        assert east["people"][0][:2] == ["<script>alert(1)</script>", "grid_chief"]
        # the box as offsets in 1e-5° around the label point
        assert east["box"][0] < 0 < east["box"][2] and east["box"][1] < 0 < east["box"][3] and east["name"] == "东网格"
        assert len(east["status"]) == len(d["filters"]) and d["filters"][0]["key"] == ""
        assert d["communities"][0]["name"] == "测试社区" and d["streets"][0]["name"] == "测试街道"
        ids = list(itertools.accumulate(d["buildings"]["id"]))
        assert len(ids) == 4 and ids == sorted(ids) and all(len(s) == 4 for s in d["buildings"]["status"].values())
        assert set(d["buildings"]["status"]) == {"", "grid", "building_head", "unit_head", "steward"}
        assert {d["grids"][i]["code"] for i in d["buildings"]["grid"]} <= {sd.GRID_W, sd.GRID_E}
        # the worker of grid E sees only grid E and its buildings
        e = client.get("/maps/coverage/data", params={"at": AT}, headers=h["east"]).json()
        assert [g["code"] for g in e["grids"]] == [sd.GRID_E]
        assert client.get("/maps/coverage", params={"role": "cook"}, headers=h["leader"]).status_code == 422
        assert client.get("/maps/coverage", params={"grid": sd.GRID_W}, headers=h["east"]).status_code == 403
        assert client.get("/maps/coverage/data", params={"grid": sd.GRID_W}, headers=h["east"]).status_code == 403
        anon = client.get("/maps/coverage", headers={"accept": "text/html"}, follow_redirects=False)
        assert anon.status_code in (303, 401)
        assert client.get("/maps/coverage/data").status_code == 401


def _open(browser, base: str, path: str, headers: dict, viewport=(1366, 768)):
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, locale="zh-CN",
                                  extra_http_headers=headers, accept_downloads=True)
    external, errors = [], []

    def route(r):
        if _is_local(r.request.url):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort("internetdisconnected")

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda resp: errors.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None)
    page.goto(base + path, wait_until="networkidle")
    return context, page, external, errors


def _wait_ready(page) -> None:
    page.wait_for_function("() => window.gaMap && window.gaMap.ready && window.gaMap.tilesLoaded > 0")


def _pixel_at(page, lon: float, lat: float) -> tuple[int, int, int]:
    """The colour the exported view has at a WGS-84 point (the export is the map under a 44 px title band)."""
    data = page.evaluate("""([lon, lat]) => {
        const g = window.gaMap, q = g.toMap(lon, lat), p = g.map.latLngToContainerPoint(L.latLng(q[1], q[0]));
        const c = g.viewCanvas({labels: false}), dpr = c.width / g.map.getSize().x;
        const px = c.getContext('2d').getImageData(Math.round(p.x * dpr), Math.round((p.y + 44) * dpr), 1, 1).data;
        return [px[0], px[1], px[2]];
    }""", [lon, lat])
    return tuple(data)


def _close(a, b, tol=40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_coverage_map_in_a_browser(small_app, live_server, browser, tmp_path):
    app, h = small_app
    base = live_server(app)
    context, page, external, errors = _open(browser, base, f"/maps/coverage?at={AT}", h["leader"])
    try:
        _wait_ready(page)
        assert external == [] and errors == []
        assert page.title().startswith("人员覆盖图")
        d = page.evaluate("() => window.gaMap.data")
        statuses = {g["code"]: g["status"][""] for g in d["grids"]}
        assert statuses[sd.GRID_E] == "m"  # grid E has no grid chief
        # legend counts agree with the data
        legend = page.inner_text("#ga-legend")
        n_m = sum(s == "m" for s in statuses.values())
        n_bm = d["buildings"]["status"][""].count("m")
        assert f"缺岗：网格 {n_m}，楼栋 {n_bm}" in legend, legend
        # B2 (no building head) is painted red where it stands; the view is at building zoom
        assert page.evaluate("() => window.gaMap.map.getZoom()") >= 14
        b2 = sd.BUILDINGS[2]
        assert _close(_pixel_at(page, b2[1], b2[2]), RED), _pixel_at(page, b2[1], b2[2])
        # the gaps list names grid E, what it lacks and whom to call
        rows = page.inner_text("#ga-table tbody")
        assert "东网格" in rows and "缺网格长" in rows
        screenshot(page, "coverage_tiles")
        page.screenshot(path="/tmp/coverage_1366.png")

        # a click on B2 names what it lacks
        pt = page.evaluate("""([lon, lat]) => {
            const g = window.gaMap, q = g.toMap(lon, lat), p = g.map.latLngToContainerPoint(L.latLng(q[1], q[0]));
            const r = g.map.getContainer().getBoundingClientRect(); return [r.left + p.x, r.top + p.y];
        }""", [b2[1], b2[2]])
        page.mouse.click(pt[0], pt[1])
        info = page.inner_text("#ga-info")
        assert "00002" in info and "缺楼栋长" in info, info

        # the role filter repaints: no request, no navigation, the same view
        view = page.evaluate("() => [window.gaMap.map.getCenter(), window.gaMap.map.getZoom()]")
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        url, paints = page.url, page.evaluate("() => window.gaMap.paints")
        page.select_option("#ga-role", "building_head")
        assert page.evaluate("() => window.gaMap.paints") > paints
        assert requests == [] and page.url == url
        assert page.evaluate("() => [window.gaMap.map.getCenter(), window.gaMap.map.getZoom()]") == view
        rows = page.inner_text("#ga-table tbody")
        assert "1栋楼缺楼栋长" in rows, rows
        b1 = sd.BUILDINGS[1]
        assert _close(_pixel_at(page, b1[1], b1[2]), (0x1a, 0x96, 0x41))  # B1 has a building head: green
        # hiding a status from the legend takes it off the map
        page.click("#ga-legend li[data-key='m']")
        assert not _close(_pixel_at(page, b2[1], b2[2]), RED)
        page.click("#ga-legend li[data-key='m']")
        assert _close(_pixel_at(page, b2[1], b2[2]), RED)

        # exports: the list as CSV, the view as PNG with its title band and legend
        with page.expect_download() as dl:
            page.click("#ga-csv")
        body = dl.value.path().read_bytes().decode("utf-8")
        assert body.startswith("\ufeff")
        table = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
        assert table[0] == ["网格", "编码", "社区", "缺什么", "联系谁"] and len(table) == 1 + int(
            page.inner_text("#ga-list-count").split(" ")[0])
        assert any("1栋楼缺楼栋长" in r[3] for r in table[1:])
        with page.expect_download() as dl:
            page.click("#ga-png")
        img = Image.open(io.BytesIO(dl.value.path().read_bytes())).convert("RGB")
        size = page.evaluate("() => [window.gaMap.map.getSize().x, window.gaMap.map.getSize().y]")
        scale = img.width / size[0]
        assert round(img.height / scale) == size[1] + 44
        assert img.getpixel((2, 2)) == (255, 255, 255)  # the title band
        title_ink = [img.getpixel((x, int(16 * scale))) for x in range(int(10 * scale), int(120 * scale))]
        assert any(sum(p) < 200 for p in title_ink)  # the title's dark text
        # the legend box at the bottom right holds the status swatches
        legend_px = {img.getpixel((x, y)) for x in range(img.width // 2, img.width)
                     for y in range(img.height - int(160 * scale), img.height, 2)}
        assert any(_close(p, RED, 6) for p in legend_px)
        img.save("/tmp/coverage_export.png")

        # search narrows the list, zoom-to frames the grid and names it
        page.select_option("#ga-role", "")
        page.fill("#ga-search", sd.GRID_E)
        assert page.locator("#ga-table tbody tr").count() == 1
        page.click("#ga-table .ga-zoom")
        assert "东网格" in page.inner_text("#ga-info")
        assert external == [] and errors == []
    finally:
        context.close()


def test_phone_layout(small_app, live_server, browser):
    app, h = small_app
    base = live_server(app)
    context, page, external, errors = _open(browser, base, f"/maps/coverage?at={AT}", h["leader"],
                                            viewport=(390, 844))
    try:
        _wait_ready(page)
        assert external == [] and errors == []
        box = page.locator("#ga-map").bounding_box()
        assert box["width"] == 390 and box["height"] > 300  # the map on top, the list below
        assert page.locator("#ga-table tbody tr").count() >= 1
        page.screenshot(path="/tmp/coverage_390.png", full_page=True)
    finally:
        context.close()


def test_district_data_names_every_grid_and_building_of_the_community(client, make_user, db_session):
    from geo.staff.coverage import coverage_report

    community = db_session.execute(text("SELECT code FROM communities ORDER BY code LIMIT 1")).scalar()
    leader = make_user("leader", community)
    d = client.get("/maps/coverage/data", params={"role": "steward"}, headers=leader["headers"]).json()
    report = coverage_report(db_session.connection(), community)
    assert sorted(g["code"] for g in d["grids"]) == sorted(report.grids["code"])
    assert list(itertools.accumulate(d["buildings"]["id"])) == sorted(int(i) for i in report.buildings["id"])
    assert all(g["box"] and g["lon"] is not None for g in d["grids"])
    # each building's grid and steward status as the report has them
    grid_of = dict(zip(report.buildings["id"].astype(int), report.buildings["grid_code"], strict=True))
    ids = list(itertools.accumulate(d["buildings"]["id"]))
    assert [d["grids"][i]["code"] if i >= 0 else None for i in d["buildings"]["grid"]] == [grid_of[i] for i in ids]


def test_district_data_names_whom_to_call_and_the_grid_alone_everyone(client, make_user, db_session):
    """A community's data lists per grid whom to call (its chiefs, else its full-time workers …); asked for one
    grid (as the page does when its panel opens) it lists every staff member of the grid."""
    community = db_session.execute(text("SELECT code FROM communities ORDER BY code LIMIT 1")).scalar()
    leader = make_user("leader", community)
    d = client.get("/maps/coverage/data", headers=leader["headers"]).json()
    for g in d["grids"]:
        assert len({role for _, role, _ in g["people"]}) <= 1  # one role group: whom to call
    full = {}
    for g in d["grids"]:
        one = client.get("/maps/coverage/data", params={"grid": g["code"]}, headers=leader["headers"]).json()
        [mine] = one["grids"]
        assert not mine["more"] and [p for p in mine["people"] if p[1] == (g["people"] or [[None, None]])[0][1]] \
            == g["people"]
        full[g["code"]] = mine
    assert any(g["more"] for g in d["grids"])  # the district has grids with more staff than whom to call
    assert all(len(full[g["code"]]["people"]) > len(g["people"]) for g in d["grids"] if g["more"])
