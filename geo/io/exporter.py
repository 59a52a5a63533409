"""Exporting a layer (导出) at the current or a dated boundary version: GeoJSON, GeoPackage, zipped Shapefile
(UTF-8 or GBK) and CSV.

Exports carry business keys, never database ids: codes for administrative units and their parents, `ref` for
compounds and buildings (their source reference, or their id when they have none), name and phone for staff. So
an export imported into an empty database and exported again gives the same attributes and geometries.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from sqlalchemy import Connection, Engine, text

from geo.errors import DomainError
from geo.io.fields import LayerSpec, UnknownLayer, layer_spec
from geo.settings import get_settings
from geo.store.versions import at_or_now, in_force

EXPORT_FORMATS = ("geojson", "gpkg", "shapefile", "csv")
_SUFFIX = {"geojson": ".geojson", "gpkg": ".gpkg", "shapefile": ".zip", "csv": ".csv"}
_FORMAT_OF = {".geojson": "geojson", ".json": "geojson", ".gpkg": "gpkg", ".zip": "shapefile", ".shp": "shapefile",
              ".csv": "csv"}
MEDIA_TYPES = {"geojson": "application/geo+json", "gpkg": "application/geopackage+sqlite3",
               "shapefile": "application/zip", "csv": "text/csv; charset=utf-8"}
#: dBase field names are at most 10 bytes: the short names used in Shapefiles (the importer knows them too).
SHAPEFILE_NAMES = {
    "street_code": "street_cd", "community_code": "comm_code", "dedicated_type": "ded_type",
    "has_property_management": "has_pm", "has_owners_committee": "has_oc", "compound_ref": "cmpd_ref",
    "building_ref": "bldg_ref", "building_code": "bldg_code", "person_name": "pers_name",
    "person_phone": "pers_phone", "target_type": "tgt_type", "target_code": "tgt_code", "unit_number": "unit_no",
    "reported_at": "reported", "description": "descr", "reporter_phone": "rep_phone",
    "micro_grid_code": "mgrid_code", "phone_public": "phone_pub", "party_member": "party_mbr",
    "home_building_ref": "home_bldg",
}


class ExportError(DomainError, ValueError):
    """An export that cannot be made as asked (unknown format or encoding)."""

    slug = "validation-error"
    title = "Invalid request"


_J = "CAST(:j AS text)"


def _overlaps(col: str) -> str:
    """SQL: the unit code `col` and the jurisdiction :j contain one another (prefix test both ways)."""
    return f"({_J} IS NULL OR {col} LIKE {_J} || '%' OR {_J} LIKE {col} || '%')"


_AT = at_or_now()
_REVEAL = "CAST(:reveal AS boolean)"
_DAY = "CAST(CAST(:at AS timestamptz) AT TIME ZONE CAST(:tz AS text) AS date)"  # the local date of :at
_REF = "coalesce({t}.source_ref, {t}.id::text)"

#: The column holding a boundary's kept source attributes (expanded into columns of their own on export).
ATTRIBUTES = "_attributes"


def _attributes(level: str) -> str:
    """SQL: join the boundary row of `h` (a `*_at` row), whose `attributes` the import kept."""
    return f"LEFT JOIN {level}_boundaries ab ON ab.id = h.boundary_id"


_SQL = {
    "streets": f"""SELECT h.code, h.name, ab.attributes AS {ATTRIBUTES}, h.geom FROM streets_at({_AT}) h
        {_attributes('street')} WHERE {_overlaps('h.code')} ORDER BY h.code""",
    "communities": f"""SELECT h.code, h.name, s.code AS street_code, ab.attributes AS {ATTRIBUTES}, h.geom
        FROM communities_at({_AT}) h JOIN streets s ON s.id = h.street_id {_attributes('community')}
        WHERE {_overlaps('h.code')} ORDER BY h.code""",
    "grids": f"""SELECT h.code, h.name, c.code AS community_code, h.kind, h.dedicated_type,
        ab.attributes AS {ATTRIBUTES}, h.geom
        FROM grids_at({_AT}) h JOIN communities c ON c.id = h.community_id {_attributes('grid')}
        WHERE {_overlaps('h.code')} ORDER BY h.code""",
    "micro_grids": f"""SELECT h.code, h.name, g.code AS grid_code, ab.attributes AS {ATTRIBUTES}, h.geom
        FROM micro_grids_at({_AT}) h JOIN grids g ON g.id = h.grid_id {_attributes('micro_grid')}
        WHERE {_overlaps('h.code')} ORDER BY h.code""",
    "compounds": f"""SELECT {_REF.format(t='c')} AS ref, c.name, c.address, c.kind, c.has_property_management,
        c.has_owners_committee, cm.code AS community_code, c.geom
        FROM compounds c LEFT JOIN communities cm ON cm.id = c.community_id
        WHERE (CAST(:j AS text) IS NULL OR {_overlaps('cm.code')}) ORDER BY c.id""",
    "buildings": f"""SELECT {_REF.format(t='b')} AS ref, b.code, b.name, b.address, cm.code AS community_code,
        CASE WHEN cp.id IS NOT NULL THEN {_REF.format(t='cp')} END AS compound_ref, b.floors, b.use, b.geom
        FROM buildings b LEFT JOIN communities cm ON cm.id = b.community_id
        LEFT JOIN compounds cp ON cp.id = b.compound_id
        WHERE (CAST(:j AS text) IS NULL OR {_overlaps('cm.code')}) ORDER BY b.id""",
    "units": f"""SELECT {_REF.format(t='b')} AS building_ref, b.code AS building_code, u.number, u.households,
        u.population FROM units u JOIN buildings b ON b.id = u.building_id
        LEFT JOIN communities cm ON cm.id = b.community_id
        WHERE (CAST(:j AS text) IS NULL OR {_overlaps('cm.code')}) ORDER BY b.id, u.number""",
    "staff": f"""SELECT p.name, CASE WHEN p.phone_public OR {_REVEAL} THEN p.phone END AS phone, p.phone_public,
        p.party_member, CASE WHEN hb.id IS NOT NULL THEN {_REF.format(t='hb')} END AS home_building_ref
        FROM people p LEFT JOIN buildings hb ON hb.id = p.home_building_id
        LEFT JOIN communities cm ON cm.id = hb.community_id
        WHERE CAST(:j AS text) IS NULL OR {_overlaps('cm.code')} OR EXISTS (
            SELECT 1 FROM staff_assignments a LEFT JOIN grids g ON g.id = a.grid_id
            LEFT JOIN micro_grids m ON m.id = a.micro_grid_id
            LEFT JOIN units un ON un.id = a.unit_id
            LEFT JOIN buildings b ON b.id = coalesce(a.building_id, un.building_id)
            LEFT JOIN communities bc ON bc.id = b.community_id
            WHERE a.person_id = p.id AND {_overlaps('coalesce(g.code, m.code, bc.code)')})
        ORDER BY p.id""",
    "staff_assignments": f"""SELECT p.name AS person_name,
        CASE WHEN p.phone_public OR {_REVEAL} THEN p.phone END AS person_phone, a.role, a.target_type,
        CASE a.target_type WHEN 'grid' THEN g.code WHEN 'micro_grid' THEN m.code
             ELSE {_REF.format(t='b')} END AS target_code,
        un.number AS unit_number, a.households, a.valid_from, a.valid_to
        FROM staff_assignments a JOIN people p ON p.id = a.person_id
        LEFT JOIN grids g ON g.id = a.grid_id LEFT JOIN micro_grids m ON m.id = a.micro_grid_id
        LEFT JOIN units un ON un.id = a.unit_id
        LEFT JOIN buildings b ON b.id = coalesce(a.building_id, un.building_id)
        LEFT JOIN communities bc ON bc.id = b.community_id
        WHERE (CAST(:at AS timestamptz) IS NULL OR {in_force("a", _DAY)})
          AND (CAST(:j AS text) IS NULL OR {_overlaps('coalesce(g.code, m.code, bc.code)')})
        ORDER BY a.id""",
    "incidents": f"""SELECT i.reported_at, i.class_code, i.source, i.state, i.description,
        CASE WHEN {_REVEAL} THEN i.reporter END AS reporter,
        CASE WHEN {_REVEAL} THEN i.reporter_phone END AS reporter_phone,
        i.department, i.due_at, i.closed_at, s.code AS street_code, c.code AS community_code, g.code AS grid_code,
        m.code AS micro_grid_code, i.geom
        FROM incidents i LEFT JOIN streets s ON s.id = i.street_id LEFT JOIN communities c ON c.id = i.community_id
        LEFT JOIN grids g ON g.id = i.grid_id LEFT JOIN micro_grids m ON m.id = i.micro_grid_id
        WHERE (CAST(:at AS timestamptz) IS NULL OR i.reported_at <= CAST(:at AS timestamptz))
          AND (CAST(:j AS text) IS NULL OR {_overlaps('coalesce(m.code, g.code, c.code)')})
        ORDER BY i.reported_at, i.id""",
}


@dataclass(frozen=True)
class ExportResult:
    """A written export: where, which format, how many features."""

    path: Path
    format: str
    layer: str
    count: int
    crs: str = "EPSG:4326 WGS 84"


def _iso(series: pd.Series, tz: str) -> pd.Series:
    """Dates and datetimes as ISO text (datetimes in the configured zone): identical in every format."""
    if pd.api.types.is_datetime64_any_dtype(series):
        s = series.dt.tz_convert(tz) if series.dt.tz is not None else series
        return s.map(lambda v: v.isoformat(), na_action="ignore").astype(object)
    return series.map(lambda v: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v,
                      na_action="ignore").astype(object)


def exportable_layer(layer: str) -> LayerSpec:
    """The spec of the layer to export; UnknownLayer of kind not-found (the thing to read does not exist)."""
    try:
        return layer_spec(layer)
    except UnknownLayer as exc:
        raise UnknownLayer(exc.message, kind="not-found") from None


def read_layer(conn: Connection, layer: str, at: dt.datetime | None = None, jurisdiction: str | None = None,
               reveal_private: bool = True) -> gpd.GeoDataFrame:
    """A layer as exported (business keys, ISO dates), at `at` (now when None), inside `jurisdiction` if given."""
    spec = layer_spec(layer)
    settings = get_settings()
    params = {"at": at, "j": jurisdiction, "reveal": reveal_private, "tz": settings.timezone}
    sql = text(_SQL[spec.name])
    if spec.geometry:
        frame = gpd.read_postgis(sql, conn, geom_col="geom", params=params)
        frame = frame.rename_geometry("geometry")
    else:
        rows = conn.execute(sql, params)
        frame = pd.DataFrame(rows.fetchall(), columns=list(rows.keys()))
        frame = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([None] * len(frame), crs=4326), crs=4326)
    for col in frame.columns:
        if col == "geometry":
            continue
        if pd.api.types.is_datetime64_any_dtype(frame[col]) or frame[col].map(
                lambda v: isinstance(v, (dt.date, dt.datetime))).any():
            frame[col] = _iso(frame[col], settings.timezone)
        elif frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, bool)).any():
            frame[col] = frame[col].astype("boolean")
    for col in ("floors", "number", "households", "population", "unit_number"):
        if col in frame.columns:
            frame[col] = pd.array(pd.to_numeric(frame[col]), dtype="Int64")
    return _expand_attributes(frame)


def _expand_attributes(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The kept source attributes as columns of their own, after the layer's fields (never replacing one)."""
    if ATTRIBUTES not in frame.columns:
        return frame
    kept = frame.pop(ATTRIBUTES)
    docs = [d if isinstance(d, dict) else {} for d in kept.tolist()]
    names = list(dict.fromkeys(k for d in docs for k in d if k not in frame.columns and k != "geometry"))
    for name in names:
        values = pd.Series([d.get(name) for d in docs], index=frame.index, dtype=object)
        numeric = values.dropna()
        if len(numeric) and numeric.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
            values = pd.to_numeric(values)
        frame.insert(len(frame.columns) - 1, name, values)
    return frame


def format_for(path: Path, fmt: str | None) -> str:
    """The export format named, else the one the file name's extension implies."""
    if fmt:
        key = {"json": "geojson", "shp": "shapefile", "zip": "shapefile", "geopackage": "gpkg"}.get(fmt.lower(),
                                                                                                  fmt.lower())
        if key not in EXPORT_FORMATS:
            raise ExportError(f"unknown format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
        return key
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMAT_OF:
        raise ExportError(f"cannot tell the format from {Path(path).name}; give --format "
                          f"({', '.join(EXPORT_FORMATS)})")
    return _FORMAT_OF[suffix]


def _encoding(encoding: str | None) -> str:
    key = (encoding or "utf-8").lower().replace("_", "-")
    if key in ("utf-8", "utf8"):
        return "UTF-8"
    if key in ("gbk", "cp936", "gb2312", "gb18030"):
        return "GBK" if key != "gb18030" else "GB18030"
    raise ExportError(f"unknown encoding {encoding!r}; expected utf-8 or gbk")


def to_output_crs(frame: gpd.GeoDataFrame, crs: str | None) -> tuple[gpd.GeoDataFrame, str]:
    """The frame (stored in EPSG:4326) in the CRS asked for: an EPSG code ('4547', 'EPSG:4547'), a PROJ string
    ('+proj=tmerc +lon_0=121.47 …', a city's local grid), WKT, or gcj02/bd09 (no CRS definition: the file says
    none). Returns the frame and the CRS's label."""
    from geo.io.reproject import parse_crs
    from geo.spatial import coords

    if not crs:
        return frame, "EPSG:4326 WGS 84"
    target = parse_crs(crs)
    if target.is_storage:
        return frame, target.label
    if target.named in ("gcj02", "bd09"):
        convert = coords.wgs84_to_gcj02 if target.named == "gcj02" else coords.wgs84_to_bd09

        def shift(xy: np.ndarray) -> np.ndarray:
            lon, lat = convert(xy[:, 0], xy[:, 1])
            return np.column_stack([lon, lat])

        geoms = frame.geometry.to_numpy()
        present = ~shapely.is_missing(geoms)
        out = geoms.copy()
        out[present] = shapely.transform(geoms[present], shift)
        moved = frame.copy()
        moved = moved.set_geometry(gpd.GeoSeries(out, index=frame.index, crs=None), crs=None)
        return moved, target.label
    assert target.crs is not None  # parse_crs gives a CRS unless the system is a named one
    return frame.to_crs(target.crs), target.label


def write_frame(frame: gpd.GeoDataFrame, path: Path, fmt: str, layer: str, encoding: str | None = None,
                spatial: bool = True) -> Path:
    """Write an exported frame in a format; Shapefiles are zipped with their .prj and .cpg. GeoJSON is RFC 7946
    (WGS-84) unless the frame is in another CRS (then the older form with a ``crs`` member)."""
    path = Path(path)
    enc = _encoding(encoding)
    wgs84 = frame.crs is not None and frame.crs.to_epsg() == 4326
    if fmt == "csv":
        out = pd.DataFrame(frame.drop(columns="geometry"))
        if spatial:
            geoms = frame.geometry.to_numpy()
            if (shapely.get_type_id(geoms[~shapely.is_missing(geoms)]) == 0).all():
                xy = np.full((len(geoms), 2), np.nan)
                present = ~shapely.is_missing(geoms)
                xy[present] = shapely.get_coordinates(geoms[present])
                out["lon"], out["lat"] = xy[:, 0], xy[:, 1]
            else:
                out["wkt"] = shapely.to_wkt(geoms, rounding_precision=-1)
        # A BOM lets Excel open UTF-8 Chinese text; GBK is what older Chinese desktop software expects.
        out.to_csv(path, index=False, encoding="utf-8-sig" if enc == "UTF-8" else "gb18030", float_format=None)
        return path
    if not spatial:
        frame = pd.DataFrame(frame.drop(columns="geometry"))
    if fmt == "geojson":
        options = ({"RFC7946": "YES", "COORDINATE_PRECISION": "15"} if wgs84 else {"COORDINATE_PRECISION": "15"})
        pyogrio.write_dataframe(frame, path, driver="GeoJSON", layer_options=options if spatial else None)
        return path
    if fmt == "gpkg":
        pyogrio.write_dataframe(frame, path, driver="GPKG", layer=layer)
        return path
    # Shapefile: short field names, chosen encoding (.cpg written), zipped.
    frame = frame.rename(columns=SHAPEFILE_NAMES)
    with tempfile.TemporaryDirectory() as tmp:
        shp = Path(tmp) / f"{layer}.shp"
        if spatial:
            pyogrio.write_dataframe(frame, shp, driver="ESRI Shapefile", encoding=enc)
        else:
            pyogrio.write_dataframe(frame, Path(tmp) / f"{layer}.dbf", driver="ESRI Shapefile", encoding=enc)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(Path(tmp).iterdir()):
                z.write(f, f.name)
    return path


def export_layer(target: Engine | Connection, layer: str, path: str | Path, fmt: str | None = None,
                 at: dt.datetime | None = None, encoding: str | None = None, jurisdiction: str | None = None,
                 reveal_private: bool = True, crs: str | None = None, within: str | None = None) -> ExportResult:
    """Write a layer at `at` (now when None) to `path` as GeoJSON, GeoPackage, zipped Shapefile or CSV, in `crs`
    (`to_output_crs`; WGS-84 by default), limited to the street, community or grid code `within` if given."""
    spec = layer_spec(layer)
    path = Path(path)
    fmt = format_for(path, fmt)
    if fmt == "shapefile" and path.suffix.lower() != ".zip":
        path = path.with_suffix(".zip")
    scope = narrower(jurisdiction, within)
    if isinstance(target, Engine):
        with target.connect() as conn:
            frame = read_layer(conn, spec.name, at, scope, reveal_private)
    else:
        frame = read_layer(target, spec.name, at, scope, reveal_private)
    if spec.geometry is not None:
        frame, label = to_output_crs(frame, crs)
    else:
        label = "none"
    write_frame(frame, path, fmt, spec.name, encoding, spatial=spec.geometry is not None)
    return ExportResult(path, fmt, spec.name, len(frame), label)


#: A code no unit has: the scope of two codes that do not nest (nothing is exported).
_NOWHERE = "-"


def narrower(jurisdiction: str | None, within: str | None) -> str | None:
    """The narrower of two unit codes that nest (a filter inside the caller's jurisdiction); none when they do not."""
    if not within:
        return jurisdiction
    if not within.isdigit():
        raise ExportError(f"within={within!r} is not a street, community or grid code")
    if jurisdiction is None or within.startswith(jurisdiction):
        return within
    return jurisdiction if jurisdiction.startswith(within) else _NOWHERE


def suffix_for(fmt: str) -> str:
    """The file extension of an export format."""
    return _SUFFIX[format_for(Path("x"), fmt)]
