"""The leader's home page (`/`, 首页) and the list of maps (`/maps`, 地图): Chinese, offline, no map library.

The figures come from `geo.features.overview.overview` (passed in); this module only lays them out and lists the
links: every map and list of the service, with what each answers.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape

from geo.io.codes import filter_lengths
from maps.assets import STATIC_URL, OfflineAssetError, external_resources, install_asset_helper

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
install_asset_helper(_env)  # asset(path): /static/<path>?v=<content hash>

CLASS_ZH = {"same": "一致", "larger": "大于网格", "smaller": "小于网格", "straddling": "跨网格", "outside": "网格外"}
CLASS_COLOURS = {"same": "#1a9850", "larger": "#4575b4", "smaller": "#91bfdb", "straddling": "#d73027",
                 "outside": "#9e9e9e"}


def _filter(code: str | None) -> str:
    """The query string narrowing a page to a jurisdiction (the pages narrow to the caller's anyway)."""
    if not code:
        return ""
    # by length, as any shipped code scheme allows (10-digit villages, 16-digit dedicated grids)
    name = next((label for level, label in (("streets", "street"), ("communities", "community"), ("grids", "grid"))
                 if filter_lengths()[level][0] <= len(code) <= filter_lengths()[level][1]), None)
    return f"?{name}={quote(code)}" if name else ""


def map_links(code: str | None = None) -> list[dict]:
    """Every page and list a leader uses, grouped: title, what it answers, where."""
    q = _filter(code)
    return [
        {"group": "地图", "items": [
            {"title": "人员覆盖图", "href": f"/maps/coverage{q}",
             "text": "网格员、楼栋长、单元长、管家是否到位，缺岗与超负荷"},
            {"title": "小区与网格对应关系图", "href": "/maps/classification",
             "text": "小区与网格一致、大于、小于、跨网格、在网格外"},
            {"title": "事件热力图", "href": "/maps/heatmap", "text": "网格事件的分布、热点与冷点"},
            {"title": "网格定位（手机）", "href": "/m", "text": "这个位置属于哪个网格、谁负责"},
            {"title": "上报事件（手机）", "href": "/m/report", "text": "现场上报网格事件"},
        ]},
        {"group": "清单与报表", "items": [
            {"title": "人员缺口清单（Excel）", "href": f"/v1/coverage/gaps{q}{'&' if q else '?'}format=xlsx",
             "text": "缺岗、超负荷、不足额的网格、楼栋、单元及联系人"},
            {"title": "人员缺口清单（CSV）", "href": f"/v1/coverage/gaps{q}{'&' if q else '?'}format=csv", "text": ""},
            {"title": "小区分类表（CSV）", "href": "/v1/classification?format=csv", "text": "每个小区的类型与测量值"},
            {"title": "考核指标", "href": "/v1/kpi?by=community", "text": "结案率、按期结案率、处置率（JSON）"},
        ]},
        {"group": "数据服务（GIS 软件可直接添加）", "items": [
            {"title": "网格要素服务（OGC API Features）", "href": "/ogc?f=html",
             "text": "在 QGIS 中添加 OAPIF 图层：街道、社区、网格、微网格、小区、楼栋、事件"},
            {"title": "矢量瓦片（TileJSON）", "href": "/tiles/grids.json", "text": "网格等图层的 MVT 矢量瓦片"},
            {"title": "API 文档", "href": "/docs", "text": "全部接口"},
        ]},
    ]


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def render_home_page(figures: dict, username: str, role: str, static_url: str = STATIC_URL) -> str:
    """The home page for the figures of `geo.features.overview.overview`."""
    kpi = figures["kpi"]
    this, last = kpi["this_month"], kpi["last_month"]
    trend = None
    if this["on_time_rate"] is not None and last["on_time_rate"] is not None:
        diff = (this["on_time_rate"] - last["on_time_rate"]) * 100
        trend = {"up": diff >= 0, "text": f"{'↑' if diff >= 0 else '↓'} {abs(diff):.1f} 个百分点（上月 "
                                          f"{_pct(last['on_time_rate'])}）"}
    classes = figures.get("compound_classes")
    class_rows = []
    if classes:
        total = sum(classes.values()) or 1
        class_rows = [{"key": k, "zh": CLASS_ZH[k], "n": n, "share": n / total, "colour": CLASS_COLOURS[k]}
                      for k, n in classes.items()]
    page = _env.get_template("home.html").render(
        f=figures, j=figures["jurisdiction"], this=this, last=last, trend=trend, pct=_pct, classes=class_rows,
        class_total=sum(classes.values()) if classes else 0, links=map_links(figures["jurisdiction"]["code"]),
        username=username, role=role, static_url=static_url, page="home")
    return _checked(page)


def render_maps_page(username: str, code: str | None, static_url: str = STATIC_URL) -> str:
    """The list of maps and lists (`/maps`)."""
    page = _env.get_template("home.html").render(links=map_links(code), username=username, static_url=static_url,
                                                page="maps", j=None, f=None)
    return _checked(page)


def render_leader_map(kind: str, title: str, data_url: str, tile_query: str, basemaps: list[dict], username: str,
                      bounds: list[float] | None = None, static_url: str = STATIC_URL) -> str:
    """A leader's map page (coverage or classification): a shell that draws the vector tiles
    (`/tiles/{layer}/…`), fetches its small JSON from `data_url` and does filters, lists and exports in the
    browser (maps/static/leader/leadermap.js). `bounds` (WGS-84 box) lets the tiles load while the JSON is made."""
    config = {"kind": kind, "title": title, "data": data_url, "tiles": "/tiles/{layer}/{z}/{x}/{y}.mvt" + tile_query,
              "basemaps": basemaps, "bounds": bounds}
    page = _env.get_template("leader_map.html").render(config=config, title=title, kind=kind, username=username,
                                                       static_url=static_url)
    return _checked(page)


def _checked(page: str) -> str:
    external = external_resources(page)
    if external:
        raise OfflineAssetError(f"the page would load external resources: {external}")
    return page
