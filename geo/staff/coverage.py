"""Staff coverage (人员覆盖): for every grid, building and unit, who is responsible and what is missing.

The chain of responsibility (网格长 → 楼栋长 → 单元长) and the "1+3+N" grid staffing are checked on a date: the
assignments in force that day and the boundaries in force at its close (a building belongs to the grid whose
boundary then covers it). SQL selects only the sets the scope holds (its grids; the buildings touching them or
registered in its communities, located by one set-based spatial join; their units; the assignments on them and the
other assignments of their stewards), so a grid costs a grid's work, not the district's; statuses are computed
column-wise over them with pandas (planner misestimates on chains of CTEs made one big query take seconds); totals
are sums over the rows. Reports are reused until a change to what they read commits (`geo.staff.coverage_cache`).

Statuses (worst first; an entity takes the first that applies):
- ``missing_role`` (缺岗): a required role is unfilled — a grid without a grid chief, a comprehensive grid (综合网格)
  without a full-time grid worker (a dedicated grid, 专属网格, is staffed by its institution), a
  building without a building head, a unit without a unit head or with households no steward serves. A building
  also takes the worst status of its units, so the map shows it.
- ``over_capacity`` (超负荷): a grid with more part-time workers than the rule allows or more households per
  full-time worker than a grid should hold; a unit served by a steward whose households (summed over all their
  assignments) exceed the maximum, or whose stewards together claim more households than the unit has.
- ``under_capacity`` (不足额): a comprehensive grid with fewer households per full-time worker than the minimum;
  a unit served by a steward with fewer households than the minimum.
- ``covered`` (已覆盖); ``empty`` (无住户) for a unit or building with no households (not counted in totals).

A steward's assignment to a whole building serves the building's households that unit-level stewards leave
unserved, unit by unit in number order. The numbers come from `get_settings().rules`.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from geo.errors import DomainError, Kind
from geo.io.codes import filter_lengths
from geo.settings import Rules, get_settings
from geo.staff.coverage_cache import ReportCache, reusable, watch_for
from geo.staff.register import ACTIVE_SQL, ROLE_LABELS, Allowed, phone_visible, today
from geo.store.load import parse_at, version_at

T = TypeVar("T")

STATUSES = ("missing_role", "over_capacity", "under_capacity", "covered", "empty")
STATUS_LABELS = {
    "missing_role": "缺岗", "over_capacity": "超负荷", "under_capacity": "不足额", "covered": "已覆盖",
    "empty": "无住户",
}
GRID_ROLES = ("grid_chief", "grid_worker_fulltime", "grid_worker_parttime", "volunteer", "seconded_cadre")


class CoverageError(DomainError, ValueError):
    """A coverage request that cannot be answered (inconsistent filter codes, a bad date)."""

    slug: ClassVar[str] = "validation-error"
    kind: ClassVar[Kind] = "invalid"
    title: ClassVar[str | None] = "Invalid request"


def scope_prefix(street: str | None = None, community: str | None = None, grid: str | None = None) -> str:
    """The most specific of the filter codes ('' for the whole district); they must nest."""
    codes = [(name, c.strip()) for name, c in (("street", street), ("community", community), ("grid", grid))
             if c and c.strip()]
    spans = filter_lengths()  # a declared scheme's codes too: 10-digit villages, 16-digit dedicated grids
    prefix = ""
    for name, code in codes:
        lo, hi = spans[f"{name}s" if name != "community" else "communities"]
        if not lo <= len(code) <= hi or not code.isdigit():
            raise CoverageError(f"{name} code {code!r} should be {lo if lo == hi else f'{lo}–{hi}'} digits")
        if not code.startswith(prefix):
            raise CoverageError(f"{name} {code} does not lie in {prefix}")
        prefix = code
    return prefix


def resolve_at(at: str | dt.date | dt.datetime | None) -> tuple[dt.datetime, dt.date]:
    """(instant for boundaries, date for assignments) of an `at` value; now/today when None."""
    if at is None or at == "":
        d = today()
        return dt.datetime.now(dt.UTC), d
    try:
        ts = parse_at(at, get_settings().timezone)
    except ValueError as exc:
        raise CoverageError(str(exc)) from exc
    assert ts is not None  # parse_at answers None only for an empty `at`, handled above
    return ts, ts.astimezone(ZoneInfo(get_settings().timezone)).date()


@dataclass
class CoverageReport:
    """The coverage of a scope on a date: one frame per level, steward loads and totals."""

    at: dt.date
    ts: dt.datetime
    prefix: str
    rules: dict
    version: dict | None
    grids: pd.DataFrame
    buildings: pd.DataFrame
    units: pd.DataFrame
    stewards: pd.DataFrame
    totals: dict = field(default_factory=dict)


_COLUMNS = {
    "grid": ["id", "code", "name", "kind", "community_code", "status", *GRID_ROLES, "people", "buildings",
             "households", "buildings_missing", "buildings_without_head", "units_without_head", "unserved"],
    "building": ["id", "code", "name", "compound_id", "use", "grid_id", "grid_code", "community_id",
                 "community_code", "scope_code", "status", "households", "units", "building_heads",
                 "units_without_head", "stewarded", "unserved", "people", "building_stewards"],
    "unit": ["id", "building_id", "building_code", "building_name", "scope_code", "number", "status",
             "households", "unit_heads", "stewarded", "steward_claims", "unserved", "over", "under", "people",
             "stewards"],
    "steward": ["id", "name", "households", "n_assignments", "status"],
}


#: Tables the coverage and planning queries join; without statistics PostgreSQL guesses a handful of rows for them
#: and picks nested loops that take seconds instead of milliseconds.
STAT_TABLES = ("staff_assignments", "people", "units", "buildings")


_STATS_CHECKED: dict[str, float] = {}
_STATS_RECHECK_S = 600.0


def ensure_statistics(conn: Connection) -> list[str]:
    """ANALYZE the tables above that were never analyzed (right after a bulk load); returns the tables analyzed."""
    key = conn.engine.url.render_as_string(hide_password=True)
    if time.monotonic() - _STATS_CHECKED.get(key, -1e9) < _STATS_RECHECK_S:
        return []
    stale = conn.execute(text(
        "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(:t) "
        "AND last_analyze IS NULL AND last_autoanalyze IS NULL AND n_live_tup + n_mod_since_analyze > 0"
    ), {"t": list(STAT_TABLES)}).scalars().all()
    for table in stale:
        conn.execute(text(f"ANALYZE {table}"))
    _STATS_CHECKED[key] = time.monotonic()
    return list(stale)


def _packed_frame(conn: Connection, sql: str, params: dict, columns: list[str], dtypes: dict,
                  quoted: tuple[str, ...] = ()) -> pd.DataFrame:
    """A query's rows as a DataFrame: the server joins them into one CSV text (`quoted` columns CSV-quoted, NULL
    as an empty field), so there is a single value to transfer and pandas' C reader parses it; ten times faster
    than a message, or Python objects, per row at district scale."""

    def field(c: str) -> str:
        if c in quoted:  # CSV quoting: the value in double quotes, inner quotes doubled
            return f"""CASE WHEN x.{c} IS NULL THEN '' ELSE '"' || replace(x.{c}, '"', '""') || '"' END"""
        return f"coalesce(CAST(x.{c} AS text), '')"

    packed = conn.execute(text(
        f"SELECT string_agg(concat_ws(',', {', '.join(field(c) for c in columns)}), E'\\n') FROM ({sql}) x"
    ), params).scalar()
    if not packed:
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in columns})
    return pd.read_csv(io.StringIO(packed), names=columns, header=None, dtype=dtypes, keep_default_na=False,
                       na_values=[""])


def _people_lists(rows: pd.DataFrame, key: str, names: dict, stewards: bool = False) -> pd.Series:
    """Per `key`, the list of {id, name, role} of its rows (ordered by role, then person id); for `stewards` also
    the households the assignment serves (as `hh` and `households`) and the steward's whole `load`."""
    if rows.empty:
        return pd.Series(dtype=object)
    keys = rows[key].to_numpy(dtype=np.int64)
    roles = rows["role"].to_numpy(dtype=object)
    pids = rows["person_id"].to_numpy(dtype=np.int64)
    order = np.lexsort((pids, pd.factorize(roles, sort=True)[0], keys))
    keys, roles, pids = keys[order], roles[order].tolist(), pids[order].tolist()
    get = names.get
    if stewards:  # one pass building the final dicts: tens of thousands of them at district scale
        hh = rows["hh"].to_numpy(dtype=np.int64)[order].tolist()
        load = rows["load"].to_numpy(dtype=np.int64)[order].tolist()
        items = [{"id": p, "name": get(p), "role": r, "hh": h, "load": ld, "households": h}
                 for p, r, h, ld in zip(pids, roles, hh, load, strict=True)]
    else:
        items = [{"id": p, "name": get(p), "role": r} for p, r in zip(pids, roles, strict=True)]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    groups = [items[i:j] for i, j in zip(starts.tolist(), ends.tolist(), strict=True)]
    return pd.Series(groups, index=keys[starts], dtype=object)


def _lists(index: pd.Index, lists: pd.Series) -> list:
    got = lists.reindex(index)
    return [v if isinstance(v, list) else [] for v in got.tolist()]


#: Candidate buildings of a scope (prefix not empty): those touching a grid of the scope, or registered in one of
#: its communities. A building's location (the grid covering its point on surface, ties to the smallest code) can
#: only be a grid it touches, so the candidates hold every building in scope and the final filter drops the rest.
_SCOPE_CANDIDATES = """
    WHERE b.id IN (
        SELECT bb.id FROM grids_at(CAST(:ts AS timestamptz)) g JOIN buildings bb ON ST_Intersects(g.geom, bb.geom)
        WHERE g.code LIKE :prefix || '%'
        UNION
        SELECT bb.id FROM buildings bb JOIN communities c ON c.id = bb.community_id WHERE c.code LIKE :prefix || '%')
"""


def _buildings(conn: Connection, params: dict, with_geometry: bool) -> pd.DataFrame:
    """The buildings in scope, each located in the grid in force covering its point on surface (the shared-edge
    rule of `grids_covering`: the smallest code), as one set-based join instead of a lookup per building."""
    scoped = _SCOPE_CANDIDATES if params["prefix"] else ""
    geom = ", ST_AsGeoJSON(pts.geom, 6) AS geometry" if with_geometry else ""
    cols = ["id", "code", "name", "compound_id", "use", "grid_id", "grid_code", "community_id", "community_code",
            "scope_code"] + (["geometry"] if with_geometry else [])
    return _packed_frame(conn, f"""
        WITH pts AS MATERIALIZED (
            SELECT b.id, b.code, b.name, b.compound_id, b.use, b.community_id, b.geom,
                   ST_PointOnSurface(b.geom) AS p
            FROM buildings b {scoped}
        ), loc AS (
            SELECT DISTINCT ON (pts.id) pts.id, g.id AS grid_id, g.code AS grid_code, g.community_id
            FROM pts JOIN grids_at(CAST(:ts AS timestamptz)) g ON ST_Covers(g.geom, pts.p)
            ORDER BY pts.id, g.code COLLATE "C"
        )
        SELECT * FROM (
            SELECT pts.id, pts.code, pts.name, pts.compound_id, pts.use, loc.grid_id, loc.grid_code,
                   bc.id AS community_id, bc.code AS community_code,
                   coalesce(loc.grid_code, bc.code) AS scope_code {geom}
            FROM pts LEFT JOIN loc ON loc.id = pts.id
            LEFT JOIN communities bc ON bc.id = coalesce(loc.community_id, pts.community_id)) y
        WHERE coalesce(scope_code, '') LIKE :prefix || '%'
    """, params, cols, {"id": "int64", "code": str, "name": str, "compound_id": "Int64", "use": str,
                        "grid_id": "Int64", "grid_code": str, "community_id": "Int64", "community_code": str,
                        "scope_code": str, "geometry": str}, quoted=("code", "name", "use", "geometry"))


_ACT_COLUMNS = ["id", "person_id", "role", "target_type", "grid_id", "micro_grid", "building_id", "unit_id",
                "households", "hh"]
_ACT_DTYPES = {"id": "int64", "person_id": "int64", "role": str, "target_type": str, "grid_id": "Int64",
               "micro_grid": str, "building_id": "Int64", "unit_id": "Int64", "households": "Int64", "hh": "int64"}


def _assignments(conn: Connection, params: dict, scoped: bool) -> pd.DataFrame:
    """The assignments in force on the day with the households each serves (`hh`: the count given, else the
    unit's, else the building's). Scoped: those on a grid, micro-grid, building or unit in scope, plus every
    steward assignment of a steward serving in scope (a steward's load counts all their assignments)."""
    a_cols = ("a.id, a.person_id, a.role, a.target_type, coalesce(a.grid_id, m.grid_id) AS grid_id, "
              "m.code AS micro_grid, a.building_id, a.unit_id, a.households")
    hh = "coalesce(a.households, CASE WHEN a.target_type = 'unit' THEN u.households ELSE bh.households END, 0)"
    if not scoped:
        return _packed_frame(conn, f"""
            SELECT {a_cols}, {hh} AS hh
            FROM staff_assignments a LEFT JOIN micro_grids m ON m.id = a.micro_grid_id
            LEFT JOIN units u ON u.id = a.unit_id
            LEFT JOIN (SELECT building_id, sum(households) AS households FROM units GROUP BY building_id) bh
                   ON bh.building_id = a.building_id
            WHERE {ACTIVE_SQL}
        """, params, _ACT_COLUMNS, _ACT_DTYPES)
    return _packed_frame(conn, f"""
        WITH here AS (  -- one index scan per kind of target (an OR of them would scan the whole table)
            SELECT a.id, a.person_id, a.role FROM staff_assignments a WHERE {ACTIVE_SQL} AND a.grid_id = ANY(:grids)
            UNION
            SELECT a.id, a.person_id, a.role FROM staff_assignments a
            WHERE {ACTIVE_SQL} AND a.micro_grid_id IN (SELECT id FROM micro_grids WHERE grid_id = ANY(:grids))
            UNION
            SELECT a.id, a.person_id, a.role FROM staff_assignments a
            WHERE {ACTIVE_SQL} AND a.building_id = ANY(:buildings)
            UNION
            SELECT a.id, a.person_id, a.role FROM staff_assignments a WHERE {ACTIVE_SQL} AND a.unit_id = ANY(:units)
        ), wanted AS (
            SELECT id FROM here
            UNION
            SELECT a.id FROM staff_assignments a
            WHERE {ACTIVE_SQL} AND a.role = 'steward'
              AND a.person_id IN (SELECT person_id FROM here WHERE role = 'steward')
        )
        SELECT {a_cols}, {hh} AS hh
        FROM staff_assignments a JOIN wanted w ON w.id = a.id
        LEFT JOIN micro_grids m ON m.id = a.micro_grid_id
        LEFT JOIN units u ON u.id = a.unit_id
        LEFT JOIN LATERAL (SELECT sum(x.households) AS households FROM units x WHERE x.building_id = a.building_id
                          ) bh ON a.building_id IS NOT NULL
    """, params, _ACT_COLUMNS, _ACT_DTYPES)


#: Reports kept per process, bounded by their rows (grids + buildings + units + stewards; `coverage_cache_rows`).
REPORTS = ReportCache(max_rows=get_settings().coverage_cache_rows)


def _grids_changed_between(conn: Connection, t0: dt.datetime, t1: dt.datetime) -> bool:
    """Whether some grid boundary starts or ends in (t0, t1]: the grids in force differ at the two instants."""
    if t0 == t1:
        return False
    a, b = min(t0, t1), max(t0, t1)
    return bool(conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM grid_boundaries WHERE (valid_from > :a AND valid_from <= :b) "
        "OR (valid_to > :a AND valid_to <= :b))"), {"a": a, "b": b}).scalar())


def _rows(report: CoverageReport) -> int:
    return len(report.grids) + len(report.buildings) + len(report.units) + len(report.stewards)


def coverage_report(conn: Connection, prefix: str = "", at: str | dt.date | dt.datetime | None = None,
                    rules: Rules | None = None, with_geometry: bool = False) -> CoverageReport:
    """Coverage of everything whose code starts with `prefix` ('' = the district) on `at` (today by default).

    SQL selects only what the scope holds (its grids, the buildings located in them by a set-based spatial join,
    their units, the assignments on them, and the other assignments of stewards serving there), so one grid
    costs one grid's work; the statuses are computed column-wise over those sets (no per-row queries). A report
    computed earlier is reused until a change to what it reads commits (`geo.staff.coverage_cache`).
    """
    rules = rules or get_settings().rules
    ts, d = resolve_at(at)
    key = (conn.engine.url.render_as_string(hide_password=True), prefix or "", d, with_geometry,
           rules.model_dump_json())
    watch = watch_for(conn) if REPORTS.max_rows and reusable(conn) else None
    generation = watch.sync() if watch is not None else None
    cached = REPORTS.get(key, generation)
    if cached is not None and not _grids_changed_between(conn, cached.ts, ts):
        return replace(cached, ts=ts, version=version_at(conn, ts))
    ensure_statistics(conn)  # (an ANALYZE writes only statistics: the report may still be kept)
    # JIT compilation costs more than it saves on these queries (tens of milliseconds on each of the large ones)
    # (set for this transaction only: a failure rolls it back with the transaction)
    jit = conn.execute(text("SELECT current_setting('jit')")).scalar()
    conn.execute(text("SELECT set_config('jit', 'off', true)"))
    report = _compute_report(conn, prefix or "", ts, d, rules, with_geometry)
    conn.execute(text("SELECT set_config('jit', :v, true)"), {"v": jit})
    if generation is not None:
        REPORTS.put(key, generation, report, _rows(report))
    return report


#: Values derived from reports (a page's data), kept like the reports themselves; their rows: grids + buildings.
VIEWS = ReportCache(max_rows=get_settings().coverage_cache_rows)


def derived_view(conn: Connection, name: str, prefix: str, at: str | dt.date | dt.datetime | None, audience: Any,
                 build: Callable[[CoverageReport], T]) -> T:
    """`build(report)` for the report of `prefix` on `at`, reused on the same terms as the report (nothing it reads
    changed since, same day, same grids in force); `audience` names what else the value depends on (whose phones it
    may show). Spares a page the report and the assembly of its data on every view."""
    rules = get_settings().rules
    ts, d = resolve_at(at)
    key = (conn.engine.url.render_as_string(hide_password=True), name, prefix or "", d, rules.model_dump_json(),
           audience)
    watch = watch_for(conn) if VIEWS.max_rows and reusable(conn) else None
    generation = watch.sync() if watch is not None else None
    cached = VIEWS.get(key, generation)
    if cached is not None and not _grids_changed_between(conn, cached[0], ts):
        return cached[1]
    report = coverage_report(conn, prefix, at, rules)
    value = build(report)
    if generation is not None:
        VIEWS.put(key, generation, (ts, value), len(report.grids) + len(report.buildings))
    return value


def _compute_report(conn: Connection, prefix: str, ts: dt.datetime, d: dt.date, rules: Rules,
                    with_geometry: bool) -> CoverageReport:
    """The report itself (see `coverage_report`)."""
    params: dict[str, Any] = {"ts": ts, "d": d, "prefix": prefix}
    smin, smax = rules.steward_households_min, rules.steward_households_max
    bs = _buildings(conn, params, with_geometry)
    geom_g = ", ST_AsGeoJSON(g.geom, 6) AS geometry" if with_geometry else ""
    gs = _packed_frame(conn, f"""
        SELECT g.id, g.code, g.name, g.kind, c.code AS community_code {geom_g}
        FROM grids_at(CAST(:ts AS timestamptz)) g LEFT JOIN communities c ON c.id = g.community_id
        WHERE g.code LIKE :prefix || '%'
    """, params, ["id", "code", "name", "kind", "community_code"] + (["geometry"] if with_geometry else []),
                       {"id": "int64", "code": str, "name": str, "kind": str, "community_code": str,
                        "geometry": str}, quoted=("code", "name", "kind", "community_code", "geometry"))
    unit_dtypes = {c: "int64" for c in ("id", "building_id", "number", "households")}
    if prefix:
        units = _packed_frame(conn, "SELECT id, building_id, number, households FROM units "
                                    "WHERE building_id = ANY(:buildings)",
                              {"buildings": bs["id"].tolist()}, list(unit_dtypes), unit_dtypes)
        act = _assignments(conn, params | {"grids": gs["id"].tolist(), "buildings": bs["id"].tolist(),
                                           "units": units["id"].tolist()}, scoped=True)
    else:
        units = _packed_frame(conn, "SELECT id, building_id, number, households FROM units", {},
                              list(unit_dtypes), unit_dtypes)
        act = _assignments(conn, params, scoped=False)
    # one JSON value rather than a row per person (tens of thousands of names at district scale)
    named = conn.execute(text(
        "SELECT json_agg(json_build_array(id, name)) FROM people WHERE id = ANY(:i)"
    ), {"i": act["person_id"].unique().tolist()}).scalar() if prefix else conn.execute(text(
        f"SELECT json_agg(json_build_array(p.id, p.name)) FROM people p "
        f"WHERE p.id IN (SELECT a.person_id FROM staff_assignments a WHERE {ACTIVE_SQL})"), params).scalar()
    names: dict[int, str] = {int(i): n for i, n in named or []}

    stew = act[act["role"] == "steward"]
    load = stew.groupby("person_id")["hh"].sum()
    n_assign = stew.groupby("person_id").size()

    # Units in scope.
    us = units[units["building_id"].isin(bs["id"])].sort_values(["building_id", "number"]).reset_index(drop=True)
    su = stew[(stew["target_type"] == "unit") & stew["unit_id"].isin(us["id"])]
    su = su.assign(load=su["person_id"].map(load))
    sb = stew[(stew["target_type"] == "building") & stew["building_id"].isin(bs["id"])].assign(
        load=lambda x: x["person_id"].map(load))
    su = su.assign(over=su["load"] > smax, under=su["load"] < smin)
    sb = sb.assign(over=sb["load"] > smax, under=sb["load"] < smin)
    ust = su.groupby("unit_id").agg(st_hh=("hh", "sum"), st_over=("over", "any"), st_under=("under", "any"))
    bst = sb.groupby("building_id").agg(pool=("hh", "sum"), b_over=("over", "any"), b_under=("under", "any"))
    other_u = act[(act["target_type"] == "unit") & (act["role"] != "steward") & act["unit_id"].isin(us["id"])]
    heads_u = other_u[other_u["role"] == "unit_head"].groupby("unit_id").size()

    u = us.rename(columns={"households": "households"})
    u["unit_st_hh"] = u["id"].map(ust["st_hh"]).fillna(0).astype(np.int64)
    u["remaining"] = (u["households"] - u["unit_st_hh"]).clip(lower=0)
    u["remaining_before"] = u.groupby("building_id")["remaining"].cumsum() - u["remaining"]
    pool = u["building_id"].map(bst["pool"]).fillna(0).astype(np.int64)
    u["from_building"] = np.minimum(u["remaining"], (pool - u["remaining_before"]).clip(lower=0))
    u["unit_heads"] = u["id"].map(heads_u).fillna(0).astype(np.int64)
    u["stewarded"] = np.minimum(u["households"], u["unit_st_hh"] + u["from_building"])
    u["steward_claims"] = u["unit_st_hh"] + u["from_building"]
    b_over = u["building_id"].map(bst["b_over"]).eq(True)
    b_under = u["building_id"].map(bst["b_under"]).eq(True)
    u["over"] = (u["id"].map(ust["st_over"]).eq(True) | (u["unit_st_hh"] > u["households"])
                 | ((u["from_building"] > 0) & b_over))
    u["under"] = u["id"].map(ust["st_under"]).eq(True) | ((u["from_building"] > 0) & b_under)
    u["unserved"] = u["households"] - u["stewarded"]
    u["status"] = np.select(
        [u["households"] == 0, (u["unit_heads"] == 0) | (u["stewarded"] < u["households"]), u["over"], u["under"]],
        ["empty", "missing_role", "over_capacity", "under_capacity"], "covered")
    u["people"] = _lists(pd.Index(u["id"]), _people_lists(other_u, "unit_id", names))
    u["stewards"] = _lists(pd.Index(u["id"]), _people_lists(su, "unit_id", names, stewards=True))
    binfo = bs.set_index("id")
    u["building_code"] = u["building_id"].map(binfo["code"])
    u["building_name"] = u["building_id"].map(binfo["name"])
    u["scope_code"] = u["building_id"].map(binfo["scope_code"])

    # Buildings: own head plus the worst status of their units.
    other_b = act[(act["target_type"] == "building") & (act["role"] != "steward") & act["building_id"].isin(bs["id"])]
    heads_b = other_b[other_b["role"] == "building_head"].groupby("building_id").size()
    g_u = u.groupby("building_id")
    bu = pd.DataFrame({
        "households": g_u["households"].sum(), "units": u["households"].gt(0).groupby(u["building_id"]).sum(),
        "units_without_head": (u["households"].gt(0) & u["unit_heads"].eq(0)).groupby(u["building_id"]).sum(),
        "unserved": g_u["unserved"].sum(), "stewarded": g_u["stewarded"].sum(),
        "any_over": u["status"].eq("over_capacity").groupby(u["building_id"]).any(),
        "any_under": u["status"].eq("under_capacity").groupby(u["building_id"]).any(),
        "any_missing": u["status"].eq("missing_role").groupby(u["building_id"]).any(),
    })
    b = bs.copy()
    for col in ("households", "units", "units_without_head", "unserved", "stewarded"):
        b[col] = b["id"].map(bu[col]).fillna(0).astype(np.int64)
    b["building_heads"] = b["id"].map(heads_b).fillna(0).astype(np.int64)
    flags = {k: b["id"].map(bu[k]).eq(True) for k in ("any_over", "any_under", "any_missing")}
    b["status"] = np.select(
        [b["households"] == 0, (b["building_heads"] == 0) | flags["any_missing"], flags["any_over"],
         flags["any_under"]], ["empty", "missing_role", "over_capacity", "under_capacity"], "covered")
    b["people"] = _lists(pd.Index(b["id"]), _people_lists(other_b, "building_id", names))
    b["building_stewards"] = _lists(pd.Index(b["id"]), _people_lists(sb, "building_id", names, stewards=True))

    # Grids: staff on the grid or its micro-grids, and the buildings located in it.
    ga = act[act["target_type"].isin(["grid", "micro_grid"]) & act["grid_id"].isin(gs["id"])]
    counts = ga.groupby(["grid_id", "role"])["person_id"].nunique().unstack(fill_value=0)
    g = gs.copy()
    for role in GRID_ROLES:
        g[role] = g["id"].map(counts[role]).fillna(0).astype(np.int64) if role in counts else 0
    g["people"] = _lists(pd.Index(g["id"]), _people_lists(ga, "grid_id", names))
    inb = b[b["grid_id"].notna()]
    by_grid = inb.groupby(inb["grid_id"].astype(np.int64))
    gb = pd.DataFrame({
        "buildings": inb["households"].gt(0).groupby(inb["grid_id"].astype(np.int64)).sum(),
        "households": by_grid["households"].sum(),
        "buildings_missing": inb["status"].eq("missing_role").groupby(inb["grid_id"].astype(np.int64)).sum(),
        "buildings_without_head": (inb["households"].gt(0) & inb["building_heads"].eq(0)).groupby(
            inb["grid_id"].astype(np.int64)).sum(),
        "units_without_head": by_grid["units_without_head"].sum(), "unserved": by_grid["unserved"].sum(),
    })
    for col in gb.columns:
        g[col] = g["id"].map(gb[col]).fillna(0).astype(np.int64)
    comp = g["kind"] == "comprehensive"
    g["status"] = np.select(
        [(g["grid_chief"] == 0) | (comp & (g["grid_worker_fulltime"] == 0)),
         (g["grid_worker_parttime"] > rules.grid_parttime_workers_max)
         | (comp & (g["households"] > g["grid_worker_fulltime"] * rules.grid_households_max)),
         comp & (g["households"] < g["grid_worker_fulltime"] * rules.grid_households_min)],
        ["missing_role", "over_capacity", "under_capacity"], "covered")

    # Stewards serving anything in scope, with their load summed over all their assignments.
    in_scope = sorted(set(su["person_id"].tolist()) | set(sb["person_id"].tolist()))
    stewards = pd.DataFrame({"id": in_scope, "name": [names.get(i) for i in in_scope],
                             "households": load.reindex(in_scope).fillna(0).astype(np.int64).to_numpy(),
                             "n_assignments": n_assign.reindex(in_scope).fillna(0).astype(np.int64).to_numpy()})
    stewards["status"] = np.select([stewards["households"] > smax, stewards["households"] < smin],
                                   ["over", "under"], "ok")

    frames = {"grid": g, "building": b, "unit": u, "steward": stewards}
    for level, cols in _COLUMNS.items():
        extra = ["geometry"] if with_geometry and level in ("grid", "building") else []
        frames[level] = frames[level][cols + extra]
    frames["grid"] = frames["grid"].sort_values("code", kind="stable").reset_index(drop=True)
    frames["building"] = frames["building"].sort_values(["scope_code", "id"], kind="stable").reset_index(drop=True)
    frames["unit"] = frames["unit"].sort_values(["building_id", "number"], kind="stable").reset_index(drop=True)
    frames["steward"] = frames["steward"].sort_values("id", kind="stable").reset_index(drop=True)
    report = CoverageReport(
        at=d, ts=ts, prefix=prefix, rules=rules.model_dump(), version=version_at(conn, ts),
        grids=frames["grid"], buildings=frames["building"], units=frames["unit"], stewards=frames["steward"],
    )
    report.totals = totals(report, rules)
    return report


def people_index(conn: Connection, report: CoverageReport, allowed: Allowed) -> dict[str, dict]:
    """Everyone the report names, by id: name, party membership, and the phone only where `phone_visible` (on the
    public board, or `allowed` covers a grid, building or unit of the report the person serves)."""
    codes: dict[int, set[str]] = {}

    def add(people, code) -> None:
        for p in people or []:
            codes.setdefault(int(p["id"]), set()).add(code)

    for r in report.grids.itertuples():
        add(r.people, r.code)
    for r in report.buildings.itertuples():
        add(r.people, r.scope_code)
        add(r.building_stewards, r.scope_code)
    for r in report.units.itertuples():
        add(r.people, r.scope_code)
        add(r.stewards, r.scope_code)
    if not codes:
        return {}
    rows = conn.execute(text("SELECT id, name, phone, phone_public, party_member FROM people WHERE id = ANY(:i)"),
                        {"i": list(codes)}).mappings().all()
    return {str(r["id"]): {"name": r["name"],
                           "phone": r["phone"] if phone_visible(r["phone_public"], codes[r["id"]], allowed) else None,
                           "phone_public": r["phone_public"], "party_member": r["party_member"]}
            for r in rows}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def totals(report: CoverageReport, rules: Rules | None = None) -> dict:
    """The headline figures: shares of comprehensive grids with a full-time worker, buildings and units (with
    households) with a head, households with a steward; stewards over and under the rule; counts of each status."""
    rules = rules or get_settings().rules
    g, b, u, s = report.grids, report.buildings, report.units, report.stewards
    comp = g["kind"] == "comprehensive"
    bh = b[b["households"] > 0]
    uh = u[u["households"] > 0]
    households = int(uh["households"].sum())
    stewarded = int(uh["stewarded"].sum())
    out: dict[str, Any] = {
        "grids": len(g),
        "comprehensive_grids": int(comp.sum()),
        "grids_with_fulltime_worker": int(((g["grid_worker_fulltime"] > 0) & comp).sum()),
        "grids_with_grid_chief": int((g["grid_chief"] > 0).sum()),
        "buildings": len(bh),
        "buildings_with_head": int((bh["building_heads"] > 0).sum()),
        "units": len(uh),
        "units_with_head": int((uh["unit_heads"] > 0).sum()),
        "households": households,
        "households_with_steward": stewarded,
        "stewards": len(s),
        "stewards_over": int((s["status"] == "over").sum()),
        "stewards_under": int((s["status"] == "under").sum()),
        "buildings_outside_grids": int((bh["grid_id"].isna()).sum()),
    }
    out["share_grids_with_fulltime_worker"] = _share(out["grids_with_fulltime_worker"], out["comprehensive_grids"])
    out["share_buildings_with_head"] = _share(out["buildings_with_head"], out["buildings"])
    out["share_units_with_head"] = _share(out["units_with_head"], out["units"])
    out["share_households_with_steward"] = _share(stewarded, households)
    out["status_counts"] = {
        level: {st: int((frame["status"] == st).sum()) for st in STATUSES if st != "empty" or level != "grid"}
        for level, frame in (("grid", g), ("building", b), ("unit", u))
    }
    out["steward_households_min"] = rules.steward_households_min
    out["steward_households_max"] = rules.steward_households_max
    return out


def _names(people, roles: tuple[str, ...] | None = None) -> str:
    people = people if isinstance(people, list) else []
    return "、".join(f"{p['name']}({ROLE_LABELS.get(p['role'], p['role'])})" for p in people
                    if roles is None or p["role"] in roles)


def grid_problems(row, rules: dict) -> list[str]:
    """What a grid lacks or has too much of (roles, part-timers, households per full-time worker), in Chinese."""
    out = []
    if row["grid_chief"] == 0:
        out.append("缺网格长")
    if row["grid_worker_fulltime"] == 0 and row["kind"] == "comprehensive":
        out.append("缺专职网格员")
    if row["grid_worker_parttime"] > rules["grid_parttime_workers_max"]:
        out.append(f"兼职网格员{row['grid_worker_parttime']}名，超过{rules['grid_parttime_workers_max']}名")
    if row["kind"] == "comprehensive" and row["grid_worker_fulltime"] > 0:
        per = row["households"] / row["grid_worker_fulltime"]
        if per > rules["grid_households_max"]:
            out.append(f"每名专职网格员{per:.0f}户，超过{rules['grid_households_max']}户")
        elif per < rules["grid_households_min"]:
            out.append(f"每名专职网格员{per:.0f}户，少于{rules['grid_households_min']}户")
    return out


def gaps(report: CoverageReport) -> pd.DataFrame:
    """One row per gap for the community office to act on (缺岗、超负荷、不足额): level, codes, what, who."""
    rules = report.rules
    rows: list[dict] = []
    for r in report.grids.to_dict("records"):
        if r["status"] == "covered":
            continue
        problems = grid_problems(r, rules)
        rows.append({"level": "网格", "status": STATUS_LABELS[r["status"]], "community_code": r["community_code"],
                     "grid_code": r["code"], "name": r["name"], "building_code": None, "unit": None,
                     "households": r["households"], "problem": "；".join(problems), "responsible": _names(r["people"])})
    for r in report.buildings.to_dict("records"):
        if r["households"] > 0 and r["building_heads"] == 0:
            rows.append({"level": "楼栋", "status": STATUS_LABELS["missing_role"],
                         "community_code": r["community_code"], "grid_code": r["grid_code"], "name": r["name"],
                         "building_code": r["code"], "unit": None, "households": r["households"],
                         "problem": "缺楼栋长", "responsible": _names(r["people"])})
    smin, smax = rules["steward_households_min"], rules["steward_households_max"]
    bld = report.buildings.set_index("id")
    for r in report.units.to_dict("records"):
        if r["status"] in ("covered", "empty"):
            continue
        problems = []
        if r["unit_heads"] == 0:
            problems.append("缺单元长")
        if r["unserved"] > 0:
            problems.append(f"{r['unserved']}户无管家")
        if r["steward_claims"] > r["households"]:
            problems.append(f"管家认领{r['steward_claims']}户，多于本单元{r['households']}户")
        for s in r["stewards"]:
            if s["load"] > smax:
                problems.append(f"管家{s['name']}共服务{s['load']}户，超过{smax}户")
            elif s["load"] < smin:
                problems.append(f"管家{s['name']}共服务{s['load']}户，少于{smin}户")
        b = bld.loc[r["building_id"]] if r["building_id"] in bld.index else None
        rows.append({"level": "单元", "status": STATUS_LABELS[r["status"]],
                     "community_code": None if b is None else b["community_code"],
                     "grid_code": None if b is None else b["grid_code"], "name": r["building_name"],
                     "building_code": r["building_code"], "unit": r["number"], "households": r["households"],
                     "problem": "；".join(problems),
                     "responsible": "、".join(filter(None, [_names(r["people"]), _names(r["stewards"])]))})
    cols = ["level", "status", "community_code", "grid_code", "name", "building_code", "unit", "households",
            "problem", "responsible"]
    return pd.DataFrame(rows, columns=cols)


GAP_HEADERS_ZH = {"level": "层级", "status": "状态", "community_code": "社区编码", "grid_code": "网格编码",
                  "name": "名称", "building_code": "楼栋编码", "unit": "单元", "households": "户数",
                  "problem": "问题", "responsible": "现有责任人"}


def gaps_csv(report: CoverageReport) -> bytes:
    """The gaps as CSV (UTF-8 with BOM so Excel opens the Chinese headers correctly)."""
    return gaps(report).rename(columns=GAP_HEADERS_ZH).to_csv(index=False).encode("utf-8-sig")


def gaps_xlsx(report: CoverageReport) -> bytes:
    """The gaps as an XLSX workbook: sheet 缺口 (gaps) and sheet 汇总 (totals)."""
    import io

    buf = io.BytesIO()
    t = report.totals
    summary = pd.DataFrame([
        ("日期", str(report.at)), ("范围", report.prefix or "全区"),
        ("网格数", t["grids"]), ("综合网格数", t["comprehensive_grids"]),
        ("有专职网格员的综合网格", t["grids_with_fulltime_worker"]),
        ("楼栋数", t["buildings"]), ("有楼栋长的楼栋", t["buildings_with_head"]),
        ("单元数", t["units"]), ("有单元长的单元", t["units_with_head"]),
        ("户数", t["households"]), ("有管家的户数", t["households_with_steward"]),
        ("管家人数", t["stewards"]), (f"超过{t['steward_households_max']}户的管家", t["stewards_over"]),
        (f"少于{t['steward_households_min']}户的管家", t["stewards_under"]),
    ], columns=["指标", "数值"])
    with pd.ExcelWriter(buf, engine="openpyxl") as xl:
        gaps(report).rename(columns=GAP_HEADERS_ZH).to_excel(xl, sheet_name="缺口", index=False)
        summary.to_excel(xl, sheet_name="汇总", index=False)
    return buf.getvalue()
