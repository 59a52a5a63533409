"""Retention (事件归档): old months archived to checksummed files and dropped, KPIs and heatmaps over the months kept
unchanged, the archive restored exactly, a dry run changing nothing, damaged archives refused.

The year of varied cases of tests/test_incident_rollup.py (2025, in the default partition of a database migrated
now, moved into monthly partitions by the archiving itself); cases still open before the cutoff are cancelled first
(a month with open cases is kept unless asked).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from geo.incidents import heatmap as hm
from geo.incidents import retention
from geo.incidents.kpi import GROUPS, KpiQuery, compute_kpis
from tests.incident_data import CST
from tests.test_incident_rollup import drive_some, load_year
from tests.test_incidents import tiny_engine  # noqa: F401  (fixture)

CUTOFF = "2025-07"
KEPT = (dt.datetime(2025, 7, 1, tzinfo=CST), dt.datetime(2026, 1, 1, tzinfo=CST))


@pytest.fixture
def year_engine(tiny_engine):  # noqa: F811
    """The committed year with a hexagon size built; everything removed afterwards."""
    with tiny_engine.begin() as conn:
        load_year(conn)
        drive_some(conn)
        conn.execute(text("UPDATE incidents i SET state = 'cancelled' FROM incident_states s "
                          "WHERE s.code = i.state AND s.is_open AND i.reported_at < :c"), {"c": KEPT[0]})
    yield tiny_engine
    with tiny_engine.begin() as c:
        c.execute(text("TRUNCATE incidents CASCADE"))
        c.execute(text("DELETE FROM incident_heat_sizes"))


def _figures(engine) -> dict:
    """KPIs of every grouping over the months kept (rollup path), and the heatmap's cells and monthly counts."""
    with engine.connect() as conn:
        kpis = {by: compute_kpis(conn, KpiQuery(*KEPT, by=by)) for by in GROUPS}
        h = hm.build_heatmap(conn, hm.HeatmapQuery(start=KEPT[0], end=KEPT[1], cell_m=60.0, permutations=0),
                             with_hotspots=False)
        conn.commit()
    return {"kpis": kpis, "cells": h.cells[["q", "r", "total"]].reset_index(drop=True), "monthly": h.monthly,
            "count": h.incident_count}


def _same(a: dict, b: dict) -> None:
    assert a["kpis"] == b["kpis"]
    assert a["cells"].equals(b["cells"]) and np.array_equal(a["monthly"], b["monthly"]) and a["count"] == b["count"]


def _state(engine) -> dict:
    with engine.connect() as conn:
        return {
            "incidents": conn.execute(text("SELECT * FROM incidents ORDER BY id")).all(),
            "events": conn.execute(text("SELECT * FROM incident_events ORDER BY id")).all(),
            "rollup": conn.execute(text("SELECT * FROM incident_rollup WHERE (received, rejected, registered, due) "
                                        "<> (0, 0, 0, 0) ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9")).all(),
            "heat": conn.execute(text("SELECT * FROM incident_heat_rollup WHERE n <> 0 ORDER BY 1, 2, 3, 4")).all(),
        }


def test_archive_and_restore(year_engine, tmp_path):
    """Six months archived: files with checksums and counts, partitions gone, the months kept answer the same
    KPIs and heatmap; restoring gives back every row and count."""
    before_figures = _figures(year_engine)
    before = _state(year_engine)
    with year_engine.connect() as conn:
        expect = conn.execute(text("SELECT count(*) FROM incidents WHERE reported_at < :c"),
                              {"c": KEPT[0]}).scalar_one()
    assert expect > 500

    done = retention.archive(year_engine, CUTOFF, tmp_path)
    assert [m.month for m in done] == [f"2025-{k:02d}" for k in range(1, 7)]
    assert sum(m.tables["incidents"] for m in done) == expect
    with year_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents WHERE reported_at < :c"),
                            {"c": KEPT[0]}).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM incident_events WHERE incident_reported_at < :c"),
                            {"c": KEPT[0]}).scalar_one() == 0
        names = {p["partition"] for p in retention.partitions(conn)}
    assert not any(n.endswith(("_p202501", "_p202506")) for n in names), names
    assert len(_state(year_engine)["incidents"]) == len(before["incidents"]) - expect
    manifest = json.loads((tmp_path / "incidents-2025-03" / "manifest.json").read_text())
    files = {t["table"]: t for t in manifest["tables"]}
    assert {"incidents", "incident_events", "incident_photos", "incident_rollup", "incident_heat_rollup"} <= set(files)
    with gzip.open(tmp_path / "incidents-2025-03" / "incidents.csv.gz", "rt") as f:
        lines = f.read().splitlines()
    assert len(lines) == files["incidents"]["rows"] + 1 and lines[0].startswith("id,")

    _same(_figures(year_engine), before_figures)

    restored = retention.restore(year_engine, tmp_path)
    assert restored["incidents"] == expect
    after = _state(year_engine)
    for k in before:
        assert after[k] == before[k], k
    _same(_figures(year_engine), before_figures)


def test_dry_run_and_open_cases_change_nothing(year_engine, tmp_path):
    """A dry run counts and writes nothing; a month with open cases is kept unless asked."""
    before = _state(year_engine)
    plan = retention.archive(year_engine, CUTOFF, tmp_path / "dry", dry_run=True)
    assert [m.month for m in plan] == [f"2025-{k:02d}" for k in range(1, 7)] and all(m.path is None for m in plan)
    assert sum(m.tables["incidents"] for m in plan) == len([r for r in before["incidents"]
                                                            if r.reported_at < KEPT[0]])
    assert not (tmp_path / "dry").exists()
    with year_engine.begin() as conn:
        conn.execute(text("UPDATE incidents SET state = 'dispatched' WHERE id = (SELECT min(id) FROM incidents "
                          "WHERE reported_at >= '2025-02-01+08' AND reported_at < '2025-03-01+08' "
                          "AND state = 'cancelled' AND due_at IS NOT NULL)"))
    before = _state(year_engine)
    done = retention.archive(year_engine, "2025-03", tmp_path)
    assert [(m.month, m.skipped) for m in done] == [("2025-01", None), ("2025-02", "1 open cases")]
    with year_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents WHERE reported_at < '2025-03-01+08'")).scalar_one() \
            == len([r for r in before["incidents"] if dt.datetime(2025, 2, 1, tzinfo=CST) <= r.reported_at
                    < dt.datetime(2025, 3, 1, tzinfo=CST)])


def test_damaged_archive_is_refused(year_engine, tmp_path):
    """A file whose checksum does not match is named and nothing is restored."""
    retention.archive(year_engine, "2025-02", tmp_path)
    path = tmp_path / "incidents-2025-01" / "incident_events.csv.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(retention.RetentionError, match="checksum"):
        retention.restore(year_engine, tmp_path / "incidents-2025-01")
    with year_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents WHERE reported_at < '2025-02-01+08'")).scalar_one() \
            == 0
    with pytest.raises(retention.RetentionError, match="YYYY-MM"):
        retention.archive(year_engine, "2025-13", tmp_path)


def test_command_line(year_engine, tmp_path, monkeypatch):
    """`gridatlas incidents retention --dry-run`, then for real, `partitions` and `restore`."""
    import cli.retention as cmd
    from cli import app

    monkeypatch.setattr(cmd, "admin_engine", lambda: year_engine)
    runner = CliRunner()
    r = runner.invoke(app, ["incidents", "retention", "--archive-before", "2025-02", "--to", str(tmp_path),
                            "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "2025-01" in r.output and "dry run" in r.output and not any(tmp_path.iterdir())
    r = runner.invoke(app, ["incidents", "retention", "--archive-before", "2025-02", "--to", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "incidents-2025-01" / "manifest.json").is_file()
    r = runner.invoke(app, ["incidents", "partitions"])
    assert r.exit_code == 0 and "incidents_p202502" in r.output and "incidents_p202501" not in r.output, r.output
    r = runner.invoke(app, ["incidents", "restore", str(tmp_path)])
    assert r.exit_code == 0 and "incidents:" in r.output, r.output
    r = runner.invoke(app, ["incidents", "retention", "--archive-before", "bad", "--to", str(tmp_path)])
    assert r.exit_code == 1 and "YYYY-MM" in r.output
