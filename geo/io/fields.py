"""Field mapping (字段映射): which column of a source file feeds which attribute of a layer, and value conversion.

Every importable layer is described by a `LayerSpec`: its target fields with their type, whether they are
required, and the Chinese and English column names that match them automatically. An explicit mapping
(``code=网格编码,name=网格名称``) always wins over automatic matches. Values are converted column by column
(vectorised with pandas); a value that cannot be converted refuses its record with a reason.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from geo.errors import DomainError
from geo.store.models import CompoundKind, GridKind, StaffRole, TargetType


class MappingError(DomainError, ValueError):
    """A field mapping that cannot be applied (unknown column, unknown target, missing required field)."""

    slug = "unreadable-file"
    title: ClassVar[str | None] = "File not readable as asked"


class UnknownLayer(MappingError):
    """No importable or exportable layer has this name."""

    slug = "unknown-layer"
    title = None


@dataclass(frozen=True)
class FieldSpec:
    """One target attribute: its type ('code', 'str', 'int', 'float', 'bool', 'date', 'datetime', 'choice')."""

    name: str
    kind: str = "str"
    required: bool = False
    synonyms: tuple[str, ...] = ()
    choices: dict[str, str] | None = None
    max_length: int | None = None
    minimum: int | None = None
    #: An automatically matched column whose values are mostly not valid is set aside as meaning something else
    #: (OSM's kind=residential is no compound kind); False: its values must be valid (refused one by one).
    guessable: bool = True


@dataclass(frozen=True)
class LayerSpec:
    """An importable layer: target fields, geometry kind ('polygon', 'point' or None) and its feature key."""

    name: str
    table: str
    geometry: str | None
    fields: tuple[FieldSpec, ...]
    #: Fields that together identify one feature in a file (duplicates, split pieces); empty = none.
    key: tuple[str, ...] = ()
    #: For administrative levels: the code length (or lengths) and the parent level.
    code_lengths: tuple[int, ...] = ()
    parent: str | None = None
    label: str = ""

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]


def _choices(mapping: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """{normalised spelling: canonical value}, every canonical value also matching itself."""
    out: dict[str, str] = {}
    for canonical, spellings in mapping.items():
        for s in (canonical, *spellings):
            out[normalise_name(s)] = canonical
    return out


def normalise_name(name: object) -> str:
    """A column name or value compared loosely: lower case, without spaces, underscores, dashes or brackets."""
    return re.sub(r"[\s_\-()（）:：/]+", "", str(name)).lower()


BOOL_CHOICES = _choices({
    "true": ("1", "t", "y", "yes", "是", "有", "√", "1.0"),
    "false": ("0", "f", "n", "no", "否", "无", "没有", "×", "0.0"),
})
GRID_KIND = _choices({
    GridKind.comprehensive.value: ("综合", "综合网格", "综合类", "综合型", "comprehensive grid", "general"),
    GridKind.dedicated.value: ("专属", "专属网格", "专属类", "专属型", "专业网格", "专用网格", "dedicated grid",
                               "special"),
})
COMPOUND_KIND = _choices({
    CompoundKind.commercial.value: ("商品房", "商品房小区", "商品小区"),
    CompoundKind.old.value: ("老旧小区", "老旧", "老小区", "老公房"),
    CompoundKind.work_unit.value: ("单位大院", "大院", "单位小区", "work unit"),
    CompoundKind.open.value: ("开放式", "开放式小区", "开放小区", "散居楼"),
})
STAFF_ROLE = _choices({
    StaffRole.grid_chief.value: ("网格长",),
    StaffRole.grid_worker_fulltime.value: ("专职网格员", "网格员", "全职网格员"),
    StaffRole.grid_worker_parttime.value: ("兼职网格员",),
    StaffRole.volunteer.value: ("志愿者", "网格志愿者"),
    StaffRole.building_head.value: ("楼栋长",),
    StaffRole.unit_head.value: ("单元长",),
    StaffRole.steward.value: ("管家", "里巷管家", "红领管家", "楼道管家"),
    StaffRole.seconded_cadre.value: ("下沉干部", "下沉党员干部"),
})
TARGET_TYPE = _choices({
    TargetType.grid.value: ("网格",),
    TargetType.micro_grid.value: ("微网格", "micro grid"),
    TargetType.building.value: ("楼栋", "楼", "building"),
    TargetType.unit.value: ("单元",),
})

def _incident_choices() -> tuple[dict[str, str], dict[str, str]]:
    """Incident states (data/incident_states.csv) and sources (geo.incidents.closed_loop.SOURCES): code or Chinese
    name."""
    import csv

    states: dict[str, tuple[str, ...]] = {}
    from data import DATA_DIR

    path = DATA_DIR / "incident_states.csv"
    if path.exists():
        with path.open(encoding="utf-8") as f:
            states = {r["code"]: (r["name"],) for r in csv.DictReader(f)}
    try:
        from geo.incidents.closed_loop import SOURCES
    except ImportError:  # the incidents module is optional for imports
        SOURCES = {}
    return _choices(states), _choices({k: (v,) for k, v in SOURCES.items()})


INCIDENT_STATE, INCIDENT_SOURCE = _incident_choices()
_NAME = ("name", "名称", "mc")
_HOUSEHOLDS = ("households", "户数", "住户数", "总户数", "hs", "hushu")
_POPULATION = ("population", "人口", "人口数", "人数", "总人口", "rk", "rks")


def _level_fields(own: tuple[str, ...], own_names: tuple[str, ...], parent_field: str | None,
                  parent: tuple[str, ...], code_len: int, last_names: tuple[str, ...] = ()) -> list[FieldSpec]:
    """Code, name and parent code of an administrative level; `last_names` are read as the name only when no other
    name column is there (a 网格全称 beside a 网格名称 or an exported `name` is an attribute, kept as such)."""
    fields = [
        FieldSpec("code", "code", True, (*own, "code", "编码", "代码", "编号", "bm", "dm"), max_length=code_len),
        FieldSpec("name", "str", True, (*own_names, *_NAME, *last_names), max_length=100),
    ]
    if parent_field:
        fields.append(FieldSpec(parent_field, "code", False, parent))
    return fields


#: OpenStreetMap's address tags, broadest first (addr:street + addr:housenumber are what a building usually has).
OSM_ADDRESS_TAGS = ("addr:city", "addr:district", "addr:street", "addr:housenumber")
#: Names of the column `with_osm_address` composes: the tags it joined, in order ("addr:street+addr:housenumber").
_OSM_ADDRESS_COLUMNS = tuple(
    "+".join(t for t in OSM_ADDRESS_TAGS if t in ("addr:street", "addr:housenumber") or t in extra)
    for extra in ((), ("addr:district",), ("addr:city",), ("addr:city", "addr:district")))
ADDRESS = ("address", "地址", "详细地址", "门牌地址", "addr", "addr:full", "dz", "xxdz", *_OSM_ADDRESS_COLUMNS)

STREET_CODE = ("street_code", "street_cd", "街道编码", "街道代码", "所属街道编码", "所属街道代码", "jdbm")
COMMUNITY_CODE = ("community_code", "comm_code", "社区编码", "社区代码", "所属社区编码", "所属社区代码", "sqbm")
GRID_CODE = ("grid_code", "网格编码", "网格代码", "网格编号", "所属网格编码", "所属网格编号", "wgbm")

LAYERS: dict[str, LayerSpec] = {
    "streets": LayerSpec(
        "streets", "streets", "polygon",
        tuple(_level_fields(("street_code", "街道编码", "街道代码", "区划代码", "统计用区划代码", "jdbm"),
                            ("street_name", "街道名称", "街道", "jdmc"), None, (), 9)),
        key=("code",), code_lengths=(9,), label="街道",
    ),
    "communities": LayerSpec(
        "communities", "communities", "polygon",
        tuple(_level_fields(("community_code", "社区编码", "社区代码", "居委会代码", "统计用区划代码", "区划代码",
                             "sqbm"), ("community_name", "社区名称", "社区", "居委会名称", "sqmc"), "street_code",
                            tuple(s for s in STREET_CODE if s not in ("street_code",)) + ("street_code",), 12)),
        key=("code",), code_lengths=(12,), parent="streets", label="社区",
    ),
    "grids": LayerSpec(
        "grids", "grids", "polygon",
        (
            *_level_fields(("grid_code", "网格编码", "网格代码", "网格编号", "wgbm"),
                           ("grid_name", "网格名称", "网格", "wgmc"), "community_code", COMMUNITY_CODE, 15,
                           ("网格全称",)),
            FieldSpec("kind", "choice", False, ("kind", "grid_kind", "网格类型", "网格类别", "类型", "类别", "wglx",
                                                "type", "网格属性", "lx"), GRID_KIND, guessable=False),
            FieldSpec("community_name", "str", False, ("community_name", "所属社区", "所属社区名称", "社区名称",
                                                       "社区", "sqmc", "community"), max_length=100),
            FieldSpec("dedicated_type", "str", False, ("dedicated_type", "ded_type", "专属类型", "专属网格类型"),
                      max_length=32),
            FieldSpec("households", "int", False, _HOUSEHOLDS, minimum=0),
            FieldSpec("population", "int", False, _POPULATION, minimum=0),
        ),
        key=("code",), code_lengths=(15,), parent="communities", label="网格",
    ),
    "micro_grids": LayerSpec(
        "micro_grids", "micro_grids", "polygon",
        tuple(_level_fields(("micro_grid_code", "mgrid_code", "微网格编码", "微网格代码", "微网格编号", "wwgbm"),
                            ("micro_grid_name", "微网格名称", "微网格", "wwgmc"), "grid_code",
                            tuple(g for g in GRID_CODE if g != "grid_code") + ("grid_code",), 18)),
        key=("code",), code_lengths=(17, 18), parent="grids", label="微网格",
    ),
    "compounds": LayerSpec(
        "compounds", "compounds", "polygon",
        (
            FieldSpec("ref", "str", False, ("ref", "source_ref", "小区编码", "小区编号", "小区代码", "id", "osm_id",
                                             "fid", "objectid"), max_length=100),
            FieldSpec("name", "str", False, ("compound_name", "小区名称", "小区", "名称", "name", "xqmc"),
                      max_length=200),
            FieldSpec("address", "str", False, ("compound_address", "小区地址", *ADDRESS), max_length=500),
            FieldSpec("kind", "choice", False, ("kind", "compound_kind", "小区类型", "小区类别", "类型"),
                      COMPOUND_KIND),
            FieldSpec("has_property_management", "bool", False,
                      ("has_property_management", "has_pm", "物业", "有无物业", "是否有物业", "物业管理")),
            FieldSpec("has_owners_committee", "bool", False,
                      ("has_owners_committee", "has_oc", "业委会", "有无业委会", "是否有业委会", "是否成立业委会")),
            FieldSpec("community_code", "code", False, COMMUNITY_CODE),
        ),
        key=("ref",), label="小区",
    ),
    "buildings": LayerSpec(
        "buildings", "buildings", "polygon",
        (
            FieldSpec("ref", "str", False, ("ref", "source_ref", "id", "osm_id", "fid", "objectid"),
                      max_length=100),
            FieldSpec("code", "str", False, ("building_code", "楼栋编码", "楼栋编号", "楼栋代码", "楼号", "code",
                                              "编码", "编号", "ldbm"), max_length=20),
            FieldSpec("name", "str", False, ("building_name", "楼栋名称", "楼栋", "楼名", "name", "名称", "ldmc"),
                      max_length=100),
            FieldSpec("address", "str", False, ("building_address", "楼栋地址", *ADDRESS), max_length=500),
            FieldSpec("community_code", "code", False, COMMUNITY_CODE),
            FieldSpec("compound_ref", "str", False, ("compound_ref", "cmpd_ref", "小区编码", "小区编号", "所属小区编码",
                                                      "所属小区编号", "小区id")),
            FieldSpec("floors", "int", False, ("floors", "层数", "楼层", "楼层数", "地上层数", "building:levels",
                                                "building_levels", "levels", "cs"), minimum=0),
            FieldSpec("use", "str", False, ("use", "用途", "房屋用途", "建筑用途", "yt"), max_length=32),
        ),
        key=("ref",), label="楼栋",
    ),
    "units": LayerSpec(
        "units", "units", None,
        (
            FieldSpec("building_ref", "str", False, ("building_ref", "bldg_ref", "楼栋id", "楼栋ref")),
            FieldSpec("building_code", "str", False,
                      ("building_code", "bldg_code", "楼栋编码", "楼栋编号", "楼号", "ldbm")),
            FieldSpec("number", "int", True, ("number", "unit_number", "unit_no", "单元", "单元号", "单元编号",
                                              "dyh"), minimum=0),
            FieldSpec("households", "int", False, _HOUSEHOLDS, minimum=0),
            FieldSpec("population", "int", False, _POPULATION, minimum=0),
        ),
        key=("building_ref", "building_code", "number"), label="单元",
    ),
    "staff": LayerSpec(
        "staff", "people", None,
        (
            FieldSpec("name", "str", True, ("name", "姓名", "名字", "xm", "person_name"), max_length=100),
            FieldSpec("phone", "str", False, ("phone", "电话", "手机", "手机号", "手机号码", "联系电话", "dh"),
                      max_length=32),
            FieldSpec("phone_public", "bool", False, ("phone_public", "phone_pub", "电话公开", "是否公示",
                                                       "公示电话")),
            FieldSpec("party_member", "bool", False, ("party_member", "party_mbr", "党员", "是否党员", "政治面貌")),
            FieldSpec("home_building_ref", "str", False, ("home_building_ref", "home_bldg", "居住楼栋",
                                                           "居住楼栋编号", "住址楼栋")),
        ),
        key=("name", "phone"), label="人员",
    ),
    "staff_assignments": LayerSpec(
        "staff_assignments", "staff_assignments", None,
        (
            FieldSpec("person_name", "str", True, ("person_name", "pers_name", "姓名", "name", "人员", "xm")),
            FieldSpec("person_phone", "str", False, ("person_phone", "pers_phone", "电话", "手机", "手机号",
                                                      "联系电话", "phone")),
            FieldSpec("role", "choice", True, ("role", "角色", "职务", "岗位", "身份"), STAFF_ROLE),
            FieldSpec("target_type", "choice", False, ("target_type", "tgt_type", "对象类型", "负责对象类型"),
                      TARGET_TYPE),
            FieldSpec("target_code", "str", True, ("target_code", "tgt_code", "负责对象", "负责网格", "网格编码",
                                                    "楼栋编号", "对象编码")),
            FieldSpec("unit_number", "int", False, ("unit_number", "unit_no", "单元", "单元号")),
            FieldSpec("households", "int", False, ("households", "服务户数", "户数"), minimum=0),
            FieldSpec("valid_from", "date", False, ("valid_from", "起始日期", "开始日期", "任职日期", "上岗日期")),
            FieldSpec("valid_to", "date", False, ("valid_to", "结束日期", "离任日期", "终止日期")),
        ),
        label="人员任职",
    ),
    "incidents": LayerSpec(
        "incidents", "incidents", "point",
        (
            FieldSpec("reported_at", "datetime", True, ("reported_at", "reported", "上报时间", "报告时间",
                                                         "发生时间", "时间", "requested_datetime")),
            FieldSpec("class_code", "str", True, ("class_code", "事件类别", "类别编码", "事件类型编码",
                                                   "service_code"), max_length=16),
            FieldSpec("source", "choice" if INCIDENT_SOURCE else "str", False, ("source", "来源", "事件来源",
                                                                                "信息来源"),
                      INCIDENT_SOURCE or None, max_length=32),
            FieldSpec("state", "choice" if INCIDENT_STATE else "str", False, ("state", "状态", "处置状态", "status"),
                      INCIDENT_STATE or None, max_length=32),
            FieldSpec("description", "str", False, ("description", "descr", "描述", "事件描述", "内容")),
            FieldSpec("reporter", "str", False, ("reporter", "上报人", "报告人"), max_length=100),
            FieldSpec("reporter_phone", "str", False, ("reporter_phone", "rep_phone", "上报人电话", "联系电话"),
                      max_length=32),
            FieldSpec("department", "str", False, ("department", "处置部门", "责任部门", "部门"), max_length=100),
            FieldSpec("due_at", "datetime", False, ("due_at", "截止时间", "处置时限", "期限")),
            FieldSpec("closed_at", "datetime", False, ("closed_at", "结案时间", "办结时间")),
        ),
        label="事件",
    ),
}
#: Layer names accepted with a dash too (micro-grids, staff-assignments).
ALIASES = {name.replace("_", "-"): name for name in LAYERS}


def layer_spec(layer: str) -> LayerSpec:
    """The spec of an importable layer (``micro-grids`` and ``micro_grids`` both work)."""
    name = ALIASES.get(layer, layer)
    if name not in LAYERS:
        raise UnknownLayer(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
    return LAYERS[name]


def parse_mapping(text: str | dict[str, str] | None) -> dict[str, str]:
    """``code=网格编码,name=网格名称`` (or a dict) as {target field: source column}."""
    if not text:
        return {}
    if isinstance(text, dict):
        return dict(text)
    out: dict[str, str] = {}
    for part in re.split(r"[,，;；]", text):
        if not part.strip():
            continue
        if "=" not in part:
            raise MappingError(f"mapping {part!r} is not target=column (e.g. code=网格编码)")
        target, source = (s.strip() for s in part.split("=", 1))
        if not target or not source:
            raise MappingError(f"mapping {part!r} is not target=column (e.g. code=网格编码)")
        out[target] = source
    return out


@dataclass
class FieldMatch:
    """The outcome of matching a file's columns: {target: source}, how each was found, and unused columns."""

    mapping: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def match_fields(spec: LayerSpec, columns: list[str], explicit: dict[str, str] | None = None) -> FieldMatch:
    """Match source columns to the layer's fields: explicit mapping first, then synonyms in priority order."""
    explicit = explicit or {}
    result = FieldMatch()
    unknown = sorted(set(explicit) - set(spec.names))
    if unknown:
        raise MappingError(f"{', '.join(unknown)} not a field of {spec.name}; fields are {', '.join(spec.names)}")
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(normalise_name(c), c)
    used: set[str] = set()
    for target, source in explicit.items():
        col = source if source in columns else by_norm.get(normalise_name(source))
        if col is None:
            raise MappingError(f"--map {target}={source}: the file has no column {source!r}; "
                               f"its columns are {', '.join(map(str, columns))}")
        result.mapping[target] = col
        result.how[target] = "mapped"
        used.add(col)
    # Field order then synonym order: a specific synonym of an earlier field wins over a generic later one.
    for depth in range(max(len(f.synonyms) for f in spec.fields)):
        for f in spec.fields:
            if f.name in result.mapping or depth >= len(f.synonyms):
                continue
            col = by_norm.get(normalise_name(f.synonyms[depth]))
            if col is not None and col not in used:
                result.mapping[f.name] = col
                result.how[f.name] = "automatic"
                used.add(col)
    # Then a column whose name starts with a distinctive synonym ('网格编码（新）', 'grid_code_2024').
    for f in spec.fields:
        if f.name in result.mapping:
            continue
        for syn in f.synonyms:
            key = normalise_name(syn)
            if len(key) < 4:
                continue
            col = next((c for n, c in by_norm.items() if n.startswith(key) and c not in used), None)
            if col is not None:
                result.mapping[f.name] = col
                result.how[f.name] = "automatic"
                used.add(col)
                break
    result.ignored = [c for c in columns if c not in used]
    return result


def with_osm_address(spec: LayerSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` plus one column joining OSM's address tags when the layer has an address and the file has
    addr:street (or addr_street …): "上海市" + "浦东新区" + "世纪大道" + "1号" (a bare number gets 号). The column
    is named after the tags joined ("addr:street+addr:housenumber"), so the dry run says what was read."""
    if "address" not in spec.names:
        return frame
    by_norm: dict[str, str] = {}
    for c in frame.columns:
        by_norm.setdefault(normalise_name(c), c)
    cols = {t: by_norm.get(normalise_name(t)) for t in OSM_ADDRESS_TAGS}
    street = cols["addr:street"]
    if street is None:
        return frame
    used = [t for t in OSM_ADDRESS_TAGS if cols[t] is not None]
    name = "+".join(used)
    if name not in _OSM_ADDRESS_COLUMNS or name in frame.columns:
        return frame

    def part(tag: str) -> pd.Series:
        col = cols[tag]
        if col is None:
            return pd.Series("", index=frame.index, dtype=object)
        return frame[col].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())

    number = part("addr:housenumber")
    number = number.where(~number.str.contains(r"[0-9A-Za-z]$", regex=True), number + "号")
    joined = part("addr:city") + part("addr:district") + part("addr:street") + number
    has_street = part("addr:street") != ""
    return frame.assign(**{name: joined.where(has_street, None)})


def columns_read(match: FieldMatch) -> list[str]:
    """How each column was read, in words for the dry run: "we read column '网格编码' as code (recognised)"."""
    words = {"mapped": "as you mapped it", "automatic": "recognised"}
    return [f"we read column {col!r} as {target} ({words.get(match.how.get(target, ''), 'recognised')})"
            for target, col in match.mapping.items()]


def required_missing(spec: LayerSpec, match: FieldMatch) -> list[str]:
    """Required fields no column feeds."""
    return [f.name for f in spec.fields if f.required and f.name not in match.mapping]


def _blank(series: pd.Series) -> np.ndarray:
    s = series.astype("string")
    return (series.isna() | s.str.strip().isin(["", "nan", "NaN", "None", "NULL", "null"])).to_numpy(dtype=bool)


def _as_text(series: pd.Series) -> pd.Series:
    """Values as strings; floats holding whole numbers lose their '.0' (codes read from numeric columns)."""
    def one(v):
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        if isinstance(v, (pd.Timestamp,)):
            return v.isoformat()
        return str(v).strip()
    return series.map(one, na_action="ignore").astype(object)


def _parse_when(text: str, zone) -> dt.datetime | None:
    """An ISO (or pandas-readable) date/datetime; naive values are local time in `zone`."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            value = pd.Timestamp(text).to_pydatetime()
        except (ValueError, TypeError, OverflowError):
            return None
        if value is pd.NaT:
            return None
    return value if value.tzinfo else value.replace(tzinfo=zone)


def convert_column(spec: FieldSpec, series: pd.Series, tz: str) -> tuple[pd.Series, np.ndarray]:
    """Convert raw values to the field's type; returns (values with None for blanks, mask of bad values)."""
    blank = _blank(series)
    bad = np.zeros(len(series), dtype=bool)
    if spec.kind in ("str", "code"):
        out = _as_text(series)
        if spec.kind == "code":
            bad = ~blank & ~out.fillna("").str.fullmatch(r"[0-9]+").to_numpy(dtype=bool)
        if spec.max_length:
            bad |= ~blank & (out.fillna("").str.len().to_numpy() > spec.max_length)
    elif spec.kind in ("int", "float"):
        num = pd.to_numeric(series.where(~blank), errors="coerce")
        bad = ~blank & num.isna().to_numpy()
        if spec.minimum is not None:
            bad |= (num < spec.minimum).fillna(False).to_numpy(dtype=bool)
        if spec.kind == "int":
            whole = num.isna() | (num == np.round(num))
            bad |= ~whole.to_numpy()
            out = pd.Series([None if pd.isna(v) else int(v) for v in num], index=series.index, dtype=object)
        else:
            out = pd.Series([None if pd.isna(v) else float(v) for v in num], index=series.index, dtype=object)
    elif spec.kind in ("bool", "choice"):
        table = BOOL_CHOICES if spec.kind == "bool" else spec.choices or {}
        norm = _as_text(series).map(normalise_name, na_action="ignore")
        mapped = norm.map(table)
        bad = ~blank & mapped.isna().to_numpy()
        if spec.kind == "bool":
            mapped = mapped.map({"true": True, "false": False})
        out = mapped.astype(object)
    elif spec.kind in ("date", "datetime"):
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(tz)
        parsed = [None if b else _parse_when(v, zone)
                  for v, b in zip(_as_text(series).tolist(), blank, strict=True)]
        bad = ~blank & np.array([v is None for v in parsed], dtype=bool)
        values: list = [v.date() if v is not None else None for v in parsed] if spec.kind == "date" else parsed
        out = pd.Series(values, index=series.index, dtype=object)
    else:  # pragma: no cover - specs are static
        raise ValueError(f"unknown field kind {spec.kind}")
    out = out.where(~blank, None).astype(object)
    out[blank] = None
    out[bad] = None
    return out, bad
