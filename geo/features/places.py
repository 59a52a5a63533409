"""Where a leader's map puts a label and what "zoom to" frames: one point and one box per unit, small and set-based.

The coverage and classification pages draw their shapes from vector tiles (`tiles`); what they need besides is
per unit a label point (``ST_PointOnSurface``, always inside the shape), its bounding box (for "zoom to" from the
gaps list) and, for compounds, every grid (or micro-grid) they overlap, largest share first, so a straddling
compound can name both grids. Coordinates are WGS-84 rounded to 1e-6° (~0.1 m).

Also the grid worker's place search (地点搜索) for the report pin: compounds (小区) and buildings (楼栋) by name within
the jurisdiction (`search_places`), and the compact list the phone caches to search the same way offline
(`jurisdiction_places`; the page's copy of the rules is maps/static/mobile/places.js).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from sqlalchemy import Connection, text

from geo.access.users import LEVEL_BY_CODE_LENGTH

_LEVEL_FN = {"grid": "grids_at", "micro_grid": "micro_grids_at", "community": "communities_at",
             "street": "streets_at"}
_R = 6


def _box(row) -> list[float]:
    return [round(row.x0, _R), round(row.y0, _R), round(row.x1, _R), round(row.y1, _R)]


def unit_places(conn: Connection, level: str, at: dt.datetime | None, prefix: str | None) -> dict[str, dict]:
    """code → {name, lon, lat, bbox} for the units of `level` in force at `at` whose code starts with `prefix`."""
    fn = _LEVEL_FN[level]
    rows = conn.execute(text(
        f"SELECT code, name, ST_X(p) AS x, ST_Y(p) AS y, ST_XMin(geom) AS x0, ST_YMin(geom) AS y0, "
        f"ST_XMax(geom) AS x1, ST_YMax(geom) AS y1 FROM (SELECT code, name, geom, ST_PointOnSurface(geom) AS p "
        f"FROM {fn}(coalesce(CAST(:t AS timestamptz), now())) WHERE (CAST(:p AS text) IS NULL "
        "OR starts_with(code, :p))) u ORDER BY code"), {"t": at, "p": prefix or None}).all()
    return {r.code: {"name": r.name, "lon": round(r.x, _R), "lat": round(r.y, _R), "bbox": _box(r)} for r in rows}


def compound_places(conn: Connection, ids: list[int], level: str, at: dt.datetime | None) -> dict[int, dict]:
    """compound id → {lon, lat, bbox, units: [[code, name, share of the compound's area], …] largest first}."""
    if not ids:
        return {}
    fn = _LEVEL_FN[level]
    rows = conn.execute(text(
        "SELECT k.id, ST_X(ST_PointOnSurface(k.geom)) AS x, ST_Y(ST_PointOnSurface(k.geom)) AS y, "
        "ST_XMin(k.geom) AS x0, ST_YMin(k.geom) AS y0, ST_XMax(k.geom) AS x1, ST_YMax(k.geom) AS y1, "
        "(SELECT json_agg(json_build_array(o.code, o.name, o.share) ORDER BY o.share DESC) FROM ("
        "  SELECT u.code, u.name, round(CAST(ST_Area(ST_Intersection(u.geom, k.geom)) / "
        "         nullif(ST_Area(k.geom), 0) AS numeric), 3) AS share "
        f"  FROM {fn}(coalesce(CAST(:t AS timestamptz), now())) u "
        "  WHERE u.geom && k.geom AND ST_Intersects(u.geom, k.geom)) o WHERE o.share > 0) AS units "
        "FROM compounds k WHERE k.id = ANY(:ids)"), {"t": at, "ids": list(ids)}).all()
    return {r.id: {"lon": round(r.x, _R), "lat": round(r.y, _R), "bbox": _box(r),
                   "units": [[c, n, float(s)] for c, n, s in (r.units or [])]} for r in rows}


def scope_name(conn: Connection, prefix: str | None, at: dt.datetime | None) -> str:
    """The name of the street, community or grid a code prefix stands for ("全区" for none)."""
    level = {9: "street", 12: "community", 15: "grid"}.get(len(prefix or ""))
    if not prefix or not level:
        return prefix or "全区"
    return conn.execute(text(
        f"SELECT name FROM {_LEVEL_FN[level]}(coalesce(CAST(:t AS timestamptz), now())) WHERE code = :c"),
        {"t": at, "c": prefix}).scalar() or prefix


def extent(conn: Connection, level: str, prefix: str | None, at: dt.datetime | None = None) -> list[float] | None:
    """[west, south, east, north] of the units of `level` in force at `at` under `prefix` (None when there are none)."""
    row = conn.execute(text(
        f"SELECT ST_XMin(e) AS x0, ST_YMin(e) AS y0, ST_XMax(e) AS x1, ST_YMax(e) AS y1 FROM (SELECT ST_Extent(geom) "
        f"AS e FROM {_LEVEL_FN[level]}(coalesce(CAST(:t AS timestamptz), now())) WHERE (CAST(:p AS text) IS NULL "
        "OR starts_with(code, :p))) x"), {"t": at, "p": prefix or None}).first()
    return _box(row) if row is not None and row.x0 is not None else None


# ------------------------------------------------------------------------------------------------------------
# name search for the report pin (地点搜索: 小区、楼栋、门牌): the phone page and its offline copy share these rules

#: A trailing building designator: "3栋", "3号楼", "3幢", "3座", or bare digits after a space ("阳光小区 3").
_BUILDING_SUFFIX = re.compile(r"^(.*?)\s*(\d+)\s*(?:栋|号楼|幢|座)$", re.ASCII)
_BUILDING_BARE = re.compile(r"^(?:(.*\S)\s+)?(\d+)$", re.ASCII)
#: A building's name that is just its number in the compound ("3栋", "3号楼").
BUILDING_NUMBER_SQL = r"^(\d+)\s*(栋|号楼|幢|座)?$"
SEARCH_LIMIT = 20


def parse_place_query(query: str) -> tuple[str, int | None]:
    """(compound text, building number or None) from what the worker typed: "阳光小区 3栋" → ("阳光小区", 3).

    NFKC first, so full-width digits and spaces typed on a Chinese keyboard read as ASCII."""
    q = " ".join(unicodedata.normalize("NFKC", query or "").split())
    m = _BUILDING_SUFFIX.match(q) or _BUILDING_BARE.match(q)
    if m:
        return (m.group(1) or "").strip(), int(m.group(2))
    return q, None


def _scope_cte(prefix: str | None) -> str:
    """SQL of `j`, the jurisdiction's units in force at :t (every street when there is no prefix)."""
    level = LEVEL_BY_CODE_LENGTH.get(len(prefix or ""), "street") if prefix else "street"
    return (f"j AS (SELECT geom FROM {_LEVEL_FN[level]}(coalesce(CAST(:t AS timestamptz), now())) "
            "WHERE CAST(:p AS text) IS NULL OR starts_with(code, :p))")


def search_places(conn: Connection, query: str, prefix: str | None, at: dt.datetime | None = None,
                  limit: int = SEARCH_LIMIT) -> list[dict]:
    """Compounds and buildings in the jurisdiction (`prefix`) whose names match `query`, best first.

    With a building number ("阳光小区 3栋") the buildings of that number in the compounds whose name contains the
    text; without one, the compounds whose name contains it (exact name first, then names starting with it, then
    shorter names). A place is in the jurisdiction when its outline meets a unit in force there, so a compound
    straddling the edge is found from both sides. Each item has a point inside the place (WGS-84)."""
    text_part, number = parse_place_query(query)
    if not text_part and number is None:
        return []
    params = {"t": at, "p": prefix or None, "q": text_part, "n": number, "rx": BUILDING_NUMBER_SQL,
              "lim": limit}
    rank = "CASE WHEN lower(k.name) = lower(:q) THEN 0 WHEN starts_with(lower(k.name), lower(:q)) THEN 1 ELSE 2 END"
    contains = "strpos(lower(k.name), lower(:q)) > 0"
    if number is not None:
        rows = conn.execute(text(
            f"WITH {_scope_cte(prefix)} "
            "SELECT 'building' AS kind, b.id, b.name, k.id AS compound_id, k.name AS compound, "
            "ST_X(pt) AS x, ST_Y(pt) AS y FROM buildings b LEFT JOIN compounds k ON k.id = b.compound_id "
            "CROSS JOIN LATERAL ST_PointOnSurface(b.geom) pt "
            "WHERE CAST(substring(b.name FROM :rx) AS numeric) = :n "
            f"AND (:q = '' OR (k.name IS NOT NULL AND {contains})) "
            "AND EXISTS (SELECT 1 FROM j WHERE j.geom && b.geom AND ST_Intersects(j.geom, pt)) "
            f"ORDER BY {rank + ', ' if text_part else ''}coalesce(length(k.name), 0), coalesce(k.id, 0), b.id "
            "LIMIT :lim"), params).all()
        if rows or not text_part:
            return [_place(r) for r in rows]
    rows = conn.execute(text(
        f"WITH {_scope_cte(prefix)} "
        "SELECT 'compound' AS kind, k.id, k.name, k.id AS compound_id, k.name AS compound, "
        "ST_X(pt) AS x, ST_Y(pt) AS y FROM compounds k CROSS JOIN LATERAL ST_PointOnSurface(k.geom) pt "
        f"WHERE k.name IS NOT NULL AND {contains} "
        "AND EXISTS (SELECT 1 FROM j WHERE j.geom && k.geom AND ST_Intersects(j.geom, k.geom)) "
        f"ORDER BY {rank}, length(k.name), k.id LIMIT :lim"), params).all()
    return [_place(r) for r in rows]


def _place(r) -> dict:
    label = r.name if r.kind == "compound" or not r.compound else f"{r.compound} {r.name}"
    return {"kind": r.kind, "id": r.id, "name": r.name, "label": label, "compound_id": r.compound_id,
            "compound": r.compound, "lon": round(r.x, _R), "lat": round(r.y, _R)}


def jurisdiction_places(conn: Connection, prefix: str | None, at: dt.datetime | None = None) -> dict:
    """The named compounds and buildings of the jurisdiction with a point each, compact (lists, not objects):
    what the phone caches to search offline with the same rules as `search_places`."""
    params = {"t": at, "p": prefix or None}
    compounds = conn.execute(text(
        f"WITH {_scope_cte(prefix)} SELECT k.id, k.name, round(CAST(ST_X(pt) AS numeric), {_R}) AS x, "
        f"round(CAST(ST_Y(pt) AS numeric), {_R}) AS y FROM compounds k "
        "CROSS JOIN LATERAL ST_PointOnSurface(k.geom) pt WHERE k.name IS NOT NULL "
        "AND EXISTS (SELECT 1 FROM j WHERE j.geom && k.geom AND ST_Intersects(j.geom, k.geom)) ORDER BY k.id"),
        params).all()
    buildings = conn.execute(text(
        f"WITH {_scope_cte(prefix)} SELECT b.id, b.name, b.compound_id, round(CAST(ST_X(pt) AS numeric), {_R}) AS x, "
        f"round(CAST(ST_Y(pt) AS numeric), {_R}) AS y FROM buildings b "
        "CROSS JOIN LATERAL ST_PointOnSurface(b.geom) pt WHERE b.name IS NOT NULL "
        "AND EXISTS (SELECT 1 FROM j WHERE j.geom && b.geom AND ST_Intersects(j.geom, pt)) ORDER BY b.id"),
        params).all()
    return {"compounds": [[r.id, r.name, float(r.x), float(r.y)] for r in compounds],
            "buildings": [[r.id, r.name, r.compound_id, float(r.x), float(r.y)] for r in buildings]}
