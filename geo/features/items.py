"""OGC API Features queries: items of a collection (bbox, datetime, property filters, paging, CRS), one item,
a collection's extent. Set-based SQL; the bbox goes through the GiST index (``geom && envelope``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from geo.features.collections import Collection, When
from geo.features.crs import CRS84, Crs, resolve
from geo.features.errors import FeatureNotFound, InvalidFeatureQuery

#: OGC API Features paging: the default page and the most one page may hold.
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


# ------------------------------------------------------------------------------------------------ parameters

def _parse_instant(value: str, tz: str, end_of_day: bool) -> tuple[dt.datetime, bool]:
    """(aware datetime, was a bare date) of an RFC 3339 date-time or a date (start or end of that local day)."""
    v = value.strip()
    try:
        if "T" in v or "t" in v or " " in v:
            t = dt.datetime.fromisoformat(v.replace("z", "Z").replace("Z", "+00:00"))
            return (t if t.tzinfo else t.replace(tzinfo=ZoneInfo(tz))), False
        d = dt.date.fromisoformat(v)
    except ValueError:
        raise InvalidFeatureQuery(f"datetime: {value!r} is not an RFC 3339 date-time or a date (YYYY-MM-DD)") from None
    moment = dt.time.max if end_of_day else dt.time.min
    return dt.datetime.combine(d, moment, tzinfo=ZoneInfo(tz)), True


def parse_when(datetime: str | None, at: str | None = None, tz: str = "Asia/Shanghai") -> When:
    """The `datetime` parameter (an instant, a date, or an interval ``a/b`` with ``..`` open ends) or the service's
    usual `at` (a date or instant); now when both are absent. A date instant means the close of that day."""
    if datetime and at:
        raise InvalidFeatureQuery("give either datetime or at, not both")
    value = (datetime or at or "").strip()
    if not value:
        return When()
    if "/" in value:
        if at:
            raise InvalidFeatureQuery("at: an instant or a date, not an interval (use datetime=a/b)")
        a, _, b = value.partition("/")
        start = None if a.strip() in ("", "..") else _parse_instant(a, tz, False)[0]
        end = None if b.strip() in ("", "..") else _parse_instant(b, tz, True)[0]
        if start and end and start > end:
            raise InvalidFeatureQuery(f"datetime: the interval {value!r} ends before it starts")
        return When(start=start, end=end, interval=True)
    instant, day = _parse_instant(value, tz, True)
    start = _parse_instant(value, tz, False)[0] if day else None
    return When(instant=instant, start=start, end=instant if day else None, day=day)


def parse_bbox(value: str | None, bbox_crs: str | None = None) -> tuple[float, float, float, float] | None:
    """A bbox (minx,miny,maxx,maxy, or 6 numbers with heights) in `bbox_crs` as lon/lat in EPSG:4326 order, still
    in that CRS's units; the SRID transform happens in SQL. Latitude-first CRSs give lat,lon,lat,lon."""
    if value is None or not value.strip():
        if bbox_crs:
            raise InvalidFeatureQuery("bbox-crs without bbox")
        return None
    try:
        nums = [float(x) for x in value.split(",")]
    except ValueError:
        raise InvalidFeatureQuery(f"bbox: {value!r} is not four comma-separated numbers") from None
    if len(nums) == 6:
        nums = [nums[0], nums[1], nums[3], nums[4]]
    if len(nums) != 4 or not all(math.isfinite(n) for n in nums):
        raise InvalidFeatureQuery(f"bbox: {value!r} is not four (or six) finite numbers")
    crs = resolve(bbox_crs, "bbox-crs")
    if crs.lat_first:
        nums = [nums[1], nums[0], nums[3], nums[2]]
    x0, y0, x1, y1 = nums
    if y0 > y1:
        raise InvalidFeatureQuery(f"bbox: {value!r} has its lower corner above its upper one")
    if crs.srid in (4326, 4490) and (abs(y0) > 90 or abs(y1) > 90 or abs(x0) > 180 or abs(x1) > 180):
        raise InvalidFeatureQuery(f"bbox: {value!r} is not in degrees for {crs.uri}")
    return x0, y0, x1, y1


def check_limit(limit: int | None, offset: int | None) -> tuple[int, int]:
    """(limit, offset) checked: 1 ≤ limit ≤ MAX_LIMIT (default DEFAULT_LIMIT), offset ≥ 0."""
    limit = DEFAULT_LIMIT if limit is None else limit
    offset = offset or 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidFeatureQuery(f"limit: {limit} is not between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise InvalidFeatureQuery(f"offset: {offset} is negative")
    return limit, offset


def parse_filters(collection: Collection, params: dict[str, str]) -> dict[str, object]:
    """The property filters among query parameters (queryable names only), typed; others are left to the caller."""
    out: dict[str, object] = {}
    for name, raw in params.items():
        prop = collection.prop(name)
        if prop is None or not prop.queryable:
            continue
        if prop.type == "integer":
            try:
                out[name] = int(raw)
            except ValueError:
                raise InvalidFeatureQuery(f"{name}: {raw!r} is not an integer") from None
        elif prop.type == "boolean":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise InvalidFeatureQuery(f"{name}: {raw!r} is not true or false")
            out[name] = raw.lower() in ("true", "1")
        else:
            out[name] = raw
    return out


# --------------------------------------------------------------------------------------------------- queries

@dataclass(frozen=True)
class Query:
    """An items query on a collection, already checked."""

    collection: Collection
    when: When
    scope: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    bbox_srid: int = 4326
    filters: dict[str, object] | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    crs: Crs = resolve(CRS84)
    tz: str = "Asia/Shanghai"

    def where(self) -> tuple[str, dict]:
        """The WHERE clause (time, jurisdiction, bbox, filters) and its parameters."""
        c = self.collection
        w = self.when
        params: dict[str, object] = {"t": w.reference or dt.datetime.now(dt.UTC), "t0": w.start, "t1": w.end,
                                     "tz": self.tz}
        conds = c.time_conditions(w)
        scope_sql = c.scope_condition(self.scope)
        if scope_sql:
            conds.append(scope_sql)
            params["scope"] = self.scope
        if self.bbox:
            env = "ST_MakeEnvelope(:bx0, :by0, :bx1, :by1, :bsrid)"
            env = env if self.bbox_srid == 4326 else f"ST_Transform({env}, 4326)"
            conds.append(f"{c.geom} && {env}")
            conds.append(f"ST_Intersects({c.geom}, {env})")
            params |= dict(zip(("bx0", "by0", "bx1", "by1"), self.bbox, strict=True)) | {"bsrid": self.bbox_srid}
        for k, (name, value) in enumerate((self.filters or {}).items()):
            prop = c.prop(name)
            assert prop is not None
            conds.append(f"{prop.sql} = :f{k}")
            params[f"f{k}"] = value
        return " AND ".join(conds) or "TRUE", params


def _geometry_sql(geom: str, crs: Crs) -> str:
    out = geom if crs.srid == 4326 else f"ST_Transform({geom}, {crs.srid})"
    if crs.lat_first:
        out = f"ST_FlipCoordinates({out})"
    return f"CAST(ST_AsGeoJSON({out}, {crs.decimals}, 0) AS json)"


def _feature_sql(c: Collection, crs: Crs) -> str:
    props = ", ".join(f"'{p.name}', {p.sql}" for p in c.props)
    return (f"json_build_object('type', 'Feature', 'id', {c.fid}, 'geometry', {_geometry_sql(c.geom, crs)}, "
            f"'properties', json_build_object({props}))")


def items(conn: Connection, q: Query) -> dict:
    """{'features': [...], 'number_matched': n}: one page of the collection's features, in fid order."""
    c = q.collection
    where, params = q.where()
    rows = conn.execute(text(
        f"SELECT {_feature_sql(c, q.crs)} FROM {c.from_sql} WHERE {where} ORDER BY {c.fid} "
        "LIMIT :limit OFFSET :offset"), params | {"limit": q.limit, "offset": q.offset}).scalars().all()
    if len(rows) < q.limit and (q.offset == 0 or rows):
        matched = q.offset + len(rows)
    else:
        matched = conn.execute(text(f"SELECT count(*) FROM {c.from_sql} WHERE {where}"), params).scalar_one()
    return {"features": list(rows), "number_matched": int(matched)}


def item(conn: Connection, collection: Collection, fid: int, when: When, scope: str | None,
         crs: Crs | None = None, tz: str = "Asia/Shanghai") -> dict:
    """One feature by id; FeatureNotFound when it does not exist or lies outside the jurisdiction. For versioned
    collections the id is a boundary row's, so any version can be read (`when` only sets the reference time)."""
    q = Query(collection, When(instant=when.reference, interval=False), scope, crs=crs or resolve(CRS84), tz=tz)
    _, params = q.where()
    conds = [f"{collection.fid} = :fid"]
    scope_sql = collection.scope_condition(scope)
    if scope_sql:
        conds.append(scope_sql)
    row = conn.execute(text(f"SELECT {_feature_sql(collection, q.crs)} FROM {collection.from_sql} "
                            f"WHERE {' AND '.join(conds)}"), params | {"fid": fid}).scalar()
    if row is None:
        raise FeatureNotFound(f"there is no feature {fid} in {collection.id} (or it lies outside your jurisdiction)",
                              collection=collection.id, feature_id=fid)
    return row


def extent(conn: Connection, collection: Collection, scope: str | None, tz: str = "Asia/Shanghai") -> dict:
    """{'bbox': [minx, miny, maxx, maxy] | None, 'interval': [start, end] | None} of what the jurisdiction sees
    (every version of versioned collections)."""
    c = collection
    params: dict[str, object] = {"t": dt.datetime.now(dt.UTC), "tz": tz}
    conds = []
    scope_sql = c.scope_condition(scope)
    if scope_sql:
        conds.append(scope_sql)
        params["scope"] = scope
    if c.temporal == "versioned":
        times = (f"min({c.alias}.valid_from) AS t0, "
                 f"CASE WHEN bool_or({c.alias}.valid_to IS NULL) THEN NULL ELSE max({c.alias}.valid_to) END AS t1")
    elif c.temporal == "reported":
        times = f"min({c.alias}.reported_at) AS t0, max({c.alias}.reported_at) AS t1"
    else:
        times = "NULL AS t0, NULL AS t1"
    row = conn.execute(text(
        f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), t0, t1 FROM (SELECT ST_Extent({c.geom}) AS e, "
        f"{times} FROM {c.from_sql} WHERE {' AND '.join(conds) or 'TRUE'}) x"), params).one()
    bbox = [round(v, 7) for v in row[:4]] if row[0] is not None else None
    has_times = row[4] is not None or row[5] is not None
    interval = [v.isoformat() if v else None for v in row[4:]] if has_times else None
    return {"bbox": bbox, "interval": interval}
