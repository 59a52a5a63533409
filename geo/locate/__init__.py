"""Locate (定位): which street, community, grid, micro-grid, compound and building a point lies in, and who is
responsible there; one point or a million.

- `index`: `LocateIndex`, the in-memory index of one boundary set (`locate`, `locate_many`, `describe`,
  `outlines`), `read_frames` / `read_units` (grids and micro-grids under the names they had then), `patch_index`
  (a new index with a few units changed, the rest shared: 增量更新), the shared rules (`LEVEL_SPECS`, `TIE_M`,
  match kinds) and `NotInAnyGrid`;
- `raster`: `CellRaster`, the cell lattice in front of each level's polygons (pure cells answer by arithmetic),
  and `RasterStack`, every level's lattice looked up in one pass;
- `directory`: `StaffDirectory`, the staff on grids, micro-grids and buildings, held in memory;
- `holder`: `IndexHolder` (the current index: changes patched in, large ones rebuilt in the background, swapped
  atomically), `read_delta` (what changed since a snapshot), `apply_after_commit` (the writer's process applies its
  change as its session commits), `ChangeListener` (LISTEN for the database's change notifications),
  `notify_boundaries_changed`,
  `notify_staff_changed`, `IndexUnavailable`;
- `points`: input coordinates: `coordsys_key`, `checked_wgs84`, `range_errors`, `CoordinateError`;
- `batch`: streamed batches: `make_reader` (CSV / GeoJSON readers), `locate_chunk`, `BatchRows`, `BatchFormatter`;
- `reference`: the PostGIS reference (`locate_sql`, `locate_sql_many`, `covering`: the shared-edge rule as the
  database's ``{level}_covering`` functions) and the agreement check (`agreement_points`, `compare_with_reference`).
"""
