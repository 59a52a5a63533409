"""The heatmap page's data cube (热力图数据立方体): incident counts per hexagon, month, class, state and grid.

The leaders' heatmap page (`/maps/heatmap`) filters by month, incident class and state in the browser, without a
request: it receives, once, the counts of every (hexagon, local month, minor class, state, grid) combination that
holds an incident (sparse columns, so the answer grows with the number of distinct combinations, never beyond the
incident count) and adds them up for whatever the filters select. Cells are `geo.incidents.hexagons`' lattice in
the district frame, sized as `geo.incidents.heatmap.build_heatmap` sizes them for the same period and area, so the
page's hexagons, the hot spots and the `/v1/heatmap` answer are the same cells.

The rollups (`incident_heat_rollup`, `incident_rollup`) keep no class-by-cell nor state key, so the cube is one
grouped scan of the period's incidents (set-based, in PostgreSQL). Clicking a cell or a grid lists its incidents
(`cell_incidents`); the hot spots of the filtered counts come from `hotspot_cells` (Gi*, `build_heatmap`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from geo.incidents.closed_loop import states as loop_states
from geo.incidents.errors import InvalidQuery
from geo.incidents.heatmap import (
    HeatmapQuery,
    build_heatmap,
    choose_cell_size,
    default_period,
    district_frame,
    period_months,
    study_area,
)
from geo.incidents.hexagons import LocalFrame, cell_lattice, hex_axial_sql, hex_centres
from geo.incidents.hotspots import HOTSPOT_LABELS
from geo.store.units import grid_code_of, level_of

#: Status filter groups the page offers besides single states.
STATUS_GROUPS = {"open": "未结案", "closed": "已结案"}
#: Most incidents one click lists (the total is said beside).
CELL_LIST_LIMIT = 200


def states_for(status: str | None) -> tuple[str, ...]:
    """The closed-loop states a status filter keeps: '' or None every state, 'open' / 'closed' the states still in
    or out of the loop, or one state's code."""
    if not status:
        return ()
    table = loop_states()
    if status in STATUS_GROUPS:
        want_open = status == "open"
        return tuple(s.code for s in table.values() if s.is_open == want_open)
    if status in table:
        return (status,)
    raise InvalidQuery(f"status: {status!r} is neither 'open', 'closed' nor a state code "
                       f"({', '.join(table)})")


@dataclass
class HeatCube:
    """Sparse counts: parallel columns cell, month, cls, state, grid, n (indexes into the lists beside)."""

    query: HeatmapQuery
    frame: LocalFrame
    cell_m: float
    months: list[str]
    cells: pd.DataFrame  # q, r, lon, lat (centre) per cell index
    classes: list[str]  # class codes by index
    states: list[str]  # state codes by index
    grids: list[str | None]  # grid codes by index (None: not attributed to a grid)
    columns: dict[str, np.ndarray]  # cell, month, cls, state, grid, n

    @property
    def incidents(self) -> int:
        """How many incidents the cube counts."""
        return int(self.columns["n"].sum())


def cube_cell_size(conn: Connection, q: HeatmapQuery, frame: LocalFrame, months: int) -> float:
    """The hexagon size `build_heatmap` would use for this period and area (the requested one unless too fine)."""
    return choose_cell_size(study_area(conn, q, frame), q.cell_m, months, q.max_values)


def heat_cube(conn: Connection, q: HeatmapQuery) -> HeatCube:
    """The cube of `q`'s period, units and jurisdiction (class and state filters of `q` are ignored: the page
    applies them); the period defaults to the last 12 months with data."""
    base = HeatmapQuery(start=q.start, end=q.end, street=q.street, community=q.community, grid=q.grid,
                        scope=q.scope, cell_m=q.cell_m, timezone=q.timezone, permutations=q.permutations,
                        seed=q.seed, max_values=q.max_values)
    _, _, frame, bounds, months = period_months(conn, base)
    size = cube_cell_size(conn, base, frame, len(months))
    where, params = base.where("i")
    x, y = frame.forward_sql("i.lon", "i.lat")
    cq, cr = hex_axial_sql(x, y, size)
    conn.execute(text("SET LOCAL jit = off"))  # compiling the expressions costs more than it saves
    arrays = conn.execute(text(f"""
        SELECT array_agg(q), array_agg(r), array_agg(m), array_agg(c), array_agg(s), array_agg(g), array_agg(n)
        FROM (SELECT {cq} AS q, {cr} AS r, width_bucket(i.reported_at, CAST(:bounds AS timestamptz[])) - 1 AS m,
                     i.class_code AS c, i.state AS s, gr.code AS g, count(*) AS n
              FROM incidents i LEFT JOIN grids gr ON gr.id = i.grid_id
              WHERE {where} GROUP BY 1, 2, 3, 4, 5, 6) t"""),
        {**params, "bounds": list(bounds)}).one()
    qs, rs, ms, cs, ss, gs, ns = (list(a or []) for a in arrays)
    q_arr, r_arr = np.asarray(qs, dtype=np.int64), np.asarray(rs, dtype=np.int64)
    keys = pd.DataFrame({"q": q_arr, "r": r_arr})
    cells = keys.drop_duplicates().sort_values(["r", "q"], ignore_index=True)
    cell_index = pd.Series(np.arange(len(cells)), index=pd.MultiIndex.from_frame(cells))
    cell = cell_index.reindex(pd.MultiIndex.from_frame(keys)).to_numpy(dtype=np.int64) if len(keys) else \
        np.zeros(0, np.int64)
    cx, cy = hex_centres(cells["q"].to_numpy(), cells["r"].to_numpy(), size)
    cells["lon"], cells["lat"] = frame.inverse(cx, cy)
    class_codes, cls = _codes(cs)
    state_codes, st = _codes(ss)
    grid_codes, grd = _codes(gs)
    columns = {"cell": cell, "month": np.asarray(ms, dtype=np.int64), "cls": cls, "state": st, "grid": grd,
               "n": np.asarray(ns, dtype=np.int64)}
    return HeatCube(query=base, frame=frame, cell_m=size, months=months, cells=cells, classes=class_codes,
                    states=state_codes, grids=grid_codes, columns=columns)


def incidents_fingerprint(conn: Connection) -> tuple[int, int]:
    """(count, hash sum) over every incident's id, state, class, grid, place and report time: what any cube counts.
    A quarter of the cube's own time; equal fingerprints (and boundaries: the caller's key) give equal cubes."""
    n, digest = conn.execute(text(
        "SELECT count(*), coalesce(sum(hashtextextended(textin(record_out((i.id, i.state, i.class_code, i.grid_id, "
        "i.lon, i.lat, i.reported_at))), 0)), 0) FROM incidents i")).one()
    return int(n), int(digest)


def cube_key(q: HeatmapQuery) -> tuple:
    """What besides the incidents and boundaries a cube depends on (not the class or state filters); the local
    date too, as a default period ends with the current month."""
    from zoneinfo import ZoneInfo

    today = dt.datetime.now(ZoneInfo(q.timezone)).date()
    return (q.start, q.end, q.street, q.community, q.grid, q.scope, q.cell_m, q.timezone, q.max_values, today)


def _codes(values: list) -> tuple[list, np.ndarray]:
    """Distinct values (None last) and each value's index among them."""
    distinct = sorted({v for v in values if v is not None}) + ([None] if any(v is None for v in values) else [])
    index = {v: k for k, v in enumerate(distinct)}
    return distinct, np.asarray([index[v] for v in values], dtype=np.int64)


#: Columns `compact_cube` sends as differences from the previous entry (after sorting by cell, then grid).
DELTA_COLUMNS = ("cell", "grid")


def compact_cube(cube: HeatCube) -> dict:
    """The cube as JSON-ready columns with the lattice that places its cells (`hexagons.cell_lattice`): entries
    sorted by cell, grid, month, class and state, and `DELTA_COLUMNS` as differences from the previous entry
    (mostly 0: a third of the bytes once gzipped); `delta` names them."""
    c = cube.cells
    cols = cube.columns
    order = np.lexsort((cols["state"], cols["cls"], cols["month"], cols["grid"], cols["cell"]))
    packed = {k: (np.diff(v[order], prepend=0) if k in DELTA_COLUMNS else v[order]).astype(int).tolist()
              for k, v in cols.items()}
    return {
        "cell_m": round(cube.cell_m, 1),
        "lattice": cell_lattice(cube.frame, cube.cell_m),
        "months": cube.months,
        "from": cube.query.start.isoformat() if cube.query.start else None,
        "to": cube.query.end.isoformat() if cube.query.end else None,
        "cells": {"q": c["q"].astype(int).tolist(), "r": c["r"].astype(int).tolist()},
        "class_codes": cube.classes, "state_codes": cube.states, "grid_codes": cube.grids,
        "columns": packed, "delta": list(DELTA_COLUMNS),
        "incidents": cube.incidents,
    }


def hotspot_cells(conn: Connection, q: HeatmapQuery) -> dict:
    """Gi* hot and cold spots (冷热点) of the counts `q` selects (period, class, states, units), over every cell of
    the study area (zeros included): the significant cells with class (−3 … 3), z, p, count and centre."""
    h = build_heatmap(conn, q, with_grids=False, with_hotspots=q.permutations > 0)
    c = h.cells
    hot = c[c["hotspot"] != 0].sort_values("gi_z", key=lambda s: -s.abs())
    return {
        "cell_m": round(h.cell_m, 1), "permutations": h.permutations, "incidents": h.incident_count,
        "cells": len(c),
        "items": [{"q": int(r.q), "r": int(r.r), "class": int(r.hotspot), "label": HOTSPOT_LABELS[int(r.hotspot)],
                   "z": round(float(r.gi_z), 2), "p": round(float(r.gi_p), 4), "count": int(r.total),
                   "lon": round(float(r.lon), 6), "lat": round(float(r.lat), 6)}
                  for r in hot.itertuples(index=False)],
    }


def cell_incidents(conn: Connection, q: HeatmapQuery, cell: tuple[int, int] | None,
                   limit: int = CELL_LIST_LIMIT) -> dict:
    """The incidents `q` selects in hexagon `cell` (axial q, r of `q.cell_m` metres; None: every cell, e.g. one
    grid by `q.grid`), newest first: id, class, report time, state, grid; and how many there are in all."""
    if q.start is None or q.end is None:
        q.start, q.end = default_period(conn, q)
    where, params = q.where("i")
    if cell is not None:
        frame = district_frame(conn)
        x, y = frame.forward_sql("i.lon", "i.lat")
        cq, cr = hex_axial_sql(x, y, q.cell_m)
        # a box around the cell first (an index on lon/lat may serve it), then the exact cell
        cx, cy = hex_centres([cell[0]], [cell[1]], q.cell_m)
        lon, lat = frame.inverse([cx[0] - q.cell_m, cx[0] + q.cell_m], [cy[0] - q.cell_m, cy[0] + q.cell_m])
        where += (f" AND i.lon BETWEEN :lon0 AND :lon1 AND i.lat BETWEEN :lat0 AND :lat1"
                  f" AND {cq} = :cq AND {cr} = :cr")
        params |= {"lon0": float(lon[0]), "lon1": float(lon[1]), "lat0": float(lat[0]), "lat1": float(lat[1]),
                   "cq": int(cell[0]), "cr": int(cell[1])}
    total = conn.execute(text(f"SELECT count(*) FROM incidents i WHERE {where}"), params).scalar_one()
    rows = conn.execute(text(f"""
        SELECT i.id, i.class_code, c.name AS class_name, i.reported_at, i.state, st.name AS state_name,
               g.code AS grid_code, g.name AS grid_name, i.address
        FROM incidents i JOIN incident_classes c ON c.code = i.class_code
        JOIN incident_states st ON st.code = i.state LEFT JOIN grids g ON g.id = i.grid_id
        WHERE {where} ORDER BY i.reported_at DESC, i.id DESC LIMIT :limit"""),
        {**params, "limit": int(limit)}).mappings().all()
    return {"total": int(total), "items": [_incident(r, q.timezone) for r in rows]}


def _incident(r, tz: str) -> dict:
    from zoneinfo import ZoneInfo

    reported: dt.datetime = r["reported_at"]
    return {"id": int(r["id"]), "class_code": r["class_code"], "class_name": r["class_name"],
            "reported_at": reported.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M"),
            "state": r["state"], "state_name": r["state_name"], "grid_code": r["grid_code"],
            "grid_name": r["grid_name"], "address": r["address"]}


def grid_households(conn: Connection, at: dt.datetime | None, prefix: str | None) -> dict[str, int]:
    """Households per grid code (grids in force at `at`, under `prefix`), as the heatmap counts them."""
    from geo.incidents.heatmap import households_by_grid

    when = at or conn.execute(text("SELECT now()")).scalar_one()
    by_id = households_by_grid(conn, when)
    rows = conn.execute(text("SELECT id, code FROM grids_at(:t) WHERE CAST(:p AS text) IS NULL OR "
                             "starts_with(code, :p)"), {"t": when, "p": prefix or None}).all()
    return {code: int(by_id.get(int(gid), 0)) for gid, code in rows}


def label_prefixes(conn: Connection, code: str | None) -> dict[str, str | None]:
    """The code prefixes selecting the grid, community and street labels around the area `code` (any level, any
    code scheme: 16-digit grids, 10-digit villages): the area itself at and below its level, its ancestors above
    (所在社区、街道); None everywhere for the whole district."""
    if not code:
        return {"grid": None, "community": None, "street": None}
    level = level_of(conn, code)
    out: dict[str, str | None] = {"grid": code, "community": code, "street": code}  # unknown code: nothing matches
    if level == "micro_grids":
        out["grid"] = grid_code_of(conn, code)
    if level in ("micro_grids", "grids"):
        out["community"], out["street"] = conn.execute(text(
            "SELECT c.code, s.code FROM grids g JOIN communities c ON c.id = g.community_id "
            "JOIN streets s ON s.id = c.street_id WHERE g.code = :g"), {"g": out["grid"]}).one()
    elif level == "communities":
        out["street"] = conn.execute(text(
            "SELECT s.code FROM communities c JOIN streets s ON s.id = c.street_id WHERE c.code = :c"),
            {"c": code}).scalar_one()
    return out
