"""The collections served as OGC API Features and vector tile layers, each defined once.

A `Collection` names its rows (``FROM`` with joins), its geometry column (EPSG:4326, GiST-indexed), its
properties as SQL expressions, which rows a jurisdiction sees, and how `datetime` applies:

- streets, communities, grids, micro-grids are versioned: a `datetime` instant (or date: the close of that day in
  Asia/Shanghai, as ``at=`` everywhere) gives the boundaries in force then (default now); an interval gives every
  boundary version in force at some time in it (one feature per version: feature ids are boundary row ids);
- compounds and buildings are not versioned; a compound's class (小区与网格对应关系) is the stored classification of
  the boundary version in force at the instant;
- incidents (points) are filtered on the time they were reported.

Jurisdiction (a code prefix; None is the whole district): a unit by its own code (a community leader sees only their
community's grids, not the street around it); a compound by its community's or its main grid's code; a building by
its community's code, or for a grid's jurisdiction by the grid covering its point on surface; an incident by the
innermost unit it was attributed to.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from geo.features.errors import UnknownCollection
from geo.incidents.closed_loop import light_sql
from geo.store.versions import in_force

#: The boundary version in force at :t (for the stored classification of compounds).
_VERSION_AT = ("(SELECT id FROM boundary_versions WHERE valid_from <= CAST(:t AS timestamptz) "
               "ORDER BY valid_from DESC LIMIT 1)")
#: The local date of :t, for staff assignments (dated, not timed).
_LOCAL_DAY = "CAST(CAST(:t AS timestamptz) AT TIME ZONE :tz AS date)"


@dataclass(frozen=True)
class Prop:
    """A property: its name, SQL expression, JSON schema type, Chinese title, and whether tiles carry it."""

    name: str
    sql: str
    type: str = "string"
    title: str = ""
    tile: bool = True
    #: whether `?name=value` filters on it (queryable)
    queryable: bool = True
    #: for date-time strings: the schema format
    format: str | None = None


@dataclass(frozen=True)
class When:
    """The time a query is about: an instant (None: now), or an interval [start, end] (None: open)."""

    instant: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    interval: bool = False
    #: a bare date was given (for incidents an instant date means that whole day)
    day: bool = False

    @property
    def reference(self) -> dt.datetime | None:
        """The instant the non-temporal parts (a compound's class, staffing) are read at: the instant, the end
        of the interval, else now (None)."""
        return self.end if self.interval else self.instant


@dataclass(frozen=True)
class Collection:
    """A feature collection / tile layer."""

    id: str
    title: str
    description: str
    geometry_type: str  # GeoJSON type of the features (MultiPolygon, Point)
    from_sql: str
    geom: str
    fid: str
    props: tuple[Prop, ...]
    #: "versioned" (boundary periods valid_from/valid_to on `alias`), "reported" (incidents), or None
    temporal: str | None
    alias: str
    #: tiles below this zoom are empty for the layer (too small to see, too many to send)
    minzoom: int
    #: SQL keeping the rows a jurisdiction :scope sees, by the jurisdiction's level (code length) or "*" for any
    scope_sql: dict[str, str] = field(default_factory=dict)

    def prop(self, name: str) -> Prop | None:
        return next((p for p in self.props if p.name == name), None)

    def queryables(self) -> list[Prop]:
        return [p for p in self.props if p.queryable]

    def scope_condition(self, scope: str | None) -> str | None:
        """The SQL condition for a jurisdiction code (parameter :scope), None for the whole district."""
        if not scope:
            return None
        return self.scope_sql.get(str(len(scope)), self.scope_sql["*"])

    def time_conditions(self, when: When) -> list[str]:
        """SQL conditions on :t / :t0 / :t1 for `when`."""
        a = self.alias
        if self.temporal == "versioned":
            if when.interval:
                return [f"tstzrange({a}.valid_from, {a}.valid_to) && "
                        "tstzrange(CAST(:t0 AS timestamptz), CAST(:t1 AS timestamptz), '[]')"]
            return [in_force(a, "CAST(:t AS timestamptz)")]
        if self.temporal == "reported":
            if when.interval or when.day:
                return [f"{a}.reported_at >= coalesce(CAST(:t0 AS timestamptz), '-infinity')",
                        f"{a}.reported_at <= coalesce(CAST(:t1 AS timestamptz), 'infinity')"]
            if when.instant is not None:
                return [f"{a}.reported_at = CAST(:t AS timestamptz)"]
        return []


def _timestamp(expr: str) -> str:
    return f"to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"


#: Levels whose boundary rows keep the unit's name while they are in force (name history, migration 0017; a rename
#: starts a boundary row): {level: (boundary table, its unit column)}. Other levels have only the current name.
NAMED_BOUNDARIES = {"grids": ("grid_boundaries", "grid_id"), "micro_grids": ("micro_grid_boundaries", "micro_grid_id")}


def name_at(level: str, unit: str, at: str = "CAST(:t AS timestamptz)") -> str:
    """SQL for the name of the unit row `unit` (alias of the identity table of `level`) in force at `at`: its
    boundary row's name then, else (no history, or no boundary then) its current name (历史名称)."""
    if level not in NAMED_BOUNDARIES:
        return f"{unit}.name"
    table, fk = NAMED_BOUNDARIES[level]
    return (f"coalesce((SELECT nb.name FROM {table} nb WHERE nb.{fk} = {unit}.id AND {in_force('nb', at)}), "
            f"{unit}.name)")


def _unit_props(extra: tuple[Prop, ...] = (), name: str = "h.name") -> tuple[Prop, ...]:
    return (
        Prop("code", "h.code", title="编码"),
        Prop("name", name, title="名称"),
        *extra,
        Prop("unit_id", "h.id", "integer", "单位标识"),
        Prop("version_id", "h.version_id", "integer", "边界版本"),
        Prop("valid_from", _timestamp("h.valid_from"), title="生效", tile=False, queryable=False, format="date-time"),
        Prop("valid_to", _timestamp("h.valid_to"), title="失效", tile=False, queryable=False, format="date-time"),
        Prop("area_m2", "round(CAST(ST_Area(CAST(h.geom AS geography)) AS numeric), 1)", "number", "面积（平方米）",
             tile=False, queryable=False),
    )


_STAFF = ("(SELECT count(*) FROM staff_assignments a WHERE a.grid_id = h.id AND a.role = '{role}' "
          f"AND a.valid_from <= {_LOCAL_DAY} AND (a.valid_to IS NULL OR a.valid_to >= {_LOCAL_DAY}))")
_BUILDING_IN_GRID = ("EXISTS (SELECT 1 FROM grids_at(CAST(:t AS timestamptz)) g WHERE starts_with(g.code, :scope) "
                     "AND ST_Covers(g.geom, ST_PointOnSurface(b.geom)))")

COLLECTIONS: dict[str, Collection] = {c.id: c for c in (
    Collection(
        "streets", "街道", "街道 (sub-district offices): one feature per boundary version in force",
        "MultiPolygon", "streets_history h", "h.geom", "h.boundary_id", _unit_props(), "versioned", "h", 0,
        {"*": "starts_with(h.code, :scope)"}),
    Collection(
        "communities", "社区", "社区 (residents' committee areas)", "MultiPolygon",
        "communities_history h JOIN streets s ON s.id = h.street_id", "h.geom", "h.boundary_id",
        _unit_props((Prop("street_code", "s.code", title="街道编码"), Prop("street_name", "s.name", title="街道"))),
        "versioned", "h", 8, {"*": "starts_with(h.code, :scope)"}),
    Collection(
        "grids", "网格", "网格 (grids): kind, community, staffing on the day (grid chiefs, full-time workers)",
        "MultiPolygon",
        # the boundary row itself for the name it kept (grids_history names the unit as it is called now)
        "grids_history h JOIN grid_boundaries hb ON hb.id = h.boundary_id "
        "JOIN communities c ON c.id = h.community_id", "h.geom", "h.boundary_id",
        _unit_props((
            Prop("kind", "h.kind", title="类型（comprehensive 综合 / dedicated 专属）"),
            Prop("dedicated_type", "h.dedicated_type", title="专属网格类别"),
            Prop("community_code", "c.code", title="社区编码"), Prop("community_name", "c.name", title="社区"),
            Prop("grid_chiefs", _STAFF.format(role="grid_chief"), "integer", "网格长人数", queryable=False),
            Prop("fulltime_workers", _STAFF.format(role="grid_worker_fulltime"), "integer", "专职网格员人数",
                 queryable=False),
        ), name="coalesce(hb.name, h.name)"), "versioned", "h", 10, {"*": "starts_with(h.code, :scope)"}),
    Collection(
        "micro_grids", "微网格", "微网格 (micro-grids)", "MultiPolygon",
        "micro_grids_history h JOIN micro_grid_boundaries hb ON hb.id = h.boundary_id JOIN grids g ON g.id = h.grid_id "
        # the grid's boundary row in force at the reference instant, for the grid's name then (at most one)
        f"LEFT JOIN grid_boundaries gb ON gb.grid_id = g.id AND {in_force('gb', 'CAST(:t AS timestamptz)')}",
        "h.geom", "h.boundary_id",
        _unit_props((Prop("grid_code", "g.code", title="网格编码"),
                     Prop("grid_name", "coalesce(gb.name, g.name)", title="网格")), name="coalesce(hb.name, h.name)"),
        "versioned", "h", 13, {"*": "starts_with(h.code, :scope)"}),
    Collection(
        "compounds", "小区", "小区 (compounds) with their class against the grids in force (小区与网格对应关系)",
        "MultiPolygon",
        "compounds k LEFT JOIN communities cm ON cm.id = k.community_id "
        "LEFT JOIN compound_classifications cc ON cc.compound_id = k.id AND cc.level = 'grid' "
        f"AND cc.version_id = {_VERSION_AT}",
        "k.geom", "k.id",
        (
            Prop("id", "k.id", "integer", "标识"),
            Prop("name", "k.name", title="名称"),
            Prop("kind", "k.kind", title="类型"),
            Prop("has_property_management", "k.has_property_management", "boolean", "有物业"),
            Prop("has_owners_committee", "k.has_owners_committee", "boolean", "有业委会"),
            Prop("community_code", "cm.code", title="社区编码"),
            Prop("community_name", "cm.name", title="社区", tile=False),
            Prop("class", "cc.class", title="与网格关系（same 一致 / larger 大于 / smaller 小于 / straddling 跨网格 / "
                                             "outside 网格外）"),
            Prop("main_grid_code", "cc.main_code", title="主要所在网格"),
            Prop("area_m2", "round(CAST(ST_Area(CAST(k.geom AS geography)) AS numeric), 1)", "number",
                 "面积（平方米）", tile=False, queryable=False),
        ),
        None, "k", 12, {"*": "(starts_with(cm.code, :scope) OR starts_with(cc.main_code, :scope))"}),
    Collection(
        "buildings", "楼栋", "楼栋 (buildings) with their units and households", "MultiPolygon",
        "buildings b LEFT JOIN communities cm ON cm.id = b.community_id", "b.geom", "b.id",
        (
            Prop("id", "b.id", "integer", "标识"),
            Prop("code", "b.code", title="编码"),
            Prop("name", "b.name", title="名称"),
            Prop("floors", "b.floors", "integer", "层数"),
            Prop("use", "b.use", title="用途"),
            Prop("compound_id", "b.compound_id", "integer", "小区标识"),
            Prop("community_code", "cm.code", title="社区编码"),
            Prop("units", "(SELECT count(*) FROM units u WHERE u.building_id = b.id)", "integer", "单元数",
                 queryable=False),
            Prop("households", "(SELECT coalesce(sum(u.households), 0) FROM units u WHERE u.building_id = b.id)",
                 "integer", "户数", queryable=False),
        ),
        None, "b", 14, {"15": _BUILDING_IN_GRID, "*": "starts_with(cm.code, :scope)"}),
    Collection(
        "incidents", "网格事件", "网格事件 (incidents) as points: class, state, deadline light, where attributed",
        "Point",
        "incidents i JOIN incident_classes ic ON ic.code = i.class_code "
        "JOIN incident_states st ON st.code = i.state LEFT JOIN grids g ON g.id = i.grid_id "
        "LEFT JOIN communities c ON c.id = i.community_id LEFT JOIN streets s ON s.id = i.street_id",
        "i.geom", "i.id",
        (
            Prop("id", "i.id", "integer", "编号"),
            Prop("class_code", "i.class_code", title="事件类别编码"),
            Prop("class_name", "ic.name", title="事件类别"),
            Prop("major_code", "coalesce(ic.major_code, ic.code)", title="大类编码"),
            Prop("state", "i.state", title="状态编码"),
            Prop("state_name", "st.name", title="状态"),
            Prop("is_open", "st.is_open", "boolean", "未结"),
            Prop("light", light_sql("i"), title="时限灯（green 绿 / yellow 黄 / red 红）"),
            Prop("source", "i.source", title="来源"),
            Prop("department", "i.department", title="处置部门"),
            Prop("reported_at", _timestamp("i.reported_at"), title="上报时间", queryable=False, format="date-time"),
            Prop("due_at", _timestamp("i.due_at"), title="时限", tile=False, queryable=False, format="date-time"),
            Prop("closed_at", _timestamp("i.closed_at"), title="结案时间", tile=False, queryable=False,
                 format="date-time"),
            Prop("grid_code", "g.code", title="网格编码"),
            Prop("community_code", "c.code", title="社区编码"),
            Prop("street_code", "s.code", title="街道编码"),
        ),
        "reported", "i", 10, {"*": "starts_with(coalesce(g.code, c.code, s.code), :scope)"}),
)}


def get_collection(collection_id: str) -> Collection:
    """The collection with this id; UnknownCollection otherwise."""
    try:
        return COLLECTIONS[collection_id]
    except KeyError:
        raise UnknownCollection(f"there is no collection {collection_id!r}; the collections are "
                                f"{', '.join(COLLECTIONS)}", collections=list(COLLECTIONS)) from None
