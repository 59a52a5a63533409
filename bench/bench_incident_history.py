"""Importing incidents with their history: a dry run and an import of 3,300 records (issue 17's real city), GBK CSV.

The records span 2024–2025 inside the tests' tiny district (tests/incident_data.py), with its city class table
loaded first, every third category given by name, unknown categories mapped, and a few bad rows skipped. Each run
is rolled back, so every one imports into the same database; the table gives medians of `--repeat` runs.

    .venv/bin/python -m bench.bench_incident_history [--records 3300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import tempfile
from pathlib import Path

from sqlalchemy import text

from bench.common import fresh_database, report, timed
from geo.incidents.classes import import_class_table
from geo.incidents.importer import HistoryOptions, import_incident_history
from tests.incident_data import CLASS_TABLE_HEADER, CLASS_TABLE_ROWS, CST, build_tiny_district, history_records

HEADER = ["案件编号", "上报时间", "问题类型", "状态", "经度", "纬度", "问题描述", "立案时间", "派遣时间", "结案时间"]


def _csv(header: list[str], rows: list, path: Path) -> None:
    buf = io.StringIO()
    if rows and isinstance(rows[0], dict):
        w = csv.DictWriter(buf, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    else:
        w2 = csv.writer(buf)
        w2.writerow(header)
        w2.writerows(rows)
    path.write_bytes(buf.getvalue().encode("gbk"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=3300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gridatlas-bench-history-"))
    records, expect = history_records(args.records, seed=11)
    path = folder / "history.csv"
    _csv(HEADER, records, path)
    classes = folder / "classes.csv"
    _csv(CLASS_TABLE_HEADER, CLASS_TABLE_ROWS, classes)
    with fresh_database("gridatlas_bench_history") as engine:
        with engine.begin() as conn:
            build_tiny_district(conn)
            v0 = dt.datetime(2024, 1, 1, tzinfo=CST)
            conn.execute(text("UPDATE boundary_versions SET valid_from = :v"), {"v": v0})
            for table in ("street_boundaries", "community_boundaries", "grid_boundaries"):
                conn.execute(text(f"UPDATE {table} SET valid_from = :v"), {"v": v0})
            import_class_table(conn, classes)

        def run(dry: bool):
            with engine.connect() as conn:
                tx = conn.begin()
                try:
                    return import_incident_history(conn, path, HistoryOptions(
                        category_map={"违章搭建": "G01"}, skip_refused=True, dry_run=dry))
                finally:
                    tx.rollback()

        rows = []
        for label, dry in (("dry run", True), ("import", False)):
            median, runs, rep = timed(lambda dry=dry: run(dry), repeat=args.repeat)
            assert rep.passing == expect["good"], rep.to_json()["counts"]
            rows.append({"step": label, "records": rep.records, "written": rep.imported if not dry else 0,
                         "events": rep.events, "median_s": median, "min_s": min(runs),
                         "records_per_s": rep.records / median})
    report("incident_history", rows, f"incident history import, {args.records:,} records (GBK CSV), "
                                     f"median of {args.repeat}")


if __name__ == "__main__":
    main()
