"""Features for GIS clients and map tiles: OGC API Features items and Mapbox Vector Tiles over the store.

One definition per collection (`collections.COLLECTIONS`: streets, communities, grids, micro-grids, compounds,
buildings, incidents) says where its rows come from, its properties and its jurisdiction rule; `items` answers
OGC API Features queries on it (bbox, datetime, property filters, paging, CRS) and `tiles` cuts MVT tiles with
``ST_AsMVT`` from the same definition, set-based and through the tables' GiST indexes. Geometries are stored in
EPSG:4326; the tile envelope (EPSG:3857) is transformed once per query, never the stored rows for the filter.
`tile_cache` keeps finished tiles and the boundary versions in memory, forgotten when a change is heard.
`overview` gathers the figures of a leader's home page from the other concepts. Nothing here knows HTTP: errors
are `geo.errors.DomainError` subclasses (`errors`), and the HTTP layer maps them to statuses.
"""
