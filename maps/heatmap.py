"""The incident heatmap page (事件热力图) for leaders, on vector tiles and small JSON.

`/maps/heatmap` is the shell the leaders' pages share (templates/leader_map.html, static/leader/leadermap.js):
street, community and grid outlines come from the vector tiles, names by zoom; the heat comes from
`heatmap_data`: the sparse cube of `geo.incidents.heat_cube` (counts per hexagon, month, class, state and grid),
which the page adds up for its filters (month, class, status) without a request, drawn as hexagons on the lattice
of `geo.incidents.hexagons` or as grids (per 1,000 households). Hot spots and a cell's incidents come from two more
small JSON answers. The page carries aggregates, never incidents, so its size does not grow with the incident count.

`heatmap_page` is the older one-file folium page (everything inlined), still used to embed the aggregates of
`geo.incidents.heatmap.compact` in one HTML file (benchmarks, a page sent by mail).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
from branca.element import Element, MacroElement
from folium.template import Template

from geo.incidents.heatmap import GRID_QUANTUM_DEG, decode_rings
from geo.incidents.hotspots import HOTSPOT_LABELS
from maps import leader_pack as pack
from maps.assets import STATIC_URL, Panel, fitted_map, js_literal, legend_html, page_root, render_page

TEMPLATES = Path(__file__).resolve().parent / "templates"

#: Sequential colours for counts and rates (light → dark), ColorBrewer YlOrRd.
SEQUENTIAL = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]
#: Gi* classes −3 … 3: cold spots blue, hot spots red, not significant transparent.
HOTSPOT_COLOURS = {3: "#b2182b", 2: "#ef8a62", 1: "#fddbc7", 0: "#ffffff", -1: "#d1e5f0", -2: "#67a9cf",
                   -3: "#2166ac"}


def quantile_breaks(values, k: int = 5) -> list[float]:
    """Up to k−1 increasing class breaks at quantiles of the positive, finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x) and x > 0], dtype=float)
    if v.size == 0:
        return []
    k = min(k, np.unique(v).size)  # no more classes than distinct values
    qs = np.quantile(v, np.linspace(0, 1, k + 1)[1:-1])
    return sorted({round(float(x), 1) for x in qs})


_LAYERS = Template(
    """
{% macro script(this, kwargs) %}
    (function (map) {
        var D = {{ this.data }};
        var F = D.frame, C = D.lattice, hex = D.hex, months = D.meta.months, SEQ = {{ this.seq }},
            HOT = {{ this.hot }}, Q = {{ this.quantum }};
        var renderer = L.canvas({padding: 0.3});
        // the server's cells: centre = origin + q·step_q + r·step_r, corners = centre + corners ([lon, lat])
        function ring(k) {
            var q = hex.q[k], r = hex.r[k];
            var lon = C.origin[0] + q * C.step_q[0] + r * C.step_r[0],
                lat = C.origin[1] + q * C.step_q[1] + r * C.step_r[1];
            return C.corners.map(function (c) { return [lat + c[1], lon + c[0]]; });
        }
        function decodeRing(flat) {
            var out = [], x = 0, y = 0;
            for (var i = 0; i < flat.length; i += 2) {
                x += flat[i]; y += flat[i + 1];
                out.push([F.lat0 + y * Q, F.lon0 + x * Q]);
            }
            return out;
        }
        function breaksOf(values) {
            var v = values.filter(function (x) { return x > 0; }).sort(function (a, b) { return a - b; });
            if (!v.length) { return []; }
            var out = [];
            for (var i = 1; i < SEQ.length; i++) {
                var b = v[Math.min(v.length - 1, Math.floor(i * v.length / SEQ.length))];
                if (out.indexOf(b) < 0) { out.push(b); }
            }
            return out;
        }
        function colourOf(x, breaks) {
            var i = 0;
            while (i < breaks.length && x > breaks[i]) { i++; }
            return SEQ[Math.min(i, SEQ.length - 1)];
        }

        // hexagons with any incident; slider position s: 0 = the whole period, k = months[k-1]
        var hexLayer = L.layerGroup(), cells = [];
        D.active.forEach(function (k, a) {
            var p = L.polygon(ring(k), {renderer: renderer, weight: 0.5, color: "#7f2704", fillOpacity: 0.75});
            p.gaActive = a;
            p.gaCell = k;
            p.bindTooltip(function () { return "本格事件 " + (p.gaCount || 0) + " 起"; }, {sticky: true});
            cells.push(p);
            hexLayer.addLayer(p);
        });
        function countOf(c, s) { return s === 0 ? hex.total[c.gaCell] : D.monthly[s - 1][c.gaActive]; }
        var legendBox = document.getElementById("ga-heat-legend");
        function showMonth(s) {
            var counts = cells.map(function (c) { return countOf(c, s); }), breaks = breaksOf(counts);
            cells.forEach(function (c, i) {
                var n = counts[i];
                c.setStyle(n > 0 ? {fillColor: colourOf(n, breaks), fillOpacity: 0.75, opacity: 1}
                                 : {fillOpacity: 0, opacity: 0});
                c.gaCount = n;
            });
            document.getElementById("ga-month-label").textContent = s === 0 ? "全部月份" : months[s - 1];
            var total = counts.reduce(function (a, b) { return a + b; }, 0);
            document.getElementById("ga-month-total").textContent = total.toLocaleString("zh-CN");
            var items = [], lo = 1;
            for (var i = 0; i <= breaks.length; i++) {
                var hi = i < breaks.length ? breaks[i] : null;
                var text = hi === null ? ("≥ " + lo) : (lo === hi ? String(hi) : (lo + "–" + hi));
                items.push('<li><span class="ga-swatch" style="background:' + SEQ[Math.min(i, SEQ.length - 1)] +
                           '"></span>' + text + " 起</li>");
                if (hi !== null) { lo = hi + 1; }
            }
            legendBox.innerHTML = total ? items.join("") : "<li>本期无事件</li>";
        }

        var hotLayer = L.layerGroup();
        D.hot.forEach(function (h) {
            var hp = L.polygon(ring(h[0]), {renderer: renderer, weight: 0.6, color: "#444",
                                            fillColor: HOT[String(h[1])], fillOpacity: 0.8});
            hp.gaClass = h[1];
            hp.bindTooltip(D.meta.hotspots.classes[String(h[1])] + "<br>Gi* z = " + h[2] + "，p = " + h[3] +
                           "<br>本格事件 " + hex.total[h[0]] + " 起", {sticky: true});
            hotLayer.addLayer(hp);
        });

        var gridLayer = L.layerGroup(), gridBreaks = {{ this.grid_breaks }}, G = D.grids;
        G.code.forEach(function (code, i) {
            var g = {code: code, name: G.name[i], incidents: G.incidents[i], households: G.households[i],
                     per_1000: G.per_1000[i]};
            var rate = g.per_1000;
            var poly = L.polygon(G.rings[i].map(function (p) { return p.map(decodeRing); }), {
                renderer: renderer, color: "#555", weight: 1, fillOpacity: rate === null ? 0.05 : 0.65,
                fillColor: rate === null ? "#cccccc" : colourOf(rate, gridBreaks)});
            poly.gaGrid = g;
            poly.bindTooltip(g.name + "（" + g.code + "）<br>事件 " + g.incidents + " 起，住户 " + g.households +
                             " 户<br>每千户 " + (rate === null ? "—（无住户）" : rate) + " 起", {sticky: true});
            gridLayer.addLayer(poly);
        });

        hexLayer.addTo(map);
        L.control.layers(null, {"事件六边形（按月）": hexLayer, "每千户事件数（网格）": gridLayer,
                                "冷热点（Gi*）": hotLayer}, {collapsed: false, position: "topleft"}).addTo(map);
        var slider = document.getElementById("ga-month");
        slider.addEventListener("input", function () { showMonth(parseInt(slider.value, 10)); });
        var timer = null, play = document.getElementById("ga-play");
        play.addEventListener("click", function () {
            if (!months.length) { return; }
            if (timer) { clearInterval(timer); timer = null; play.textContent = "▶ 播放"; return; }
            play.textContent = "⏸ 暂停";
            timer = setInterval(function () {
                var s = (parseInt(slider.value, 10) % months.length) + 1;
                slider.value = s;
                showMonth(s);
            }, 1200);
        });
        showMonth(0);
        window.gaHeatmap = {map: map, hex: hexLayer, grids: gridLayer, hot: hotLayer, showMonth: showMonth};
    })({{ this._parent.get_name() }});
{% endmacro %}
"""
)

class _Layers(MacroElement):
    _template = _LAYERS

    def __init__(self, data: dict, grid_breaks: list[float]):
        super().__init__()
        self._name = "HeatmapLayers"
        self.data = js_literal(data)
        self.seq = js_literal(SEQUENTIAL)
        self.hot = js_literal({str(k): v for k, v in HOTSPOT_COLOURS.items()})
        self.grid_breaks = js_literal(grid_breaks)
        self.quantum = js_literal(GRID_QUANTUM_DEG)


def _bounds(data: dict):
    f, c = data["frame"], data["lattice"]
    q = np.asarray(data["hex"]["q"], dtype=float)
    r = np.asarray(data["hex"]["r"], dtype=float)
    lons = list(c["origin"][0] + q * c["step_q"][0] + r * c["step_r"][0])
    lats = list(c["origin"][1] + q * c["step_q"][1] + r * c["step_r"][1])
    for rings in data["grids"]["rings"]:
        for polygon in decode_rings(rings, f["lon0"], f["lat0"]):
            for ring in polygon:
                lons.extend(x for x, _ in ring)
                lats.extend(y for _, y in ring)
    if not lats:
        return None
    return (min(lats), min(lons)), (max(lats), max(lons))


def _range_label(meta: dict) -> str:
    months = meta["months"]
    if not months:
        return "—"
    return months[0] if len(months) == 1 else f"{months[0]} 至 {months[-1]}"


def heatmap_page(data: dict, filters: dict[str, str | None] | None = None) -> str:
    """The full offline HTML page for heatmap aggregates (`geo.incidents.heatmap.compact` output)."""
    meta = data["meta"]
    bounds = _bounds(data)
    m = fitted_map(bounds, prefer_canvas=True)
    grid_breaks = quantile_breaks(data["grids"]["per_1000"])

    labels = []
    lo = 0.0
    for i, b in enumerate(grid_breaks + [None]):
        labels.append((SEQUENTIAL[min(i, len(SEQUENTIAL) - 1)], f"≥ {lo:g}" if b is None else f"{lo:g}–{b:g}"))
        if b is not None:
            lo = b
    legend_html("每千户事件数（网格）", labels + [("#cccccc", "无住户")], position="bottomleft").add_to(m)
    hot = meta.get("hotspots")
    if hot:
        legend_html(f"冷热点 Gi*（{hot['permutations']} 次置换）",
                    [(HOTSPOT_COLOURS[k], HOTSPOT_LABELS[k]) for k in (3, 2, 1, -1, -2, -3)],
                    position="bottomleft").add_to(m)

    filters = {k: v for k, v in (filters or {}).items() if v}
    names = {"class": "类别", "street": "街道", "community": "社区", "grid": "网格"}
    filter_text = "，".join(f"{names.get(k, k)} {html.escape(str(v))}" for k, v in filters.items()) or "全部"
    months = meta["months"]
    notes = "".join(f"<div class='ga-note'>{html.escape(n)}</div>" for n in meta.get("notes", []))
    hot_text = (f"Getis-Ord Gi*（esda），六边形相邻权重，{hot['permutations']} 次条件置换，双侧伪 p 值；"
                "置信度 90%/95%/99%" if hot else "未计算冷热点")
    body = (
        '<div class="ga-legend-title">网格事件热力图</div>'
        '<table class="ga-popup-table">'
        f"<tr><th>时间</th><td>{html.escape(_range_label(meta))}</td></tr>"
        f"<tr><th>筛选</th><td>{filter_text}</td></tr>"
        f"<tr><th>事件总数</th><td>{meta['incidents']:,} 起</td></tr>"
        f"<tr><th>六边形边长</th><td>{meta['cell_m']:g} 米</td></tr>"
        f"<tr><th>冷热点</th><td>{html.escape(hot_text)}</td></tr>"
        "</table>"
        f'<label for="ga-month">月份：<b id="ga-month-label">全部月份</b>（<span id="ga-month-total">0</span> 起）'
        "</label><br>"
        f'<input id="ga-month" type="range" min="0" max="{len(months)}" value="0" step="1" '
        'aria-label="按月份查看" style="width: 220px">'
        ' <button id="ga-play" type="button">▶ 播放</button>'
        '<div class="ga-legend-title" style="margin-top:6px">六边形事件数</div><ul id="ga-heat-legend"></ul>'
        f"{notes}"
    )
    # the panel's controls must exist before the layer script binds to them: the panel is added first
    Panel(body, css_class="ga-legend ga-heat-panel", name="HeatmapPanel").add_to(m)
    _Layers(data, grid_breaks).add_to(m)
    page_root(m).header.add_child(Element('<link rel="icon" href="data:,">'), name="favicon")
    page_root(m).header.add_child(Element(
        "<style>.ga-heat-panel{max-width:330px}.ga-heat-panel ul{list-style:none;margin:0;padding:0}"
        ".ga-heat-panel li{display:flex;align-items:center}.ga-note{color:#8a4b00;margin-top:4px}</style>"),
        name="heat-style")
    return render_page(m, "网格事件热力图" + (f" · {filter_text}" if filters else ""))


# ---------------------------------------------------------------------------------------------------------------
# the page on tiles

#: What Gi* is, for the hot-spot list's tooltip (the method) and its plain words (the list's heading).
GI_METHOD = ("Getis-Ord Gi*（局部 G* 统计量，esda）：每个六边形连同相邻 6 格的事件数之和，与全区随机分布时的期望相比；"
             "z 值越大越“热”。置信度由 {perm} 次条件随机置换得出（双侧伪 p 值）：p ≤ 0.01 为 99%，≤ 0.05 为 95%，"
             "≤ 0.10 为 90%。研究范围内无事件的格也参与计算。")
GI_PLAIN = ("热点：这一片（本格和周边格）的事件明显比全区平均多，不是偶然；冷点：明显少。"
            "置信度越高，越不可能是巧合。")


def heatmap_data(cube: dict, classes: list[dict], states: list[dict], grids: dict[str, dict],
                 households: dict[str, int], communities: dict[str, dict], streets: dict[str, dict],
                 scope: str, at: str, filters: dict[str, str | None], permutations: int) -> dict:
    """The heatmap page's data: the cube (`heat_cube.compact_cube`), class and state names, grid label points with
    households and community, label points of communities and streets, colours and the Gi* method in words."""
    community_names = {c: p["name"] for c, p in communities.items()}
    lengths = sorted({len(c) for c in communities}, reverse=True)

    def community_of(grid: str) -> str | None:
        """The name of the community whose code the grid's code starts with (any scheme's lengths)."""
        return next((community_names[grid[:n]] for n in lengths if grid[:n] in community_names), None)

    notes = []
    if cube["cell_m"] > float(filters.get("cell_m") or cube["cell_m"]) + 0.01:
        notes.append(f"六边形边长放大到 {cube['cell_m']:g} 米，以控制数据量")
    return {
        "kind": "heatmap", "title": "网格事件热力图", "scope": scope, "at": at, "cube": cube,
        "classes": [{"code": c["code"], "name": c["name"], "major_code": c["major_code"]} for c in classes],
        "states": states,
        "status_groups": [{"key": "open", "label": "未结案"}, {"key": "closed", "label": "已结案"}],
        # labels only (compact, maps.leader_pack): the page zooms to hexagons, not to grids
        "grids": [{**pack.label(code, p), "community": community_of(code),
                   "households": int(households.get(code, 0))} for code, p in grids.items()],
        "communities": [pack.label(c, p, box=True) for c, p in communities.items()],
        "streets": [pack.label(c, p, box=True) for c, p in streets.items()],
        "colours": {"sequential": SEQUENTIAL},
        "hotspot_colours": {str(k): v for k, v in HOTSPOT_COLOURS.items()},
        "method": GI_METHOD.format(perm=permutations), "plain": GI_PLAIN,
        "filters": {k: v for k, v in filters.items() if k in ("class", "status", "month")},
        "notes": notes,
    }


def render_heatmap_page(data_url: str, tile_query: str, basemaps: list[dict], username: str,
                        bounds: list[float] | None, api_query: str, static_url: str = STATIC_URL) -> str:
    """The heatmap page: the leaders' map shell (kind "heatmap") with month, class and status filters; `api_query`
    (units, period, cell size) is what its hot-spot and incident requests keep."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from maps.assets import OfflineAssetError, external_resources, install_asset_helper

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    install_asset_helper(env)  # asset(path): /static/<path>?v=<content hash>
    config = {"kind": "heatmap", "title": "网格事件热力图", "data": data_url,
              "tiles": "/tiles/{layer}/{z}/{x}/{y}.mvt" + tile_query, "basemaps": basemaps, "bounds": bounds,
              "hotspots": "/maps/heatmap/hotspots", "incidents": "/maps/heatmap/incidents", "query": api_query}
    page = env.get_template("leader_map.html").render(config=config, title="网格事件热力图", kind="heatmap",
                                                      username=username, static_url=static_url)
    external = external_resources(page)
    if external:
        raise OfflineAssetError(f"the page would load external resources: {external}")
    return page
