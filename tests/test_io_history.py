"""Boundaries imported after incidents (issue 17): the start date defaults to cover the incidents already in the
new units' area, they are attributed to the new grids, and the report's counts are what was written.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from geo.io import ImportOptions, import_layer
from tests import io_samples as S

TZ = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture
def with_incidents(migrated_engine, tmp_path):
    """Streets and communities from 2025-01-01, and four incidents of May 2025 in them (no grids yet)."""
    S.load_all(migrated_engine, tmp_path, layers=("streets", "communities", "incidents"))
    with migrated_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents WHERE grid_id IS NULL")).scalar() == 4
    return migrated_engine


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT 'grids', count(*) FROM grids UNION ALL "
            "SELECT 'open', count(*) FROM grid_boundaries WHERE valid_to IS NULL UNION ALL "
            "SELECT 'rows', count(*) FROM grid_boundaries UNION ALL "
            "SELECT 'attributed', count(*) FROM incidents WHERE grid_id IS NOT NULL")).all())


def test_new_grids_start_early_enough_to_cover_the_incidents(with_incidents, tmp_path):
    path = S.write(S.grids(), tmp_path / "grids.geojson")
    dry = import_layer(with_incidents, "grids", path, ImportOptions(dry_run=True))
    assert dry.valid_from_source == "earliest-incident"
    assert dry.valid_from == dt.datetime(2025, 5, 1, tzinfo=TZ)  # the local day of the first incident
    assert any("valid_from defaults to 2025-05-01" in n for n in dry.notes)
    assert dry.incidents_attributed == 4 and counts(with_incidents)["attributed"] == 0  # a dry run writes nothing
    report = import_layer(with_incidents, "grids", path)
    assert report.valid_from == dt.datetime(2025, 5, 1, tzinfo=TZ) and report.committed
    after = counts(with_incidents)
    assert (report.created, report.imported, report.boundaries_ended) == (6, 6, 0)
    assert after == {"grids": 6, "open": 6, "rows": 6, "attributed": 4}
    with with_incidents.connect() as conn:
        attributed = dict(conn.execute(text(
            "SELECT i.description, g.code FROM incidents i JOIN grids g ON g.id = i.grid_id")).all())
    assert attributed["占道经营"] == S.WEST + "001"  # (121.503, 31.243): the west community's top band


def test_a_redraw_starts_now_and_its_counts_are_true(with_incidents, tmp_path):
    path = S.write(S.grids(), tmp_path / "grids.geojson")
    import_layer(with_incidents, "grids", path)
    before = counts(with_incidents)
    again = import_layer(with_incidents, "grids", path)
    assert again.valid_from_source == "now" and again.valid_from > dt.datetime(2026, 1, 1, tzinfo=TZ)
    after = counts(with_incidents)
    assert (again.created, again.imported, again.boundaries_ended) == (0, 6, 6)
    assert after["rows"] - before["rows"] == again.imported and after["open"] == 6 and after["grids"] == 6
    # back-dated before the boundaries in force: written as history, nothing ended, and the report says so
    past = import_layer(with_incidents, "grids", path, ImportOptions(valid_from="2024-06-01"))
    assert (past.created, past.imported, past.boundaries_ended, past.boundaries_before_existing) == (0, 6, 0, 6)
    assert past.valid_from_source == "given" and any("written as history" in n for n in past.notes)
    final = counts(with_incidents)
    assert final["rows"] - after["rows"] == 6 and final["open"] == 6


def test_a_redraw_does_not_rewrite_history_to_cover_incidents(with_incidents, tmp_path):
    # the west grids first, from 2025-06-01: the incidents of May in them are not covered
    import_layer(with_incidents, "grids", S.write(S.grids().iloc[:3], tmp_path / "west.geojson"),
                 ImportOptions(valid_from="2025-06-01"))
    report = import_layer(with_incidents, "grids", S.write(S.grids(), tmp_path / "all.geojson"),
                          ImportOptions(dry_run=True))
    assert report.valid_from_source == "now"  # three of the file's grids have boundaries already
    assert any("give valid_from to cover them" in n for n in report.notes)
