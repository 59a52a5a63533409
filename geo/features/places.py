"""Where a leader's map puts a label and what "zoom to" frames: one point and one box per unit, small and set-based.

The coverage and classification pages draw their shapes from vector tiles (`tiles`); what they need besides is
per unit a label point (``ST_PointOnSurface``, always inside the shape), its bounding box (for "zoom to" from the
gaps list) and, for compounds, every grid (or micro-grid) they overlap, largest share first, so a straddling
compound can name both grids. Coordinates are WGS-84 rounded to 1e-6° (~0.1 m).

Also the grid worker's place search (地点搜索) for the report pin: compounds (小区) and buildings (楼栋) by name or
address (地址, "巴陵东路129号3栋2单元") within the jurisdiction (`search_places`, compared by `search_key`, the SQL
function place_search_key of migration 0023), and the compact list the phone caches to search the same way offline
(`jurisdiction_places`; the page's copy of the rules is maps/static/mobile/places.js).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence

from sqlalchemy import Connection, Row, text

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


def compound_places(conn: Connection, ids: list[int], level: str, at: dt.datetime | None,
                    with_units: bool = True) -> dict[int, dict]:
    """compound id → {lon, lat, bbox, units: [[code, name, share of the compound's area], …] largest first}
    (`with_units` False: no units, e.g. when the stored overlaps give them)."""
    if not ids:
        return {}
    fn = _LEVEL_FN[level]
    units = (
        "(SELECT json_agg(json_build_array(o.code, o.name, o.share) ORDER BY o.share DESC) FROM ("
        "  SELECT u.code, u.name, round(CAST(ST_Area(ST_Intersection(u.geom, k.geom)) / "
        "         nullif(ST_Area(k.geom), 0) AS numeric), 3) AS share "
        f"  FROM {fn}(coalesce(CAST(:t AS timestamptz), now())) u "
        "  WHERE u.geom && k.geom AND ST_Intersects(u.geom, k.geom)) o WHERE o.share > 0)") if with_units else "NULL"
    rows = conn.execute(text(
        "SELECT k.id, ST_X(ST_PointOnSurface(k.geom)) AS x, ST_Y(ST_PointOnSurface(k.geom)) AS y, "
        "ST_XMin(k.geom) AS x0, ST_YMin(k.geom) AS y0, ST_XMax(k.geom) AS x1, ST_YMax(k.geom) AS y1, "
        f"{units} AS units "
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
# place search for the report pin (地点搜索: 小区、楼栋、地址): the phone page and its offline copy share these rules

#: A trailing unit (and room) is no place of its own: "3栋2单元", "3栋2单元301" search for 3栋.
_UNIT_SUFFIX = re.compile(r"^(.*?[^\d\s])\s*\d+\s*单元(?:\s*\d+\s*(?:室|号房|号)?)?$")
#: A trailing building designator: "3栋", "3号楼", "3幢", "3座", or bare digits after a space ("阳光小区 3").
_BUILDING_SUFFIX = re.compile(r"^(.*?)\s*(\d+)\s*(?:栋|号楼|幢|座)$", re.ASCII)
_BUILDING_BARE = re.compile(r"^(?:(.*\S)\s+)?(\d+)$", re.ASCII)
#: A building's name that is just its number in the compound ("3栋", "3号楼"): found by number, never by text.
BUILDING_NUMBER_SQL = r"^(\d+)\s*(栋|号楼|幢|座)?$"
SEARCH_LIMIT = 20

#: The steps of the SQL function place_search_key (migration 0023), in its order; places.js repeats them.
_SPACE = r"[ \t\n\r\f\v]"
_KEY_STEPS = (
    (re.compile(rf"([0-9]){_SPACE}*(号楼|幢|座|栋)"), r"\1栋"),
    (re.compile(rf"([0-9]){_SPACE}*号{_SPACE}*"), r"\1#"),
    (re.compile(rf"([0-9]){_SPACE}+(?=[0-9])"), r"\1#"),
    (re.compile(rf"{_SPACE}+"), ""),
    (re.compile(r"#(?![0-9])"), ""),
)


def search_key(value: str | None) -> str:
    """What names and addresses are compared as (the SQL function place_search_key): NFKC, lower case, "3号楼"/"3幢"
    → "3栋", "128号" → "128" ("128号3栋" → "128#3栋"), no spaces."""
    s = unicodedata.normalize("NFKC", value or "").lower()
    for pattern, repl in _KEY_STEPS:
        s = pattern.sub(repl, s)
    return s


def parse_place_query(query: str) -> tuple[str, int | None]:
    """(compound text, building number or None) from what the worker typed: "阳光小区 3栋" → ("阳光小区", 3),
    "巴陵东路129号3栋2单元" → ("巴陵东路129号", 3).

    NFKC first, so full-width digits and spaces typed on a Chinese keyboard read as ASCII."""
    q = " ".join(unicodedata.normalize("NFKC", query or "").split())
    unit = _UNIT_SUFFIX.match(q)
    if unit:
        q = unit.group(1)
    m = _BUILDING_SUFFIX.match(q) or _BUILDING_BARE.match(q)
    if m:
        return (m.group(1) or "").strip(), int(m.group(2))
    return q, None


def _scope_cte(prefix: str | None) -> str:
    """SQL of `j`, the jurisdiction's units in force at :t (every street when there is no prefix)."""
    level = LEVEL_BY_CODE_LENGTH.get(len(prefix or ""), "street") if prefix else "street"
    return (f"j AS (SELECT geom FROM {_LEVEL_FN[level]}(coalesce(CAST(:t AS timestamptz), now())) "
            "WHERE CAST(:p AS text) IS NULL OR starts_with(code, :p))")


def _within(prefix: str | None, box: str, shape: str) -> str:
    """SQL: `shape` (with bounding geometry `box`) meets the jurisdiction `j`; anything at all for the whole district
    (no prefix), so places lying outside every street are still found by those who see everything."""
    if not prefix:
        return "TRUE"
    return f"EXISTS (SELECT 1 FROM j WHERE j.geom && {box} AND ST_Intersects(j.geom, {shape}))"


def _like(key: str) -> str:
    """A LIKE pattern (escape '!') for "contains `key`": what the trigram indexes serve."""
    return "%" + key.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def _matches(key: str) -> str:
    """SQL: the search key column `key` (name_key, address_key: place_search_key kept by PostgreSQL) contains :k."""
    return f"{key} LIKE :pat ESCAPE '!'"


def _rank(key: str) -> str:
    """SQL: 0 when the key column `key` is the query's, 1 when it starts with it, 2 when it contains it, else 3."""
    return f"CASE WHEN {key} = :k THEN 0 WHEN starts_with({key}, :k) THEN 1 WHEN {_matches(key)} THEN 2 ELSE 3 END"


_POINT = "ST_X(pt) AS x, ST_Y(pt) AS y"


def search_places(conn: Connection, query: str, prefix: str | None, at: dt.datetime | None = None,
                  limit: int = SEARCH_LIMIT) -> list[dict]:
    """Compounds and buildings in the jurisdiction (`prefix`) whose name or address (地址) matches `query`, best first.

    Names and addresses are compared by `search_key`. With a building number ("阳光小区 3栋", "巴陵东路129号3栋2单元")
    the buildings of that number in the compounds whose name or address contains the text; otherwise (or when
    there are none) the compounds, and the buildings by their address or own name, containing it: exact first,
    then starting with it, then containing it; compounds before buildings, then shorter names. A place is in the
    jurisdiction when its outline meets a unit in force there, so a compound straddling the edge is found from
    both sides. Each item has a point inside the place (WGS-84) and its address."""
    text_part, number = parse_place_query(query)
    if not text_part and number is None:
        return []
    params = {"t": at, "p": prefix or None, "n": number, "rx": BUILDING_NUMBER_SQL, "lim": limit}
    if number is not None:
        k = search_key(text_part)
        rank = f"least({_rank('k.name_key')}, {_rank('k.address_key')})"
        rows = conn.execute(text(
            f"WITH {_scope_cte(prefix)} "
            "SELECT 'building' AS kind, b.id, b.name, b.address, k.id AS compound_id, k.name AS compound, "
            f"{_POINT} FROM buildings b LEFT JOIN compounds k ON k.id = b.compound_id "
            "CROSS JOIN LATERAL ST_PointOnSurface(b.geom) pt "
            "WHERE CAST(substring(b.name FROM :rx) AS numeric) = :n "
            f"AND (:k = '' OR (k.id IS NOT NULL AND ({_matches('k.name_key')} OR {_matches('k.address_key')}))) "
            f"AND {_within(prefix, 'b.geom', 'pt')} "
            f"ORDER BY {rank + ', ' if k else ''}coalesce(length(k.name), 0), coalesce(k.id, 0), b.id "
            "LIMIT :lim"), {**params, "k": k, "pat": _like(k)}).all()
        if rows or not text_part:
            return [_place(r) for r in rows]
    keys = [search_key(query_without_unit(query))]
    if number is not None:
        keys.append(search_key(text_part))  # "阳光小区 999栋" with no 999栋: the compound
    for k in dict.fromkeys(x for x in keys if x):
        rows = _text_search(conn, prefix, {**params, "k": k, "pat": _like(k)})
        if rows:
            return [_place(r) for r in rows]
    return []


def query_without_unit(query: str) -> str:
    """The query as parsed (NFKC, single spaces) without a trailing unit ("…3栋2单元" → "…3栋")."""
    q = " ".join(unicodedata.normalize("NFKC", query or "").split())
    unit = _UNIT_SUFFIX.match(q)
    return unit.group(1) if unit else q


def _text_search(conn: Connection, prefix: str | None, params: dict) -> Sequence[Row]:
    """Compounds by name or address, buildings by address or own (non-number) name, containing :k."""
    b_name = f"CASE WHEN b.name ~ :rx THEN 3 ELSE {_rank('b.name_key')} END"
    return conn.execute(text(
        f"WITH {_scope_cte(prefix)}, hits AS ("
        "  SELECT 'compound' AS kind, 0 AS kind_order, k.id, k.name, k.address, k.id AS compound_id, "
        f"  k.name AS compound, least({_rank('k.name_key')}, {_rank('k.address_key')}) AS rk, "
        "  NULL::geometry AS pt, k.geom "
        f"  FROM compounds k WHERE ({_matches('k.name_key')} OR {_matches('k.address_key')}) "
        f"  AND {_within(prefix, 'k.geom', 'k.geom')} "
        "  UNION ALL "
        "  SELECT 'building', 1, b.id, b.name, b.address, k.id, k.name, "
        f"  least({b_name}, {_rank('b.address_key')}), pt, NULL::geometry "
        "  FROM buildings b LEFT JOIN compounds k ON k.id = b.compound_id "
        "  CROSS JOIN LATERAL ST_PointOnSurface(b.geom) pt "
        f"  WHERE ((b.name !~ :rx AND {_matches('b.name_key')}) OR {_matches('b.address_key')}) "
        f"  AND {_within(prefix, 'b.geom', 'pt')}"
        "), best AS (SELECT * FROM hits ORDER BY rk, kind_order, coalesce(length(name), 0), id LIMIT :lim) "
        "SELECT kind, id, name, address, compound_id, compound, ST_X(p) AS x, ST_Y(p) AS y "
        "FROM best CROSS JOIN LATERAL coalesce(pt, ST_PointOnSurface(geom)) p "
        "ORDER BY rk, kind_order, coalesce(length(name), 0), id"), params).all()


def place_label(kind: str, name: str | None, address: str | None, compound: str | None) -> str:
    """What the phone lists: a compound's name, a building as "阳光小区 3栋"; the address when there is no name."""
    own = name or address or ""
    if kind == "compound" or not compound or not name:
        return own
    return f"{compound} {name}"


def _place(r) -> dict:
    return {"kind": r.kind, "id": r.id, "name": r.name, "address": r.address,
            "label": place_label(r.kind, r.name, r.address, r.compound), "compound_id": r.compound_id,
            "compound": r.compound, "lon": round(r.x, _R), "lat": round(r.y, _R)}


def jurisdiction_places(conn: Connection, prefix: str | None, at: dt.datetime | None = None) -> dict:
    """The named or addressed compounds and buildings of the jurisdiction with a point each, compact (lists, not
    objects): what the phone caches to search offline with the same rules as `search_places`.

    A building's address is sent as ``true`` when it is its compound's address followed by its name
    ("巴陵东路129号" + "3栋"), the common case, so the phone rebuilds it instead of downloading it."""
    params = {"t": at, "p": prefix or None}
    compounds = conn.execute(text(
        f"WITH {_scope_cte(prefix)} SELECT k.id, k.name, k.address, round(CAST(ST_X(pt) AS numeric), {_R}) AS x, "
        f"round(CAST(ST_Y(pt) AS numeric), {_R}) AS y FROM compounds k "
        "CROSS JOIN LATERAL ST_PointOnSurface(k.geom) pt WHERE (k.name IS NOT NULL OR k.address IS NOT NULL) "
        f"AND {_within(prefix, 'k.geom', 'k.geom')} ORDER BY k.id"),
        params).all()
    buildings = conn.execute(text(
        f"WITH {_scope_cte(prefix)} SELECT b.id, b.name, b.address, b.compound_id, "
        f"round(CAST(ST_X(pt) AS numeric), {_R}) AS x, round(CAST(ST_Y(pt) AS numeric), {_R}) AS y FROM buildings b "
        "CROSS JOIN LATERAL ST_PointOnSurface(b.geom) pt WHERE (b.name IS NOT NULL OR b.address IS NOT NULL) "
        f"AND {_within(prefix, 'b.geom', 'pt')} ORDER BY b.id"),
        params).all()
    compound_address = {r.id: r.address for r in compounds}

    def address(r) -> str | bool | None:
        base = compound_address.get(r.compound_id)
        if r.address is not None and base is not None and r.name is not None and r.address == base + r.name:
            return True
        return r.address

    return {"compounds": [[r.id, r.name, float(r.x), float(r.y), r.address] for r in compounds],
            "buildings": [[r.id, r.name, r.compound_id, float(r.x), float(r.y), address(r)] for r in buildings]}
