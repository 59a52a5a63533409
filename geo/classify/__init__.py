"""Compound vs grid classification (小区与网格的大小关系): same, larger, smaller, straddling, outside, with measures.

- `classification`: the measures in two implementations (`measure_shapely`, `measure_sql`, or in memory
  `measure_frames`), the one class rule `assign_classes`, threshold `sensitivity`; results stored per boundary
  version and level and recomputed when their inputs change (`ensure_classification`, `run_at` for a request's
  date, `refresh`), read back (`read_results`, `read_overlaps`, `compound_verdict`, `summary`, `outlines` for a
  map), explained (`explain`, `fragile_detail`) and exported (`records`, `to_csv`, `to_geojson`); errors
  `ClassifyError`, `NoBoundaryVersion`, `UnclassifiableCompounds` (`geo.errors.DomainError` kinds).

The thresholds are `geo.settings.ClassifyRules` (env GRIDATLAS_CLASSIFY_*; `get_rules()`); invalid compound
polygons are repaired by `geo.spatial.geometry.repair_polygons`.
"""
