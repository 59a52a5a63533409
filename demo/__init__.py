"""The demo district: tooling over geo, not part of the domain (geo imports nothing from here).

Entry points:
  synth                   `generate_district(scale, seed)` → `District`, the public names (stages in order)
  load                    `generate_and_load`, `load_demo_if_empty`, `clear_district` (GeoPackage, database)

What the generator builds, in the order the random stream runs through it:
  programme               `targets(scale)`, `draw_units`: the deck of units (compound = grid, larger, straddling …)
  superblocks             `lay_superblocks`, `deal_units`, `cluster_campuses`: Voronoi superblocks (街区), campuses
  streets_and_communities `group_jurisdictions`, `number_streets`, `number_communities`: 社区 and 街道, codes, layers
  parcels                 `split_units`, `cut_cores`, `node_faces`: BSP parcels, cores and road margins, noded faces
  compounds               `assign_roles`, `draw_walls`, `number_compounds`: 小区, planted types, walls, names
  grids                   `hand_over_margins`, `dissolve_partitions`, `number_grids`: 网格 and 微网格, codes, layers
  buildings_and_units     `place_buildings`, `number_buildings`: 楼栋 and 单元, households, codes, layers
  staff                   `appoint_staff`, `person_names`: chiefs, grid workers, heads, stewards (管家)
  incidents               `draw_incidents`, `INCIDENT_CLASSES`: a year of incidents through the closed loop
  district                `District` (ten layers; `fingerprint`, `to_gpkg`), where the district lies

Helpers: geometry (vectorised shapely: BSP, coverage dissolve, lattice slots), arrays (ranks within groups),
vocabulary (the words names are made of).
"""
