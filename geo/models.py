"""The store's tables (SQLAlchemy 2 + GeoAlchemy2). Geometries are EPSG:4326, GiST-indexed, valid and non-empty.

Administrative units (street, community, grid, micro-grid) are split in two: an identity row with a stable id and
code, and boundary rows, one per published boundary version, with ``valid_from``/``valid_to``. Nothing is
overwritten in place: a redraw ends the old boundary row and starts a new one.
"""

from __future__ import annotations

import datetime as dt
import enum

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SRID = 4326


class Base(DeclarativeBase):
    """Declarative base of every table."""


def _geom(kind: str):
    return mapped_column(Geometry(kind, srid=SRID, spatial_index=True), nullable=False)


def _valid_geom_check(table: str) -> CheckConstraint:
    return CheckConstraint("ST_IsValid(geom) AND NOT ST_IsEmpty(geom)", name=f"{table}_geom_valid")


class GridKind(str, enum.Enum):
    """综合网格 (comprehensive, residential) or 专属网格 (dedicated: a school, hospital, company …)."""

    comprehensive = "comprehensive"
    dedicated = "dedicated"


class CompoundKind(str, enum.Enum):
    """商品房 commercial, 老旧小区 old, 单位大院 work-unit, 开放式 open."""

    commercial = "commercial"
    old = "old"
    work_unit = "work_unit"
    open = "open"


class StaffRole(str, enum.Enum):
    """Roles in the chain of responsibility (网格长 → 楼栋长 → 单元长) and the "1+3+N" grid staffing."""

    grid_chief = "grid_chief"  # 网格长
    grid_worker_fulltime = "grid_worker_fulltime"  # 专职网格员
    grid_worker_parttime = "grid_worker_parttime"  # 兼职网格员
    volunteer = "volunteer"  # 志愿者
    building_head = "building_head"  # 楼栋长
    unit_head = "unit_head"  # 单元长
    steward = "steward"  # 里巷管家 / 红领管家
    seconded_cadre = "seconded_cadre"  # 下沉干部


class TargetType(str, enum.Enum):
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


class _BoundaryMixin:
    """One version of an administrative unit's boundary."""

    id: Mapped[int] = mapped_column(primary_key=True)
    valid_from: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Street(Base):
    """街道: a sub-district office's area; 9-digit code (district + 3)."""

    __tablename__ = "streets"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(9), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    __table_args__ = (CheckConstraint("code ~ '^[0-9]{9}$'", name="streets_code_format"),)


class StreetBoundary(_BoundaryMixin, Base):
    __tablename__ = "street_boundaries"
    street_id: Mapped[int] = mapped_column(ForeignKey("streets.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("boundary_versions.id"))
    geom = _geom("MULTIPOLYGON")
    __table_args__ = (_valid_geom_check("street_boundaries"),)


class Community(Base):
    """社区: a residents' committee area; 12-digit code (street + 3)."""

    __tablename__ = "communities"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    street_id: Mapped[int] = mapped_column(ForeignKey("streets.id"), index=True)
    __table_args__ = (CheckConstraint("code ~ '^[0-9]{12}$'", name="communities_code_format"),)


class CommunityBoundary(_BoundaryMixin, Base):
    __tablename__ = "community_boundaries"
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("boundary_versions.id"))
    geom = _geom("MULTIPOLYGON")
    __table_args__ = (_valid_geom_check("community_boundaries"),)


class Grid(Base):
    """网格: the working unit of grid staff; 15-digit code (community + 3)."""

    __tablename__ = "grids"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(15), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[GridKind] = mapped_column(_enum(GridKind, "grid_kind"))
    dedicated_type: Mapped[str | None] = mapped_column(String(32))
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), index=True)
    __table_args__ = (CheckConstraint("code ~ '^[0-9]{15}$'", name="grids_code_format"),)


class GridBoundary(_BoundaryMixin, Base):
    __tablename__ = "grid_boundaries"
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("boundary_versions.id"))
    geom = _geom("MULTIPOLYGON")
    __table_args__ = (_valid_geom_check("grid_boundaries"),)


class MicroGrid(Base):
    """微网格: a subdivision of a grid; code = grid code + 2 or 3 digits."""

    __tablename__ = "micro_grids"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id"), index=True)
    __table_args__ = (CheckConstraint("code ~ '^[0-9]{17,18}$'", name="micro_grids_code_format"),)


class MicroGridBoundary(_BoundaryMixin, Base):
    __tablename__ = "micro_grid_boundaries"
    micro_grid_id: Mapped[int] = mapped_column(ForeignKey("micro_grids.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("boundary_versions.id"))
    geom = _geom("MULTIPOLYGON")
    __table_args__ = (_valid_geom_check("micro_grid_boundaries"),)


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
    geom = _geom("MULTIPOLYGON")
    __table_args__ = (_valid_geom_check("compounds"),)


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
    geom = _geom("MULTIPOLYGON")
    __table_args__ = (_valid_geom_check("buildings"),)


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


class Incident(Base):
    """网格事件: a reported case, attributed to the boundaries in force when it was reported."""

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(primary_key=True)
    geom = _geom("POINT")
    reported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    class_code: Mapped[str] = mapped_column(ForeignKey("incident_classes.code"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    reporter: Mapped[str | None] = mapped_column(String(100))
    reporter_phone: Mapped[str | None] = mapped_column(String(32))
    department: Mapped[str | None] = mapped_column(String(100))
    due_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("boundary_versions.id"))
    street_id: Mapped[int | None] = mapped_column(ForeignKey("streets.id"), index=True)
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"), index=True)
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id"), index=True)
    micro_grid_id: Mapped[int | None] = mapped_column(ForeignKey("micro_grids.id"))
    compound_id: Mapped[int | None] = mapped_column(ForeignKey("compounds.id"))
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id"))
    __table_args__ = (CheckConstraint("NOT ST_IsEmpty(geom)", name="incidents_geom_nonempty"),)


class IncidentEvent(Base):
    """One transition of an incident's closed loop, kept as history."""

    __tablename__ = "incident_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)


class User(Base):
    """A user with a role and a jurisdiction (a street, community or grid code; none for admins)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    jurisdiction_level: Mapped[str | None] = mapped_column(String(16))
    jurisdiction_code: Mapped[str | None] = mapped_column(String(18))
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
    jurisdiction_code: Mapped[str | None] = mapped_column(String(18), index=True)
    before: Mapped[dict | None] = mapped_column(JSONB)
    after: Mapped[dict | None] = mapped_column(JSONB)
