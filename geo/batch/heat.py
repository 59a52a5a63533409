"""Hexagon heat counts over years on Dask (多年六边形热力汇总): incidents per hexagon cell and local month, the
numbers `geo.incidents.heatmap.hex_counts` and the hexagon rollup (`geo.incidents.heat_rollup`) give.

The period's local months (`geo.incidents.periods.month_starts`, in the rollup's / settings' time zone) are cut
into ranges of `months_per_part` months; the driver reads each range's incidents (report time, stored lon/lat)
through the caller's connection and submits it as one task. A worker bins its points with the one lattice
(`LocalFrame.forward` and `hex_axial`, the numpy twin of the SQL the heatmap and the rollup triggers run, equal to
the bit), labels each by its local month and counts per (q, r, month). Ranges are disjoint in time, so the driver
only concatenates.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from geo.batch.cluster import Progress, run_ordered
from geo.incidents.hexagons import LocalFrame, hex_axial
from geo.incidents.periods import month_starts

#: The answer's columns, as `geo.incidents.heatmap.hex_counts` returns them.
COLUMNS = ["q", "r", "month", "n"]


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"q": np.empty(0, np.int64), "r": np.empty(0, np.int64),
                         "month": np.empty(0, object), "n": np.empty(0, np.int64)})


def count_cells(lon: np.ndarray, lat: np.ndarray, reported_ns: np.ndarray, frame: LocalFrame, size: float,
                tz: str) -> pd.DataFrame:
    """Counts per hexagon and local month of points (WGS-84 lon/lat, report times as UTC epoch nanoseconds)."""
    if len(lon) == 0:
        return _empty()
    x, y = frame.forward(lon, lat)
    q, r = hex_axial(x, y, size)
    local = pd.DatetimeIndex(pd.to_datetime(reported_ns, utc=True)).tz_convert(tz)
    part = pd.DataFrame({"q": q, "r": r, "month": local.strftime("%Y-%m")})
    out = part.groupby(["q", "r", "month"], sort=True).size().rename("n").reset_index()
    return out.astype({"q": np.int64, "r": np.int64, "n": np.int64})[COLUMNS]


def _read_range(conn: Connection, lo: dt.datetime, hi: dt.datetime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Incidents reported in [lo, hi) with a position: lon, lat, report time (UTC epoch ns)."""
    rows = conn.execute(text(
        "SELECT i.lon, i.lat, i.reported_at FROM incidents i WHERE i.reported_at >= :lo AND i.reported_at < :hi "
        "AND i.lon IS NOT NULL"), {"lo": lo, "hi": hi}).all()
    lon = np.fromiter((r[0] for r in rows), np.float64, len(rows))
    lat = np.fromiter((r[1] for r in rows), np.float64, len(rows))
    ns = pd.DatetimeIndex(pd.to_datetime([r[2] for r in rows], utc=True)).as_unit("ns").asi8
    return lon, lat, ns


def heat_counts_dask(client: Any, conn: Connection, size: float, start: dt.datetime, end: dt.datetime, *,
                     frame: LocalFrame | None = None, tz: str | None = None, months_per_part: int = 3,
                     progress: Progress | None = None) -> pd.DataFrame:
    """Incidents per hexagon of `size` metres (binned in `frame`, the district's by default) and local month (of
    `tz`, the rollup's zone, else the settings') reported in [start, end), on the cluster of `client`: columns q,
    r, month ('YYYY-MM'), n, sorted by month, q, r (nothing is written)."""
    if end <= start:
        return _empty()
    if frame is None:
        from geo.incidents.heatmap import district_frame

        frame = district_frame(conn)
    if tz is None:
        from geo.incidents.kpi import rollup_timezone
        from geo.settings import get_settings

        tz = rollup_timezone(conn) or get_settings().timezone
    bounds = month_starts(start, end, tz)
    # the period's own ends cut the first and last month when they fall inside one
    edges = [start, *[m for m in bounds[1:-1] if start < m < end], end]
    step = max(1, months_per_part)
    ranges = [(edges[k], edges[min(k + step, len(edges) - 1)]) for k in range(0, len(edges) - 1, step)]
    [shared] = client.scatter([frame], broadcast=True)
    futures = []
    for lo, hi in ranges:
        lon, lat, ns = _read_range(conn, lo, hi)
        futures.append(client.submit(count_cells, lon, lat, ns, shared, float(size), tz, pure=False))
    parts = [p for p in run_ordered(client, futures, progress) if len(p)]
    if not parts:
        return _empty()
    return pd.concat(parts, ignore_index=True).sort_values(["month", "q", "r"], ignore_index=True)[COLUMNS]
