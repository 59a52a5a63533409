"""Hexagon heat counts on Dask (`geo.batch.heat`) equal the in-process heatmap's (`geo.incidents.heatmap.hex_counts`)
and a set-based SQL count through the same hexagon SQL, over the test district's incidents, whole years and
partial months at the period's ends.

The cluster is a small `LocalCluster` (two single-thread workers in this process): the machine is shared.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

pytest.importorskip("distributed", reason="dask[distributed] is not installed (scripts/bootstrap installs it)")

from geo.batch.cluster import dask_client  # noqa: E402
from geo.batch.heat import COLUMNS, heat_counts_dask  # noqa: E402
from geo.incidents.heatmap import HeatmapQuery, district_frame, hex_counts  # noqa: E402
from geo.incidents.hexagons import hex_axial_sql  # noqa: E402
from geo.incidents.kpi import rollup_timezone  # noqa: E402
from geo.incidents.periods import month_starts  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2, processes=False) as c:
        yield c


def _in_process(conn, size: float, start: dt.datetime, end: dt.datetime, tz: str) -> pd.DataFrame:
    """The heatmap's own counts from the incidents (no rollup), in the Dask job's order."""
    q = HeatmapQuery(start=start, end=end, cell_m=size, timezone=tz, use_rollup=False)
    counts = hex_counts(conn, q, district_frame(conn), size, month_starts(start, end, tz))
    return counts.sort_values(["month", "q", "r"], ignore_index=True)[COLUMNS]


def _sql(conn, size: float, start: dt.datetime, end: dt.datetime, tz: str) -> pd.DataFrame:
    """One set-based count: the hexagon SQL and PostgreSQL's own local month (date_trunc in `tz`)."""
    x, y = district_frame(conn).forward_sql("i.lon", "i.lat")
    q, r = hex_axial_sql(x, y, size)
    rows = conn.execute(text(f"""
        SELECT {q} AS q, {r} AS r, to_char(date_trunc('month', i.reported_at, :tz) AT TIME ZONE :tz, 'YYYY-MM') AS m,
               count(*) FROM incidents i
        WHERE i.reported_at >= :s AND i.reported_at < :e AND i.lon IS NOT NULL
        GROUP BY 1, 2, 3 ORDER BY 3, 1, 2"""), {"tz": tz, "s": start, "e": end}).all()
    return pd.DataFrame(rows, columns=COLUMNS).astype({"q": np.int64, "r": np.int64, "n": np.int64})


def _span(conn, tz: str) -> tuple[dt.datetime, dt.datetime]:
    lo, hi = conn.execute(text("SELECT min(reported_at), max(reported_at) FROM incidents")).one()
    return month_starts(lo, hi, tz)[0], hi + dt.timedelta(microseconds=1)


@pytest.mark.parametrize("size", [150.0, 60.0])
def test_heat_counts_on_dask_equal_in_process_over_all_years(engine, client, size):
    with engine.connect() as conn:
        tz = rollup_timezone(conn) or "Asia/Shanghai"
        start, end = _span(conn, tz)
        expected = _in_process(conn, size, start, end, tz)
        seen: list[tuple[int, int]] = []
        got = heat_counts_dask(client, conn, size, start, end, months_per_part=2,
                               progress=lambda d, t: seen.append((d, t)))
        sql = _sql(conn, size, start, end, tz)
        total = conn.execute(text("SELECT count(*) FROM incidents WHERE lon IS NOT NULL")).scalar_one()
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(got, sql)
    # not trivial: every incident counted, many cells and months, several partitions reported as they finished
    assert got["n"].sum() == total > 50
    assert got["month"].nunique() >= 3 and len(got) > got["month"].nunique()
    assert len(seen) == -(-len(month_starts(start, end, tz)[:-1]) // 2) and seen[-1][0] == seen[-1][1] > 1


def test_heat_counts_on_dask_with_partial_months_at_both_ends(engine, client):
    with engine.connect() as conn:
        tz = rollup_timezone(conn) or "Asia/Shanghai"
        times = conn.execute(text("SELECT reported_at FROM incidents ORDER BY reported_at")).scalars().all()
        start, end = times[len(times) // 5], times[4 * len(times) // 5]  # mid-month instants, most likely
        expected = _in_process(conn, 100.0, start, end, tz)
        got = heat_counts_dask(client, conn, 100.0, start, end, months_per_part=1)
        inside = sum(1 for t in times if start <= t < end)
    pd.testing.assert_frame_equal(got, expected)
    assert got["n"].sum() == inside > 0


def test_heat_counts_on_dask_of_an_empty_period(engine, client):
    with engine.connect() as conn:
        got = heat_counts_dask(client, conn, 150.0, dt.datetime(1990, 1, 1, tzinfo=dt.UTC),
                               dt.datetime(1991, 1, 1, tzinfo=dt.UTC))
    assert got.empty and list(got.columns) == COLUMNS


def test_heat_counts_on_dask_across_years_count_in_local_months(db_session, client):
    """Incidents added years before the district's own (in this test's transaction, which the job reads): one at
    New Year's Eve 20:00 UTC, which is already January in Shanghai, so the local month, not the UTC one, counts."""
    from geo.incidents.closed_loop import create_incident

    conn = db_session.connection()
    tz = rollup_timezone(conn) or "Asia/Shanghai"
    lon, lat, code = conn.execute(text("SELECT lon, lat, class_code FROM incidents ORDER BY id LIMIT 1")).one()
    for at in ("2022-06-15T03:00:00+00:00", "2023-12-31T20:00:00+00:00", "2024-07-01T12:00:00+00:00"):
        create_incident(conn, lon=lon, lat=lat, class_code=code, source="patrol", actor="t",
                        reported_at=dt.datetime.fromisoformat(at))
    start, end = _span(conn, tz)
    expected = _in_process(conn, 150.0, start, end, tz)
    got = heat_counts_dask(client, conn, 150.0, start, end, months_per_part=6)
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(got, _sql(conn, 150.0, start, end, tz))
    assert start.astimezone(dt.UTC).year == 2022 and {"2022-06", "2024-01", "2024-07"} <= set(got["month"])
    assert "2023-12" not in set(got["month"])
