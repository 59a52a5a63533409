"""The planner's pages over the plans API: `/plans` (drafts, versions, a new draft) and `/plans/{id}` (the editor).

Plain Jinja templates and vendored Leaflet (plus Leaflet-Geoman for drawing lines and polygons and editing
vertices), no folium: the editor is an application, not a map snapshot. Everything a planner changes goes through
the plans HTTP API from the page (one operation per action), so the page and the API never disagree; what the
server puts in the page is only the context that an edit cannot change: the community boundaries, buildings with
their households, population, units and responsible staff, compounds, and who else drafts the same area.

What the pages show is read by `geo.plans.listing`; this module only renders it.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from maps.assets import STATIC_URL, OfflineAssetError, external_resources, install_asset_helper, js_literal

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
install_asset_helper(_env)  # asset(path): /static/<path>?v=<content hash>

ROLE_NAMES = {"admin": "管理员", "planner": "规划员", "leader": "领导", "worker": "网格员"}
EDIT_ROLES = frozenset({"planner", "admin"})


def _overlap(a: str, b: str) -> bool:
    """Whether two scopes (street or community codes) share land: one contains the other."""
    return a.startswith(b) or b.startswith(a)


def _brief(p: dict) -> dict:
    return {k: p[k] for k in ("id", "created_by", "created_at", "updated_at", "scope_name", "label", "operations")}


def drafts_of_same_area(plans: list[dict], scope: dict) -> list[dict]:
    """Other drafts whose area overlaps the plan's (the same community, its street, or a community of it)."""
    return [_brief(p) for p in plans if p["status"] == "draft" and p["id"] != scope["id"]
            and _overlap(p["scope_code"], scope["scope_code"])]


def plans_overview(plans: list[dict], versions: list[dict], streets: list[dict], username: str,
                   sees, covers) -> dict:
    """The list page's content for a caller: `sees(code)` (jurisdiction overlaps) and `covers(code)` (inside it)."""
    visible = [p for p in plans if sees(p["scope_code"])]
    drafts = [p for p in visible if p["status"] == "draft"]
    mine = [p for p in drafts if p["created_by"] == username]
    others = [p for p in drafts if p["created_by"] != username]
    for p in mine:
        p["same_area"] = [_brief(o) for o in others if _overlap(o["scope_code"], p["scope_code"])]
    published = [p for p in visible if p["status"] == "published"]
    shown_versions = [v for v in versions if any(sees(c["code"]) for c in v["communities"])]
    for v in shown_versions:  # the API decides; the button is offered where it can succeed
        v["can_rollback"] = all(covers(c["code"]) for c in v["communities"])
    pickable = []
    for s in streets:
        comms = [c for c in s["communities"] if covers(c["code"])]
        if comms:
            pickable.append({**s, "communities": comms, "whole": covers(s["code"])})
    names = {s["code"]: s["name"] for s in streets} | {c["code"]: c["name"] for s in streets for c in s["communities"]}
    return {"mine": mine, "others": others, "published_plans": published, "versions": shown_versions,
            "streets": pickable, "names": names}


def _render(template: str, **kw) -> str:
    page = _env.get_template(template).render(static_url=STATIC_URL, **kw)
    external = external_resources(page)
    if external:
        raise OfflineAssetError(f"{template} would load external resources: {external}")
    return page


def render_plans_list(overview: dict, user: dict) -> str:
    """The `/plans` page."""
    data = {"user": user, "versions": overview["versions"]}
    return _render("plans_list.html", o=overview, user=user, role_name=ROLE_NAMES.get(user["role"], user["role"]),
                   can_edit=user["role"] in EDIT_ROLES, data_json=js_literal(data))


def render_editor(scope: dict, context: dict, user: dict, same_area: list[dict], band: tuple[int, int],
                  tile_url: str | None = None, steward_band: tuple[int, int] = (5, 15)) -> str:
    """The `/plans/{id}` editor page (`tile_url`: the intranet tile server, if any; no base map otherwise;
    `steward_band`: households per steward, 管家)."""
    data = {"plan": scope, "context": context, "user": user, "can_edit": user["role"] in EDIT_ROLES,
            "same_area": same_area, "band": list(band), "steward_band": list(steward_band),
            "api": f"/v1/plans/{scope['id']}",
            "static_url": STATIC_URL, "tile_url": tile_url or None}
    return _render("plan_editor.html", plan=scope, user=user, role_name=ROLE_NAMES.get(user["role"], user["role"]),
                   can_edit=user["role"] in EDIT_ROLES, data_json=js_literal(data))
