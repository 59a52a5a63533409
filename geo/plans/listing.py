"""Reading plans for the planner's pages (改划方案列表与编辑上下文): every plan, the published versions per area, the
areas a planner can draft, one plan's scope, and the context the editor draws (boundaries, buildings with their
households and staff, compounds, neighbouring communities). Read-only, set-based SQL.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from sqlalchemy import Connection, text

#: Coordinates sent to the page: 7 decimals (about 1 cm) for outlines, points on surface at full precision so the
#: page puts every building in the same grid as the validator does.
OUTLINE_DECIMALS = 7
#: Communities drawn greyed around the plan's own: those within this distance (degrees, about 1 km).
NEIGHBOUR_DEG = 0.01


def _iso(value) -> str | None:
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else value


def all_plans(conn: Connection) -> list[dict]:
    """Every plan's header (newest change first): scope, who drafted it, when, live operations."""
    rows = conn.execute(text("""
        SELECT p.id, p.label, p.status, p.revision, p.created_by, p.created_at, p.updated_at,
               p.published_version_id, CASE WHEN p.street_id IS NULL THEN 'community' ELSE 'street' END AS scope,
               coalesce(c.code, s.code) AS scope_code, coalesce(c.name, s.name) AS scope_name,
               (SELECT count(*) FROM plan_operations o WHERE o.plan_id = p.id AND o.undone_at IS NULL) AS operations
        FROM plans p LEFT JOIN communities c ON c.id = p.community_id LEFT JOIN streets s ON s.id = p.street_id
        ORDER BY p.updated_at DESC, p.id DESC
    """)).mappings().all()
    return [{k: _iso(v) for k, v in r.items()} for r in rows]


def boundary_versions_by_area(conn: Connection, limit: int = 200) -> list[dict]:
    """Published boundary versions (newest first) with the communities whose grids or micro-grids each started or
    ended, the plan that published it, and whether it is still the latest version of each of those communities."""
    rows = conn.execute(text("""
        WITH touched AS (
            SELECT g.community_id, b.version_id AS vid FROM grid_boundaries b JOIN grids g ON g.id = b.grid_id
            UNION
            SELECT g.community_id, v.id FROM grid_boundaries b JOIN grids g ON g.id = b.grid_id
            JOIN boundary_versions v ON v.valid_from = b.valid_to
            UNION
            SELECT g.community_id, b.version_id FROM micro_grid_boundaries b
            JOIN micro_grids m ON m.id = b.micro_grid_id JOIN grids g ON g.id = m.grid_id
            UNION
            SELECT g.community_id, v.id FROM micro_grid_boundaries b
            JOIN micro_grids m ON m.id = b.micro_grid_id JOIN grids g ON g.id = m.grid_id
            JOIN boundary_versions v ON v.valid_from = b.valid_to),
        latest AS (
            SELECT DISTINCT ON (t.community_id) t.community_id, t.vid
            FROM touched t JOIN boundary_versions v ON v.id = t.vid
            ORDER BY t.community_id, v.valid_from DESC)
        SELECT v.id, v.label, v.created_by, v.valid_from,
               jsonb_agg(jsonb_build_object('code', c.code, 'name', c.name,
                                            'current', l.vid IS NOT NULL) ORDER BY c.code) AS communities,
               (SELECT p.id FROM plans p WHERE p.published_version_id = v.id ORDER BY p.id LIMIT 1) AS plan_id,
               (SELECT s.name FROM plans p JOIN streets s ON s.id = p.street_id
                WHERE p.published_version_id = v.id ORDER BY p.id LIMIT 1) AS street_name
        FROM boundary_versions v JOIN touched t ON t.vid = v.id JOIN communities c ON c.id = t.community_id
        LEFT JOIN latest l ON l.community_id = t.community_id AND l.vid = v.id
        GROUP BY v.id ORDER BY v.valid_from DESC LIMIT :n
    """), {"n": limit}).mappings().all()
    return [{k: _iso(v) for k, v in r.items()} for r in rows]


def areas(conn: Connection) -> list[dict]:
    """Streets with their communities (codes and names), for picking what a new draft covers."""
    rows = conn.execute(text("""
        SELECT s.code AS street_code, s.name AS street_name, c.code, c.name, coalesce(g.n, 0) AS grids
        FROM streets s JOIN communities c ON c.street_id = s.id
        LEFT JOIN (SELECT community_id, count(*) AS n FROM grids_at(now()) GROUP BY community_id) g
               ON g.community_id = c.id
        ORDER BY s.code, c.code
    """)).mappings().all()
    out: dict[str, dict] = {}
    for r in rows:
        street = out.setdefault(r["street_code"], {"code": r["street_code"], "name": r["street_name"],
                                                   "communities": []})
        street["communities"].append({"code": r["code"], "name": r["name"], "grids": int(r["grids"])})
    return list(out.values())


def plan_scope(conn: Connection, plan_id: int) -> dict | None:
    """A plan's scope (community or street), its communities (id, code, name) and status; None when unknown."""
    row = conn.execute(text("""
        SELECT p.id, p.label, p.status, p.revision, p.created_by, p.created_at, p.updated_at, p.street_id,
               CASE WHEN p.street_id IS NULL THEN 'community' ELSE 'street' END AS scope,
               coalesce(c.code, s.code) AS scope_code, coalesce(c.name, s.name) AS scope_name,
               (SELECT coalesce(jsonb_agg(jsonb_build_object('id', cc.id, 'code', cc.code, 'name', cc.name)
                                          ORDER BY cc.code), '[]'::jsonb)
                FROM communities cc WHERE cc.id = p.community_id OR cc.street_id = p.street_id) AS communities
        FROM plans p LEFT JOIN communities c ON c.id = p.community_id LEFT JOIN streets s ON s.id = p.street_id
        WHERE p.id = :p
    """), {"p": plan_id}).mappings().first()
    return None if row is None else {k: _iso(v) for k, v in row.items()}


def _features(rows: Iterable, props: Iterable[str]) -> dict:
    keys = list(props)
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {k: r[k] for k in keys}, "geometry": json.loads(r["geom"])}
        for r in rows if r["geom"] is not None]}


def editor_context(conn: Connection, community_ids: list[int]) -> dict:
    """What the editor draws around the plan and counts with: the plan's communities and their neighbours (in
    force now), the buildings (households, population, units, point on surface, responsible people), compounds, and
    the people assigned to each grid and micro-grid (in force today), stewards apart (the steward rule per
    micro-grid)."""
    ids = [int(i) for i in community_ids]
    d = OUTLINE_DECIMALS
    communities = conn.execute(text(f"""
        WITH own AS (SELECT ST_Union(geom) AS g FROM communities_at(now()) WHERE id = ANY(:c))
        SELECT c.id, c.code, c.name, c.id = ANY(:c) AS own, ST_AsGeoJSON(c.geom, {d}) AS geom
        FROM communities_at(now()) c, own WHERE c.id = ANY(:c) OR ST_DWithin(c.geom, own.g, :near)
        ORDER BY c.code
    """), {"c": ids, "near": NEIGHBOUR_DEG}).mappings().all()
    buildings = conn.execute(text(f"""
        SELECT b.id, b.name, b.code, b.compound_id, b.community_id, b.use,
               coalesce(sum(u.households), 0)::int AS households, coalesce(sum(u.population), 0)::int AS population,
               count(u.id)::int AS units, ST_X(ST_PointOnSurface(b.geom)) AS x, ST_Y(ST_PointOnSurface(b.geom)) AS y,
               ST_AsGeoJSON(b.geom, {d}) AS geom
        FROM buildings b LEFT JOIN units u ON u.building_id = b.id
        WHERE b.community_id = ANY(:c) GROUP BY b.id ORDER BY b.id
    """), {"c": ids}).mappings().all()
    compounds = conn.execute(text(f"""
        SELECT id, coalesce(name, '小区 ' || id) AS name, community_id, ST_AsGeoJSON(geom, {d}) AS geom
        FROM compounds WHERE community_id = ANY(:c) ORDER BY id
    """), {"c": ids}).mappings().all()
    staff = conn.execute(text("""
        SELECT coalesce(a.building_id, u.building_id) AS building_id, a.grid_id, a.micro_grid_id, a.person_id,
               a.role = 'steward' AS steward
        FROM staff_assignments a
        LEFT JOIN units u ON u.id = a.unit_id
        LEFT JOIN buildings b ON b.id = coalesce(a.building_id, u.building_id)
        LEFT JOIN grids g ON g.id = a.grid_id
        LEFT JOIN micro_grids m ON m.id = a.micro_grid_id LEFT JOIN grids mg ON mg.id = m.grid_id
        WHERE a.valid_from <= current_date AND (a.valid_to IS NULL OR a.valid_to >= current_date)
          AND (b.community_id = ANY(:c) OR g.community_id = ANY(:c) OR mg.community_id = ANY(:c))
    """), {"c": ids}).mappings().all()
    people_by_building: dict[int, set[int]] = {}
    people_by_unit: dict[str, set[int]] = {}
    # stewards (管家) apart: the editor checks each micro-grid against the steward rule (households per steward)
    stewards_by_building: dict[int, set[int]] = {}
    stewards_by_unit: dict[str, set[int]] = {}
    for r in staff:
        if r["building_id"] is not None:
            people_by_building.setdefault(int(r["building_id"]), set()).add(int(r["person_id"]))
            if r["steward"]:
                stewards_by_building.setdefault(int(r["building_id"]), set()).add(int(r["person_id"]))
            continue
        key = f"g{r['grid_id']}" if r["grid_id"] is not None else (
            f"m{r['micro_grid_id']}" if r["micro_grid_id"] is not None else None)
        if key is not None:
            people_by_unit.setdefault(key, set()).add(int(r["person_id"]))
            if r["steward"]:
                stewards_by_unit.setdefault(key, set()).add(int(r["person_id"]))
    compound_names = {int(r["id"]): r["name"] for r in compounds}
    b_features = []
    for r in buildings:
        name = r["name"] or (f"{r['code']} 号楼栋" if r["code"] else "未命名楼栋")
        where = compound_names.get(r["compound_id"]) if r["compound_id"] is not None else None
        b_features.append({"type": "Feature", "geometry": json.loads(r["geom"]), "properties": {
            "id": int(r["id"]), "name": name, "label": f"{where} {name}" if where else name,
            "compound_id": r["compound_id"], "community_id": r["community_id"], "use": r["use"],
            "households": r["households"], "population": r["population"], "units": r["units"],
            "pt": [r["x"], r["y"]], "people": sorted(people_by_building.get(int(r["id"]), ())),
            "stewards": sorted(stewards_by_building.get(int(r["id"]), ()))}})
    return {
        "communities": _features(communities, ("id", "code", "name", "own")),
        "buildings": {"type": "FeatureCollection", "features": b_features},
        "compounds": _features(compounds, ("id", "name", "community_id")),
        "unit_people": {k: sorted(v) for k, v in sorted(people_by_unit.items())},
        "unit_stewards": {k: sorted(v) for k, v in sorted(stewards_by_unit.items())},
    }


# ----------------------------------------------------------------------------------------------- pages
