"""A city's own incident class table (事件分类表): code, name, parent class, time limit (时限), department (处置部门).

`plan_class_table` reads a CSV or XLSX table (UTF-8 or GBK, Chinese or English headers, read by `geo.io.readers`
and matched by `geo.io.fields`) and compares it with the table in the database: what would be added, changed,
left as it is, and refused, with the reason per record. `import_class_table` writes the plan, all or nothing: one
refused record and nothing is written (`ClassTableRefused` carries the plan). Classes missing from the file are
kept (incidents refer to them), so existing incidents and clients keep working; a changed time limit applies to
cases dispatched afterwards (a case keeps the limit it was dispatched with).

A parent is named by its code or by its name, from the file or the table already loaded; a class without a time
limit takes its parent's. Limits read as hours unless the value or the column says otherwise (``3天``,
``2个工作日``, ``30分钟``, a column ``处置时限（天）``); working days count as 24 hours each (said in the notes).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, text

from geo.incidents.errors import IncidentError
from geo.io.fields import FieldSpec, LayerSpec, normalise_name, parse_mapping
from geo.io.readers import read_records

#: Longest code and name the table holds (incident_classes.code / .name / .department).
MAX_CODE, MAX_NAME, MAX_DEPARTMENT = 16, 100, 100
#: Time limit of a class that names none and has no parent to take one from (the table's default).
DEFAULT_LIMIT_HOURS = 72.0
MAX_LIMIT_HOURS = 24.0 * 365

CLASS_SPEC = LayerSpec(
    "incident_classes", "incident_classes", None,
    (
        FieldSpec("code", "str", True, ("code", "class_code", "类别编码", "分类编码", "事件类别编码", "类型编码",
                                        "小类编码", "事件编码", "编码", "代码", "编号", "service_code", "bm", "dm")),
        FieldSpec("name", "str", True, ("name", "class_name", "类别名称", "分类名称", "事件类别", "事件类型",
                                        "小类名称", "名称", "service_name", "mc")),
        FieldSpec("parent", "str", False, ("parent", "parent_code", "major_code", "上级编码", "上级分类", "上级类别",
                                           "上级代码", "上级", "父类", "父类编码", "父级编码", "大类编码", "所属大类",
                                           "大类", "group")),
        FieldSpec("time_limit", "str", False, ("time_limit_hours", "time_limit", "hours", "时限", "处置时限",
                                               "办理时限", "结案时限", "时限小时", "处置时限小时", "时限天",
                                               "处置时限天", "办理时限天", "时限工作日", "处置时限工作日", "时限日")),
        FieldSpec("department", "str", False, ("department", "处置部门", "责任部门", "主管部门", "承办部门", "部门")),
        # a flattened two-level table (大类编码, 大类名称, 小类编码, 小类名称 on each row): the major class's name
        FieldSpec("parent_name", "str", False, ("parent_name", "major_name", "大类名称", "上级名称", "上级分类名称",
                                                "父类名称")),
    ),
    key=("code",), label="事件分类",
)

_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(小时|时|h|hr|hrs|hours?|天|日|d|days?|个?工作日|workdays?|分钟|min|"
                    r"minutes?)?\s*$", re.IGNORECASE)


class ClassTableRefused(IncidentError):
    """A class table with refused records: nothing was written; `plan` lists what and why."""

    slug = "class-table-refused"
    title = "Class table refused"


@dataclass
class ClassPlan:
    """What importing a class table does: added, changed (field by field), unchanged, kept, refused."""

    source: str
    format: str = ""
    encoding: str | None = None
    columns_read: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    records: int = 0
    added: list[dict] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)
    unchanged: int = 0
    #: Classes in the database that the file does not name: kept as they are.
    kept: int = 0
    refused: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = True
    committed: bool = False
    #: The rows to write (code, name, major_code, time_limit_hours, department), parents first.
    rows: list[dict] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        """The plan as JSON-ready data (what the dry run shows)."""
        return {"source": self.source, "format": self.format, "encoding": self.encoding,
                "columns_read": self.columns_read, "ignored_columns": self.ignored_columns,
                "records": self.records, "added": self.added, "changed": self.changed,
                "unchanged": self.unchanged, "kept": self.kept, "refused": self.refused, "notes": self.notes,
                "counts": {"records": self.records, "added": len(self.added), "changed": len(self.changed),
                           "unchanged": self.unchanged, "kept": self.kept, "refused": len(self.refused)},
                "dry_run": self.dry_run, "committed": self.committed}


def parse_limit(value: str | None, unit_hours: float = 1.0) -> tuple[float | None, str | None]:
    """A time limit in hours from '24', '24小时', '3天', '2个工作日', '30分钟' (a bare number in `unit_hours`);
    (None, None) when blank, (None, reason) when unreadable."""
    if value is None or not str(value).strip():
        return None, None
    m = _LIMIT.match(str(value))
    if not m:
        return None, f"time limit {value!r} is not a number of hours (e.g. 24, 24小时, 3天, 2个工作日)"
    n, unit = float(m.group(1)), (m.group(2) or "").lower()
    if unit in ("天", "日", "d", "day", "days") or "工作日" in unit or unit.startswith("workday"):
        hours = n * 24
    elif unit in ("分钟", "min", "minute", "minutes"):
        hours = n / 60
    elif unit:
        hours = n
    else:
        hours = n * unit_hours
    if not (math.isfinite(hours) and 0 < hours <= MAX_LIMIT_HOURS):
        return None, f"time limit {value!r} is not between 0 and {MAX_LIMIT_HOURS:g} hours"
    return hours, None


def _existing(conn: Connection) -> dict[str, dict]:
    rows = conn.execute(text("SELECT code, name, major_code, time_limit_hours, department FROM incident_classes"))
    return {r.code: dict(r._mapping) for r in rows}


def read_class_file(path: str | Path, filename: str | None = None, encoding: str | None = None,
                    mapping: str | dict[str, str] | None = None) -> tuple[pd.DataFrame, ClassPlan]:
    """The file's records as text columns code, name, parent, time_limit, department (None when blank), and a
    plan holding how it was read."""
    path = Path(path)
    source = filename or path.name
    records = read_records(path, CLASS_SPEC, parse_mapping(mapping), source=source, example="code=分类代码",
                           formats=("csv", "xlsx"), encoding=encoding, target="incident_classes", name=filename)
    data, match = records.data, records.match
    plan = ClassPlan(source=source, format=data.format, encoding=data.encoding, records=len(data.frame),
                     columns_read=records.columns_read, ignored_columns=records.ignored_columns)
    out = pd.DataFrame(index=range(len(data.frame)))
    for f in CLASS_SPEC.fields:
        values = records.column(f.name)
        if values is None:
            out[f.name] = None
            continue
        out[f.name] = [None if v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip()
                       else re.sub(r"\.0$", "", str(v).strip()) if f.name == "code" else str(v).strip()
                       for v in values]
    unit = 1.0
    if "time_limit" in match.mapping:
        head = normalise_name(match.mapping["time_limit"])
        if head.endswith(("天", "日", "days", "day")) or "工作日" in head:
            unit = 24.0
            plan.notes.append(f"column {match.mapping['time_limit']!r} is read in days")
    out["record"] = range(1, len(out) + 1)
    out["derived"] = False
    if "parent_name" in match.mapping:
        # majors named on their minor classes' rows: a row each (its first minor's record) unless the file has one
        pairs = out[out["parent"].notna() & out["parent_name"].notna()].drop_duplicates(["parent", "parent_name"])
        majors = pairs[~pairs["parent"].isin(set(out["code"].dropna()))]
        if len(majors):
            out = pd.concat([out, pd.DataFrame({"code": majors["parent"], "name": majors["parent_name"],
                                                "parent": None, "time_limit": None, "department": None,
                                                "parent_name": None, "record": majors["record"],
                                                "derived": True})], ignore_index=True)
            plan.notes.append(f"{majors['parent'].nunique()} major class(es) read from the columns "
                              f"{match.mapping.get('parent')!r} and {match.mapping['parent_name']!r}")
        only_name = out["parent"].isna() & out["parent_name"].notna()
        out.loc[only_name, "parent"] = out.loc[only_name, "parent_name"]  # the parent named by its name alone
    out.attrs["limit_unit_hours"] = unit
    out.attrs["has_department"] = "department" in match.mapping
    out.attrs["has_limit"] = "time_limit" in match.mapping
    return out, plan


def plan_class_table(conn: Connection, path: str | Path, filename: str | None = None,
                     encoding: str | None = None, mapping: str | dict[str, str] | None = None) -> ClassPlan:
    """What importing this class table would add, change and refuse (nothing is written)."""
    frame, plan = read_class_file(path, filename, encoding, mapping)
    existing = _existing(conn)
    refused: dict[int, str] = {}
    seen: dict[str, int] = {}
    rows: dict[str, dict[str, Any]] = {}
    workdays = 0
    for pos, raw in enumerate(frame.to_dict("records")):
        record, derived = int(raw["record"]), bool(raw["derived"])
        r = {k: v if isinstance(v, str) else None for k, v in raw.items()}  # pandas turns blanks into NaN
        code, name = r["code"], r["name"]
        if code is None:
            refused[pos] = "code is empty"
            continue
        if len(code) > MAX_CODE or re.search(r"[\s\x00-\x1f]", code):
            refused[pos] = f"code {code!r} must be 1–{MAX_CODE} characters without spaces"
            continue
        if name is None:
            refused[pos] = f"class {code} has no name"
            continue
        if len(name) > MAX_NAME or "\x00" in name:
            refused[pos] = f"name of {code} is longer than {MAX_NAME} characters"
            continue
        dept = r["department"]
        if dept is not None and len(dept) > MAX_DEPARTMENT:
            refused[pos] = f"department of {code} is longer than {MAX_DEPARTMENT} characters"
            continue
        hours, why = parse_limit(r["time_limit"], frame.attrs["limit_unit_hours"])
        if why:
            refused[pos] = why
            continue
        if r["time_limit"] and "工作日" in str(r["time_limit"]):
            workdays += 1
        row: dict[str, Any] = {"code": code, "name": name, "parent": r["parent"], "time_limit_hours": hours,
                               "department": dept, "record": record, "pos": pos, "derived": derived,
                               "parent_name": r.get("parent_name")}
        if code in seen:
            first = rows[code]
            same = ("name",) if derived or first["derived"] else ("name", "parent", "time_limit_hours", "department")
            if {k: first[k] for k in same} != {k: row[k] for k in same}:
                refused[pos] = f"code {code} appears again (record {seen[code]}) with other values"
            elif not derived:
                plan.notes.append(f"record {record} repeats record {seen[code]} ({code})")
            continue
        seen[code] = record
        rows[code] = row
    if workdays:
        plan.notes.append(f"{workdays} time limit(s) in working days, counted as 24 hours per day")

    # parents: a code, else a unique name, from the file first, then the table in the database
    names_in_file: dict[str, list[str]] = {}
    for code, row in rows.items():
        names_in_file.setdefault(row["name"], []).append(code)
    names_in_db: dict[str, list[str]] = {}
    for code, row in existing.items():
        names_in_db.setdefault(row["name"], []).append(code)
    for code, row in rows.items():
        p = row["parent"]
        if p is None:
            row["major_code"] = None
            continue
        if p in rows or p in existing:
            row["major_code"] = p
        elif len(names_in_file.get(p, [])) == 1:
            row["major_code"] = names_in_file[p][0]
        elif not names_in_file.get(p) and len(names_in_db.get(p, [])) == 1:
            row["major_code"] = names_in_db[p][0]
        else:
            refused[row["pos"]] = (f"parent {p!r} of {code} is neither the code nor the (unique) name of a class "
                                      "in the file or the table")
            continue
        if row["major_code"] == code:
            refused[row["pos"]] = f"class {code} names itself as its parent"
        major = rows.get(row["major_code"]) or existing.get(row["major_code"])
        if row["parent_name"] and major and major["name"] != row["parent_name"] and row["parent_name"] != p:
            refused[row["pos"]] = (f"class {code} names its parent {row['major_code']} {row['parent_name']!r}, "
                                   f"but {row['major_code']} is {major['name']!r}")
    # a refused record's children cannot be written either; then cycles, through the file and the table
    ok = {c: r for c, r in rows.items() if r["pos"] not in refused}
    changed_any = True
    while changed_any:
        changed_any = False
        for code, row in list(ok.items()):
            mc = row.get("major_code")
            if mc is not None and mc not in ok and mc not in existing:
                refused[row["pos"]] = f"parent {mc} of {code} is refused itself"
                del ok[code]
                changed_any = True

    def parent_of(c: str) -> str | None:
        return ok[c]["major_code"] if c in ok else existing.get(c, {}).get("major_code")

    for code in list(ok):
        path_seen, c = [code], parent_of(code)
        while c is not None and c not in path_seen and len(path_seen) <= len(ok) + len(existing):
            path_seen.append(c)
            c = parent_of(c)
        if c is not None and c in path_seen:
            refused[ok[code]["pos"]] = f"class {code} is its own ancestor ({' → '.join([*path_seen, c])})"
    ok = {c: r for c, r in rows.items() if r["pos"] not in refused}

    # time limits: stated, else kept (an existing class), else the parent's, else the default
    def limit_of(c: str, depth: int = 0) -> float:
        if c in ok:
            r = ok[c]
            if r["time_limit_hours"] is not None:
                return r["time_limit_hours"]
            if c in existing:
                return float(existing[c]["time_limit_hours"])
            if r["major_code"] is not None and depth < 50:
                return limit_of(r["major_code"], depth + 1)
            return DEFAULT_LIMIT_HOURS
        return float(existing[c]["time_limit_hours"]) if c in existing else DEFAULT_LIMIT_HOURS

    defaulted = 0
    for code, r in ok.items():
        if r["time_limit_hours"] is None and code not in existing and r["major_code"] is None:
            defaulted += 1
        new: dict[str, Any] = {
            "code": code, "name": r["name"], "major_code": r["major_code"], "time_limit_hours": limit_of(code),
            "department": (r["department"] if frame.attrs["has_department"] and not r["derived"]
                           else existing.get(code, {}).get("department"))}
        old = existing.get(code)
        if old is None:
            plan.added.append({**new, "record": r["record"]})
        else:
            diff = {k: [old[k], new[k]] for k in ("name", "major_code", "time_limit_hours", "department")
                    if (float(old[k]) != float(new[k]) if k == "time_limit_hours" else old[k] != new[k])}
            if diff:
                plan.changed.append({"code": code, "record": r["record"], "changes": diff})
            else:
                plan.unchanged += 1
        plan.rows.append(new)
    if defaulted:
        plan.notes.append(f"{defaulted} class(es) without a time limit or parent get the default "
                          f"{DEFAULT_LIMIT_HOURS:g} hours")
    plan.kept = sum(1 for c in existing if c not in rows)
    plan.refused = [{"record": int(frame.at[pos, "record"]),
                     "code": frame.at[pos, "code"] if isinstance(frame.at[pos, "code"], str) else None, "reason": why}
                    for pos, why in sorted(refused.items())]
    return plan


def import_class_table(conn: Connection, path: str | Path, *, dry_run: bool = False, filename: str | None = None,
                       encoding: str | None = None, mapping: str | dict[str, str] | None = None) -> ClassPlan:
    """Import a class table all or nothing: the plan, written unless `dry_run`; ClassTableRefused (nothing
    written) when any record is refused."""
    plan = plan_class_table(conn, path, filename, encoding, mapping)
    plan.dry_run = dry_run
    if dry_run:
        return plan
    if plan.refused:
        raise ClassTableRefused(f"{len(plan.refused)} record(s) of {plan.source} refused, nothing written: "
                                + "; ".join(f"record {r['record']}: {r['reason']}" for r in plan.refused[:5]),
                                plan=plan.to_json())
    if plan.added or plan.changed:
        # one statement: parents and children arrive together and the foreign key is checked at its end
        conn.execute(text("""
            INSERT INTO incident_classes (code, name, major_code, time_limit_hours, department)
            SELECT code, name, major_code, time_limit_hours, department
            FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                 AS r(code text, name text, major_code text, time_limit_hours double precision, department text)
            ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, major_code = EXCLUDED.major_code,
                time_limit_hours = EXCLUDED.time_limit_hours, department = EXCLUDED.department
        """), {"rows": json.dumps(plan.rows, ensure_ascii=False)})
    plan.committed = True
    return plan


def class_index(conn: Connection) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """The class table by code, and codes by normalised name (for mapping source categories)."""
    by_code = _existing(conn)
    by_name: dict[str, list[str]] = {}
    for code, row in by_code.items():
        by_name.setdefault(normalise_name(row["name"]), []).append(code)
    return by_code, by_name
