"""Attribute incidents on Dask (事件归属): each incident to the street, community, grid, micro-grid, compound and
building that covered it under the boundaries in force at its report time, the rule of
`geo.incidents.attribution` (covering unit, shared edges to the smallest code / id), so a later redraw does not
rewrite history.

The driver reads the incidents and the instants at which boundaries change; incidents are grouped by the interval
between two such instants (one boundary set each), and for every interval the boundaries in force are broadcast
to the workers, which locate their chunks with the in-memory index (`geo.batch.locate`).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from geo.batch.cluster import Progress, chunk_bounds, run_ordered
from geo.batch.locate import _locate_part
from geo.locate.holder import boundary_versions, change_points
from geo.locate.index import LEVEL_KEYS, read_frames

#: The columns of an attribution, as `geo.incidents.attribution.attribution_sql` selects them.
COLUMNS = ["id", "version_id", *[f"{k}_id" for k in LEVEL_KEYS]]


def read_incident_points(conn: Connection, where: str = "TRUE", params: dict | None = None) -> pd.DataFrame:
    """Incidents matching `where` (SQL over alias ``i``): id, reported_at (UTC), lon, lat; by id."""
    rows = conn.execute(text(f"SELECT i.id, i.reported_at, ST_X(i.geom), ST_Y(i.geom) FROM incidents i "
                             f"WHERE {where} ORDER BY i.id"), params or {}).all()
    frame = pd.DataFrame(rows, columns=["id", "reported_at", "lon", "lat"])
    frame["reported_at"] = pd.to_datetime(frame["reported_at"], utc=True)
    frame["lon"] = frame["lon"].astype(np.float64)
    frame["lat"] = frame["lat"].astype(np.float64)
    return frame


def _epoch_ns(values) -> np.ndarray:
    """Aware datetimes as int64 nanoseconds since the epoch (UTC)."""
    return pd.DatetimeIndex(pd.to_datetime(list(values), utc=True)).as_unit("ns").asi8


def _interval_of(times: pd.Series, points: list) -> np.ndarray:
    """Per time, the index of the change point starting its interval (-1 before the first)."""
    return np.searchsorted(_epoch_ns(points), _epoch_ns(times), side="right") - 1


def attribute_incidents_dask(client: Any, conn: Connection, where: str = "TRUE", params: dict | None = None, *,
                             chunk_rows: int = 50_000, progress: Progress | None = None) -> pd.DataFrame:
    """The owners of the incidents matching `where` at their report times, computed on the cluster of `client`
    (nothing is written; see `apply_attribution`): columns `COLUMNS`, ordered by id."""
    incidents = read_incident_points(conn, where, params)
    if incidents.empty:
        return pd.DataFrame({c: pd.array([], dtype="Int64") for c in COLUMNS})
    points = change_points(conn)
    interval = _interval_of(incidents["reported_at"], points)
    futures, order = [], []
    for key in np.unique(interval):
        rows = np.flatnonzero(interval == key)
        # Any instant of the interval reads the same boundary set; its start, or its first incident before any.
        ts = points[key] if key >= 0 else incidents["reported_at"].iloc[rows[0]].to_pydatetime()
        frames = read_frames(conn, ts)
        token = uuid.uuid4().hex
        [shared] = client.scatter([frames], broadcast=True)
        lon = incidents["lon"].to_numpy()[rows]
        lat = incidents["lat"].to_numpy()[rows]
        for a, b in chunk_bounds(len(rows), -(-len(rows) // chunk_rows)):
            futures.append(client.submit(_locate_part, token, shared, lon[a:b], lat[a:b], 0.0, False, pure=False))
            order.append(rows[a:b])
    parts = run_ordered(client, futures, progress)
    answers = pd.concat(parts, ignore_index=True)
    answers.index = np.concatenate(order)
    answers = answers.sort_index()
    out = pd.DataFrame({"id": pd.array(incidents["id"].to_numpy(np.int64), dtype="Int64")})
    out["version_id"] = _version_ids(conn, incidents["reported_at"])
    for key in LEVEL_KEYS:
        out[f"{key}_id"] = answers[f"{key}_id"].to_numpy()
    return out[COLUMNS]


def _version_ids(conn: Connection, times: pd.Series) -> pd.arrays.IntegerArray:
    """The boundary version in force at each time: the latest that had started (none before the first)."""
    versions = boundary_versions(conn)
    idx = _interval_of(times, [v["valid_from"] for v in versions])
    ids = np.array([v["id"] for v in versions] or [0], dtype=np.int64)
    return pd.arrays.IntegerArray(ids[np.clip(idx, 0, None)], idx < 0)


def apply_attribution(conn: Connection, attribution: pd.DataFrame) -> int:
    """Write owners computed by `attribute_incidents_dask` onto the incidents (in the caller's transaction); rows
    updated."""
    if attribution.empty:
        return 0
    conn.execute(text("CREATE TEMP TABLE batch_attribution (id bigint, version_id bigint, street_id bigint, "
                      "community_id bigint, grid_id bigint, micro_grid_id bigint, compound_id bigint, "
                      "building_id bigint) ON COMMIT DROP"))
    records = attribution[COLUMNS].astype(object).where(attribution[COLUMNS].notna(), None).to_dict("records")
    conn.execute(text(f"INSERT INTO batch_attribution ({', '.join(COLUMNS)}) "
                      f"VALUES ({', '.join(':' + c for c in COLUMNS)})"), records)
    result = conn.execute(text(
        "UPDATE incidents SET version_id = a.version_id, street_id = a.street_id, community_id = a.community_id, "
        "grid_id = a.grid_id, micro_grid_id = a.micro_grid_id, compound_id = a.compound_id, "
        "building_id = a.building_id FROM batch_attribution a WHERE incidents.id = a.id"))
    conn.execute(text("DROP TABLE batch_attribution"))
    return result.rowcount
