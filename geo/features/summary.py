"""The printable one-page summary of a street, community or grid (街道/社区一页纸概况).

Everything is gathered from the concept that owns it, for the unit's code as a jurisdiction prefix: the home page's
figures (`geo.features.overview.overview`: units, coverage, open incidents, 按期结案率, compounds by class), the
staff coverage report (`geo.staff.coverage`: households, buildings, the grids with gaps and whom to call) and the
outlines of the unit and its children in force now (`geo.store.load.read_level`), projected to metres (its UTM
zone) and simplified for a map a few centimetres wide. Nothing here draws: `maps.summary` renders the page.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import ClassVar
from zoneinfo import ZoneInfo

import geopandas as gpd

from geo.errors import NotFound
from geo.features.overview import LEVEL_ZH, overview
from geo.spatial.crs import metric_epsg_for, to_metric
from geo.staff import coverage as cov
from geo.staff.register import Allowed
from geo.store.load import read_level
from geo.store.units import level_of

#: The levels a summary is made for, and the level of the children its map names.
CHILD_LEVEL = {"streets": "communities", "communities": "grids", "grids": "micro_grids"}
LEVEL_OF_TABLE = {"streets": "street", "communities": "community", "grids": "grid"}
CHILD_ZH = {"communities": "社区", "grids": "网格", "micro_grids": "微网格"}
#: A printed map is a few centimetres wide: detail below 1/800 of its extent cannot be seen.
SIMPLIFY_SHARE = 1 / 800


class SummaryUnitNotFound(NotFound):
    """No street, community or grid has this code (a micro-grid has no summary of its own)."""

    slug: ClassVar[str] = "unit-not-found"


@dataclass
class Outlines:
    """The unit's outline and its children's, in metres (EPSG `epsg`), simplified for print."""

    epsg: int
    unit: gpd.GeoDataFrame
    children: gpd.GeoDataFrame
    child_level: str


def outlines(conn, code: str, table: str, at: dt.datetime | None = None) -> Outlines:
    """The outline of the unit `code` (a row of `table`) and its children's in force at `at`, in metres."""
    unit = read_level(conn, table, at, "WHERE code = :c", {"c": code})
    if unit.empty:
        raise SummaryUnitNotFound(f"no {LEVEL_OF_TABLE.get(table, table)} with code {code} is in force now",
                                  code=code)
    child_level = CHILD_LEVEL[table]
    children = read_level(conn, child_level, at, "WHERE starts_with(code, :c)", {"c": code})
    epsg = metric_epsg_for(unit)
    unit_m, children_m = to_metric(unit, epsg), to_metric(children, epsg)
    x0, y0, x1, y1 = unit_m.total_bounds
    tolerance = max(x1 - x0, y1 - y0) * SIMPLIFY_SHARE
    unit_m["geom"] = unit_m.geometry.simplify(tolerance, preserve_topology=True)
    if not children_m.empty:
        children_m["geom"] = children_m.geometry.simplify(tolerance, preserve_topology=True)
    return Outlines(epsg, unit_m[["code", "name", "geom"]], children_m[["code", "name", "geom"]], child_level)


def unit_summary(conn, code: str, allowed: Allowed, tz: str = "Asia/Shanghai") -> dict:
    """The figures, gaps (whom to call, phones as the phone rule lets `allowed` see) and outlines of one unit."""
    table = level_of(conn, code)
    if table not in CHILD_LEVEL:
        raise SummaryUnitNotFound(f"no street, community or grid has the code {code}", code=code)
    shapes = outlines(conn, code, table)
    figures = overview(conn, code, tz)
    report = cov.coverage_report(conn, code)  # the report overview read, reused from its cache
    # phones only of the grid staff the gaps list names, as on the coverage page
    people = cov.people_index(conn, replace(report, buildings=report.buildings.iloc[:0],
                                            units=report.units.iloc[:0]), allowed)
    level = LEVEL_OF_TABLE[table]
    figures["jurisdiction"] |= {"level": level, "level_zh": LEVEL_ZH[level],
                                "name": str(shapes.unit["name"].iloc[0] or code)}
    counts = report.totals["status_counts"]
    return {
        "code": code, "level": level, "date": dt.datetime.now(ZoneInfo(tz)).date(),
        "figures": figures, "report": report, "people": people, "outlines": shapes,
        "child_zh": CHILD_ZH[shapes.child_level],
        "other_gaps": {"buildings": sum(v for k, v in counts["building"].items() if k not in ("covered", "empty")),
                       "units": sum(v for k, v in counts["unit"].items() if k not in ("covered", "empty"))},
    }
