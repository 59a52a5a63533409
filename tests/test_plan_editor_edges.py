"""The editor's vertex editing keeps the partition (Chromium): a planner drags a vertex two grids share and the
neighbour's edge follows; the grids still cover the community exactly, without overlaps. Screenshots go to
var/screenshots/."""

from __future__ import annotations

import re

import numpy as np
import pytest
import shapely
from shapely.geometry import shape
from sqlalchemy import text

from tests.browser import SCREENSHOT_DIR
from tests.test_plan_editor import _api, _idle, _login, _wait_editor, editor_app  # noqa: F401  (a fixture)

pytestmark = pytest.mark.browser


def _shot(page, name: str) -> None:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"))


def _units(api, pid: int, level: str = "grid") -> dict:
    feats = api.get(f"/v1/plans/{pid}").json()["units"]["features"]
    return {f["id"]: shape(f["geometry"]) for f in feats if f["properties"]["level"] == level}


def _max_overlap(geoms) -> float:
    geoms = np.asarray(list(geoms), dtype=object)
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = a < b
    return float(shapely.area(shapely.intersection(geoms[a[keep]], geoms[b[keep]])).max()) if keep.any() else 0.0


def _alone(v, coords: set) -> bool:
    """No other vertex within 3 m: the vertex's own marker is the one under the mouse, not a middle marker."""
    others = np.array([c for c in coords if c != v])
    return bool(np.hypot(*((others - v) * [96_000, 111_000]).T).min() > 3)


def _shared_vertex(geoms: dict, community, prefer: list[str] | None = None) -> tuple[str, str, tuple[float, float]]:
    """Two grids (those in `prefer` first) and a vertex only they share, at least 30 m inside the community."""
    coords = {k: {tuple(c) for c in shapely.get_coordinates(g)} for k, g in geoms.items()}
    edge = shapely.boundary(community)
    keys = sorted(geoms, key=lambda k: (k not in (prefer or []), k))
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            for v in sorted(coords[a] & coords[b]):
                if any(v in coords[k] for k in keys if k not in (a, b)):
                    continue
                if (shapely.distance(shapely.Point(v), edge) * 111_000 > 30 and _alone(v, coords[a])
                        and _alone(v, coords[b])):
                    return a, b, v
    raise AssertionError("no vertex shared by exactly two grids")


def test_dragging_a_shared_vertex_moves_the_neighbours_edge(editor_app, live_server, browser):  # noqa: F811
    base = live_server(editor_app.app)
    api = _api(base, "planner1")
    created = api.post("/v1/plans", json={"community_code": editor_app.code})
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    with editor_app.engine.connect() as conn:
        community = shapely.from_wkb(bytes(conn.execute(text(
            "SELECT ST_AsBinary(geom) FROM communities_at(now()) WHERE id = :c"), {"c": editor_app.community_id}
        ).scalar_one()))
    before = _units(api, pid)
    comprehensive = [f["id"] for f in created.json()["units"]["features"]
                     if f["properties"]["level"] == "grid" and f["properties"]["kind"] == "comprehensive"]
    a, b, v = _shared_vertex(before, community, comprehensive)
    res, context = _login(browser, base, "planner1", f"/plans/{pid}")
    page = res.page
    try:
        _wait_editor(page)
        # select grid a from the panel, then the vertex tool (key E); Geoman loads when first needed
        page.click(f'#ga-grids button[data-key="{a}"]')
        page.evaluate("([x, y]) => gaEditor.map.setView([y, x], 19, {animate: false})", list(v))
        page.keyboard.press("e")
        page.wait_for_selector(".leaflet-marker-icon.marker-icon", timeout=15_000)
        page.wait_for_timeout(200)
        _shot(page, "plan_vertex_before")
        # drag the shared vertex 40 px towards the inside of a (about 10 m at zoom 19)
        start = page.evaluate("([x, y]) => gaEditor.pagePoint(x, y)", list(v))
        inside = shapely.get_coordinates(shapely.point_on_surface(before[a]))[0]
        towards = page.evaluate("([x, y]) => gaEditor.pagePoint(x, y)", list(inside))
        d = np.array([towards["x"] - start["x"], towards["y"] - start["y"]])
        d = d / np.hypot(*d) * 40
        page.mouse.move(start["x"], start["y"])
        page.mouse.down()
        for t in np.linspace(0.1, 1, 10):
            page.mouse.move(start["x"] + d[0] * t, start["y"] + d[1] * t)
        page.mouse.up()
        page.wait_for_function("() => gaEditor.state.latencies.some(r => r.action === 'reshape')", timeout=20_000)
        _idle(page)
        # the diff against the published version follows too (it comes after the figures and the map)
        changed = {c["key"] for c in api.get(f"/v1/plans/{pid}/diff").json()["grid"]["changed"]}
        assert {a, b} <= changed
        page.wait_for_function("() => /改动 [1-9]/.test(document.getElementById('ga-diff').innerText)",
                               timeout=20_000)
        _shot(page, "plan_vertex_after")
        after = _units(api, pid)
        # the neighbour follows: b's outline has the point a's vertex went to, and no longer the old one
        new_pts = {tuple(c) for c in shapely.get_coordinates(after[a])} - {tuple(c) for c in
                                                                          shapely.get_coordinates(before[a])}
        assert new_pts, "the drag moved no vertex"
        b_pts = {tuple(c) for c in shapely.get_coordinates(after[b])}
        assert new_pts & b_pts and v not in b_pts
        assert shapely.area(after[a]) < shapely.area(before[a]) and shapely.area(after[b]) > shapely.area(before[b])
        # the partition is kept: same land covered, nothing overlapping, and the page shows no gap or overlap
        cover_before = shapely.union_all(list(before.values()))
        cover_after = shapely.union_all(list(after.values()))
        assert shapely.area(shapely.symmetric_difference(cover_before, cover_after)) < 1e-11
        assert _max_overlap(after.values()) < 1e-12
        rules = page.evaluate("() => gaEditor.state.validation.problems.map(p => p.rule)")
        assert not {"gap", "overlap", "micro_tiling"} & set(rules), rules
        # the page drew the neighbour from the API's answer (its outline in the page is the API's)
        page_b = page.evaluate("(k) => gaEditor.state.units[k].geometry", b)
        assert shapely.equals_exact(shape(page_b), after[b], 1e-12)
        ops = [o["op"]["type"] for o in api.get(f"/v1/plans/{pid}").json()["operations"]]
        assert ops == ["reshape"]
        # Ctrl+Z undoes the whole edit, both grids
        page.keyboard.press("Escape")
        page.keyboard.press("Control+z")
        page.wait_for_function("() => gaEditor.state.latencies.some(r => r.action === 'undo')")
        _idle(page)
        back = _units(api, pid)
        assert shapely.equals_exact(back[b], before[b], 1e-12) and shapely.equals_exact(back[a], before[a], 1e-12)
        problems = {k: v for k, v in res.problems.items() if v}
        assert not problems, problems
    finally:
        context.close()


def _ops(api, pid: int) -> list[dict]:
    return [o["op"] for o in api.get(f"/v1/plans/{pid}").json()["operations"] if not o["undone_at"]]


def _micro_of(api, pid: int, grid: str) -> dict:
    feats = api.get(f"/v1/plans/{pid}").json()["units"]["features"]
    return {f["id"]: shape(f["geometry"]) for f in feats
            if f["properties"]["level"] == "micro_grid" and f["properties"]["parent_key"] == grid}


def _table(page) -> dict:
    """The micro-grid table: key → (households, buildings, stewards cell)."""
    rows = page.evaluate("""() => Array.from(document.querySelectorAll('#ga-micros tbody tr[data-key]')).map(tr => [
        tr.dataset.key, Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim())])""")
    return {k: (int(c[1].replace(",", "")), int(c[3]), c[4]) for k, c in rows}


def _expected_households(page, micros: dict) -> dict:
    """Households per micro-grid from the page's buildings (point on surface in the micro-grid, smallest key)."""
    ctx = page.evaluate("() => JSON.parse(document.getElementById('ga-data').textContent).context.buildings")
    out = dict.fromkeys(micros, 0)
    for f in ctx["features"]:
        pt = shapely.Point(f["properties"]["pt"])
        for k in sorted(micros):
            if shapely.covers(micros[k], pt):
                out[k] += f["properties"]["households"]
                break
    return out


def _drag(page, frm, to_lonlat_dir, px: float = 40):
    start = page.evaluate("([x, y]) => gaEditor.pagePoint(x, y)", list(frm))
    towards = page.evaluate("([x, y]) => gaEditor.pagePoint(x, y)", list(to_lonlat_dir))
    d = np.array([towards["x"] - start["x"], towards["y"] - start["y"]])
    d = d / np.hypot(*d) * px
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    for t in np.linspace(0.1, 1, 10):
        page.mouse.move(start["x"] + d[0] * t, start["y"] + d[1] * t)
    page.mouse.up()


def _wait_ops(page, api, pid: int, n: int) -> list[dict]:
    page.wait_for_function("(n) => gaEditor.state.plan && gaEditor.state.plan.operations.length >= n", arg=n,
                           timeout=20_000)
    _idle(page)
    return _ops(api, pid)


def test_micro_grid_editing_in_the_editor(editor_app, live_server, browser):  # noqa: F811
    """Inside one grid, the editor paints buildings into a micro-grid, splits, merges, drags a shared vertex (the
    neighbour micro-grid follows), creates and retires micro-grids; the table shows each micro-grid's households
    and stewards after every step, equal to the plan's; the micro-grids still tile their grid."""
    base = live_server(editor_app.app)
    api = _api(base, "planner1")
    pid = api.post("/v1/plans", json={"community_code": editor_app.code}).json()["id"]
    feats = api.get(f"/v1/plans/{pid}").json()["units"]["features"]
    parents = [f["properties"]["parent_key"] for f in feats if f["properties"]["level"] == "micro_grid"]
    g = max(set(parents), key=parents.count)
    assert parents.count(g) >= 3
    grid_geom = next(shape(f["geometry"]) for f in feats if f["id"] == g)
    res, context = _login(browser, base, "planner1", f"/plans/{pid}")
    page = res.page
    try:
        _wait_editor(page)
        page.click(f'#ga-grids button[data-key="{g}"]')
        page.click("#ga-level")
        page.wait_for_selector("#ga-micro-section:not([hidden])")
        assert page.get_attribute("#ga-level", "aria-pressed") == "true"
        micros = _micro_of(api, pid, g)
        table = _table(page)
        assert set(table) == set(micros)
        expected = _expected_households(page, micros)
        assert {k: v[0] for k, v in table.items()} == expected
        assert all(re.fullmatch(r"\d+(/\d+)?", v[2]) for v in table.values())
        _shot(page, "plan_micro_open")

        # ---- paint a building of one micro-grid into another (the target chosen in the toolbar)
        ctx = page.evaluate("() => JSON.parse(document.getElementById('ga-data').textContent).context.buildings")
        owner = page.evaluate("() => gaEditor.state.microOwner")
        props = {f["properties"]["id"]: f["properties"] for f in ctx["features"]}
        keys = sorted(micros, key=lambda k: -expected[k])
        to = keys[-1]
        bid = next(int(b) for b, k in owner.items() if k == keys[0] and props[int(b)]["households"] > 0)
        page.select_option("#ga-target", to)
        page.click('button[data-mode="paint"]')
        page.evaluate("(p) => gaEditor.map.setView([p[1], p[0]], 18, {animate: false})", props[bid]["pt"])
        page.wait_for_timeout(100)
        pt = page.evaluate("(id) => gaEditor.buildingPoint(id)", bid)
        page.mouse.click(pt["x"], pt["y"])
        ops = _wait_ops(page, api, pid, 1)
        assert ops[-1] == {"type": "move_buildings", "building_ids": [bid], "to": to}
        table = _table(page)
        assert table[to][0] == expected[to] + props[bid]["households"]
        assert {k: v[0] for k, v in table.items()} == _expected_households(page, _micro_of(api, pid, g))

        # ---- split the largest micro-grid by a line
        micros = _micro_of(api, pid, g)
        big = max(micros, key=lambda k: shapely.area(micros[k]))
        page.click('button[data-mode="select"]')
        page.click(f'#ga-micros button[data-key="{big}"]')
        page.click('button[data-mode="split"]')
        page.wait_for_function("() => gaEditor.map.pm && gaEditor.map.pm.globalDrawModeEnabled()")
        minx, miny, maxx, maxy = micros[big].bounds
        x = shapely.point_on_surface(micros[big]).x
        margin = (maxy - miny) * 0.12
        page.evaluate("(b) => gaEditor.map.fitBounds([[b[1], b[0]], [b[3], b[2]]], "
                      "{animate: false, padding: [40, 40]})", [minx, miny - margin, maxx, maxy + margin])
        p1 = page.evaluate("([x, y]) => gaEditor.pagePoint(x, y)", [x, maxy + margin])
        p2 = page.evaluate("([x, y]) => gaEditor.pagePoint(x, y)", [x, miny - margin])
        page.mouse.click(p1["x"], p1["y"])
        page.wait_for_timeout(80)
        page.mouse.click(p2["x"], p2["y"])
        page.wait_for_timeout(80)
        page.mouse.dblclick(p2["x"], p2["y"])
        ops = _wait_ops(page, api, pid, 2)
        assert ops[-1]["type"] == "split" and ops[-1]["key"] == big
        page.keyboard.press("Escape")
        after_split = _micro_of(api, pid, g)
        assert len(after_split) > len(micros)
        assert set(_table(page)) == set(after_split)

        # ---- merge two neighbouring micro-grids (Shift for the second)
        ks = sorted(after_split)
        pair = next((a, b) for i, a in enumerate(ks) for b in ks[i + 1:] if shapely.length(shapely.intersection(
            shapely.boundary(after_split[a]), shapely.boundary(after_split[b]))) > 1e-6)
        page.click(f'#ga-micros button[data-key="{pair[0]}"]')
        page.click(f'#ga-micros button[data-key="{pair[1]}"]', modifiers=["Shift"])
        page.click("#ga-merge")
        ops = _wait_ops(page, api, pid, 3)
        assert ops[-1] == {"type": "merge", "keys": list(pair)}
        merged = _micro_of(api, pid, g)
        assert pair[1] not in merged and set(_table(page)) == set(merged)

        # ---- drag a vertex two micro-grids share: the neighbour follows
        coords = {k: {tuple(c) for c in shapely.get_coordinates(m)} for k, m in merged.items()}
        edge = shapely.boundary(grid_geom)

        a, b, v = next((a, b, v) for a in sorted(merged) for b in sorted(merged) if a < b
                       for v in sorted(coords[a] & coords[b])
                       if not any(v in coords[k] for k in merged if k not in (a, b))
                       and shapely.distance(shapely.Point(v), edge) * 111_000 > 10
                       and _alone(v, coords[a]) and _alone(v, coords[b]))
        page.click(f'#ga-micros button[data-key="{a}"]')
        page.evaluate("([x, y]) => gaEditor.map.setView([y, x], 19, {animate: false})", list(v))
        page.click('button[data-mode="vertex"]')
        page.wait_for_selector(".leaflet-marker-icon.marker-icon", timeout=15_000)
        page.wait_for_timeout(200)
        inside = shapely.get_coordinates(shapely.point_on_surface(merged[a]))[0]
        _drag(page, v, inside, 30)
        ops = _wait_ops(page, api, pid, 4)
        assert ops[-1]["type"] == "reshape" and ops[-1]["key"] == a
        reshaped = _micro_of(api, pid, g)
        new_pts = {tuple(c) for c in shapely.get_coordinates(reshaped[a])} - coords[a]
        b_pts = {tuple(c) for c in shapely.get_coordinates(reshaped[b])}
        assert new_pts & b_pts and v not in b_pts
        _shot(page, "plan_micro_vertex")
        page.click("#ga-banner button.ga-primary")  # 完成

        # ---- create a micro-grid by drawing a small square inside the grid, carved from its neighbours
        page.click('button[data-mode="create"]')
        page.wait_for_function("() => gaEditor.map.pm.globalDrawModeEnabled()")
        c = shapely.get_coordinates(shapely.point_on_surface(reshaped[a]))[0]
        page.evaluate("([x, y]) => gaEditor.map.setView([y, x], 19, {animate: false})", list(c))
        centre = page.evaluate("([x, y]) => gaEditor.pagePoint(x, y)", list(c))
        square = [(-25, -25), (25, -25), (25, 25), (-25, 25), (-25, -25)]
        for dx, dy in square:
            page.mouse.click(centre["x"] + dx, centre["y"] + dy)
            page.wait_for_timeout(80)
        page.wait_for_selector(".ga-dialog-wrap")
        page.click(".ga-dialog-buttons button.ga-primary")
        ops = _wait_ops(page, api, pid, 5)
        assert ops[-1]["type"] == "create" and ops[-1]["level"] == "micro_grid" and ops[-1]["parent"] == g
        created = _micro_of(api, pid, g)
        new_key = next(iter(set(created) - set(reshaped)))
        assert new_key in _table(page)
        page.keyboard.press("Escape")

        # ---- retire it, its land going back to a neighbour
        page.click(f'#ga-micros button[data-key="{new_key}"]')
        page.click("#ga-retire")
        page.wait_for_selector(".ga-dialog-wrap")
        page.select_option("#ga-into", a)
        page.click(".ga-dialog-buttons button.ga-primary")
        ops = _wait_ops(page, api, pid, 6)
        assert ops[-1] == {"type": "retire", "key": new_key, "into": a}
        final = _micro_of(api, pid, g)
        assert new_key not in final and set(_table(page)) == set(final)
        assert {k: v[0] for k, v in _table(page).items()} == _expected_households(page, final)

        # the micro-grids still tile their grid: no overlap, no gap, and the page's validation agrees
        grid_now = shape(next(f["geometry"] for f in api.get(f"/v1/plans/{pid}").json()["units"]["features"]
                              if f["id"] == g))
        assert _max_overlap(final.values()) < 1e-12
        assert shapely.area(shapely.symmetric_difference(shapely.union_all(list(final.values())), grid_now)) < 1e-11
        rules = page.evaluate("() => gaEditor.state.validation.problems.map(p => p.rule)")
        assert "micro_tiling" not in rules and "overlap" not in rules, rules
        _shot(page, "plan_micro_done")
        # rename the micro-grid from the toolbar: one rename operation, the panel shows the new name
        page.click(f'#ga-micros button[data-key="{a}"]')
        page.click("#ga-rename")
        page.wait_for_selector(".ga-dialog-wrap")
        page.fill("#ga-new-name", "滨江苑微网格")
        page.click(".ga-dialog-buttons button.ga-primary")
        ops = _wait_ops(page, api, pid, 7)
        assert ops[-1] == {"type": "rename", "key": a, "name": "滨江苑微网格"}
        assert "滨江苑微网格" in page.inner_text("#ga-micros")
        # back to the grid level
        page.click("#ga-level")
        page.wait_for_selector("#ga-micro-section", state="hidden")
        problems = {k: v for k, v in res.problems.items() if v}
        assert not problems, problems
    finally:
        context.close()


def test_stale_publish_rebase_lists_the_conflicting_operations(editor_app, live_server, browser):  # noqa: F811
    """Issue 14 item 6: my draft merges two grids and moves a vertex; another planner publishes first, merging the
    same two grids. My publish gets the 412 in Chinese; rebuilding the draft on the new boundaries replays my
    operations and names the one that no longer applies (the merge: one of its grids is gone) as a conflict."""
    base = live_server(editor_app.app)
    first, second = _api(base, "planner1"), _api(base, "planner2")
    mine = first.post("/v1/plans", json={"community_code": editor_app.code, "label": "一号方案"}).json()
    theirs = second.post("/v1/plans", json={"community_code": editor_app.code, "label": "二号方案"}).json()
    geoms = {f["id"]: shape(f["geometry"]) for f in mine["units"]["features"] if f["properties"]["level"] == "grid"
             and f["properties"]["kind"] == "comprehensive"}
    keys = sorted(geoms)
    c, d = next((x, y) for i, x in enumerate(keys) for y in keys[i + 1:] if shapely.length(shapely.intersection(
        shapely.boundary(geoms[x]), shapely.boundary(geoms[y]))) > 1e-5)
    etag = mine["etag"]
    r = first.post(f"/v1/plans/{mine['id']}/operations", json={"type": "merge", "keys": [c, d]},
                   headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    etag = r.headers["ETag"]
    e = next(k for k in keys if k not in (c, d))
    r = first.post(f"/v1/plans/{mine['id']}/operations", json={"type": "rename", "key": e, "name": "一号改名网格"},
                   headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    r = second.post(f"/v1/plans/{theirs['id']}/operations", json={"type": "merge", "keys": [d, c]},
                    headers={"If-Match": theirs["etag"]})
    assert r.status_code == 200, r.text
    pub = second.post(f"/v1/plans/{theirs['id']}/publish", json={"allow_errors": True, "label": "二号合并"},
                      headers={"If-Match": r.headers["ETag"]})
    assert pub.status_code == 200, pub.text
    res, context = _login(browser, base, "planner1", f"/plans/{mine['id']}")
    page = res.page
    try:
        _wait_editor(page)
        page.click("#ga-publish")
        page.click(".ga-dialog .ga-primary")
        page.wait_for_selector(".ga-dialog h2:has-text('发布被拒绝')", timeout=30_000)
        dialog = page.inner_text(".ga-dialog")
        assert "planner2" in dialog and "二号合并" in dialog and "重放本方案的 2 项操作" in dialog
        page.click(".ga-dialog .ga-primary")
        page.wait_for_selector(".ga-dialog h2:has-text('已在最新边界上重建草稿')", timeout=30_000)
        text_ = page.inner_text(".ga-dialog")
        _shot(page, "plan_rebase_conflicts")
        assert "成功 1 项" in text_ and "冲突 1 项" in text_ and "合并" in text_
        with page.expect_navigation(url=re.compile(r"/plans/\d+$"), timeout=30_000):
            page.click(".ga-dialog .ga-primary")
        rebased = int(page.url.rsplit("/", 1)[1])
        ops = first.get(f"/v1/plans/{rebased}").json()["operations"]
        assert [o["op"] for o in ops] == [{"type": "rename", "key": e, "name": "一号改名网格"}]
        # nothing of mine was published over theirs: the published grids are theirs
        assert first.get(f"/v1/plans/{mine['id']}").json()["status"] == "draft"
    finally:
        context.close()
