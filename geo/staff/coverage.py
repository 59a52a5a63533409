"""Staff coverage (人员覆盖): for every grid, building and unit, who is responsible and what is missing.

The chain of responsibility (网格长 → 楼栋长 → 单元长) and the "1+3+N" grid staffing are checked on a date: the
assignments in force that day and the boundaries in force at its close (a building belongs to the grid whose
boundary then covers it). SQL selects the sets (buildings located by a spatial join, units, assignments in force);
statuses are computed column-wise over them with pandas (planner misestimates on chains of CTEs made one big query
take seconds); totals are sums over the rows.

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
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from geo.errors import DomainError, Kind
from geo.settings import Rules, get_settings
from geo.staff.register import ACTIVE_SQL, BUILDING_LOCATION_SQL, ROLE_LABELS, Allowed, phone_visible, today
from geo.store.load import parse_at, version_at

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
    lengths = {"street": 9, "community": 12, "grid": 15}
    prefix = ""
    for name, code in codes:
        if len(code) != lengths[name] or not code.isdigit():
            raise CoverageError(f"{name} code {code!r} should be {lengths[name]} digits")
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


_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def _frame(conn: Connection, sql: str, params: dict, columns: list[str], dtypes: dict | None = None) -> pd.DataFrame:
    """A query's rows as a DataFrame, streamed with COPY … TO STDOUT as CSV and parsed by pandas' C reader.

    Ten times faster than building rows in Python at district scale; parameters are inlined as literals by
    psycopg's client-side quoting (never by string formatting).
    """
    import psycopg

    raw = conn.connection.driver_connection
    assert raw is not None  # a checked-out connection always holds its psycopg connection
    query = psycopg.ClientCursor(raw).mogrify(_PARAM.sub(r"%(\1)s", sql.replace("%", "%%")), params)
    buf = io.BytesIO()
    with raw.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as copy:
        for chunk in copy:
            buf.write(chunk)
    buf.seek(0)
    if buf.getbuffer().nbytes == 0:
        return pd.DataFrame({c: pd.Series(dtype=(dtypes or {}).get(c, object)) for c in columns})
    return pd.read_csv(buf, names=columns, header=None, dtype=dtypes or None, keep_default_na=False,
                       na_values=[""])


def _packed_frame(conn: Connection, sql: str, params: dict, columns: list[str], dtypes: dict) -> pd.DataFrame:
    """Like `_frame` for rows of numbers, codes and enum names only (no commas or quotes inside values): the
    server joins them into one CSV text, so there is a single value to transfer instead of a message per row."""
    packed = conn.execute(text(
        f"SELECT string_agg(concat_ws(',', {', '.join(f'x.{c}' for c in columns)}), E'\\n') FROM ({sql}) x"
    ), params).scalar()
    if not packed:
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in columns})
    # concat_ws skips NULLs, so NULLs are written as empty fields by coalescing to '' first (see callers).
    return pd.read_csv(io.StringIO(packed), names=columns, header=None, dtype=dtypes, keep_default_na=False,
                       na_values=[""])


def _people_lists(rows: pd.DataFrame, key: str, names: dict, extra: tuple[str, ...] = ()) -> pd.Series:
    """Per `key`, the list of {id, name, role, *extra} of its rows (ordered by role, then person id)."""
    if rows.empty:
        return pd.Series(dtype=object)
    keys = rows[key].to_numpy(dtype=np.int64)
    roles = rows["role"].to_numpy(dtype=object)
    pids = rows["person_id"].to_numpy(dtype=np.int64)
    order = np.lexsort((pids, pd.factorize(roles, sort=True)[0], keys))
    keys, roles, pids = keys[order], roles[order].tolist(), pids[order].tolist()
    values = [rows[c].to_numpy(dtype=np.int64)[order].tolist() for c in extra]  # callers pass filled ints
    items = [{"id": p, "name": names.get(p), "role": r} for p, r in zip(pids, roles, strict=True)]
    for k, vals in zip(extra, values, strict=True):
        for item, v in zip(items, vals, strict=True):
            item[k] = v
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    groups = [items[i:j] for i, j in zip(starts.tolist(), ends.tolist(), strict=True)]
    return pd.Series(groups, index=keys[starts], dtype=object)


def _lists(index: pd.Index, lists: pd.Series) -> list:
    got = lists.reindex(index)
    return [v if isinstance(v, list) else [] for v in got.tolist()]


def coverage_report(conn: Connection, prefix: str = "", at: str | dt.date | dt.datetime | None = None,
                    rules: Rules | None = None, with_geometry: bool = False) -> CoverageReport:
    """Coverage of everything whose code starts with `prefix` ('' = the district) on `at` (today by default).

    SQL selects the units in scope (buildings located in the grids in force, by a spatial join) and the
    assignments in force; the statuses are computed column-wise over those sets (no per-row queries).
    """
    rules = rules or get_settings().rules
    ts, d = resolve_at(at)
    ensure_statistics(conn)
    params = {"ts": ts, "d": d, "prefix": prefix or ""}
    smin, smax = rules.steward_households_min, rules.steward_households_max
    geom_b = ", ST_AsGeoJSON(b.geom, 6)" if with_geometry else ""
    bcols = ["id", "code", "name", "compound_id", "use", "grid_id", "grid_code", "community_id", "community_code",
             "scope_code"] + (["geometry"] if with_geometry else [])
    bs = _frame(conn, f"""
        SELECT * FROM (
            SELECT b.id, b.code, b.name, b.compound_id, b.use, loc.grid_id, loc.grid_code, bc.id, bc.code,
                   coalesce(loc.grid_code, bc.code) AS scope_code {geom_b}
            FROM buildings b {BUILDING_LOCATION_SQL}) x
        WHERE coalesce(scope_code, '') LIKE :prefix || '%'
    """, params, bcols, {"id": "int64", "code": str, "name": str, "compound_id": "Int64", "use": str,
                         "grid_id": "Int64", "grid_code": str, "community_id": "Int64", "community_code": str,
                         "scope_code": str, "geometry": str})
    units = _packed_frame(conn, "SELECT id, building_id, number, households FROM units", {},
                   ["id", "building_id", "number", "households"], {c: "int64" for c in ("id", "building_id",
                                                                                        "number", "households")})
    act = _packed_frame(conn, f"""
        SELECT a.id, a.person_id, a.role, a.target_type,
               coalesce(CAST(coalesce(a.grid_id, m.grid_id) AS text), '') AS grid_id,
               coalesce(m.code, '') AS micro_grid, coalesce(CAST(a.building_id AS text), '') AS building_id,
               coalesce(CAST(a.unit_id AS text), '') AS unit_id, coalesce(CAST(a.households AS text), '') AS households
        FROM staff_assignments a LEFT JOIN micro_grids m ON m.id = a.micro_grid_id WHERE {ACTIVE_SQL}
    """, params, ["id", "person_id", "role", "target_type", "grid_id", "micro_grid", "building_id", "unit_id",
                  "households"], {"id": "int64", "person_id": "int64", "role": str, "target_type": str,
                                  "grid_id": "Int64", "micro_grid": str, "building_id": "Int64", "unit_id": "Int64",
                                  "households": "Int64"})
    geom_g = ", ST_AsGeoJSON(g.geom, 6)" if with_geometry else ""
    gs = _frame(conn, f"""
        SELECT g.id, g.code, g.name, g.kind, c.code {geom_g}
        FROM grids_at(CAST(:ts AS timestamptz)) g LEFT JOIN communities c ON c.id = g.community_id
        WHERE g.code LIKE :prefix || '%'
    """, params, ["id", "code", "name", "kind", "community_code"] + (["geometry"] if with_geometry else []),
                {"id": "int64", "code": str, "name": str, "kind": str, "community_code": str, "geometry": str})
    ids = sorted(set(act["person_id"].astype(int).tolist()))
    names: dict[int, str] = (
        {r.id: r.name for r in conn.execute(text("SELECT id, name FROM people WHERE id = ANY(:i)"), {"i": ids})}
        if ids else {})

    # Households each assignment serves: a unit's (or the given count), a building's (or the given count).
    unit_hh = units.set_index("id")["households"]
    bhh = units.groupby("building_id")["households"].sum()
    act["hh"] = np.where(act["target_type"] == "unit", act["unit_id"].map(unit_hh),
                         act["building_id"].map(bhh).fillna(0))
    act["hh"] = act["households"].where(act["households"].notna(), act["hh"]).fillna(0).astype(np.int64)
    stew = act[act["role"] == "steward"]
    load = stew.groupby("person_id")["hh"].sum()
    n_assign = stew.groupby("person_id").size()
    act["load"] = act["person_id"].map(load)

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
    u["stewards"] = _lists(pd.Index(u["id"]), _people_lists(su, "unit_id", names, ("hh", "load")))
    u["stewards"] = [[{**s_, "households": s_.pop("hh")} for s_ in lst] for lst in u["stewards"]]
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
    b["building_stewards"] = _lists(pd.Index(b["id"]), _people_lists(sb, "building_id", names, ("hh", "load")))
    b["building_stewards"] = [[{**s_, "households": s_.pop("hh")} for s_ in lst] for lst in b["building_stewards"]]

    # Grids: staff on the grid or its micro-grids, and the buildings located in it.
    ga = act[act["target_type"].isin(["grid", "micro_grid"]) & act["grid_id"].isin(gs["id"])]
    counts = ga.groupby(["grid_id", "role"])["person_id"].nunique().unstack(fill_value=0)
    g = gs.copy()
    for role in GRID_ROLES:
        g[role] = g["id"].map(counts[role]).fillna(0).astype(np.int64) if role in counts else 0
    g["people"] = _lists(pd.Index(g["id"]), _people_lists(ga, "grid_id", names, ()))
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
        at=d, ts=ts, prefix=prefix or "", rules=rules.model_dump(), version=version_at(conn, ts),
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
