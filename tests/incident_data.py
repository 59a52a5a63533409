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




# ---------------------------------------------------------------------------------------------------------------
# a city's own class table and an incident file with two years of history (tests/test_incidents_history.py)

#: A city's class table as its office keeps it: Chinese headers, limits in days or hours, a traditional-character
#: name (其他災情), a parent named by name, a change to an existing class (A01's limit and department).
CLASS_TABLE_HEADER = ["分类编码", "分类名称", "上级分类", "处置时限（小时）", "处置部门"]
CLASS_TABLE_ROWS = [
    ["G", "城市管理", "", "72", "城管局"],
    ["G01", "违章建筑", "G", "3天", "城管执法中队"],
    ["G02", "其他災情", "城市管理", "2个工作日", ""],
    ["G0201", "积水内涝", "G02", "", "水务站"],
    ["A01", "暴露垃圾", "A", "12", "环卫所"],
]

HISTORY_START = dt.datetime(2024, 1, 1, tzinfo=CST)
HISTORY_END = dt.datetime(2026, 1, 1, tzinfo=CST)
#: Categories as the source system names them, with what they map to (None: unknown unless mapped).
HISTORY_CATEGORIES = {"暴露垃圾": "A01", "机动车乱停放": "E03", "E02": "E02", "市容环境/道路不洁": "A03",
                      "其他災情": "G02", "违章搭建": None}
HISTORY_STATES = {"已结案": "closed", "处置中": "dispatched", "已立案": "registered", "不予立案": "rejected",
                  "已作废": "cancelled", "待受理": "collected"}


def history_records(n: int = 300, seed: int = 17) -> tuple[list[dict], dict]:
    """`n` good incident records spread over 2024–2025 inside the tiny district, then bad ones; and what a correct
    import must find: {'good', 'bad': {kind: count}, 'by_state', 'unknown': {category: count}, 'nw_before', …}."""
    import numpy as np

    rng = np.random.default_rng(seed)
    span = (HISTORY_END - HISTORY_START).total_seconds()
    cats, states = list(HISTORY_CATEGORIES), list(HISTORY_STATES)
    records, by_state, unknown = [], {}, {}
    for i in range(n):
        x, y = rng.uniform(20, 980, 2)
        if abs(x - 500) < 5:
            x += 20
        rep = HISTORY_START + dt.timedelta(seconds=float(rng.uniform(0, span - 40 * 86400)))
        rep = rep.replace(microsecond=0)
        state = states[i % len(states)]
        cat = cats[int(rng.integers(0, len(cats)))]
        lon, lat = lonlat(x, y)
        rec = {"案件编号": f"GD{i:06d}", "上报时间": rep.strftime("%Y-%m-%d %H:%M:%S"), "问题类型": cat,
               "状态": state, "经度": f"{lon:.8f}", "纬度": f"{lat:.8f}", "问题描述": f"第{i}号：巷口{cat}",
               "立案时间": "", "派遣时间": "", "结案时间": ""}
        code = HISTORY_STATES[state]
        if code not in ("collected", "rejected"):
            rec["立案时间"] = (rep + dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
        if code in ("dispatched", "closed"):
            rec["派遣时间"] = (rep + dt.timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
        if code == "closed":
            rec["结案时间"] = (rep + dt.timedelta(hours=float(rng.uniform(4, 200)))).strftime("%Y-%m-%d %H:%M:%S")
        records.append(rec)
        by_state[code] = by_state.get(code, 0) + 1
        if HISTORY_CATEGORIES[cat] is None:
            unknown[cat] = unknown.get(cat, 0) + 1
    good = list(records)
    bad_rows = {
        "missing-value": [{**good[0], "案件编号": "BAD001", "上报时间": ""}],
        "bad-value": [{**good[1], "案件编号": "BAD002", "上报时间": "2024-13-45 25:00"}],
        "no-location": [{**good[2], "案件编号": "BAD003", "经度": "", "纬度": ""}],
        "time-order": [{**good[3], "案件编号": "BAD004", "状态": "已结案", "立案时间": "2025-03-01 10:00:00",
                        "派遣时间": "2025-03-01 11:00:00", "上报时间": "2025-03-02 10:00:00",
                        "结案时间": "2025-03-03 10:00:00"}],
        "outside-district": [{**good[4], "案件编号": "BAD005",
                              **dict(zip(("经度", "纬度"), map("{:.8f}".format, lonlat(6000, 6000)), strict=True))}],
        "before-boundaries": [{**good[5], "案件编号": "BAD006", "上报时间": "2023-05-01 08:00:00",
                               "状态": "待受理", "立案时间": "", "派遣时间": "", "结案时间": ""}],
        "duplicate": [{**good[6]}],
        "unknown-state": [{**good[7], "案件编号": "BAD008", "状态": "已归档"}],
    }
    for rows in bad_rows.values():
        for r in rows:
            if r["案件编号"] != good[6]["案件编号"]:  # a known category, so each bad row has the one fault named
                r["问题类型"] = "暴露垃圾"
        records.extend(rows)
    expect = {"good": n, "bad": {k: len(v) for k, v in bad_rows.items()}, "by_state": by_state,
              "unknown": unknown}
    return records, expect
