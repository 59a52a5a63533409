"""The figures of a leader's home page (首页): the jurisdiction by name and the few numbers that say how it is doing.

Each figure comes from the concept that owns it, limited to the caller's jurisdiction (a code prefix; None is the
whole district): staff coverage (`geo.staff.coverage`), the closed-loop KPIs of this month and last month
(`geo.incidents.kpi`), the compound-versus-grid classes (`geo.classify.classification`). Only the counts of units
and open incidents are read here.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from geo.access.users import LEVEL_BY_CODE_LENGTH, TABLE_BY_LEVEL
from geo.errors import DomainError

LEVEL_ZH = {"district": "全区", "street": "街道", "community": "社区", "grid": "网格"}
CLASS_ORDER = ("same", "larger", "smaller", "straddling", "outside")


def jurisdiction(conn: Connection, scope: str | None) -> dict:
    """{'code', 'level', 'level_zh', 'name'} of a jurisdiction (the district when None); its parents' names too."""
    if not scope:
        return {"code": None, "level": "district", "level_zh": LEVEL_ZH["district"], "name": "全区",
                "parents": []}
    level = LEVEL_BY_CODE_LENGTH.get(len(scope), "grid")
    name = conn.execute(text(f"SELECT name FROM {TABLE_BY_LEVEL[level]} WHERE code = :c"), {"c": scope}).scalar()
    parents = []
    for n, lv in ((9, "street"), (12, "community")):
        if len(scope) > n:
            pname = conn.execute(text(f"SELECT name FROM {TABLE_BY_LEVEL[lv]} WHERE code = :c"),
                                 {"c": scope[:n]}).scalar()
            parents.append({"code": scope[:n], "level": lv, "name": pname})
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
