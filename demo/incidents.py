"""Incidents (事件) of one year: places around hot spots and buildings, GB/T 30428.2 classes, seasonal report
times, the closed loop's states and times, departments, descriptions and reporters; the incidents layer.
"""

from __future__ import annotations

import csv
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from data import DATA_DIR
from demo.buildings_and_units import Buildings
from demo.district import METRIC_EPSG, place
from demo.grids import Partition
from demo.programme import Targets
from demo.staff import person_names
from demo.vocabulary import ROADS
from geo.spatial.crs import STORAGE_SRID


class IncidentClass(NamedTuple):
    """A GB/T 30428.2 major event class (大类) with the default disposal time limit."""

    code: str
    name: str
    time_limit_hours: float


def _major_classes() -> tuple[IncidentClass, ...]:
    """The major classes of the class table (data/incident_classes.csv), the one source of time limits."""
    with (DATA_DIR / "incident_classes.csv").open(encoding="utf-8") as f:
        return tuple(
            IncidentClass(r["code"], r["name"], float(r["time_limit_hours"]))
            for r in csv.DictReader(f)
            if not r["major_code"]
        )


#: GB/T 30428.2 major classes A–F with their default time limits, read from the class table.
INCIDENT_CLASSES: tuple[IncidentClass, ...] = _major_classes()
#: Incidents cover the 365 days before this instant (UTC).
INCIDENT_PERIOD_END = pd.Timestamp("2026-11-01", tz="UTC")
INCIDENT_PERIOD_DAYS = 365

_DEPARTMENTS = {
    "A": ["区城市管理和综合执法局", "区环境卫生服务中心", "区园林绿化中心", "区市政设施维护中心"],
    "B": ["区城市管理和综合执法局", "街道综合行政执法队"],
    "C": ["区住房和城乡建设局", "区城市管理和综合执法局", "区自然资源局"],
    "D": ["区应急管理局", "区消防救援大队", "区水利局", "燃气公司", "供电公司"],
    "E": ["街道综合行政执法队", "区交警大队", "区市场监督管理局"],
    "F": ["社区居委会", "街道办事处", "区民政局", "派出所", "区生态环境分局"],
}
_DESCRIPTIONS = {
    "A": [
        "道路积存垃圾渣土", "垃圾桶满溢", "暴露垃圾", "绿地脏乱", "井盖破损", "路面破损", "污水冒溢", "乱堆物料",
        "公厕设施损坏", "路灯不亮",
    ],
    "B": ["违规张贴小广告", "非法散发广告", "占道广告牌", "广告招牌破损", "条幅违规悬挂"],
    "C": ["施工扬尘", "渣土车抛洒", "夜间施工扰民", "违法建设", "施工占道", "工地围挡破损"],
    "D": ["道路积水", "路面塌陷", "树木倒伏", "燃气异味", "电线垂落", "窨井冒水"],
    "E": ["占道经营", "店外经营", "流动摊贩", "非机动车乱停放", "机动车乱停放", "乱晾晒", "露天烧烤"],
    "F": [
        "邻里纠纷", "噪音扰民", "群租房隐患", "独居老人需帮扶", "高空抛物", "楼道堆物", "飞线充电", "宠物扰民",
    ],
}


def _places(
    rng: np.random.Generator, t: Targets, district: shapely.Geometry, b: Buildings, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where incidents happen: around 5-10 hot spots per scale-1 district (42 %) or near buildings weighted by
    households and shops, always inside the district.  Returns places, hot-spot flags, hot spots and their classes."""
    shapely.prepare(district)
    bxy = shapely.get_coordinates(shapely.centroid(b.geom))
    nres = b.n_res
    bw = np.ones(len(bxy))
    bw[:nres] = np.bincount(b.unit_building, weights=b.unit_households, minlength=nres) / 40.0
    bw[nres:] = np.where(b.use[nres:] == "commercial", 3.0, 1.5)
    bw = bw / bw.sum()
    n_hot = round(int(rng.integers(5, 11)) * max(1.0, t.scale))  # 5-10 per scale-1 district
    hot_b = rng.choice(len(bxy), n_hot, replace=False, p=bw)
    hot_xy = bxy[hot_b]
    hot_sigma = rng.uniform(60.0, 220.0, n_hot)
    hot_w = rng.dirichlet(np.full(n_hot, 2.0))
    hot_class = rng.choice(6, n_hot, p=[0.35, 0.03, 0.12, 0.02, 0.4, 0.08])
    is_hot = rng.random(n) < 0.42
    h = rng.choice(n_hot, n, p=hot_w)
    bpick = rng.choice(len(bxy), n, p=bw)
    xy = np.empty((n, 2))
    for it in range(6):  # redraw the points that fell outside the district
        todo = np.flatnonzero(~shapely.contains_xy(district, xy[:, 0], xy[:, 1])) if it else np.arange(n)
        if not len(todo):
            break
        if it:
            bpick[todo] = rng.choice(len(bxy), len(todo), p=bw)
        z = rng.normal(0, 1, (len(todo), 2))
        hot_pt = hot_xy[h[todo]] + z * hot_sigma[h[todo], None]
        bg_pt = bxy[bpick[todo]] + z * 35.0
        xy[todo] = np.where(is_hot[todo, None], hot_pt, bg_pt)
    out = ~shapely.contains_xy(district, xy[:, 0], xy[:, 1])
    xy[out] = bxy[bpick[out]]
    return xy, is_hot, h, hot_class


def draw_incidents(
    rng: np.random.Generator, t: Targets, part: Partition, b: Buildings, grid_chief_name: np.ndarray
) -> gpd.GeoDataFrame:
    """The incidents layer (EPSG:4326, by report time): a year of incidents through the closed loop
    (上报 → 立案 → 派遣 → 处置 → 核查 → 结案), some late, some still open at the period's end."""
    n = t.n_incidents
    xy, is_hot, h, hot_class = _places(rng, t, part.district, b, n)
    # classes: A and E most common; hot spots lean to their own class
    base_p = np.array([0.34, 0.09, 0.08, 0.05, 0.28, 0.16])
    cls = rng.choice(6, n, p=base_p)
    lean = is_hot & (rng.random(n) < 0.35)
    cls[lean] = hot_class[h[lean]]
    codes = np.array([c.code for c in INCIDENT_CLASSES], dtype=object)
    limit_h = np.array([c.time_limit_hours for c in INCIDENT_CLASSES])
    # time: seasonal days, daytime hours (UTC+8)
    day = np.arange(INCIDENT_PERIOD_DAYS)
    month_phase = 2 * np.pi * (day + 304) / 365.0
    wd = 1.0 + 0.25 * np.sin(month_phase - np.pi / 2) + 0.1 * ((day + 5) % 7 < 5)
    d = rng.choice(INCIDENT_PERIOD_DAYS, n, p=wd / wd.sum())
    hl = np.array([1, 1, 1, 1, 1, 2, 4, 8, 11, 12, 12, 11, 9, 9, 10, 11, 11, 10, 8, 6, 5, 4, 3, 2], float)
    hour_local = rng.choice(24, n, p=hl / hl.sum())
    start = INCIDENT_PERIOD_END - pd.Timedelta(days=INCIDENT_PERIOD_DAYS)
    secs = d * 86400 + ((hour_local - 8) % 24) * 3600 + rng.integers(0, 3600, n)
    order = np.argsort(secs, kind="stable")
    t_rep = int(start.value // 10**9) + secs[order].astype(np.int64)
    reported = pd.to_datetime(t_rep, unit="s", utc=True)
    xy, cls, is_hot = xy[order], cls[order], is_hot[order]
    sources = np.array(["patrol", "public", "hotline_12345", "video"], dtype=object)
    src = rng.choice(sources, n, p=[0.52, 0.14, 0.22, 0.12])
    # the closed loop: register → dispatch (clock starts) → handle → close → evaluate
    lim = limit_h[cls] * 3600
    t_reg = t_rep + rng.integers(600, 7200, n)
    t_dis = t_reg + rng.integers(600, 10800, n)
    on_time = rng.random(n) < 0.81
    dur = np.where(on_time, lim * rng.uniform(0.15, 0.95, n), lim * rng.uniform(1.05, 3.0, n))
    t_close = t_dis + dur.astype(np.int64)
    t_hand = t_dis + (dur * rng.uniform(0.6, 0.9, n)).astype(np.int64)
    now = int(INCIDENT_PERIOD_END.value // 10**9)
    u = rng.random(n)
    state = np.where(
        u < 0.05, "rejected", np.where(u < 0.07, "cancelled", np.where(u < 0.085, "suspended", "closed"))
    ).astype(object)
    evaluated = (state == "closed") & (rng.random(n) < 0.35) & (t_close + 3 * 86400 < now)
    state[evaluated] = "evaluated"
    live = np.isin(state, ["closed", "evaluated"]) & (t_close > now)
    state[live & (now < t_reg)] = "collected"
    state[live & (now >= t_reg) & (now < t_dis)] = "registered"
    state[live & (now >= t_dis) & (now < t_hand)] = "dispatched"
    mid = live & (now >= t_hand)
    state[mid] = np.where(rng.random(int(mid.sum())) < 0.5, "handled", "reported")
    state[np.isin(state, ["suspended"]) & (t_dis > now)] = "registered"
    dispatched = np.isin(state, ["dispatched", "handled", "reported", "closed", "evaluated", "suspended"])
    closed = np.isin(state, ["closed", "evaluated"])
    due = pd.to_datetime(np.where(dispatched, t_dis + lim.astype(np.int64), 0), unit="s", utc=True)
    due = due.where(dispatched, pd.NaT)
    clo = pd.to_datetime(np.where(closed, t_close, 0), unit="s", utc=True)
    clo = clo.where(closed, pd.NaT)
    dept = np.empty(n, dtype=object)
    desc = np.empty(n, dtype=object)
    roads = np.array(ROADS, dtype=object)[rng.integers(0, len(ROADS), n)]
    for k, c in enumerate(codes):
        m = np.flatnonzero(cls == k)
        dl, ds = _DEPARTMENTS[c], _DESCRIPTIONS[c]
        dept[m] = np.array(dl, dtype=object)[rng.integers(0, len(dl), len(m))]
        desc[m] = roads[m] + np.array(ds, dtype=object)[rng.integers(0, len(ds), len(m))]
    # reporter: the grid's chief on patrol, otherwise a citizen or a video-centre operator
    pts = np.asarray(shapely.points(xy))
    tree = shapely.STRtree(part.grids)
    pi, gi = tree.query(pts, predicate="within")
    pgrid = np.full(n, -1)
    pgrid[pi[::-1]] = gi[::-1]
    citizens = person_names(rng, n)
    operators = person_names(rng, 12)
    reporter = np.where(src == "video", operators[rng.integers(0, 12, n)], citizens)
    pat = (src == "patrol") & (pgrid >= 0)
    reporter[pat] = grid_chief_name[pgrid[pat]]
    return gpd.GeoDataFrame(
        {
            "ref": np.arange(1, n + 1), "reported_at": reported, "class_code": codes[cls], "source": src,
            "state": state, "department": dept, "description": desc, "reporter": reporter, "due_at": due,
            "closed_at": clo,
        },
        geometry=place(pts),
        crs=METRIC_EPSG,
    ).to_crs(STORAGE_SRID)
