"""The figures of a leader's home page (首页): the jurisdiction by name and the few numbers that say how it is doing.

Each figure comes from the concept that owns it, limited to the caller's jurisdiction (a code prefix; None is the
whole district): staff coverage (`geo.staff.coverage`), the closed-loop KPIs of this month and last month
(`geo.incidents.kpi`), the compound-versus-grid classes (`geo.classify.classification`). Only the counts of units
and open incidents are read here.
"""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from geo.access.users import LEVEL_BY_CODE_LENGTH, TABLE_BY_LEVEL
from geo.errors import DomainError
from geo.features.collections import name_at

LEVEL_ZH = {"district": "全区", "street": "街道", "community": "社区", "grid": "网格"}
CLASS_ORDER = ("same", "larger", "smaller", "straddling", "outside")


def _name(conn: Connection, level: str, code: str, at: dt.datetime | None) -> str | None:
    """The name of a unit in force at `at` (now when None): a grid's is kept with its boundary versions."""
    table = TABLE_BY_LEVEL[level]
    # the clock, not now(): now() is when the transaction began, before a rename published in it
    return conn.execute(text(f"SELECT {name_at(table, 'u', 'CAST(:at AS timestamptz)')} FROM {table} u "
                             "WHERE u.code = :c"), {"c": code, "at": at or dt.datetime.now(dt.UTC)}).scalar()


def jurisdiction(conn: Connection, scope: str | None, at: dt.datetime | None = None) -> dict:
    """{'code', 'level', 'level_zh', 'name'} of a jurisdiction (the district when None) as named at `at` (now when
    None); its parents' names too."""
    if not scope:
        return {"code": None, "level": "district", "level_zh": LEVEL_ZH["district"], "name": "全区",
                "parents": []}
    level = LEVEL_BY_CODE_LENGTH.get(len(scope), "grid")
    name = _name(conn, level, scope, at)
    parents = []
    for n, lv in ((9, "street"), (12, "community")):
        if len(scope) > n:
            parents.append({"code": scope[:n], "level": lv, "name": _name(conn, lv, scope[:n], at)})
    return {"code": scope, "level": level, "level_zh": LEVEL_ZH[level], "name": name or scope, "parents": parents}


def unit_counts(conn: Connection, scope: str | None) -> dict:
    """Streets, communities, grids and micro-grids in force now whose code lies in the jurisdiction."""
    row = conn.execute(text(
        "SELECT (SELECT count(*) FROM current_streets WHERE starts_with(code, :p)), "
        "(SELECT count(*) FROM current_communities WHERE starts_with(code, :p)), "
        "(SELECT count(*) FROM current_grids WHERE starts_with(code, :p)), "
        "(SELECT count(*) FROM current_micro_grids WHERE starts_with(code, :p))"), {"p": scope or ""}).one()
    return dict(zip(("streets", "communities", "grids", "micro_grids"), (int(v) for v in row), strict=True))


def open_incidents(conn: Connection, scope: str | None) -> dict:
    """Open incidents now (state not closed, rejected or cancelled) and how many are past their deadline (red)."""
    from geo.incidents.closed_loop import light_sql

    row = conn.execute(text(
        f"SELECT count(*), count(*) FILTER (WHERE {light_sql('i')} = 'red') FROM incidents i "
        "JOIN incident_states st ON st.code = i.state AND st.is_open "
        "LEFT JOIN grids g ON g.id = i.grid_id LEFT JOIN communities c ON c.id = i.community_id "
        "LEFT JOIN streets s ON s.id = i.street_id "
        "WHERE starts_with(coalesce(g.code, c.code, s.code, ''), :p)"), {"p": scope or ""}).one()
    return {"open": int(row[0]), "overdue": int(row[1])}


def _month_start(t: dt.datetime) -> dt.datetime:
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def kpis(conn: Connection, scope: str | None, tz: str, now: dt.datetime | None = None) -> dict:
    """按期结案率 and 结案率 this month so far and all of last month (for the trend), with their counts."""
    from geo.incidents.kpi import KpiQuery, compute_kpis

    now = now or dt.datetime.now(ZoneInfo(tz))
    this_month = _month_start(now)
    last_month = _month_start(this_month - dt.timedelta(days=1))
    out = {}
    for key, (start, end) in {"this_month": (this_month, now), "last_month": (last_month, this_month)}.items():
        total = compute_kpis(conn, KpiQuery(start=start, end=end, scope=scope, timezone=tz))["total"]
        out[key] = {"month": start.strftime("%Y-%m"), "due": int(total["due"]), "closed": int(total["closed"]),
                    "closed_on_time": int(total["closed_on_time"]), "on_time_rate": total["on_time_rate"],
                    "closure_rate": total["closure_rate"]}
    return out


def coverage(conn: Connection, scope: str | None) -> dict:
    """Staff coverage today: grids by status, the share of comprehensive grids with a full-time grid worker, of
    buildings with a building head and of households with a steward."""
    from geo.staff.coverage import coverage_report

    totals = coverage_report(conn, scope or "").totals
    grid_status = totals["status_counts"]["grid"]
    return {
        "grids": totals["grids"],
        "grids_covered": grid_status.get("covered", 0),
        "grids_with_gaps": grid_status.get("missing_role", 0),
        "grids_over_capacity": grid_status.get("over_capacity", 0),
        "grids_under_capacity": grid_status.get("under_capacity", 0),
        "share_grids_with_fulltime_worker": totals["share_grids_with_fulltime_worker"],
        "share_buildings_with_head": totals["share_buildings_with_head"],
        "share_households_with_steward": totals["share_households_with_steward"],
    }


def compound_classes(conn: Connection, scope: str | None) -> dict | None:
    """Compounds per class against the grids in force (computed first when stale); None without boundaries."""
    from geo.classify import classification as gc

    try:
        run = gc.ensure_classification(conn, "grid", None, gc.get_rules())
    except DomainError:
        return None
    rows = gc.read_results(conn, run["version"]["id"], "grid", jurisdiction=scope)
    counts = rows["class"].value_counts() if len(rows) else {}
    return {c: int(counts.get(c, 0)) for c in CLASS_ORDER}


def overview(conn: Connection, scope: str | None, tz: str = "Asia/Shanghai") -> dict:
    """Everything the home page shows, for the jurisdiction `scope` (None: the whole district)."""
    from geo.store.load import version_at

    version = version_at(conn)
    return {
        "jurisdiction": jurisdiction(conn, scope),
        "version": version and {"id": version["id"], "label": version["label"],
                                "valid_from": version["valid_from"].isoformat()},
        "units": unit_counts(conn, scope),
        "coverage": coverage(conn, scope),
        "incidents": open_incidents(conn, scope),
        "kpi": kpis(conn, scope, tz),
        "compound_classes": compound_classes(conn, scope),
    }


def warm(engine: Engine, tz: str = "Asia/Shanghai", streets: bool = True, lock_timeout_s: float = 5.0
         ) -> dict[str, float]:
    """Gather the district's figures once (预热) so a leader's first home page after a start or a load finds them
    ready: the coverage reports of the district and (`streets`) of each street enter this process's report cache,
    the classification run is stored when missing or stale. Returns seconds per figure.

    Nothing is kept that a request would not have kept itself: the report is reused only until a change to what it
    reads commits (`geo.staff.coverage_cache`), the stored run only while its inputs hash matches.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with engine.connect() as conn:  # read only: the report may enter the cache (reusable transaction)
        coverage(conn, None)
        timings["coverage_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        kpis(conn, None, tz)
        open_incidents(conn, None)
        timings["kpi_incidents_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with engine.begin() as conn:
        # a request computing the same run holds its lock: wait a little, then leave the run to that request
        conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": f"{int(lock_timeout_s * 1000)}ms"})
        compound_classes(conn, None)
    timings["compound_classes_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if streets:  # a street leader's home page and a street's printable summary read the street's report
        with engine.connect() as conn:
            for code in conn.execute(text("SELECT code FROM current_streets ORDER BY code")).scalars().all():
                coverage(conn, code)
    timings["street_coverage_s"] = time.perf_counter() - t0
    return timings


def keep_ready(engine: Engine) -> bool:
    """Keep this process's coverage change watch listening (保温), so the reports `warm` cached stay usable while no
    one asks for a while: a watch unused for a minute ends, and reports stored under it are never served again.
    Returns whether the watch answered (a report stays reusable only until a change to what it reads commits)."""
    from geo.staff.coverage_cache import watch_for

    with engine.connect() as conn:
        watch = watch_for(conn)
    return watch is not None and watch.sync() is not None
