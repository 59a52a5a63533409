"""The coverage map (人员覆盖图): what the page draws over the vector tiles, as small JSON.

The shapes come from `/tiles/grids|buildings/…` (vector tiles); this module turns a
`geo.staff.coverage.CoverageReport` (read without geometry) into the page's data, compact (`maps.leader_pack`):
per grid its status under every role filter, what is missing, its staff with phones (whom to call), its label
point and box; per building its status under every role filter (one letter each); the legend. The page
(maps/static/leader/leadermap.js) colours, filters, lists and exports from it in the browser, so a filter change
is a repaint, not a reload. Names are sent as JSON text and
shown with ``textContent``: a name holding markup stays text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from geo.staff.coverage import STATUS_LABELS, CoverageReport, grid_problems
from geo.staff.register import ROLE_LABELS
from maps import leader_pack as pack

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

#: One letter per status in the compact building arrays.
STATUS_CODE = {"missing_role": "m", "over_capacity": "o", "under_capacity": "u", "covered": "c", "empty": "e"}


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


def building_statuses(buildings: pd.DataFrame, units: pd.DataFrame) -> dict[str, str]:
    """Per role filter one status letter per building (in `buildings` order), vectorised: overall status for
    "" ; grid roles leave buildings neutral (covered, or empty without households); building head, unit head
    (a unit with households and no head) and steward (unserved households, then over / under capacity)."""
    n = len(buildings)
    if not n:
        return dict.fromkeys(ROLE_FILTERS, "")
    ids = buildings["id"].to_numpy()
    empty = buildings["households"].to_numpy() == 0

    def per_building(mask: pd.Series) -> np.ndarray:
        hit = units.loc[mask.to_numpy(dtype=bool), "building_id"].unique() if len(units) else []
        return np.isin(ids, np.asarray(hit))

    def letters(*choices: tuple[np.ndarray, str], default: str = "c") -> str:
        out = np.full(n, default, dtype="<U1")
        for mask, letter in reversed(choices):
            out[mask] = letter
        return "".join(out.tolist())

    has_units = len(units) > 0
    no_unit_head = per_building((units["households"] > 0) & (units["unit_heads"] == 0)) if has_units \
        else np.zeros(n, bool)
    unserved = per_building(units["unserved"] > 0) if has_units else np.zeros(n, bool)
    over = per_building(units["over"].astype(bool)) if has_units else np.zeros(n, bool)
    under = per_building(units["under"].astype(bool)) if has_units else np.zeros(n, bool)
    neutral = letters((empty, "e"))
    out = {"": "".join(STATUS_CODE[s] for s in buildings["status"])}
    out |= dict.fromkeys(GRID_ROLE_FILTERS, neutral)
    out["building_head"] = letters((empty, "e"), (buildings["building_heads"].to_numpy() == 0, "m"))
    out["unit_head"] = letters((empty, "e"), (no_unit_head, "m"))
    out["steward"] = letters((empty, "e"), (unserved, "m"), (over, "o"), (under, "u"))
    return out


def _contacts(r: dict, people: dict[str, dict], community: str) -> list[dict]:
    """Whom to call about a grid: its chief, else its full-time workers, else the community office."""
    for roles in (("grid_chief",), ("grid_worker_fulltime",), ("grid_worker_parttime",)):
        found = [p for p in r["people"] or [] if p["role"] in roles]
        if found:
            return [{"name": p["name"], "role": ROLE_LABELS.get(p["role"], p["role"]),
                     "phone": (people.get(str(p["id"])) or {}).get("phone")} for p in found]
    return [{"name": community_office(community), "role": "社区", "phone": None}]


def community_office(community: str | None) -> str:
    """The community's office (社区居委会) by the community's name: 枫桥村社区 → 枫桥村社区居委会, not 社区社区."""
    return f"{(community or '').removesuffix('社区')}社区居委会"


def _people(r: dict, people: dict[str, dict], everyone: bool) -> tuple[list[list], bool]:
    """The grid's staff as [name, role, phone] (phone as the phone rule allows), in role order: everyone, or only
    whom the page calls (the chiefs, else the full-time workers, else the part-time ones); and whether anyone was
    left out (the page then asks for the grid alone when its panel opens)."""
    order = {role: k for k, role in enumerate(GRID_ROLE_FILTERS)}
    found = sorted((p for p in r["people"] or [] if p["role"] in order), key=lambda p: order[p["role"]])
    shown = found if everyone or not found else [p for p in found if p["role"] == found[0]["role"]]
    return [[p["name"], p["role"], (people.get(str(p["id"])) or {}).get("phone")] for p in shown], \
        len(shown) < len(found)


def coverage_data(report: CoverageReport, people: dict[str, dict], grid_places: dict[str, dict],
                  community_places: dict[str, dict], street_places: dict[str, dict], subtitle: str = "",
                  all_staff: bool = True) -> dict:
    """The coverage page's data (compact, see maps.leader_pack): legend, role filters, per-grid rows (one status
    letter per role filter in `filters` order, gaps, staff with phones (`all_staff`, else only whom to call), label
    point, box), the buildings (ids as
    differences, their grid's index, per role one status letter each; the three grid roles share "grid"), label
    points of communities and streets, totals."""
    rules = report.rules
    names = {c: p["name"] for c, p in community_places.items()}
    grids = []
    for r in report.grids.to_dict("records"):
        grids.append({
            "code": r["code"], "name": r["name"], "community": names.get(r["community_code"], ""), "kind": r["kind"],
            "households": int(r["households"]),
            "status": "".join(STATUS_CODE[_grid_status(r, role, rules)] for role in ROLE_FILTERS),
            "issues": _grid_issues(r, rules), **dict(zip(("people", "more"), _people(r, people, all_staff),
                                                          strict=True)),
            **pack.point(grid_places.get(r["code"], {})),
        })
    b = report.buildings
    order = np.argsort(b["id"].to_numpy(), kind="stable")
    index = {g["code"]: k for k, g in enumerate(grids)}
    statuses = building_statuses(b, report.units)

    def ordered(letters: str) -> str:
        return "".join(np.asarray(list(letters), dtype="<U1")[order].tolist()) if letters else ""

    # the three grid roles leave buildings alike: sent once, as "grid"
    status = {("grid" if k == GRID_ROLE_FILTERS[0] else k): ordered(v) for k, v in statuses.items()
              if k not in GRID_ROLE_FILTERS[1:]}
    buildings = {"id": pack.deltas(b["id"].to_numpy()[order]),
                 "grid": [index.get(g or "", -1) for g in b["grid_code"].to_numpy()[order]], "status": status}
    t = report.totals
    return {
        "kind": "coverage", "title": "人员覆盖图", "scope": subtitle or report.prefix or "全区",
        "at": report.at.isoformat(),
        "legend": [{"key": STATUS_CODE[k], "colour": c, "label": STATUS_LABELS[k], "note": STATUS_NOTE[k]}
                   for k, c in COLOURS.items()],
        "filters": [{"key": k, "label": v} for k, v in ROLE_FILTERS.items()],
        "roles": {k: ROLE_LABELS[k] for k in GRID_ROLE_FILTERS},
        "grids": grids, "buildings": buildings,
        "communities": [pack.label(c, p, box=True) for c, p in community_places.items()],
        "streets": [pack.label(c, p) for c, p in street_places.items()],
        "totals": {k: t[k] for k in ("comprehensive_grids", "grids_with_fulltime_worker", "buildings",
                                     "buildings_with_head", "units", "units_with_head", "households",
                                     "households_with_steward", "stewards_over", "stewards_under") if k in t},
    }
