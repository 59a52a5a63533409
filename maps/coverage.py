"""The coverage map (人员覆盖图): grids and buildings coloured by staff status, legend, popups, role filter.

Page rendering only: the router hands over a `geo.staff.coverage.CoverageReport` read with geometry. Every name in a
popup is escaped here, so a name containing markup shows as text. Works offline (vendored Leaflet, no tiles).
"""

from __future__ import annotations

import html
import json

import pandas as pd
from branca.element import Element, MacroElement
from folium.template import Template

from geo.staff.coverage import STATUS_LABELS, CoverageReport, grid_problems
from geo.staff.register import ROLE_LABELS
from maps.assets import Panel, fitted_map, js_literal, legend_html, page_root, render_page

#: Status colours, worst first (legend order).
COLOURS = {"missing_role": "#d7191c", "over_capacity": "#e66101", "under_capacity": "#5e3c99",
           "covered": "#1a9641", "empty": "#9e9e9e"}
STATUS_NOTE = {"missing_role": "缺岗（缺少责任人或有住户无管家）", "over_capacity": "超负荷",
               "under_capacity": "不足额", "covered": "已覆盖", "empty": "无住户"}
#: The role filter: which roles a page can be coloured by ("" = the overall status).
ROLE_FILTERS = {"": "全部岗位", "grid_chief": "网格长", "grid_worker_fulltime": "专职网格员",
                "grid_worker_parttime": "兼职网格员", "building_head": "楼栋长", "unit_head": "单元长",
                "steward": "管家"}
GRID_ROLE_FILTERS = ("grid_chief", "grid_worker_fulltime", "grid_worker_parttime")
#: Roles shown as "其他" (others) on buildings and units.
OTHER_ROLES = ("volunteer", "seconded_cadre", "grid_worker_parttime", "grid_worker_fulltime", "grid_chief")

_LAYERS = Template(
    """
{% macro script(this, kwargs) %}
    (function (map) {
        function style(weight, opacity) {
            return function (f) {
                return {color: f.properties.c, weight: weight, fillColor: f.properties.c, fillOpacity: opacity};
            };
        }
        function bind(f, layer) {
            layer.bindPopup(f.properties.p, {maxWidth: 420});
            layer.bindTooltip(f.properties.t, {sticky: true});
        }
        var grids = L.geoJSON({{ this.grids }}, {style: style(2.5, 0.10), onEachFeature: bind}).addTo(map);
        var buildings = L.geoJSON({{ this.buildings }}, {style: style(1, 0.75), onEachFeature: bind}).addTo(map);
        L.control.layers(null, {"网格": grids, "楼栋": buildings}, {collapsed: false}).addTo(map);
        window.gaCoverage = {grids: grids, buildings: buildings};
    })({{ this._parent.get_name() }});
{% endmacro %}
"""
)

#: Run when the panel is built (`div` is the panel): the role filter reloads the page with ?role=.
_ROLE_SELECT_JS = """\
            var select = div.querySelector("select");
            select.addEventListener("change", function () {
                var url = new URL(window.location.href);
                if (select.value) { url.searchParams.set("role", select.value); }
                else { url.searchParams.delete("role"); }
                window.location.href = url.toString();
            });"""


class _Layers(MacroElement):
    _template = _LAYERS

    def __init__(self, grids: dict, buildings: dict):
        super().__init__()
        self._name = "CoverageLayers"
        self.grids = js_literal(grids)
        self.buildings = js_literal(buildings)


def _esc(v) -> str:
    return html.escape("" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))


def _people(people, roles=None, with_households: bool = False) -> str:
    out = []
    for p in people or []:
        if roles is not None and p["role"] not in roles:
            continue
        label = ROLE_LABELS.get(p["role"], p["role"])
        extra = f"，{p['households']}户" if with_households and p.get("households") is not None else ""
        load = f"（共{p['load']}户）" if with_households and p.get("load") is not None else ""
        out.append(f"{_esc(p['name'])}<small>·{label}{extra}{load}</small>")
    return "、".join(out) or "—"


def _table(rows: list[tuple[str, str]]) -> str:
    return '<table class="ga-popup-table">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + \
        "</table>"


def _missing_html(items: list[str]) -> str:
    return "<br>".join(f'<span style="color:{COLOURS["missing_role"]}">{_esc(i)}</span>' for i in items) or "无"


def _grid_status(r: dict, role: str, rules: dict) -> str:
    if not role:
        return r["status"]
    if role in GRID_ROLE_FILTERS:
        if role != "grid_chief" and r["kind"] != "comprehensive":
            return "empty"  # a dedicated grid has no full- or part-time grid workers of its own
        if r[role] == 0 and role != "grid_worker_parttime":
            return "missing_role"
        if role == "grid_worker_parttime" and r[role] > rules["grid_parttime_workers_max"]:
            return "over_capacity"
        return "covered"
    return "empty"  # other roles are shown on buildings; grids stay neutral


def _grid_issues(r: dict, rules: dict) -> list[str]:
    out = grid_problems(r, rules)
    if r["buildings_without_head"]:
        out.append(f"{r['buildings_without_head']}栋楼缺楼栋长")
    if r["units_without_head"]:
        out.append(f"{r['units_without_head']}个单元缺单元长")
    if r["unserved"]:
        out.append(f"{r['unserved']}户无管家")
    return out


def _unit_issue(u: dict, rules: dict) -> list[str]:
    out: list[str] = []
    if u["households"] == 0:
        return out
    if u["unit_heads"] == 0:
        out.append(f"{u['number']}单元缺单元长")
    if u["unserved"] > 0:
        out.append(f"{u['number']}单元{u['unserved']}户无管家")
    if u["steward_claims"] > u["households"]:
        out.append(f"{u['number']}单元管家认领{u['steward_claims']}户，多于{u['households']}户")
    for s in u["stewards"]:
        if s["load"] > rules["steward_households_max"]:
            out.append(f"管家{s['name']}共{s['load']}户，超过{rules['steward_households_max']}户")
        elif s["load"] < rules["steward_households_min"]:
            out.append(f"管家{s['name']}共{s['load']}户，少于{rules['steward_households_min']}户")
    return out


def _building_status(b: dict, units: list[dict], role: str) -> str:
    if not role or role in GRID_ROLE_FILTERS:
        return b["status"] if not role else ("empty" if b["households"] == 0 else "covered")
    if b["households"] == 0:
        return "empty"
    if role == "building_head":
        return "missing_role" if b["building_heads"] == 0 else "covered"
    if role == "unit_head":
        return "missing_role" if any(u["households"] > 0 and u["unit_heads"] == 0 for u in units) else "covered"
    # steward
    if any(u["unserved"] > 0 for u in units):
        return "missing_role"
    if any(u["over"] for u in units):
        return "over_capacity"
    if any(u["under"] for u in units):
        return "under_capacity"
    return "covered"


def coverage_page(report: CoverageReport, role: str = "", subtitle: str = "") -> str:
    """The offline HTML page: grids and buildings coloured by status (or by one role), legend, popups, filter."""
    if role not in ROLE_FILTERS:
        raise ValueError(f"unknown role filter {role!r}; expected one of {', '.join(r for r in ROLE_FILTERS if r)}")
    rules = report.rules
    units_by_b: dict[int, list[dict]] = {}
    for u in report.units.to_dict("records"):
        units_by_b.setdefault(u["building_id"], []).append(u)

    grid_features, bounds = [], [180.0, 90.0, -180.0, -90.0]

    def extend(geometry: dict) -> None:
        for ring in (geometry["coordinates"] if geometry["type"] == "Polygon" else
                     [r for poly in geometry["coordinates"] for r in poly]):
            for x, y in ring:
                bounds[0], bounds[1] = min(bounds[0], x), min(bounds[1], y)
                bounds[2], bounds[3] = max(bounds[2], x), max(bounds[3], y)

    counts: dict[str, dict[str, int]] = {"grid": {}, "building": {}}
    for r in report.grids.to_dict("records"):
        geometry = json.loads(r["geometry"])
        extend(geometry)
        status = _grid_status(r, role, rules)
        counts["grid"][status] = counts["grid"].get(status, 0) + 1
        staff = [
            ("网格", f"{_esc(r['name'])}<br><small>{_esc(r['code'])}</small>"),
            ("状态", f'<b style="color:{COLOURS[status]}">{STATUS_LABELS[status]}</b>'),
            ("户数", f"{r['households']:,}"),
            *[(ROLE_LABELS[k], _people(r["people"], (k,)))
              for k in ("grid_chief", "grid_worker_fulltime", "grid_worker_parttime", "volunteer", "seconded_cadre")],
            ("缺口", _missing_html(_grid_issues(r, rules))),
        ]
        grid_features.append({"type": "Feature", "geometry": geometry, "properties": {
            "c": COLOURS[status], "p": _table(staff), "t": f"{_esc(r['name'])}：{STATUS_LABELS[status]}"}})

    building_features = []
    for b in report.buildings.to_dict("records"):
        geometry = json.loads(b["geometry"])
        extend(geometry)
        units = units_by_b.get(b["id"], [])
        status = _building_status(b, units, role)
        counts["building"][status] = counts["building"].get(status, 0) + 1
        issues = ([] if b["households"] == 0 or b["building_heads"] else ["缺楼栋长"])
        for u in units:
            issues += _unit_issue(u, rules)
        unit_lines = "<br>".join(
            f"{u['number']}单元 {u['households']}户：单元长 {_people(u['people'], ('unit_head',))}；"
            f"管家 {_people(u['stewards'], with_households=True)}"
            + (f"；其他 {_people(u['people'], OTHER_ROLES)}" if any(p['role'] in OTHER_ROLES for p in u['people'])
               else "")
            for u in units) or "—"
        name = b["name"] or b["code"] or f"楼栋 {b['id']}"
        rows = [
            ("楼栋", f"{_esc(name)}<br><small>编码 {_esc(b['code'])}</small>"),
            ("网格", _esc(b["grid_code"] or "不在任何网格内")),
            ("状态", f'<b style="color:{COLOURS[status]}">{STATUS_LABELS[status]}</b>'),
            ("户数", f"{b['households']:,}"),
            ("楼栋长", _people(b["people"], ("building_head",))),
        ]
        if any(p["role"] in OTHER_ROLES for p in b["people"]):
            rows.append(("其他", _people(b["people"], OTHER_ROLES)))
        if b["building_stewards"]:
            rows.append(("楼栋管家", _people(b["building_stewards"], with_households=True)))
        rows += [("单元", unit_lines), ("缺口", _missing_html(issues))]
        building_features.append({"type": "Feature", "geometry": geometry, "properties": {
            "c": COLOURS[status], "p": _table(rows), "t": f"{_esc(name)}：{STATUS_LABELS[status]}"}})

    m = fitted_map(((bounds[1], bounds[0]), (bounds[3], bounds[2])) if bounds[0] <= bounds[2] else None)
    _Layers({"type": "FeatureCollection", "features": grid_features},
            {"type": "FeatureCollection", "features": building_features}).add_to(m)
    legend_html("覆盖状态", [(COLOURS[s], f"{STATUS_NOTE[s]}（网格{counts['grid'].get(s, 0)}，"
                                      f"楼栋{counts['building'].get(s, 0)}）") for s in COLOURS],
                position="bottomright").add_to(m)
    t = report.totals

    def pct(v):
        return "—" if v is None else f"{v * 100:.1f}%"

    options = "".join(f'<option value="{k}"{" selected" if k == role else ""}>{v}</option>'
                      for k, v in ROLE_FILTERS.items())
    body = (
        f'<div class="ga-legend-title">人员覆盖 {html.escape(subtitle or report.prefix or "全区")}'
        f"（{report.at.isoformat()}）</div>"
        f'<label>按岗位：<select id="ga-role" aria-label="按岗位筛选">{options}</select></label>'
        '<table class="ga-popup-table">'
        f"<tr><th>有专职网格员的综合网格</th><td>{t['grids_with_fulltime_worker']}/{t['comprehensive_grids']}"
        f"（{pct(t['share_grids_with_fulltime_worker'])}）</td></tr>"
        f"<tr><th>有楼栋长的楼栋</th><td>{t['buildings_with_head']}/{t['buildings']}"
        f"（{pct(t['share_buildings_with_head'])}）</td></tr>"
        f"<tr><th>有单元长的单元</th><td>{t['units_with_head']}/{t['units']}（{pct(t['share_units_with_head'])}）</td></tr>"
        f"<tr><th>有管家的住户</th><td>{t['households_with_steward']:,}/{t['households']:,}"
        f"（{pct(t['share_households_with_steward'])}）</td></tr>"
        f"<tr><th>管家超过{t['steward_households_max']}户</th><td>{t['stewards_over']}人</td></tr>"
        f"<tr><th>管家少于{t['steward_households_min']}户</th><td>{t['stewards_under']}人</td></tr>"
        "</table>"
    )
    Panel(body, css_class="ga-legend ga-coverage-panel", on_add=_ROLE_SELECT_JS, name="CoveragePanel").add_to(m)
    page_root(m).header.add_child(Element('<link rel="icon" href="data:,">'), name="favicon")
    title = f"人员覆盖图 · {ROLE_FILTERS[role]}" + (f" · {subtitle}" if subtitle else "")
    return render_page(m, title)

