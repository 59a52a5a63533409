"""District-wide batch jobs on Dask (`geo.batch`) give the same answers as the in-process paths: locate (arrays and
a CSV file read in blocks), incident attribution at report time (across a redraw), compound classification.

The cluster is a small `LocalCluster` (two single-thread workers in this process): the machine is shared.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

pytest.importorskip("distributed", reason="dask[distributed] is not installed (scripts/bootstrap installs it)")

from geo.batch.attribute import COLUMNS, attribute_incidents_dask  # noqa: E402
from geo.batch.classify import classify_compounds_dask  # noqa: E402
from geo.batch.cluster import dask_client  # noqa: E402
from geo.batch.locate import locate_csv, locate_frame_in_process, locate_points  # noqa: E402
from geo.locate.index import read_frames  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2, processes=False) as c:
        yield c


def _points(conn, n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """n random points over the district's extent and a margin around it (some in no grid at all)."""
    minx, miny, maxx, maxy = conn.execute(text(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
        "(SELECT ST_Extent(geom) AS e FROM current_grids) g")).one()
    rng = np.random.default_rng(seed)
    pad_x, pad_y = (maxx - minx) * 0.05, (maxy - miny) * 0.05
    return (rng.uniform(minx - pad_x, maxx + pad_x, n), rng.uniform(miny - pad_y, maxy + pad_y, n))


def test_locate_points_on_dask_matches_in_process(engine, client):
    with engine.connect() as conn:
        lon, lat = _points(conn, 20_000)
        frames = read_frames(conn)
        expected = locate_frame_in_process(conn, lon, lat)
    seen: list[tuple[int, int]] = []
    got = locate_points(client, frames, lon, lat, partitions=6, progress=lambda d, t: seen.append((d, t)))
    pd.testing.assert_frame_equal(got, expected)
    assert seen[-1] == (6, 6)
    assert expected["grid_id"].notna().mean() > 0.5 and expected["grid_id"].isna().any()


def test_locate_csv_file_in_blocks(engine, client, tmp_path):
    with engine.connect() as conn:
        lon, lat = _points(conn, 30_000, seed=5)
        path = tmp_path / "points.csv"
        pd.DataFrame({"ref": np.arange(len(lon)), "lon": lon, "lat": lat}).to_csv(path, index=False,
                                                                                    float_format="%.9f")
        back = pd.read_csv(path)  # what the file holds, to the printed digits
        expected = locate_frame_in_process(conn, back["lon"].to_numpy(), back["lat"].to_numpy())
        got = locate_csv(client, conn, str(path), blocksize=200_000)
    assert got["ref"].tolist() == list(range(len(lon)))
    pd.testing.assert_frame_equal(got[expected.columns].reset_index(drop=True), expected)


def _swap_two_grids(conn, at: dt.datetime) -> tuple[int, int]:
    """A redraw at `at`: two grids exchange their boundaries from then on (a new boundary version)."""
    a, b = conn.execute(text("SELECT grid_id FROM grid_boundaries WHERE valid_to IS NULL ORDER BY grid_id "
                             "LIMIT 2")).scalars().all()
    version = conn.execute(text("INSERT INTO boundary_versions (valid_from, label) VALUES (:t, 'batch test swap') "
                                "RETURNING id"), {"t": at}).scalar_one()
    cols = [c for c in conn.execute(text(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'grid_boundaries' "
        "AND column_name NOT IN ('id', 'grid_id', 'version_id', 'valid_from', 'valid_to', 'geom')")).scalars()]
    extra = "".join(f", {c}" for c in cols)
    conn.execute(text("UPDATE grid_boundaries SET valid_to = :t WHERE grid_id IN (:a, :b) AND valid_to IS NULL "
                      "AND valid_from < :t"), {"t": at, "a": a, "b": b})
    conn.execute(text(f"""
        INSERT INTO grid_boundaries (grid_id, version_id, valid_from, valid_to, geom{extra})
        SELECT o.grid_id, :v, :t, NULL, s.geom{''.join(f', o.{c}' for c in cols)}
        FROM grid_boundaries o JOIN grid_boundaries s
          ON s.grid_id = CASE WHEN o.grid_id = :a THEN :b ELSE :a END AND s.valid_to = :t
        WHERE o.grid_id IN (:a, :b) AND o.valid_to = :t"""), {"v": version, "t": at, "a": a, "b": b})
    return a, b


def test_attribution_on_dask_matches_sql_across_a_redraw(db_session, client):
    from geo.incidents.attribution import attribution_sql

    conn = db_session.connection()
    times = conn.execute(text("SELECT reported_at FROM incidents ORDER BY reported_at")).scalars().all()
    assert len(times) > 50, "the test district has incidents"
    at = times[len(times) // 2]
    a, b = _swap_two_grids(conn, at)
    rows = conn.execute(text(f"SELECT * FROM ({attribution_sql()}) s ORDER BY id")).mappings().all()
    expected = pd.DataFrame([dict(r) for r in rows])[COLUMNS].astype("Int64")
    got = attribute_incidents_dask(client, conn, chunk_rows=400)
    pd.testing.assert_frame_equal(got.astype("Int64"), expected)
    # The redraw matters: two boundary versions are in use, and some incidents after it (only after it) now
    # belong to the other grid than the attribution stored at load time, before the redraw, says.
    assert expected["version_id"].nunique() >= 2
    stored = conn.execute(text("SELECT id, grid_id, reported_at >= :t AS after FROM incidents ORDER BY id"),
                          {"t": at}).all()
    moved = [(row.after, row.grid_id, g) for row, g in zip(stored, expected["grid_id"], strict=True)
             if row.grid_id != g]
    assert moved and all(after and {old, new} <= {a, b} for after, old, new in moved)


def test_classification_on_dask_matches_in_process(engine, client):
    from geo.classify.classification import measure_shapely

    with engine.connect() as conn:
        expected = measure_shapely(conn, "grid")
        got = classify_compounds_dask(client, conn, "grid", chunks=5)
    assert got.implementation == "dask"
    cols = ["class", "n_units", "n_contained", "main_unit_id", "coverage", "iou", "hausdorff_m", "area_m2"]
    pd.testing.assert_frame_equal(got.compounds[cols].sort_index(), expected.compounds[cols].sort_index(),
                                  check_dtype=False)
    assert got.counts() == expected.counts()
    assert got.sensitivity == expected.sensitivity
    key = ["compound_id", "unit_id"]
    pd.testing.assert_frame_equal(got.overlaps.sort_values(key).reset_index(drop=True),
                                  expected.overlaps.sort_values(key).reset_index(drop=True), check_dtype=False)
