"""Closed-loop KPIs (考核指标) by street, community, grid, department or month, in set-based SQL.

For a period [start, end):
- received (受理数): reported in the period; rejected (不予立案) among them.
- registered (立案数): registered in the period.
- due (应结案数): a dispatched case (not cancelled or suspended) is due in the period holding
  least(due_at, closed_at): its deadline, or its closing when it closed early. Each case is due exactly once.
- closed (结案数): due cases closed before the period's end; closed on time (按期结案数): closed_at ≤ due_at.
- 结案率 = closed / due; 按期结案率 = closed on time / due (DOMAIN.md: 911 / 972 = 93.72 %, 737 / 972 = 75.82 %).
- handled (处置数): due cases handled before the end; 处置率 = handled / due.
- 返工率 = due cases reworked at least once / handled; 延期率 = due cases extended at least once / due.
- The deadline light (green < 80 % of the limit used ≤ yellow ≤ 100 % < red) counts the open cases now.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from geo.incidents import IncidentError, light_sql, states, unit_and_class_filters

GROUPS = ("district", "street", "community", "grid", "department", "month")

_UNITS = {
    "street": ("i.street_id", "streets"),
    "community": ("i.community_id", "communities"),
    "grid": ("i.grid_id", "grids"),
}

COUNTS = ("received", "rejected", "registered", "due", "closed", "closed_on_time", "handled", "reworked",
          "extended", "open_green", "open_yellow", "open_red")


@dataclass
class KpiQuery:
    """What to measure: the period, the grouping, and filters (`scope` is the caller's jurisdiction code)."""

    start: dt.datetime
    end: dt.datetime
    by: str = "district"
    scope: str | None = None
    street: str | None = None
    community: str | None = None
    grid: str | None = None
    class_code: str | None = None
    department: str | None = None
    timezone: str = "Asia/Shanghai"

    def where(self) -> tuple[str, dict]:
        """Filters shared by every measure."""
        parts, params = unit_and_class_filters("i", self.class_code, scope=self.scope, street=self.street,
                                               community=self.community, grid=self.grid)
        if self.department:
            parts.append("i.department = :department")
            params["department"] = self.department
        return " AND ".join(parts) or "TRUE", params


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _pct(r: float | None) -> float | None:
    return None if r is None else round(100.0 * r, 2)


def rates(row: dict) -> dict:
    """The KPI ratios of a row of counts (fractions, and percentages rounded to 0.01)."""
    out = {
        "closure_rate": _ratio(row["closed"], row["due"]),  # 结案率
        "on_time_rate": _ratio(row["closed_on_time"], row["due"]),  # 按期结案率
        "disposal_rate": _ratio(row["handled"], row["due"]),  # 处置率
        "rework_rate": _ratio(row["reworked"], row["handled"]),  # 返工率
        "extension_rate": _ratio(row["extended"], row["due"]),  # 延期率
    }
    out.update({f"{k}_pct": _pct(v) for k, v in list(out.items())})
    return out


def _key_sql(by: str) -> str:
    if by == "district":
        return "''"
    if by in _UNITS:
        return f"coalesce({_UNITS[by][0]}, 0)"
    if by == "department":
        return "coalesce(i.department, '')"
    raise IncidentError(f"unknown grouping {by!r}; expected one of {', '.join(GROUPS)}")


def month_starts(start: dt.datetime, end: dt.datetime, tz: str) -> list[dt.datetime]:
    """The local month boundaries from the month holding `start` to the first one after `end`."""
    zone = ZoneInfo(tz)
    m = start.astimezone(zone).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    out = [m]
    while out[-1] < end:
        nxt = (out[-1].replace(tzinfo=None) + dt.timedelta(days=32)).replace(day=1)
        out.append(nxt.replace(tzinfo=zone))
    return out


def _between(col: str) -> str:
    return f"({col} >= :start AND {col} < :end)"


def kpi_sql(q: KpiQuery) -> tuple[str, dict]:
    """The KPI query (one row per group, counts only) and its parameters: one pass over the incidents that were
    received, registered or due in the period (index ranges OR-ed), plus the open cases for the light."""
    where, params = q.where()
    params.update(start=q.start, end=q.end)
    due_moment = "least(i.due_at, i.closed_at)"
    evaluable = "(i.due_at IS NOT NULL AND i.state NOT IN ('cancelled', 'suspended'))"
    in_period = f"({_between('i.reported_at')} OR {_between('i.registered_at')} OR {_between(due_moment)})"
    due_measures = {
        "due": "TRUE",
        "closed": "i.closed_at < :end",
        "closed_on_time": "i.closed_at < :end AND i.closed_at <= i.due_at",
        "handled": "i.handled_at < :end",
        "reworked": "i.handled_at < :end AND i.rework_count > 0",
        "extended": "i.extension_count > 0",
    }
    if q.by == "month":
        # A case counts in up to three months (received, registered, due). Each case is read once into its
        # (month of each moment, measure flags) combination; the few thousand combinations are then unpivoted,
        # rather than tripling a million rows before aggregating.
        params["months"] = month_starts(q.start, q.end, q.timezone)
        bucket = "width_bucket({t}, CAST(:months AS timestamptz[]))"
        flag_cols = {"rejected": "i.state = 'rejected'", **{n: c for n, c in due_measures.items() if n != "due"}}
        due_cols = ",\n".join(f"sum(c.n) FILTER (WHERE v.kind = 3{'' if n == 'due' else f' AND c.{n}'}) AS {n}"
                               for n in due_measures)
        sql = f"""
            WITH c AS (
                SELECT CASE WHEN {_between('i.reported_at')} THEN {bucket.format(t='i.reported_at')} END AS k1,
                       CASE WHEN {_between('i.registered_at')} THEN {bucket.format(t='i.registered_at')} END AS k2,
                       CASE WHEN {evaluable} AND {_between(due_moment)} THEN {bucket.format(t=due_moment)} END AS k3,
                       {", ".join(f"({c}) AS {n}" for n, c in flag_cols.items())},
                       count(*) AS n
                FROM incidents i
                WHERE {where} AND {in_period}
                GROUP BY {", ".join(str(j) for j in range(1, 4 + len(flag_cols)))})
            SELECT v.k,
                   sum(c.n) FILTER (WHERE v.kind = 1) AS received,
                   sum(c.n) FILTER (WHERE v.kind = 1 AND c.rejected) AS rejected,
                   sum(c.n) FILTER (WHERE v.kind = 2) AS registered,
                   {due_cols}
            FROM c CROSS JOIN LATERAL (VALUES (1, c.k1), (2, c.k2), (3, c.k3)) v(kind, k)
            WHERE v.k IS NOT NULL
            GROUP BY 1 ORDER BY 1"""
        return sql, params
    clock_states = ", ".join(f"'{s.code}'" for s in states().values() if s.clock in ("running", "paused"))
    open_case = f"(i.state IN ({clock_states}) AND i.due_at IS NOT NULL)"
    light = light_sql("i")
    due = f"{_between(due_moment)} AND {evaluable}"
    due_cols = ",\n".join(f"count(*) FILTER (WHERE {due} AND {c}) AS {name}" for name, c in due_measures.items())
    sql = f"""
        SELECT {_key_sql(q.by)} AS k,
               count(*) FILTER (WHERE {_between('i.reported_at')}) AS received,
               count(*) FILTER (WHERE {_between('i.reported_at')} AND i.state = 'rejected') AS rejected,
               count(*) FILTER (WHERE {_between('i.registered_at')}) AS registered,
               {due_cols},
               count(*) FILTER (WHERE {open_case} AND {light} = 'green') AS open_green,
               count(*) FILTER (WHERE {open_case} AND {light} = 'yellow') AS open_yellow,
               count(*) FILTER (WHERE {open_case} AND {light} = 'red') AS open_red
        FROM incidents i
        WHERE {where} AND ({in_period} OR i.state IN ({clock_states}))
        GROUP BY 1 ORDER BY 1"""
    return sql, params


def _labels(conn: Connection, q: KpiQuery, keys: list) -> dict:
    """Group key → (code, name): unit ids to their codes and names, month buckets to 'YYYY-MM'."""
    by = q.by
    if by in _UNITS:
        table = _UNITS[by][1]
        rows = conn.execute(text(f"SELECT id, code, name FROM {table} WHERE id = ANY(:ids)"),
                            {"ids": [int(k) for k in keys if k]}).all()
        labels = {r.id: (r.code, r.name) for r in rows}
        labels[0] = (None, "未归属")
        return labels
    if by == "department":
        return {k: (k or None, k or "未指定部门") for k in keys}
    if by == "district":
        return {"": (None, "全区")}
    months = month_starts(q.start, q.end, q.timezone)
    return {k: (months[int(k) - 1].strftime("%Y-%m"),) * 2 for k in keys}


def compute_kpis(conn: Connection, q: KpiQuery) -> dict:
    """KPIs per group and for the whole selection: {'groups': [...], 'total': {...}, 'period': ...}."""
    sql, params = kpi_sql(q)
    # JIT compiling these wide FILTER lists costs more than it saves at this size
    conn.execute(text("SET LOCAL jit = off"))
    rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    labels = _labels(conn, q, [r["k"] for r in rows])
    groups = []
    total = {c: 0 for c in COUNTS}
    for r in rows:
        counts = {c: int(r.get(c, 0) or 0) for c in COUNTS}
        for c in COUNTS:
            total[c] += counts[c]
        code, name = labels.get(r["k"], (r["k"], r["k"]))
        groups.append({"key": code, "name": name, **counts, **rates(counts)})
    if q.by != "district":
        groups.sort(key=lambda g: (g["key"] is None, g["key"] or ""))
    if q.by == "month":
        for c in ("open_green", "open_yellow", "open_red"):
            total[c] = None
    return {
        "by": q.by,
        "period": {"from": q.start.isoformat(), "to": q.end.isoformat()},
        "groups": groups,
        "total": {**total, **rates({k: v or 0 for k, v in total.items()})},
    }
