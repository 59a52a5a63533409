"""The leader's home page at / (and /maps, /v1/overview): the jurisdiction by name, the figures from the domain
(grids, coverage, open incidents, 按期结案率, compounds by class), links to every map; in headless Chromium at a
laptop's and a phone's size, offline."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from tests.browser import SCREENSHOT_DIR, _is_local

MAP_LINKS = ("/maps/coverage", "/maps/classification", "/maps/heatmap", "/m", "/ogc?f=html", "/v1/coverage/gaps")


@pytest.fixture
def community(db_session) -> dict:
    code, name, street = db_session.execute(text(
        "SELECT c.code, c.name, s.name FROM communities c JOIN streets s ON s.id = c.street_id "
        "ORDER BY c.code LIMIT 1")).one()
    grids = db_session.execute(text("SELECT count(*) FROM current_grids WHERE starts_with(code, :c)"),
                               {"c": code}).scalar_one()
    return {"code": code, "name": name, "street": street, "grids": grids}


def test_overview_figures_follow_the_jurisdiction(client, make_user, admin_headers, community, db_session):
    leader = make_user("leader", community["code"])["headers"]
    mine = client.get("/v1/overview", headers=leader)
    assert mine.status_code == 200, mine.text
    o = mine.json()
    assert o["jurisdiction"] == {"code": community["code"], "level": "community", "level_zh": "社区",
                                 "name": community["name"],
                                 "parents": [{"code": community["code"][:9], "level": "street",
                                              "name": community["street"]}]}
    assert o["units"]["grids"] == o["coverage"]["grids"] == community["grids"]
    assert o["units"]["streets"] == 0 and o["units"]["communities"] == 1
    open_here = db_session.execute(text(
        "SELECT count(*) FROM incidents i JOIN incident_states s ON s.code = i.state AND s.is_open "
        "LEFT JOIN grids g ON g.id = i.grid_id LEFT JOIN communities c ON c.id = i.community_id "
        "WHERE starts_with(coalesce(g.code, c.code), :c)"), {"c": community["code"]}).scalar_one()
    assert o["incidents"]["open"] == open_here
    assert set(o["kpi"]) == {"this_month", "last_month"}
    assert set(o["compound_classes"]) == {"same", "larger", "smaller", "straddling", "outside"}

    whole = client.get("/v1/overview", headers=admin_headers).json()
    assert whole["jurisdiction"]["name"] == "全区"
    total = db_session.execute(text("SELECT count(*) FROM current_grids")).scalar_one()
    assert whole["units"]["grids"] == total > o["units"]["grids"]
    assert sum(whole["compound_classes"].values()) >= sum(o["compound_classes"].values())
    assert whole["incidents"]["open"] >= o["incidents"]["open"]


def test_home_needs_a_login(client, make_user, community):
    r = client.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2F")
    assert client.get("/").status_code == 401
    user = make_user("leader", community["code"])
    r = client.post("/v1/auth/token", data={"username": user["username"], "password": user["password"],
                                            "cookie": "true", "next": "/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = client.get("/", headers={"Accept": "text/html"})  # with the session cookie just set
    assert page.status_code == 200 and community["name"] in page.text


def test_the_login_lands_on_the_home_page(client, make_user, community):
    user = make_user("leader", community["code"])
    r = client.post("/v1/auth/token", data={"username": user["username"], "password": user["password"],
                                            "cookie": "true"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_home_and_maps_pages(client, make_user, community):
    from maps.assets import external_resources

    headers = make_user("leader", community["code"])["headers"]
    r = client.get("/", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="zh-CN">' in html and external_resources(html) == []
    assert community["name"] in html and community["street"] in html
    for words in ("网格", "专职网格员配备率", "未结事件", "本月按期结案率", "小区与网格对应关系"):
        assert words in html, words
    for href in MAP_LINKS:
        assert f'href="{href}' in html, href
    maps = client.get("/maps", headers=headers)
    assert maps.status_code == 200
    for href in MAP_LINKS:
        assert f'href="{href}' in maps.text, href


@pytest.mark.browser
def test_home_page_in_a_browser(app, make_user, community, live_server, browser):
    """The page at a laptop's (1366×768) and a phone's (390×844) size: figures, links, no overflow, nothing
    fetched from outside, no console errors; screenshots in var/screenshots and /tmp."""
    headers = make_user("leader", community["code"])["headers"]
    base = live_server(app)
    for width, height, name in ((1366, 768, "home_1366x768"), (390, 844, "home_390x844")):
        context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN",
                                      extra_http_headers=headers)
        external, errors = [], []

        def route(r, external=external):
            if _is_local(r.request.url):
                r.continue_()
            else:
                external.append(r.request.url)
                r.abort("internetdisconnected")

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.on("response", lambda r, errors=errors: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        try:
            page.goto(base + "/", wait_until="networkidle")
            assert page.title().startswith("首页") and community["name"] in page.title()
            assert page.inner_text("#ga-jurisdiction") == community["name"]
            figures = page.inner_text("#ga-figures")
            assert re.search(r"网格\s*\n?\s*\d+", figures) and "%" in figures
            assert "按期结案率" in figures and "一致" in figures
            hrefs = page.eval_on_selector_all("#ga-maps a", "els => els.map(e => e.getAttribute('href'))")
            paths = {h.split("?")[0] for h in hrefs}
            assert {"/maps/coverage", "/maps/classification", "/maps/heatmap", "/ogc", "/m"} <= paths
            # nothing wider than the screen
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            # the figure cards sit four abreast on a laptop, two on a phone
            lefts = page.eval_on_selector_all(".fig:not(.wide)", "els => els.map(e => e.getBoundingClientRect().left)")
            assert len({round(v) for v in lefts}) == (4 if width > 900 else 2)
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)
            page.screenshot(path=f"/tmp/{name}.png", full_page=True)
            assert external == [] and errors == []
        finally:
            context.close()
