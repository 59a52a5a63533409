"""Classify every compound on Dask (小区与网格关系): the compounds as a `dask_geopandas` frame in partitions, measured
against the level's units in force (broadcast to the workers) by `geo.classify.classification.measure_frames` (the
in-process shapely implementation); the per-compound measures and overlap pairs are combined and classified on the
driver by the same rule (`classify_measures`), so the classes and the sensitivity report are the whole district's,
exactly as in one process.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from geo.batch.cluster import Progress, chunk_bounds, run_ordered
from geo.classify.classification import (
    LEVELS,
    Classification,
    ClassifyError,
    ClassifyRules,
    _unit_sql,
    classify_measures,
    get_rules,
    measure_frames,
    metric_epsg,
)
from geo.spatial.crs import STORAGE_SRID

#: Per-compound raw measures (before the class rule) and per-pair raw measures.
COMPOUND_MEASURES = ["area_m2", "community_id", "repaired", "hausdorff_m"]
PAIR_MEASURES = ["compound_id", "unit_id", "unit_code", "overlap_m2", "width_m", "unit_area_m2"]


def _frame(rows, columns: list[str]) -> gpd.GeoDataFrame:
    """Rows of (columns…, WKB) as a GeoDataFrame in the storage CRS."""
    frame = pd.DataFrame([tuple(r[:-1]) for r in rows], columns=columns)
    geoms = shapely.from_wkb([bytes(r[-1]) for r in rows]) if rows else np.array([], dtype=object)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=STORAGE_SRID), crs=STORAGE_SRID)


def _measure_chunk(compounds: gpd.GeoDataFrame, units: gpd.GeoDataFrame, level: str, rules: ClassifyRules,
                   epsg: int) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    result = measure_frames(compounds, units, level, rules, epsg)
    return result.compounds[COMPOUND_MEASURES], result.overlaps[PAIR_MEASURES], result.repaired


def classify_compounds_dask(client: Any, conn: Connection, level: str = "grid", at: dt.datetime | None = None, *,
                            rules: ClassifyRules | None = None, chunks: int | None = None,
                            progress: Progress | None = None) -> Classification:
    """Classify every stored compound against the level's units in force at `at` (now when None) on the cluster
    of `client` (nothing is written): a `Classification` with implementation ``dask``."""
    if level not in LEVELS:
        raise ClassifyError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    rules = rules or get_rules()
    epsg = metric_epsg(conn)
    crows = conn.execute(text("SELECT id, community_id, ST_AsBinary(geom) FROM compounds ORDER BY id")).all()
    urows = conn.execute(text(f"SELECT id, code, community_id, ST_AsBinary(geom) FROM ({_unit_sql(level)}) u"),
                         {"ts": at or conn.execute(text("SELECT now()")).scalar_one()}).all()
    compounds = _frame(crows, ["id", "community_id"])
    units = _frame(urows, ["id", "code", "community_id"])
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    [shared] = client.scatter([units], broadcast=True)
    parts = []
    if len(compounds):
        import dask
        import dask_geopandas  # type: ignore[import-untyped]

        table = dask_geopandas.from_geopandas(compounds, npartitions=len(chunk_bounds(len(compounds),
                                                                                      chunks or 4 * workers)))
        tasks = [dask.delayed(_measure_chunk)(p, shared, level, rules, epsg) for p in table.to_delayed()]
        parts = run_ordered(client, client.compute(tasks), progress)
    if parts:
        table = pd.concat([p[0] for p in parts])
        pairs = pd.concat([p[1] for p in parts], ignore_index=True)
        repaired = [r for p in parts for r in p[2]]
    else:
        table = pd.DataFrame(columns=COMPOUND_MEASURES, index=pd.Index([], name="compound_id"))
        pairs = pd.DataFrame(columns=PAIR_MEASURES)
        repaired = []
    return classify_measures(level, table, pairs, rules, "dask", epsg, {}, repaired)
