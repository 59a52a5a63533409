"""Incidents (事件): the closed loop, attribution, KPIs, heatmaps and their rollups.

- `closed_loop`: the state machine as data (`states`, `transitions`), reporting (`create_incident`,
  `report_incident`), moving along the loop (`apply_transition`), reads (`get_incident`, `require_incident`,
  `history`, `list_incidents` with `IncidentFilter`, `current_attribution`, `preview_attribution`) and the SQL
  fragments shared with KPIs and heatmaps (`light_sql`, `unit_and_class_filters`).
- `attribution`: incidents → street, community, grid, micro-grid, compound, building by the boundaries in force at
  report time (`attribute_incidents`, `attribution_sql`).
- `periods`: what a period means in local time (`parse_period`, `month_to_date`, `month_starts`, `whole_months`).
- `kpi`: 结案率, 按期结案率 … per group (`compute_kpis` with `KpiQuery`), from the incidents or `incident_rollup`.
- `hexagons`: the one hexagon implementation (`LocalFrame`, `hex_axial` / `hex_axial_sql`, `hex_centres`,
  `hex_polygons`, `cell_lattice`, `hex_cells_in`), and why not ST_HexagonGrid or H3.
- `heat_rollup`: the hexagon rollup's sizes, built without blocking writers (`ensure_heat_rollup`,
  `build_heat_size`).
- `hotspots`: Getis-Ord Gi* hot and cold spots (`getis_ord`, `HOTSPOT_LABELS`).
- `heatmap`: hexagon counts per month, incidents per 1,000 households by grid, and their outputs
  (`build_heatmap` with `HeatmapQuery`, `compact`, `hex_geojson`, `grid_geojson`).
- `classes`: a city's own class table from CSV/XLSX, planned (added / changed / refused) then written all or nothing
  (`plan_class_table`, `import_class_table`).
- `importer`: incidents with their history from CSV/XLSX/GeoJSON, categories and states mapped, attributed at their
  report times, all or nothing (`import_incident_history` with `HistoryOptions`).
- `open311`: which API keys may state Open311 report times (`key_trusted`, `set_key_trust`).
- `errors`: what the domain refuses (`IncidentError` and its kinds, `IllegalTransition`, `IncidentNotFound`).
"""
