"""The PostGIS reference for locate (定位基准): the same answers as `geo.locate.index.LocateIndex`, by set-based SQL.

``ST_Covers`` with the GiST indexes, one query for any number of points. The tests and the benchmark compare the
index against it (`compare_with_reference`), so both must follow the same rules:

- the shared-edge rule is the database's own: ``{level}_covering(ts, p)`` (migration 0014) gives the unit of a
  versioned level in force at ``ts`` covering ``p``, the smallest code (C collation) on a shared edge or vertex;
  compounds and buildings go to the smallest id;
- the nearest grid within ``accuracy_m`` is measured in the index's UTM zone; equal distances (within `TIE_M`)
  go to the smallest code, in the same collation;
- ``also_covered_by``: the other grids in force whose interior holds the point (``ST_Contains``), by code.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, text

from geo.locate.index import BOUNDARY_TABLES, LEVEL_KEYS, TIE_M, LocateIndex
from geo.spatial.crs import utm_epsg
from geo.store.versions import in_force


def covering(key: str, ts: str, point: str) -> str:
    """SQL FROM item: the unit of versioned level `key` in force at `ts` covering `point` (at most one row, the
    shared-edge rule applied); its columns are those of ``{level}_history``."""
    return f"{BOUNDARY_TABLES[key][2]}_covering({ts}, {point})"


def _owner_sql(key: str, extra: str = "") -> str:
    return f"LEFT JOIN LATERAL (SELECT u.id{extra} FROM {covering(key, 'e.ts', 'p.g')} u) {key} ON TRUE"


def _nearest_sql(alias: str, where: str, max_d: str | None) -> str:
    within = f"WHERE c0.d <= {max_d}" if max_d else ""
    return f"""
    LEFT JOIN LATERAL (
        SELECT c.id, c.d FROM (
            SELECT c0.*, min(c0.d) OVER () AS dmin FROM (
                SELECT u.id, u.code, ST_Distance(ST_Transform(b.geom, e.epsg), ST_Transform(p.g, e.epsg)) AS d
                FROM grid_boundaries b JOIN grids u ON u.id = b.grid_id
                WHERE {where} AND {in_force('b', 'e.ts')}
            ) c0 {within}
        ) c WHERE c.d <= c.dmin + {TIE_M!r} ORDER BY c.code COLLATE "C" LIMIT 1
    ) {alias} ON TRUE"""


def _reference_sql(unbounded: bool) -> str:
    # A degree radius no smaller than accuracy_m metres at the point's latitude (1 deg of longitude >= 110 km
    # x cos(lat)) lets the GiST index find the candidates; the metric test follows.
    deg = "(e.acc / (110000.0 * cos(radians(least(abs(ST_Y(p.g)) + 0.1, 89.0)))))"
    near = _nearest_sql("nr", f"grid.id IS NULL AND ST_DWithin(b.geom, p.g, {deg})", "e.acc")
    far = _nearest_sql("nf", "grid.id IS NULL AND nr.id IS NULL", None) if unbounded else \
        "LEFT JOIN LATERAL (SELECT NULL::int AS id, NULL::float8 AS d) nf ON TRUE"
    return f"""
    WITH e AS (SELECT CAST(:ts AS timestamptz) AS ts, CAST(:epsg AS int) AS epsg, CAST(:acc AS float8) AS acc),
    p AS (SELECT o, ST_SetSRID(ST_MakePoint(x, y), 4326) AS g
          FROM unnest(CAST(:xs AS float8[]), CAST(:ys AS float8[])) WITH ORDINALITY AS t(x, y, o)),
    r AS (
        SELECT p.o, street.id AS street_id, community.id AS community_id, grid.id AS grid_id, grid.on_edge,
               micro_grid.id AS micro_grid_id, compound.id AS compound_id, building.id AS building_id,
               nr.id AS nearest_id, nr.d AS nearest_m, nf.id AS far_id, nf.d AS far_m, also.ids AS also_ids
        FROM p CROSS JOIN e
        {_owner_sql('street')}
        {_owner_sql('community')}
        {_owner_sql('grid', ', NOT ST_Contains(u.geom, p.g) AS on_edge')}
        {_owner_sql('micro_grid')}
        LEFT JOIN LATERAL (SELECT c.id FROM compounds c WHERE ST_Covers(c.geom, p.g) ORDER BY c.id LIMIT 1) compound
          ON TRUE
        LEFT JOIN LATERAL (SELECT bl.id FROM buildings bl WHERE ST_Covers(bl.geom, p.g) ORDER BY bl.id LIMIT 1)
          building ON TRUE
        {near}
        {far}
        LEFT JOIN LATERAL (SELECT array_agg(u.id ORDER BY u.code COLLATE "C") AS ids FROM grids_at(e.ts) u
                           WHERE grid.id IS NOT NULL AND u.id <> grid.id AND ST_Contains(u.geom, p.g)) also ON TRUE
    ),
    -- A level left empty is filled up the chain: community from the grid, street from the community.
    f AS (
        SELECT r.*, coalesce(r.grid_id, r.nearest_id) AS grid_any,
               coalesce(r.community_id, (SELECT g.community_id FROM grids g
                                         WHERE g.id = coalesce(r.grid_id, r.nearest_id))) AS community_any
        FROM r
    )
    SELECT f.o, coalesce(f.street_id, (SELECT c.street_id FROM communities c WHERE c.id = f.community_any))
             AS street_id,
           f.community_any AS community_id, f.grid_id, f.on_edge, f.micro_grid_id,
           coalesce(f.compound_id, (SELECT b.compound_id FROM buildings b WHERE b.id = f.building_id)) AS compound_id,
           f.building_id, f.nearest_id, f.nearest_m, f.far_id, f.far_m, coalesce(f.also_ids, '{{}}') AS also_ids
    FROM f ORDER BY f.o
    """


def reference_epsg(conn: Connection, ts: dt.datetime | None = None) -> int | None:
    """The UTM zone of the centre of the grid layer in force at `ts` (the index's metric CRS)."""
    row = conn.execute(text(
        "SELECT ST_XMin(x), ST_YMin(x), ST_XMax(x), ST_YMax(x) FROM (SELECT ST_Extent(geom) AS x "
        "FROM grids_at(coalesce(CAST(:ts AS timestamptz), now()))) s"), {"ts": ts}).first()
    if row is None or row[0] is None:
        return None
    return utm_epsg((row[0] + row[2]) / 2.0, (row[1] + row[3]) / 2.0)


def _params(conn: Connection, lons: Any, lats: Any, at: dt.datetime | None, accuracy_m: float | None,
            epsg: int | None) -> dict[str, Any]:
    """The reference query's parameters: the points, the instant (now when None), the metric zone, the radius."""
    if accuracy_m is None:
        from geo.settings import get_settings

        accuracy_m = get_settings().rules.locate_accuracy_m
    ts = at or conn.execute(text("SELECT now()")).scalar_one()
    xs = np.asarray(lons, dtype=np.float64).reshape(-1).tolist()
    ys = np.asarray(lats, dtype=np.float64).reshape(-1).tolist()
    epsg = epsg or reference_epsg(conn, ts) or utm_epsg(xs[0], ys[0])
    return {"xs": xs, "ys": ys, "ts": ts, "epsg": epsg, "acc": float(accuracy_m)}


def locate_sql_many(conn: Connection, lons: Any, lats: Any, at: dt.datetime | None = None,
                    accuracy_m: float | None = None, *, unbounded: bool = False,
                    epsg: int | None = None) -> pd.DataFrame:
    """The PostGIS reference for many points: ids per level, match, distance_m (one set-based query)."""
    df = pd.read_sql(text(_reference_sql(unbounded)), conn, params=_params(conn, lons, lats, at, accuracy_m, epsg))
    grid = df["grid_id"].copy()
    has_grid = grid.notna().to_numpy()
    on_edge = df["on_edge"].fillna(False).astype(bool).to_numpy()
    match = np.full(len(df), None, dtype=object)
    match[has_grid] = np.where(on_edge[has_grid], "boundary", "inside")
    near = grid.isna() & df["nearest_id"].notna()
    grid[near] = df.loc[near, "nearest_id"]
    match[near.to_numpy()] = "nearest"
    df["grid_id"] = grid
    df["match"] = pd.Series(list(match), index=df.index, dtype=object)
    df["distance_m"] = np.where(df["match"].isin(["inside", "boundary"]), 0.0,
                                np.where(near, df["nearest_m"].astype(float), np.nan))
    for col in ("street_id", "community_id", "grid_id", "micro_grid_id", "compound_id", "building_id",
                "far_id", "nearest_id"):
        df[col] = df[col].astype("Int64")
    return df.drop(columns=["o", "on_edge"])


def locate_sql(conn: Connection, lon: float, lat: float, at: dt.datetime | None = None,
               accuracy_m: float | None = None, *, epsg: int | None = None, unbounded: bool = True) -> dict:
    """The PostGIS reference for one point (one query): {level: id or None, match, distance_m, nearest_id,
    nearest_m}; `unbounded` also finds the nearest grid beyond `accuracy_m` when no grid matched."""
    params = _params(conn, [lon], [lat], at, accuracy_m, epsg)
    row = conn.execute(text(_reference_sql(unbounded)), params).mappings().one()
    out = {k: row[f"{k}_id"] for k in LEVEL_KEYS}
    if row["grid_id"] is not None:
        out["match"], out["distance_m"] = ("boundary" if row["on_edge"] else "inside"), 0.0
    elif row["nearest_id"] is not None:
        out["grid"], out["match"], out["distance_m"] = row["nearest_id"], "nearest", float(row["nearest_m"])
    else:
        out["match"], out["distance_m"] = None, None
    out["nearest_id"] = row["far_id"]
    out["nearest_m"] = None if row["far_m"] is None else float(row["far_m"])
    out["also_covered_by"] = list(row["also_ids"])
    return out


# ------------------------------------------------------------------------------------- agreement check

def agreement_points(index: LocateIndex, n: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """n points over the district: half uniform over its extent plus a 20% margin outside, a quarter exactly on
    boundary vertices (shared by grids, micro-grids and the levels above), a quarter on boundary edges."""
    if index.bounds is None:
        raise ValueError("the index holds no units: there is no district to sample")
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = index.bounds
    dx, dy = (maxx - minx) * 0.2, (maxy - miny) * 0.2
    n_uniform = n // 2
    ux = rng.uniform(minx - dx, maxx + dx, n_uniform)
    uy = rng.uniform(miny - dy, maxy + dy, n_uniform)
    rings = np.concatenate([shapely.get_rings(shapely.get_parts(index.levels[k].geoms))
                            for k in ("grid", "micro_grid", "community", "street")])
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    n_vertex = n // 4
    vi = rng.integers(0, len(xy), n_vertex)
    same = np.flatnonzero(ring[1:] == ring[:-1])
    si = same[rng.integers(0, len(same), n - n_uniform - n_vertex)]
    t = np.where(rng.random(len(si)) < 0.5, 0.5, rng.random(len(si)))
    ex = xy[si, 0] + t * (xy[si + 1, 0] - xy[si, 0])
    ey = xy[si, 1] + t * (xy[si + 1, 1] - xy[si, 1])
    return np.r_[ux, xy[vi, 0], ex], np.r_[uy, xy[vi, 1], ey]


def compare_with_reference(index: LocateIndex, conn: Connection, lon: np.ndarray, lat: np.ndarray,
                           accuracy_m: float = 30.0) -> dict:
    """Locate with the index and the PostGIS reference: disagreements per level, in match, in distance."""
    got = index.locate_many(lon, lat, accuracy_m)
    ref = locate_sql_many(conn, lon, lat, accuracy_m=accuracy_m)
    out: dict[str, Any] = {}
    for level in ("street", "community", "grid", "micro_grid", "compound", "building"):
        ids = index.levels[level].ids
        mine = np.where(got.pos[level] >= 0, ids[np.maximum(got.pos[level], 0)], -1)
        out[level] = int((mine != ref[f"{level}_id"].fillna(-1).to_numpy(np.int64)).sum())
    names = np.array([None, "inside", "boundary", "nearest"], dtype=object)[got.match]
    theirs = np.array([m if isinstance(m, str) else None for m in ref["match"]], dtype=object)
    out["match"] = int((names != theirs).sum())
    d_ref = ref["distance_m"].to_numpy(np.float64)
    both = np.isfinite(got.distance_m) & np.isfinite(d_ref)
    out["distance"] = int((np.abs(got.distance_m[both] - d_ref[both]) > 1e-3).sum()) + \
        int((np.isfinite(got.distance_m) != np.isfinite(d_ref)).sum())
    grid_ids = index.levels["grid"].ids
    mine_also = [[int(grid_ids[p]) for p in got.also.get(i, ())] for i in range(len(got))]
    out["also_covered_by"] = int(sum(a != list(b) for a, b in zip(mine_also, ref["also_ids"], strict=True)))
    out["kinds"] = {k: int((names == k).sum()) for k in ("inside", "boundary", "nearest")}
    out["kinds"]["none"] = int((names == None).sum())  # noqa: E711
    return out
