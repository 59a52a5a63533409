"""Mapbox Vector Tiles (MVT) of the feature collections, cut by PostGIS: ``ST_AsMVT`` over ``ST_AsMVTGeom``.

A tile z/x/y of the WebMercatorQuad matrix is ``ST_TileEnvelope(z, x, y)`` (EPSG:3857). Rows are picked through
the layer table's GiST index with ``geom && ST_Transform(envelope + margin, 4326)`` (the envelope transformed
once, the stored EPSG:4326 rows never for the filter), then only those rows are transformed to 3857 and clipped.
The same collection definitions as OGC API Features give the attributes, the jurisdiction and the boundary
version (`at`), so a tile never holds what the caller's jurisdiction does not.

Incidents below zoom `INCIDENT_POINTS_FROM` are binned into cells of 1/16 of the tile (a heat layer: ``count``,
``open``, ``red`` per cell); from that zoom on each incident is a point with its class, state and deadline light.

`Tile.stamp` fingerprints a tile: the layer, the boundary version in force, the jurisdiction and a hash of the
bytes, so a client's cached copy is reused exactly when it is still what the server would send.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import Connection, text

from geo.features.collections import COLLECTIONS, Collection, When
from geo.features.errors import InvalidTile
from geo.features.items import Query

EXTENT = 4096
BUFFER = 64
MAX_ZOOM = 22
#: Highest zoom with data of its own; clients over-zoom beyond it.
DATA_MAX_ZOOM = 18
INCIDENT_POINTS_FROM = 15
#: Cells per tile side when incidents are binned (16 cells: 16 px cells on a 256 px tile).
HEAT_CELLS = 16
WEB_MERCATOR_WIDTH = 40075016.68557849


@dataclass(frozen=True)
class Tile:
    """A vector tile: the bytes (empty when nothing is in it), the boundary version it shows, its fingerprint."""

    data: bytes
    version_id: int | None
    stamp: str


def check_tile(z: int, x: int, y: int) -> None:
    """InvalidTile unless z/x/y lies in the WebMercatorQuad matrix (0 ≤ z ≤ MAX_ZOOM, 0 ≤ x, y < 2^z)."""
    if not 0 <= z <= MAX_ZOOM or not (0 <= x < 2 ** z and 0 <= y < 2 ** z):
        raise InvalidTile(f"there is no tile {z}/{x}/{y} (zoom 0–{MAX_ZOOM}, x and y below 2^zoom)")


def _mvt_props(c: Collection) -> str:
    return ", ".join(f'{p.sql} AS "{p.name}"' for p in c.props if p.tile)


_ENVELOPE = "ST_TileEnvelope(:z, :x, :y)"
_SEARCH = f"ST_Transform(ST_TileEnvelope(:z, :x, :y, margin => {BUFFER / EXTENT!r}), 4326)"


def tile_sql(c: Collection, z: int, where: str) -> str:
    """SQL returning the MVT bytes of layer `c` for tile :z/:x/:y under the conditions `where`."""
    conds = f"{c.geom} && {_SEARCH} AND {where}"
    if c.id == "incidents" and z < INCIDENT_POINTS_FROM:
        return (
            f"SELECT ST_AsMVT(t, '{c.id}', {EXTENT}, 'geom') FROM ("
            f"SELECT ST_AsMVTGeom(ST_Centroid(ST_Collect(p.m)), {_ENVELOPE}, {EXTENT}, {BUFFER}, true) AS geom, "
            "count(*) AS count, count(*) FILTER (WHERE p.is_open) AS open, "
            "count(*) FILTER (WHERE p.light = 'red') AS red "
            f"FROM (SELECT ST_Transform({c.geom}, 3857) AS m, st.is_open, {c.prop('light').sql} AS light "  # type: ignore[union-attr]
            f"FROM {c.from_sql} WHERE {conds}) p "
            "GROUP BY ST_SnapToGrid(p.m, :cell)) t WHERE t.geom IS NOT NULL")
    return (
        f"SELECT ST_AsMVT(t, '{c.id}', {EXTENT}, 'geom', 'fid') FROM ("
        f"SELECT {c.fid} AS fid, ST_AsMVTGeom(ST_Transform({c.geom}, 3857), {_ENVELOPE}, {EXTENT}, {BUFFER}, true) "
        f"AS geom, {_mvt_props(c)} FROM {c.from_sql} WHERE {conds}) t WHERE t.geom IS NOT NULL")


def version_in_force(conn: Connection, at: dt.datetime | None) -> int | None:
    """The id of the boundary version in force at `at` (now when None)."""
    return conn.execute(text(
        "SELECT id FROM boundary_versions WHERE valid_from <= coalesce(CAST(:t AS timestamptz), now()) "
        "ORDER BY valid_from DESC LIMIT 1"), {"t": at}).scalar()


def tile(conn: Connection, layer: str, z: int, x: int, y: int, when: When, scope: str | None,
         tz: str = "Asia/Shanghai") -> Tile:
    """The tile z/x/y of `layer` for the jurisdiction `scope` (None: the whole district) at `when`."""
    from geo.features.collections import get_collection

    c = get_collection(layer)
    check_tile(z, x, y)
    version = version_in_force(conn, when.reference)
    data = b""
    if z >= c.minzoom:
        where, params = Query(c, when, scope, tz=tz).where()
        cell = WEB_MERCATOR_WIDTH / 2 ** z / HEAT_CELLS
        data = bytes(conn.execute(text(tile_sql(c, z, where)),
                                  params | {"z": z, "x": x, "y": y, "cell": cell}).scalar() or b"")
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    stamp = f"{layer}-v{version or 0}-{scope or 'all'}-{digest}"
    return Tile(data, version, stamp)


def tilejson(conn: Connection, layer: str, scope: str | None, tz: str = "Asia/Shanghai") -> dict:
    """What a TileJSON 3.0 document says of a layer besides its URL: zooms, bounds of what the jurisdiction sees,
    the attributes (vector_layers)."""
    from geo.features.collections import get_collection
    from geo.features.items import extent

    c = get_collection(layer)
    box = extent(conn, c, scope, tz)["bbox"] or [-180.0, -85.05112878, 180.0, 85.05112878]
    fields = {p.name: p.title or p.name for p in c.props if p.tile}
    layers = [{"id": c.id, "description": c.title, "minzoom": c.minzoom, "maxzoom": DATA_MAX_ZOOM,
               "fields": fields}]
    if c.id == "incidents":
        fields_heat = {"count": "事件数", "open": "未结事件数", "red": "红灯事件数"}
        layers[0]["description"] = (f"{c.title}：{INCIDENT_POINTS_FROM} 级以下为热度格（count/open/red），"
                                    "以上为单个事件点")
        layers[0]["fields"] = fields | fields_heat
    centre = [round((box[0] + box[2]) / 2, 7), round((box[1] + box[3]) / 2, 7), max(c.minzoom, 13)]
    return {"name": c.title, "description": c.description, "minzoom": c.minzoom, "maxzoom": DATA_MAX_ZOOM,
            "bounds": box, "center": centre, "vector_layers": layers}


LAYERS = tuple(COLLECTIONS)
