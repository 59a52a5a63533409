"""The printable one-page summary (`/summary/{code}`, 一页纸概况): figures agree with the API, the map holds the
unit's and its children's outlines, jurisdiction rules, and in Chromium the A4 PDF has exactly one page."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from sqlalchemy import text

from api.problems import PROBLEM_MEDIA_TYPE
from tests.browser import SCREENSHOT_DIR, _is_local


@pytest.fixture
def units(db_session) -> dict:
    """The street with the most communities, its first community, and a community of another street."""
    street = db_session.execute(text(
        "SELECT street FROM (SELECT left(code, 9) AS street, count(*) AS n FROM current_communities "
        "GROUP BY 1) x ORDER BY n DESC, street LIMIT 1")).scalar_one()
    community = db_session.execute(text(
        "SELECT code FROM current_communities WHERE starts_with(code, :s) ORDER BY code LIMIT 1"),
        {"s": street}).scalar_one()
    other = db_session.execute(text(
        "SELECT code FROM current_streets WHERE code <> :s ORDER BY code LIMIT 1"), {"s": street}).scalar()
    return {"street": street, "community": community, "other_street": other}


def _fig(html: str, fig: str) -> str:
    m = re.search(rf'id="{fig}"><span class="k">[^<]*</span><span class="v">([^<]*)</span>', html)
    assert m, f"figure {fig} not on the page"
    return m.group(1)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


@pytest.mark.parametrize("level", ["community", "street"])
def test_summary_figures_agree_with_the_api(client, make_user, units, db_session, level):
    code = units[level]
    headers = make_user("leader", code)["headers"]
    r = client.get(f"/summary/{code}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    o = client.get("/v1/overview", headers=headers).json()
    cov = client.get("/v1/coverage", headers=headers, params={level: code, "include_units": "false"}).json()
    name = db_session.execute(text(f"SELECT name FROM current_{'streets' if level == 'street' else 'communities'} "
                                   "WHERE code = :c"), {"c": code}).scalar_one()
    assert f'<h1 id="ga-name">{name}概况</h1>' in html
    for parent in o["jurisdiction"]["parents"]:
        assert parent["name"] in html
    assert o["version"]["label"] in html
    assert _fig(html, "fig-grids") == str(o["units"]["grids"])
    assert _fig(html, "fig-compounds") == str(sum(o["compound_classes"].values()))
    assert _fig(html, "fig-buildings") == str(cov["totals"]["buildings"])
    assert _fig(html, "fig-households") == str(cov["totals"]["households"])
    assert _fig(html, "fig-coverage") == _pct(o["coverage"]["share_grids_with_fulltime_worker"])
    assert _fig(html, "fig-incidents") == str(o["incidents"]["open"])
    assert _fig(html, "fig-ontime") == _pct(o["kpi"]["this_month"]["on_time_rate"])
    for key, n in o["compound_classes"].items():
        zh = {"same": "一致", "larger": "大于网格", "smaller": "小于网格", "straddling": "跨网格",
              "outside": "网格外"}[key]
        assert f"{zh} <b>{n}</b>" in html
    # the gaps: every grid the coverage report calls not covered is counted, the first ones named with a contact
    bad = [g for g in cov["grids"] if g["status"] != "covered"]
    assert f"人员缺口（{len(bad)} 个网格" in html
    for g in sorted(bad, key=lambda g: (["missing_role", "over_capacity", "under_capacity"].index(g["status"]),
                                        g["code"]))[:3]:
        assert g["code"] in html
    if bad:
        assert "（网格长）" in html or "社区居委会" in html or "网格员）" in html
    # the map: the unit's outline and one path and one label per child in force
    child = "current_communities" if level == "street" else "current_grids"
    children = db_session.execute(text(f"SELECT code, name FROM {child} WHERE starts_with(code, :c)"),
                                  {"c": code}).all()
    assert len(children) > 1
    assert re.search(r'<path class="unit" id="ga-outline" d="M[\d. ]+Z', html)
    assert len(re.findall(r'<path class="child" d="M', html)) == len(children)
    for c_code, c_name in children:
        assert f'data-code="{c_code}"' in html and f">{c_name}</text>" in html


def test_summary_jurisdiction_and_unknown_codes(client, make_user, admin_headers, units):
    outsider = make_user("leader", units["other_street"])["headers"]
    r = client.get(f"/summary/{units['community']}", headers=outsider)
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert r.json()["required_jurisdiction"] == units["community"]
    # inside the caller's street but no such community: 404, as for an admin
    mine = make_user("leader", units["street"])["headers"]
    for headers in (mine, admin_headers):
        r = client.get(f"/summary/{units['street']}999", headers=headers)
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE), r.text
        assert r.json()["type"].endswith("/unit-not-found")
    r = client.get("/summary/abc", headers=admin_headers)
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert client.get(f"/summary/{units['street']}").status_code == 401


def test_a_grid_summary_names_its_micro_grids(client, make_user, db_session):
    grid, micro = db_session.execute(text(
        "SELECT g.code, m.code FROM current_grids g JOIN current_micro_grids m ON starts_with(m.code, g.code) "
        "ORDER BY g.code, m.code LIMIT 1")).one()
    micro_grids = db_session.execute(text("SELECT count(*) FROM current_micro_grids WHERE starts_with(code, :g)"),
                                     {"g": grid}).scalar_one()
    headers = make_user("worker", grid)["headers"]
    r = client.get(f"/summary/{grid}", headers=headers)
    assert r.status_code == 200, r.text
    assert "所辖微网格" in r.text and len(re.findall(r'<path class="child" d="M', r.text)) == micro_grids
    r = client.get(f"/summary/{micro}", headers=headers)  # longer than any grid code: refused by its form
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)


def _pdf_pages(pdf: bytes) -> int:
    """Pages of a PDF: pypdf when installed, else the page objects (/Type /Page, not /Pages) in Chromium's output."""
    try:
        import io

        from pypdf import PdfReader
    except ImportError:
        return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))
    return len(PdfReader(io.BytesIO(pdf)).pages)


def test_pdf_page_counter():
    two = b"<< /Type /Pages /Count 2 >> << /Type /Page /Parent 1 0 R >> << /Type/Page >>"
    assert _pdf_pages(two) == 2


@pytest.mark.browser
@pytest.mark.parametrize("level", ["community", "street", "street_without_staff"])
def test_summary_prints_on_one_a4_page(app, make_user, units, live_server, browser, db_session, level):
    """In Chromium at 1366×768: the map is drawn, nothing loads from outside, the print button exists, and
    `page.pdf(format="A4")` (print media) is one page, also for a street whose every grid has gaps (the longest
    gaps table); screenshot and PDF (and its PNG) in var/screenshots."""
    code = units[level.removesuffix("_without_staff")]
    if level.endswith("_without_staff"):
        db_session.execute(text("DELETE FROM staff_assignments"))  # rolled back with the test
    headers = make_user("leader", code)["headers"]
    base = live_server(app)
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                  extra_http_headers=headers)
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
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(f"{base}/summary/{code}", wait_until="networkidle")
        assert page.title().endswith("GridAtlas") and "概况" in page.title()
        assert page.is_visible("#ga-print") and page.inner_text("#ga-print").startswith("打印")
        box = page.locator("#ga-outline").bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100
        assert page.locator("#ga-children path").count() > 1
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / f"summary_{level}.png"), full_page=True)
        page.emulate_media(media="print")
        assert not page.is_visible("#ga-print")  # the button is not printed
        if level.endswith("_without_staff"):
            assert page.locator("#ga-gaps tbody tr").count() == 8 and page.is_visible("#ga-gaps-more")
        pdf = page.pdf(format="A4")
        (SCREENSHOT_DIR / f"summary_{level}.pdf").write_bytes(pdf)
        assert _pdf_pages(pdf) == 1
        if shutil.which("pdftoppm"):  # the PDF as the printer sees it, to look at
            subprocess.run(["pdftoppm", "-png", "-r", "80", "-singlefile", str(SCREENSHOT_DIR / f"summary_{level}.pdf"),
                            str(SCREENSHOT_DIR / f"summary_{level}_pdf")], check=True, timeout=60)
        assert external == [] and errors == []
    finally:
        context.close()


def test_the_home_page_links_to_the_summary(client, make_user, units):
    html = client.get("/", headers=make_user("leader", units["community"])["headers"]).text
    assert f'id="ga-summary-link" href="/summary/{units["community"]}"' in html


@pytest.mark.browser
def test_the_coverage_panel_links_to_the_summaries(app, make_user, units, live_server, browser, db_session):
    """On /maps/coverage, 定位 on a gap shows the grid's panel with links to its street's, community's and own
    summary, and the community's link opens its summary."""
    db_session.execute(text("DELETE FROM staff_assignments"))  # every grid a gap, so the list has rows
    headers = make_user("leader", units["street"])["headers"]
    base = live_server(app)
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                  extra_http_headers=headers)
    context.route("**/*", lambda r: r.continue_() if _is_local(r.request.url) else r.abort("internetdisconnected"))
    page = context.new_page()
    try:
        page.goto(f"{base}/maps/coverage", wait_until="networkidle")
        page.locator(".ga-zoom").first.click()
        links = page.locator("#ga-info .ga-summary-links a")
        links.first.wait_for()
        hrefs = links.evaluate_all("els => els.map(e => e.getAttribute('href'))")
        assert hrefs[0] == f"/summary/{units['street']}"
        community = next(h for h in hrefs if len(h) == len("/summary/") + 12)
        assert community.startswith(f"/summary/{units['street']}") and len(hrefs) == 3
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "summary_link_coverage.png"))
        opened = page.goto(base + community, wait_until="networkidle")
        assert opened.status == 200 and "社区概况" in page.inner_text("#ga-name")
    finally:
        context.close()


@pytest.mark.browser
def test_the_classification_panel_links_to_the_community_summary(app, make_user, units, live_server, browser):
    """On /maps/classification, 定位 on a compound shows its panel with a link to its community's summary."""
    headers = make_user("leader", units["street"])["headers"]
    base = live_server(app)
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                  extra_http_headers=headers)
    context.route("**/*", lambda r: r.continue_() if _is_local(r.request.url) else r.abort("internetdisconnected"))
    page = context.new_page()
    try:
        page.goto(f"{base}/maps/classification", wait_until="networkidle")
        page.locator(".ga-zoom").first.click()
        links = page.locator("#ga-info .ga-summary-links a")
        links.first.wait_for()
        hrefs = links.evaluate_all("els => els.map(e => e.getAttribute('href'))")
        assert any(h.startswith(f"/summary/{units['street']}") and len(h) == len("/summary/") + 12 for h in hrefs)
    finally:
        context.close()


def test_the_community_office_is_named_once():
    """A community named …社区 has its office as …社区居委会 (the coverage page said 社区社区居委会)."""
    from maps.coverage import community_office

    assert community_office("枫桥村社区") == "枫桥村社区居委会"
    assert community_office("巴陵") == "巴陵社区居委会"
