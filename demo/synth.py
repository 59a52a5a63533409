"""Deterministic synthetic district (合成辖区) around Yueyang: streets down to units, staff and incidents.

`generate_district(scale, seed)` works in metres (UTM 49N) and returns every layer in EPSG:4326.

Geometry is an exact hierarchy of partitions: jittered, twisted Voronoi superblocks (街区, half a road
each side) are cut by binary space partition into units (a compound the size of a grid, a compound
spanning 2-4 grids, a grid holding several compounds, a dedicated site, ...), units into parcels and
parcels into micro pieces.  Every piece is split into its buildable core and its road margin; the margin
of a piece whose grid must equal a compound is handed, along the road, to a neighbouring grid of the
same community (属地兜底).  All pieces are noded once (snap-rounded to 1 cm) and polygonised, so
micro-grids, grids, communities and streets are coverage unions of the same faces and share edges
exactly.  Buildings are placed last, inside the cores, so no grid or micro-grid line cuts a footprint.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, fields
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import Transformer

from geo.spatial.crs import STORAGE_SRID, utm_epsg

__all__ = [
    "District",
    "generate_district",
    "IncidentClass",
    "INCIDENT_CLASSES",
    "DISTRICT_CODE",
    "DISTRICT_NAME",
    "CENTER_LONLAT",
    "METRIC_EPSG",
    "INCIDENT_PERIOD_END",
    "LAYERS",
]


class IncidentClass(NamedTuple):
    """A GB/T 30428.2 major event class (大类) with the default disposal time limit."""

    code: str
    name: str
    time_limit_hours: float


def _major_classes() -> tuple[IncidentClass, ...]:
    """The major classes of the class table (data/incident_classes.csv), the one source of time limits."""
    import csv
    from pathlib import Path

    from data import DATA_DIR

    with (DATA_DIR / "incident_classes.csv").open(encoding="utf-8") as f:
        return tuple(IncidentClass(r["code"], r["name"], float(r["time_limit_hours"]))
                     for r in csv.DictReader(f) if not r["major_code"])


#: GB/T 30428.2 major classes A–F with their default time limits, read from the class table.
INCIDENT_CLASSES: tuple[IncidentClass, ...] = _major_classes()

DISTRICT_CODE = "430602"
DISTRICT_NAME = "岳阳楼区"
CENTER_LONLAT = (113.1, 29.37)
METRIC_EPSG = utm_epsg(*CENTER_LONLAT)
#: Incidents cover the 365 days before this instant (UTC).
INCIDENT_PERIOD_END = pd.Timestamp("2026-11-01", tz="UTC")
INCIDENT_PERIOD_DAYS = 365
#: Layer names in output order (also the GeoPackage layer names).
LAYERS = (
    "streets",
    "communities",
    "grids",
    "micro_grids",
    "compounds",
    "buildings",
    "units",
    "people",
    "assignments",
    "incidents",
)

# Seed 001 (Yueyang, Yueyanglou district) at scale 1.
_SEED001_COMPOUNDS = 977
_SEED001_SAME = 247
_SEED001_GRIDS = 675
_INCIDENTS_PER_YEAR = 12000
_STREETS_AT_SCALE_1 = 9

# ---- tunables (metres, square metres, probabilities) ----
_CELL_SPACING = 480.0  # superblock lattice spacing
_CELL_JITTER = 0.2  # seed jitter as a fraction of the spacing
_CAMPUS_P = 0.4  # share of superblocks that are whole dedicated campuses (parks, factories, colleges)
_INBLOCK_DED = 0.4  # dedicated sites inside residential superblocks per residential unit
_LARGER_SHARE = 0.055  # compounds spanning 2-4 grids
_STRAD_SHARE = 0.035  # compounds straddling two grids
_ROAD_MIN_CELL = 140e3  # superblocks larger than this get an internal road at their first cut
_OUT_OF_BAND = 0.05  # comprehensive grids deliberately outside 300-500 households
_GAP = 0.05  # deliberate staffing gaps
_GRID_ROW_M = 200.0  # row height when numbering grids west->east, north->south

_SETBACK_MARGIN_M = 1.0  # a distinct wall stays this far beyond the classifier's 'same' tolerance


def _min_distinct_setback() -> float:
    """Metres a wall must be set back from its micro-grid's line to be told apart from it (not 'same').

    The walls are mitred offsets of the unit's outline, so the Hausdorff distance between them is at least the
    setback; it has to exceed the 'same' tolerance even at the sensitivity analysis's upper step.
    """
    from geo.classify.classification import get_rules  # lazy: the generator needs the classifier's settings only here

    rules = get_rules()
    return rules.same_hausdorff_m * (1.0 + rules.sensitivity_step) + _SETBACK_MARGIN_M


_SAME, _LARGER, _STRAD, _NORMAL, _DED, _CAMPUS = range(6)
_DED_TYPES = np.array(["school", "hospital", "company", "park", "office"], dtype=object)
_INBLOCK_DED_P = [0.32, 0.10, 0.20, 0.16, 0.22]
_DED_MEDIAN = np.array([70e3, 80e3, 120e3, 100e3, 30e3])
_DED_SIGMA = np.array([0.5, 0.6, 0.6, 0.7, 0.4])
_KINDS = np.array(["commercial", "old", "work_unit", "open"], dtype=object)
_PLANTED = np.array(["same", "larger", "smaller", "straddling"], dtype=object)

# ---- vocabulary ----
_NUM = "一二三四五六七八九十"
_CN_NUM = [""] + list(_NUM) + ["十" + c for c in _NUM[:9]] + ["二十"]
_STREET_BASE = (
    "洞庭 岳阳楼 三眼桥 吕仙亭 金鹗山 东茅岭 望岳路 城东 南湖 奇家岭 站前路 五里牌 枫桥湖 龙山 西塘 月山 "
    "求索 康王 白石岭 木里港 王家河 黄沙湾 梅溪 云梦 君山 巴陵 湘北 郭镇 北港 楼前"
).split()
_PLACE_A = (
    "梅溪 先锋 花板 洞庭 天岳 学院 金鹗 东升 龙舟 湖滨 白杨 翰林 茶巷 解放 鱼巷 汴河 天灯 乾明 五里 北港 "
    "庄家 刘山 麻布 枫桥 奇家 望岳 求索 云梦 康王 竹荫 羊叉 庙前 郭亮 红船 冷水 营盘 长虹 黄沙 吕仙 岳州 "
    "巴陵 南津 三眼 东茅 站前 城陵 月形 楼前 新港 滨湖"
).split()
_PLACE_B = "路 桥 坡 岭 湾 港 园 湖 巷 村 门 亭 山 塘 街 里".split()
_ROADS = (
    "巴陵东路 巴陵中路 巴陵西路 洞庭北路 洞庭南路 五里牌路 东茅岭路 金鹗东路 金鹗中路 金鹗西路 建设路 青年中路 "
    "解放路 先锋路 花板桥路 南湖大道 岳阳大道 求索路 白石岭路 站前路 枫桥湖路 茶巷子 梅溪路 学院路 奇家岭路 "
    "云梦路 湖滨大道 龙舟路 康王路 天岳大道 车站路 竹荫街 羊叉街 庙前街 环城路 望岳路 郭亮路 红船路 冷水铺路 "
    "东环路 五一路 人民路 朝阳路 光明路 营盘路 北港路 长虹路 黄沙湾路 麻布大道 吕仙亭路"
).split()
_PREFIX = (
    "金鹗 洞庭 南湖 君山 巴陵 岳州 翰林 碧桂 锦绣 阳光 东方 华府 龙湾 湘江 滨湖 天伦 恒信 中建 保利 建鑫 "
    "东风 怡景 康城 书香 金色 银湾 紫金 盛世 鑫城 长岭 融城 湖光 望湖 观湖 临湖 梅溪 芙蓉 岳阳 枫桥 求索 "
    "学府 汇景 嘉和 万象 御湖 江南 名流 天麓 楚天 泰和 凯旋 富丽 新天 丽景 金桂 香樟 银杏 云顶 湘北 城南"
).split()
_SUFFIX = (
    "山庄 花园 华庭 名苑 新城 雅居 佳园 国际 公馆 水岸 家园 府 苑 广场 城 湾 壹号 豪庭 御景 半岛 "
    "小区 尚城 名都 嘉园"
).split()
_ORGS = (
    "市电业局 烟草公司 岳化 长岭炼化 市一中 市二中 市一人民医院 市中医院 岳阳纸业 铁路 粮食局 农机厂 纺织厂 "
    "水泥厂 市政公司 自来水公司 邮电局 建设银行 工商银行 税务局 公安局 气象局 交通局 城建局 市委党校 "
    "湖南理工学院 岳阳职院 食品公司 化工厂 机械厂 港务局 航运公司 电信公司 供销社 商业局 物资局 "
    "林业局 水利局 卫生局 教育局"
).split()
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华兰玉萍红建国志文斌辉力永健宇浩凯鹏飞婷雪梅琳晨欣怡佳慧"
    "颖倩丹莉海波宁峰亮云春燕德福林荣新家豪子涵思雨梓轩诺然博俊雅琴淑珍凤君清秋菊翠松柏正光耀武"
)
_DEPARTMENTS = {
    "A": ["区城市管理和综合执法局", "区环境卫生服务中心", "区园林绿化中心", "区市政设施维护中心"],
    "B": ["区城市管理和综合执法局", "街道综合行政执法队"],
    "C": ["区住房和城乡建设局", "区城市管理和综合执法局", "区自然资源局"],
    "D": ["区应急管理局", "区消防救援大队", "区水利局", "燃气公司", "供电公司"],
    "E": ["街道综合行政执法队", "区交警大队", "区市场监督管理局"],
    "F": ["社区居委会", "街道办事处", "区民政局", "派出所", "区生态环境分局"],
}
_DESCRIPTIONS = {
    "A": ["道路积存垃圾渣土", "垃圾桶满溢", "暴露垃圾", "绿地脏乱", "井盖破损", "路面破损", "污水冒溢", "乱堆物料", "公厕设施损坏", "路灯不亮"],
    "B": ["违规张贴小广告", "非法散发广告", "占道广告牌", "广告招牌破损", "条幅违规悬挂"],
    "C": ["施工扬尘", "渣土车抛洒", "夜间施工扰民", "违法建设", "施工占道", "工地围挡破损"],
    "D": ["道路积水", "路面塌陷", "树木倒伏", "燃气异味", "电线垂落", "窨井冒水"],
    "E": ["占道经营", "店外经营", "流动摊贩", "非机动车乱停放", "机动车乱停放", "乱晾晒", "露天烧烤"],
    "F": ["邻里纠纷", "噪音扰民", "群租房隐患", "独居老人需帮扶", "高空抛物", "楼道堆物", "飞线充电", "宠物扰民"],
}
_INDUSTRY = "机械 化工 纸业 食品 物流 建材 电子 纺织 医药 汽车服务".split()
_BUREAUS = "政务服务中心 税务局 住建局 教育局 人社局 行政中心 公安分局 法院 检察院 财政局".split()

# Residential building templates: units lo/hi, floors lo/hi, households per floor per unit, unit width,
# depth, gaps along and across rows, square (tower).  Chosen by compound kind, escalated when a lot
# cannot hold its households.
_TPL = np.array(
    [
        # ulo uhi flo fhi hpf  unit_w depth  gx   gy  square
        [2, 3, 4, 6, 3, 13.0, 11.0, 10.0, 14.0, 0],  # 0 scattered walk-up (散居)
        [2, 4, 6, 7, 2, 12.5, 11.5, 10.0, 18.0, 0],  # 1 six-storey slab (多层板楼)
        [2, 4, 9, 11, 3, 14.0, 13.0, 14.0, 24.0, 0],  # 2 mid-rise (小高层)
        [2, 4, 12, 18, 2, 24.0, 24.0, 20.0, 26.0, 1],  # 3 point tower (高层塔楼), 24-32 m square
        [4, 6, 15, 18, 2, 14.0, 14.0, 14.0, 30.0, 0],  # 4 high-rise slab
        [4, 4, 18, 18, 2, 24.0, 24.0, 16.0, 20.0, 1],  # 5 last resort: 4-unit 18-storey tower, 32 m square
    ]
)
# Dedicated-site building templates per dedicated type: length, depth, floors lo/hi, gaps, m² per building, n lo/hi
_DED_TPL = np.array(
    [
        [60.0, 15.0, 4, 5, 25.0, 30.0, 15e3, 2, 6],  # school
        [45.0, 22.0, 6, 16, 20.0, 25.0, 20e3, 1, 5],  # hospital
        [60.0, 30.0, 1, 3, 15.0, 20.0, 15e3, 2, 10],  # company
        [14.0, 10.0, 1, 2, 40.0, 40.0, 40e3, 1, 4],  # park
        [30.0, 30.0, 6, 20, 20.0, 20.0, 12e3, 1, 4],  # office
    ]
)
_DED_USE = np.array(["school", "hospital", "commercial", "public", "office"], dtype=object)


@dataclass
class District:
    """A synthetic district (合成辖区): ten layers in EPSG:4326, rows in a stable order."""

    streets: gpd.GeoDataFrame
    communities: gpd.GeoDataFrame
    grids: gpd.GeoDataFrame
    micro_grids: gpd.GeoDataFrame
    compounds: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    units: pd.DataFrame
    people: pd.DataFrame
    assignments: pd.DataFrame
    incidents: gpd.GeoDataFrame

    def layers(self) -> dict[str, pd.DataFrame]:
        """The layers by name, in output order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def counts(self) -> dict[str, int]:
        """Row count of every layer."""
        return {name: len(df) for name, df in self.layers().items()}

    def to_gpkg(self, path: str | os.PathLike) -> None:
        """Write every layer (attribute tables too) into one GeoPackage, replacing the file."""
        path = os.fspath(path)
        if os.path.exists(path):
            os.remove(path)
        for name, df in self.layers().items():
            if isinstance(df, gpd.GeoDataFrame):
                pyogrio.write_dataframe(df, path, layer=name, driver="GPKG", promote_to_multi=name != "incidents")
            else:
                out = df.copy()
                for col in out.columns:
                    if out[col].dtype == object and len(out) and hasattr(out[col].iloc[0], "isoformat"):
                        out[col] = pd.to_datetime(out[col])
                pyogrio.write_dataframe(out, path, layer=name, driver="GPKG")

    def fingerprint(self) -> str:
        """SHA-256 over every layer's columns, geometry as WKB, in order: equal iff the data are equal."""
        h = hashlib.sha256()
        for name, df in self.layers().items():
            h.update(f"{name}:{len(df)}:{','.join(map(str, df.columns))}\n".encode())
            for col in df.columns:
                s = df[col]
                if isinstance(s.dtype, gpd.array.GeometryDtype):
                    for b in shapely.to_wkb(np.asarray(s.values), byte_order=1):
                        h.update(len(b).to_bytes(4, "little"))
                        h.update(b)
                else:
                    h.update(str(s.dtype).encode())
                    h.update("\x1f".join(map(str, s.tolist())).encode())
                h.update(b"\x1e")
        return h.hexdigest()


def generate_district(scale: float = 1.0, seed: int = 0) -> District:
    """Build the synthetic Yueyang district: counts scale linearly with `scale`, same (scale, seed) → same bytes."""
    return _Builder(scale, seed).build()


# --------------------------------------------------------------------------------------------
# vectorised geometry helpers
# --------------------------------------------------------------------------------------------


def _group_minmax(vals: np.ndarray, idx: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group min and max of `vals` grouped by sorted `idx` (NaN for empty groups)."""
    counts = np.bincount(idx, minlength=n)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    ok = counts > 0
    mn = np.full(n, np.nan)
    mx = np.full(n, np.nan)
    if ok.any():
        mn[ok] = np.minimum.reduceat(vals, starts[ok])
        mx[ok] = np.maximum.reduceat(vals, starts[ok])
    return mn, mx


def _frame_extents(geoms: np.ndarray, theta: np.ndarray):
    """Extents of each geometry along its frame axes u=(cos θ, sin θ) and v=(-sin θ, cos θ)."""
    xy, idx = shapely.get_coordinates(geoms, return_index=True)
    c, s = np.cos(theta)[idx], np.sin(theta)[idx]
    u = xy[:, 0] * c + xy[:, 1] * s
    v = -xy[:, 0] * s + xy[:, 1] * c
    umin, umax = _group_minmax(u, idx, len(geoms))
    vmin, vmax = _group_minmax(v, idx, len(geoms))
    return umin, umax, vmin, vmax


def _halfplanes(cx, cy, ex, ey, big):
    """The two half-planes either side of the line through (cx, cy) normal to (ex, ey), and that line."""
    dx, dy = -ey, ex
    p1 = np.stack([cx - big * dx, cy - big * dy], 1)
    p2 = np.stack([cx + big * dx, cy + big * dy], 1)
    e = np.stack([ex, ey], 1) * big[:, None]
    a = np.stack([p1, p2, p2 - e, p1 - e, p1], 1)
    b = np.stack([p1, p2, p2 + e, p1 + e, p1], 1)
    return shapely.polygons(a), shapely.polygons(b), shapely.linestrings(np.stack([p1, p2], 1))


def _as_multi(geoms: np.ndarray) -> np.ndarray:
    """Polygons/multipolygons → MultiPolygons (polygonal parts only), one per input."""
    geoms = np.asarray(geoms, dtype=object)
    parts, idx = shapely.get_parts(geoms, return_index=True)
    keep = shapely.get_type_id(parts) == 3
    parts, idx = parts[keep], idx[keep]
    out = np.full(len(geoms), None, dtype=object)
    if len(parts):
        uniq = np.unique(idx)
        remap = np.searchsorted(uniq, idx)
        out[uniq] = shapely.multipolygons(parts, indices=remap)
    empty = shapely.is_missing(out)
    out[empty] = shapely.from_wkt("MULTIPOLYGON EMPTY")
    return out


def _dissolve(geoms: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """Coverage union of polygons grouped by integer key 0..n-1 (the inputs must form a clean coverage)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    g = np.asarray(geoms, dtype=object)[order]
    bounds = np.flatnonzero(np.r_[True, k[1:] != k[:-1], True])
    out = np.full(n, None, dtype=object)
    for a, b in zip(bounds[:-1], bounds[1:]):
        out[k[a]] = g[a] if b - a == 1 else shapely.coverage_union_all(g[a:b])
    return out


def _rank_within(groups: np.ndarray, key: np.ndarray) -> np.ndarray:
    """0-based rank of each row within its group, ordered by `key` (stable)."""
    order = np.lexsort((key, groups))
    g = groups[order]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    run = np.repeat(start, np.diff(np.r_[start, len(g)]))
    rank = np.empty(len(g), dtype=np.int64)
    rank[order] = np.arange(len(g)) - run
    return rank


def _row_order(groups: np.ndarray, x: np.ndarray, y: np.ndarray, row_h: float) -> np.ndarray:
    """Rank within each group: rows of height row_h from the group's north edge, then west→east."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    top = pd.Series(y).groupby(groups).transform("max").to_numpy()
    row = np.floor((top - y) / row_h).astype(np.int64)
    order = np.lexsort((np.arange(n), x, row, groups))
    g = groups[order]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    run = np.repeat(start, np.diff(np.r_[start, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - run
    return rank


def _slots(region, theta, bw, bd, gx, gy, phase=(0.0, 0.0)):
    """Candidate building rectangles on a rotated lattice inside each region: (region index, rectangle).

    The lattice is centred on the region's frame box, shifted by `phase` (fractions of a pitch)."""
    n = len(region)
    xy, idx = shapely.get_coordinates(region, return_index=True)
    c, s = np.cos(theta), np.sin(theta)
    u = xy[:, 0] * c[idx] + xy[:, 1] * s[idx]
    v = -xy[:, 0] * s[idx] + xy[:, 1] * c[idx]
    umin, umax = _group_minmax(u, idx, n)
    vmin, vmax = _group_minmax(v, idx, n)
    W = np.nan_to_num(umax - umin)
    H = np.nan_to_num(vmax - vmin)
    nx = np.clip(np.floor((W + gx) / (bw + gx)), 0, 60).astype(np.int64)
    ny = np.clip(np.floor((H + gy) / (bd + gy)), 0, 60).astype(np.int64)
    # a shifted lattice starts half a pitch earlier and has one more column / row
    u0 = np.nan_to_num(umin) + (W - (nx * (bw + gx) - gx)) / 2 - phase[0] * (bw + gx)
    v0 = np.nan_to_num(vmin) + (H - (ny * (bd + gy) - gy)) / 2 - phase[1] * (bd + gy)
    nx = nx + (phase[0] > 0)
    ny = ny + (phase[1] > 0)
    cnt = nx * ny
    lot = np.repeat(np.arange(n), cnt)
    if not len(lot):
        return lot, np.zeros(0, dtype=object)
    j = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    col, row = j % nx[lot], j // nx[lot]
    uc = u0[lot] + col * (bw + gx)[lot] + bw[lot] / 2
    vc = v0[lot] + row * (bd + gy)[lot] + bd[lot] / 2
    hw, hd = bw[lot] / 2, bd[lot] / 2
    cu = np.stack([uc - hw, uc + hw, uc + hw, uc - hw, uc - hw], 1)
    cv = np.stack([vc - hd, vc - hd, vc + hd, vc + hd, vc - hd], 1)
    cl, sl = c[lot][:, None], s[lot][:, None]
    rects = shapely.polygons(np.stack([cu * cl - cv * sl, cu * sl + cv * cl], -1))
    shapely.prepare(region)
    inside = shapely.contains_properly(region[lot], rects)
    return lot[inside], rects[inside]


def _pick(lot: np.ndarray, want: np.ndarray, key: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
    """Indices of candidates to keep: per lot, ranks skip..skip+want-1 in random-key order."""
    if not len(lot):
        return np.zeros(0, dtype=np.int64)
    rank = _rank_within(lot, key)
    lo = np.zeros(len(want), dtype=np.int64) if skip is None else skip
    return np.flatnonzero((rank >= lo[lot]) & (rank < lo[lot] + want[lot]))


def _grow_regions(n, nbrs, weight, xy, order, targets, cap, max_zero=None, want_zero=0):
    """Greedy contiguous regions over a graph: from each unassigned seed, add the nearest neighbours until
    the weight reaches the seed's target (never above cap), then up to `want_zero` weightless neighbours
    (campus blocks).  Returns labels 0..k-1."""
    label = np.full(n, -1, dtype=np.int64)
    k = 0
    for s in order:
        if label[s] >= 0:
            continue
        target = targets[k % len(targets)]
        label[s] = k
        tot = weight[s]
        zeros = int(weight[s] == 0)
        frontier = {int(x) for x in nbrs[s] if label[x] < 0}
        while tot < target and frontier:
            cand = sorted(frontier, key=lambda x: (float(np.hypot(*(xy[x] - xy[s]))), x))
            added = False
            for x in cand:
                frontier.discard(x)
                if label[x] >= 0:
                    continue
                if tot + weight[x] > cap or (max_zero is not None and weight[x] == 0 and zeros >= max_zero):
                    continue
                label[x] = k
                tot += weight[x]
                zeros += int(weight[x] == 0)
                frontier |= {int(y) for y in nbrs[x] if label[y] < 0}
                added = True
                break
            if not added:
                break
        members = np.flatnonzero(label == k) if want_zero and zeros < want_zero else []
        near = sorted({int(y) for x in members for y in nbrs[x] if label[y] < 0 and weight[y] == 0})
        for x in sorted(near, key=lambda x: (float(np.hypot(*(xy[x] - xy[s]))), x))[: max(0, want_zero - zeros)]:
            label[x] = k
        k += 1
    return label


def _merge_regions(label, pairs, weight, min_w, cap, max_count=None):
    """Merge regions lighter than min_w (and, if max_count, the lightest while there are too many) into
    their lightest neighbour, preferring merges that stay within cap.  Returns compact labels."""
    label = label.copy()
    a, b = pairs
    while True:
        k = label.max() + 1
        tot = np.bincount(label, weights=weight, minlength=k)
        present = np.bincount(label, minlength=k) > 0
        small = np.flatnonzero(present & (tot < min_w))
        count = int(present.sum())
        if len(small):
            g = small[np.lexsort((small, tot[small]))][0]
        elif max_count is not None and count > max_count:
            alive = np.flatnonzero(present)
            g = alive[np.lexsort((alive, tot[alive]))][0]
        else:
            break
        la, lb = label[a], label[b]
        m = (la != lb) & ((la == g) | (lb == g))
        nb = np.unique(np.where(la[m] == g, lb[m], la[m]))
        if not len(nb):
            if len(small) and (max_count is None or count <= max_count):
                weight = weight.copy()
                weight[label == g] += min_w  # isolated: keep it as it is
                continue
            break
        fits = tot[nb] + tot[g] <= cap
        pool = nb[fits] if fits.any() else nb
        tgt = pool[np.lexsort((pool, tot[pool]))][0]
        label[label == g] = tgt
    _, compact = np.unique(label, return_inverse=True)
    return compact


# --------------------------------------------------------------------------------------------
# the builder
# --------------------------------------------------------------------------------------------


class _Builder:
    """One generation run: holds the random stream and the intermediate arrays (metric CRS)."""

    def __init__(self, scale: float, seed: int):
        if not (isinstance(scale, (int, float, np.integer, np.floating)) and scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.scale = float(scale)
        self.rng = np.random.default_rng(seed)
        self.n_compounds_target = max(8, round(_SEED001_COMPOUNDS * scale))
        self.n_grids_target = max(6, round(_SEED001_GRIDS * scale))
        self.n_streets = max(2, round(_STREETS_AT_SCALE_1 * scale))
        self.n_incidents = max(20, round(_INCIDENTS_PER_YEAR * scale))
        self.stats: dict[str, int] = {}

    def build(self) -> District:
        self._deck()
        self._cells()
        self._deal()
        self._blocks()
        self._groups()
        self._split()
        self._cores()
        self._roles()
        self._faces()
        self._margins()
        self._partitions()
        self._compound_geoms()
        self._buildings()
        self._codes()
        self._staff()
        self._incidents()
        return self._assemble()

    # ---- 1. the programme: which units exist -------------------------------------------------

    def _deck(self):
        rng = self.rng
        C, G = self.n_compounds_target, self.n_grids_target
        n_same = max(1, round(C * _SEED001_SAME / _SEED001_COMPOUNDS))
        n_larger = max(1, round(_LARGER_SHARE * C))
        n_strad = max(2, round(_STRAD_SHARE * C))
        m = rng.choice(np.array([2, 3, 4]), n_larger, p=[0.5, 0.35, 0.15])
        n_normal = G - n_same - int(m.sum()) - 2 * n_strad
        if n_normal < 2:
            n_same = max(1, n_same + n_normal - 2)
            n_normal = max(2, G - n_same - int(m.sum()) - 2 * n_strad)
        c_small = max(0, C - n_same - n_larger - n_strad)
        mean_k = float(np.clip((c_small / 0.95 - 2 * n_strad) / n_normal, 2.0, 4.0))
        k = int(mean_k) + (rng.random(n_normal) < mean_k - int(mean_k))
        n_res = n_same + n_larger + n_strad + n_normal
        n_ded = max(1, round(_INBLOCK_DED * n_res))
        dtyp = rng.choice(5, n_ded, p=_INBLOCK_DED_P)
        utype = np.repeat([_SAME, _LARGER, _STRAD, _NORMAL, _DED], [n_same, n_larger, n_strad, n_normal, n_ded])
        pieces = np.concatenate([np.ones(n_same), m, np.full(n_strad, 4), k, np.ones(n_ded)]).astype(np.int64)
        dtype = np.concatenate([np.full(n_res, -1), dtyp]).astype(np.int64)
        area = np.concatenate(
            [
                42e3 * rng.lognormal(0, 0.3, n_same),
                m * 48e3 * rng.lognormal(0, 0.15, n_larger),
                4 * 32e3 * rng.lognormal(0, 0.15, n_strad),
                k * 29e3 * rng.lognormal(0, 0.2, n_normal),
                _DED_MEDIAN[dtyp] * rng.lognormal(0, _DED_SIGMA[dtyp]),
            ]
        )
        perm = rng.permutation(len(utype))
        self.u_type, self.u_pieces, self.u_dtype, self.u_area = utype[perm], pieces[perm], dtype[perm], area[perm]
        self.u_ngrids = np.select(
            [self.u_type == _SAME, self.u_type == _LARGER, self.u_type == _STRAD, self.u_type == _NORMAL],
            [1, self.u_pieces, 2, 1],
            0,
        )
        self.c_small = c_small

    # ---- 2. superblocks ------------------------------------------------------------------------

    def _cells(self):
        rng = self.rng
        a_res = float(self.u_area.sum())
        R = math.sqrt(a_res / (1 - _CAMPUS_P) / math.pi)
        D = _CELL_SPACING
        half = 2.2 * R + 3 * D
        n = int(math.ceil(2 * half / D)) + 1
        g = (np.arange(n) - (n - 1) / 2) * D
        X, Y = np.meshgrid(g, g)
        pts = np.column_stack([X.ravel(), Y.ravel()]) + rng.uniform(-_CELL_JITTER, _CELL_JITTER, (n * n, 2)) * D
        theta0 = rng.uniform(-0.35, 0.35)
        twist = rng.uniform(0.12, 0.3) * rng.choice([-1.0, 1.0])
        r = np.hypot(pts[:, 0], pts[:, 1])
        alpha = theta0 + twist * np.minimum(r / R, 1.6)
        ca, sa = np.cos(alpha), np.sin(alpha)
        pts = np.column_stack([pts[:, 0] * ca - pts[:, 1] * sa, pts[:, 0] * sa + pts[:, 1] * ca])
        half = float(np.abs(pts).max()) + D
        bound = shapely.box(-half, -half, half, half)
        vor = shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=bound, ordered=True)
        cells = shapely.intersection(shapely.get_parts(vor), bound)
        cen = shapely.get_coordinates(shapely.centroid(cells))
        phi = np.arctan2(cen[:, 1], cen[:, 0])
        rc = np.hypot(cen[:, 0], cen[:, 1])
        wob = 1.0
        for kk, amp in ((2, 0.16), (3, 0.1), (5, 0.06)):
            wob = wob + amp * np.sin(kk * phi + rng.uniform(0, 2 * np.pi))
        reff = rc / wob
        campus = rng.random(len(cells)) < _CAMPUS_P * np.clip(0.4 + 0.9 * rc / R, 0.4, 1.6)
        order = np.argsort(reff, kind="stable")
        area = shapely.area(cells)
        # pack the shuffled units into residential superblocks in radius order, about one area's worth each
        # (a superblock holding a grid-equals-compound unit also takes a grid able to absorb road margins)
        ua, ug = self.u_area, self.u_ngrids
        absorb = np.isin(self.u_type, [_STRAD, _NORMAL])
        exact = np.isin(self.u_type, [_SAME, _LARGER])
        nu = len(ua)
        u_cell = np.full(nu, -1, dtype=np.int64)
        queue = list(range(nu))
        fill = 0.84  # leaves room for the absorbing units added below, so units keep their nominal size
        sel = []
        for c in order.tolist():
            if not queue:
                break
            pos = len(sel)
            sel.append(c)
            if campus[c]:
                continue
            taken, tot, grids = [], 0.0, 0
            while queue and (not taken or (tot + ua[queue[0]] / 2 <= fill * area[c] and grids + ug[queue[0]] <= 6)):
                i = queue.pop(0)
                taken.append(i)
                tot += ua[i]
                grids += ug[i]
            if exact[taken].any() and not absorb[taken].any():
                j = next((q for q in queue if absorb[q]), None)
                if j is not None:
                    queue.remove(j)
                    if grids + ug[j] > 7:
                        back = [t for t in taken if exact[t]][-1]
                        taken.remove(back)
                        queue.insert(0, back)
                    taken.append(j)
            u_cell[taken] = pos
        if queue:
            raise RuntimeError("candidate superblocks ran out before every unit was placed")
        sel = np.asarray(sel, dtype=np.int64)
        self.u_cell = u_cell
        self.R = R
        self.cells = cells[sel]
        self.cell_campus = campus[sel].copy()
        self.cell_theta = alpha[sel]
        self.cell_area = area[sel]
        self.cell_xy = cen[sel]
        nc = len(sel)
        tree = shapely.STRtree(self.cells)
        i, j = tree.query(self.cells, predicate="intersects")
        m = i < j
        i, j = i[m], j[m]
        shared = shapely.length(shapely.intersection(self.cells[i], self.cells[j]))
        m = shared > 1.0
        self.cell_pairs = (i[m], j[m])
        nbrs = [[] for _ in range(nc)]
        for a, b in zip(self.cell_pairs[0].tolist(), self.cell_pairs[1].tolist()):
            nbrs[a].append(b)
            nbrs[b].append(a)
        self.cell_nbrs = [sorted(x) for x in nbrs]

    def _deal(self):
        """Repair superblocks whose units are all grid-equals-compound: nobody there could take the road margin."""
        u_cell = self.u_cell
        nc = len(self.cells)
        absorb = np.isin(self.u_type, [_STRAD, _NORMAL])
        exact = np.isin(self.u_type, [_SAME, _LARGER])
        n_abs = np.bincount(u_cell[absorb], minlength=nc)
        n_ex = np.bincount(u_cell[exact], minlength=nc)
        ng_cell = np.bincount(u_cell, weights=self.u_ngrids, minlength=nc).astype(np.int64)
        swaps = 0
        for d in np.flatnonzero((n_ex > 0) & (n_abs == 0)):
            ex_d = np.flatnonzero((u_cell == d) & exact)
            e = ex_d[np.argmin(self.u_ngrids[ex_d])]
            cand = np.flatnonzero(absorb & (n_abs[u_cell] >= 2))
            cand = cand[ng_cell[u_cell[cand]] - self.u_ngrids[cand] + self.u_ngrids[e] <= 7]
            if not len(cand):
                continue
            # the nearest superblock, then the unit closest in size
            a = cand[np.lexsort((np.abs(self.u_area[cand] - self.u_area[e]), np.abs(u_cell[cand] - d)))[0]]
            dn = u_cell[a]
            u_cell[a], u_cell[e] = d, dn
            n_abs[dn] -= 1
            n_abs[d] += 1
            n_ex[d] -= 1
            n_ex[dn] += 1
            moved = self.u_ngrids[e] - self.u_ngrids[a]
            ng_cell[dn] += moved
            ng_cell[d] -= moved
            swaps += 1
        # last resort (end of the deck): a 'same' unit there and a grid-with-compounds unit elsewhere trade
        # roles, which keeps every count
        for d in np.flatnonzero((n_ex > 0) & (n_abs == 0)):
            same_d = np.flatnonzero((u_cell == d) & (self.u_type == _SAME))
            donor = np.flatnonzero((self.u_type == _NORMAL) & (n_abs[u_cell] >= 2) & (n_ex[u_cell] == 0))
            if not len(same_d) or not len(donor):
                continue
            e, a = same_d[0], donor[np.argmin(np.abs(u_cell[donor] - d))]
            self.u_type[e], self.u_pieces[e] = _NORMAL, 2
            self.u_type[a], self.u_pieces[a] = _SAME, 1
            n_abs[d] += 1
            n_ex[d] -= 1
            n_abs[u_cell[a]] -= 1
            n_ex[u_cell[a]] += 1
            swaps += 1
        self.stats["unit_swaps"] = swaps
        self.stats["cells_without_absorber"] = int(((n_ex > 0) & (n_abs == 0)).sum())
        order = np.lexsort((np.arange(len(u_cell)), u_cell))
        self.u_cell = u_cell[order]
        self.u_type, self.u_pieces = self.u_type[order], self.u_pieces[order]
        self.u_dtype, self.u_area, self.u_ngrids = self.u_dtype[order], self.u_area[order], self.u_ngrids[order]
        self.cell_ngrids = np.bincount(self.u_cell, weights=self.u_ngrids, minlength=nc).astype(np.int64)

    def _blocks(self):
        """Merge neighbouring campus superblocks into campus clusters (large parks, factories, colleges)."""
        rng = self.rng
        nc = len(self.cells)
        cluster = np.full(nc, -1, dtype=np.int64)
        k = 0
        camp = self.cell_campus
        for c in np.flatnonzero(camp):
            if cluster[c] >= 0:
                continue
            size = int(rng.choice([1, 2, 3, 4, 5], p=[0.35, 0.25, 0.2, 0.12, 0.08]))
            cluster[c] = k
            members = 1
            frontier = sorted(x for x in self.cell_nbrs[c] if camp[x] and cluster[x] < 0)
            while members < size and frontier:
                x = frontier.pop(0)
                if cluster[x] >= 0:
                    continue
                cluster[x] = k
                members += 1
                frontier = sorted(set(frontier) | {y for y in self.cell_nbrs[x] if camp[y] and cluster[y] < 0})
            k += 1
        sizes = np.bincount(cluster[cluster >= 0], minlength=k)
        small_p = [0.2, 0.15, 0.3, 0.2, 0.15]
        big_p = [0.15, 0.05, 0.45, 0.35, 0.0]
        r1, r2 = rng.choice(5, k, p=small_p), rng.choice(5, k, p=big_p)
        self.cl_dtype = np.where(sizes >= 2, r2, r1)
        self.cell_cluster = cluster
        # blocks: each residential superblock alone, each campus cluster as one
        block = np.where(camp, -1, 0)
        res = np.flatnonzero(~camp)
        block[res] = np.arange(len(res))
        block[camp] = len(res) + cluster[camp]
        self.cell_block = block
        self.n_blocks = len(res) + k

    def _groups(self):
        """Communities (社区) from whole blocks, streets (街道) from whole communities."""
        rng = self.rng
        nb = self.n_blocks
        cb = self.cell_block
        w = np.bincount(cb, weights=self.cell_ngrids, minlength=nb)
        area = np.bincount(cb, weights=self.cell_area, minlength=nb)
        xy = np.column_stack(
            [np.bincount(cb, weights=self.cell_xy[:, i] * self.cell_area, minlength=nb) / area for i in (0, 1)]
        )
        a, b = cb[self.cell_pairs[0]], cb[self.cell_pairs[1]]
        m = a != b
        pairs = np.unique(np.column_stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])]), axis=0)
        pa, pb = pairs[:, 0], pairs[:, 1]
        nbrs = [[] for _ in range(nb)]
        for x, y in zip(pa.tolist(), pb.tolist()):
            nbrs[x].append(y)
            nbrs[y].append(x)
        row = np.floor(-xy[:, 1] / 1200.0).astype(np.int64)
        serp = np.where(row % 2 == 0, xy[:, 0], -xy[:, 0])
        order = np.lexsort((np.arange(nb), serp, row))
        targets = rng.choice([2, 3, 4, 5, 6, 7], nb, p=[0.1, 0.22, 0.28, 0.2, 0.12, 0.08])
        lab = _grow_regions(nb, nbrs, w, xy, order, targets, cap=7, max_zero=3, want_zero=1)
        lab = _merge_regions(lab, (pa, pb), w, min_w=2, cap=7)
        self.block_comm = lab
        ncomm = lab.max() + 1
        cw = np.bincount(lab, weights=w, minlength=ncomm)
        carea = np.bincount(lab, weights=area, minlength=ncomm)
        cxy = np.column_stack([np.bincount(lab, weights=xy[:, i] * area, minlength=ncomm) / carea for i in (0, 1)])
        ca, cb2 = lab[pa], lab[pb]
        m = ca != cb2
        cpairs = np.unique(np.column_stack([np.minimum(ca[m], cb2[m]), np.maximum(ca[m], cb2[m])]), axis=0)
        cn = [[] for _ in range(ncomm)]
        for x, y in zip(cpairs[:, 0].tolist(), cpairs[:, 1].tolist()):
            cn[x].append(y)
            cn[y].append(x)
        target = cw.sum() / self.n_streets
        rowh = math.sqrt(carea.sum() / self.n_streets)
        row = np.floor(-cxy[:, 1] / rowh).astype(np.int64)
        serp = np.where(row % 2 == 0, cxy[:, 0], -cxy[:, 0])
        order = np.lexsort((np.arange(ncomm), serp, row))
        slab = _grow_regions(ncomm, cn, cw, cxy, order, [target], cap=np.inf)
        slab = _merge_regions(
            slab, (cpairs[:, 0], cpairs[:, 1]), cw, min_w=0.45 * target, cap=1.6 * target, max_count=self.n_streets
        )
        self.comm_street = slab
        self.cell_comm = lab[self.cell_block]

    # ---- 3. binary space partition ------------------------------------------------------------

    def _bsp(self, geoms, counts, weights, theta, force=None, want_cut=False, jitter_deg=6.0):
        """Split convex polygon i into counts[i] pieces with areas ∝ its slice of `weights`, cutting across
        the longer frame axis each time.  Returns leaves (weight order), their level-0 side, level-0 cut lines."""
        rng = self.rng
        geoms = np.asarray(geoms, dtype=object)
        counts = np.asarray(counts, dtype=np.int64)
        n = len(geoms)
        cw = np.r_[0.0, np.cumsum(weights)]
        leaves = np.empty(int(counts.sum()), dtype=object)
        side0 = np.zeros(int(counts.sum()), dtype=np.int8)
        cuts = np.full(n, None, dtype=object)
        axis0 = np.zeros(n, dtype=bool)
        g, item = geoms.copy(), np.arange(n)
        st, ct = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64), counts.copy()
        sd = np.zeros(n, dtype=np.int8)
        depth = 0
        while True:
            fin = ct <= 1
            leaves[st[fin]] = g[fin]
            side0[st[fin]] = sd[fin]
            g, item, st, ct, sd = g[~fin], item[~fin], st[~fin], ct[~fin], sd[~fin]
            if not len(g):
                break
            m = len(g)
            k1 = ct // 2 + ((ct % 2 == 1) & (rng.random(m) < 0.5))
            f = (cw[st + k1] - cw[st]) / (cw[st + ct] - cw[st])
            f = np.clip(f + rng.normal(0, 0.03, m), 0.15, 0.85)
            th = theta[item]
            umin, umax, vmin, vmax = _frame_extents(g, th)
            across_u = (umax - umin) >= (vmax - vmin)
            if force is not None and depth > 0:
                across_u = np.where(force[item], axis0[item], across_u)
            if depth == 0:
                axis0[item] = across_u
            lo = np.where(across_u, umin, vmin)
            hi = np.where(across_u, umax, vmax)
            other = np.where(across_u, (vmin + vmax) / 2, (umin + umax) / 2)
            pos = lo + f * (hi - lo)
            cu = np.where(across_u, pos, other)
            cv = np.where(across_u, other, pos)
            c, s = np.cos(th), np.sin(th)
            cx, cy = cu * c - cv * s, cu * s + cv * c
            jit = np.deg2rad(rng.uniform(-jitter_deg, jitter_deg, m))
            if force is not None:
                jit = np.where(force[item], jit * 0.3, jit)
            ang = th + np.where(across_u, 0.0, np.pi / 2) + jit
            ex, ey = np.cos(ang), np.sin(ang)
            big = 2 * np.hypot(umax - umin, vmax - vmin) + 100.0
            area = shapely.area(g)
            for _ in range(2):  # Newton steps on the cut position: area share → f
                A, _, line = _halfplanes(cx, cy, ex, ey, big)
                ra = shapely.area(shapely.intersection(g, A)) / area
                chord = np.maximum(shapely.length(shapely.intersection(g, line)), 1.0)
                shift = np.clip((f - ra) * area / chord, -0.2 * (hi - lo), 0.2 * (hi - lo))
                cx, cy = cx + shift * ex, cy + shift * ey
            A, B, line = _halfplanes(cx, cy, ex, ey, big)
            ga, gb = shapely.intersection(g, A), shapely.intersection(g, B)
            if depth == 0:
                if want_cut:
                    # only a cut near the middle becomes a road: a road beside a thin strip would eat it
                    cuts[item] = np.where(np.abs(f - 0.5) <= 0.22, line, None)
                sda, sdb = np.zeros(m, np.int8), np.ones(m, np.int8)
            else:
                sda, sdb = sd, sd
            g = np.concatenate([ga, gb])
            item = np.concatenate([item, item])
            st = np.concatenate([st, st + k1])
            ct = np.concatenate([k1, ct - k1])
            sd = np.concatenate([sda, sdb])
            depth += 1
        return leaves, side0, cuts

    def _split(self):
        rng = self.rng
        nc = len(self.cells)
        res = np.flatnonzero(~self.cell_campus)
        cnt = np.bincount(self.u_cell, minlength=nc)[res]
        u_geom, _, cuts = self._bsp(self.cells[res], cnt, self.u_area, self.cell_theta[res], want_cut=True)
        self.cell_cut = np.full(nc, None, dtype=object)
        self.cell_cut[res] = cuts
        nu = len(self.u_type)
        ut = self.u_type
        u_theta = self.cell_theta[self.u_cell]
        # units → grid-level pieces
        w2 = rng.uniform(0.85, 1.15, int(self.u_pieces.sum()))
        p_unit = np.repeat(np.arange(nu), self.u_pieces)
        p_idx = np.arange(len(p_unit)) - np.repeat(np.cumsum(self.u_pieces) - self.u_pieces, self.u_pieces)
        normal = ut[p_unit] == _NORMAL
        w2[normal] = rng.uniform(0.6, 1.4, int(normal.sum()))
        p_geom, p_side, _ = self._bsp(u_geom, self.u_pieces, w2, u_theta, force=ut == _STRAD)
        # exact grids → 2-4 micro pieces
        p_exact = np.isin(ut[p_unit], [_SAME, _LARGER])
        p_area = shapely.area(p_geom)
        k3 = np.where(p_exact, 2 + (rng.random(len(p_geom)) < 0.22) + (rng.random(len(p_geom)) < 0.06), 1).astype(np.int64)
        q_geom, _, _ = self._bsp(p_geom, k3, rng.uniform(0.7, 1.3, int(k3.sum())), u_theta[p_unit])
        q_piece = np.repeat(np.arange(len(p_geom)), k3)
        q_sub = np.arange(len(q_piece)) - np.repeat(np.cumsum(k3) - k3, k3)
        # global grid ids: unit-level grids, then campus clusters
        g_in_unit = np.select(
            [ut[p_unit] == _LARGER, ut[p_unit] == _STRAD], [p_idx, p_idx // 2], 0
        )
        n_g_unit = np.select([ut == _LARGER, ut == _STRAD], [self.u_pieces, 2], 1)
        g_off = np.cumsum(n_g_unit) - n_g_unit
        p_grid = g_off[p_unit] + g_in_unit
        n_unit_grids = int(n_g_unit.sum())
        camp_cells = np.flatnonzero(self.cell_campus)
        ncl = len(self.cl_dtype)
        # parcels = leaves + campus superblocks
        qu = p_unit[q_piece]
        self.par_geom = np.concatenate([q_geom, self.cells[camp_cells]])
        self.par_cell = np.concatenate([self.u_cell[qu], camp_cells])
        self.par_unit = np.concatenate([qu, np.full(len(camp_cells), -1)])
        self.par_utype = np.concatenate([ut[qu], np.full(len(camp_cells), _CAMPUS)])
        self.par_pidx = np.concatenate([p_idx[q_piece], np.zeros(len(camp_cells), np.int64)])
        self.par_grid = np.concatenate([p_grid[q_piece], n_unit_grids + self.cell_cluster[camp_cells]])
        self.par_dtype = np.concatenate([self.u_dtype[qu], self.cl_dtype[self.cell_cluster[camp_cells]]])
        self.par_theta = self.cell_theta[self.par_cell]
        self.n_grids = n_unit_grids + ncl
        mode_each = rng.random(nu) < 0.28
        sub = np.zeros(len(self.par_geom), dtype=np.int64)
        nq = len(q_geom)
        sub[:nq] = np.select(
            [
                np.isin(ut[qu], [_SAME, _LARGER]),
                (ut[qu] == _NORMAL) & ~mode_each[qu],
                (ut[qu] == _NORMAL) & mode_each[qu],
                ut[qu] == _STRAD,
            ],
            [q_sub, p_side[q_piece], p_idx[q_piece], p_idx[q_piece]],
            0,
        )
        _, self.par_micro = np.unique(self.par_grid * 16 + sub, return_inverse=True)
        self.n_micro = self.par_micro.max() + 1
        self.grid_utype = np.zeros(self.n_grids, dtype=np.int64)
        self.grid_utype[self.par_grid] = self.par_utype
        self.grid_dtype = np.full(self.n_grids, -1, dtype=np.int64)
        self.grid_dtype[self.par_grid] = self.par_dtype
        self.grid_cell = np.zeros(self.n_grids, dtype=np.int64)
        self.grid_cell[self.par_grid] = self.par_cell
        self.grid_comm = self.cell_comm[self.grid_cell]
        self.micro_grid = np.zeros(self.n_micro, dtype=np.int64)
        self.micro_grid[self.par_micro] = self.par_grid
        self.par_comm = self.cell_comm[self.par_cell]
        self.grid_comp = self.grid_utype <= _NORMAL  # comprehensive (综合网格)

    # ---- 4. buildable cores and road margins ----------------------------------------------------

    def _cores(self):
        rng = self.rng
        nc = len(self.cells)
        h = rng.uniform(9.0, 18.0, nc)
        L = shapely.buffer(self.cells, -h, join_style="mitre", mitre_limit=5.0)
        road_w = rng.uniform(15.0, 20.0, nc)
        has = ~shapely.is_missing(self.cell_cut) & (self.cell_area > _ROAD_MIN_CELL)
        if has.any():
            strips = shapely.buffer(self.cell_cut[has], road_w[has] / 2, cap_style="flat")
            L[has] = shapely.difference(L[has], strips)
        self.L = L
        pc = self.par_cell
        self.par_core = shapely.intersection(self.par_geom, L[pc])
        marg = shapely.difference(self.par_geom, L[pc])
        parts, idx = shapely.get_parts(marg, return_index=True)
        keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0.01)
        self.marg_parts, self.marg_par = parts[keep], idx[keep]
        self.par_core_area = shapely.area(self.par_core)

    # ---- 5. compounds and who absorbs road margins ---------------------------------------------

    def _roles(self):
        rng = self.rng
        npar = len(self.par_geom)
        ut, pu, pidx = self.par_utype, self.par_unit, self.par_pidx
        nu = len(self.u_type)
        key = np.full(npar, -1, dtype=np.int64)
        unit_level = np.isin(ut, [_SAME, _LARGER]) | ((ut == _STRAD) & np.isin(pidx, [1, 2]))
        key[unit_level] = pu[unit_level]
        cand = ((ut == _NORMAL) | ((ut == _STRAD) & np.isin(pidx, [0, 3]))) & (self.par_core_area > 6000)
        ci = np.flatnonzero(cand)
        pick = ci[np.argsort(-rng.random(len(ci)) ** (20e3 / np.maximum(self.par_core_area[ci], 1.0)), kind="stable")]
        pick = np.sort(pick[: self.c_small])
        key[pick] = nu + pick
        has = key >= 0
        self.par_comp = np.full(npar, -1, dtype=np.int64)
        uniq, inv = np.unique(key[has], return_inverse=True)
        self.par_comp[has] = inv
        ncomp = len(uniq)
        self.n_comp = ncomp
        first = np.full(ncomp, -1, dtype=np.int64)
        hp = np.flatnonzero(has)
        first[inv[::-1]] = hp[::-1]
        self.comp_utype = ut[first]
        self.comp_cell = self.par_cell[first]
        self.comp_comm = self.par_comm[first]
        unit_comp = uniq < nu
        self.comp_planted = np.select(
            [self.comp_utype == _SAME, self.comp_utype == _LARGER, (self.comp_utype == _STRAD) & unit_comp], [0, 1, 3], 2
        )
        # compound kind: planned estates where a compound is a grid, old and open ones where grids hold several
        r = np.hypot(*self.cell_xy[self.comp_cell].T) / self.R
        p_old = np.clip(0.55 - 0.3 * r, 0.15, 0.55)
        u = rng.random(ncomp)
        exactc = self.comp_planted <= 1
        kind = np.where(
            exactc,
            np.select([u < 0.55, u < 0.55 + 0.75 * p_old, u < 0.93], [0, 1, 2], 3),
            np.select([u < 0.24, u < 0.24 + p_old, u < 0.24 + p_old + 0.18], [0, 1, 2], 3),
        )
        self.comp_kind = kind
        # micro-exact: a compound alone in its micro-grid whose micro-grid is exactly the compound
        micro_n = np.bincount(self.par_micro, minlength=self.n_micro)
        single = (self.par_comp >= 0) & (self.comp_planted[np.maximum(self.par_comp, 0)] == 2)
        single &= micro_n[self.par_micro] == 1
        me = single & (rng.random(npar) < 0.35)
        self.par_exact = np.isin(ut, [_SAME, _LARGER])
        absorb = ~self.par_exact & ~me
        # every non-exact grid keeps at least one parcel that takes road margin
        g_abs = np.bincount(self.par_grid, weights=absorb, minlength=self.n_grids)
        bad = np.flatnonzero((g_abs == 0) & ~np.isin(self.grid_utype, [_SAME, _LARGER]))
        if len(bad):
            fix = np.flatnonzero(np.isin(self.par_grid, bad) & me)
            _, fi = np.unique(self.par_grid[fix], return_index=True)
            me[fix[fi]] = False
            absorb = ~self.par_exact & ~me
        self.par_mexact = me
        self.par_absorb = absorb

    # ---- 6. noding and faces --------------------------------------------------------------------

    def _faces(self):
        core_ok = ~shapely.is_empty(self.par_core) & (self.par_core_area > 0.01)
        ci = np.flatnonzero(core_ok)
        pieces = np.concatenate([self.par_core[ci], self.marg_parts])
        piece_par = np.concatenate([ci, self.marg_par])
        piece_marg = np.r_[np.zeros(len(ci), bool), np.ones(len(self.marg_parts), bool)]
        noded = shapely.union_all(shapely.boundary(pieces), grid_size=0.01)
        faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
        faces = faces[shapely.area(faces) > 0]
        rep = shapely.point_on_surface(faces)
        tree = shapely.STRtree(pieces)
        fi, pi = tree.query(rep, predicate="within")
        o = np.lexsort((pi, fi))
        fi, pi = fi[o], pi[o]
        which = np.full(len(faces), -1, dtype=np.int64)
        u, first = np.unique(fi, return_index=True)
        which[u] = pi[first]
        miss = np.flatnonzero(which < 0)
        if len(miss):
            mi, mp = tree.query_nearest(rep[miss])
            _, f2 = np.unique(mi, return_index=True)
            which[miss[mi[f2]]] = mp[f2]
        self.faces = faces
        self.face_par = piece_par[which]
        self.face_marg = piece_marg[which]
        self.stats["faces"] = len(faces)

    def _margins(self):
        """Hand road margins of exact pieces (grid = compound, micro-grid = compound) to neighbours."""
        mi = np.flatnonzero(self.face_marg)
        mg = self.faces[mi]
        own = self.face_par[mi]
        tree = shapely.STRtree(mg)
        a, b = tree.query(mg, predicate="intersects")
        keep = a < b
        a, b = a[keep], b[keep]
        shared = shapely.length(shapely.intersection(mg[a], mg[b]))
        keep = shared > 0.5
        src = np.r_[a[keep], b[keep]]
        dst = np.r_[b[keep], a[keep]]
        recv = np.where(self.par_absorb[own], own, -1)
        grid, comm = self.par_grid, self.par_comm

        def spread(target, ok):
            while True:
                lab = recv[src]
                m = (lab >= 0) & (recv[dst] < 0) & target[dst]
                if not m.any():
                    return
                d, lab = dst[m], lab[m]
                good = ok(lab, d)
                d, lab = d[good], lab[good]
                if not len(d):
                    return
                o = np.lexsort((lab, d))
                d, lab = d[o], lab[o]
                f = np.r_[True, d[1:] != d[:-1]]
                recv[d[f]] = lab[f]

        t1 = self.par_mexact[own]
        spread(t1, lambda lab, d: grid[lab] == grid[own[d]])
        lost = t1 & (recv < 0)
        if lost.any():
            bad = np.unique(own[lost])
            self.par_mexact[bad] = False
            self.par_absorb[bad] = True
            sel = np.isin(own, bad)
            recv[sel] = own[sel]
        self.stats["micro_exact_reverted"] = int(lost.sum())
        t2 = self.par_exact[own]
        comp_abs = self.par_absorb & (self.par_utype <= _NORMAL)
        spread(t2, lambda lab, d: (comm[lab] == comm[own[d]]) & comp_abs[lab])
        spread(t2, lambda lab, d: comm[lab] == comm[own[d]])
        left = np.flatnonzero(recv < 0)
        self.stats["margin_fallback"] = len(left)
        if len(left):
            cand = np.flatnonzero(self.par_absorb)
            df = pd.DataFrame({"f": left, "c": comm[own[left]]}).merge(
                pd.DataFrame({"p": cand, "c": comm[cand], "comp": comp_abs[cand]}), on="c"
            )
            dist = shapely.distance(mg[df["f"].to_numpy()], self.par_core[df["p"].to_numpy()])
            df["d"] = np.where(df["comp"].to_numpy(), dist, dist + 1e6)
            best = df.sort_values(["f", "d", "p"], kind="stable").drop_duplicates("f")
            recv[best["f"].to_numpy()] = best["p"].to_numpy()
            still = recv < 0
            recv[still] = own[still]
        par = self.face_par.copy()
        par[mi] = recv
        self.face_owner = par  # the parcel whose micro-grid holds the face

    # ---- 7. partition layers --------------------------------------------------------------------

    def _partitions(self):
        fm = self.par_micro[self.face_owner]
        self.micro_geom = _dissolve(self.faces, fm, self.n_micro)
        self.grid_geom = _dissolve(self.micro_geom, self.micro_grid, self.n_grids)
        self.n_comm = int(self.block_comm.max() + 1)
        self.comm_geom = _dissolve(self.grid_geom, self.grid_comm, self.n_comm)
        self.street_geom = _dissolve(self.comm_geom, self.comm_street, int(self.comm_street.max() + 1))
        self.district = shapely.coverage_union_all(self.street_geom)

    # ---- 8. compounds ---------------------------------------------------------------------------

    def _compound_geoms(self):
        rng = self.rng
        ncomp = self.n_comp
        geom = np.full(ncomp, None, dtype=object)
        # compounds equal to their grid (or micro-grid): union of the same faces
        exact_p = (self.par_comp >= 0) & (self.par_exact | self.par_mexact)
        core_faces = ~self.face_marg & exact_p[self.face_par]
        fc = self.par_comp[self.face_par[core_faces]]
        ex = _dissolve(self.faces[core_faces], fc, ncomp)
        comp_exact = np.zeros(ncomp, bool)
        comp_exact[np.unique(fc)] = True
        geom[comp_exact] = ex[comp_exact]
        # walled compounds inside their parcels: union of cores, pulled in by a setback
        walled = np.flatnonzero((self.par_comp >= 0) & ~exact_p)
        wc = self.par_comp[walled]
        order = np.argsort(wc, kind="stable")
        walled, wc = walled[order], wc[order]
        uw, first = np.unique(wc, return_index=True)
        base = self.par_core[walled[first]].copy()
        two = np.flatnonzero(np.diff(np.r_[first, len(wc)]) == 2)
        if len(two):
            base[two] = shapely.union(base[two], self.par_core[walled[first[two] + 1]], grid_size=0.01)
        A, P = shapely.area(base), shapely.length(base)
        sb = np.clip(0.11 * A / np.maximum(P, 1.0), 3.0, 12.0)
        # A compound alone in its micro-grid yet planted smaller differs from that micro-grid only by its wall's
        # setback: keep that beyond the classifier's 'same' tolerance, or it would be recovered as 'same'.
        alone = self._alone_in_micro()[uw] & (self._planted_micro()[uw] == 2)
        sb[alone] = np.maximum(sb[alone], _min_distinct_setback())
        g = shapely.buffer(base, -sb, join_style="mitre", mitre_limit=3.0)
        g = self._shape_compounds(g, self.comp_planted[uw], self.par_theta[walled[first]])
        # an opening removes the slivers and spikes a corner cut can leave along a wall
        g = shapely.buffer(shapely.buffer(g, -1.0, join_style="mitre"), 1.0, join_style="mitre")
        geom[uw] = g
        # "same" compounds surveyed by someone else: shifted and rounded to a 1 m grid (≤ 1.3 m)
        same = np.flatnonzero((self.comp_planted == 0) & (rng.random(ncomp) < 0.5))
        if len(same):
            dxy = rng.uniform(-0.4, 0.4, (len(same), 2))
            moved = shapely.segmentize(geom[same], 30.0)
            xy, idx = shapely.get_coordinates(moved, return_index=True)
            moved = shapely.set_coordinates(moved, xy + dxy[idx])
            moved = shapely.set_precision(moved, 1.0)
            ok = shapely.is_valid(moved) & (np.abs(shapely.area(moved) / shapely.area(geom[same]) - 1) < 0.02)
            geom[same[ok]] = moved[ok]
        self.comp_geom = _as_multi(geom)
        self.comp_exact = comp_exact

    def _alone_in_micro(self) -> np.ndarray:
        """Per compound: whether every micro-grid it lies in holds no other compound."""
        has = self.par_comp >= 0
        pairs = np.unique(np.column_stack([self.par_comp[has], self.par_micro[has]]), axis=0)
        shared = np.bincount(pairs[:, 1], minlength=self.n_micro) > 1
        out = np.ones(self.n_comp, bool)
        out[pairs[shared[pairs[:, 1]], 0]] = False
        return out

    def _shape_compounds(self, g, planted, theta):
        """Irregular walls for compounds inside larger grids: L-shapes, inner enclaves, a public lane."""
        rng = self.rng
        g = g.copy()
        n = len(g)
        cand = (planted == 2) & (shapely.area(g) > 4000)
        u = rng.random(n)
        # L-shape: cut a corner rectangle off the oriented envelope
        sel = np.flatnonzero(cand & (u < 0.2))
        if len(sel):
            umin, umax, vmin, vmax = _frame_extents(g[sel], theta[sel])
            sel = sel[np.minimum(umax - umin, vmax - vmin) >= 120.0]
            env = shapely.oriented_envelope(g[sel])
            xy, idx = shapely.get_coordinates(env, return_index=True)
            cnt = np.bincount(idx, minlength=len(sel))
            okk = cnt == 5
            sel, env = sel[okk], env[okk]
            xy = shapely.get_coordinates(env).reshape(-1, 5, 2)[:, :4]
            k = rng.integers(0, 4, len(sel))
            r = np.arange(len(sel))
            p0, p1, p3 = xy[r, k], xy[r, (k + 1) % 4], xy[r, (k + 3) % 4]
            fa, fb = rng.uniform(0.3, 0.45, (2, len(sel)))
            qa = p0 + fa[:, None] * (p1 - p0)
            qb = p0 + fb[:, None] * (p3 - p0)
            notch = shapely.polygons(np.stack([p0, qa, qa + (qb - p0), qb, p0], 1))
            cut = shapely.difference(g[sel], notch)
            good = shapely.area(cut) > 0.6 * shapely.area(g[sel])
            g[sel[good]] = cut[good]
        # enclave: a kindergarten or substation inside the wall that is not the compound's
        sel = np.flatnonzero(cand & (u >= 0.2) & (u < 0.27))
        if len(sel):
            pt = shapely.get_coordinates(shapely.point_on_surface(g[sel]))
            half = rng.uniform(9.0, 15.0, len(sel))
            th = theta[sel]
            c, s = np.cos(th), np.sin(th)
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], float)
            cu = corners[None, :, 0] * half[:, None]
            cv = corners[None, :, 1] * half[:, None]
            hole = shapely.polygons(
                np.stack([pt[:, :1] + cu * c[:, None] - cv * s[:, None], pt[:, 1:] + cu * s[:, None] + cv * c[:, None]], -1)
            )
            inner = shapely.buffer(g[sel], -8.0)
            good = shapely.contains_properly(inner, hole)
            g[sel[good]] = shapely.difference(g[sel[good]], hole[good])
        # a public lane through the compound: two walled parts
        sel = np.flatnonzero(cand & (u >= 0.27) & (u < 0.35))
        if len(sel):
            cen = shapely.get_coordinates(shapely.centroid(g[sel]))
            umin, umax, vmin, vmax = _frame_extents(g[sel], theta[sel])
            across_u = (umax - umin) >= (vmax - vmin)
            ang = theta[sel] + np.where(across_u, np.pi / 2, 0.0)
            L = 2 * np.hypot(umax - umin, vmax - vmin)
            d = np.stack([np.cos(ang), np.sin(ang)], 1) * L[:, None]
            line = shapely.linestrings(np.stack([cen - d, cen + d], 1))
            strip = shapely.buffer(line, rng.uniform(3.0, 4.0, len(sel)), cap_style="flat")
            cut = shapely.difference(g[sel], strip)
            parts = shapely.get_num_geometries(cut)
            good = (parts == 2) & (shapely.area(cut) > 0.8 * shapely.area(g[sel]))
            g[sel[good]] = cut[good]
        return g

    # ---- 9. buildings and units -----------------------------------------------------------------

    def _buildings(self):
        rng = self.rng
        npar = len(self.par_geom)
        comp = self.par_comp
        ut = self.par_utype
        core = self.par_core
        ok_core = ~shapely.is_empty(core) & (self.par_core_area > 500)
        # where buildings may stand
        region = np.full(npar, None, dtype=object)
        in_exact = (comp >= 0) & (self.par_exact | self.par_mexact)
        walled = (comp >= 0) & ~in_exact
        other = (comp < 0) & (ut <= _NORMAL)
        ded = ut >= _DED
        region[in_exact] = shapely.buffer(core[in_exact], -4.0, join_style="mitre")
        wi = np.flatnonzero(walled)
        region[wi] = shapely.buffer(
            shapely.intersection(self.comp_geom[comp[wi]], core[wi], grid_size=0.01), -3.0, join_style="mitre"
        )
        region[other] = shapely.buffer(core[other], -5.0, join_style="mitre")
        region[ded] = shapely.buffer(core[ded], -6.0, join_style="mitre")
        region[~ok_core] = shapely.from_wkt("POLYGON EMPTY")
        region = np.where(shapely.is_missing(region), shapely.from_wkt("POLYGON EMPTY"), region)
        # households per comprehensive grid, then per lot
        ng = self.n_grids
        hh = rng.integers(318, 483, ng)
        # a fixed share of comprehensive grids deliberately outside 300-500 (at least one each way)
        cg = np.flatnonzero(self.grid_comp)
        n_out = max(1, round(_OUT_OF_BAND / 2 * len(cg)))
        out = rng.permutation(cg)[: 2 * n_out]
        low = np.zeros(ng, bool)
        high = np.zeros(ng, bool)
        low[out[:n_out]] = True
        high[out[n_out:]] = True
        hh[low] = rng.integers(170, 286, int(low.sum()))
        hh[high] = rng.integers(525, 720, int(high.sum()))
        hh[~self.grid_comp] = 0
        self.grid_hh_target = hh
        r_area = shapely.area(region)
        w = np.where(other, 0.35, 1.0) * r_area * (ut <= _NORMAL)
        W = np.bincount(self.par_grid, weights=w, minlength=ng)
        raw = hh[self.par_grid] * np.divide(w, W[self.par_grid], out=np.zeros(npar), where=W[self.par_grid] > 0)
        fl = np.floor(raw).astype(np.int64)
        rem = hh - np.bincount(self.par_grid, weights=fl, minlength=ng).astype(np.int64)
        rank = _rank_within(self.par_grid, -(raw - fl))
        lot_hh = fl + (rank < rem[self.par_grid])
        # templates: kind of compound decides the building type
        kind = np.where(comp >= 0, self.comp_kind[np.maximum(comp, 0)], -1)
        tpl = np.select([kind == 0, kind == 1, kind == 2, kind == 3], [2, 1, 1, 0], 0)
        tpl = np.where((kind == 0) & (rng.random(npar) < 0.5), 3, tpl)
        tpl = np.where((kind == 3) & (rng.random(npar) < 0.4), 1, tpl)
        # rows follow the lot's own walls: the envelope direction nearest the superblock's orientation
        env = shapely.oriented_envelope(np.where(ok_core, core, shapely.box(0, 0, 1, 1)))
        exy = shapely.get_coordinates(env)
        eidx = np.r_[0, np.cumsum(shapely.get_num_coordinates(env))[:-1]]
        d = exy[eidx + 1] - exy[eidx]
        phi = np.arctan2(d[:, 1], d[:, 0])
        off = np.round((self.par_theta - phi) / (np.pi / 2)) * (np.pi / 2)
        lot_theta = phi + off + np.deg2rad(rng.uniform(-2, 2, npar))
        res_lots = np.flatnonzero((lot_hh >= 24) & (ut <= _NORMAL))
        # try templates along an escalation path; a lot that never fits takes its highest-capacity try
        nl = len(res_lots)
        path = np.array(
            [[0, 1, 2, 4, 3, 5], [1, 2, 4, 3, 5, -1], [2, 4, 3, 5, -1, -1], [3, 4, 5, -1, -1, -1], [4, 3, 5, -1, -1, -1]]
        )
        start = tpl[res_lots]
        done = np.zeros(nl, bool)
        best_it = np.full(nl, -1)
        best_cap = np.full(nl, -1.0)
        tries = []
        steps = [(k, ph) for k in range(path.shape[1]) for ph in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))]
        for it, (k, ph) in enumerate(steps):
            act = np.flatnonzero(~done & (path[start, k] >= 0))
            if not len(act):
                continue
            T = _TPL[path[start[act], k]]
            units = rng.integers(T[:, 0].astype(np.int64), T[:, 1].astype(np.int64) + 1)
            bw = np.where(T[:, 9] == 1, T[:, 5] + 4.0 * (units - 2), units * T[:, 5] + 2.0)
            bd = np.where(T[:, 9] == 1, bw, T[:, 6])
            lot, rect = _slots(region[res_lots[act]], lot_theta[res_lots[act]], bw, bd, T[:, 7], T[:, 8], ph)
            avail = np.bincount(lot, minlength=len(act))
            hpu = np.clip((T[:, 2] + T[:, 3]) / 2 * T[:, 4], 12, 36)
            need = np.ceil(lot_hh[res_lots[act]] / (units * hpu)).astype(np.int64)
            cap = avail * units * 36.0
            better = cap > best_cap[act]
            best_cap[act[better]] = cap[better]
            best_it[act[better]] = it
            fits = avail >= need
            best_it[act[fits]] = it
            done[act[fits]] = True
            tries.append((it, act, lot, rect, units, T, np.minimum(need, avail), rng.random(len(lot))))
        self.stats["lots_over_capacity"] = int((~done).sum())
        b_lot, b_geom, b_units, b_hpf, b_flo = [], [], [], [], []
        extra_from = np.zeros(npar, dtype=np.int64)
        last_cands = {}
        for it, act, lot, rect, units, T, want, key in tries:
            mine = best_it[act] == it
            want = np.where(mine, want, 0)
            chosen = _pick(lot, want, key)
            gl = res_lots[act]
            b_lot.append(gl[lot[chosen]])
            b_geom.append(rect[chosen])
            b_units.append(units[lot[chosen]])
            b_hpf.append(T[lot[chosen], 4])
            b_flo.append(T[lot[chosen], 2])
            extra_from[gl[mine]] = want[mine]
            # leftover candidates of 'other' lots host shops and public buildings
            keepc = mine[lot] & other[gl[lot]]
            if keepc.any():
                last_cands[it] = (gl[lot[keepc]], rect[keepc], key[keepc])
        b_lot = np.concatenate(b_lot) if b_lot else np.zeros(0, np.int64)
        b_geom = np.concatenate(b_geom) if b_geom else np.zeros(0, object)
        b_units = np.concatenate(b_units).astype(np.int64) if b_units else np.zeros(0, np.int64)
        b_hpf = np.concatenate(b_hpf) if b_hpf else np.zeros(0)
        b_flo = np.concatenate(b_flo) if b_flo else np.zeros(0)
        # households: spread each lot's total evenly over its units, 12-36 per unit; a lot with too few
        # households for its buildings keeps fewer buildings / units
        nb_lot = np.bincount(b_lot, minlength=npar)
        u_lot = np.zeros(npar, dtype=np.int64)
        u_lot[b_lot] = b_units
        Hl = lot_hh
        thin = Hl < 12 * nb_lot * u_lot
        nb_new = np.where(thin & (Hl < 24 * nb_lot), np.maximum(1, Hl // 24), nb_lot)
        u_new = np.where(thin, np.clip(Hl // (12 * np.maximum(nb_new, 1)), 2, np.maximum(u_lot, 2)), u_lot)
        r = _rank_within(b_lot, np.arange(len(b_lot)))
        keep = r < nb_new[b_lot]
        b_lot, b_geom, b_hpf, b_flo = b_lot[keep], b_geom[keep], b_hpf[keep], b_flo[keep]
        b_units = u_new[b_lot]
        nres = len(b_lot)
        # unit rows
        un_b = np.repeat(np.arange(nres), b_units)
        un_no = np.arange(len(un_b)) - np.repeat(np.cumsum(b_units) - b_units, b_units) + 1
        # the grid's households over all its units: a lot short of room hands its share to the others
        ug = self.par_grid[b_lot[un_b]]
        g_units = np.bincount(ug, minlength=ng)
        base = hh[ug] // np.maximum(g_units[ug], 1)
        extra = hh[ug] - base * g_units[ug]
        seq = _rank_within(ug, np.arange(len(ug)))
        un_hh = np.minimum(base + (seq < extra), 36)
        un_hh = np.maximum(un_hh, 12)
        un_pop = np.round(un_hh * rng.uniform(2.2, 3.0, len(un_hh))).astype(np.int64)
        hh_max = np.zeros(nres, dtype=np.int64)
        np.maximum.at(hh_max, un_b, un_hh)
        floors = np.maximum(b_flo, np.ceil(hh_max / b_hpf)).astype(np.int64)
        use = np.full(nres, "residential", dtype=object)
        # shops and public buildings on open land, from the candidates residential buildings left
        c_lot, c_geom, c_floors, c_use = [], [], [], []
        if last_cands:
            cl = np.concatenate([v[0] for v in last_cands.values()])
            cr = np.concatenate([v[1] for v in last_cands.values()])
            ck = np.concatenate([v[2] for v in last_cands.values()])
            n_shop = rng.integers(1, 4, npar)
            sel = _pick(cl, n_shop, ck, skip=extra_from)
            c_lot.append(cl[sel])
            c_geom.append(cr[sel])
            c_floors.append(rng.integers(2, 5, len(sel)))
            c_use.append(np.where(rng.random(len(sel)) < 0.25, "public", "commercial").astype(object))
        # other lots with no residential share still get shops
        bare = np.flatnonzero(other & ok_core & (lot_hh < 24))
        if len(bare):
            bw = np.full(len(bare), 30.0)
            lot, rect = _slots(region[bare], lot_theta[bare], bw, np.full(len(bare), 14.0), np.full(len(bare), 12.0), np.full(len(bare), 14.0))
            sel = _pick(lot, rng.integers(1, 4, len(bare)), rng.random(len(lot)))
            c_lot.append(bare[lot[sel]])
            c_geom.append(rect[sel])
            c_floors.append(rng.integers(2, 5, len(sel)))
            c_use.append(np.where(rng.random(len(sel)) < 0.25, "public", "commercial").astype(object))
        # dedicated sites
        di = np.flatnonzero(ded & ok_core)
        if len(di):
            dt = self.par_dtype[di]
            T = _DED_TPL[dt]
            lot, rect = _slots(region[di], lot_theta[di], T[:, 0], T[:, 1], T[:, 4], T[:, 5])
            nwant = np.clip(np.round(self.par_core_area[di] / T[:, 6]), T[:, 7], T[:, 8]).astype(np.int64)
            sel = _pick(lot, nwant, rng.random(len(lot)))
            dl = lot[sel]
            dr = _rank_within(dl, np.arange(len(dl)))
            fl_ = rng.integers(T[dl, 2].astype(np.int64), T[dl, 3].astype(np.int64) + 1)
            du = _DED_USE[dt[dl]].copy()
            du[(dt[dl] == 2) & (dr == 0)] = "office"
            c_lot.append(di[dl])
            c_geom.append(rect[sel])
            c_floors.append(fl_)
            c_use.append(du)
        if c_lot:
            cl = np.concatenate(c_lot)
            self.b_lot = np.concatenate([b_lot, cl])
            self.b_geom = np.concatenate([b_geom, np.concatenate(c_geom)])
            self.b_floors = np.concatenate([floors, np.concatenate(c_floors).astype(np.int64)])
            self.b_use = np.concatenate([use, np.concatenate(c_use)])
        else:
            self.b_lot, self.b_geom, self.b_floors, self.b_use = b_lot, b_geom, floors, use
        self.n_res_b = nres
        self.un_b, self.un_no, self.un_hh, self.un_pop = un_b, un_no, un_hh, un_pop

    # ---- 10. codes, names, ordering -------------------------------------------------------------

    def _codes(self):
        rng = self.rng
        # streets
        ns = len(self.street_geom)
        sxy = shapely.get_coordinates(shapely.point_on_surface(self.street_geom))
        s_rank = _row_order(np.zeros(ns, np.int64), sxy[:, 0], sxy[:, 1], 2500.0)
        self.street_code = np.array([f"{DISTRICT_CODE}{r + 1:03d}" for r in s_rank], dtype=object)
        names = list(_STREET_BASE)
        perm = rng.permutation(len(names))
        pool = [names[i] for i in perm] + [a + b for a in ("新", "东", "西", "南", "北") for b in _STREET_BASE]
        self.street_name = np.array([pool[r] + "街道" if r < len(pool) else f"第{r + 1}街道" for r in s_rank], dtype=object)
        # communities
        nm = self.n_comm
        cxy = shapely.get_coordinates(shapely.point_on_surface(self.comm_geom))
        c_rank = _row_order(self.comm_street, cxy[:, 0], cxy[:, 1], 800.0)
        self.comm_code = np.array(
            [f"{self.street_code[s]}{r + 1:03d}" for s, r in zip(self.comm_street, c_rank)], dtype=object
        )
        pool = np.array([a + b for a in _PLACE_A for b in _PLACE_B], dtype=object)
        if nm > len(pool):
            pool = np.concatenate([pool, np.array([p + a for p in ("新", "东", "西", "南", "北") for a in pool], dtype=object)])
        pick = rng.permutation(len(pool))[:nm]
        self.comm_name = np.array([p + "社区" for p in pool[pick]], dtype=object)
        # grids
        gxy = shapely.get_coordinates(shapely.centroid(self.grid_geom))
        g_rank = _row_order(self.grid_comm, gxy[:, 0], gxy[:, 1], _GRID_ROW_M)
        self.grid_seq = g_rank + 1
        self.grid_code = np.array([f"{self.comm_code[c]}{r + 1:03d}" for c, r in zip(self.grid_comm, g_rank)], dtype=object)
        # micro-grids
        mxy = shapely.get_coordinates(shapely.centroid(self.micro_geom))
        m_rank = _row_order(self.micro_grid, mxy[:, 0], mxy[:, 1], 80.0)
        self.micro_seq = m_rank + 1
        self.micro_code = np.array([f"{self.grid_code[g]}{r + 1:02d}" for g, r in zip(self.micro_grid, m_rank)], dtype=object)
        # compounds: ref in community-code order, then north→south, west→east
        pxy = shapely.get_coordinates(shapely.point_on_surface(self.comp_geom))
        comm_rank = np.argsort(np.argsort(self.comm_code, kind="stable"), kind="stable")
        grp = comm_rank[self.comp_comm]
        r = _row_order(grp, pxy[:, 0], pxy[:, 1], 150.0)
        order = np.lexsort((r, grp))
        self.comp_ref = np.empty(self.n_comp, dtype=np.int64)
        self.comp_ref[order] = np.arange(1, self.n_comp + 1)
        self.comp_name = self._compound_names()
        # buildings: 5-digit sequence within the community
        bl = self.b_lot
        nb = len(bl)
        bxy = shapely.get_coordinates(shapely.centroid(self.b_geom))
        b_comm = self.par_comm[bl]
        b_micro = self.par_micro[bl]
        b_comp = self.par_comp[bl]
        top = 1e9
        row = np.floor((top - bxy[:, 1]) / 40.0)
        comp_key = np.where(b_comp >= 0, self.comp_ref[np.maximum(b_comp, 0)], 10**9)
        micro_key = np.argsort(np.argsort(self.micro_code, kind="stable"), kind="stable")[b_micro]
        order = np.lexsort((np.arange(nb), bxy[:, 0], row, comp_key, micro_key, comm_rank[b_comm]))
        self.b_order = order
        seq = np.empty(nb, dtype=np.int64)
        cr = comm_rank[b_comm][order]
        start = np.r_[0, np.flatnonzero(cr[1:] != cr[:-1]) + 1]
        run = np.repeat(start, np.diff(np.r_[start, nb]))
        seq[order] = np.arange(nb) - run + 1
        self.b_seq = seq
        self.b_ref = np.empty(nb, dtype=np.int64)
        self.b_ref[order] = np.arange(1, nb + 1)
        # building names: "k栋" within its compound, or within the grid outside compounds; "k号楼" on sites
        scope = np.where(b_comp >= 0, b_comp, self.n_comp + self.par_grid[bl])
        k = _rank_within(scope, self.b_ref) + 1
        dedb = self.par_utype[bl] >= _DED
        self.b_name = np.where(dedb, [f"{x}号楼" for x in k], [f"{x}栋" for x in k]).astype(object)

    def _compound_names(self) -> np.ndarray:
        rng = self.rng
        n = self.n_comp
        out = np.full(n, "", dtype=object)
        pools = {
            0: [p + s for p in _PREFIX for s in _SUFFIX],
            1: [r + _CN_NUM[i] + "村" for r in _ROADS for i in range(1, 13)] + [f"{r}{i}号小区" for r in _ROADS for i in range(1, 120)],
            2: [o + t for o in _ORGS for t in ("宿舍", "家属区", "生活区")] + [o + r + "宿舍" for o in _ORGS for r in _ROADS],
            3: [f"{r}{i}号院" for r in _ROADS for i in range(1, 300)],
        }
        pools[0] = pools[0] + [x + "二期" for x in pools[0]] + [x + "三期" for x in pools[0]]
        order = np.argsort(self.comp_ref, kind="stable")
        kinds = self.comp_kind[order]
        for k in range(4):
            idx = order[kinds == k]
            pool = pools[k]
            perm = rng.permutation(len(pool))
            names = [pool[j] for j in perm[: len(idx)]]
            names += [f"{pool[perm[i % len(pool)]]}{i // len(pool) + 1}区" for i in range(len(names), len(idx))]
            out[idx] = names
        s = pd.Series(out[order])
        dup = s.duplicated()
        if dup.any():
            s[dup] = [f"{x}{i + 2}区" for i, x in enumerate(s[dup])]
        out[order] = s.to_numpy(dtype=object)
        return out

    def _site_names(self, dtype: np.ndarray) -> np.ndarray:
        rng = self.rng
        n = len(dtype)
        place = np.array(_PLACE_A, dtype=object)[rng.integers(0, len(_PLACE_A), n)]
        num = rng.integers(1, 20, n)
        v = rng.random(n)
        out = np.empty(n, dtype=object)
        for i in range(n):
            t, p, k, x = dtype[i], place[i], num[i], v[i]
            if t == 0:
                out[i] = f"{p}小学" if x < 0.45 else (f"岳阳市第{_CN_NUM[min(k, 20)]}中学" if x < 0.8 else f"{p}幼儿园")
            elif t == 1:
                out[i] = f"{p}社区卫生服务中心" if x < 0.5 else (f"岳阳市第{_CN_NUM[min(k, 20)]}人民医院" if x < 0.8 else f"岳阳{p}医院")
            elif t == 2:
                out[i] = f"岳阳{p}{_INDUSTRY[k % len(_INDUSTRY)]}有限公司"
            elif t == 3:
                out[i] = f"{p}公园" if x < 0.7 else f"{p}湿地公园"
            else:
                out[i] = f"{DISTRICT_NAME}{_BUREAUS[k % len(_BUREAUS)]}" if x < 0.5 else f"{p}街道便民服务中心"
        return out

    # ---- 11. staff ------------------------------------------------------------------------------

    def _staff(self):
        rng = self.rng
        ng = self.n_grids
        g_order = np.argsort(self.grid_code, kind="stable")
        comp = self.grid_comp
        nres = self.n_res_b
        b_ref = self.b_ref[:nres]
        b_grid = self.par_grid[self.b_lot[:nres]]
        # residential buildings per grid, for homes of grid staff
        rb = np.argsort(b_grid, kind="stable")
        rb_cnt = np.bincount(b_grid, minlength=ng)
        rb_start = np.r_[0, np.cumsum(rb_cnt)[:-1]]

        def home_in(grid_idx, p):
            grid_idx = np.asarray(grid_idx, dtype=np.int64)
            cnt = rb_cnt[grid_idx]
            has = (cnt > 0) & (rng.random(len(grid_idx)) < p)
            pick = rb_start[grid_idx] + np.floor(rng.random(len(grid_idx)) * np.maximum(cnt, 1)).astype(np.int64)
            ref = np.full(len(grid_idx), -1, dtype=np.int64)
            ref[has] = b_ref[rb[pick[has]]]
            return ref

        rows = []  # (role, person-local key, target_type, code, bref, unit, households, home, party_p, public_p)

        def add(role, n, target_type, code=None, bref=None, unit=None, hh=None, home=None, party=0.3, public=0.5, person=None):
            rows.append(
                dict(
                    role=np.full(n, role, dtype=object),
                    target_type=np.full(n, target_type, dtype=object),
                    target_code=np.full(n, None, dtype=object) if code is None else np.asarray(code, dtype=object),
                    bref=np.full(n, -1) if bref is None else np.asarray(bref),
                    unit=np.full(n, -1) if unit is None else np.asarray(unit),
                    hh=np.full(n, -1) if hh is None else np.asarray(hh),
                    home=np.full(n, -1) if home is None else np.asarray(home),
                    party=rng.random(n) < party,
                    public=rng.random(n) < public,
                    person=np.full(n, -1) if person is None else np.asarray(person),
                )
            )

        # grid chief: one per grid; a community cadre sometimes leads two neighbouring grids
        go = g_order
        reuse = comp[go] & (rng.random(ng) < 0.12)
        reuse[np.r_[True, self.grid_comm[go][1:] != self.grid_comm[go][:-1]]] = False
        self.stats["chief_reuse"] = int(reuse.sum())
        chief_key = np.cumsum(~reuse) - 1
        add("grid_chief", ng, "grid", code=self.grid_code[go], home=home_in(go, 0.5), party=0.8, public=0.97,
            person=chief_key)
        chief_rows = len(rows) - 1
        cg = np.flatnonzero(comp[go])
        cgo = go[cg]
        ft = cgo[rng.random(len(cgo)) >= _GAP]
        self.stats["grids_without_fulltime"] = len(cgo) - len(ft)
        add("grid_worker_fulltime", len(ft), "grid", code=self.grid_code[ft], home=home_in(ft, 0.5), party=0.5, public=0.97)
        npt = rng.choice(4, len(cgo), p=[0.06, 0.14, 0.35, 0.45])
        pt = np.repeat(cgo, npt)
        add("grid_worker_parttime", len(pt), "grid", code=self.grid_code[pt], home=home_in(pt, 0.6), party=0.3, public=0.8)
        nsc = rng.choice(3, len(cgo), p=[0.35, 0.45, 0.2])
        sc = np.repeat(cgo, nsc)
        add("seconded_cadre", len(sc), "grid", code=self.grid_code[sc], party=0.9, public=0.5)
        mo = np.argsort(self.micro_code, kind="stable")
        mo = mo[comp[self.micro_grid[mo]]]
        nv = rng.choice([1, 2, 3], len(mo), p=[0.5, 0.35, 0.15])
        vol = np.repeat(mo, nv)
        add("volunteer", len(vol), "micro_grid", code=self.micro_code[vol], home=home_in(self.micro_grid[vol], 0.8),
            party=0.35, public=0.2)
        # building heads, unit heads
        border = np.argsort(b_ref, kind="stable")
        bh = border[rng.random(nres) >= _GAP]
        self.stats["buildings_without_head"] = nres - len(bh)
        add("building_head", len(bh), "building", bref=b_ref[bh], home=b_ref[bh], party=0.4, public=0.6)
        bh_rows = len(rows) - 1
        un_ref = b_ref[self.un_b]
        uo = np.lexsort((self.un_no, un_ref))
        uh = uo[rng.random(len(uo)) >= _GAP]
        self.stats["units_without_head"] = len(uo) - len(uh)
        add("unit_head", len(uh), "unit", bref=un_ref[uh], unit=self.un_no[uh], home=un_ref[uh], party=0.3, public=0.4)
        uh_rows = len(rows) - 1
        # stewards (管家): 5-15 households each over consecutive units of one grid; some gaps, some overloads
        u_grid = b_grid[self.un_b]
        so = np.lexsort((self.un_no, un_ref, u_grid))
        covered = rng.random(len(so)) >= _GAP
        hh_c = np.where(covered, self.un_hh[so], 0)
        self.stats["units_without_steward"] = int((~covered).sum())
        ug = u_grid[so]
        uend = np.cumsum(hh_c)
        ustart = uend - hh_c
        gtot = np.bincount(ug, weights=hh_c, minlength=ng).astype(np.int64)
        goff = np.r_[0, np.cumsum(gtot)[:-1]]
        ndraw = np.where(gtot > 0, gtot // 5 + 3, 0)
        sg = np.repeat(np.arange(ng), ndraw)
        load = rng.integers(6, 15, len(sg))
        dev = rng.random(len(sg))
        load = np.where(dev < 0.02, rng.integers(16, 23, len(sg)), np.where(dev < 0.04, rng.integers(2, 5, len(sg)), load))
        cs = np.cumsum(load)
        first = np.r_[0, np.cumsum(ndraw)[:-1]]
        gcum = cs - np.repeat(np.r_[0, cs][first], ndraw)
        s_start = gcum - load
        live = s_start < gtot[sg]
        sg, s_start, s_end = sg[live], s_start[live], np.minimum(gcum[live], gtot[sg[live]])
        # a short last steward hands his households to the previous one when that stays within 15
        last = np.r_[sg[1:] != sg[:-1], True]
        short = last & (s_end - s_start < 5)
        prev = np.flatnonzero(short) - 1
        can = (prev >= 0) & (sg[np.maximum(prev, 0)] == sg[short]) & (s_end[short] - s_start[np.maximum(prev, 0)] <= 15)
        merge_i = np.flatnonzero(short)[can]
        s_end[merge_i - 1] = s_end[merge_i]
        keep = np.ones(len(sg), bool)
        keep[merge_i] = False
        sg, s_start, s_end = sg[keep], s_start[keep], s_end[keep]
        gs, ge = goff[sg] + s_start, goff[sg] + s_end
        fu = np.searchsorted(uend, gs, side="right")
        lu = np.searchsorted(ustart, ge, side="left") - 1
        nper = np.maximum(lu - fu + 1, 0)
        st_id = np.repeat(np.arange(len(sg)), nper)
        ui = np.repeat(fu, nper) + (np.arange(nper.sum()) - np.repeat(np.cumsum(nper) - nper, nper))
        ov = np.minimum(ge[st_id], uend[ui]) - np.maximum(gs[st_id], ustart[ui])
        ok = ov > 0
        st_id, ui, ov = st_id[ok], ui[ok], ov[ok]
        unit_rows = so[ui]
        st_home = np.full(len(sg), -1)
        fidx = np.unique(st_id, return_index=True)[1]
        st_home[st_id[fidx]] = un_ref[unit_rows[fidx]]
        add("steward", len(st_id), "unit", bref=un_ref[unit_rows], unit=self.un_no[unit_rows], hh=ov,
            home=st_home[st_id], party=0.5, public=0.5, person=st_id)
        st_rows = len(rows) - 1
        # people: one per row, except chiefs reused across grids, stewards across units, and unit heads of
        # unit 1 who are often their building's head
        offs = 0
        for i, r in enumerate(rows):
            n = len(r["role"])
            if i in (chief_rows, st_rows):
                r["pid"] = offs + r["person"]
                offs += int(r["person"].max() + 1) if n else 0
            else:
                r["pid"] = offs + np.arange(n)
                offs += n
        bhr, uhr = rows[bh_rows], rows[uh_rows]
        bh_pid = dict(zip(bhr["bref"].tolist(), bhr["pid"].tolist()))
        same_person = (uhr["unit"] == 1) & (rng.random(len(uhr["unit"])) < 0.3)
        cand_pid = np.array([bh_pid.get(b, -1) for b in uhr["bref"].tolist()], dtype=np.int64)
        same_person &= cand_pid >= 0
        uhr["pid"] = np.where(same_person, cand_pid, uhr["pid"])
        a = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        used, pinv = np.unique(a["pid"], return_inverse=True)
        npeople = len(used)
        first_row = np.full(npeople, -1, dtype=np.int64)
        first_row[pinv[::-1]] = np.arange(len(pinv))[::-1]
        names = self._person_names(npeople)
        tails = rng.choice(10**9, npeople, replace=False)
        pre = np.array(["13", "15", "18"], dtype=object)[rng.choice(3, npeople, p=[0.45, 0.3, 0.25])]
        phone = pre + np.char.zfill(tails.astype(str), 9).astype(object)
        home = a["home"][first_row]
        self.people = pd.DataFrame(
            {
                "ref": np.arange(1, npeople + 1),
                "name": names,
                "phone": phone,
                "phone_public": a["public"][first_row],
                "party_member": a["party"][first_row],
                "home_building_ref": pd.array(np.where(home >= 0, home, 0), dtype="Int64"),
            }
        )
        self.people.loc[home < 0, "home_building_ref"] = pd.NA
        days = (np.datetime64("2026-10-15") - np.datetime64("2021-03-01")).astype(int)
        vf = np.datetime64("2021-03-01") + rng.integers(0, days, len(pinv)).astype("timedelta64[D]")

        def nullable(x):
            s = pd.array(np.where(x >= 0, x, 0), dtype="Int64")
            s[x < 0] = pd.NA
            return s

        asg = pd.DataFrame(
            {
                "person_ref": pinv + 1,
                "role": a["role"],
                "target_type": a["target_type"],
                "target_code": a["target_code"],
                "target_building_ref": nullable(a["bref"]),
                "target_unit_number": nullable(a["unit"]),
                "households": nullable(a["hh"]),
                "valid_from": vf.astype(object),
            }
        )
        self.assignments = asg
        self.person_names = names
        self.grid_staff_name = np.full(ng, "", dtype=object)
        chief = rows[chief_rows]
        self.grid_staff_name[go] = names[np.searchsorted(used, chief["pid"])]

    def _person_names(self, n: int) -> np.ndarray:
        rng = self.rng
        sur = np.array(list(_SURNAMES), dtype=object)
        giv = np.array(list(_GIVEN), dtype=object)
        w = 1.0 / (np.arange(len(sur)) + 6.0)
        s = sur[rng.choice(len(sur), n, p=w / w.sum())]
        g1 = giv[rng.integers(0, len(giv), n)]
        g2 = np.where(rng.random(n) < 0.72, giv[rng.integers(0, len(giv), n)], "")
        return (s + g1 + g2).astype(object)

    # ---- 12. incidents --------------------------------------------------------------------------

    def _incidents(self):
        rng = self.rng
        n = self.n_incidents
        dist = self.district
        shapely.prepare(dist)
        bxy = shapely.get_coordinates(shapely.centroid(self.b_geom))
        nres = self.n_res_b
        bw = np.ones(len(bxy))
        bw[:nres] = np.bincount(self.un_b, weights=self.un_hh, minlength=nres) / 40.0
        bw[nres:] = np.where(self.b_use[nres:] == "commercial", 3.0, 1.5)
        bw = bw / bw.sum()
        n_hot = round(int(rng.integers(5, 11)) * max(1.0, self.scale))  # 5-10 per scale-1 district
        hot_b = rng.choice(len(bxy), n_hot, replace=False, p=bw)
        hot_xy = bxy[hot_b]
        hot_sigma = rng.uniform(60.0, 220.0, n_hot)
        hot_w = rng.dirichlet(np.full(n_hot, 2.0))
        hot_class = rng.choice(6, n_hot, p=[0.35, 0.03, 0.12, 0.02, 0.4, 0.08])
        is_hot = rng.random(n) < 0.42
        h = rng.choice(n_hot, n, p=hot_w)
        bpick = rng.choice(len(bxy), n, p=bw)
        xy = np.empty((n, 2))
        for it in range(6):
            todo = np.flatnonzero(~shapely.contains_xy(dist, xy[:, 0], xy[:, 1])) if it else np.arange(n)
            if not len(todo):
                break
            if it:
                bpick[todo] = rng.choice(len(bxy), len(todo), p=bw)
            z = rng.normal(0, 1, (len(todo), 2))
            hot_pt = hot_xy[h[todo]] + z * hot_sigma[h[todo], None]
            bg_pt = bxy[bpick[todo]] + z * 35.0
            xy[todo] = np.where(is_hot[todo, None], hot_pt, bg_pt)
        out = ~shapely.contains_xy(dist, xy[:, 0], xy[:, 1])
        xy[out] = bxy[bpick[out]]
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
        src = rng.choice(np.array(["patrol", "public", "hotline_12345", "video"], dtype=object), n, p=[0.52, 0.14, 0.22, 0.12])
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
        state = np.where(u < 0.05, "rejected", np.where(u < 0.07, "cancelled", np.where(u < 0.085, "suspended", "closed"))).astype(object)
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
        roads = np.array(_ROADS, dtype=object)[rng.integers(0, len(_ROADS), n)]
        for k, c in enumerate(codes):
            m = np.flatnonzero(cls == k)
            dl, ds = _DEPARTMENTS[c], _DESCRIPTIONS[c]
            dept[m] = np.array(dl, dtype=object)[rng.integers(0, len(dl), len(m))]
            desc[m] = roads[m] + np.array(ds, dtype=object)[rng.integers(0, len(ds), len(m))]
        # reporter: the grid's chief on patrol, otherwise a citizen or a video-centre operator
        pts = shapely.points(xy)
        tree = shapely.STRtree(self.grid_geom)
        pi, gi = tree.query(pts, predicate="within")
        pgrid = np.full(n, -1)
        pgrid[pi[::-1]] = gi[::-1]
        citizens = self._person_names(n)
        operators = self._person_names(12)
        reporter = np.where(src == "video", operators[rng.integers(0, 12, n)], citizens)
        pat = (src == "patrol") & (pgrid >= 0)
        reporter[pat] = self.grid_staff_name[pgrid[pat]]
        self.inc = dict(
            reported_at=reported, class_code=codes[cls], source=src, state=state, department=dept,
            description=desc, reporter=reporter, due_at=due, closed_at=clo, geometry=pts,
        )

    # ---- 13. output ------------------------------------------------------------------------------

    def _assemble(self) -> District:
        crs = METRIC_EPSG
        # the plan was drawn around (0, 0): move it onto Yueyang's UTM position
        e0, n0 = Transformer.from_crs(STORAGE_SRID, METRIC_EPSG, always_xy=True).transform(*CENTER_LONLAT)
        off = np.array([e0, n0])

        def shift(g):
            return shapely.transform(np.asarray(g, dtype=object), lambda c: c + off)

        def gdf(d, geom, order):
            cols = {k: (v[order] if isinstance(v, pd.api.extensions.ExtensionArray) else np.asarray(v)[order]) for k, v in d.items()}
            df = gpd.GeoDataFrame(cols, geometry=shift(_as_multi(geom))[order], crs=crs)
            return df.to_crs(STORAGE_SRID).reset_index(drop=True)

        so = np.argsort(self.street_code, kind="stable")
        streets = gdf({"code": self.street_code, "name": self.street_name}, self.street_geom, so)
        co = np.argsort(self.comm_code, kind="stable")
        communities = gdf(
            {"code": self.comm_code, "name": self.comm_name, "street_code": self.street_code[self.comm_street]},
            self.comm_geom, co,
        )
        go = np.argsort(self.grid_code, kind="stable")
        kind = np.where(self.grid_comp, "comprehensive", "dedicated").astype(object)
        dtyp = np.where(self.grid_dtype >= 0, _DED_TYPES[np.maximum(self.grid_dtype, 0)], None)
        dtyp[self.grid_comp] = None
        site = np.full(self.n_grids, None, dtype=object)
        dg = np.flatnonzero(~self.grid_comp)
        site[dg] = self._site_names(self.grid_dtype[dg])
        short = np.array([x[:-2] for x in self.comm_name], dtype=object)[self.grid_comm]
        gname = np.array([f"{s}第{q}网格" for s, q in zip(short, self.grid_seq)], dtype=object)
        gname[dg] = np.array([f"{s}专属网格" for s in site[dg]], dtype=object)
        grids = gdf(
            {"code": self.grid_code, "name": gname, "kind": kind, "dedicated_type": dtyp,
             "community_code": self.comm_code[self.grid_comm]},
            self.grid_geom, go,
        )
        mo = np.argsort(self.micro_code, kind="stable")
        mname = np.array([f"{gname[g]}第{q}微网格" for g, q in zip(self.micro_grid, self.micro_seq)], dtype=object)
        micro = gdf({"code": self.micro_code, "name": mname, "grid_code": self.grid_code[self.micro_grid]}, self.micro_geom, mo)
        # compounds
        cord = np.argsort(self.comp_ref, kind="stable")
        rng = self.rng
        kind_c = self.comp_kind
        pm_p = np.array([0.97, 0.35, 0.6, 0.1])[kind_c]
        oc_p = np.array([0.45, 0.1, 0.15, 0.02])[kind_c]
        has_pm = rng.random(self.n_comp) < pm_p
        has_oc = (rng.random(self.n_comp) < oc_p) & (has_pm | (rng.random(self.n_comp) < 0.2))
        pmt = self._planted_micro()
        compounds = gdf(
            {"ref": self.comp_ref, "name": self.comp_name, "kind": _KINDS[kind_c], "has_property_management": has_pm,
             "has_owners_committee": has_oc, "community_code": self.comm_code[self.comp_comm],
             "planted_type": _PLANTED[self.comp_planted], "planted_micro_type": _PLANTED[pmt]},
            self.comp_geom, cord,
        )
        # buildings
        bo = np.argsort(self.b_ref, kind="stable")
        bl = self.b_lot
        bcomp = self.par_comp[bl]
        cref = np.where(bcomp >= 0, self.comp_ref[np.maximum(bcomp, 0)], 0)
        bcr = pd.array(cref, dtype="Int64")
        bcr[bcomp < 0] = pd.NA
        buildings = gdf(
            {"ref": self.b_ref, "code": np.array([f"{s:05d}" for s in self.b_seq], dtype=object), "name": self.b_name,
             "community_code": self.comm_code[self.par_comm[bl]], "compound_ref": bcr, "floors": self.b_floors,
             "use": self.b_use},
            self.b_geom, bo,
        )
        units = pd.DataFrame(
            {"building_ref": self.b_ref[self.un_b], "number": self.un_no, "households": self.un_hh, "population": self.un_pop}
        ).sort_values(["building_ref", "number"], kind="stable").reset_index(drop=True)
        asg = self.assignments.sort_values(["person_ref"], kind="stable").reset_index(drop=True)
        inc = self.inc
        incidents = gpd.GeoDataFrame(
            {"ref": np.arange(1, len(inc["state"]) + 1), "reported_at": inc["reported_at"], "class_code": inc["class_code"],
             "source": inc["source"], "state": inc["state"], "department": inc["department"],
             "description": inc["description"], "reporter": inc["reporter"], "due_at": inc["due_at"],
             "closed_at": inc["closed_at"]},
            geometry=shift(inc["geometry"]), crs=crs,
        ).to_crs(STORAGE_SRID)
        return District(streets, communities, grids, micro, compounds, buildings, units, self.people, asg, incidents)

    def _planted_micro(self) -> np.ndarray:
        """What each compound was built to be against micro-grids."""
        out = np.full(self.n_comp, 2, dtype=np.int64)
        has = self.par_comp >= 0
        pc, pm = self.par_comp[has], self.par_micro[has]
        pairs = np.unique(np.column_stack([pc, pm]), axis=0)
        n_micro = np.bincount(pairs[:, 0], minlength=self.n_comp)
        out[n_micro >= 2] = 3
        me = np.zeros(self.n_comp, bool)
        me[self.par_comp[has & self.par_mexact]] = True
        out[me] = 0
        out[self.comp_planted <= 1] = 1
        return out
