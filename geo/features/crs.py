"""The coordinate reference systems features are served in (OGC API Features Part 2).

Stored geometries are EPSG:4326 in longitude/latitude order (PostGIS). OGC CRS URIs carry an axis order: CRS84
is longitude/latitude; EPSG:4326 and EPSG:4490 (CGCS2000, China's official datum) are latitude/longitude, so
their coordinates (and a `bbox` given in them) are swapped. CGCS2000 and WGS-84 differ by centimetres: PostGIS
transforms between them with the ballpark (null) operation.
"""

from __future__ import annotations

from dataclasses import dataclass

from geo.features.errors import UnsupportedCrs

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


@dataclass(frozen=True)
class Crs:
    """A CRS offered: its URI, PostGIS SRID, whether the first axis is latitude, decimals kept in output."""

    uri: str
    srid: int
    lat_first: bool
    decimals: int
    title: str


SUPPORTED: tuple[Crs, ...] = (
    Crs(CRS84, 4326, False, 7, "WGS 84 longitude/latitude (CRS84)"),
    Crs("http://www.opengis.net/def/crs/EPSG/0/4326", 4326, True, 7, "WGS 84 (EPSG:4326, latitude/longitude)"),
    Crs("http://www.opengis.net/def/crs/EPSG/0/4490", 4490, True, 7, "CGCS2000 (EPSG:4490, latitude/longitude)"),
    Crs("http://www.opengis.net/def/crs/EPSG/0/3857", 3857, False, 2, "Web Mercator (EPSG:3857, metres)"),
)
_BY_URI = {c.uri: c for c in SUPPORTED}
_ALIASES = {"crs84": CRS84, "ogc:crs84": CRS84, "epsg:4326": SUPPORTED[1].uri, "epsg:4490": SUPPORTED[2].uri,
            "epsg:3857": SUPPORTED[3].uri, "epsg:900913": SUPPORTED[3].uri}


def crs_uris() -> list[str]:
    """The URIs of every CRS offered, CRS84 (the default) first."""
    return [c.uri for c in SUPPORTED]


def resolve(value: str | None, what: str = "crs") -> Crs:
    """The CRS a parameter names (a URI, ``[EPSG:4490]``-style CURIE or ``EPSG:4490``); CRS84 when empty."""
    if value is None or not value.strip():
        return _BY_URI[CRS84]
    raw = value.strip().strip("<>")
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    uri = raw if raw in _BY_URI else _ALIASES.get(raw.lower())
    if uri is None and raw.startswith("https://www.opengis.net/"):
        uri = raw.replace("https://", "http://", 1) if raw.replace("https://", "http://", 1) in _BY_URI else None
    if uri is None:
        raise UnsupportedCrs(f"{what}: {value!r} is not offered; use one of {', '.join(crs_uris())}",
                             supported=crs_uris())
    return _BY_URI[uri]
