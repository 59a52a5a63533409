"""Response bodies of the platform's own operations: the import report (导入校验报告) and the health probes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.replica import ReplicaStatus
from geo.io.exporter import MEDIA_TYPES


class ImportProblem(BaseModel):
    """One problem an import found: what is wrong, what was done, which source records it concerns."""

    kind: str = Field(description="what is wrong (see ISSUE_KINDS in geo/io/validate.py), e.g. overlap")
    action: Literal["refused", "repaired", "merged", "flagged"]
    message: str
    records: list[int] = Field(description="source record numbers (1-based)")
    feature: str | None = Field(description="the feature's label (code · name)")
    area_m2: float | None = Field(default=None, description="the area concerned (overlap, gap), when there is one")
    details: dict[str, Any] | None = Field(default=None, description="kind-specific figures (reason, codes …)")


class ProblemFeature(BaseModel):
    """A problem as a GeoJSON Feature: its location (null when it has none) and the problem as properties."""

    type: Literal["Feature"]
    properties: ImportProblem
    geometry: dict[str, Any] | None = Field(description="a GeoJSON geometry in EPSG:4326")


class ProblemCollection(BaseModel):
    """The problems' locations as a GeoJSON FeatureCollection (draw it as a layer)."""

    type: Literal["FeatureCollection"]
    features: list[ProblemFeature]


class ImportReportOut(BaseModel):
    """What an import read, wrote, repaired and refused, with every problem found and where."""

    layer: str
    source: str = Field(description="the uploaded file's name")
    format: str
    crs: str = Field(description="the coordinate system the file was read in")
    encoding: str | None
    source_layer: str | None
    field_mapping: dict[str, str] = Field(description="target field → source column")
    ignored_columns: list[str]
    columns_read: list[str] = Field(default_factory=list,
                                    description="how each column was read: \"we read column '网格编码' as code\"")
    parents_derived: list[dict[str, str]] = Field(
        default_factory=list, description="streets and communities created from the file's codes and names: level, "
                                          "code, name and where they came from")
    checks_skipped: list[str] = Field(default_factory=list,
                                      description="checks that could not apply to this data, with the reason")
    attributes_kept: list[str] = Field(default_factory=list, description="source columns no field takes "
                                       "(所属社区, 网格全称, 面积 …), stored with each boundary and exported back")
    features_read: int
    features: int = Field(description="features after merging split pieces")
    imported: int
    repaired: int
    merged: int
    refused: int
    created: int
    updated: int
    boundaries_ended: int
    version_id: int | None = Field(description="the boundary version the boundaries were written to")
    valid_from: str | None
    valid_from_source: str = Field("now", description="given, version, now, or earliest-incident (the day of the "
                                                       "earliest incident in the new units' area no boundary covered)")
    boundaries_before_existing: int = Field(0, description="boundary rows written as history, ending where their "
                                                           "unit's existing later boundary begins")
    incidents_attributed: int = Field(0, description="incidents in the imported area attributed again")
    dry_run: bool
    strict: bool
    committed: bool
    problems_by_kind: dict[str, int]
    problems: list[ImportProblem]
    notes: list[str]
    elapsed_s: float
    problems_geojson: ProblemCollection


class Health(BaseModel):
    """The process is alive."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """The database is reachable, has PostGIS and is migrated to the code's head."""

    status: Literal["ready"]
    postgres: str = Field(description="the server's version")
    postgis: str = Field(description="the PostGIS library version")
    migrations: list[str] = Field(description="the schema's Alembic revisions (the code's heads)")
    replica: ReplicaStatus | None = Field(None, description="the read replica, when one is configured")


def exported_layer_schemas() -> dict[str, dict[str, Any]]:
    """OpenAPI content of an export download per media type: GeoJSON as a FeatureCollection of the layer's
    features (properties as the layer's fields), the other formats (GeoPackage, zipped Shapefile, CSV) as files."""
    geojson = {
        "type": "object",
        "description": "a GeoJSON FeatureCollection (RFC 7946, EPSG:4326) of the layer's features",
        "required": ["type", "features"],
        "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "features": {"type": "array", "items": {
                "type": "object",
                "required": ["type", "properties", "geometry"],
                "properties": {
                    "type": {"type": "string", "enum": ["Feature"]},
                    "properties": {"type": "object", "additionalProperties": True,
                                   "description": "the layer's fields (codes, names, parents' codes …)"},
                    "geometry": {"type": "object", "nullable": True, "additionalProperties": True},
                },
            }},
        },
    }
    binary = {"type": "string", "format": "binary"}
    return {media: {"schema": geojson if fmt == "geojson" else binary} for fmt, media in MEDIA_TYPES.items()}
