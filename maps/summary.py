"""The printable one-page summary of a street, community or grid (一页纸概况): Chinese, offline, one A4 page.

The figures and outlines come from `geo.features.summary.unit_summary` (passed in); this module draws the map as
inline SVG from the outlines (already in metres, so a scale bar is a plain length) and lays the page out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from jinja2 import Environment, FileSystemLoader, select_autoescape

from geo.staff.coverage import STATUS_LABELS, STATUSES
from maps.assets import STATIC_URL, install_asset_helper
from maps.coverage import COLOURS, _contacts, _grid_issues, community_office
from maps.home import CLASS_COLOURS, CLASS_ZH, _checked, _pct

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
install_asset_helper(_env)

#: The map's size in SVG units (it scales to the printed width; the aspect is that of the unit).
MAP_W, MAP_H, PAD = 640.0, 300.0, 14.0
#: How many grids with gaps one page has room for; the rest are counted and left to the coverage page.
MAX_GAP_ROWS = 8
CHILD_FILLS = ("#e3eefb", "#fdf0d8", "#e4f4e1", "#f6e3f0", "#e9e6f7", "#fbe4e1")


def _paths(geoms: np.ndarray, fx, fy) -> list[str]:
    """One SVG path per (multi)polygon: every ring as M … Z, coordinates mapped by fx, fy (vectorised)."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    xs, ys = fx(coords[:, 0]), fy(coords[:, 1])
    ring_geom = part_of[ring_part]
    out: list[list[str]] = [[] for _ in range(len(geoms))]
    bounds = np.searchsorted(ring_of, np.arange(len(rings) + 1))
    for r in range(len(rings)):
        a, b = bounds[r], bounds[r + 1]
        pts = " ".join(f"{x:.1f} {y:.1f}" for x, y in zip(xs[a:b], ys[a:b], strict=True))
        out[ring_geom[r]].append(f"M{pts}Z")
    return ["".join(p) for p in out]


def _scale_bar(width_m: float, scale: float) -> dict:
    """A round length near a fifth of the map's width, in SVG units and in words."""
    target = width_m / 5
    step = 10 ** np.floor(np.log10(target))
    length = max(m * step for m in (1, 2, 5) if m * step <= target)
    return {"px": length * scale, "label": f"{length / 1000:g} 公里" if length >= 1000 else f"{length:g} 米"}


def map_svg(outlines) -> dict:
    """What the template draws: the unit's path, its children's paths and labels, the box and a scale bar."""
    unit, children = outlines.unit, outlines.children
    x0, y0, x1, y1 = unit.total_bounds
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    scale = min((MAP_W - 2 * PAD) / w, (MAP_H - 2 * PAD) / h)
    ox = (MAP_W - w * scale) / 2
    oy = (MAP_H - h * scale) / 2

    def fx(x):
        return ox + (x - x0) * scale

    def fy(y):
        return oy + (y1 - y) * scale  # SVG's y grows downwards

    kids = []
    if not children.empty:
        geoms = children.geometry.to_numpy()
        labels = shapely.point_on_surface(geoms)
        areas = shapely.area(geoms) * scale * scale
        font = 11.0 if len(children) <= 12 else 9.0
        for i, (row, d) in enumerate(zip(children.itertuples(), _paths(geoms, fx, fy), strict=True)):
            # a name longer than its area is wide would cover the neighbours: the smallest get a smaller font
            size = font if areas[i] > (font * len(str(row.name or "")) * 1.2) ** 2 / 3 else font * 0.75
            kids.append({"code": row.code, "name": row.name or row.code, "d": d,
                         "fill": CHILD_FILLS[i % len(CHILD_FILLS)],
                         "x": round(float(fx(shapely.get_x(labels[i]))), 1),
                         "y": round(float(fy(shapely.get_y(labels[i]))), 1), "size": size})
    return {"w": MAP_W, "h": MAP_H, "unit": _paths(unit.geometry.to_numpy(), fx, fy)[0], "children": kids,
            "scale": _scale_bar(w, scale), "epsg": outlines.epsg}


def gap_rows(summary: dict) -> tuple[list[dict], int]:
    """The gaps to act on, worst first, at most MAX_GAP_ROWS: grids (what is missing, whom to call), then with the
    room left buildings without a building head (whom to call: their grid's staff); and how many grids in all."""
    report, people = summary["report"], summary["people"]
    j = summary["figures"]["jurisdiction"]
    names = {p["code"]: p["name"] for p in j["parents"]} | {summary["code"]: j["name"]}
    if summary["outlines"].child_level == "communities":
        names |= dict(zip(summary["outlines"].children["code"], summary["outlines"].children["name"], strict=True))
    by_code = {r["code"]: r for r in report.grids.to_dict("records")}
    grids = report.grids[report.grids["status"] != "covered"]
    order = {s: i for i, s in enumerate(STATUSES)}
    grids = grids.assign(_o=grids["status"].map(order)).sort_values(["_o", "code"], kind="stable")
    rows = []
    for r in grids.head(MAX_GAP_ROWS).to_dict("records"):
        rows.append({"level": "网格", "code": r["code"], "name": r["name"], "status": STATUS_LABELS[r["status"]],
                     "colour": COLOURS[r["status"]], "issues": "；".join(_grid_issues(r, report.rules)) or "—",
                     "contacts": _contacts(r, people, names.get(r["community_code"]) or "")})
    b = report.buildings
    headless = b[(b["households"] > 0) & (b["building_heads"] == 0)].sort_values("households", ascending=False,
                                                                                  kind="stable")
    for r in headless.head(MAX_GAP_ROWS - len(rows)).to_dict("records"):
        grid = by_code.get(r["grid_code"])
        community = names.get(r["community_code"]) or ""
        rows.append({"level": "楼栋", "code": r["code"], "name": r["name"], "status": STATUS_LABELS["missing_role"],
                     "colour": COLOURS["missing_role"], "issues": f"缺楼栋长（{int(r['households'])}户）",
                     "contacts": _contacts(grid, people, community) if grid else
                     [{"name": community_office(community), "role": "社区", "phone": None}]})
    return rows, len(grids)


def render_summary_page(summary: dict, username: str, static_url: str = STATIC_URL) -> str:
    """The one-page summary of `geo.features.summary.unit_summary`'s answer."""
    f = summary["figures"]
    classes = f.get("compound_classes") or {}
    total = sum(classes.values())
    class_rows = [{"key": k, "zh": CLASS_ZH[k], "n": n, "colour": CLASS_COLOURS[k]} for k, n in classes.items()]
    gaps, n_gaps = gap_rows(summary)
    t = summary["report"].totals
    page = _env.get_template("summary.html").render(
        s=summary, f=f, j=f["jurisdiction"], t=t, map=map_svg(summary["outlines"]), classes=class_rows,
        compounds=total, gaps=gaps, n_gaps=n_gaps, more_gaps=n_gaps - sum(g["level"] == "网格" for g in gaps),
        pct=_pct, scope_q=f"{summary['level']}={summary['code']}", this=f["kpi"]["this_month"],
        last=f["kpi"]["last_month"], username=username, static_url=static_url)
    return _checked(page)
