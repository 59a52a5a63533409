"""Response bodies of the compound classification (小区分类): the table, the summary, one verdict explained."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.staff import BoundaryVersionRef

CompoundClass = Literal["same", "larger", "smaller", "straddling", "outside"]
ClassLevel = Literal["grid", "micro_grid"]


class ClassificationRun(BaseModel):
    """What a classification result depends on: level, boundary version, thresholds, when and how it was computed."""

    level: ClassLevel
    version: BoundaryVersionRef
    computed_at: str = Field(description="when the stored run was computed (ISO 8601)")
    implementation: str = Field(description="'shapely' or 'sql'")
    thresholds: dict[str, float] = Field(description="the thresholds (GRIDATLAS_CLASSIFY_*) the run used")


class CodeName(BaseModel):
    """A street or community: code and name (null when the compound lies in none)."""

    code: str | None
    name: str | None


class MainUnit(BaseModel):
    """The grid (or micro-grid) a compound overlaps most."""

    id: int
    code: str | None
    name: str | None


class UnitOverlap(BaseModel):
    """A compound's overlap with one grid (or micro-grid)."""

    unit_id: int
    code: str | None
    name: str | None
    overlap_m2: float | None
    width_m: float | None = Field(description="mean width of the overlap (2·area/perimeter), metres")
    unit_area_m2: float | None
    share_of_unit: float | None
    significant: bool = Field(description="above both sliver tolerances")
    contained: bool = Field(description="significant and covering at least contain_share_min of the unit")


class ClassifiedCompound(BaseModel):
    """One compound: its class against its grid (or micro-grid), the measures, and its overlaps (largest first)."""

    model_config = ConfigDict(populate_by_name=True)

    compound_id: int
    name: str | None
    street: CodeName
    community: CodeName
    class_: CompoundClass = Field(alias="class")
    class_zh: str
    class_en: str
    main_unit: MainUnit | None
    area_m2: float | None
    main_overlap_m2: float | None
    main_unit_area_m2: float | None
    coverage: float | None = Field(description="share of the compound inside its main unit")
    fill: float | None = Field(description="share of the main unit the compound fills")
    iou: float | None = Field(description="intersection over union with the main unit")
    hausdorff_m: float | None = Field(description="Hausdorff distance to the main unit's outline, metres")
    n_units: int = Field(description="units overlapped significantly")
    n_contained: int = Field(description="units the compound contains")
    repaired: bool = Field(description="the compound's polygon was invalid and repaired before measuring")
    fragile: list[str] = Field(description="thresholds whose ±step change the class")
    overlaps: list[UnitOverlap]


class ClassificationTable(ClassificationRun):
    """Every compound in the caller's jurisdiction (and filters) with its class, and the counts per class."""

    count: int
    counts: dict[CompoundClass, int]
    items: list[ClassifiedCompound]


class ClassLabel(BaseModel):
    """A class and its names."""

    model_config = ConfigDict(populate_by_name=True)

    class_: CompoundClass = Field(alias="class")
    zh: str
    en: str


class ClassCounts(BaseModel):
    """Compounds per class, and in all."""

    same: int
    larger: int
    smaller: int
    straddling: int
    outside: int
    total: int


class CommunityCounts(BaseModel):
    """A community's compounds per class."""

    code: str | None
    name: str
    counts: ClassCounts


class StreetCounts(BaseModel):
    """A street's compounds per class, and its communities'."""

    code: str | None
    name: str
    counts: ClassCounts
    communities: list[CommunityCounts]


class SensitivitySide(BaseModel):
    """The threshold moved one step down (minus) or up (plus): compounds that change class, and how."""

    value: float
    changed: int
    transitions: dict[str, int] = Field(description="'from→to' class changes and how many")


class ThresholdSensitivity(BaseModel):
    """How fragile a threshold is: compounds of the view whose class changes at ±step; the per-side detail
    (district-wide) only for callers who see the whole district, unfiltered."""

    threshold: str
    label_zh: str
    value: float
    step: float
    changed: int
    minus: SensitivitySide | None = None
    plus: SensitivitySide | None = None


class ClassificationSummary(ClassificationRun):
    """Compounds per class in total, per street and per community, with the thresholds' sensitivity."""

    classes: list[ClassLabel]
    counts: ClassCounts
    streets: list[StreetCounts]
    sensitivity: list[ThresholdSensitivity]


class Explanation(BaseModel):
    """Why a compound got its class, in words."""

    zh: str
    en: str


class ClassAtStep(BaseModel):
    """The class the compound would get with the threshold at `value`."""

    model_config = ConfigDict(populate_by_name=True)

    value: float
    class_: CompoundClass = Field(alias="class")


class ThresholdVerdict(BaseModel):
    """One threshold moved ±step, and the class this compound would then get."""

    threshold: str
    label_zh: str
    value: float
    minus: ClassAtStep
    plus: ClassAtStep


class CompoundVerdict(ClassificationRun, ClassifiedCompound):
    """One compound's class explained in words (Chinese and English) and numbers."""

    explanation: Explanation
    sensitivity: list[ThresholdVerdict]


def geojson_schema() -> dict[str, Any]:
    """OpenAPI schema of the table as GeoJSON: a FeatureCollection of compounds, `ClassifiedCompound` properties."""
    return {
        "type": "object",
        "required": ["type", "features", "metadata"],
        "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "features": {"type": "array", "items": {
                "type": "object",
                "required": ["type", "id", "properties", "geometry"],
                "properties": {
                    "type": {"type": "string", "enum": ["Feature"]},
                    "id": {"type": "integer", "description": "the compound id"},
                    "properties": {"$ref": "#/components/schemas/ClassifiedCompound"},
                    "geometry": {"type": "object", "description": "the compound's outline (GeoJSON, WGS-84)"},
                }}},
            "metadata": {"type": "object", "description": "what the result depends on (as the JSON table's level, "
                                                          "version, computed_at, implementation, thresholds)"},
        },
    }
