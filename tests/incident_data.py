"""A tiny hand-built district for incident tests: one street, two communities, three grids, three buildings.

Coordinates are metres from the south-west corner in UTM 51N (near Suzhou), so expected numbers can be counted
by hand; `build_tiny_district` writes it into an empty migrated database.
"""

from __future__ import annotations

import datetime as dt

from pyproj import Transformer
from sqlalchemy import text

CST = dt.timezone(dt.timedelta(hours=8))
EPSG = 32651  # UTM 51N, the zone of (120.55, 31.30)
X0, Y0 = Transformer.from_crs(4326, EPSG, always_xy=True).transform(120.55, 31.30)
TO_WGS = Transformer.from_crs(EPSG, 4326, always_xy=True)
STREET = "320505001"
COMM_W, COMM_E = "320505001001", "320505001002"
GRID_NW, GRID_SW, GRID_E = "320505001001001", "320505001001002", "320505001002001"
V1 = dt.datetime(2025, 1, 1, tzinfo=CST)
REDRAW = dt.datetime(2025, 7, 1, tzinfo=CST)


def lonlat(x: float, y: float) -> tuple[float, float]:
    """WGS-84 of a point given in metres from the tiny district's south-west corner."""
    return TO_WGS.transform(X0 + x, Y0 + y)


def box(x0, y0, x1, y1) -> str:
    return f"ST_Multi(ST_Transform(ST_MakeEnvelope({X0 + x0}, {Y0 + y0}, {X0 + x1}, {Y0 + y1}, {EPSG}), 4326))"


def build_tiny_district(conn) -> None:
    """Street 0–1000 m square; communities W (x<500) and E; grids NW (y≥500), SW (y<500) in W, and E = community E.
    Buildings: one in NW (200 households), one in SW (100), one in E (500)."""
    conn.execute(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (1, :v, 'v1')"), {"v": V1})
    conn.execute(text(f"INSERT INTO streets (id, code, name) VALUES (1, '{STREET}', '测试街道')"))
    conn.execute(text(f"INSERT INTO street_boundaries (street_id, version_id, valid_from, geom) "
                      f"VALUES (1, 1, :v, {box(0, 0, 1000, 1000)})"), {"v": V1})
    conn.execute(text(f"INSERT INTO communities (id, code, name, street_id) VALUES (1, '{COMM_W}', '西社区', 1), "
                      f"(2, '{COMM_E}', '东社区', 1)"))
    conn.execute(text(f"INSERT INTO community_boundaries (community_id, version_id, valid_from, geom) VALUES "
                      f"(1, 1, :v, {box(0, 0, 500, 1000)}), (2, 1, :v, {box(500, 0, 1000, 1000)})"), {"v": V1})
    conn.execute(text(f"INSERT INTO grids (id, code, name, kind, community_id) VALUES "
                      f"(1, '{GRID_NW}', '西北网格', 'comprehensive', 1), "
                      f"(2, '{GRID_SW}', '西南网格', 'comprehensive', 1),"
                      f"(3, '{GRID_E}', '东网格', 'comprehensive', 2)"))
    conn.execute(text(f"INSERT INTO grid_boundaries (id, grid_id, version_id, valid_from, geom) VALUES "
                      f"(1, 1, 1, :v, {box(0, 500, 500, 1000)}), (2, 2, 1, :v, {box(0, 0, 500, 500)}), "
                      f"(3, 3, 1, :v, {box(500, 0, 1000, 1000)})"), {"v": V1})
    conn.execute(text("SELECT setval(pg_get_serial_sequence('grid_boundaries', 'id'), 10)"))
    conn.execute(text(f"INSERT INTO buildings (id, name, community_id, use, geom) VALUES "
                      f"(1, '1号楼', 1, 'residential', {box(100, 700, 140, 720)}), "
                      f"(2, '2号楼', 1, 'residential', {box(100, 100, 140, 120)}), "
                      f"(3, '3号楼', 2, 'residential', {box(700, 400, 740, 420)})"))
    conn.execute(text("INSERT INTO units (building_id, number, households, population) VALUES "
                      "(1, 1, 120, 300), (1, 2, 80, 200), (2, 1, 100, 250), (3, 1, 500, 1200)"))


