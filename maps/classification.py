"""The classification map (小区分类图): what the page draws over the vector tiles, as small JSON.

The shapes come from `/tiles/grids|micro_grids|compounds/…`; this module turns the stored classification rows
(geo.classify.classification.read_results, without geometry) and the places (geo.features.places: label point,
box, the grids a compound overlaps) into the page's data: per compound its class, measures, main unit and every
unit it overlaps (a straddling compound names both grids); the legend; label points of the units. Names travel
as JSON text and are shown with ``textContent``.
"""

from __future__ import annotations

import math

import pandas as pd

from geo.classify.classification import CLASS_ZH, CLASS_ZH_MICRO, CLASSES, LEVEL_ZH
from maps import leader_pack as pack

#: Class colours (ColorBrewer Dark2, readable for the colour-blind), legend order.
COLOURS = {"same": "#1b9e77", "larger": "#d95f02", "smaller": "#7570b3", "straddling": "#e7298a",
           "outside": "#666666"}
#: What each class means, with {u} standing for 网格 or 微网格.
CLASS_NOTE = {"same": "小区即{u}", "larger": "一个小区跨多个{u}", "smaller": "一个{u}含多个小区",
              "straddling": "跨越{u}边界，需核查", "outside": "不在任何{u}内"}



def _num(v, digits: int) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or pd.isna(v):
        return None
    return round(float(v), digits)


def overlap_units(overlaps: pd.DataFrame, areas: dict[int, float]) -> dict[int, list]:
    """compound id → [[code, name, share of the compound's area], …] largest first, from the classification's
    stored overlaps (`geo.classify.classification.read_overlaps`) and the compounds' areas (m²)."""
    if overlaps.empty:
        return {}
    o = overlaps.assign(area=overlaps["compound_id"].map(areas).astype(float))
    o = o.assign(share=(o["overlap_m2"].astype(float) / o["area"].where(o["area"] > 0)).round(3))
    o = o[o["share"] > 0].sort_values(["compound_id", "share"], ascending=[True, False])
    out: dict[int, list] = {}
    for cid, code, name, share in zip(o["compound_id"], o["unit_code"], o["unit_name"], o["share"], strict=True):
        out.setdefault(int(cid), []).append([code, None if pd.isna(name) else name, float(share)])
    return out


def classification_data(rows: pd.DataFrame, compound_places: dict[int, dict], unit_places: dict[str, dict],
                        community_places: dict[str, dict], level: str, version_label: str,
                        subtitle: str = "", street_places: dict[str, dict] | None = None) -> dict:
    """The classification page's data (compact, see maps.leader_pack): legend (class, colour, meaning), per-compound
    rows (class, community, main unit's code, measures, every unit overlapped with name and share, label point,
    box), unit, community and street labels."""
    labels = CLASS_ZH if level == "grid" else CLASS_ZH_MICRO
    unit = LEVEL_ZH[level]
    compounds = []
    for r in rows.to_dict("records"):
        place = compound_places.get(int(r["compound_id"]), {})
        compounds.append({
            "id": int(r["compound_id"]), "name": r["name"], "class": r["class"],
            "community": r["community_name"], "main_code": r["main_code"],
            "area_m2": _num(r["area_m2"], 0), "coverage": _num(r["coverage"], 3), "fill": _num(r["fill"], 3),
            "iou": _num(r["iou"], 3), "hausdorff_m": _num(r["hausdorff_m"], 1), "n_units": int(r["n_units"]),
            "units": place.get("units", []), **pack.point(place),
        })
    return {
        "kind": "classification", "title": f"小区与{unit}对应关系分类图", "level": level, "unit": unit,
        "scope": subtitle or "全区", "at": version_label,
        "legend": [{"key": c, "colour": COLOURS[c], "label": labels[c], "note": CLASS_NOTE[c].format(u=unit)}
                   for c in CLASSES],
        "compounds": compounds,
        # labels only: the page zooms to compounds, not to units
        "units": [pack.label(c, p) for c, p in unit_places.items()],
        "communities": [pack.label(c, p, box=True) for c, p in community_places.items()],
        "streets": [pack.label(c, p) for c, p in (street_places or {}).items()],
    }
