"""Locate many points on Dask: the boundaries in force are read once on the driver, broadcast to every worker,
and each worker builds its `LocateIndex` from them once per job (kept in a small per-process cache), then locates
its partitions with the same vectorised code as the service (`LocateIndex.locate_many`).

Input is WGS-84 longitude/latitude. The answer per point: the owner id at each level (``street_id`` …
``building_id``, nullable integers), ``match`` (inside / boundary / nearest / None) and ``distance_m``, in input
order.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import OrderedDict
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Connection

from geo.batch.cluster import Progress, chunk_bounds, run_ordered
from geo.locate.index import LEVEL_KEYS, MATCH_NAMES, LocateIndex, read_frames

#: LocateIndex objects built on this worker process, by job token (the newest few only).
_INDEXES: OrderedDict[str, LocateIndex] = OrderedDict()
_INDEX_LOCK = threading.Lock()
_KEEP = 2


def worker_index(token: str, frames: dict[str, gpd.GeoDataFrame]) -> LocateIndex:
    """The index for job `token` on this worker, built from `frames` the first time (threads share it)."""
    with _INDEX_LOCK:
        index = _INDEXES.get(token)
        if index is None:
            index = LocateIndex(frames)
            _INDEXES[token] = index
            while len(_INDEXES) > _KEEP:
                _INDEXES.popitem(last=False)
        return index


def answer_frame(index: LocateIndex, lons: np.ndarray, lats: np.ndarray, accuracy_m: float | None = None, *,
                 boundary: bool = True, fill: bool = True) -> pd.DataFrame:
    """The owners of points (WGS-84) as a table: ``<level>_id`` per level, ``match``, ``distance_m``.

    `fill` False leaves the chain's empty levels empty (no community from the grid, no nearest grid), the rule
    of incident attribution (`geo.incidents.attribution`): exactly the units covering the point.
    """
    x = np.asarray(lons, np.float64)
    y = np.asarray(lats, np.float64)
    if fill:
        batch = index.locate_many(x, y, accuracy_m, boundary=boundary)
        pos, match, distance = batch.pos, batch.match, batch.distance_m
    else:
        pos = {key: index.levels[key].owners(x, y)[0] for key in LEVEL_KEYS}
        match = np.where(pos["grid"] >= 0, 1, 0).astype(np.int8)
        distance = np.where(pos["grid"] >= 0, 0.0, np.nan)
    out = {}
    for key in LEVEL_KEYS:
        p = np.asarray(pos[key])
        hit = p >= 0
        values = np.zeros(len(p), np.int64)
        values[hit] = index.levels[key].ids[p[hit]]
        out[f"{key}_id"] = pd.arrays.IntegerArray(values, ~hit)
    frame = pd.DataFrame(out)
    frame["match"] = pd.Series([MATCH_NAMES[int(m)] for m in match], dtype=object)
    frame["distance_m"] = distance
    return frame


def _locate_part(token: str, frames: dict, lons: np.ndarray, lats: np.ndarray, accuracy_m: float | None,
                 fill: bool) -> pd.DataFrame:
    return answer_frame(worker_index(token, frames), lons, lats, accuracy_m, fill=fill)


def locate_points(client: Any, frames: dict[str, gpd.GeoDataFrame], lons, lats, *, accuracy_m: float | None = None,
                  partitions: int | None = None, fill: bool = True, progress: Progress | None = None
                  ) -> pd.DataFrame:
    """Locate points (WGS-84 arrays) against the boundary `frames` (`geo.locate.index.read_frames`) on the
    cluster of `client`; answers in input order (index 0..n-1)."""
    x = np.ascontiguousarray(lons, np.float64)
    y = np.ascontiguousarray(lats, np.float64)
    if accuracy_m is None:
        from geo.settings import get_settings

        accuracy_m = get_settings().rules.locate_accuracy_m
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    bounds = chunk_bounds(len(x), partitions or 4 * workers)
    if not bounds:
        return answer_frame(LocateIndex(frames), x, y, accuracy_m, fill=fill)
    token = uuid.uuid4().hex
    [shared] = client.scatter([frames], broadcast=True)
    futures = [client.submit(_locate_part, token, shared, x[a:b], y[a:b], accuracy_m, fill, pure=False)
               for a, b in bounds]
    parts = run_ordered(client, futures, progress)
    return pd.concat(parts, ignore_index=True)


def locate_csv(client: Any, conn: Connection, path: str, *, lon: str = "lon", lat: str = "lat",
               at: dt.datetime | None = None, blocksize: str | int = "16MiB", accuracy_m: float | None = None,
               progress: Progress | None = None) -> pd.DataFrame:
    """Locate every row of a (large) CSV point file with `lon`/`lat` columns (WGS-84), read in blocks by
    `dask.dataframe.read_csv`, against the boundaries in force at `at` (now when None): the file's columns
    followed by the answer columns, in file order."""
    import dask
    import dask.dataframe as dd

    if accuracy_m is None:
        from geo.settings import get_settings

        accuracy_m = get_settings().rules.locate_accuracy_m
    frames = read_frames(conn, at)
    token = uuid.uuid4().hex
    [shared] = client.scatter([frames], broadcast=True)
    table = dd.read_csv(path, blocksize=blocksize)

    def one(part: pd.DataFrame, frames_: dict) -> pd.DataFrame:
        answer = _locate_part(token, frames_, part[lon].to_numpy(np.float64), part[lat].to_numpy(np.float64),
                              accuracy_m, True)
        return pd.concat([part.reset_index(drop=True), answer], axis=1)

    tasks = [dask.delayed(one)(p, shared) for p in table.to_delayed()]
    futures = client.compute(tasks)
    parts = run_ordered(client, futures, progress)
    return pd.concat(parts, ignore_index=True)


def locate_frame_in_process(conn: Connection, lons, lats, *, at: dt.datetime | None = None,
                            accuracy_m: float | None = None, fill: bool = True) -> pd.DataFrame:
    """The reference: the same answers computed in this process on one index (no Dask)."""
    index = LocateIndex(read_frames(conn, at))
    if accuracy_m is None:
        from geo.settings import get_settings

        accuracy_m = get_settings().rules.locate_accuracy_m
    return answer_frame(index, lons, lats, accuracy_m, fill=fill)
