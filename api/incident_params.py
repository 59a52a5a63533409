"""Request parameters of incident reads, shared by the incident, heatmap page and Open311 routers (not a router).

What a request's filters mean for the caller: reads see the caller's jurisdiction (`scope_of`), a filter naming a
unit must overlap it (`check_filter_codes`), and a heatmap request becomes a `HeatmapQuery` (`HeatmapQueryDep`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from api.auth import CurrentUser, ensure_covers
from api.deps import SettingsDep
from geo.access.users import Principal
from geo.incidents.heatmap import MAX_CELL_M, MIN_CELL_M, HeatmapQuery
from geo.incidents.periods import parse_period


def scope_of(principal: Principal) -> str | None:
    """The jurisdiction code reads are limited to (None: the whole district)."""
    return None if principal.covers(None) else principal.jurisdiction_code


def check_filter_codes(principal: Principal, **codes: str | None) -> None:
    """403 unless every unit a filter names shares land with the caller's jurisdiction."""
    for name, code in codes.items():
        if code and not principal.overlaps(code):
            ensure_covers(principal, code, f"{name} {code}")


def heatmap_query(
    principal: CurrentUser,
    settings: SettingsDep,
    start: Annotated[str | None, Query(alias="from", description="date, YYYY-MM or datetime; "
                                                                 "default: the last 12 months of data")] = None,
    end: Annotated[str | None, Query(alias="to", description="a date or month includes that day or month")] = None,
    class_code: Annotated[str | None, Query(alias="class", description="class code; a major class includes its "
                                                                       "minor ones")] = None,
    street: Annotated[str | None, Query(pattern=r"^\d{9}$")] = None,
    community: Annotated[str | None, Query(pattern=r"^\d{12}$")] = None,
    grid: Annotated[str | None, Query(pattern=r"^\d{15}$")] = None,
    cell_m: Annotated[float, Query(ge=MIN_CELL_M, le=MAX_CELL_M, description="hexagon edge in metres")] = 150.0,
    permutations: Annotated[int, Query(ge=0, le=9999, description="Gi* permutations (0: no hot spots)")] = 999,
) -> HeatmapQuery:
    """The heatmap query of a request, its filters checked against the caller's jurisdiction."""
    check_filter_codes(principal, street=street, community=community, grid=grid)
    s, e = parse_period(start, end, settings.timezone)
    return HeatmapQuery(start=s, end=e, class_code=class_code or None, street=street or None,
                        community=community or None, grid=grid or None, scope=scope_of(principal),
                        cell_m=cell_m, timezone=settings.timezone, permutations=permutations)


HeatmapQueryDep = Annotated[HeatmapQuery, Depends(heatmap_query)]
