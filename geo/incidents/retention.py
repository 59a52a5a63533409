"""Monthly partitions of the incidents (事件按月分区): creating them ahead, archiving old months, restoring them.

The partitioned tables (migration 0022) are `incidents` by reported_at, `incident_events` by at and the two rollups
by month, all in local months (Asia/Shanghai); `incident_partitions_ensure(lo, hi)` (SQL) creates missing months.

Archiving a month M (归档) writes, in one transaction per month:
- the month's incidents partition, the rows of every table referencing them (events, photos …, found through
  their foreign keys to incidents) and the month's rollup partitions, each as gzip'd CSV (COPY, streamed, so
  memory stays bounded) with its SHA-256 and row count in `manifest.json`;
- then deletes the referencing rows, drops the incidents and rollup partitions of M and any event partition
  left empty. Dropping is DDL, not a DELETE: the rollup triggers do not fire, so the rollups of the months kept
  (which also count the archived cases that were due or closed after M) are unchanged, and KPIs and heatmaps
  over the remaining range answer as before. Photo files stay where they are (their rows keep the paths).
Restoring reads a month's directory back (checksums first), with triggers and reference checks off while the rows
go in (`session_replication_role = replica`: a superuser or a role granted SET on it), so counts are not added twice.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from geo.errors import DomainError

#: The partitioned tables and their partition keys (migration 0022), parents first.
PARTITIONED = (("incidents", "reported_at"), ("incident_events", "at"), ("incident_rollup", "month"),
               ("incident_heat_rollup", "month"))
ROLLUPS = ("incident_rollup", "incident_heat_rollup")
TZ = "Asia/Shanghai"
MANIFEST = "manifest.json"
#: How long archiving waits for the lock that drops a partition (writers queue behind it meanwhile).
LOCK_TIMEOUT = "10s"
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class RetentionError(DomainError):
    """A retention or restore request that cannot be carried out as asked."""

    slug = "incident-retention"
    kind = "invalid"


@dataclass
class TableDump:
    """One table's rows of an archived month: file, rows, SHA-256 and columns (in the file's order)."""

    table: str
    file: str
    rows: int
    sha256: str
    columns: list[str]


@dataclass
class MonthArchive:
    """What archiving one month did (or, in a dry run, would do)."""

    month: str
    path: str | None
    tables: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    bytes: int = 0
    #: why the month was left in place (it still has open cases), None when archived
    skipped: str | None = None


def parse_month(value: str) -> dt.date:
    """The first day of a month given as YYYY-MM."""
    m = _MONTH.match(value.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise RetentionError(f"{value!r} is not a month: expected YYYY-MM, e.g. 2020-01")
    return dt.date(int(m.group(1)), int(m.group(2)), 1)


def _next_month(d: dt.date) -> dt.date:
    return dt.date(d.year + d.month // 12, d.month % 12 + 1, 1)


def ensure_partitions(conn: Connection, months_ahead: int = 3, months_back: int = 0) -> int:
    """Create the monthly partitions from `months_back` before this month to `months_ahead` after it (moving rows
    that arrived in a default partition meanwhile); how many were created."""
    return int(conn.execute(text(
        "SELECT incident_partitions_ensure(now() - make_interval(months => :back), "
        "now() + make_interval(months => :ahead))"), {"back": months_back, "ahead": months_ahead}).scalar_one())


def partitions(conn: Connection) -> list[dict[str, Any]]:
    """Every partition of the partitioned incident tables: table, partition, month ('YYYY-MM', None for the
    default) and the planner's row estimate."""
    rows = conn.execute(text("""
        SELECT p.relname AS parent, c.relname AS partition, c.reltuples::bigint AS estimate,
               pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = ANY(:tables) AND c.relkind = 'r' ORDER BY p.relname, c.relname"""),
        {"tables": [t for t, _ in PARTITIONED]}).mappings().all()
    out = []
    for r in rows:
        m = re.search(r"_p(\d{4})(\d{2})$", r["partition"])
        out.append({"table": r["parent"], "partition": r["partition"],
                    "month": f"{m.group(1)}-{m.group(2)}" if m else None, "estimate": max(int(r["estimate"]), 0)})
    return out


def references(conn: Connection) -> list[tuple[str, str, str]]:
    """Tables referencing incidents: (table, id column, reported_at column), from their foreign keys."""
    rows = conn.execute(text("""
        SELECT c.conrelid::regclass::text,
               array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k (n, o)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o)::text[]
        FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = 'incidents'::regclass AND c.conparentid = 0
        ORDER BY 1""")).all()
    return [(t, cols[0], cols[1]) for t, cols in rows if len(cols) == 2]


def _bounds(conn: Connection, month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    b = conn.execute(text("SELECT (CAST(:m AS timestamp) AT TIME ZONE :tz), (CAST(:n AS timestamp) AT TIME ZONE :tz)"),
                     {"m": month, "n": _next_month(month), "tz": TZ}).one()
    return b[0], b[1]


def _columns(conn: Connection, table: str) -> list[str]:
    return list(conn.execute(text(
        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped "
        "AND attgenerated = '' ORDER BY attnum"), {"t": table}).scalars())


def _exists(conn: Connection, name: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar_one()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def months_to_archive(conn: Connection, before: dt.date) -> list[dt.date]:
    """Months before `before` holding incidents in a monthly partition (oldest first)."""
    found = set()
    for p in partitions(conn):
        if p["table"] in ("incidents", *ROLLUPS) and p["month"]:
            month = parse_month(p["month"])
            if month < before:
                found.add(month)
    return sorted(found)


def _count(conn: Connection, sql: str, params: dict) -> int:
    return int(conn.execute(text(f"SELECT count(*) FROM ({sql}) s"), params).scalar_one())


def _month_queries(conn: Connection, month: dt.date) -> tuple[dict[str, str], dict]:
    """The SELECT of each table's rows belonging to `month` (incidents, referencing tables, rollups), and the
    month's bounds (`b0`, `b1`) as parameters for the DELETE of the referencing rows."""
    b0, b1 = _bounds(conn, month)
    params = {"b0": b0, "b1": b1}
    # literal bounds: COPY takes no parameters
    between = "{c} >= '" + b0.isoformat() + "'::timestamptz AND {c} < '" + b1.isoformat() + "'::timestamptz"
    tag = f"{month:%Y%m}"
    queries: dict[str, str] = {}
    if _exists(conn, f"incidents_p{tag}"):
        cols = ", ".join(map(_q, _columns(conn, "incidents")))
        queries["incidents"] = f"SELECT {cols} FROM incidents_p{tag}"
        for table, _id, at in references(conn):
            cols = ", ".join(map(_q, _columns(conn, table)))
            queries[table] = f"SELECT {cols} FROM {_q(table)} WHERE {between.format(c=_q(at))}"
    for table in ROLLUPS:
        if _exists(conn, f"{table}_p{tag}"):
            cols = ", ".join(map(_q, _columns(conn, table)))
            queries[table] = f"SELECT {cols} FROM {table}_p{tag}"
    return queries, params


def _default_rows_before(conn: Connection, before: dt.datetime) -> int:
    return sum(_count(conn, f"SELECT 1 FROM {t}_default WHERE {k} < :before", {"before": before})
               for t, k in PARTITIONED if _exists(conn, f"{t}_default"))


def archive(engine: Engine, before: str, to: Path | None, *, dry_run: bool = False,
            include_open: bool = False) -> list[MonthArchive]:
    """Archive every month before `before` (YYYY-MM) to directories under `to` and drop it (see the module
    docstring); a month with open cases stays (they would vanish from the open lists) unless `include_open`; a dry
    run counts the rows and changes nothing."""
    cutoff = parse_month(before)
    if not dry_run and to is None:
        raise RetentionError("say where the archive goes (--to DIR)")
    with engine.connect() as conn:
        end = _bounds(conn, cutoff)[0]
        if _default_rows_before(conn, end):
            # rows older than any partition: into monthly partitions first, so they are archived with their month
            # (in a dry run too, inside the transaction rolled back at the end)
            lo = conn.execute(text("SELECT least(" + ", ".join(
                f"(SELECT min({k}) FROM {t}_default)" for t, k in PARTITIONED) + ")")).scalar_one()
            conn.execute(text("SELECT incident_partitions_ensure(:lo, :hi)"), {"lo": lo, "hi": end})
            if _default_rows_before(conn, end) and not dry_run:
                conn.rollback()
                raise RetentionError("rows before the cutoff are in a default partition and could not be moved to "
                                     "monthly partitions (that needs a superuser); nothing archived")
            if not dry_run:
                conn.commit()
        months = months_to_archive(conn, cutoff)
        if dry_run:
            plan = [_archive_month(conn, month, None, include_open) for month in months]
            conn.rollback()
            return plan
        conn.rollback()
    done = []
    for month in months:
        with engine.connect() as conn:
            done.append(_archive_month(conn, month, to, include_open))
    with engine.begin() as conn:
        dropped = _drop_empty_event_partitions(conn, cutoff)
    if dropped and done:
        done[-1].dropped.extend(dropped)
    return done


def _archive_month(conn: Connection, month: dt.date, to: Path | None, include_open: bool) -> MonthArchive:
    """Archive one month to a directory under `to` and drop it, committing; `to` None: count only (a dry run,
    nothing committed)."""
    tag = f"{month:%Y%m}"
    label = f"{month:%Y-%m}"
    queries, params = _month_queries(conn, month)
    if "incidents" in queries and not include_open:
        n_open = conn.execute(text(f"SELECT count(*) FROM incidents_p{tag} i JOIN incident_states s "
                                   "ON s.code = i.state WHERE s.is_open")).scalar_one()
        if n_open:
            return MonthArchive(label, None, skipped=f"{n_open:,} open cases")
    if to is None:
        return MonthArchive(label, None, {t: _count(conn, q, {}) for t, q in queries.items()},
                            [n for n in (f"incidents_p{tag}", *(f"{t}_p{tag}" for t in ROLLUPS)) if _exists(conn, n)])
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    if "incidents" in queries:
        # readers go on; writers to these cases (a transition, a new event or photo) wait, then find them gone
        conn.execute(text(f"LOCK TABLE incidents_p{tag} IN EXCLUSIVE MODE"))
    out = to / f"incidents-{label}"
    out.mkdir(parents=True, exist_ok=True)
    dumps = [_dump(conn, table, sql, out) for table, sql in queries.items()]
    manifest = {"month": label, "tz": TZ, "bounds": [params["b0"].isoformat(), params["b1"].isoformat()],
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "revision": conn.execute(text("SELECT string_agg(version_num, ',' ORDER BY version_num) "
                                              "FROM alembic_version")).scalar_one(),
                "tables": [d.__dict__ for d in dumps]}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    dropped = []
    for table, _id, at in references(conn):
        conn.execute(text(f"DELETE FROM {_q(table)} WHERE {_q(at)} >= :b0 AND {_q(at)} < :b1"), params)
    for parent in ("incidents", *ROLLUPS):
        name = f"{parent}_p{tag}"
        if _exists(conn, name):
            # detached first: that checks no reference to its cases is left (a plain DROP would refuse)
            conn.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {name}"))
            conn.execute(text(f"DROP TABLE {name}"))
            dropped.append(name)
    conn.commit()
    return MonthArchive(label, str(out), {d.table: d.rows for d in dumps}, dropped,
                        sum((out / d.file).stat().st_size for d in dumps))


def _drop_empty_event_partitions(conn: Connection, cutoff: dt.date) -> list[str]:
    """Drop the event partitions of months before `cutoff` that archiving left empty."""
    dropped = []
    for p in partitions(conn):
        if p["table"] == "incident_events" and p["month"] and parse_month(p["month"]) < cutoff \
                and not conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {p['partition']})")).scalar_one():
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            conn.execute(text(f"DROP TABLE {p['partition']}"))
            dropped.append(p["partition"])
    return dropped


def _dump(conn: Connection, table: str, sql: str, out: Path) -> TableDump:
    """COPY one query's rows to a gzip'd CSV with a header, hashing the file as it is written."""
    raw = conn.connection.driver_connection
    assert raw is not None
    name = f"{table}.csv.gz"
    digest = hashlib.sha256()
    with (out / name).open("wb") as f:
        gz = gzip.GzipFile(fileobj=_Hashing(f, digest), mode="wb", mtime=0)
        with raw.cursor().copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)") as copy:
            for block in copy:
                gz.write(block)
        gz.close()
    columns = list(conn.execute(text(f"SELECT * FROM ({sql}) s LIMIT 0")).keys())
    return TableDump(table, name, _count(conn, sql, {}), digest.hexdigest(), columns)


class _Hashing:
    """A binary file wrapper that hashes what is written through it."""

    def __init__(self, f, digest) -> None:
        self.f, self.digest = f, digest

    def write(self, b) -> int:
        self.digest.update(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def read_manifest(path: Path) -> dict:
    """A month archive's manifest, with every file's checksum verified."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise RetentionError(f"{path} holds no {MANIFEST}: not a month archive")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    for t in manifest["tables"]:
        digest = hashlib.sha256()
        with (path / t["file"]).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != t["sha256"]:
            raise RetentionError(f"{path / t['file']}: checksum mismatch (the archive is damaged); nothing restored")
    return manifest


def restore(engine: Engine, path: Path) -> dict[str, int]:
    """Load a month archive back (checksums verified first); rows restored per table."""
    paths = sorted(p.parent for p in path.glob(f"*/{MANIFEST}")) if not (path / MANIFEST).exists() else [path]
    if not paths:
        raise RetentionError(f"{path} holds no month archive ({MANIFEST})")
    total: dict[str, int] = {}
    for p in paths:
        for table, n in _restore_month(engine, p).items():
            total[table] = total.get(table, 0) + n
    return total


def _restore_month(engine: Engine, path: Path) -> dict[str, int]:
    manifest = read_manifest(path)
    month = parse_month(manifest["month"])
    tag = f"{month:%Y%m}"
    restored: dict[str, int] = {}
    with engine.connect() as conn:
        may = conn.execute(text("SELECT rolsuper OR has_parameter_privilege('session_replication_role', 'SET') "
                                "FROM pg_roles WHERE rolname = current_user")).scalar_one()
        if not may:
            raise RetentionError("restoring needs a role that may set session_replication_role (the schema owner "
                                 "on the local cluster)")
        if _exists(conn, f"incidents_p{tag}") and conn.execute(
                text(f"SELECT EXISTS (SELECT 1 FROM incidents_p{tag})")).scalar_one():
            raise RetentionError(f"incidents of {manifest['month']} are in the database already; nothing restored")
        b0, b1 = _bounds(conn, month)
        conn.execute(text("SELECT incident_partitions_ensure(:b0, :b1)"), {"b0": b0, "b1": b1})
        # the events of a month's incidents happened in that month or later: their months exist or go to default
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        order = ["incidents", *[t["table"] for t in manifest["tables"] if t["table"] not in ("incidents", *ROLLUPS)],
                 *ROLLUPS]
        by_table = {t["table"]: t for t in manifest["tables"]}
        for table in order:
            if table not in by_table:
                continue
            t = by_table[table]
            target = table
            if table in ROLLUPS:
                # counts a write added to the month since it was archived are added to, not replaced
                conn.execute(text(f"CREATE TEMP TABLE restore_{table} (LIKE {table}) ON COMMIT DROP"))
                target = f"restore_{table}"
            _copy_in(conn, target, t["columns"], path / t["file"])
            if table in ROLLUPS:
                _merge_rollup(conn, table, target)
            restored[table] = int(t["rows"])
        conn.commit()
    return restored


def _copy_in(conn: Connection, table: str, columns: list[str], file: Path) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    cols = ", ".join(map(_q, columns))
    sql = f"COPY {_q(table)} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)"
    with raw.cursor().copy(sql) as copy, gzip.open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            copy.write(chunk)


def _merge_rollup(conn: Connection, table: str, staged: str) -> None:
    if table == "incident_heat_rollup":
        conn.execute(text(f"INSERT INTO incident_heat_rollup AS r SELECT * FROM {staged} "
                          "ON CONFLICT (cell_m, month, q, r) DO UPDATE SET n = r.n + EXCLUDED.n"))
        return
    measures = ("received", "rejected", "registered", "due", "on_time", "reworked", "extended")
    keys = "level, month, closed_month, handled_month, street_id, community_id, grid_id, class_code, department"
    conn.execute(text(f"INSERT INTO incident_rollup AS r SELECT * FROM {staged} ON CONFLICT ({keys}) DO UPDATE SET "
                      + ", ".join(f"{m} = r.{m} + EXCLUDED.{m}" for m in measures)))
