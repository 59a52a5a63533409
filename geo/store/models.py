"""The store's tables (SQLAlchemy 2 + GeoAlchemy2). Geometries are EPSG:4326, GiST-indexed, valid and non-empty.

Administrative units (street, community, grid, micro-grid) are split in two: an identity row with a stable id and
code, and boundary rows, one per published boundary version, with ``valid_from``/``valid_to``. Nothing is
overwritten in place: a redraw ends the old boundary row and starts a new one.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING, ClassVar

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    Double,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, ExcludeConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

SRID = 4326


class Base(DeclarativeBase):
    """Declarative base of every table."""


def _geom(kind: str):
    return mapped_column(Geometry(kind, srid=SRID, spatial_index=True), nullable=False)


def _valid_geom_check(table: str) -> CheckConstraint:
    return CheckConstraint("ST_IsValid(geom) AND NOT ST_IsEmpty(geom)", name=f"{table}_geom_valid")


class GridKind(enum.StrEnum):
    """综合网格 (comprehensive, residential) or 专属网格 (dedicated: a school, hospital, company …)."""

    comprehensive = "comprehensive"
    dedicated = "dedicated"


class CompoundKind(enum.StrEnum):
    """商品房 commercial, 老旧小区 old, 单位大院 work-unit, 开放式 open."""

    commercial = "commercial"
    old = "old"
    work_unit = "work_unit"
    open = "open"


class StaffRole(enum.StrEnum):
    """Roles in the chain of responsibility (网格长 → 楼栋长 → 单元长) and the "1+3+N" grid staffing."""

    grid_chief = "grid_chief"  # 网格长
    grid_worker_fulltime = "grid_worker_fulltime"  # 专职网格员
    grid_worker_parttime = "grid_worker_parttime"  # 兼职网格员
    volunteer = "volunteer"  # 志愿者
    building_head = "building_head"  # 楼栋长
    unit_head = "unit_head"  # 单元长
    steward = "steward"  # 里巷管家 / 红领管家
    seconded_cadre = "seconded_cadre"  # 下沉干部


class TargetType(enum.StrEnum):
    """What a staff assignment covers."""

    grid = "grid"
    micro_grid = "micro_grid"
    building = "building"
    unit = "unit"


def _enum(e: type[enum.Enum], name: str):
    return Enum(e, name=name, native_enum=False, length=32, validate_strings=True)


class BoundaryVersion(Base):
    """A published set of boundaries (边界版本), in force from `valid_from` until the next version."""

    __tablename__ = "boundary_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    valid_from: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), unique=True)
    label: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class _UnitMixin:
    """An administrative unit's identity: stable id, hierarchical code and name.

    A subclass sets ``code_digits`` (fewest, most): the code column is that wide and checked to be that many
    digits (constraint ``<table>_code_format``).
    """

    code_digits: ClassVar[tuple[int, int]]
    if TYPE_CHECKING:
        __tablename__: str  # each table class names its table

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))

    @declared_attr
    def code(cls) -> Mapped[str]:
        return mapped_column(String(cls.code_digits[1]), unique=True)

    @declared_attr.directive
    def __table_args__(cls):
        lo, hi = cls.code_digits
        count = str(lo) if lo == hi else f"{lo},{hi}"
        return (CheckConstraint(f"code ~ '^[0-9]{{{count}}}$'", name=f"{cls.__tablename__}_code_format"),)


class _BoundaryMixin:
    """One version of an administrative unit's boundary (table ``<level>_boundaries``, unit column ``<level>_id``).

    A subclass names its table and declares its unit column with :func:`_unit_fk`; the version, period, geometry,
    their checks, the period index and the one-version-at-a-time exclusion constraint come from here.
    """

    if TYPE_CHECKING:
        __tablename__: str  # each table class names its table

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("boundary_versions.id"))
    valid_from: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: The source file's columns no field took (所属社区, 网格全称, 面积 …), kept as found (migration 0020).
    attributes: Mapped[dict | None] = mapped_column(JSONB)

    @declared_attr
    def geom(cls):
        return _geom("MULTIPOLYGON")

    @declared_attr.directive
    def __table_args__(cls):
        table = cls.__tablename__
        unit_column = table.removesuffix("_boundaries") + "_id"
        period = text("tstzrange(valid_from, valid_to)")
        return (
            _valid_geom_check(table),
            CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name=f"{table}_period"),
            # One boundary per unit at any instant: versions of the same unit never overlap in time.
            ExcludeConstraint((unit_column, "="), (period, "&&"), using="gist",
                              name=f"{table}_one_version_at_a_time"),
            Index(f"ix_{table}_period", period, postgresql_using="gist"),
        )


def _unit_fk(identity_table: str):
    """The boundary's unit column: a cascading foreign key to the unit's identity table."""
    return mapped_column(ForeignKey(f"{identity_table}.id", ondelete="CASCADE"), index=True)


class Street(_UnitMixin, Base):
    """街道: a sub-district office's area; 9-digit code (district + 3)."""

    __tablename__ = "streets"
    code_digits = (9, 9)


class StreetBoundary(_BoundaryMixin, Base):
    """One version of a street's boundary (街道边界)."""

    __tablename__ = "street_boundaries"
    street_id: Mapped[int] = _unit_fk("streets")


class Community(_UnitMixin, Base):
    """社区: a residents' committee area; 12-digit code (street + 3)."""

    __tablename__ = "communities"
    code_digits = (10, 12)  # 10: village codes of some schemes (migration 0020)
    street_id: Mapped[int] = mapped_column(ForeignKey("streets.id"), index=True)


class CommunityBoundary(_BoundaryMixin, Base):
    """One version of a community's boundary (社区边界)."""

    __tablename__ = "community_boundaries"
    community_id: Mapped[int] = _unit_fk("communities")


class Grid(_UnitMixin, Base):
    """网格: the working unit of grid staff; 15-digit code (community + 3)."""

    __tablename__ = "grids"
    code_digits = (15, 16)  # 16: dedicated grids of some schemes (migration 0020)
    kind: Mapped[GridKind] = mapped_column(_enum(GridKind, "grid_kind"))
    dedicated_type: Mapped[str | None] = mapped_column(String(32))
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), index=True)


class GridBoundary(_BoundaryMixin, Base):
    """One version of a grid's boundary (网格边界)."""

    __tablename__ = "grid_boundaries"
    grid_id: Mapped[int] = _unit_fk("grids")
    #: the unit's name while this boundary was in force (migration 0017; NULL on insert = the unit's name)
    name: Mapped[str | None] = mapped_column(String(100))


class MicroGrid(_UnitMixin, Base):
    """微网格: a subdivision of a grid; code = grid code + 2 or 3 digits."""

    __tablename__ = "micro_grids"
    code_digits = (17, 19)  # 19: a 16-digit dedicated grid + 3 (migration 0024)
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id"), index=True)


class MicroGridBoundary(_BoundaryMixin, Base):
    """One version of a micro-grid's boundary (微网格边界)."""

    __tablename__ = "micro_grid_boundaries"
    micro_grid_id: Mapped[int] = _unit_fk("micro_grids")
    #: the unit's name while this boundary was in force (migration 0017; NULL on insert = the unit's name)
    name: Mapped[str | None] = mapped_column(String(100))


def _search_key_indexes(table: str) -> tuple[Index, ...]:
    """Trigram indexes on the place search keys of name and address (migration 0023, pg_trgm)."""
    return tuple(Index(f"ix_{table}_{col}", col, postgresql_using="gin", postgresql_ops={col: "gin_trgm_ops"})
                 for col in ("name_key", "address_key"))


def _search_key(column: str):
    """The place search key (地点搜索) of `column`, kept by PostgreSQL (place_search_key, migration 0023)."""
    return mapped_column(Text, Computed(f"place_search_key({column})", persisted=True))


class Compound(Base):
    """小区: a residential estate with its own wall or gate; not part of the code chain."""

    __tablename__ = "compounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[CompoundKind] = mapped_column(_enum(CompoundKind, "compound_kind"), default=CompoundKind.commercial)
    has_property_management: Mapped[bool] = mapped_column(Boolean, default=False)  # 物业
    has_owners_committee: Mapped[bool] = mapped_column(Boolean, default=False)  # 业委会
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"), index=True)
    source_ref: Mapped[str | None] = mapped_column(String(100))
    #: 地址 as the source gives it, e.g. "巴陵东路128号" (migration 0023; searched through place_search_key)
    address: Mapped[str | None] = mapped_column(Text)
    name_key: Mapped[str | None] = _search_key("(name)::text")
    address_key: Mapped[str | None] = _search_key("address")
    geom = _geom("MULTIPOLYGON")
    __table_args__ = (_valid_geom_check("compounds"), *_search_key_indexes("compounds"))


class Building(Base):
    """楼栋: one building footprint; has units (单元)."""

    __tablename__ = "buildings"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str | None] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(String(100))
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"), index=True)
    compound_id: Mapped[int | None] = mapped_column(ForeignKey("compounds.id"), index=True)
    floors: Mapped[int | None] = mapped_column(Integer)
    use: Mapped[str] = mapped_column(String(32), default="residential")
    source_ref: Mapped[str | None] = mapped_column(String(100))
    #: 地址 of the building, e.g. "巴陵东路128号3栋" (migration 0023)
    address: Mapped[str | None] = mapped_column(Text)
    name_key: Mapped[str | None] = _search_key("(name)::text")
    address_key: Mapped[str | None] = _search_key("address")
    geom = _geom("MULTIPOLYGON")
    __table_args__ = (_valid_geom_check("buildings"), *_search_key_indexes("buildings"))


class Unit(Base):
    """单元: one stairwell or entrance of a building, with its household (户) and population counts."""

    __tablename__ = "units"
    id: Mapped[int] = mapped_column(primary_key=True)
    building_id: Mapped[int] = mapped_column(ForeignKey("buildings.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    households: Mapped[int] = mapped_column(Integer, default=0)
    population: Mapped[int] = mapped_column(Integer, default=0)
    __table_args__ = (
        UniqueConstraint("building_id", "number"),
        CheckConstraint("households >= 0 AND population >= 0", name="units_counts_nonnegative"),
    )


class Person(Base):
    """A person on the staff register (网格员, 楼栋长, 管家 …)."""

    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(32))
    #: Whether the phone number is on the public notice board (公示牌) and may be shown to anyone.
    phone_public: Mapped[bool] = mapped_column(Boolean, default=False)
    party_member: Mapped[bool] = mapped_column(Boolean, default=False)
    home_building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id"))


class StaffAssignment(Base):
    """A person's role over a target (grid, micro-grid, building or unit) for a period; ended, never deleted."""

    __tablename__ = "staff_assignments"
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    role: Mapped[StaffRole] = mapped_column(_enum(StaffRole, "staff_role"))
    target_type: Mapped[TargetType] = mapped_column(_enum(TargetType, "target_type"))
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id"), index=True)
    micro_grid_id: Mapped[int | None] = mapped_column(ForeignKey("micro_grids.id"), index=True)
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id"), index=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    #: For stewards: the households of the unit this assignment serves (a unit may be shared).
    households: Mapped[int | None] = mapped_column(Integer)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)
    __table_args__ = (
        CheckConstraint(
            "(target_type = 'grid') = (grid_id IS NOT NULL) AND "
            "(target_type = 'micro_grid') = (micro_grid_id IS NOT NULL) AND "
            "(target_type = 'building') = (building_id IS NOT NULL) AND "
            "(target_type = 'unit') = (unit_id IS NOT NULL)",
            name="staff_assignments_one_target",
        ),
        CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name="staff_assignments_period"),
    )


class IncidentClass(Base):
    """Event class table (GB/T 30428.2 major classes and their minor classes), kept as data."""

    __tablename__ = "incident_classes"
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    major_code: Mapped[str | None] = mapped_column(ForeignKey("incident_classes.code"))
    time_limit_hours: Mapped[float] = mapped_column(default=72.0)
    #: 处置部门: where this class's cases go by default (migration 0021).
    department: Mapped[str | None] = mapped_column(String(100))


class IncidentState(Base):
    """A state of the closed loop (seeded from data/incident_states.csv): order, whether open, the clock."""

    __tablename__ = "incident_states"
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    rank: Mapped[int] = mapped_column(Integer)
    is_open: Mapped[bool] = mapped_column(Boolean)
    clock: Mapped[str] = mapped_column(String(16))
    open311_status: Mapped[str] = mapped_column(String(16))
    __table_args__ = (
        CheckConstraint("clock IN ('none','running','paused','stopped')", name="incident_states_clock"),
        CheckConstraint("open311_status IN ('open','closed')", name="incident_states_open311"),
    )


def _ts(**kw):
    return mapped_column(DateTime(timezone=True), **kw)


class Incident(Base):
    """网格事件: a reported case, attributed to the boundaries in force when it was reported.

    The lifecycle timestamps are filled by a BEFORE INSERT trigger when a bulk load gives only the state
    (migration 0006); ``lon``/``lat`` are generated from ``geom``.
    """

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    geom = _geom("POINT")
    #: the partition key (monthly partitions, migration 0022), hence part of the primary key
    reported_at: Mapped[dt.datetime] = _ts(primary_key=True, index=True)
    class_code: Mapped[str] = mapped_column(ForeignKey("incident_classes.code"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(ForeignKey("incident_states.code", name="incidents_state_fkey"), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    reporter: Mapped[str | None] = mapped_column(String(100))
    reporter_phone: Mapped[str | None] = mapped_column(String(32))
    department: Mapped[str | None] = mapped_column(String(100), index=True)
    due_at: Mapped[dt.datetime | None] = _ts()
    closed_at: Mapped[dt.datetime | None] = _ts()
    version_id: Mapped[int | None] = mapped_column(ForeignKey("boundary_versions.id"))
    street_id: Mapped[int | None] = mapped_column(ForeignKey("streets.id"), index=True)
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"), index=True)
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id"), index=True)
    micro_grid_id: Mapped[int | None] = mapped_column(ForeignKey("micro_grids.id"))
    compound_id: Mapped[int | None] = mapped_column(ForeignKey("compounds.id"))
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id"))
    registered_at: Mapped[dt.datetime | None] = _ts(index=True)  # 立案
    dispatched_at: Mapped[dt.datetime | None] = _ts()  # 派遣: the deadline clock starts
    handled_at: Mapped[dt.datetime | None] = _ts()  # 处置
    feedback_at: Mapped[dt.datetime | None] = _ts()  # 处理反馈
    evaluated_at: Mapped[dt.datetime | None] = _ts()  # 综合评价
    updated_at: Mapped[dt.datetime | None] = _ts()
    #: The class's limit when dispatched (a later edit of the class table does not move old deadlines).
    time_limit_hours: Mapped[float | None] = mapped_column(Double)
    extended_hours: Mapped[float] = mapped_column(Double, server_default="0")  # 延时
    extension_count: Mapped[int] = mapped_column(Integer, server_default="0")
    rework_count: Mapped[int] = mapped_column(Integer, server_default="0")  # 返工
    return_count: Mapped[int] = mapped_column(Integer, server_default="0")  # 回退
    suspended_at: Mapped[dt.datetime | None] = _ts()  # 挂账: the clock is paused since then
    suspended_from: Mapped[str | None] = mapped_column(String(32))
    evaluation: Mapped[int | None] = mapped_column(SmallInteger)  # 1 (poor) … 5 (very good)
    created_by: Mapped[str | None] = mapped_column(String(100))
    reporter_email: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(Text)
    media_url: Mapped[str | None] = mapped_column(Text)
    #: The point as the reporter sent it (GCJ-02 / BD-09 phones), before conversion to WGS-84.
    reported_lon: Mapped[float | None] = mapped_column(Double)
    reported_lat: Mapped[float | None] = mapped_column(Double)
    reported_coordsys: Mapped[str | None] = mapped_column(String(16))
    #: The point's coordinates as plain numbers, for heatmap binning by an index-only scan.
    lon: Mapped[float | None] = mapped_column(Double, Computed("ST_X(geom)", persisted=True))
    lat: Mapped[float | None] = mapped_column(Double, Computed("ST_Y(geom)", persisted=True))
    __table_args__ = (
        CheckConstraint("NOT ST_IsEmpty(geom)", name="incidents_geom_nonempty"),
        CheckConstraint("evaluation IS NULL OR evaluation BETWEEN 1 AND 5", name="incidents_evaluation_range"),
        CheckConstraint("extended_hours >= 0 AND extension_count >= 0 AND rework_count >= 0 AND return_count >= 0",
                        name="incidents_counters_nonnegative"),
        # KPI indexes: a case is due in the period holding least(due_at, closed_at) (see geo/kpi.py).
        Index("ix_incidents_due_moment", text("least(due_at, closed_at)")),
        Index("ix_incidents_open_due", "due_at",
              postgresql_where=text("state IN ('dispatched','handled','reported','suspended')")),
        Index("ix_incidents_heat", "reported_at",
              postgresql_include=["lon", "lat", "class_code", "street_id", "community_id", "grid_id"]),
        # Late closures and handlings in a period's last partial month, and the open cases' deadline lights
        # (geo/kpi.py, migration 0011).
        Index("ix_incidents_late_closed", "closed_at", postgresql_where=text("closed_at > due_at")),
        Index("ix_incidents_late_handled", "handled_at",
              postgresql_where=text("handled_at > LEAST(due_at, closed_at)")),
        Index("ix_incidents_open_light", "due_at",
              postgresql_include=["state", "suspended_at", "time_limit_hours", "extended_hours", "street_id",
                                  "community_id", "grid_id", "micro_grid_id", "class_code", "department"],
              postgresql_where=text("state IN ('dispatched','handled','reported','suspended')")),
        {"postgresql_partition_by": "RANGE (reported_at)"},
    )


#: 事件月度汇总: incident counts per local month and key, kept by statement triggers on ``incidents`` (migration
#: 0011) and read by geo/kpi.py for whole months. ``level`` is the grouping set (0 every key; 3 street, community,
#: grid; 12 street, class, department); one partition per level (``incident_rollup_l<level>``, not modelled).
incident_rollup = Table(
    "incident_rollup", Base.metadata,
    Column("level", SmallInteger, nullable=False),
    Column("month", DateTime(timezone=True), nullable=False),
    Column("closed_month", DateTime(timezone=True)),
    Column("handled_month", DateTime(timezone=True)),
    Column("street_id", Integer),
    Column("community_id", Integer),
    Column("grid_id", Integer),
    Column("class_code", String(16)),
    Column("department", String(100)),
    *(Column(name, Integer, nullable=False, server_default="0")
      for name in ("received", "rejected", "registered", "due", "on_time", "reworked", "extended")),
    UniqueConstraint("level", "month", "closed_month", "handled_month", "street_id", "community_id", "grid_id",
                     "class_code", "department", name="incident_rollup_key", postgresql_nulls_not_distinct=True),
    CheckConstraint("level IN (0, 3, 12)", name="incident_rollup_level_check"),
    postgresql_partition_by="RANGE (month)",  # monthly partitions (migration 0022)
)


class IncidentHeatSize(Base):
    """A hexagon size whose monthly counts are kept in ``incident_heat_rollup`` (its lattice's origin and scale)."""

    __tablename__ = "incident_heat_sizes"
    cell_m: Mapped[float] = mapped_column(Double, primary_key=True)
    lon0: Mapped[float] = mapped_column(Double)
    lat0: Mapped[float] = mapped_column(Double)
    kx: Mapped[float] = mapped_column(Double)
    ky: Mapped[float] = mapped_column(Double)
    k: Mapped[float] = mapped_column(Double)
    built_at: Mapped[dt.datetime] = _ts(server_default=func.now())


class IncidentHeatCount(Base):
    """Incidents reported in one local month in one hexagon (axial q, r) of one size."""

    __tablename__ = "incident_heat_rollup"
    cell_m: Mapped[float] = mapped_column(ForeignKey("incident_heat_sizes.cell_m", ondelete="CASCADE"),
                                          primary_key=True)
    month: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    q: Mapped[int] = mapped_column(Integer, primary_key=True)
    r: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    __table_args__ = ({"postgresql_partition_by": "RANGE (month)"},)  # monthly partitions (migration 0022)


class IncidentEvent(Base):
    """One transition of an incident's closed loop, kept as history."""

    __tablename__ = "incident_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, index=True)
    #: the incident's reported_at, filled by a trigger from incident_id: the key that references a partitioned
    #: incidents (migration 0022)
    incident_reported_at: Mapped[dt.datetime] = _ts(index=True)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(ForeignKey("incident_states.code", name="incident_events_to_state_fkey"))
    at: Mapped[dt.datetime] = _ts(primary_key=True)  # the partition key (migration 0022)
    actor: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict | None] = mapped_column(JSONB)
    __table_args__ = (Index("ix_incident_events_incident_at", "incident_id", "at"),
                      ForeignKeyConstraint(["incident_id", "incident_reported_at"],
                                           ["incidents.id", "incidents.reported_at"],
                                           name="incident_events_incident_id_fkey", ondelete="CASCADE",
                                           onupdate="CASCADE"),
                      # an imported incident's source id, kept in its first event (migration 0021)
                      Index("ix_incident_events_external_id", text("(detail ->> 'external_id')"),
                            postgresql_where=text("detail ? 'external_id'")),
                      {"postgresql_partition_by": "RANGE (at)"})


class IncidentPhoto(Base):
    """A photo of a case (事件照片), at report or as handling evidence; the bytes are a file under the data
    directory (`geo.incidents.photos`), named by `path` relative to it (migration 0015)."""

    __tablename__ = "incident_photos"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(BigInteger, index=True)
    #: the incident's reported_at, filled by a trigger from incident_id (migration 0022)
    incident_reported_at: Mapped[dt.datetime] = _ts(index=True)
    stage: Mapped[str] = mapped_column(String(16), server_default="report")
    media_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    taken_at: Mapped[dt.datetime | None] = _ts()
    uploaded_at: Mapped[dt.datetime] = _ts(server_default=func.now())
    uploaded_by: Mapped[str | None] = mapped_column(String(100))
    __table_args__ = (
        CheckConstraint("stage IN ('report','handling')", name="incident_photos_stage"),
        CheckConstraint("size_bytes > 0", name="incident_photos_size"),
        UniqueConstraint("incident_id", "sha256", name="incident_photos_incident_sha256"),
        ForeignKeyConstraint(["incident_id", "incident_reported_at"], ["incidents.id", "incidents.reported_at"],
                             name="incident_photos_incident_id_fkey", ondelete="CASCADE", onupdate="CASCADE"),
    )


class User(Base):
    """A user with a role and a jurisdiction (a street, community or grid code; none for admins)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    jurisdiction_level: Mapped[str | None] = mapped_column(String(16))
    jurisdiction_code: Mapped[str | None] = mapped_column(String(19))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Bumped on disable or password reset: tokens carrying an older value stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __table_args__ = (
        CheckConstraint("role IN ('admin','planner','leader','worker')", name="users_role"),
        CheckConstraint(
            "jurisdiction_level IS NULL OR jurisdiction_level IN ('street','community','grid')",
            name="users_jurisdiction_level",
        ),
    )


class ApiKey(Base):
    """A long-lived API key for integrations; only its hash is stored."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Its stated report times are kept (Open311 requested_datetime); migration 0021.
    trusted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class AuditEntry(Base):
    """Append-only audit log of every write (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    actor: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    method: Mapped[str | None] = mapped_column(String(10))
    path: Mapped[str | None] = mapped_column(Text)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    #: Jurisdiction code the change falls in, so planners can read their own area's entries.
    jurisdiction_code: Mapped[str | None] = mapped_column(String(19), index=True)
    before: Mapped[dict | None] = mapped_column(JSONB)
    after: Mapped[dict | None] = mapped_column(JSONB)


class BasemapConfig(Base):
    """The basemap layers admins saved (migration 0018): one row, the ordered list as JSON; none: settings apply."""

    __tablename__ = "basemap_config"
    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    layers: Mapped[list] = mapped_column(JSONB)
    revision: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_by: Mapped[str | None] = mapped_column(String(100))
    __table_args__ = (
        CheckConstraint("id = 1", name="basemap_config_single_row"),
        CheckConstraint("jsonb_typeof(layers) = 'array'", name="basemap_config_layers_array"),
    )


# ---- classification results (migration 0004) --------------------------------------------------------------

_RUN_KEY = ("version_id", "level")


class ClassificationRun(Base):
    """One compound-versus-grid classification per (boundary version, level): thresholds, fingerprint, timing."""

    __tablename__ = "classification_runs"
    version_id: Mapped[int] = mapped_column(ForeignKey("boundary_versions.id", ondelete="CASCADE"),
                                            primary_key=True)
    level: Mapped[str] = mapped_column(String(16), primary_key=True)
    computed_at: Mapped[dt.datetime] = _ts(server_default=func.now())
    evaluated_at: Mapped[dt.datetime] = _ts()
    implementation: Mapped[str] = mapped_column(String(16))
    epsg: Mapped[int] = mapped_column(Integer)
    inputs_hash: Mapped[str] = mapped_column(String(32))
    thresholds: Mapped[dict] = mapped_column(JSONB)
    sensitivity: Mapped[dict] = mapped_column(JSONB)
    n_compounds: Mapped[int] = mapped_column(Integer)
    elapsed_s: Mapped[float] = mapped_column(Float)
    __table_args__ = (CheckConstraint("level IN ('grid', 'micro_grid')", name="classification_runs_level"),)


def _run_fk() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(_RUN_KEY, [f"classification_runs.{c}" for c in _RUN_KEY], ondelete="CASCADE")


class CompoundClassification(Base):
    """One compound's measures and class (同等 / 大于 / 小于 / 跨界 / 未入格) in a classification run."""

    __tablename__ = "compound_classifications"
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[str] = mapped_column(String(16), primary_key=True)
    compound_id: Mapped[int] = mapped_column(ForeignKey("compounds.id", ondelete="CASCADE"), primary_key=True)
    class_: Mapped[str] = mapped_column("class", String(16))
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id", ondelete="SET NULL"))
    area_m2: Mapped[float] = mapped_column(Float)
    main_unit_id: Mapped[int | None] = mapped_column(Integer)
    main_code: Mapped[str | None] = mapped_column(String(19))
    main_overlap_m2: Mapped[float] = mapped_column(Float)
    main_unit_area_m2: Mapped[float | None] = mapped_column(Float)
    coverage: Mapped[float] = mapped_column(Float)
    fill: Mapped[float | None] = mapped_column(Float)
    iou: Mapped[float | None] = mapped_column(Float)
    hausdorff_m: Mapped[float | None] = mapped_column(Float)
    n_units: Mapped[int] = mapped_column(Integer)
    n_contained: Mapped[int] = mapped_column(Integer)
    repaired: Mapped[bool] = mapped_column(Boolean, server_default=false())
    fragile: Mapped[list[str]] = mapped_column(ARRAY(String(32)), server_default="{}")
    __table_args__ = (
        _run_fk(),
        CheckConstraint("class IN ('same', 'larger', 'smaller', 'straddling', 'outside')",
                        name="compound_classifications_class"),
        Index("ix_compound_classifications_community", *_RUN_KEY, "community_id"),
        Index("ix_compound_classifications_compound", "compound_id"),
    )


class CompoundOverlap(Base):
    """One compound × overlapped grid (or micro-grid) of a classification run."""

    __tablename__ = "compound_overlaps"
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[str] = mapped_column(String(16), primary_key=True)
    compound_id: Mapped[int] = mapped_column(ForeignKey("compounds.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_code: Mapped[str] = mapped_column(String(19))
    overlap_m2: Mapped[float] = mapped_column(Float)
    width_m: Mapped[float] = mapped_column(Float)
    unit_area_m2: Mapped[float] = mapped_column(Float)
    significant: Mapped[bool] = mapped_column(Boolean)
    contained: Mapped[bool] = mapped_column(Boolean)
    # Keyed to the run, not to compound_classifications (see migration 0004: far faster bulk loads).
    __table_args__ = (_run_fk(),)


# ---- redraw plans (改划方案, migration 0009) -----------------------------------------------------------------


class Plan(Base):
    """改划方案: a draft redraw of one community's (or one street's) grids and micro-grids, published as a new
    boundary version."""

    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(primary_key=True)
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"), index=True)
    street_id: Mapped[int | None] = mapped_column(ForeignKey("streets.id"), index=True)
    label: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), server_default="draft")
    revision: Mapped[int] = mapped_column(Integer, server_default="0")
    base_token: Mapped[str] = mapped_column(String(100))
    published_version_id: Mapped[int | None] = mapped_column(ForeignKey("boundary_versions.id"))
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = _ts(server_default=func.now())
    updated_at: Mapped[dt.datetime] = _ts(server_default=func.now())
    __table_args__ = (CheckConstraint("status IN ('draft','published','discarded')", name="plans_status"),
                      CheckConstraint("num_nonnulls(community_id, street_id) = 1", name="plans_one_scope"))


class PlanUnit(Base):
    """A plan's draft copy of a grid or micro-grid (new units have no ``unit_id`` yet)."""

    __tablename__ = "plan_units"
    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"))
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"))
    key: Mapped[str] = mapped_column(String(40))
    level: Mapped[str] = mapped_column(String(16))
    unit_id: Mapped[int | None] = mapped_column(Integer)
    parent_key: Mapped[str | None] = mapped_column(String(40))
    code: Mapped[str | None] = mapped_column(String(19))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str | None] = mapped_column(String(32))
    dedicated_type: Mapped[str | None] = mapped_column(String(32))
    retired: Mapped[bool] = mapped_column(Boolean, server_default=false())
    geom = mapped_column(Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False), nullable=True)
    __table_args__ = (
        UniqueConstraint("plan_id", "key"),
        CheckConstraint("level IN ('grid','micro_grid')", name="plan_units_level"),
    )


class PlanOperation(Base):
    """One edit of a plan (split, merge, move …) with what it replaced, so it can be undone."""

    __tablename__ = "plan_operations"
    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    op: Mapped[dict] = mapped_column(JSONB)
    before: Mapped[dict] = mapped_column(JSONB)
    actor: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[dt.datetime] = _ts(server_default=func.now())
    undone_at: Mapped[dt.datetime | None] = _ts()
    __table_args__ = (UniqueConstraint("plan_id", "seq"),)
