"""Where a leader's map puts a label and what "zoom to" frames: one point and one box per unit, small and set-based.

The coverage and classification pages draw their shapes from vector tiles (`tiles`); what they need besides is
per unit a label point (``ST_PointOnSurface``, always inside the shape), its bounding box (for "zoom to" from the
gaps list) and, for compounds, every grid (or micro-grid) they overlap, largest share first, so a straddling
compound can name both grids. Coordinates are WGS-84 rounded to 1e-6° (~0.1 m).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, text

_LEVEL_FN = {"grid": "grids_at", "micro_grid": "micro_grids_at", "community": "communities_at",
             "street": "streets_at"}
_R = 6


def _box(row) -> list[float]:
    return [round(row.x0, _R), round(row.y0, _R), round(row.x1, _R), round(row.y1, _R)]


def unit_places(conn: Connection, level: str, at: dt.datetime | None, prefix: str | None) -> dict[str, dict]:
    """code → {name, lon, lat, bbox} for the units of `level` in force at `at` whose code starts with `prefix`."""
    fn = _LEVEL_FN[level]
    rows = conn.execute(text(
        f"SELECT code, name, ST_X(p) AS x, ST_Y(p) AS y, ST_XMin(geom) AS x0, ST_YMin(geom) AS y0, "
        f"ST_XMax(geom) AS x1, ST_YMax(geom) AS y1 FROM (SELECT code, name, geom, ST_PointOnSurface(geom) AS p "
        f"FROM {fn}(coalesce(CAST(:t AS timestamptz), now())) WHERE (CAST(:p AS text) IS NULL "
        "OR starts_with(code, :p))) u ORDER BY code"), {"t": at, "p": prefix or None}).all()
    return {r.code: {"name": r.name, "lon": round(r.x, _R), "lat": round(r.y, _R), "bbox": _box(r)} for r in rows}


def compound_places(conn: Connection, ids: list[int], level: str, at: dt.datetime | None) -> dict[int, dict]:
    """compound id → {lon, lat, bbox, units: [[code, name, share of the compound's area], …] largest first}."""
    if not ids:
        return {}
    fn = _LEVEL_FN[level]
    rows = conn.execute(text(
        "SELECT k.id, ST_X(ST_PointOnSurface(k.geom)) AS x, ST_Y(ST_PointOnSurface(k.geom)) AS y, "
        "ST_XMin(k.geom) AS x0, ST_YMin(k.geom) AS y0, ST_XMax(k.geom) AS x1, ST_YMax(k.geom) AS y1, "
        "(SELECT json_agg(json_build_array(o.code, o.name, o.share) ORDER BY o.share DESC) FROM ("
        "  SELECT u.code, u.name, round(CAST(ST_Area(ST_Intersection(u.geom, k.geom)) / "
        "         nullif(ST_Area(k.geom), 0) AS numeric), 3) AS share "
        f"  FROM {fn}(coalesce(CAST(:t AS timestamptz), now())) u "
        "  WHERE u.geom && k.geom AND ST_Intersects(u.geom, k.geom)) o WHERE o.share > 0) AS units "
        "FROM compounds k WHERE k.id = ANY(:ids)"), {"t": at, "ids": list(ids)}).all()
    return {r.id: {"lon": round(r.x, _R), "lat": round(r.y, _R), "bbox": _box(r),
                   "units": [[c, n, float(s)] for c, n, s in (r.units or [])]} for r in rows}


def scope_name(conn: Connection, prefix: str | None, at: dt.datetime | None) -> str:
    """The name of the street, community or grid a code prefix stands for ("全区" for none)."""
    level = {9: "street", 12: "community", 15: "grid"}.get(len(prefix or ""))
    if not prefix or not level:
        return prefix or "全区"
    return conn.execute(text(
        f"SELECT name FROM {_LEVEL_FN[level]}(coalesce(CAST(:t AS timestamptz), now())) WHERE code = :c"),
        {"t": at, "c": prefix}).scalar() or prefix


def extent(conn: Connection, level: str, prefix: str | None, at: dt.datetime | None = None) -> list[float] | None:
    """[west, south, east, north] of the units of `level` in force at `at` under `prefix` (None when there are none)."""
    row = conn.execute(text(
        f"SELECT ST_XMin(e) AS x0, ST_YMin(e) AS y0, ST_XMax(e) AS x1, ST_YMax(e) AS y1 FROM (SELECT ST_Extent(geom) "
        f"AS e FROM {_LEVEL_FN[level]}(coalesce(CAST(:t AS timestamptz), now())) WHERE (CAST(:p AS text) IS NULL "
        "OR starts_with(code, :p))) x"), {"t": at, "p": prefix or None}).first()
    return _box(row) if row is not None and row.x0 is not None else None
