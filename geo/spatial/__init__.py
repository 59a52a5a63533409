"""Spatial helpers shared by every concept (空间工具).

- `geometry`: vectorised geometry checks and the one repair: `repair_polygons` (invalid polygons made valid,
  polygonal parts kept, with a `RepairReport`), `polygonal_parts`, `as_multipolygons`, `invalid_reasons`,
  `require_valid`, `ewkb_hex`;
- `crs`: the storage CRS (EPSG:4326) and the metric one for areas and distances (`utm_epsg`, `to_metric`);
- `coords`: GCJ-02 / BD-09 to and from WGS-84 (`to_wgs84`, `wgs84_to_gcj02` …, `COORDSYS`).
"""
