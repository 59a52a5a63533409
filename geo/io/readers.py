"""Reading source files: GeoJSON (also the old form with a ``crs`` member), GeoPackage (layer choice), zipped
Shapefile (``.prj``, ``.cpg``, or GBK/GB18030 attributes without ``.cpg``), CSV and XLSX with longitude/latitude
or WKT columns. `read_records` reads a table and matches its columns to a layer's fields (the incident class
table and incident history importers).

GDAL (through pyogrio) reads the vector formats; geometries come back as WKB and are parsed with shapely so a
ring that is not closed can be repaired and reported instead of failing the whole file. Curved geometries are
linearised by GDAL; which records were curves is looked up with OGR SQL so the report can name them.
"""

from __future__ import annotations

import csv
import io
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from geo.errors import DomainError
from geo.io.fields import FieldMatch, LayerSpec, columns_read, match_fields, normalise_name, required_missing

FORMATS = ("geojson", "gpkg", "shapefile", "csv", "xlsx")
_EXTENSIONS = {
    ".geojson": "geojson", ".json": "geojson", ".gpkg": "gpkg", ".zip": "shapefile", ".shp": "shapefile",
    ".dbf": "shapefile",
    ".csv": "csv", ".txt": "csv", ".tsv": "csv", ".xlsx": "xlsx", ".xlsm": "xlsx",
}
#: Column names holding longitude / latitude / WKT in tables (compared with `normalise_name`).
LON_NAMES = ("lon", "lng", "long", "longitude", "经度", "东经", "x", "jd", "point_x")
LAT_NAMES = ("lat", "latitude", "纬度", "北纬", "y", "wd", "point_y")
WKT_NAMES = ("wkt", "geometry", "geom", "the_geom", "shape", "几何", "空间信息", "边界")
#: dBase language driver ids naming a Chinese code page (byte 29 of the .dbf header).
_LDID_ENCODINGS = {0x4D: "GB18030", 0x4F: "CP950", 0x7A: "GB18030", 0x78: "CP950"}
_LINEAR_TYPES = {"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon",
                 "Point Z", "LineString Z", "Polygon Z", "MultiPoint Z", "MultiLineString Z", "MultiPolygon Z"}


class ReadError(DomainError, ValueError):
    """A file that cannot be read as asked (unknown format, missing layer, no geometry columns …)."""

    slug = "unreadable-file"
    title = "File not readable as asked"


class UnsafeArchive(ReadError):
    """A zip archive with a member path that could escape its folder (zip slip: '..', absolute, NUL bytes)."""

    slug = "unsafe-archive"
    title = "Unsafe archive"


class ArchiveTooLarge(DomainError, ValueError):
    """A zip archive that expands beyond the limits (a zip bomb): refused before anything is extracted."""

    slug = "archive-too-large"
    kind = "too-large"
    title = "Archive expands too much"


#: Limits on zip archives (zipped Shapefiles, XLSX workbooks), checked on the directory before any member is read
#: and again while members are streamed out (the directory's sizes may lie): the total expanded size, and the
#: expansion ratio of any member larger than `ZIP_RATIO_FROM` bytes expanded (real .dbf files compress up to ~50×).
ZIP_MAX_BYTES = 512 << 20
ZIP_MAX_RATIO = 200
ZIP_RATIO_FROM = 1 << 20
ZIP_MAX_MEMBERS = 10_000
_CHUNK = 1 << 20


def check_zip(path: Path, max_bytes: int | None = None, max_ratio: float | None = None) -> list[zipfile.ZipInfo]:
    """The members of a zip archive, refused before extraction when a path could escape its folder (UnsafeArchive)
    or the archive would expand beyond `max_bytes` or `max_ratio` (ArchiveTooLarge); ReadError when not a zip.
    The limits default to the module's `ZIP_MAX_BYTES` and `ZIP_MAX_RATIO`."""
    max_bytes = ZIP_MAX_BYTES if max_bytes is None else max_bytes
    max_ratio = ZIP_MAX_RATIO if max_ratio is None else max_ratio
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise ReadError(f"{path.name} is not a readable zip archive: {exc}") from exc
    if len(infos) > ZIP_MAX_MEMBERS:
        raise ArchiveTooLarge(f"{path.name} holds {len(infos):,} members, more than {ZIP_MAX_MEMBERS:,}",
                              max_members=ZIP_MAX_MEMBERS)
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if ("\x00" in name or name.startswith(("/", "\\")) or ".." in parts
                or (len(name) > 1 and name[1] == ":")):
            shown = name.replace("\x00", "\\0")
            raise UnsafeArchive(f"{path.name} holds a member whose path could escape its folder: {shown!r}; "
                                "nothing was extracted")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise ArchiveTooLarge(f"{path.name} would expand to {total:,} bytes, more than the limit of {max_bytes:,}; "
                              "nothing was extracted", max_expanded_bytes=max_bytes)
    for info in infos:
        if info.file_size > ZIP_RATIO_FROM and info.file_size > max_ratio * max(info.compress_size, 1):
            raise ArchiveTooLarge(
                f"{path.name}: {info.filename} would expand {info.file_size / max(info.compress_size, 1):,.0f}-fold "
                f"(to {info.file_size:,} bytes), more than {max_ratio:,.0f}-fold; nothing was extracted",
                max_ratio=max_ratio)
    return infos


def _extract(path: Path, members: list[str], folder: Path, max_bytes: int | None = None) -> dict[str, Path]:
    """Stream the named members out of a (checked) zip into `folder` under their base names, counting the bytes
    actually produced: past `max_bytes` (default `ZIP_MAX_BYTES`) in all the copy stops and the archive is refused."""
    max_bytes = ZIP_MAX_BYTES if max_bytes is None else max_bytes
    out: dict[str, Path] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as z:
            for member in members:
                target = folder / Path(member).name
                with z.open(member) as src, target.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise ArchiveTooLarge(f"{path.name} expands beyond the limit of {max_bytes:,} bytes",
                                                  max_expanded_bytes=max_bytes)
                        dst.write(chunk)
                out[member] = target
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise ReadError(f"cannot extract from {path.name}: {exc}") from exc
    return out


@dataclass
class SourceData:
    """What a file holds: attributes, geometries (source CRS) and how they were read."""

    frame: pd.DataFrame
    geometry: np.ndarray
    format: str
    crs: CRS | None
    crs_from: str
    encoding: str | None = None
    layer: str | None = None
    #: Records whose rings were not closed (or had too few points) and were repaired on reading.
    ring_fixed: np.ndarray | None = None
    #: Records that held curves (CircularString, CurvePolygon …), linearised on reading.
    curved: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)


def detect_format(path: Path, name: str | None = None) -> str:
    """The format of a file from its extension (the upload name when given), else from its first bytes."""
    suffix = Path(name or path.name).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    head = Path(path).read_bytes()[:16]
    if head.startswith(b"SQLite format 3"):
        return "gpkg"
    if head.startswith(b"PK"):
        return "xlsx" if _zip_has(path, "xl/workbook.xml") else "shapefile"
    if head.lstrip()[:1] in (b"{", b"["):
        return "geojson"
    raise ReadError(f"cannot tell the format of {Path(name or path).name}; use .geojson, .gpkg, .zip (Shapefile), "
                    ".csv or .xlsx")


def _zip_has(path: Path, member: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return member in z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def list_layers(path: Path, fmt: str | None = None) -> list[str]:
    """Layer names of a GeoPackage, Shapefiles of a zip, or sheets of a workbook."""
    fmt = fmt or detect_format(path)
    if fmt == "gpkg":
        return [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    if fmt == "shapefile" and str(path).lower().endswith(".zip"):
        return [Path(m).stem for m in _zip_shapefiles(path)]
    if fmt == "xlsx":
        import openpyxl

        check_zip(path)
        try:
            wb = openpyxl.load_workbook(path, read_only=True)
        except Exception as exc:  # openpyxl raises many kinds on a broken workbook
            raise ReadError(f"{Path(path).name} is not a readable XLSX workbook: {type(exc).__name__}: "
                            f"{str(exc)[:200]}") from exc
        try:
            return list(wb.sheetnames)
        finally:
            wb.close()
    return [Path(path).stem]


def _zip_shapefiles(path: Path) -> list[str]:
    """The .shp members of a zip; a zip of attribute tables only (.dbf, no .shp) lists its .dbf members."""
    names = [i.filename for i in check_zip(path) if not Path(i.filename).name.startswith("._")]
    shp = [m for m in names if m.lower().endswith(".shp")]
    return shp or [m for m in names if m.lower().endswith(".dbf")]


def _pick(layers: list[str], wanted: str | None, target: str | None, what: str, source: str) -> str:
    if wanted is not None:
        if wanted not in layers:
            raise ReadError(f"{source} has no {what} {wanted!r}; it has {', '.join(layers) or 'none'}")
        return wanted
    if len(layers) == 1:
        return layers[0]
    if target is not None:
        for name in layers:
            if normalise_name(name) in (normalise_name(target), normalise_name(target).rstrip("s")):
                return name
    raise ReadError(f"{source} holds several {what}s ({', '.join(layers)}); choose one with --layer")


def detect_text_encoding(data: bytes) -> str:
    """UTF-8 when the bytes decode as UTF-8, else the likeliest of GB18030 (GBK superset) and Big5."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        data.decode("utf-8")
        return "UTF-8"
    except UnicodeDecodeError:
        pass
    candidates = []
    for enc in ("gb18030", "big5"):
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        # Common CJK characters sit in U+4E00–U+9FFF; wrong guesses produce rarer ones and symbols.
        common = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
        odd = sum(1 for ch in text if ord(ch) > 127 and not ("\u4e00" <= ch <= "\u9fff"))
        candidates.append((common - 3 * odd, enc))
    if candidates and max(candidates)[1] == "big5":
        return "CP950"
    # GB18030 covers GBK and GB2312; bytes it cannot decode are replaced rather than failing the file.
    return "GB18030"


def dbf_encoding(dbf: bytes) -> str:
    """The encoding of a .dbf without a .cpg: its language driver id, else detected from its bytes."""
    if len(dbf) < 32:
        return "UTF-8"
    ldid = dbf[29]
    n_records, header_len, record_len = struct.unpack("<IHH", dbf[4:12])
    names = dbf[32:header_len]
    sample = dbf[header_len:header_len + min(n_records * record_len, 4 << 20)]
    payload = names + b" " + sample
    if all(b < 128 for b in payload):
        return "UTF-8"
    detected = detect_text_encoding(payload)
    if ldid in _LDID_ENCODINGS and detected not in ("UTF-8", "utf-8-sig"):
        return _LDID_ENCODINGS[ldid]
    return detected


def _read_gdal(path: str, layer: str | None, encoding: str | None, fmt: str) -> SourceData:
    import warnings

    try:
        with warnings.catch_warnings():
            # Both are handled (and reported) here: repeated GeoJSON ids, rings GDAL left unclosed.
            warnings.filterwarnings("ignore", message="Several features with id", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message="Non closed ring", category=RuntimeWarning)
            meta, fids, wkb, field_data = pyogrio.raw.read(path, layer=layer, encoding=encoding,
                                                           return_fids=fmt == "geojson")
    except pyogrio.errors.DataSourceError as exc:
        raise ReadError(f"cannot read {Path(path).name}: {exc}") from exc
    except pyogrio.errors.DataLayerError as exc:
        raise ReadError(f"cannot read layer {layer!r}: {exc}") from exc
    frame = pd.DataFrame({str(name): values for name, values in zip(meta["fields"], field_data, strict=True)})
    if fids is not None and "id" not in frame.columns and len(fids) and not np.array_equal(fids, np.arange(len(fids))):
        # GDAL turns a GeoJSON Feature's "id" member into the FID, renumbering repeated ones (tile-cut pieces share
        # theirs): read the members themselves so the pieces can be merged by id.
        frame["id"] = _geojson_feature_ids(path, len(fids))
    n = len(frame) if len(frame.columns) else (0 if wkb is None else len(wkb))
    if wkb is None:
        return SourceData(frame, np.full(n, None, dtype=object), fmt, None, "none",
                          meta.get("encoding"), layer)
    geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    unreadable = np.flatnonzero(np.array([w is not None for w in wkb]) & shapely.is_missing(geoms))
    ring_fixed = np.zeros(len(geoms), dtype=bool)
    if unreadable.size:
        geoms[unreadable] = shapely.from_wkb(wkb[unreadable], on_invalid="fix")
        ring_fixed[unreadable] = ~shapely.is_missing(geoms[unreadable])
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    curved = np.zeros(len(geoms), dtype=bool)
    if fmt == "gpkg" and meta.get("geometry_type") not in _LINEAR_TYPES:
        curved = _curved_records(path, layer, len(geoms))
    frame.index = pd.RangeIndex(len(frame)) if len(frame.columns) else pd.RangeIndex(len(geoms))
    return SourceData(frame, geoms, fmt, crs, "file" if crs else "none", meta.get("encoding"), layer,
                      ring_fixed, curved)


def _geojson_feature_ids(path: str, n: int) -> np.ndarray:
    """The "id" member of each Feature of a GeoJSON file, in order (None where absent)."""
    import json

    with open(path, "rb") as f:
        features = json.load(f).get("features", [])
    ids = np.array([feat.get("id") for feat in features], dtype=object)
    return ids if len(ids) == n else np.full(n, None, dtype=object)


def _curved_records(path: str, layer: str | None, n: int) -> np.ndarray:
    """Which records were curves before GDAL linearised them (OGR SQL's OGR_GEOMETRY names the stored type)."""
    name = layer or str(pyogrio.list_layers(path)[0, 0])
    types = pyogrio.read_dataframe(path, sql=f'SELECT OGR_GEOMETRY AS gtype FROM "{name}"', sql_dialect="OGRSQL",
                                   read_geometry=False)["gtype"].astype(str).str.upper()
    curved = types.str.contains("CURVE|CIRCULAR|SURFACE", regex=True).to_numpy()
    return curved if len(curved) == n else np.zeros(n, dtype=bool)


def _read_table(path: Path, fmt: str, layer: str | None, encoding: str | None, geometry: str | None) -> SourceData:
    notes: list[str] = []
    if fmt == "csv":
        data = path.read_bytes()
        if not data.strip():
            raise ReadError(f"{path.name} is empty")
        if b"\x00" in data[: 1 << 20]:
            raise ReadError(f"{path.name} holds NUL bytes: a binary file, not CSV text")
        enc = encoding or detect_text_encoding(data[: 4 << 20])
        sep = "\t" if path.suffix.lower() == ".tsv" else None
        try:
            frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding=enc, sep=sep,
                                engine="python" if sep is None else "c")
        except UnicodeDecodeError as exc:
            raise ReadError(f"{path.name} is not {enc} text ({exc.reason} at byte {exc.start}); "
                            "give its encoding") from exc
        except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, ValueError, LookupError) as exc:
            raise ReadError(f"{path.name} is not readable CSV: {str(exc).splitlines()[0][:200]}") from exc
        sheet = None
    else:
        enc = None
        sheets = list_layers(path, "xlsx")
        if not sheets:
            raise ReadError(f"{path.name} has no sheet")
        sheet = _pick(sheets, layer, None, "sheet", path.name) if (layer or len(sheets) > 1) else sheets[0]
        try:
            frame = pd.read_excel(path, sheet_name=sheet, dtype=str, keep_default_na=False, engine="openpyxl")
        except Exception as exc:  # openpyxl and pandas raise many kinds on a broken workbook
            raise ReadError(f"{path.name} is not a readable XLSX workbook: {type(exc).__name__}: "
                            f"{str(exc)[:200]}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.replace({"": None})
    n = len(frame)
    geoms = np.full(n, None, dtype=object)
    ring_fixed = np.zeros(n, dtype=bool)
    norm = {normalise_name(c): c for c in frame.columns}
    wkt_col = next((norm[w] for w in WKT_NAMES if w in norm), None)
    lon_col = next((norm[w] for w in LON_NAMES if w in norm), None)
    lat_col = next((norm[w] for w in LAT_NAMES if w in norm), None)
    if wkt_col is not None and (geometry == "polygon" or lon_col is None or lat_col is None):
        text = frame[wkt_col].to_numpy(dtype=object)
        geoms = shapely.from_wkt(text, on_invalid="ignore")
        bad = np.flatnonzero(pd.notna(text) & shapely.is_missing(geoms))
        if bad.size:
            geoms[bad] = shapely.from_wkt(text[bad], on_invalid="fix")
            ring_fixed[bad] = ~shapely.is_missing(geoms[bad])
        frame = frame.drop(columns=[wkt_col])
        notes.append(f"geometry from the WKT column {wkt_col!r}")
    elif lon_col is not None and lat_col is not None:
        lon = pd.to_numeric(frame[lon_col], errors="coerce").to_numpy(dtype=float)
        lat = pd.to_numeric(frame[lat_col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(lon) & np.isfinite(lat)
        geoms[ok] = shapely.points(lon[ok], lat[ok])
        frame = frame.drop(columns=[lon_col, lat_col])
        notes.append(f"points from the columns {lon_col!r} (longitude) and {lat_col!r} (latitude)")
    elif geometry is not None:
        raise ReadError(f"{path.name} has no longitude/latitude columns (e.g. 经度/纬度, lon/lat) "
                        f"{'or WKT column ' if geometry == 'polygon' else ''}for the geometries; "
                        f"its columns are {', '.join(frame.columns)}")
    if geometry == "polygon" and wkt_col is None and geoms.size and not shapely.is_missing(geoms).all():
        raise ReadError(f"a polygon layer needs a WKT column ({', '.join(WKT_NAMES)}) in {path.name}; "
                        "longitude/latitude columns only give points")
    return SourceData(frame.reset_index(drop=True), geoms, fmt, None, "none", enc, sheet, ring_fixed,
                      np.zeros(n, dtype=bool), notes)


def read_source(path: str | Path, layer: str | None = None, encoding: str | None = None,
                geometry: str | None = "polygon", target: str | None = None, name: str | None = None) -> SourceData:
    """Read a source file; `layer` picks a GeoPackage layer, a Shapefile inside a zip, or a workbook sheet."""
    path = Path(path)
    if not path.exists():
        raise ReadError(f"no such file: {path}")
    fmt = detect_format(path, name)
    if fmt in ("csv", "xlsx"):
        return _read_table(path, fmt, layer, encoding, geometry)
    notes: list[str] = []
    if fmt == "gpkg":
        chosen = _pick(list_layers(path, "gpkg"), layer, target, "layer", path.name)
        data = _read_gdal(str(path), chosen, encoding, fmt)
    elif fmt == "shapefile":
        if zipfile.is_zipfile(path):
            members = _zip_shapefiles(path)
            if not members:
                raise ReadError(f"{path.name} holds no .shp (or .dbf) file")
            by_stem = {Path(m).stem: m for m in members}
            member = by_stem[_pick(list(by_stem), layer, target, "Shapefile", path.name)]
            member_stem = member[: -len(".shp")]  # .shp and .dbf have the same length
            with zipfile.ZipFile(path) as z:
                names = {n.lower(): n for n in z.namelist()}
            parts = {ext: names.get((member_stem + ext).lower()) for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg")}
            folder = Path(tempfile.mkdtemp(prefix="gridatlas-unzip-"))
            try:
                # streamed out under plain base names (never the member's path), counting the bytes produced
                files = _extract(path, [m for m in parts.values() if m], folder)
                local = {ext: files[m] for ext, m in parts.items() if m}
                cpg, dbf, has_prj = local.get(".cpg"), local.get(".dbf"), ".prj" in local
                enc = encoding
                if enc is None and cpg is None and dbf is not None:
                    with dbf.open("rb") as f:
                        enc = dbf_encoding(f.read(8 << 20))
                    notes.append(f"no .cpg: attributes read as {enc} (detected)")
                main = local.get(".shp") or local[".dbf"]
                data = _read_gdal(str(main), None, enc, fmt)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        else:
            stem = path.with_suffix("")
            enc = encoding
            if enc is None and not stem.with_suffix(".cpg").exists() and stem.with_suffix(".dbf").exists():
                enc = dbf_encoding(stem.with_suffix(".dbf").read_bytes())
                notes.append(f"no .cpg: attributes read as {enc} (detected)")
            has_prj = stem.with_suffix(".prj").exists()
            data = _read_gdal(str(path), None, enc, fmt)
        if enc:
            data.encoding = enc
        data.crs_from = "prj" if has_prj and data.crs is not None else "none"
    else:
        data = _read_gdal(str(path), layer, encoding, fmt)
        if data.crs is not None:
            data.crs_from = "crs member" if _has_crs_member(path) else "RFC 7946 (WGS-84)"
    data.notes = notes + data.notes
    return data


def _has_crs_member(path: Path) -> bool:
    """Whether a GeoJSON file carries the pre-RFC 7946 ``crs`` member (looked for near the start only)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return b'"crs"' in head


def to_geodataframe(data: SourceData) -> gpd.GeoDataFrame:
    """The source as a GeoDataFrame (for inspection and tests)."""
    return gpd.GeoDataFrame(data.frame, geometry=gpd.GeoSeries(data.geometry), crs=data.crs)


@dataclass
class Records:
    """A file's records with its columns matched to a layer's fields (表头映射)."""

    data: SourceData
    match: FieldMatch

    @property
    def columns_read(self) -> list[str]:
        """How each column was read, for the dry run ("we read column '事件类别' as category (recognised)")."""
        return columns_read(self.match)

    @property
    def ignored_columns(self) -> list[str]:
        """The file's columns that feed no field."""
        return [str(c) for c in self.match.ignored]

    def column(self, name: str) -> pd.Series | None:
        """The values of the column feeding field `name` (indexed from 0), None when no column does."""
        col = self.match.mapping.get(name)
        return None if col is None else self.data.frame[col].reset_index(drop=True)


def read_records(path: str | Path, spec: LayerSpec, mapping: dict[str, str] | None = None, *,
                 source: str | None = None, example: str = "", formats: tuple[str, ...] | None = None,
                 missing_error: type[DomainError] = ReadError, layer: str | None = None,
                 encoding: str | None = None, geometry: str | None = None, target: str | None = None,
                 name: str | None = None) -> Records:
    """Read a file (`read_source`: format, GBK/UTF-8 and sheet detected) and match its columns to `spec`'s fields,
    explicit `mapping` first; ReadError when its format is not among `formats`, `missing_error` when a required
    field has no column (`example` shows how to name one, e.g. "category=问题分类")."""
    path = Path(path)
    data = read_source(path, layer, encoding, geometry, target, name)
    if formats is not None and data.format not in formats:
        raise ReadError(f"{spec.label or spec.name} is read from {' or '.join(f.upper() for f in formats)}, "
                        f"not {data.format}")
    match = match_fields(spec, list(data.frame.columns), mapping)
    missing = required_missing(spec, match)
    if missing:
        raise missing_error(f"no column for {', '.join(missing)} in {source or name or path.name}; its columns are "
                            f"{', '.join(map(str, data.frame.columns))}"
                            + (f" (name them, e.g. {example})" if example else ""))
    return Records(data, match)
