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

Two paths give the same rows. The raw path (`kpi_sql`) reads the incidents. The rollup path (`kpi_rollup_sql`)
splits the period at the whole months it contains (in the rollup's time zone): those months are read from
`incident_rollup` (migration 0011, kept by triggers in the same transaction as every write to incidents), the
partial months at either end from the incidents. Being closed or handled depends on the period's END, so the rollup
keys due cases also by the months of closed_at and handled_at, and the cases due in the whole months but closed
(handled) in the final partial month are counted from the incidents. The deadline light depends on now(): always
from the incidents.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

from sqlalchemy import Connection, text

from geo.incidents.closed_loop import light_sql, states, unit_and_class_filters
from geo.incidents.errors import InvalidQuery
from geo.incidents.periods import month_starts, whole_months
from geo.runtime import paused_gc

#: How KPI rows are grouped.
Grouping = Literal["district", "street", "community", "grid", "department", "month"]
GROUPS: tuple[str, ...] = get_args(Grouping)

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
        return self.where_on("i")

    def where_on(self, alias: str) -> tuple[str, dict]:
        """The filters on a table alias (incidents, or incident_rollup, which has the same filter columns)."""
        parts, params = unit_and_class_filters(alias, self.class_code, scope=self.scope, street=self.street,
                                               community=self.community, grid=self.grid)
        if self.department:
            parts.append(f"{alias}.department = :department")
            params["department"] = self.department
        return " AND ".join(parts) or "TRUE", params


RATES = ("closure_rate", "on_time_rate", "disposal_rate", "rework_rate", "extension_rate", "closure_rate_pct",
         "on_time_rate_pct", "disposal_rate_pct", "rework_rate_pct", "extension_rate_pct")


def _rate_values(closed: int, on_time: int, due: int, handled: int, reworked: int, extended: int) -> tuple:
    # written out rather than looped: this runs once per group, ten thousand times for the grids
    closure: float | None
    on_time_r: float | None
    disposal: float | None
    extension: float | None
    pcts: tuple[float | None, float | None, float | None, float | None]
    if due:
        closure, on_time_r, disposal, extension = closed / due, on_time / due, handled / due, extended / due
        pcts = (round(100.0 * closure, 2), round(100.0 * on_time_r, 2), round(100.0 * disposal, 2),
                round(100.0 * extension, 2))
    else:
        closure = on_time_r = disposal = extension = None
        pcts = (None, None, None, None)
    rework = reworked / handled if handled else None
    return (closure, on_time_r, disposal, rework, extension, pcts[0], pcts[1], pcts[2],
            None if rework is None else round(100.0 * rework, 2), pcts[3])


def rates(row: dict) -> dict:
    """The KPI ratios of a row of counts (fractions, and percentages rounded to 0.01): 结案率 closure_rate,
    按期结案率 on_time_rate, 处置率 disposal_rate, 返工率 rework_rate, 延期率 extension_rate."""
    return dict(zip(RATES, _rate_values(row["closed"], row["closed_on_time"], row["due"], row["handled"],
                                        row["reworked"], row["extended"]), strict=True))


def _key_sql(by: str, alias: str = "i") -> str:
    if by == "district":
        return "''"
    if by in _UNITS:
        return f"coalesce({alias}.{_UNITS[by][0].split('.')[1]}, 0)"
    if by == "department":
        return f"coalesce({alias}.department, '')"
    raise InvalidQuery(f"unknown grouping {by!r}; expected one of {', '.join(GROUPS)}")


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


def rollup_timezone(conn: Connection) -> str | None:
    """The time zone of the rollups' months (migration 0011), or None when the schema has no rollup."""
    if not conn.execute(text("SELECT to_regprocedure('incident_rollup_tz()') IS NOT NULL")).scalar():
        return None
    return conn.execute(text("SELECT incident_rollup_tz()")).scalar_one()


def rollup_applies(q: KpiQuery, rollup_tz: str | None) -> tuple[dt.datetime, dt.datetime] | None:
    """The whole months the rollup can answer for this query, or None (no rollup, a micro-grid filter, months of
    another time zone, or no whole month in the period)."""
    if rollup_tz is None:
        return None
    if any(c and len(c) not in (9, 12, 15) for c in (q.scope, q.street, q.community, q.grid)):
        return None  # micro-grids are not a rollup key
    if q.by == "month" and q.timezone != rollup_tz:
        return None
    return whole_months(q.start, q.end, rollup_tz)


def rollup_level(by: str, class_code: str | None, department: str | None, *codes: str | None) -> int:
    """The smallest incident_rollup level holding this grouping and these filters: 12 (street, class, department),
    3 (street, community, grid) or 0 (every key)."""
    units = by in ("community", "grid") or any(c and len(c) in (12, 15) for c in codes)
    classes = by == "department" or bool(class_code or department)
    return 0 if units and classes else 3 if units else 12


def _union_sum(parts: list[tuple[str, dict[str, str]]]) -> str:
    """SUM per key over sub-selects, each giving some of the COUNTS (the others count 0)."""
    selects = []
    for source, cols in parts:
        selects.append(f"SELECT k, {', '.join(f'{cols.get(c, 0)} AS {c}' for c in COUNTS)} FROM ({source}) s")
    union = "\n UNION ALL ".join(selects)
    return f"SELECT k, {', '.join(f'sum({c}) AS {c}' for c in COUNTS)} FROM ({union}) u GROUP BY k ORDER BY k"


def kpi_rollup_sql(q: KpiQuery, m1: dt.datetime, m2: dt.datetime) -> tuple[str, dict]:
    """The KPI query reading the whole months [m1, m2) from incident_rollup and the partial months at the
    period's ends (and the light of the open cases) from the incidents; the same rows as `kpi_sql`."""
    where, params = q.where()
    where_r, _ = q.where_on("r")
    level = rollup_level(q.by, q.class_code, q.department, q.scope, q.street, q.community, q.grid)
    params.update(start=q.start, end=q.end, m1=m1, m2=m2, level=level)
    dm = "least(i.due_at, i.closed_at)"
    evaluable = "(i.due_at IS NOT NULL AND i.state NOT IN ('cancelled', 'suspended'))"

    def edge(col: str) -> str:
        return f"(({col} >= :start AND {col} < :m1) OR ({col} >= :m2 AND {col} < :end))"

    mid_due = f"({dm} >= :m1 AND {dm} < :m2)"
    # due in a whole month, closed (handled) in the final partial month: late, so closed_at > due_at
    late_closed = f"(i.closed_at > i.due_at AND i.closed_at >= :m2 AND i.closed_at < :end AND {mid_due})"
    late_handled = (f"(i.handled_at > least(i.due_at, i.closed_at) AND i.handled_at >= :m2 AND i.handled_at < :end "
                    f"AND {mid_due})")
    if q.by == "month":
        params["months"] = month_starts(q.start, q.end, q.timezone)
        key = lambda t: f"width_bucket({t}, CAST(:months AS timestamptz[]))"  # noqa: E731
    else:
        key = lambda t: _key_sql(q.by)  # noqa: E731
    closed = f"(({edge(dm)} AND i.closed_at < :end) OR {late_closed})"
    handled = f"(({edge(dm)} AND i.handled_at < :end) OR {late_handled})"
    parts = [
        (f"SELECT {key('i.reported_at')} AS k, count(*) AS received, "
         f"count(*) FILTER (WHERE i.state = 'rejected') AS rejected "
         f"FROM incidents i WHERE {where} AND {edge('i.reported_at')} GROUP BY 1",
         {"received": "received", "rejected": "rejected"}),
        (f"SELECT {key('i.registered_at')} AS k, count(*) AS registered "
         f"FROM incidents i WHERE {where} AND {edge('i.registered_at')} GROUP BY 1",
         {"registered": "registered"}),
        (f"""SELECT {key(dm)} AS k,
                    count(*) FILTER (WHERE {edge(dm)}) AS due,
                    count(*) FILTER (WHERE {closed}) AS closed,
                    count(*) FILTER (WHERE {edge(dm)} AND i.closed_at < :end AND i.closed_at <= i.due_at)
                        AS closed_on_time,
                    count(*) FILTER (WHERE {handled}) AS handled,
                    count(*) FILTER (WHERE {handled} AND i.rework_count > 0) AS reworked,
                    count(*) FILTER (WHERE {edge(dm)} AND i.extension_count > 0) AS extended
             FROM incidents i WHERE {where} AND {evaluable} AND ({edge(dm)} OR {late_closed} OR {late_handled})
             GROUP BY 1""",
         {c: c for c in ("due", "closed", "closed_on_time", "handled", "reworked", "extended")}),
        (f"""SELECT {key('r.month') if q.by == 'month' else _key_sql(q.by, 'r')} AS k,
                    sum(r.received) AS received, sum(r.rejected) AS rejected, sum(r.registered) AS registered,
                    sum(r.due) AS due,
                    sum(r.due) FILTER (WHERE r.closed_month < :m2) AS closed,
                    sum(r.on_time) AS closed_on_time,
                    sum(r.due) FILTER (WHERE r.handled_month < :m2) AS handled,
                    sum(r.reworked) FILTER (WHERE r.handled_month < :m2) AS reworked,
                    sum(r.extended) AS extended
             FROM incident_rollup r
             WHERE r.level = :level AND r.month >= :m1 AND r.month < :m2 AND {where_r}
             GROUP BY 1""",
         {c: f"coalesce({c}, 0)" for c in ("received", "rejected", "registered", "due", "closed", "closed_on_time",
                                           "handled", "reworked", "extended")}),
    ]
    if q.by != "month":
        clock_states = ", ".join(f"'{s.code}'" for s in states().values() if s.clock in ("running", "paused"))
        light = light_sql("i")
        parts.append((
            f"""SELECT k, count(*) FILTER (WHERE l = 'green') AS open_green,
                       count(*) FILTER (WHERE l = 'yellow') AS open_yellow,
                       count(*) FILTER (WHERE l = 'red') AS open_red
                FROM (SELECT {_key_sql(q.by)} AS k, {light} AS l FROM incidents i
                      WHERE {where} AND i.state IN ({clock_states}) AND i.due_at IS NOT NULL) o GROUP BY k""",
            {c: c for c in ("open_green", "open_yellow", "open_red")}))
    return _union_sum(parts), params


def _labels(conn: Connection, q: KpiQuery, keys: list) -> dict:
    """Group key → (code, name): unit ids to their codes and names, month buckets to 'YYYY-MM'."""
    by = q.by
    if by in _UNITS:
        table = _UNITS[by][1]
        # as one JSON object: ten thousand grids cost more as result rows than as one value
        packed = conn.execute(text(f"SELECT coalesce(json_object_agg(id, json_build_array(code, name)), '{{}}') "
                                   f"FROM {table} WHERE id = ANY(:ids)"), {"ids": [int(k) for k in keys if k]}
                              ).scalar_one()
        labels = {int(k): tuple(v) for k, v in packed.items()}
        labels[0] = (None, "未归属")
        return labels
    if by == "department":
        return {k: (k or None, k or "未指定部门") for k in keys}
    if by == "district":
        return {"": (None, "全区")}
    months = month_starts(q.start, q.end, q.timezone)
    return {k: (months[int(k) - 1].strftime("%Y-%m"),) * 2 for k in keys}


def compute_kpis(conn: Connection, q: KpiQuery, use_rollup: bool = True) -> dict:
    """KPIs per group and for the whole selection: {'groups': [...], 'total': {...}, 'period': ...}; from the
    monthly rollup where the period holds whole months (and `use_rollup`), else from the incidents alone."""
    if q.by not in GROUPS:
        _key_sql(q.by)  # raises the error naming the groupings
    span = rollup_applies(q, rollup_timezone(conn)) if use_rollup else None
    sql, params = kpi_rollup_sql(q, *span) if span else kpi_sql(q)
    # JIT compiling these wide FILTER lists costs more than it saves at this size
    conn.execute(text("SET LOCAL jit = off"))
    with paused_gc():
        # one JSON array back instead of ten thousand result rows: the client's per-row cost is what it saves
        names = [c for c in COUNTS if q.by != "month" or not c.startswith("open_")]  # no light per month
        packed = conn.execute(text(
            f"SELECT coalesce(json_agg(json_build_array(x.k, {', '.join(f'x.{c}' for c in names)})), '[]') "
            f"FROM ({sql}) x"), params).scalar_one()
        rows = []
        for r in packed:
            counts = [int(v or 0) for v in r[1:]]
            if any(counts):  # a group with nothing to count is no group (both paths agree on this)
                rows.append((r[0], counts))
        labels = _labels(conn, q, [k for k, _ in rows])
        # every group has all COUNTS (a measure the query has not is 0), then the RATES
        fields = ("key", "name", *COUNTS, *RATES)
        at = [names.index(c) if c in names else None for c in COUNTS]
        ix = {c: k for k, c in enumerate(COUNTS)}
        groups = []
        for k, counts in rows:
            full = [counts[j] if j is not None else 0 for j in at]
            code, name = labels.get(k, (k, k))
            groups.append(dict(zip(fields, (code, name, *full, *_rate_values(
                full[ix["closed"]], full[ix["closed_on_time"]], full[ix["due"]], full[ix["handled"]],
                full[ix["reworked"]], full[ix["extended"]])), strict=True)))
        total: dict[str, int | None] = dict.fromkeys(COUNTS, 0)
        if rows:  # every row has one count per name
            for c, col in zip(names, zip(*(counts for _, counts in rows), strict=True), strict=True):
                total[c] = sum(col)
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
