"""Importing incidents with their history (历史事件导入) from CSV, XLSX or GeoJSON, all or nothing.

Each record keeps its real report time, its state (mapped onto the closed loop's states: 已结案 → closed …) and a
history row per step of the loop with the file's times (立案时间, 派遣时间, 结案时间 …). A step the file gives no
time for takes the next known time (it happened no later), marked ``"time": "inferred"`` in its event. The
location is read in any CRS by `geo.io.readers` / `geo.io.reproject` (the boundary import's readers); the source
category (违章搭建, 其他災情 …) is mapped to the class table by code, by name, or by the caller's mapping, and shown
in the dry run ("we map 违章搭建 → F05"); unknown categories and states are listed and refuse their records
unless mapped. Each incident is attributed to the boundaries in force at its report time
(`geo.incidents.attribution`); one that lies in no street then is refused, saying whether boundaries of that
time are missing (import them with an earlier start) or the point lies outside the district.

Everything runs in a savepoint: a dry run, or any refused record (unless ``skip_refused``), leaves the database as
it was, and the counts in the report are those of the rows actually written (or that would be). The source id
(案件编号) is kept in the first event, so a second run finds the incidents already imported and skips them.
The monthly rollups are kept by their triggers, so KPIs and heatmaps include the imported incidents at once.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from geo.incidents.attribution import attribute_incidents
from geo.incidents.classes import class_index
from geo.incidents.closed_loop import SOURCES, resolve_transition, states
from geo.incidents.errors import IncidentError, InvalidIncident
from geo.io.fields import INCIDENT_SOURCE, FieldSpec, LayerSpec, convert_column, normalise_name, parse_mapping
from geo.io.readers import read_records
from geo.io.reproject import source_crs, to_storage
from geo.settings import get_settings
from geo.store.transactions import dry_run_transaction

_TIME_FIELDS = ("registered_at", "dispatched_at", "handled_at", "feedback_at", "closed_at", "evaluated_at")

HISTORY_SPEC = LayerSpec(
    "incident_history", "incidents", "point",
    (
        FieldSpec("external_id", "str", False, ("external_id", "案件编号", "事件编号", "工单编号", "工单号", "案卷号",
                                                "编号", "id", "case_id", "service_request_id"), max_length=200),
        FieldSpec("reported_at", "datetime", True, ("reported_at", "上报时间", "报告时间", "发现时间", "发生时间",
                                                    "反映时间", "requested_datetime", "受理时间", "时间", "date")),
        FieldSpec("category", "str", True, ("category", "事件类别", "事件分类", "案件类别", "问题类型", "事件类型",
                                            "类别", "小类", "小类名称", "类别名称", "class_code", "class",
                                            "service_code", "service_name", "分类", "类型")),
        FieldSpec("state", "str", False, ("state", "status", "状态", "处置状态", "案件状态", "办理状态", "事件状态")),
        FieldSpec("source", "str", False, ("source", "来源", "事件来源", "信息来源", "案件来源", "上报渠道")),
        FieldSpec("description", "str", False, ("description", "描述", "事件描述", "问题描述", "内容", "诉求内容")),
        FieldSpec("address", "str", False, ("address", "地址", "事发地址", "详细地址", "位置", "address_string")),
        FieldSpec("department", "str", False, ("department", "处置部门", "责任部门", "承办部门", "部门"),
                  max_length=100),
        FieldSpec("reporter", "str", False, ("reporter", "上报人", "报告人", "反映人"), max_length=100),
        FieldSpec("reporter_phone", "str", False, ("reporter_phone", "上报人电话", "联系电话", "电话"), max_length=32),
        FieldSpec("registered_at", "datetime", False, ("registered_at", "立案时间")),
        FieldSpec("dispatched_at", "datetime", False, ("dispatched_at", "派遣时间", "派单时间")),
        FieldSpec("due_at", "datetime", False, ("due_at", "截止时间", "办理期限", "应结案时间", "期限")),
        FieldSpec("handled_at", "datetime", False, ("handled_at", "处置时间", "处理时间", "办理时间")),
        FieldSpec("feedback_at", "datetime", False, ("feedback_at", "反馈时间")),
        FieldSpec("closed_at", "datetime", False, ("closed_at", "结案时间", "办结时间", "关闭时间")),
        FieldSpec("evaluated_at", "datetime", False, ("evaluated_at", "评价时间")),
    ),
    label="历史事件",
)

#: Words cities use for the closed loop's states (compared with `normalise_name`); the state codes and their
#: Chinese names (data/incident_states.csv) always match too.
STATE_WORDS: dict[str, tuple[str, ...]] = {
    "collected": ("待受理", "已上报", "待立案", "新建", "新上报", "未处理", "open", "new", "submitted"),
    "registered": ("立案", "已受理", "受理", "待派遣"),
    "rejected": ("不立案", "退件", "不受理", "不予受理"),
    "dispatched": ("派遣", "已派单", "处置中", "处理中", "办理中", "待处置", "在办", "acknowledged", "in_progress"),
    "handled": ("处置完毕", "已处理", "待反馈", "处理完毕"),
    "reported": ("待核查", "待结案"),
    "closed": ("结案", "办结", "已办结", "已完成", "完成", "已关闭", "关闭", "closed", "done", "resolved"),
    "evaluated": ("评价", "已回访"),
    "cancelled": ("作废", "撤销", "已撤销", "取消", "canceled"),
    "suspended": ("已挂账", "暂缓", "挂起"),
}
#: Source words besides the codes and names of `SOURCES`.
SOURCE_WORDS: dict[str, tuple[str, ...]] = {
    "patrol": ("巡查", "网格员", "网格员上报", "巡查上报", "自行发现"),
    "public": ("市民", "群众", "居民", "市民上报", "公众"),
    "hotline_12345": ("12345", "热线", "市长热线", "12345热线"),
    "video": ("视频", "视频监控", "监控"),
    "department": ("部门", "部门转办"),
}
#: The steps of the loop that lead to each state, and the file's time column for each step.
PATHS: dict[str, tuple[str, ...]] = {
    "collected": (),
    "rejected": ("reject",),
    "registered": ("register",),
    "dispatched": ("register", "dispatch"),
    "handled": ("register", "dispatch", "handle"),
    "reported": ("register", "dispatch", "handle", "report"),
    "closed": ("register", "dispatch", "handle", "report", "close"),
    "evaluated": ("register", "dispatch", "handle", "report", "close", "evaluate"),
    "cancelled": ("register", "cancel"),
    "suspended": ("register", "dispatch", "suspend"),
}
STEP_TIME = {"register": "registered_at", "dispatch": "dispatched_at", "handle": "handled_at",
             "report": "feedback_at", "close": "closed_at", "evaluate": "evaluated_at", "reject": "closed_at",
             "cancel": "closed_at", "suspend": None}
#: How far in the future a time may lie (clocks differ) before the record is refused.
FUTURE_SLACK = dt.timedelta(minutes=5)


class IncidentImportRefused(IncidentError):
    """Records of an incident file were refused: nothing was written; `report` says which and why."""

    slug = "incident-import-refused"
    title = "Incident import refused"


@dataclass
class HistoryOptions:
    """How to read an incident file: mappings for categories and states, CRS, and what to do with refusals."""

    #: {source category: class code}, or "违章搭建=F05,占道经营=E02".
    category_map: dict[str, str] | str | None = None
    #: {source state word: state code}, or "已办结=closed".
    state_map: dict[str, str] | str | None = None
    #: Column mapping {field: column}, as for boundary imports.
    mapping: dict[str, str] | str | None = None
    crs: str | None = None
    encoding: str | None = None
    source_layer: str | None = None
    axis_order: str = "auto"
    filename: str | None = None
    dry_run: bool = False
    #: Import the records that pass and list the others, instead of refusing the file.
    skip_refused: bool = False
    #: Only incidents attributed inside this unit code (the caller's jurisdiction) are accepted.
    jurisdiction: str | None = None
    actor: str | None = None


@dataclass
class HistoryReport:
    """What an incident import read, mapped, wrote, skipped and refused (every count true to what is written)."""

    source: str
    format: str = ""
    encoding: str | None = None
    crs: str = ""
    columns_read: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    records: int = 0
    #: Records that would be written (all of them are only when none is refused, or with skip_refused).
    passing: int = 0
    imported: int = 0
    already_imported: int = 0
    refused: int = 0
    category_mapping: list[dict] = field(default_factory=list)
    unknown_categories: list[dict] = field(default_factory=list)
    state_mapping: list[dict] = field(default_factory=list)
    unknown_states: list[dict] = field(default_factory=list)
    by_state: dict[str, int] = field(default_factory=dict)
    attribution: dict[str, int] = field(default_factory=dict)
    first_reported: dt.datetime | None = None
    last_reported: dt.datetime | None = None
    events: int = 0
    inferred_times: int = 0
    problems: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False
    committed: bool = False
    #: The jurisdiction codes of the incidents written (for the audit entry).
    codes: list[str] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        """The report as JSON-ready data."""
        return {
            "source": self.source, "format": self.format, "encoding": self.encoding, "crs": self.crs,
            "columns_read": self.columns_read, "ignored_columns": self.ignored_columns,
            "counts": {"records": self.records, "passing": self.passing, "imported": self.imported,
                       "already_imported": self.already_imported, "refused": self.refused,
                       "events": self.events, "inferred_times": self.inferred_times},
            "category_mapping": self.category_mapping, "unknown_categories": self.unknown_categories,
            "state_mapping": self.state_mapping, "unknown_states": self.unknown_states,
            "by_state": self.by_state, "attribution": self.attribution,
            "period": {"first": self.first_reported.isoformat() if self.first_reported else None,
                       "last": self.last_reported.isoformat() if self.last_reported else None},
            "problems": self.problems, "notes": self.notes, "dry_run": self.dry_run, "committed": self.committed,
        }


def _words(table: dict[str, tuple[str, ...]], extra: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for code, words in table.items():
        for w in (code, *words):
            out[normalise_name(w)] = code
    for code, name in extra.items():
        out.setdefault(normalise_name(code), code)
        out.setdefault(normalise_name(name), code)
    return out


def state_words() -> dict[str, str]:
    """{normalised word: state code}: the state table's codes and names, then `STATE_WORDS`."""
    named = {s.code: s.name for s in states().values()}
    out = {normalise_name(c): c for c in named}
    out.update({normalise_name(n): c for c, n in named.items()})
    for code, words in STATE_WORDS.items():
        for w in words:
            out.setdefault(normalise_name(w), code)
    return out


def source_words() -> dict[str, str]:
    """{normalised word: source code} from `SOURCES`, the import fields' choices and `SOURCE_WORDS`."""
    return {**INCIDENT_SOURCE, **_words(SOURCE_WORDS, SOURCES)}


def _map_arg(value: dict[str, str] | str | None) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    return parse_mapping(value)


def map_categories(values: pd.Series, by_code: dict[str, dict], by_name: dict[str, list[str]],
                   explicit: dict[str, str]) -> tuple[dict[str, tuple[str, str]], list[dict], list[dict]]:
    """Each distinct source category → (class code, how: mapped / code / name); the mapping shown in the dry run
    and the unknown categories with their record counts."""
    unknown_targets = sorted({v for v in explicit.values() if v not in by_code})
    if unknown_targets:
        raise InvalidIncident(f"the category mapping names class(es) {', '.join(unknown_targets)} that the class "
                              "table does not hold; import them first (gridatlas incidents classes import)")
    counts = Counter(v for v in values if v is not None)
    resolved: dict[str, tuple[str, str]] = {}
    unknown: list[dict] = []
    for value, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if value in explicit:
            resolved[value] = (explicit[value], "mapped")
        elif value in by_code:
            resolved[value] = (value, "code")
        else:
            candidates = by_name.get(normalise_name(value), [])
            if len(candidates) != 1:
                # '市容环境/暴露垃圾', '市容环境-暴露垃圾': the last part names the class
                last = re.split(r"[/／>＞\\|｜\-—]+", value)[-1]
                candidates = by_name.get(normalise_name(last), []) if last != value else candidates
            if len(candidates) == 1:
                resolved[value] = (candidates[0], "name")
            else:
                unknown.append({"category": value, "records": n,
                                "reason": ("several classes have this name: " + ", ".join(sorted(candidates)))
                                if candidates else "no class has this code or name"})
    shown = [{"category": v, "class_code": c, "class_name": by_code[c]["name"], "how": how, "records": counts[v]}
             for v, (c, how) in resolved.items()]
    return resolved, shown, unknown


def _refuse(refused: dict[int, dict], i: int, kind: str, reason: str, ext: object = None) -> None:
    refused.setdefault(i, {"record": i + 1, "external_id": ext, "kind": kind, "reason": reason})


def import_incident_history(conn: Connection, path: str | Path, options: HistoryOptions | None = None) -> HistoryReport:
    """Import an incident file with its history, all or nothing (see the module docstring); the report."""
    options = options or HistoryOptions()
    settings = get_settings()
    path = Path(path)
    source = options.filename or path.name
    records = read_records(path, HISTORY_SPEC, _map_arg(options.mapping), source=source, example="category=问题分类",
                           missing_error=InvalidIncident, layer=options.source_layer, encoding=options.encoding,
                           geometry="point", target="incidents", name=options.filename)
    data = records.data
    n = len(data.frame)
    report = HistoryReport(source=source, format=data.format, encoding=data.encoding, records=n,
                           dry_run=options.dry_run, columns_read=records.columns_read,
                           ignored_columns=records.ignored_columns)
    report.notes += data.notes
    refused: dict[int, dict] = {}
    values: dict[str, list] = {}
    for f in HISTORY_SPEC.fields:
        raw = records.column(f.name)
        if raw is None:
            values[f.name] = [None] * n
            continue
        col = records.match.mapping[f.name]
        converted, bad = convert_column(f, raw, settings.timezone)
        values[f.name] = converted.tolist()
        for j in np.flatnonzero(bad).tolist():
            _refuse(refused, j, "bad-value", f"{col}: {raw.iloc[j]!r} is not a valid "
                    f"{'date/time' if f.kind == 'datetime' else f.name}")
    ext = values["external_id"]
    for i in range(n):
        if values["reported_at"][i] is None:
            _refuse(refused, i, "missing-value", "no report time", ext[i])
        if values["category"][i] is None:
            _refuse(refused, i, "missing-value", "no category", ext[i])

    # locations: any CRS the boundary import reads; one point per record
    labels = [f"record {i + 1}" + (f" · {ext[i]}" if ext[i] else "") for i in range(n)]
    crs = source_crs(data.crs, options.crs)
    report.crs = crs.label + (" (given)" if options.crs else f" ({data.crs_from})")
    geoms = to_storage(data.geometry, crs, labels, options.axis_order, allow_outside_china=True)
    missing_geom = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    kinds = shapely.get_type_id(geoms)
    for j in np.flatnonzero(missing_geom).tolist():
        _refuse(refused, j, "no-location", "no location (coordinates missing or not numbers)", ext[j])
    for j in np.flatnonzero(~missing_geom & (kinds != 0)).tolist():
        _refuse(refused, j, "not-a-point", f"the location is a {geoms[j].geom_type}, not a point", ext[j])
    xs = np.full(n, np.nan)
    ys = np.full(n, np.nan)
    points = ~missing_geom & (kinds == 0)
    xs[points], ys[points] = shapely.get_x(geoms[points]), shapely.get_y(geoms[points])

    # categories and states: mapped, and shown as mapped, before anything is written
    by_code, by_name = class_index(conn)
    cats, report.category_mapping, report.unknown_categories = map_categories(
        pd.Series(values["category"], dtype=object), by_code, by_name, _map_arg(options.category_map))
    state_explicit = _map_arg(options.state_map)
    bad_targets = sorted({v for v in state_explicit.values() if v not in states()})
    if bad_targets:
        raise InvalidIncident(f"the state mapping names unknown state(s) {', '.join(bad_targets)}; states are "
                              f"{', '.join(states())}")
    words = state_words()
    state_of: dict[str, str] = {}
    state_counts = Counter(v for v in values["state"] if v is not None)
    for value, cnt in sorted(state_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        code = state_explicit.get(value) or words.get(normalise_name(value))
        if code:
            state_of[value] = code
            report.state_mapping.append({"state": value, "to": code, "name": states()[code].name, "records": cnt,
                                         "how": "mapped" if value in state_explicit else "recognised"})
        else:
            report.unknown_states.append({"state": value, "records": cnt})
    src_words = source_words()

    now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    rows: list[dict] = []
    events: list[dict] = []
    seen_ext: dict[str, int] = {}
    inferred_total = 0
    for i in range(n):
        if i in refused:
            continue
        cat = values["category"][i]
        if cat not in cats:
            _refuse(refused, i, "unknown-category", f"category {cat!r} is not in the class table; map it "
                    f"(e.g. {cat}=<class code>)", ext[i])
            continue
        class_code = cats[cat][0]
        raw_state = values["state"][i]
        if raw_state is not None and raw_state not in state_of:
            _refuse(refused, i, "unknown-state", f"state {raw_state!r} is not a state of the closed loop; map it "
                    f"(e.g. {raw_state}=closed)", ext[i])
            continue
        times = {k: values[k][i] for k in ("reported_at", *_TIME_FIELDS, "due_at")}
        state = state_of.get(raw_state) if raw_state is not None else None
        if state is None:  # no state column: the latest step the file gives a time for
            state = ("evaluated" if times["evaluated_at"] else "closed" if times["closed_at"]
                     else "reported" if times["feedback_at"] else "handled" if times["handled_at"]
                     else "dispatched" if times["dispatched_at"] else "registered" if times["registered_at"]
                     else "collected")
        steps = PATHS[state]
        if state == "cancelled" and times["dispatched_at"]:
            steps = ("register", "dispatch", "cancel")
        e = ext[i]
        if e is not None:
            if e in seen_ext:
                _refuse(refused, i, "duplicate", f"source id {e} appears again (record {seen_ext[e] + 1})", e)
                continue
            seen_ext[e] = i
        # the times along the path: given ones must not go backwards; missing ones take the next known time
        at = [times["reported_at"]] + [times.get(STEP_TIME[s] or "") for s in steps]
        names = ["reported_at"] + [STEP_TIME[s] or s for s in steps]
        known = [(k, t) for k, t in enumerate(at) if t is not None]
        order_error = next((f"{names[k2]} {t2.isoformat()} precedes {names[k1]} {t1.isoformat()}"
                            for (k1, t1), (k2, t2) in zip(known, known[1:], strict=False) if t2 < t1), None)
        if order_error:
            _refuse(refused, i, "time-order", order_error, e)
            continue
        if known[-1][1] > now + FUTURE_SLACK:
            _refuse(refused, i, "future", f"{names[known[-1][0]]} {known[-1][1].isoformat()} lies in the future", e)
            continue
        inferred = [t is None for t in at]
        for k in range(len(at) - 1, 0, -1):
            if at[k] is None:
                at[k] = next((t for t in at[k + 1:] if t is not None), None)
        for k in range(1, len(at)):
            if at[k] is None:
                at[k] = at[k - 1]
        inferred_total += sum(inferred)
        row = {"ord": i, "lon": float(xs[i]), "lat": float(ys[i]), "reported_at": at[0].isoformat(),
               "class_code": class_code, "state": state,
               "source": src_words.get(normalise_name(values["source"][i] or ""), "imported"),
               "description": values["description"][i], "address": values["address"][i],
               "department": values["department"][i] or by_code[class_code].get("department"),
               "reporter": values["reporter"][i], "reporter_phone": values["reporter_phone"][i],
               "updated_at": at[-1].isoformat(), "extended_hours": 0.0}
        when = dict(zip(steps, at[1:], strict=True))
        for step, col in (("register", "registered_at"), ("dispatch", "dispatched_at"), ("handle", "handled_at"),
                          ("report", "feedback_at"), ("close", "closed_at"), ("evaluate", "evaluated_at"),
                          ("suspend", "suspended_at")):
            row[col] = when[step].isoformat() if step in when else None
        if "dispatch" in when:
            limit = float(by_code[class_code]["time_limit_hours"])
            due = times["due_at"] or when["dispatch"] + dt.timedelta(hours=limit)
            if due <= when["dispatch"]:
                _refuse(refused, i, "time-order", f"due_at {due.isoformat()} is not after the dispatch "
                        f"{when['dispatch'].isoformat()}", e)
                continue
            row["due_at"] = due.isoformat()
            row["time_limit_hours"] = (due - when["dispatch"]).total_seconds() / 3600.0
        else:
            row["due_at"] = row["time_limit_hours"] = None
        row["suspended_from"] = "dispatched" if state == "suspended" else None
        rows.append(row)
        prev = None
        detail0 = {"source": row["source"], "category": cat, "import": report.source, "record": i + 1,
                   **({"external_id": e} if e is not None else {}), **({"recorded_at": now.isoformat()})}
        events.append({"ord": i, "from_state": None, "to_state": "collected", "at": at[0].isoformat(),
                       "action": "collect", "detail": detail0})
        prev = "collected"
        for k, step in enumerate(steps, start=1):
            t = resolve_transition(prev, step)  # the loop's own table: a changed table cannot be bypassed
            events.append({"ord": i, "from_state": prev, "to_state": t.to_state, "at": at[k].isoformat(),
                           "action": step, "detail": {"import": report.source,
                                                      **({"time": "inferred"} if inferred[k] else {})}})
            prev = t.to_state
    if ext and any(ext):
        already: dict[str, int] = dict(conn.execute(text(
            "SELECT detail->>'external_id', incident_id FROM incident_events "
            "WHERE detail ? 'external_id' AND detail->>'external_id' = ANY(:ids)"),
            {"ids": [r for r in seen_ext]}).all())
        if already:
            skip = {seen_ext[e] for e in already}
            report.already_imported = len(skip)
            report.notes.append(f"{len(skip)} record(s) already imported (same source id), skipped: e.g. "
                                + ", ".join(f"{e} → incident {already[e]}" for e in list(already)[:5]))
            rows = [r for r in rows if r["ord"] not in skip]
            events = [ev for ev in events if ev["ord"] not in skip]
    report.inferred_times = inferred_total
    if inferred_total:
        report.notes.append(f"{inferred_total} step(s) of the loop had no time in the file: each takes the next "
                            "known time (marked 'inferred' in its event)")

    # write in a savepoint, attribute at each report time, then keep it only when nothing is refused: a refusal
    # outside a dry run raises (so the savepoint rolls back), inside one it is reported and rolled back with the rest
    with dry_run_transaction(conn, options.dry_run):
        ids = _insert(conn, rows, events, options.actor)
        if ids:
            attribute_incidents(conn, "i.id = ANY(:ids)", {"ids": list(ids.values())})
        _check_attribution(conn, ids, refused, ext, options.jurisdiction)
        bad_ids = [ids[o] for o in ids if o in refused]
        written = {o: v for o, v in ids.items() if o not in refused}
        report.refused = len(refused)
        report.problems = [refused[k] for k in sorted(refused)]
        report.passing = len(written)
        _summarise(report, rows, written, conn)
        if refused and not options.skip_refused:
            report.notes.append(f"{len(written)} record(s) pass; nothing is written while {len(refused)} are "
                                "refused (fix or map them, or import the others with skip_refused)")
            if not options.dry_run:
                raise IncidentImportRefused(
                    f"{len(refused)} of {n} record(s) refused, nothing written (fix or map them, or import the "
                    "others with skip_refused): " + "; ".join(f"record {p['record']}: {p['reason']}"
                                                              for p in report.problems[:5]),
                    report=report.to_json())
            return report
        if bad_ids:
            conn.execute(text("DELETE FROM incidents WHERE id = ANY(:ids)"), {"ids": bad_ids})
        report.imported = len(written)
        report.events = sum(1 for ev in events if ev["ord"] in written)
    report.committed = not options.dry_run
    return report


def _insert(conn: Connection, rows: list[dict], events: list[dict], actor: str | None) -> dict[int, int]:
    """Insert the incidents and their events set-based; {record index: incident id}."""
    if not rows:
        return {}
    # ids drawn first, so each record's id is known without relying on the order RETURNING gives them
    ordered = sorted(rows, key=lambda r: r["ord"])
    new_ids = conn.execute(text("SELECT nextval(pg_get_serial_sequence('incidents', 'id')) "
                                "FROM generate_series(1, :n)"), {"n": len(ordered)}).scalars().all()
    for r, new_id in zip(ordered, new_ids, strict=True):
        r["id"] = new_id
    conn.execute(text("""
        INSERT INTO incidents (id, geom, reported_at, class_code, source, state, description, address, department,
                               reporter, reporter_phone, registered_at, dispatched_at, handled_at, feedback_at,
                               closed_at, evaluated_at, suspended_at, suspended_from, due_at, time_limit_hours,
                               extended_hours, updated_at, created_by)
        SELECT r.id, ST_SetSRID(ST_MakePoint(r.lon, r.lat), 4326), r.reported_at, r.class_code, r.source, r.state,
               r.description, r.address, r.department, r.reporter, r.reporter_phone, r.registered_at,
               r.dispatched_at, r.handled_at, r.feedback_at, r.closed_at, r.evaluated_at, r.suspended_at,
               r.suspended_from, r.due_at, r.time_limit_hours, r.extended_hours, r.updated_at, :actor
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
            id bigint, lon float8, lat float8, reported_at timestamptz, class_code text, source text, state text,
            description text, address text, department text, reporter text, reporter_phone text,
            registered_at timestamptz, dispatched_at timestamptz, handled_at timestamptz, feedback_at timestamptz,
            closed_at timestamptz, evaluated_at timestamptz, suspended_at timestamptz, suspended_from text,
            due_at timestamptz, time_limit_hours float8, extended_hours float8, updated_at timestamptz)
    """), {"rows": json.dumps(ordered, ensure_ascii=False), "actor": actor})
    ids = {r["ord"]: r["id"] for r in ordered}
    conn.execute(text("""
        INSERT INTO incident_events (incident_id, from_state, to_state, at, actor, action, detail)
        SELECT (CAST(:ids AS jsonb) ->> CAST(e.ord AS text))::bigint, e.from_state, e.to_state, e.at, :actor,
               e.action, e.detail
        FROM jsonb_to_recordset(CAST(:events AS jsonb))
             AS e(ord int, from_state text, to_state text, at timestamptz, action text, detail jsonb)
    """), {"ids": json.dumps({str(k): v for k, v in ids.items()}),
           "events": json.dumps(events, ensure_ascii=False), "actor": actor})
    return ids


def _check_attribution(conn: Connection, ids: dict[int, int], refused: dict[int, dict], ext: list,
                       jurisdiction: str | None) -> None:
    """Refuse incidents that lie in no street at their report time (saying why) or outside the jurisdiction."""
    if not ids:
        return
    by_id = {v: k for k, v in ids.items()}
    rows = conn.execute(text("""
        SELECT i.id, i.reported_at, coalesce(g.code, c.code, s.code) AS unit,
               (SELECT min(b.valid_from) FROM street_boundaries b WHERE ST_Covers(b.geom, i.geom)) AS first_from
        FROM incidents i LEFT JOIN streets s ON s.id = i.street_id LEFT JOIN communities c ON c.id = i.community_id
        LEFT JOIN grids g ON g.id = i.grid_id
        WHERE i.id = ANY(:ids) AND (i.street_id IS NULL OR NOT starts_with(coalesce(g.code, c.code, s.code), :j))
    """), {"ids": list(ids.values()), "j": jurisdiction or ""}).all()
    for r in rows:
        i = by_id[r.id]
        if r.unit is None and r.first_from is not None:
            _refuse(refused, i, "before-boundaries",
                    f"reported {r.reported_at.date().isoformat()}, before the boundaries here (in force from "
                    f"{r.first_from.date().isoformat()}): import boundaries valid from a date before it",
                    ext[i])
        elif r.unit is None:
            _refuse(refused, i, "outside-district", "lies outside every street of the district", ext[i])
        else:
            _refuse(refused, i, "out-of-jurisdiction", f"lies in {r.unit}, outside your jurisdiction {jurisdiction}",
                    ext[i])


def _summarise(report: HistoryReport, rows: list[dict], written: dict[int, int], conn: Connection | None) -> None:
    kept = [r for r in rows if r["ord"] in written]
    report.by_state = dict(sorted(Counter(r["state"] for r in kept).items()))
    if kept:
        times = sorted(r["reported_at"] for r in kept)
        report.first_reported = dt.datetime.fromisoformat(times[0])
        report.last_reported = dt.datetime.fromisoformat(times[-1])
    if conn is not None and written:
        a = conn.execute(text("""
            SELECT count(*) FILTER (WHERE i.grid_id IS NOT NULL) AS grid,
                   count(*) FILTER (WHERE i.grid_id IS NULL AND i.community_id IS NOT NULL) AS community_only,
                   count(*) FILTER (WHERE i.community_id IS NULL AND i.street_id IS NOT NULL) AS street_only,
                   count(DISTINCT i.version_id) AS versions
            FROM incidents i WHERE i.id = ANY(:ids)"""), {"ids": list(written.values())}).mappings().one()
        report.attribution = dict(a)
        report.codes = [c for (c,) in conn.execute(text("""
            SELECT DISTINCT coalesce(g.code, c.code, s.code) FROM incidents i
            LEFT JOIN streets s ON s.id = i.street_id LEFT JOIN communities c ON c.id = i.community_id
            LEFT JOIN grids g ON g.id = i.grid_id WHERE i.id = ANY(:ids)"""), {"ids": list(written.values())})
            if c]
