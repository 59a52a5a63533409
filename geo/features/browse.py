"""Browsing the units and the boundary versions (浏览): paged lists of streets, communities, grids, micro-grids,
compounds and buildings, one unit with its parents, children and versions, and the boundary versions (边界版本:
published plans, imports, rollbacks) with what each changed.

The rows, their names at an instant (a grid keeps the name it had while a boundary row was in force) and which rows
a jurisdiction sees are those of the OGC collections (`geo.features.collections`); this module adds the search,
parent and paging rules and the unit/version details. Set-based SQL; read-only.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import Connection, text

from geo.errors import DomainError, NotFound
from geo.features.collections import COLLECTIONS, NAMED_BOUNDARIES, When, name_at
from geo.features.errors import InvalidFeatureQuery
from geo.features.items import parse_bbox, parse_when

#: Paging: the default page and the most one page may hold.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
#: The changed units one version's detail lists at most.
MAX_VERSION_UNITS = 2000

_CODE = re.compile(r"^[0-9]{1,19}$")


class InvalidBrowseQuery(DomainError):
    """A browse parameter cannot be used (at, bbox, parent, limit, a time range)."""

    slug = "invalid-browse-query"
    kind = "invalid"
    title = "Invalid query parameter"


class UnitNotFound(NotFound):
    """No unit of this level has this code (or id), or the caller may not see it."""

    slug = "unit-not-found"


class VersionNotFound(NotFound):
    """No boundary version with this id touches the caller's jurisdiction."""

    slug = "version-not-found"


@dataclass(frozen=True)
class Level:
    """A browsable level: its collection (rows, names, jurisdiction), how its parent and households are read."""

    id: str
    title: str
    #: versioned units are addressed by code; compounds and buildings by id
    versioned: bool
    #: the identity table and its alias in the collection's FROM (versioned levels: the history view `h`)
    key_sql: str
    parent_level: str | None
    parent_code_sql: str | None
    parent_name_sql: str | None
    households_sql: str | None
    area_sql: str


def _area(geom: str) -> str:
    return f"round(CAST(ST_Area(CAST({geom} AS geography)) AS numeric), 1)"


#: households of the buildings whose point on surface lies in the boundary `h` (the same rule as coverage)
_HOUSEHOLDS_IN = ("(SELECT coalesce(sum(u.households), 0) FROM buildings bb JOIN units u ON u.building_id = bb.id "
                  "WHERE bb.geom && h.geom AND ST_Covers(h.geom, ST_PointOnSurface(bb.geom)))")

LEVELS: dict[str, Level] = {lv.id: lv for lv in (
    Level("streets", "街道", True, "h.id", None, None, None,
          "(SELECT coalesce(sum(u.households), 0) FROM communities c2 JOIN buildings bb ON bb.community_id = c2.id "
          "JOIN units u ON u.building_id = bb.id WHERE c2.street_id = h.id)", _area("h.geom")),
    Level("communities", "社区", True, "h.id", "streets", "s.code", "s.name",
          "(SELECT coalesce(sum(u.households), 0) FROM buildings bb JOIN units u ON u.building_id = bb.id "
          "WHERE bb.community_id = h.id)", _area("h.geom")),
    Level("grids", "网格", True, "h.id", "communities", "c.code", "c.name", _HOUSEHOLDS_IN, _area("h.geom")),
    Level("micro_grids", "微网格", True, "h.id", "grids", "g.code", "coalesce(gb.name, g.name)", _HOUSEHOLDS_IN,
          _area("h.geom")),
    Level("compounds", "小区", False, "k.id", "communities", "cm.code", "cm.name",
          "(SELECT coalesce(sum(u.households), 0) FROM buildings bb JOIN units u ON u.building_id = bb.id "
          "WHERE bb.compound_id = k.id)", _area("k.geom")),
    Level("buildings", "楼栋", False, "b.id", "communities", "cm.code", "cm.name",
          "(SELECT coalesce(sum(u.households), 0) FROM units u WHERE u.building_id = b.id)", _area("b.geom")),
)}


def get_level(level: str) -> Level:
    """The level with this id; UnitNotFound otherwise."""
    try:
        return LEVELS[level]
    except KeyError:
        raise UnitNotFound(f"there is no level {level!r}; the levels are {', '.join(LEVELS)}") from None


# ------------------------------------------------------------------------------------------------ parameters

def parse_at(at: str | None, tz: str = "Asia/Shanghai") -> dt.datetime:
    """The instant of `at` (a date means the close of that local day); now when absent."""
    try:
        when = parse_when(None, at, tz)
    except InvalidFeatureQuery as e:
        raise InvalidBrowseQuery(str(e).replace("datetime:", "at:")) from None
    return when.instant or dt.datetime.now(dt.UTC)


def _parse_bound(name: str, value: str | None, tz: str, start: bool) -> dt.datetime | None:
    if value is None or not value.strip():
        return None
    try:
        when = parse_when(None, value, tz)
    except InvalidFeatureQuery:
        raise InvalidBrowseQuery(f"{name}: {value!r} is not an ISO date-time or a date (YYYY-MM-DD)") from None
    # a bare date: from its first moment, or until its last
    return (when.start or when.instant) if start else when.instant


def check_paging(limit: int | None, offset: int | None) -> tuple[int, int]:
    """(limit, offset) checked: 1 ≤ limit ≤ MAX_LIMIT (default DEFAULT_LIMIT), 0 ≤ offset."""
    limit = DEFAULT_LIMIT if limit is None else limit
    offset = offset or 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidBrowseQuery(f"limit: {limit} is not between 1 and {MAX_LIMIT}")
    if not 0 <= offset < 2**31:
        raise InvalidBrowseQuery(f"offset: {offset} is not between 0 and {2**31 - 1}")
    return limit, offset


def check_prefix(name: str, value: str | None) -> str | None:
    """A code prefix (1–19 digits) or None."""
    if value is None or value == "":
        return None
    if not _CODE.match(value):
        raise InvalidBrowseQuery(f"{name}: {value!r} is not a code prefix (1 to 19 digits)")
    return value


def _bbox(value: str | None) -> tuple[float, float, float, float] | None:
    try:
        return parse_bbox(value)
    except InvalidFeatureQuery as e:
        raise InvalidBrowseQuery(str(e)) from None


def _text(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if "\x00" in value or len(value) > 100:
        raise InvalidBrowseQuery(f"{name}: at most 100 characters, no NUL")
    return value.strip()


# ------------------------------------------------------------------------------------------------- the lists

def _select(lv: Level) -> str:
    c = COLLECTIONS[lv.id]
    name = c.prop("name")
    code = c.prop("code")
    assert name is not None
    cols = [f"{lv.key_sql} AS id", f"{code.sql if code else 'NULL'} AS code", f"{name.sql} AS name",
            f"{lv.parent_code_sql or 'NULL'} AS parent_code", f"{lv.parent_name_sql or 'NULL'} AS parent_name",
            f"{lv.area_sql}::float8 AS area_m2", f"{lv.households_sql or 'NULL'}::int AS households",
            f"{c.fid} AS feature_id"]
    if lv.versioned:
        cols += ["h.version_id", "h.valid_from"]
    else:
        cols += ["NULL::int AS version_id", "NULL::timestamptz AS valid_from"]
    return ", ".join(cols)


def list_units(conn: Connection, level: str, scope: str | None, *, at: str | None = None, q: str | None = None,
               parent: str | None = None, bbox: str | None = None, limit: int | None = None,
               offset: int | None = None, tz: str = "Asia/Shanghai") -> dict:
    """{'items': [...], 'total': n, 'limit', 'offset', 'at'}: a page of the level's units in force at `at` (now)
    within the jurisdiction `scope`, searched by name or code (`q`) and a parent code prefix, in code (id) order."""
    lv = get_level(level)
    c = COLLECTIONS[lv.id]
    t = parse_at(at, tz)
    lim, off = check_paging(limit, offset)
    parent = check_prefix("parent", parent)
    q = _text("q", q)
    box = _bbox(bbox)
    params: dict[str, object] = {"t": t, "tz": tz}
    conds = c.time_conditions(When(instant=t))
    scope_sql = c.scope_condition(scope)
    if scope_sql:
        conds.append(scope_sql)
        params["scope"] = scope
    name_prop, code_prop = c.prop("name"), c.prop("code")
    assert name_prop is not None
    name_sql = name_prop.sql
    code_sql = code_prop.sql if code_prop else None
    if q:
        params["q"] = q
        search = [f"strpos(lower({name_sql}), lower(:q)) > 0"]
        if code_sql:
            search.append(f"starts_with({code_sql}, :q)")
        if not lv.versioned and q.isdigit():
            search.append(f"CAST({lv.key_sql} AS text) = :q")
        conds.append("(" + " OR ".join(search) + ")")
    if parent:
        prefix_of = code_sql if lv.versioned else lv.parent_code_sql
        conds.append(f"starts_with({prefix_of}, :parent)")
        params["parent"] = parent
    if box:
        env = "ST_MakeEnvelope(:bx0, :by0, :bx1, :by1, 4326)"
        conds += [f"{c.geom} && {env}", f"ST_Intersects({c.geom}, {env})"]
        params |= dict(zip(("bx0", "by0", "bx1", "by1"), box, strict=True))
    where = " AND ".join(conds) or "TRUE"
    order = f"{code_sql}, {lv.key_sql}" if lv.versioned else lv.key_sql
    rows = conn.execute(text(f"SELECT {_select(lv)} FROM {c.from_sql} WHERE {where} ORDER BY {order} "
                             "LIMIT :limit OFFSET :offset"), params | {"limit": lim, "offset": off}).mappings().all()
    if len(rows) < lim and (off == 0 or rows):
        total = off + len(rows)
    else:
        total = conn.execute(text(f"SELECT count(*) FROM {c.from_sql} WHERE {where}"), params).scalar_one()
    return {"items": [_unit_row(lv, r) for r in rows], "total": int(total), "limit": lim, "offset": off,
            "at": t.isoformat()}


def _unit_row(lv: Level, r) -> dict:
    return {"id": int(r["id"]), "code": r["code"], "name": r["name"], "level": lv.id,
            "parent_level": lv.parent_level, "parent_code": r["parent_code"], "parent_name": r["parent_name"],
            "area_m2": r["area_m2"], "households": r["households"], "version_id": r["version_id"],
            "valid_from": r["valid_from"].isoformat() if r["valid_from"] else None,
            "feature_id": int(r["feature_id"]) if r["feature_id"] is not None else None}


# -------------------------------------------------------------------------------------------------- one unit

#: The identity table of each unit level and the parent chain's joins from it (alias `u`).
_IDENTITY = {"streets": "streets", "communities": "communities", "grids": "grids", "micro_grids": "micro_grids"}
_CHAIN = {
    "streets": [],
    "communities": [("streets", "SELECT p.id, p.code FROM streets p WHERE p.id = :street_id")],
    "grids": [("communities", "SELECT p.id, p.code FROM communities p WHERE p.id = :community_id"),
              ("streets", "SELECT p.id, p.code FROM streets p JOIN communities c ON c.street_id = p.id "
                          "WHERE c.id = :community_id")],
    "micro_grids": [("grids", "SELECT p.id, p.code FROM grids p WHERE p.id = :grid_id"),
                    ("communities", "SELECT p.id, p.code FROM communities p JOIN grids g ON g.community_id = p.id "
                                    "WHERE g.id = :grid_id"),
                    ("streets", "SELECT p.id, p.code FROM streets p JOIN communities c ON c.street_id = p.id "
                                "JOIN grids g ON g.community_id = c.id WHERE g.id = :grid_id")],
}
_T = "CAST(:t AS timestamptz)"
#: Children counted in force at :t, per level, of the unit :id.
_CHILDREN = {
    "streets": {
        "communities": f"SELECT count(*) FROM communities_at({_T}) x WHERE x.street_id = :id",
        "grids": f"SELECT count(*) FROM grids_at({_T}) x JOIN communities c ON c.id = x.community_id "
                 "WHERE c.street_id = :id",
        "micro_grids": f"SELECT count(*) FROM micro_grids_at({_T}) x JOIN grids g ON g.id = x.grid_id "
                       "JOIN communities c ON c.id = g.community_id WHERE c.street_id = :id",
        "compounds": "SELECT count(*) FROM compounds k JOIN communities c ON c.id = k.community_id "
                     "WHERE c.street_id = :id",
        "buildings": "SELECT count(*) FROM buildings b JOIN communities c ON c.id = b.community_id "
                     "WHERE c.street_id = :id"},
    "communities": {
        "grids": f"SELECT count(*) FROM grids_at({_T}) x WHERE x.community_id = :id",
        "micro_grids": f"SELECT count(*) FROM micro_grids_at({_T}) x JOIN grids g ON g.id = x.grid_id "
                       "WHERE g.community_id = :id",
        "compounds": "SELECT count(*) FROM compounds k WHERE k.community_id = :id",
        "buildings": "SELECT count(*) FROM buildings b WHERE b.community_id = :id"},
    "grids": {
        "micro_grids": f"SELECT count(*) FROM micro_grids_at({_T}) x WHERE x.grid_id = :id",
        "buildings": f"SELECT count(*) FROM grids_at({_T}) h JOIN buildings b ON b.geom && h.geom "
                     "AND ST_Covers(h.geom, ST_PointOnSurface(b.geom)) WHERE h.id = :id"},
    "micro_grids": {
        "buildings": f"SELECT count(*) FROM micro_grids_at({_T}) h JOIN buildings b ON b.geom && h.geom "
                     "AND ST_Covers(h.geom, ST_PointOnSurface(b.geom)) WHERE h.id = :id"},
    "compounds": {"buildings": "SELECT count(*) FROM buildings b WHERE b.compound_id = :id"},
    "buildings": {"units": "SELECT count(*) FROM units u WHERE u.building_id = :id"},
}


def _parent_entry(conn: Connection, level: str, unit_id: int, code: str | None, t: dt.datetime) -> dict:
    name = conn.execute(text(f"SELECT {name_at(level, 'u')} FROM {_IDENTITY[level]} u WHERE u.id = :id"),
                        {"id": unit_id, "t": t}).scalar()
    return {"level": level, "id": unit_id, "code": code, "name": name}


def unit(conn: Connection, level: str, key: str, scope: str | None, *, at: str | None = None,
         geometry: bool = True, tz: str = "Asia/Shanghai") -> dict:
    """One unit (by code; compounds and buildings by id): its name and boundary at `at` (now), parents chain,
    children counts then, and every version of its boundary (who published it and why). UnitNotFound when it does
    not exist or lies outside `scope`."""
    lv = get_level(level)
    t = parse_at(at, tz)
    c = COLLECTIONS[lv.id]
    if lv.versioned:
        ident = conn.execute(text(f"SELECT * FROM {_IDENTITY[level]} WHERE code = :k"), {"k": key}).mappings().first()
    else:
        if not key.isdigit() or int(key) >= 2**31:
            raise UnitNotFound(f"there is no {level[:-1]} {key}")
        ident = conn.execute(text(f"SELECT * FROM {level} WHERE id = :k"), {"k": int(key)}).mappings().first()
    if ident is None:
        raise UnitNotFound(f"there is no {level[:-1]} {key}", level=level, key=key)
    uid = int(ident["id"])
    params: dict[str, object] = {"t": t, "tz": tz, "id": uid}
    # the unit's row in force at t (versioned) or the row itself, through the collection: its jurisdiction rule
    conds = [f"{lv.key_sql} = :id", *c.time_conditions(When(instant=t))]
    scope_sql = c.scope_condition(scope)
    if scope_sql:
        conds.append(scope_sql)
        params["scope"] = scope
    geom = f"CAST(ST_AsGeoJSON({c.geom}, 7) AS json) AS geometry" if geometry else "NULL AS geometry"
    row = conn.execute(text(f"SELECT {_select(lv)}, {geom} FROM {c.from_sql} WHERE {' AND '.join(conds)}"),
                       params).mappings().first()
    if row is None and scope and not lv.versioned:
        raise UnitNotFound(f"there is no {level[:-1]} {key} in your jurisdiction", level=level, key=key)
    if row is None and scope and lv.versioned and not str(ident["code"]).startswith(scope):
        raise UnitNotFound(f"there is no {level[:-1]} {key} in your jurisdiction", level=level, key=key)
    if row is not None:
        out = _unit_row(lv, row)
        out["geometry"] = row["geometry"]
        out["in_force"] = True
    else:
        # a unit with no boundary in force then (retired, or not yet drawn): its identity, no geometry
        out = {"id": uid, "code": ident.get("code"), "name": conn.execute(text(
            f"SELECT {name_at(level, 'u')} FROM {_IDENTITY[level]} u WHERE u.id = :id"), params).scalar(),
            "level": lv.id, "parent_level": lv.parent_level, "parent_code": None, "parent_name": None,
            "area_m2": None, "households": None, "version_id": None, "valid_from": None, "feature_id": None,
            "geometry": None, "in_force": False}
    out["at"] = t.isoformat()
    out["parents"] = _parents(conn, lv, ident, t)
    if out["parent_code"] is None and out["parents"]:
        out["parent_code"], out["parent_name"] = out["parents"][0]["code"], out["parents"][0]["name"]
    out["children"] = {k: int(conn.execute(text(sql), params).scalar_one()) for k, sql in _CHILDREN[level].items()}
    out["versions"] = _unit_versions(conn, level, uid) if lv.versioned else []
    return out


def _parents(conn: Connection, lv: Level, ident, t: dt.datetime) -> list[dict]:
    """The chain of parents, innermost first (a compound's or building's community and street)."""
    if lv.versioned:
        binds = {k: ident.get(k) for k in ("street_id", "community_id", "grid_id")}
        out = []
        for level, sql in _CHAIN[lv.id]:
            r = conn.execute(text(sql), binds).first()
            if r is not None:
                out.append(_parent_entry(conn, level, int(r[0]), r[1], t))
        return out
    out = []
    if lv.id == "buildings" and ident.get("compound_id") is not None:
        name = conn.execute(text("SELECT name FROM compounds WHERE id = :k"), {"k": ident["compound_id"]}).scalar()
        out.append({"level": "compounds", "id": int(ident["compound_id"]), "code": None, "name": name})
    if ident.get("community_id") is not None:
        r = conn.execute(text("SELECT c.id, c.code, s.id, s.code FROM communities c "
                              "JOIN streets s ON s.id = c.street_id WHERE c.id = :c"),
                         {"c": ident["community_id"]}).first()
        if r is not None:
            out.append(_parent_entry(conn, "communities", int(r[0]), r[1], t))
            out.append(_parent_entry(conn, "streets", int(r[2]), r[3], t))
    return out


def _unit_versions(conn: Connection, level: str, unit_id: int) -> list[dict]:
    """Every boundary row of the unit, newest first, with its version's label, note and author."""
    table = f"{level[:-1]}_boundaries" if level != "communities" else "community_boundaries"
    fk = f"{level[:-1]}_id" if level != "communities" else "community_id"
    name = "b.name" if level in NAMED_BOUNDARIES else "NULL"
    rows = conn.execute(text(f"""
        SELECT b.id AS feature_id, b.version_id, b.valid_from, b.valid_to, {name} AS name,
               v.label, v.note, v.created_by
        FROM {table} b JOIN boundary_versions v ON v.id = b.version_id
        WHERE b.{fk} = :id ORDER BY b.valid_from DESC
    """), {"id": unit_id}).mappings().all()
    return [{"feature_id": int(r["feature_id"]), "version_id": int(r["version_id"]),
             "valid_from": r["valid_from"].isoformat(),
             "valid_to": r["valid_to"].isoformat() if r["valid_to"] else None,
             "name": r["name"], "label": r["label"], "note": r["note"], "created_by": r["created_by"]}
            for r in rows]


# ---------------------------------------------------------------------------------------------- the versions

#: Every boundary row's start and end as (version, level, code, change): a row starts in its own version and ends
#: in the version whose valid_from is its valid_to.
_CHANGES = " UNION ALL ".join(
    f"SELECT h.version_id AS vid, '{lv}' AS level, h.code, 'started' AS change FROM {lv}_history h "
    f"UNION ALL SELECT v.id, '{lv}', h.code, 'ended' FROM {lv}_history h "
    "JOIN boundary_versions v ON v.valid_from = h.valid_to"
    for lv in ("streets", "communities", "grids", "micro_grids"))

_KIND = """CASE WHEN p.id IS NOT NULL AND p.label LIKE '回滚版本%' THEN 'rollback'
                WHEN p.id IS NOT NULL THEN 'plan'
                WHEN v.created_by = 'gridatlas demo' THEN 'demo'
                ELSE 'import' END"""

_LEVEL_KEYS = ("streets", "communities", "grids", "micro_grids")


def _version_query(where: str) -> str:
    counts = ", ".join(f"count(*) FILTER (WHERE ch.change = '{c}' AND ch.level = '{lv}') AS {c}_{lv}"
                       for c in ("started", "ended") for lv in _LEVEL_KEYS)
    return f"""
        WITH changes AS ({_CHANGES}),
        scoped AS (SELECT * FROM changes ch WHERE (CAST(:scope AS text) IS NULL OR starts_with(ch.code, :scope))
                   AND (CAST(:prefix AS text) IS NULL OR starts_with(ch.code, :prefix)))
        SELECT v.id, v.valid_from, v.label, v.note, v.created_by, v.created_at, {_KIND} AS kind,
               p.id AS plan_id, CAST((regexp_match(p.label, '^回滚版本 ([0-9]+)'))[1] AS int) AS rolls_back,
               (SELECT count(*) FROM scoped ch WHERE ch.vid = v.id) AS changes,
               {counts}, count(*) OVER () AS total
        FROM boundary_versions v
        LEFT JOIN LATERAL (SELECT p.id, p.label FROM plans p WHERE p.published_version_id = v.id
                           ORDER BY p.id LIMIT 1) p ON TRUE
        LEFT JOIN scoped ch ON ch.vid = v.id
        WHERE {where}
        GROUP BY v.id, p.id, p.label
        HAVING (CAST(:scope AS text) IS NULL AND CAST(:prefix AS text) IS NULL) OR count(ch.vid) > 0
        ORDER BY v.valid_from DESC, v.id DESC
    """


def _version_row(r) -> dict:
    return {"id": int(r["id"]), "kind": r["kind"], "valid_from": r["valid_from"].isoformat(), "label": r["label"],
            "note": r["note"], "created_by": r["created_by"], "created_at": r["created_at"].isoformat(),
            "plan_id": r["plan_id"], "rolls_back": r["rolls_back"], "changes": int(r["changes"]),
            "started": {lv: int(r[f"started_{lv}"]) for lv in _LEVEL_KEYS},
            "ended": {lv: int(r[f"ended_{lv}"]) for lv in _LEVEL_KEYS}}


def list_versions(conn: Connection, scope: str | None, *, unit: str | None = None, since: str | None = None,
                  until: str | None = None, limit: int | None = None, offset: int | None = None,
                  tz: str = "Asia/Shanghai") -> dict:
    """{'items': [...], 'total': n, 'limit', 'offset'}: boundary versions newest first that changed a unit in the
    jurisdiction `scope` (and whose code starts with `unit`), in force from within [since, until]."""
    lim, off = check_paging(limit, offset)
    prefix = check_prefix("unit", unit)
    t0 = _parse_bound("since", since, tz, True)
    t1 = _parse_bound("until", until, tz, False)
    if t0 and t1 and t0 > t1:
        raise InvalidBrowseQuery("since is after until")
    conds = ["(CAST(:t0 AS timestamptz) IS NULL OR v.valid_from >= CAST(:t0 AS timestamptz))",
             "(CAST(:t1 AS timestamptz) IS NULL OR v.valid_from <= CAST(:t1 AS timestamptz))"]
    rows = conn.execute(text(_version_query(" AND ".join(conds)) + " LIMIT :limit OFFSET :offset"),
                        {"scope": scope, "prefix": prefix, "t0": t0, "t1": t1, "limit": lim,
                         "offset": off}).mappings().all()
    if rows:
        total = int(rows[0]["total"])
    elif off == 0:
        total = 0
    else:
        total = conn.execute(text(f"SELECT count(*) FROM ({_version_query(' AND '.join(conds))}) x"),
                             {"scope": scope, "prefix": prefix, "t0": t0, "t1": t1}).scalar_one()
    return {"items": [_version_row(r) for r in rows], "total": int(total), "limit": lim, "offset": off}


def version(conn: Connection, version_id: int, scope: str | None) -> dict:
    """One boundary version with the units it started or ended (within `scope`); VersionNotFound when it does not
    exist or changed nothing in the jurisdiction."""
    if not 0 <= version_id < 2**31:
        raise VersionNotFound(f"there is no boundary version {version_id}", version_id=version_id)
    row = conn.execute(text(_version_query("v.id = :v")), {"v": version_id, "scope": scope,
                                                           "prefix": None}).mappings().first()
    if row is None:
        raise VersionNotFound(f"there is no boundary version {version_id} (or it changed nothing in your "
                              "jurisdiction)", version_id=version_id)
    out = _version_row(row)
    units = conn.execute(text(f"""
        SELECT ch.level, ch.code, ch.change FROM ({_CHANGES}) ch
        WHERE ch.vid = :v AND (CAST(:scope AS text) IS NULL OR starts_with(ch.code, :scope))
        ORDER BY ch.level, ch.code, ch.change LIMIT :n
    """), {"v": version_id, "scope": scope, "n": MAX_VERSION_UNITS + 1}).mappings().all()
    out["units"] = [dict(u) for u in units[:MAX_VERSION_UNITS]]
    out["units_truncated"] = len(units) > MAX_VERSION_UNITS
    return out
