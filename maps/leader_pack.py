"""Compact JSON for the leaders' map pages (coverage, classification, heatmap): what keeps the first view of a
~10,000-grid district well under 1.5 MB.

A label point travels as ``lon``/``lat`` rounded to 1e-5° (~1 m, finer than a label needs); a box as ``box``:
four integer offsets in 1e-5° from that point (west, south, east, north), a third of the characters of four
coordinates. Sorted integer ids travel as the first id and the differences (mostly 1: they compress to nearly
nothing). The pages' script (maps/static/leader/leadermap.js, ``unpack``) turns them back into what it draws with.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Degrees per unit of the integer offsets of a box.
STEP = 1e-5
DIGITS = 5


def point(place: dict) -> dict:
    """`place`'s label point rounded to 1e-5° and its box as offsets from that point (keys absent without one)."""
    lon, lat, bbox = place.get("lon"), place.get("lat"), place.get("bbox")
    if lon is None or lat is None:
        return {"lon": None, "lat": None}
    out: dict = {"lon": round(lon, DIGITS), "lat": round(lat, DIGITS)}
    if bbox:
        x, y = out["lon"], out["lat"]
        out["box"] = [int(np.floor((bbox[0] - x) / STEP)), int(np.floor((bbox[1] - y) / STEP)),
                      int(np.ceil((bbox[2] - x) / STEP)), int(np.ceil((bbox[3] - y) / STEP))]
    return out


def label(code: str, place: dict, box: bool = False) -> dict:
    """A unit's label: code, name and point (with its box when `box`)."""
    p = point(place if box else {k: v for k, v in place.items() if k != "bbox"})
    return {"code": code, "name": place.get("name"), **p}


def deltas(ids: Iterable[int]) -> list[int]:
    """Sorted ids as the first and the differences ([] when none)."""
    a = np.asarray(list(ids), dtype=np.int64)
    if not len(a):
        return []
    return [int(a[0])] + np.diff(a).astype(int).tolist()
