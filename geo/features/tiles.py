"""Mapbox Vector Tiles (MVT) of the feature collections, cut by PostGIS: ``ST_AsMVT`` over ``ST_AsMVTGeom``.

A tile z/x/y of the WebMercatorQuad matrix is ``ST_TileEnvelope(z, x, y)`` (EPSG:3857). Rows are picked through
the layer table's GiST index with ``geom && ST_Transform(envelope + margin, 4326)`` (the envelope transformed
once, the stored EPSG:4326 rows never for the filter), then only those rows are transformed to 3857 and clipped.
The same collection definitions as OGC API Features give the attributes, the jurisdiction and the boundary
version (`at`), so a tile never holds what the caller's jurisdiction does not.

What a tile carries depends on its zoom (`layer_content`): from `DETAIL_FROM` on, every attribute of the
collection at full precision (extent 4096); below it, the few attributes a map colours and joins by (a unit's code,
a compound's id and class: `LEAN_PROPS`), on a coarser extent (`extent_for`), with rings simplified to one unit of
that extent (``ST_SimplifyPreserveTopology``, in metres of EPSG:3857). A whole-district view of ~10,000 grids then
costs about a third of the bytes, and nothing a pixel would show is lost.

Incidents below zoom `INCIDENT_POINTS_FROM` are binned into cells of 1/16 of the tile (a heat layer: ``count``,
``open``, ``red`` per cell); from that zoom on each incident is a point with its class, state and deadline light.

`Tile.stamp` fingerprints a tile: the layer, the boundary version in force, the jurisdiction and a hash of the
bytes, so a client's cached copy is reused exactly when it is still what the server would send.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
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
#: From this zoom on tiles carry every attribute at full precision; below it only `LEAN_PROPS`, simplified.
DETAIL_FROM = 14
#: What a layer's tiles below `DETAIL_FROM` carry: what the pages colour and join by (names come with the pages'
#: own JSON); a layer not listed keeps every attribute.
LEAN_PROPS: dict[str, tuple[str, ...]] = {
    "streets": ("code", "name"), "communities": ("code",), "grids": ("code",), "micro_grids": ("code",),
    "compounds": ("id", "class"), "buildings": ("id",),
}


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


def extent_for(z: int) -> int:
    """Tile extent (units per tile side) at zoom `z`: 4096 from `DETAIL_FROM`, 1024 one zoom below, else 512
    (2 units per CSS pixel of a 256 px tile: still finer than the screen)."""
    return EXTENT if z >= DETAIL_FROM else 1024 if z == DETAIL_FROM - 1 else 512


def layer_content(c: Collection, z: int) -> tuple[list[str], float]:
    """What layer `c`'s tiles carry at zoom `z`: the attribute names, and the simplification tolerance in metres
    (0: none)."""
    names = [p.name for p in c.props if p.tile]
    if z >= DETAIL_FROM or c.id not in LEAN_PROPS or c.geometry_type == "Point":
        return names, 0.0
    return [n for n in names if n in LEAN_PROPS[c.id]], WEB_MERCATOR_WIDTH / 2 ** z / extent_for(z)


def _mvt_props(c: Collection, names: list[str]) -> str:
    return ", ".join(f'{p.sql} AS "{p.name}"' for p in c.props if p.name in names)


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
    names, tolerance = layer_content(c, z)
    extent = extent_for(z)
    shape = f"ST_Transform({c.geom}, 3857)"
    if tolerance:
        shape = f"ST_SimplifyPreserveTopology({shape}, {tolerance!r})"
    props = "".join(f", {p}" for p in [_mvt_props(c, names)] if p)
    return (
        f"SELECT ST_AsMVT(t, '{c.id}', {extent}, 'geom', 'fid') FROM ("
        f"SELECT {c.fid} AS fid, ST_AsMVTGeom({shape}, {_ENVELOPE}, {extent}, {extent * BUFFER // EXTENT}, true) "
        f"AS geom{props} FROM {c.from_sql} WHERE {conds}) t WHERE t.geom IS NOT NULL")


def version_in_force(conn: Connection, at: dt.datetime | None) -> int | None:
    """The id of the boundary version in force at `at` (now when None)."""
    return conn.execute(text(
        "SELECT id FROM boundary_versions WHERE valid_from <= coalesce(CAST(:t AS timestamptz), now()) "
        "ORDER BY valid_from DESC LIMIT 1"), {"t": at}).scalar()


def tile(conn: Connection, layer: str, z: int, x: int, y: int, when: When, scope: str | None,
         tz: str = "Asia/Shanghai", version_at: Callable[[dt.datetime | None], int | None] | None = None) -> Tile:
    """The tile z/x/y of `layer` for the jurisdiction `scope` (None: the whole district) at `when`; `version_at`
    gives the boundary version in force at an instant without a query (`geo.features.tile_cache`)."""
    from geo.features.collections import get_collection

    c = get_collection(layer)
    check_tile(z, x, y)
    version = version_at(when.reference) if version_at else version_in_force(conn, when.reference)
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
    description = c.title
    if c.id in LEAN_PROPS and c.geometry_type != "Point":
        description += (f"：{DETAIL_FROM} 级以下仅含 {', '.join(LEAN_PROPS[c.id])}，几何按像素简化；"
                        f"{DETAIL_FROM} 级起含全部属性")
    layers = [{"id": c.id, "description": description, "minzoom": c.minzoom, "maxzoom": DATA_MAX_ZOOM,
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
