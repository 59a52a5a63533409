"""The classification map (小区分类图): compounds coloured by class over grid outlines, with legend and popups.

Page rendering only: the router hands over the rows (geo.classify.classification.read_results with geometry)
and the unit outlines (geo.classify.classification.outlines). Popups and tooltips are built here from escaped
text, so a name containing markup shows as text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import Element, MacroElement
from folium.template import Template

from geo.classify.classification import CLASS_ZH, CLASS_ZH_MICRO, CLASSES, LEVEL_ZH, THRESHOLD_ZH
from maps.assets import legend_html, offline_map, page_root, render_page

#: Class colours (ColorBrewer Dark2, readable for the colour-blind), legend order.
COLOURS = {"same": "#1b9e77", "larger": "#d95f02", "smaller": "#7570b3", "straddling": "#e7298a",
           "outside": "#666666"}
#: What each class means, with {u} standing for 网格 or 微网格.
CLASS_NOTE = {"same": "小区即{u}", "larger": "一个小区跨多个{u}", "smaller": "一个{u}含多个小区",
              "straddling": "跨越{u}边界，需核查", "outside": "不在任何{u}内"}
#: Coordinates kept to 1e-6° (~0.1 m): plenty for a map, a third of the page size.
PRECISION_DEG = 1e-6

_BIND = Template(
    """
{% macro script(this, kwargs) %}
    {{ this._parent.get_name() }}.eachLayer(function (layer) {
        var p = layer.feature.properties;
        layer.bindPopup(p.popup_html, {maxWidth: 380});
        layer.bindTooltip(p.tooltip_html, {sticky: true});
    });
{% endmacro %}
"""
)


class _BindDetails(MacroElement):
    """Binds each feature's pre-escaped ``popup_html`` and ``tooltip_html`` properties to its layer."""

    _template = _BIND

    def __init__(self):
        super().__init__()
        self._name = "BindDetails"


def _fmt(values, fmt: str, suffix: str = "") -> list[str]:
    return ["—" if v is None or pd.isna(v) else format(float(v), fmt) + suffix for v in values]


def popup_rows(rows: pd.DataFrame, level: str) -> list[str]:
    """One popup table per row (Chinese labels, measures with units), all text escaped."""
    labels = CLASS_ZH if level == "grid" else CLASS_ZH_MICRO
    unit = LEVEL_ZH[level]
    esc = np.vectorize(lambda v: html.escape("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)),
                       otypes=[object])
    columns = [
        ("小区", esc(rows["name"].to_numpy(object)) if len(rows) else []),
        ("类型", [f'<b style="color:{COLOURS[c]}">{labels[c]}</b>' for c in rows["class"]]),
        ("社区", esc(rows["community_name"].to_numpy(object)) if len(rows) else []),
        (f"主{unit}", [f"{html.escape(str(c))}<br>{html.escape(str(n))}" if isinstance(c, str) else "—"
                      for c, n in zip(rows["main_code"], rows["main_name"], strict=True)]),
        ("小区面积", _fmt(rows["area_m2"], ",.0f", " m²")),
        (f"位于主{unit}内", _fmt(rows["coverage"] * 100, ".1f", "%")),
        (f"占主{unit}面积", _fmt(rows["fill"] * 100, ".1f", "%")),
        ("交并比 IoU", _fmt(rows["iou"], ".3f")),
        ("最大偏离", _fmt(rows["hausdorff_m"], ".1f", " m")),
        (f"重叠{unit}数", [str(int(n)) for n in rows["n_units"]]),
        (f"包含{unit}数", [str(int(n)) for n in rows["n_contained"]]),
        ("敏感阈值", ["、".join(THRESHOLD_ZH[f] for f in (fs or [])) or "无" for fs in rows["fragile"]]),
    ]
    out = []
    for i in range(len(rows)):
        cells = "".join(
            f'<tr><th>{label}</th><td{" class=num" if label in ("小区面积", "交并比 IoU") else ""}>{vals[i]}</td></tr>'
            for label, vals in columns)
        out.append(f'<table class="ga-popup-table">{cells}</table>')
    return out


def _features(geoms, props: pd.DataFrame) -> dict:
    shapes = shapely.set_precision(np.asarray(geoms, dtype=object), PRECISION_DEG)
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": p, "geometry": shapely.geometry.mapping(g)}
                         for p, g in zip(props.to_dict("records"), shapes, strict=True)]}


def classification_page(rows: pd.DataFrame, compound_geoms: Sequence | np.ndarray, units: gpd.GeoDataFrame, level: str,
                        version_label: str, parents: gpd.GeoDataFrame | None = None,
                        subtitle: str = "") -> str:
    """The offline HTML page: unit outlines, compounds per class (one layer each), legend with counts, popups."""
    labels = CLASS_ZH if level == "grid" else CLASS_ZH_MICRO
    unit = LEVEL_ZH[level]
    geoms = np.asarray(list(compound_geoms), dtype=object)
    extent = shapely.union_all(np.concatenate([geoms, np.asarray(units.geometry.values, dtype=object)])) \
        if len(geoms) or len(units) else None
    if extent is None or extent.is_empty:
        m = offline_map(location=(29.37, 113.1), zoom_start=13)
    else:
        west, south, east, north = extent.bounds
        m = offline_map(bounds=((south, west), (north, east)))

    if parents is not None and len(parents):
        folium.GeoJson(
            _features(parents.geometry.values, pd.DataFrame({"code": parents["code"]})),
            name="网格边界", style_function=lambda f: {"color": "#222", "weight": 2.5, "fill": False},
            interactive=False,
        ).add_to(m)
    if len(units):
        unit_props = pd.DataFrame({
            "tooltip_html": [f"{unit} {html.escape(str(c))} {html.escape(str(n or ''))}"
                             for c, n in zip(units["code"], units["name"], strict=True)]})
        folium.GeoJson(
            _features(units.geometry.values, unit_props),
            name=f"{unit}边界", style_function=lambda f: {"color": "#444", "weight": 1.2, "dashArray": "4 3",
                                                         "fill": False},
            tooltip=folium.GeoJsonTooltip(fields=["tooltip_html"], labels=False),
        ).add_to(m)

    counts = rows["class"].value_counts() if len(rows) else pd.Series(dtype=int)
    props = pd.DataFrame({
        "cls": rows["class"].to_numpy(object),
        "popup_html": popup_rows(rows, level),
        "tooltip_html": [f"{html.escape(str(n or ''))}（{labels[c]}）"
                         for n, c in zip(rows["name"], rows["class"], strict=True)],
    })
    for cls in CLASSES:
        mask = (props["cls"] == cls).to_numpy()
        if not mask.any():
            continue
        colour = COLOURS[cls]
        layer = folium.GeoJson(
            _features(geoms[mask], props[mask]),
            name=f'<span style="color:{colour}">■</span> {labels[cls]}（{int(mask.sum())}）',
            style_function=lambda f, colour=colour: {"color": colour, "weight": 1.5, "fillColor": colour,
                                                     "fillOpacity": 0.55},
            highlight_function=lambda f: {"weight": 3, "fillOpacity": 0.75},
        )
        _BindDetails().add_to(layer)
        layer.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    # No /favicon.ico on the server: an inline empty icon keeps the browser from asking for one (a 404).
    page_root(m).header.add_child(Element('<link rel="icon" href="data:,">'), name="favicon")
    total = int(len(rows))
    legend_html(
        f"小区对比{unit}分类（{version_label}）" + (f" · {subtitle}" if subtitle else ""),
        [(COLOURS[c], f"{labels[c]}：{int(counts.get(c, 0))}（{CLASS_NOTE[c].format(u=unit)}）") for c in CLASSES]
        + [("#ffffff", f"合计 {total} 个小区；虚线为{unit}边界")],
    ).add_to(m)
    return render_page(m, f"小区与{unit}对应关系分类图")

