"""OGC API Features (Part 1 Core, GeoJSON, HTML; Part 2 CRS) at `/ogc`, so GIS clients (QGIS, GDAL's OAPIF
driver, ArcGIS) add the district's layers directly: streets, communities, grids, micro-grids, compounds, buildings
and incidents.

Every request needs credentials (bearer token, API key or the login cookie) and sees only the caller's
jurisdiction. `datetime` (an instant, a date or an interval) or `at` picks the boundary version; `crs` and
`bbox-crs` take CRS84 (default), EPSG:4326, EPSG:4490 (CGCS2000) or EPSG:3857. The queries are geo.features'.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from api.auth import CurrentUser
from api.deps import ReadSessionDep, SettingsDep
from api.problems import problem_responses
from api.schemas.features import (
    CollectionInfo,
    Collections,
    Conformance,
    Extent,
    LandingPage,
    Link,
    OgcFeature,
    OgcFeatureCollection,
    Queryables,
)
from geo.access.users import Principal
from geo.features import items as fi
from geo.features.collections import COLLECTIONS, Collection, get_collection
from geo.features.crs import CRS84, crs_uris, resolve
from geo.features.errors import InvalidFeatureQuery

router = APIRouter(tags=["ogc-features"])

GEOJSON = "application/geo+json"


def _geojson_or_html(model: str) -> dict:
    """OpenAPI content of an answer given as GeoJSON (the named model) or as an HTML page (`f=html`)."""
    return {GEOJSON: {"schema": {"$ref": f"#/components/schemas/{model}"}},
            "text/html": {"schema": {"type": "string"}}}
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
]
#: Query parameters every items request may carry besides property filters.
ITEM_PARAMS = frozenset({"f", "limit", "offset", "bbox", "bbox-crs", "crs", "datetime", "at"})

Format = Annotated[Literal["json", "html", "geojson"] | None,
                   Query(description="json (default for programs) or html (default for browsers)")]
Datetime = Annotated[str | None, Query(description="an instant or date (boundaries in force then) or an interval "
                                                   "a/b with .. for an open end (every version in force in it)")]
At = Annotated[str | None, Query(description="as elsewhere in the service: boundaries in force on this date "
                                             "(YYYY-MM-DD) or instant")]
CollectionId = Annotated[str, Path(description="streets, communities, grids, micro_grids, compounds, buildings, "
                                               "incidents")]


def _scope(principal: Principal) -> str | None:
    return None if principal.unrestricted else principal.jurisdiction_code


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


def _wants_html(request: Request, f: str | None) -> bool:
    if f is not None:
        return f == "html"
    return request.headers.get("accept", "").split(",")[0].strip().startswith("text/html")


def _json(body: dict, media_type: str = "application/json", headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), media_type=media_type, headers=headers)


def _html(kind: str, body: dict, request: Request) -> HTMLResponse:
    from maps.ogc import render_ogc_page

    return HTMLResponse(render_ogc_page(kind, body, str(request.url.path)))


def _self_links(request: Request, title: str, alternate: str = "application/json") -> list[Link]:
    url = str(request.url.remove_query_params("f"))
    sep = "&" if "?" in url else "?"
    return [Link(href=url, rel="self", type=alternate, title=title),
            Link(href=f"{url}{sep}f=html", rel="alternate", type="text/html", title=f"{title}（网页）")]


def _collection_info(c: Collection, base: str, extent: dict | None) -> CollectionInfo:
    items = f"{base}/collections/{c.id}/items"
    links = [Link(href=f"{base}/collections/{c.id}", rel="self", type="application/json", title=c.title),
             Link(href=items, rel="items", type=GEOJSON, title=f"{c.title}要素"),
             Link(href=f"{items}?f=html", rel="items", type="text/html", title=f"{c.title}要素（网页）"),
             Link(href=f"{base}/collections/{c.id}/queryables", rel="http://www.opengis.net/def/rel/ogc/1.0/queryables",
                  type="application/schema+json", title="可查询属性")]
    ext = None
    if extent is not None:
        ext = Extent(spatial={"bbox": [extent["bbox"]] if extent["bbox"] else [], "crs": CRS84},
                     temporal={"interval": [extent["interval"]], "trs":
                               "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"} if extent["interval"] else None)
    return CollectionInfo(id=c.id, title=c.title, description=c.description, links=links, extent=ext,
                          crs=crs_uris())


@router.get("/ogc", response_model=LandingPage, responses=problem_responses(401))
def landing(principal: CurrentUser, request: Request, f: Format = None):
    """The landing page: links to the API definition, the conformance declaration and the collections."""
    base = _base(request)
    root = str(request.base_url).rstrip("/")
    body = LandingPage(
        title="GridAtlas 网格要素服务 (OGC API Features)",
        description="街道、社区、网格、微网格、小区、楼栋与网格事件，按您的辖区提供；datetime/at 选择边界版本。",
        links=[*_self_links(request, "本页"),
               Link(href=f"{root}/openapi.json", rel="service-desc",
                    type="application/vnd.oai.openapi+json;version=3.0", title="API 定义"),
               Link(href=f"{root}/docs", rel="service-doc", type="text/html", title="API 文档"),
               Link(href=f"{base}/conformance", rel="conformance", type="application/json", title="符合性声明"),
               Link(href=f"{base}/collections", rel="data", type="application/json", title="要素集合")],
    ).model_dump(exclude_none=True)
    return _html("landing", body, request) if _wants_html(request, f) else _json(body)


@router.get("/ogc/conformance", response_model=Conformance, responses=problem_responses(401))
def conformance(principal: CurrentUser, request: Request, f: Format = None):
    """The conformance classes implemented."""
    body = {"conformsTo": CONFORMANCE}
    return _html("conformance", body, request) if _wants_html(request, f) else _json(body)


@router.get("/ogc/collections", response_model=Collections, responses=problem_responses(401))
def collections(principal: CurrentUser, session: ReadSessionDep, settings: SettingsDep, request: Request,
                f: Format = None):
    """Every collection with its extent within your jurisdiction and the CRSs it is offered in."""
    base = _base(request)
    conn = session.connection()
    scope = _scope(principal)
    body = Collections(
        links=_self_links(request, "要素集合"),
        collections=[_collection_info(c, base, fi.extent(conn, c, scope, settings.timezone))
                     for c in COLLECTIONS.values()],
    ).model_dump(exclude_none=True)
    return _html("collections", body, request) if _wants_html(request, f) else _json(body)


@router.get("/ogc/collections/{collection_id}", response_model=CollectionInfo, responses=problem_responses(401, 404))
def collection(principal: CurrentUser, session: ReadSessionDep, settings: SettingsDep, request: Request,
               collection_id: CollectionId, f: Format = None):
    """One collection: title, extent within your jurisdiction, CRSs, links to its items."""
    c = get_collection(collection_id)
    ext = fi.extent(session.connection(), c, _scope(principal), settings.timezone)
    body = _collection_info(c, _base(request), ext).model_dump(exclude_none=True)
    return _html("collection", body, request) if _wants_html(request, f) else _json(body)


@router.get("/ogc/collections/{collection_id}/queryables", response_model=Queryables,
            responses=problem_responses(401, 404))
def queryables(principal: CurrentUser, request: Request, collection_id: CollectionId):
    """The properties `?name=value` filters on (JSON Schema)."""
    c = get_collection(collection_id)
    props = {p.name: {"type": p.type, "title": p.title or p.name} for p in c.queryables()}
    body = {"$schema": "https://json-schema.org/draft/2019-09/schema",
            "$id": f"{_base(request)}/collections/{c.id}/queryables", "type": "object", "title": c.title,
            "properties": props}
    return _json(body, "application/schema+json")


def _crs_headers(crs_uri: str) -> dict[str, str]:
    return {"Content-Crs": f"<{crs_uri}>"}


@router.get("/ogc/collections/{collection_id}/items", response_model=OgcFeatureCollection,
            responses={200: {"content": _geojson_or_html("OgcFeatureCollection")}, **problem_responses(400, 401, 404)})
def items(
    principal: CurrentUser,
    session: ReadSessionDep,
    settings: SettingsDep,
    request: Request,
    collection_id: CollectionId,
    f: Format = None,
    limit: Annotated[int | None, Query(description=f"features per page (1–{fi.MAX_LIMIT}, default "
                                                   f"{fi.DEFAULT_LIMIT})")] = None,
    offset: Annotated[int | None, Query(description="features to skip (the `next` link sets it)")] = None,
    bbox: Annotated[str | None, Query(description="minx,miny,maxx,maxy in bbox-crs (CRS84 by default)")] = None,
    bbox_crs: Annotated[str | None, Query(alias="bbox-crs", description="CRS of bbox")] = None,
    crs: Annotated[str | None, Query(description="CRS of the answer: " + ", ".join(crs_uris()))] = None,
    datetime: Datetime = None,
    at: At = None,
):
    """A page of features in your jurisdiction; `?property=value` filters on the collection's queryables."""
    c = get_collection(collection_id)
    extra = {k: v for k, v in request.query_params.items() if k not in ITEM_PARAMS}
    unknown = [k for k in extra if c.prop(k) is None or not c.prop(k).queryable]  # type: ignore[union-attr]
    if unknown:
        raise InvalidFeatureQuery(f"unknown query parameter(s) {', '.join(unknown)}; the queryables of {c.id} are "
                                  f"{', '.join(p.name for p in c.queryables())}")
    lim, off = fi.check_limit(limit, offset)
    out_crs = resolve(crs)
    bbox_srid = resolve(bbox_crs, "bbox-crs").srid
    q = fi.Query(c, fi.parse_when(datetime, at, settings.timezone), _scope(principal),
                 fi.parse_bbox(bbox, bbox_crs), bbox_srid, fi.parse_filters(c, extra), lim, off, out_crs,
                 settings.timezone)
    page = fi.items(session.connection(), q)
    feats = page["features"]
    links = _self_links(request, f"{c.title}要素", GEOJSON)
    if off + len(feats) < page["number_matched"]:
        links.append(Link(href=str(request.url.include_query_params(offset=off + lim, limit=lim)), rel="next",
                          type=GEOJSON, title="下一页"))
    if off > 0:
        links.append(Link(href=str(request.url.include_query_params(offset=max(0, off - lim), limit=lim)),
                          rel="prev", type=GEOJSON, title="上一页"))
    links.append(Link(href=f"{_base(request)}/collections/{c.id}", rel="collection", type="application/json",
                      title=c.title))
    from datetime import UTC
    from datetime import datetime as _dt

    body = {"type": "FeatureCollection", "features": feats, "numberMatched": page["number_matched"],
            "numberReturned": len(feats), "timeStamp": _dt.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "links": [link.model_dump(exclude_none=True) for link in links]}
    if _wants_html(request, f):
        return _html("items", body | {"title": c.title, "collection": c.id, "offset": off}, request)
    return _json(body, GEOJSON, _crs_headers(out_crs.uri))


@router.get("/ogc/collections/{collection_id}/items/{feature_id}", response_model=OgcFeature,
            responses={200: {"content": _geojson_or_html("OgcFeature")}, **problem_responses(400, 401, 404)})
def item(principal: CurrentUser, session: ReadSessionDep, settings: SettingsDep, request: Request,
         collection_id: CollectionId, feature_id: Annotated[int, Path(ge=0, lt=2**63, description="the feature id")],
         f: Format = None,
         crs: Annotated[str | None, Query(description="CRS of the answer")] = None):
    """One feature (a boundary version for the unit levels), if it lies in your jurisdiction."""
    c = get_collection(collection_id)
    out_crs = resolve(crs)
    feat = fi.item(session.connection(), c, feature_id, fi.parse_when(None), _scope(principal), out_crs,
                   settings.timezone)
    base = _base(request)
    feat["links"] = [link.model_dump(exclude_none=True) for link in _self_links(request, c.title, GEOJSON)] + [
        {"href": f"{base}/collections/{c.id}", "rel": "collection", "type": "application/json", "title": c.title}]
    if _wants_html(request, f):
        return _html("item", {"title": c.title, "collection": c.id, **feat}, request)
    return _json(feat, GEOJSON, _crs_headers(out_crs.uri))
