"""Browse endpoints (浏览): `GET /v1/streets|communities|grids|micro_grids|compounds|buildings` (paged, searchable,
`at=` for the names and boundaries in force then), one unit by code (compounds and buildings by id) with its parents,
children, geometry and boundary versions, and `GET /v1/versions` (published plans, imports, rollbacks).

Lists show only the caller's jurisdiction; one unit outside it is refused (403, as every scoped route). The queries
are `geo.features.browse`'s.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from api.auth import CurrentUser, ScopedUser
from api.deps import ReadSessionDep, SettingsDep
from api.problems import problem_responses
from api.schemas.browse import BrowseLink, UnitDetail, UnitPage, VersionDetail, VersionPage
from geo.access.users import Principal
from geo.features import browse

router = APIRouter(tags=["browse"])

At = Annotated[str | None, Query(description="the units, names and boundaries in force on this date (YYYY-MM-DD, "
                                             "the close of that day) or instant (ISO 8601); default now")]
Limit = Annotated[int | None, Query(description=f"items per page (1–{browse.MAX_LIMIT}, default "
                                                f"{browse.DEFAULT_LIMIT})")]
Offset = Annotated[int | None, Query(description="items to skip (the `next` link sets it)")]
Code = Annotated[str, Path(pattern=r"^[0-9]{9,19}$", description="the unit's code")]
#: levels whose one-page summary exists at /summary/{code}
_SUMMARY_LEVELS = {"streets", "communities", "grids"}


def _scope(principal: Principal) -> str | None:
    return None if principal.unrestricted else principal.jurisdiction_code


def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _unit_links(root: str, item: dict) -> list[BrowseLink]:
    level = item["level"]
    key = item["code"] if level in browse.LEVELS and browse.LEVELS[level].versioned else str(item["id"])
    links = [BrowseLink(href=f"{root}/v1/{level}/{key}", rel="self", title=item["name"])]
    if item.get("feature_id") is not None:
        links.append(BrowseLink(href=f"{root}/ogc/collections/{level}/items/{item['feature_id']}", rel="alternate",
                                title="OGC API Features"))
    if level in _SUMMARY_LEVELS and item["code"]:
        links.append(BrowseLink(href=f"{root}/summary/{item['code']}", rel="describedby", title="一页纸概况"))
    return links


def _page_links(request: Request, offset: int, limit: int, shown: int, total: int) -> list[BrowseLink]:
    links = [BrowseLink(href=str(request.url), rel="self")]
    if offset + shown < total:
        links.append(BrowseLink(href=str(request.url.include_query_params(offset=offset + limit, limit=limit)),
                                rel="next", title="下一页"))
    if offset > 0:
        links.append(BrowseLink(href=str(request.url.include_query_params(offset=max(0, offset - limit),
                                                                          limit=limit)), rel="prev", title="上一页"))
    return links


def _version_links(root: str, item: dict) -> list[BrowseLink]:
    links = [BrowseLink(href=f"{root}/v1/versions/{item['id']}", rel="self", title=item["label"]),
             BrowseLink(href=f"{root}/v1/versions/{item['id']}/rollback", rel="rollback",
                        title="POST: 回滚此版本 (planners, If-Match)")]
    if item["plan_id"] is not None:
        links.append(BrowseLink(href=f"{root}/v1/plans/{item['plan_id']}", rel="plan", title="改划方案"))
        links.append(BrowseLink(href=f"{root}/v1/plans/{item['plan_id']}/diff", rel="diff", title="方案差异"))
    return links


def _list_route(level: str):
    title = browse.LEVELS[level].title

    def list_level(principal: CurrentUser, session: ReadSessionDep, settings: SettingsDep, request: Request,
                   q: Annotated[str | None, Query(description="a name fragment or a code prefix")] = None,
                   parent: Annotated[str | None, Query(description="a parent's code prefix (compounds, buildings: "
                                                                   "their community's)")] = None,
                   at: At = None,
                   bbox: Annotated[str | None, Query(description="minx,miny,maxx,maxy (WGS-84 lon/lat)")] = None,
                   limit: Limit = None, offset: Offset = None) -> UnitPage:
        page = browse.list_units(session.connection(), level, _scope(principal), at=at, q=q, parent=parent,
                                 bbox=bbox, limit=limit, offset=offset, tz=settings.timezone)
        root = _root(request)
        items = [dict(item, links=_unit_links(root, item)) for item in page["items"]]
        return UnitPage.model_validate(dict(page, items=items, links=_page_links(
            request, page["offset"], page["limit"], len(items), page["total"])))

    list_level.__doc__ = (f"{title}: a page of those in your jurisdiction in force at `at` (now), by code, with "
                          "name then, parent, area, households, boundary version and links.")
    return list_level


def _detail(level: str, key: str, principal: Principal, session, settings, request: Request, at: str | None,
            geometry: bool) -> UnitDetail:
    out = browse.unit(session.connection(), level, key, _scope(principal), at=at, geometry=geometry,
                      tz=settings.timezone)
    return UnitDetail.model_validate(dict(out, links=_unit_links(_root(request), out)))


def _code_route(level: str):
    title = browse.LEVELS[level].title

    def unit_by_code(code: Code,
                     principal: ScopedUser, session: ReadSessionDep, settings: SettingsDep, request: Request,
                     at: At = None,
                     geometry: Annotated[bool, Query(description="false: omit the geometry")] = True) -> UnitDetail:
        return _detail(level, code, principal, session, settings, request, at, geometry)

    unit_by_code.__doc__ = (f"One {title}: name and boundary at `at`, parents, children counts, geometry (GeoJSON) "
                            "and every boundary version (who, why).")
    return unit_by_code


_RESPONSES = problem_responses(401, 403, 404, 422)
for _level in ("streets", "communities", "grids", "micro_grids", "compounds", "buildings"):
    router.add_api_route(f"/v1/{_level}", _list_route(_level), methods=["GET"], response_model=UnitPage,
                         responses=problem_responses(401, 422), operation_id=f"browse_list_{_level}",
                         summary=f"List {_level}")
for _level in ("streets", "communities", "grids", "micro_grids"):
    router.add_api_route(f"/v1/{_level}/{{code}}", _code_route(_level), methods=["GET"], response_model=UnitDetail,
                         responses=_RESPONSES, operation_id=f"browse_get_{_level}", summary=f"One of {_level}")

Id = Annotated[int, Path(ge=1, lt=2**31)]


@router.get("/v1/compounds/{compound_id}", response_model=UnitDetail, responses=_RESPONSES,
            operation_id="browse_get_compounds")
def compound(compound_id: Id, principal: ScopedUser, session: ReadSessionDep, settings: SettingsDep,
             request: Request, at: At = None,
             geometry: Annotated[bool, Query(description="false: omit the geometry")] = True) -> UnitDetail:
    """One 小区: name, community, area, households, buildings, geometry (GeoJSON)."""
    return _detail("compounds", str(compound_id), principal, session, settings, request, at, geometry)


@router.get("/v1/buildings/{building_id}", response_model=UnitDetail, responses=_RESPONSES,
            operation_id="browse_get_buildings")
def building(building_id: Id, principal: ScopedUser, session: ReadSessionDep, settings: SettingsDep,
             request: Request, at: At = None,
             geometry: Annotated[bool, Query(description="false: omit the geometry")] = True) -> UnitDetail:
    """One 楼栋: name, compound, community, households, units, geometry (GeoJSON)."""
    return _detail("buildings", str(building_id), principal, session, settings, request, at, geometry)


@router.get("/v1/versions", response_model=VersionPage, responses=problem_responses(401, 422),
            operation_id="browse_list_versions")
def versions(principal: CurrentUser, session: ReadSessionDep, settings: SettingsDep, request: Request,
             unit: Annotated[str | None, Query(description="only versions that changed a unit whose code starts "
                                                           "with this")] = None,
             since: Annotated[str | None, Query(description="in force from this date or instant on")] = None,
             until: Annotated[str | None, Query(description="in force from this date or instant at the latest")]
             = None,
             limit: Limit = None, offset: Offset = None) -> VersionPage:
    """边界版本, newest first: demo loads, imports, published plans and rollbacks that changed units in your
    jurisdiction, with counts of boundaries started and ended, and links to rollback and the plan's diff."""
    page = browse.list_versions(session.connection(), _scope(principal), unit=unit, since=since, until=until,
                                limit=limit, offset=offset, tz=settings.timezone)
    root = _root(request)
    items = [dict(item, links=_version_links(root, item)) for item in page["items"]]
    return VersionPage.model_validate(dict(page, items=items, links=_page_links(
        request, page["offset"], page["limit"], len(items), page["total"])))


@router.get("/v1/versions/{version_id}", response_model=VersionDetail, responses=problem_responses(401, 404, 422),
            operation_id="browse_get_version")
def version(version_id: Annotated[int, Path(ge=1, lt=2**31)], principal: CurrentUser, session: ReadSessionDep,
            request: Request) -> VersionDetail:
    """One boundary version: who, when, why, the units it started or ended within your jurisdiction."""
    out = browse.version(session.connection(), version_id, _scope(principal))
    return VersionDetail.model_validate(dict(out, links=_version_links(_root(request), out)))
