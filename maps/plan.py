"""`/maps/plan/{id}`: a redraw plan on one offline page (改划方案图), in Chinese.

Published boundaries as dashed grey outlines under the draft grids; each draft grid filled by its household
count against the band (below / inside / above); moved buildings highlighted; validation problems marked in red
with their message. A street plan (街道方案) shows every community of the street, each grid labelled with its
community. No tiles unless an intranet tile server is configured.
"""

from __future__ import annotations

import html

import folium
import shapely
from shapely.geometry import mapping

from maps.assets import legend_html, offline_map, page_root, render_page

#: Band status colours; the household-band problems are shown by these fills, not drawn again as problems.
BAND_COLOURS = {"below": "#4575b4", "ok": "#1a9850", "above": "#7b3294", "dedicated": "#999999"}
BAND_LABELS = {"below": "户数低于下限", "ok": "户数在区间内", "above": "户数超过上限", "dedicated": "专属网格"}
SEVERITY = {"error": "错误", "warning": "提醒"}


def _feature(geom, props: dict) -> dict:
    return {"type": "Feature", "properties": props, "geometry": geom if isinstance(geom, dict) else mapping(geom)}


def plan_page(info: dict, state, validation: dict, diff: dict, published: list[dict],
              communities: list[tuple[str, str, object]] | None = None) -> str:
    """The HTML page of a plan: published vs draft, household band colours, moved buildings, problems (and, for a
    street plan, its communities' outlines: (code, name, geometry) each)."""
    lo, hi = validation["band"]
    counts = {g["key"]: g for g in validation["grids"]}
    draft = []
    for r in state.live("grid"):
        c = counts.get(r["key"], {})
        status = "dedicated" if (r.get("kind") or "comprehensive") != "comprehensive" else c.get("status", "ok")
        label = f"{r['name']} ({r['code'] or '新建'}): {c.get('households', 0)} 户, {c.get('population', 0)} 人"
        if info.get("scope") == "street":
            label = f"社区 {state.communities.get(r.get('community_id'), '?')} · {label}"
        draft.append(_feature(r["geom"], {"t": label, "c": BAND_COLOURS[status], "s": status}))
    bounds = shapely.bounds(shapely.union_all([r["geom"] for r in state.live("grid")] or [shapely.Point(0, 0)]))
    m = offline_map(bounds=((bounds[1], bounds[0]), (bounds[3], bounds[2])))
    folium.GeoJson(
        {"type": "FeatureCollection", "features": draft}, name="方案网格 (草稿)",
        style_function=lambda f: {"color": "#222", "weight": 2, "fillColor": f["properties"]["c"],
                                  "fillOpacity": 0.35},
        tooltip=folium.GeoJsonTooltip(fields=["t"], labels=False),
    ).add_to(m)
    pub = [_feature(r["geom"], {"t": f"已发布: {r['name']} ({r['code']})"}) for r in published
           if r["level"] == "grid"]
    if pub:
        folium.GeoJson(
            {"type": "FeatureCollection", "features": pub}, name="已发布边界",
            style_function=lambda f: {"color": "#555", "weight": 2, "dashArray": "6 4", "fill": False},
        ).add_to(m)
    if communities:
        folium.GeoJson(
            {"type": "FeatureCollection", "features": [_feature(g, {"t": f"社区: {n} ({c})"})
                                                       for c, n, g in communities]},
            name="社区边界",
            style_function=lambda f: {"color": "#08306b", "weight": 4, "fill": False},
            tooltip=folium.GeoJsonTooltip(fields=["t"], labels=False),
        ).add_to(m)
    probs = [_feature(p["geometry"], {"t": f"{SEVERITY.get(p['severity'], p['severity'])}: {p['message']}"})
             for p in validation["problems"] if p.get("geometry") and p["rule"] != "households_band"]
    if probs:
        folium.GeoJson(
            {"type": "FeatureCollection", "features": probs}, name="校验问题",
            style_function=lambda f: {"color": "#e31a1c", "weight": 2, "fillColor": "#e31a1c", "fillOpacity": 0.25},
            tooltip=folium.GeoJsonTooltip(fields=["t"], labels=False),
        ).add_to(m)
    moved = diff.get("moved_geojson", {}).get("features", [])
    if moved:
        for f in moved:
            p = f["properties"]
            f["properties"] = {"t": f"楼栋 {p['building_id']}: {p['from']} → {p['to']}, {p['households']} 户"}
        folium.GeoJson(
            {"type": "FeatureCollection", "features": moved}, name="调整的楼栋",
            style_function=lambda f: {"color": "#ff7f00", "weight": 3, "fillColor": "#ffd92f", "fillOpacity": 0.9},
            tooltip=folium.GeoJsonTooltip(fields=["t"], labels=False),
        ).add_to(m)
    legend_html(f"每网格户数 (区间 {lo}–{hi})", [(BAND_COLOURS[k], BAND_LABELS[k]) for k in BAND_COLOURS]
                + [("#ffd92f", "调整的楼栋"), ("#e31a1c", "校验问题")]
                + ([("#08306b", "社区边界")] if communities else [])).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    scope = (f"街道方案 · {html.escape(info['scope_name'])} · {len(info.get('communities') or [])} 个社区"
             if info.get("scope") == "street" else html.escape(info["scope_name"]))
    summary = (f"方案 {info['id']} · {scope} · 修订 {info['revision']} · "
               f"错误 {validation['errors']} · 提醒 {validation['warnings']} · "
               f"调整楼栋 {diff['totals']['buildings']} 栋 / {diff['totals']['households']} 户")
    page_root(m).html.add_child(folium.Element(
        f'<div id="plan-summary" style="position:absolute;top:10px;left:60px;z-index:1000;background:#fff;'
        f'padding:6px 10px;border:1px solid #888;font-size:14px">{summary}</div>'))
    return render_page(m, f"改划方案 {info['id']} · {info['scope_name']}")
