"""Batch locate I/O: stream points in (CSV or GeoJSON), answers out (CSV or JSON lines) in input order.

Readers take the request body in pieces of any size and return `PointChunk`s of whole rows (tens of thousands
at a time, so parsing and locating stay vectorised); a bad row becomes an error for its row number and never stops
the rest. `BatchFormatter` turns a chunk and its `LocateBatch` into output text with per-unit fragments prepared
once, so a million rows cost string joins, not a million dict builds.

Row numbers: CSV rows count from 1 at the first data row (the header is not a row); GeoJSON rows are features
counted from 1 in document order.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from geo.errors import DomainError
from geo.locate.directory import StaffDirectory
from geo.locate.index import LEVEL_KEYS, MATCH_NAMES, MATCH_NEAREST, MATCH_NONE, LocateBatch, LocateIndex, unanswered
from geo.locate.points import WGS84_LIKE, range_errors
from geo.locate.raster import NONE
from geo.runtime import paused_gc
from geo.spatial.coords import to_wgs84

#: Rows parsed and located together (bounded memory, amortised per-call overheads).
CHUNK_ROWS = 65_536
#: Header names accepted for each column (compared lower-cased and stripped).
LON_NAMES = ("lon", "lng", "long", "longitude", "x", "经度")
LAT_NAMES = ("lat", "latitude", "y", "纬度")
ID_NAMES = ("id", "ref", "key", "编号", "序号")


class BatchInputError(DomainError):
    """The input cannot be read at all (no lon/lat columns, not GeoJSON): refused before any answer is sent."""

    slug = "bad-batch-input"
    kind = "invalid"
    title = "Unreadable batch input"


@dataclass
class PointChunk:
    """Consecutive input rows: row numbers, coordinates as given (NaN when bad), ids, and errors by position."""

    rows: np.ndarray  # int64, 1-based
    lon: np.ndarray
    lat: np.ndarray
    ids: list | None
    errors: dict[int, str]  # position in chunk -> message

    def __len__(self) -> int:
        return len(self.rows)


# ---------------------------------------------------------------------------------------------- CSV in

def _norm(name: str) -> str:
    return name.strip().strip('"').strip().lower()


class CsvReader:
    """Incremental CSV reader: a header naming lon and lat (optionally id), then one point per line."""

    def __init__(self, max_rows: int, chunk_rows: int = CHUNK_ROWS):
        self.max_rows = max_rows
        self.chunk_rows = chunk_rows
        self.buf = bytearray()
        self.pending_lines = 0
        self.header: list[str] | None = None
        self.sep = ","
        self.cols: tuple[int, int, int | None] | None = None
        self.next_row = 1
        self.first_is_data = False

    @property
    def started(self) -> bool:
        return self.cols is not None

    def _parse_header(self) -> bool:
        end = self.buf.find(b"\n")
        if end < 0:
            return False
        line = bytes(self.buf[:end]).decode("utf-8-sig", errors="replace").rstrip("\r")
        self.sep = "\t" if ("\t" in line and "," not in line) else ("；" if "；" in line else ",")
        self.sep = ";" if (";" in line and "," not in line and "\t" not in line) else self.sep
        fields = next(csv.reader([line], delimiter=self.sep)) if line else []
        names = [_norm(f) for f in fields]
        ilon = next((i for i, n in enumerate(names) if n in LON_NAMES), None)
        ilat = next((i for i, n in enumerate(names) if n in LAT_NAMES), None)
        iid = next((i for i, n in enumerate(names) if n in ID_NAMES), None)
        if ilon is None or ilat is None:
            try:  # no header: "lon,lat[,id]" rows straight away
                float(fields[0]), float(fields[1])
            except (ValueError, IndexError):
                raise BatchInputError(
                    f"the CSV header {line[:200]!r} names no lon and lat columns "
                    f"(accepted: {', '.join(LON_NAMES)} / {', '.join(LAT_NAMES)}; optional id column: "
                    f"{', '.join(ID_NAMES)})") from None
            self.cols = (0, 1, 2 if len(fields) > 2 else None)
            self.header = ["lon", "lat"] + (["id"] if len(fields) > 2 else [])
            self.first_is_data = True
        else:
            self.cols = (ilon, ilat, iid)
            self.header = names
            del self.buf[:end + 1]
            self.pending_lines -= 1
        return True

    def feed(self, data: bytes) -> list[PointChunk]:
        """Take more bytes; return the chunks of whole rows now complete."""
        self.buf += data
        self.pending_lines += data.count(b"\n")
        if self.cols is None and not self._parse_header():
            if len(self.buf) > 1 << 20:
                raise BatchInputError("the first line (header) is longer than 1 MiB")
            return []
        out = []
        while self.pending_lines >= self.chunk_rows:
            cut = _nth_newline(self.buf, self.chunk_rows)
            block = bytes(self.buf[:cut + 1])
            del self.buf[:cut + 1]
            self.pending_lines -= self.chunk_rows
            out.append(self._parse(block))
        return out

    def close(self) -> list[PointChunk]:
        """The remaining rows (the last line may lack its newline)."""
        if self.cols is None:
            if not self.buf.strip():
                return []
            self.buf += b"\n"
            self._parse_header()
        block = bytes(self.buf)
        self.buf = bytearray()
        if not block.strip(b"\r\n"):
            return []
        if not block.endswith(b"\n"):
            block += b"\n"
        return [self._parse(block)]

    def _parse(self, block: bytes) -> PointChunk:
        if self.cols is None:
            raise RuntimeError("CsvReader._parse before the header was read")
        ilon, ilat, iid = self.cols
        want = sorted({ilon, ilat} | ({iid} if iid is not None else set()))
        ids = None
        raw_lon = raw_lat = None
        try:  # fast path: every row well formed, numbers parsed in C
            dtypes: dict[int, type] = {ilon: np.float64, ilat: np.float64}
            if iid is not None:
                dtypes[iid] = str
            df = pd.read_csv(io.BytesIO(block), header=None, sep=self.sep, usecols=want, dtype=dtypes,
                             skip_blank_lines=False, encoding="utf-8", encoding_errors="replace", engine="c")
            lon = df[ilon].to_numpy(np.float64)
            lat = df[ilat].to_numpy(np.float64)
            if iid is not None:
                ids = df[iid].where(df[iid].notna(), None).tolist()
        except (pd.errors.ParserError, ValueError, KeyError, IndexError):
            # Some row is not a number or has extra fields: read every row as text, row numbers intact.
            rows = list(csv.reader(io.StringIO(block.decode("utf-8", errors="replace")), delimiter=self.sep))
            raw_lon = [r[ilon].strip() if len(r) > ilon else "" for r in rows]
            raw_lat = [r[ilat].strip() if len(r) > ilat else "" for r in rows]
            ids = [r[iid] if len(r) > iid else None for r in rows] if iid is not None else None
            lon = pd.to_numeric(pd.Series(raw_lon, dtype=object), errors="coerce").to_numpy(np.float64)
            lat = pd.to_numeric(pd.Series(raw_lat, dtype=object), errors="coerce").to_numpy(np.float64)
        n = len(lon)
        rows_no = np.arange(self.next_row, self.next_row + n, dtype=np.int64)
        self.next_row += n
        errors: dict[int, str] = {}
        for i in np.flatnonzero(~np.isfinite(lon) | ~np.isfinite(lat)).tolist():
            lo = raw_lon[i] if raw_lon is not None else ("" if np.isnan(lon[i]) else str(lon[i]))
            la = raw_lat[i] if raw_lat is not None else ("" if np.isnan(lat[i]) else str(lat[i]))
            if not lo and not la:
                errors[i] = "empty row: lon and lat are missing"
            elif not math.isfinite(lon[i]):
                errors[i] = "lon is missing" if not lo else f"lon {lo[:40]!r} is not a number"
            else:
                errors[i] = "lat is missing" if not la else f"lat {la[:40]!r} is not a number"
        return PointChunk(rows_no, lon, lat, ids, errors)


def _nth_newline(buf: bytearray, n: int) -> int:
    """Index of the n-th newline in buf (n >= 1; the caller knows there are at least n)."""
    # Scan only as far as needed, a block at a time, with numpy (a C-speed scan, no per-line Python call). The
    # array views the bytearray; it is released before returning, so the caller may resize the buffer.
    step = 1 << 20
    start = 0
    remaining = n
    while True:
        end = min(len(buf), start + step)
        c = buf.count(b"\n", start, end)
        if c >= remaining:
            break
        remaining -= c
        start = end
    view = np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start)
    try:
        return start + int(np.flatnonzero(view == 10)[remaining - 1])
    finally:
        del view


# ------------------------------------------------------------------------------------------ GeoJSON in

#: Bytes gathered before a scan (amortises the per-scan numpy calls).
SCAN_BYTES = 1 << 20
_FEATURES_KEY = re.compile(rb'"features"\s*:\s*$')


class GeoJsonReader:
    """Incremental GeoJSON reader: a FeatureCollection (of any size), or a sequence of Features (one per line).

    A vectorised scan finds each feature's bytes (objects inside the top-level "features" array, or top-level
    objects that are not collections) without parsing the whole document; each feature is then parsed alone.
    """

    def __init__(self, max_rows: int, chunk_rows: int = CHUNK_ROWS):
        self.max_rows = max_rows
        self.chunk_rows = chunk_rows
        self.buf = bytearray()
        self.base = 0  # absolute offset of buf[0]
        self.scanned = 0  # absolute offset up to which the scan state is valid
        self.depth = 0
        self.in_str = 0
        self.tail_bs = 0  # backslashes at the end of the scanned text (an escape may continue)
        self.l2_features = False  # the open depth-2 container is the "features" array
        self.feat_start: int | None = None
        self.top_start: int | None = None
        self.top_has_features = False
        self.slices: list[tuple[int, int]] = []  # complete features awaiting parsing (absolute offsets)
        self.pending: list[bytes] = []
        self.next_row = 1
        self.started = False

    def feed(self, data: bytes) -> list[PointChunk]:
        """Take more bytes; return the chunks of whole features now complete."""
        if not self.started and data.strip():
            first = bytes(data.lstrip()[:1])
            if first not in (b"{", b"\x1e"):
                raise BatchInputError("the body is not GeoJSON: expected a FeatureCollection or Features")
            self.started = True
        self.buf += data
        if len(self.buf) - (self.scanned - self.base) >= SCAN_BYTES:
            self._scan()
        out = []
        while len(self.pending) >= self.chunk_rows:
            out.append(self._parse(self.pending[:self.chunk_rows]))
            del self.pending[:self.chunk_rows]
        return out

    def close(self) -> list[PointChunk]:
        """The remaining features; an unterminated one is reported as a bad row."""
        self._scan()
        out = []
        start = self.feat_start if self.feat_start is not None else \
            self.top_start if self.top_start is not None and not self.top_has_features else None
        if start is not None:
            self.pending.append(bytes(self.buf[start - self.base:]))
            self.feat_start = self.top_start = None
        while self.pending:
            out.append(self._parse(self.pending[:self.chunk_rows]))
            del self.pending[:self.chunk_rows]
        return out

    def _scan(self) -> None:
        off = self.scanned - self.base
        a = np.frombuffer(bytes(self.buf[off:]), dtype=np.uint8)
        n = len(a)
        if n == 0:
            return
        bs = a == 92
        idx = np.arange(n)
        last_non_bs = np.maximum.accumulate(np.where(bs, -1, idx))
        quote = np.flatnonzero(a == 34)
        # Backslashes right before each quote: an odd run escapes it. A run reaching the chunk start continues
        # the previous chunk's trailing run.
        prev = quote - 1
        run = np.where(prev >= 0, prev - last_non_bs[np.maximum(prev, 0)], 0)
        run = np.where((prev >= 0) & (last_non_bs[np.maximum(prev, 0)] < 0), run + self.tail_bs, run)
        run = np.where(prev < 0, self.tail_bs, run)
        real_q = quote[run % 2 == 0]
        opens = (a == 123) | (a == 91)
        closes = (a == 125) | (a == 93)
        struct = np.flatnonzero(opens | closes)
        # Quotes before each structural char decide whether it is inside a string.
        q_before = np.searchsorted(real_q, struct)
        outside = (self.in_str + q_before) % 2 == 0
        struct = struct[outside]
        is_open = opens[struct]
        delta = np.where(is_open, 1, -1)
        depth_after = self.depth + np.cumsum(delta)
        depth_before = depth_after - delta
        char = a[struct]
        base_abs = self.scanned

        # Containers opened at depth 1 -> 2: is each the "features" array?
        l1 = np.flatnonzero(is_open & (depth_before == 1))
        l1_pos = struct[l1]
        l1_flag = np.zeros(len(l1), dtype=bool)
        for j, (p, ch) in enumerate(zip(l1_pos.tolist(), char[l1].tolist(), strict=True)):
            if ch == 91:
                start = max(0, off + p - 64)
                l1_flag[j] = bool(_FEATURES_KEY.search(bytes(self.buf[start:off + p])))

        def flag_at(positions: np.ndarray) -> np.ndarray:
            j = np.searchsorted(l1_pos, positions) - 1
            return np.where(j >= 0, l1_flag[np.maximum(j, 0)] if len(l1_flag) else False, self.l2_features)

        f_open = np.flatnonzero(is_open & (char == 123) & (depth_before == 2))
        f_open = f_open[flag_at(struct[f_open])] if len(f_open) else f_open
        f_close = np.flatnonzero(~is_open & (char == 125) & (depth_after == 2))
        f_close = f_close[flag_at(struct[f_close])] if len(f_close) else f_close
        t_open = np.flatnonzero(is_open & (depth_before == 0))
        t_close = np.flatnonzero(~is_open & (depth_after == 0))
        features_l1 = l1_pos[l1_flag]

        features_abs = base_abs + features_l1
        f_starts = base_abs + struct[f_open]
        f_ends = base_abs + struct[f_close]
        if self.feat_start is not None:
            f_starts = np.r_[self.feat_start, f_starts]
        # Features never nest at the same depth, so the k-th end closes the k-th start.
        m = min(len(f_starts), len(f_ends))
        self.feat_start = int(f_starts[m]) if len(f_starts) > m else None
        t_starts = base_abs + struct[t_open]
        t_ends = base_abs + struct[t_close]
        carried_top = self.top_start is not None
        if carried_top:
            t_starts = np.r_[self.top_start, t_starts]
        k = min(len(t_starts), len(t_ends))
        # A top-level object holding a "features" array is a collection: its features were taken one by one.
        has_f = np.searchsorted(features_abs, t_ends[:k]) > np.searchsorted(features_abs, t_starts[:k])
        if carried_top and k and self.top_has_features:
            has_f[0] = True
        if len(t_starts) > k:
            open_start = int(t_starts[k])
            self.top_has_features = bool(
                (carried_top and k == 0 and self.top_has_features)
                or np.searchsorted(features_abs, open_start) < len(features_abs))
            self.top_start = open_start
        else:
            self.top_start, self.top_has_features = None, False
        starts = np.r_[f_starts[:m], t_starts[:k][~has_f]].astype(np.int64)
        ends = np.r_[f_ends[:m], t_ends[:k][~has_f]].astype(np.int64)
        order = np.argsort(starts, kind="stable")
        buf, b = self.buf, self.base
        self.pending.extend(bytes(buf[s - b:e + 1 - b])
                            for s, e in zip(starts[order].tolist(), ends[order].tolist(), strict=True))

        # Carry the scan state to the next piece.
        if len(depth_after):
            self.depth = int(depth_after[-1])
        self.in_str = (self.in_str + len(real_q)) % 2
        trailing = n - 1 - int(last_non_bs[-1])
        self.tail_bs = trailing + (self.tail_bs if last_non_bs[-1] < 0 else 0)
        if len(l1):
            self.l2_features = bool(l1_flag[-1])
        self.scanned = self.base + len(self.buf)
        keep_from = len(self.buf) - 64
        for start in (self.feat_start, self.top_start if not self.top_has_features else None):
            if start is not None:
                keep_from = min(keep_from, start - self.base)
        keep_from = max(keep_from, 0)
        if keep_from:
            del self.buf[:keep_from]
            self.base += keep_from

    def _parse(self, texts: Sequence[bytes]) -> PointChunk:
        with paused_gc():
            return self._parse_texts(texts)

    def _parse_texts(self, texts: Sequence[bytes]) -> PointChunk:
        n = len(texts)
        lon = np.full(n, np.nan)
        lat = np.full(n, np.nan)
        ids: list = [None] * n
        errors: dict[int, str] = {}
        try:  # one parse for the whole chunk; a bad feature sends us to one parse per feature
            objs = orjson.loads(b"[" + b",".join(texts) + b"]")
            if len(objs) != n:
                raise ValueError("feature count changed")
        except (orjson.JSONDecodeError, ValueError):
            objs = []
            for i, raw in enumerate(texts):
                try:
                    objs.append(orjson.loads(raw))
                except orjson.JSONDecodeError as exc:
                    objs.append(None)
                    errors[i] = f"not valid JSON: {str(exc)[:120]}"
        number = (int, float)
        for i, obj in enumerate(objs):
            try:  # the common case, checked strictly but cheaply; anything else gets the detailed diagnosis
                g = obj["geometry"]
                c = g["coordinates"]
                x, y = c[0], c[1]
                if obj["type"] == "Feature" and g["type"] == "Point" and type(x) in number and type(y) in number:
                    lon[i], lat[i] = x, y
                    fid = obj.get("id")
                    if fid is None:
                        props = obj.get("properties")
                        fid = props.get("id") if isinstance(props, dict) else None
                    ids[i] = fid
                    continue
            except (KeyError, TypeError, IndexError):
                pass
            if i in errors:
                continue
            if isinstance(obj, dict):
                props = obj.get("properties")
                ids[i] = obj.get("id", props.get("id") if isinstance(props, dict) else None)
            try:
                lon[i], lat[i], ids[i] = _point_of(obj)
            except ValueError as exc:
                errors[i] = str(exc)
        rows = np.arange(self.next_row, self.next_row + n, dtype=np.int64)
        self.next_row += n
        return PointChunk(rows, lon, lat, ids, errors)


def _point_of(obj) -> tuple[float, float, object]:
    if not isinstance(obj, dict):
        raise ValueError("expected a GeoJSON Feature object")
    kind = obj.get("type")
    if kind == "Feature":
        geom = obj.get("geometry")
        props = obj.get("properties")
        fid = obj.get("id")
        if fid is None and isinstance(props, dict):
            fid = props.get("id")
    elif kind == "Point":
        geom, fid = obj, None
    else:
        raise ValueError(f"expected a Feature, got type {kind!r}")
    if not isinstance(geom, dict):
        raise ValueError("the feature has no geometry")
    if geom.get("type") != "Point":
        raise ValueError(f"the geometry is a {geom.get('type')}, not a Point")
    c = geom.get("coordinates")
    if not isinstance(c, list) or len(c) < 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          for v in c[:2]):
        raise ValueError("Point coordinates must be [lon, lat] numbers")
    return float(c[0]), float(c[1]), fid


#: The input formats a batch is read in, by name (the HTTP layer maps media types to them).
INPUT_FORMATS = ("csv", "geojson")


def make_reader(fmt: str, max_rows: int) -> CsvReader | GeoJsonReader:
    """The incremental reader for input format `fmt`: "csv" (lon,lat[,id] with a header) or "geojson" (a
    FeatureCollection or a sequence of Features)."""
    if fmt == "csv":
        return CsvReader(max_rows)
    if fmt == "geojson":
        return GeoJsonReader(max_rows)
    raise ValueError(f"unknown batch input format {fmt!r}; expected one of {INPUT_FORMATS}")


# ---------------------------------------------------------------------------------------------- output

CSV_COLUMNS = (
    "row", "id", "street_code", "street_name", "community_code", "community_name", "grid_id",
    "grid_code", "grid_name", "micro_grid_code", "micro_grid_name", "compound_id", "compound_name",
    "building_id", "building_code", "building_name", "match", "distance_m", "version_id", "staff",
    "also_covered_by", "reason", "nearest_grid_code", "nearest_distance_m", "error",
)
#: Position of the grid among LEVEL_KEYS (its version is the answer's).
_GRID = LEVEL_KEYS.index("grid")
#: Per level, the record fields written as CSV columns (in CSV_COLUMNS order).
_CSV_FIELDS = {
    "street": ("code", "name"), "community": ("code", "name"), "grid": ("id", "code", "name"),
    "micro_grid": ("code", "name"), "compound": ("id", "name"), "building": ("id", "code", "name"),
}
_STAFF_TARGET = {"grid": "grid", "micro_grid": "micro_grid", "building": "building"}
#: (position in LEVEL_KEYS, level) of the levels whose staff are listed, in answer order.
_STAFF_LEVELS = tuple((LEVEL_KEYS.index(k), k) for k in ("grid", "micro_grid", "building"))


def _csv_field(value) -> str:
    if value is None:
        return ""
    s = str(value)
    if any(c in s for c in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'
    return s


def _csv_texts(values: list) -> list[str]:
    """CSV field texts of many values: plain str() unless some value needs quoting (checked in one scan)."""
    texts = ["" if v is None else v if type(v) is str else str(v) for v in values]
    joined = "".join(texts)
    if any(c in joined for c in ',"\n\r'):
        return [_csv_field(t) for t in texts]
    return texts


def _json(value) -> str:
    return orjson.dumps(value).decode()


def _json_bytes(value) -> bytes:
    return orjson.dumps(value)


_POWERS_OF_10 = 10 ** np.arange(1, 19, dtype=np.int64)


def number_texts(values: np.ndarray) -> list[bytes]:
    """Decimal texts (ASCII bytes) of integers, made with numpy digit arithmetic rather than one str() each."""
    v = np.asarray(values, dtype=np.int64)
    if len(v) == 0:
        return []
    if int(v.min()) < 0:
        return [b"%d" % x for x in v.tolist()]
    width = np.searchsorted(_POWERS_OF_10, v, side="right") + 1
    lo, hi = int(width.min()), int(width.max())
    if lo == hi:
        return _digits(v, lo)
    out = np.empty(len(v), dtype=object)
    for w in range(lo, hi + 1):
        idx = np.flatnonzero(width == w)
        if len(idx):
            out[idx] = _digits(v[idx], w)
    return out.tolist()


def _digits(part: np.ndarray, w: int) -> list[bytes]:
    """Decimal texts of non-negative integers that all have `w` digits."""
    text = np.empty((len(part), w + 1), dtype=np.uint8)
    d = part.astype(np.uint64)
    for j in range(w - 1, -1, -1):  # division by a scalar: numpy's fast constant-divisor path
        q = d // 10
        text[:, j] = d - q * 10 + 48
        d = q
    text[:, w] = 10
    texts = text.tobytes().split(b"\n")
    texts.pop()
    return texts


class BatchFormatter:
    """Renders located chunks as CSV or JSON lines; unit and staff fragments are built once per unit."""

    def __init__(self, index: LocateIndex, fmt: str, *, version: dict | None, staff: StaffDirectory | None,
                 staff_day, covers=None, accuracy_m: float | None = None):
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"unknown output format {fmt!r}")
        self.index = index
        self.fmt = fmt
        # Each answer carries its grid's version; this one (the version in force) only when the index knows none.
        self.version_id = version["id"] if version else None
        self.version_text = "" if self.version_id is None else str(self.version_id)
        self.accuracy_m = accuracy_m
        self.staff = staff
        self.staff_day = staff_day
        self.covers = covers or (lambda code: False)
        self._frag: dict[str, list[str]] = {}
        self._staff_frag: dict[tuple[str, bool], dict[int, str]] = {}
        self._combos: dict[tuple, tuple[str, str, str, str]] = {}
        self._tails: dict[str, dict[Any, bytes]] = {}  # by the text before the units: whole line tails per combo
        grid = index.levels["grid"]
        codes = [r["code"] for r in grid.records]
        # Phones beyond the public notice board are shown where the caller's jurisdiction covers the grid.
        self.grid_covered = np.array([bool(self.covers(c)) for c in codes] + [False], dtype=bool)
        for key in LEVEL_KEYS:
            self._frag[key] = self._level_fragments(key)
        # Radixes of the combination key (unit positions + 1 per level, then match * 2 + phone visibility), when
        # their product fits in an int64 (it does up to some thousands of buildings times the other levels).
        radix = [len(index.levels[k]) + 1 for k in LEVEL_KEYS] + [8]
        self._radix = radix if math.prod(radix) < 2**62 else None

    def header(self) -> str:
        """The CSV header line ('' for JSON lines)."""
        return ",".join(CSV_COLUMNS) + "\n" if self.fmt == "csv" else ""

    def _level_fragments(self, key: str) -> list[str]:
        records = self.index.levels[key].records
        if self.fmt == "csv":
            fields = _CSV_FIELDS[key]
            items = [",".join(_csv_field(r.get(f)) for f in fields) for r in records]
            items.append("," * (len(fields) - 1))
        else:
            # id, code and name: the level's other attributes are one GET /v1/locate away.
            items = [f'"{key}":{_json({"id": r["id"], "code": r["code"], "name": r["name"]})}' for r in records]
            items.append(f'"{key}":null')
        return items  # position -1 (no unit) picks the trailing empty fragment

    def _staff_text(self, key: str, pos: int, full: bool) -> str:
        """Staff of one unit as CSV text or JSON array items (cached per unit and phone visibility)."""
        if self.staff is None or pos < 0:
            return ""
        cache = self._staff_frag.get((key, full))
        if cache is None:
            cache = self._staff_frag[(key, full)] = {}
        text = cache.get(pos)
        if text is None:
            people = self.staff.staff([(key, self.index.levels[key].records[pos]["id"])], self.staff_day, full)
            if self.fmt == "csv":
                text = "; ".join(" ".join(x for x in (s["role_name"] or s["role"], s["name"], s["phone"]) if x)
                                 for s in people)
            else:
                text = ",".join(_json({"name": s["name"], "role": s["role"], "role_name": s["role_name"],
                                       "target_type": s["target_type"], "phone": s["phone"]}) for s in people)
            cache[pos] = text
        return text

    def _version_text(self, grid_pos: int) -> str:
        """The answering grid's boundary version id as text ('' when there is no grid)."""
        if grid_pos < 0:
            return ""
        v = self.index.levels["grid"].records[grid_pos].get("version_id")
        return self.version_text if v is None else str(v)

    def _combination(self, pos: Sequence[int], match: int, full: bool) -> tuple[str, str, str, str]:
        """The text before and after the distance for one combination of units (positions in LEVEL_KEYS order),
        match and phone visibility, and its version and staff texts (for answers with more to say)."""
        frags = [self._frag[k][p] for k, p in zip(LEVEL_KEYS, pos, strict=True)]
        staff = [self._staff_text(k, pos[i], full) for i, k in _STAFF_LEVELS]
        name = MATCH_NAMES[match]
        version = self._version_text(int(pos[_GRID]))
        people = ("; " if self.fmt == "csv" else ",").join(s for s in staff if s)
        if self.fmt == "csv":
            before = ",".join(frags) + f",{name or ''},"
        else:
            before = ",".join(frags) + f',"match":{_json(name)},"distance_m":'
        return before, self._after(version, people), version, people

    def _after(self, version: str, people: str, also: list[dict] | None = None, reason: str | None = None,
               nearest: dict | None = None, nearest_m: float | None = None) -> str:
        """The text after the distance: version, staff, the other grids covering the point, and for a point with no
        grid the reason and the nearest grid."""
        if self.fmt == "csv":
            also_text = ";".join(g["code"] or "" for g in also or ())
            near = (nearest or {}).get("code") or ""
            near_m = "" if nearest_m is None else repr(round(float(nearest_m), 3))
            return (f",{version},{_csv_field(people)},{also_text},{_csv_field(reason)},{near},{near_m},")
        extra = ""
        if also:
            extra += f',"also_covered_by":{_json(also)}'
        if reason is not None:
            extra += f',"reason":{_json(reason)}'
            extra += (f',"nearest":{_json({"grid": nearest, "distance_m": round(float(nearest_m), 3)})}'
                      if nearest is not None and nearest_m is not None else ',"nearest":null')
        return f',"version_id":{version or "null"},"staff":[{people}]{extra}}}'

    def _extras(self, batch: LocateBatch, i: int) -> tuple[list[dict] | None, str | None, dict | None,
                                                           float | None]:
        """For answer `i` of a batch: the other grids covering it, and when it has no grid, why and the nearest."""
        grids = self.index.levels["grid"]
        also = [self.index.brief(grids.records[p]) for p in batch.also.get(i, ())] or None
        if batch.match[i] != MATCH_NONE:
            return also, None, None, None
        near_pos = batch.nearest_pos[i] if batch.nearest_pos is not None else -1
        near = grids.records[int(near_pos)] if near_pos >= 0 else None
        near_m = float(batch.nearest_m[i]) if near is not None and batch.nearest_m is not None else None
        brief = self.index.brief(near) if near is not None else None
        return also, unanswered(brief, near_m, self.accuracy_m), brief, near_m

    def render(self, chunk: PointChunk, batch: LocateBatch | None, valid: np.ndarray) -> bytes:
        """Output for a chunk (UTF-8 bytes): every row in input order, errors in place."""
        with paused_gc():
            return self._render(chunk, batch, valid)

    def _combo_keys(self, values: list[np.ndarray]) -> tuple[np.ndarray, list, np.ndarray]:
        """Number the rows' combinations of (unit positions, match and phone visibility): (code per row, a key per
        code that is stable across chunks, a row holding each code)."""
        n = len(values[0])
        if self._radix is not None:
            # One mixed-radix integer per row identifies the combination exactly: one hash factorisation.
            key = np.zeros(n, dtype=np.int64)
            for v, r in zip(values, self._radix, strict=True):
                key *= r
                key += v + 1
            codes, uniques = pd.factorize(key, sort=False)
            keys = uniques.tolist()
        else:
            codes = np.zeros(n, dtype=np.int64)
            for v in values:
                codes, _ = pd.factorize(codes * (int(v.max()) + 2) + (v + 1), sort=False)
                codes = codes.astype(np.int64)
            keys = None
        rep = np.empty(int(codes.max()) + 1 if n else 0, dtype=np.int64)
        rep[codes] = np.arange(n)  # any row of a combination will do: they all hold the same values
        if keys is None:
            keys = list(map(tuple, np.column_stack([v[rep] for v in values]).tolist()))
        return codes, keys, rep

    def _render(self, chunk: PointChunk, batch: LocateBatch | None, valid: np.ndarray) -> bytes:
        n = len(chunk)
        if n == 0:
            return b""
        pos = {k: np.full(n, NONE, dtype=np.int64) for k in LEVEL_KEYS}
        match = np.zeros(n, dtype=np.int64)
        dist = np.full(n, np.nan)
        if batch is not None and len(valid):
            for k in LEVEL_KEYS:
                pos[k][valid] = batch.pos[k]
            match[valid] = batch.match
            dist[valid] = batch.distance_m
        full = self.grid_covered[pos["grid"]].astype(np.int64)  # index -1 picks the trailing False
        # A million rows share a few thousand (units, match, phone visibility) combinations: render each once
        # (cached across chunks), then each row is its row number and one cached byte string.
        codes, keys, rep = self._combo_keys([*(pos[k] for k in LEVEL_KEYS), match * 2 + full])
        csv_out = self.fmt == "csv"
        ids = chunk.ids
        # What follows the row number when the input has no ids: an empty id column, or "id":null.
        no_id = ",," if csv_out else ',"id":null,'
        tail_pre = no_id if ids is None else ","
        # Inside, boundary and no match have a fixed distance text, so most rows are head + one cached string.
        fixed = ("" if csv_out else "null", "0", "0", "")
        tail_cache = self._tails.setdefault(tail_pre, {})
        texts = [tail_cache.get(k) for k in keys]
        if None in texts:
            miss = [j for j, t in enumerate(texts) if t is None]
            rows_of = rep[miss]
            values = np.column_stack([*(pos[k][rows_of] for k in LEVEL_KEYS), match[rows_of], full[rows_of]])
            for j, v in zip(miss, values.tolist(), strict=True):
                part = self._part(keys[j], v[:6], v[6], bool(v[7]))
                texts[j] = tail_cache[keys[j]] = (tail_pre + part[0] + fixed[v[6]] + part[1] + "\n").encode()
        # Each line is a few slots of one flat list joined once: (the JSON lead,) the row number, (the id,) and the
        # combination's bytes ending in the newline; row numbers are made by numpy digit arithmetic.
        whole = np.empty(len(texts), dtype=object)
        whole[:] = texts
        tails = whole[codes].tolist()
        for i in np.flatnonzero(match == MATCH_NEAREST).tolist():
            b, a, _, _ = self._combos[keys[codes[i]]]
            tails[i] = (tail_pre + b + repr(round(float(dist[i]), 3)) + a + "\n").encode()
        if batch is not None and len(valid):
            # Answers with more to say (in an overlap; no grid at all): rare, so one line each.
            special = set(batch.also) | set(np.flatnonzero(batch.match == MATCH_NONE).tolist())
            for j in sorted(special):
                i = int(valid[j])
                if i in chunk.errors:
                    continue
                b, _, version, people = self._combos[keys[codes[i]]]
                d = dist[i]
                d_text = fixed[match[i]] if match[i] != MATCH_NEAREST else repr(round(float(d), 3))
                tails[i] = (tail_pre + b + d_text + self._after(version, people, *self._extras(batch, j))
                            + "\n").encode()
        rows = chunk.rows
        numbers = number_texts(rows)
        if ids is None:
            heads = [numbers] if csv_out else [[b'{"row":'] * n, numbers]
        elif csv_out:
            heads = [numbers, [b","] * n, [t.encode() for t in _csv_texts(ids)]]
        else:
            heads = [[b'{"row":'] * n, numbers, [b',"id":'] * n, list(map(_json_bytes, ids))]
        width = len(heads)
        out = [b""] * ((width + 1) * n)
        for j, column in enumerate(heads):
            out[j::width + 1] = column
        out[width::width + 1] = tails
        if chunk.errors:
            row_list = rows.tolist()
            for i, msg in chunk.errors.items():
                idv = ids[i] if ids is not None else None
                at = (width + 1) * i
                out[at:at + width + 1] = [b""] * (width + 1)
                out[at] = (f"{row_list[i]},{_csv_field(idv)}{',' * (len(CSV_COLUMNS) - 2)}{_csv_field(msg)}\n"
                           if csv_out else _json({"row": row_list[i], "id": idv, "error": msg}) + "\n").encode()
        return b"".join(out)

    def _part(self, key, pos: Sequence[int], match: int, full: bool) -> tuple[str, str]:
        part = self._combos.get(key)
        if part is None:
            part = self._combos[key] = self._combination(pos, match, full)
        return part[0], part[1]

    def error_line(self, row: int, msg: str) -> str:
        """A line reporting an error at `row` (no unit columns)."""
        if self.fmt == "csv":
            return f"{row},{',' * (len(CSV_COLUMNS) - 2)}{_csv_field(msg)}\n"
        return _json({"row": row, "error": msg}) + "\n"

    def limit_line(self, row: int, max_rows: int) -> str:
        """The line reporting that the row limit stopped the batch at `row`."""
        return self.error_line(row, f"the batch limit is {max_rows:,} points; row {row} and any after it were "
                                    "not located")


def truncate(chunk: PointChunk, n: int) -> PointChunk:
    """The first n rows of a chunk."""
    return PointChunk(chunk.rows[:n], chunk.lon[:n], chunk.lat[:n], None if chunk.ids is None else chunk.ids[:n],
                      {i: m for i, m in chunk.errors.items() if i < n})


def locate_chunk(index: LocateIndex, chunk: PointChunk, coordsys: str,
                 accuracy_m: float) -> tuple[PointChunk, LocateBatch | None, np.ndarray]:
    """Convert, check and locate one chunk of rows: (the chunk with its bad rows' errors, the answers for the valid
    rows or None, positions of the valid rows), ready for `BatchFormatter.render`."""
    lon, lat = chunk.lon, chunk.lat
    ok = np.isfinite(lon) & np.isfinite(lat)
    if coordsys not in WGS84_LIKE:
        # Range first: a conversion of out-of-range numbers is meaningless.
        for i, msg in range_errors(lon, lat, None).items():
            chunk.errors.setdefault(i, msg)
        lon, lat = to_wgs84(lon, lat, coordsys)
    for i, msg in range_errors(lon, lat, index.bounds).items():
        chunk.errors.setdefault(i, msg)
    if chunk.errors:
        ok[list(chunk.errors)] = False
    valid = np.flatnonzero(ok)
    # nearest_beyond: an unanswered point still names the nearest grid and how far it is, as a single answer does
    batch = index.locate_many(lon[valid], lat[valid], accuracy_m, nearest_beyond=True) if len(valid) else None
    return chunk, batch, valid


class BatchRows:
    """The rows of one batch as its body arrives, in input order: parsed chunks (cut at the row limit) and lines
    already final (bytes: the rest of the input unreadable, the limit reached). The HTTP layer feeds it and
    drains `items`."""

    def __init__(self, reader: CsvReader | GeoJsonReader, formatter: BatchFormatter, max_points: int):
        self.reader = reader
        self.formatter = formatter
        self.max_points = max_points
        self.items: deque[PointChunk | bytes] = deque()
        self.done = 0
        self.stopped = False

    @property
    def started(self) -> bool:
        """Whether the input's shape is known (a header read, a GeoJSON document begun)."""
        return self.reader.started

    def start(self, data: bytes | None) -> None:
        """Bytes from the start of the body (None: the body ended); `BatchInputError` when the input cannot be read
        at all, so it is refused before any answer is sent."""
        self._keep(self.reader.feed(data) if data is not None else self.reader.close())

    def take(self, data: bytes | None) -> None:
        """More bytes (None: the body ended); an unreadable rest becomes one error line and stops the batch."""
        if self.stopped:
            return
        try:
            chunks = self.reader.feed(data) if data is not None else self.reader.close()
        except BatchInputError as exc:
            self.items.append(self.formatter.error_line(
                self.reader.next_row, f"the rest of the input cannot be read: {exc}").encode())
            self.stopped = True
            return
        self._keep(chunks)

    def _keep(self, chunks: Iterable[PointChunk]) -> None:
        for chunk in chunks:
            if self.stopped:
                break
            room = self.max_points - self.done
            if len(chunk) > room:
                chunk = truncate(chunk, room)
                self.stopped = True
            if len(chunk):
                self.items.append(chunk)
                self.done += len(chunk)
            if self.stopped:
                self.items.append(self.formatter.limit_line(self.done + 1, self.max_points).encode())
