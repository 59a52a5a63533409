"""What a read covers, shared by a JSON router and its map page (routers never import one another).

- `CoverageScope` (`CoverageScopeDep`): the street / community / grid filters and the day of a coverage read;
  `effective_prefix` narrows the filters to the caller's jurisdiction, `CoverageScope.report` reads the report
  (`/v1/coverage`, `/v1/coverage/gaps`, `/maps/coverage`).
- `ClassificationScope` (`ClassificationScopeDep`): level, street and community filters and the boundary date of a
  classification read; `ClassificationScope.read` checks the filters against the jurisdiction and returns the run
  and the rows the caller may see (`/v1/classification`, `/v1/classification/summary`, `/maps/classification`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import pandas as pd
from fastapi import Depends, Query
from sqlalchemy.orm import Session

from api.auth import ensure_covers
from geo.access.users import Principal
from geo.classify import classification as gc
from geo.io.codes import filter_lengths
from geo.staff import coverage as cov

# ------------------------------------------------------------------------------------------------- coverage


def _code_query(level: str, what: str) -> object:
    """A code filter accepting the lengths every shipped code scheme allows at the level (data/code_schemes)."""
    lo, hi = filter_lengths()[level]
    return Query(pattern=rf"^\d{{{lo},{hi}}}$", description=f"{what} ({lo}–{hi} digits)" if lo < hi
                 else f"{what} ({lo} digits)")


CoverageStreet = Annotated[str | None, _code_query("streets", "street code")]
CoverageCommunity = Annotated[str | None, _code_query("communities", "community or village code")]
CoverageGrid = Annotated[str | None, _code_query("grids", "grid code (16 digits: dedicated grids of some schemes)")]
CoverageAt = Annotated[str | None, Query(description="the day (YYYY-MM-DD) or instant; default today")]


def effective_prefix(principal: Principal, street: str | None = None, community: str | None = None,
                     grid: str | None = None) -> str:
    """The code prefix a read covers: the filter narrowed to the caller's jurisdiction (403 when disjoint)."""
    prefix = cov.scope_prefix(street, community, grid)
    if principal.covers(None) or (prefix and principal.covers(prefix)):
        return prefix
    if principal.overlaps(prefix or None) or not prefix:
        # the filter holds the jurisdiction: keep only the jurisdiction (a restricted caller has one)
        return principal.jurisdiction_code or ""
    ensure_covers(principal, prefix, f"{prefix}")
    return prefix  # not reached: ensure_covers refused


@dataclass(frozen=True)
class CoverageScope:
    """The query a coverage view shares: street, community and grid filters (they must nest) and the day."""

    street: str | None
    community: str | None
    grid: str | None
    at: str | None

    def report(self, session: Session, principal: Principal, with_geometry: bool = False) -> cov.CoverageReport:
        """The coverage report of the filters narrowed to the caller's jurisdiction, on the day asked."""
        prefix = effective_prefix(principal, self.street, self.community, self.grid)
        return cov.coverage_report(session.connection(), prefix, self.at, with_geometry=with_geometry)

    @property
    def subtitle(self) -> str:
        """The filter codes given, for a page title."""
        return " ".join(c for c in (self.street, self.community, self.grid) if c)


def coverage_scope(street: CoverageStreet = None, community: CoverageCommunity = None, grid: CoverageGrid = None,
                   at: CoverageAt = None) -> CoverageScope:
    """The shared query parameters of the coverage report, its gaps and its map."""
    return CoverageScope(street, community, grid, at)


CoverageScopeDep = Annotated[CoverageScope, Depends(coverage_scope)]

# ------------------------------------------------------------------------------------------- classification

Level = Annotated[Literal["grid", "micro_grid"], Query(description="compare with grids (网格) or micro-grids (微网格)")]
BoundaryAt = Annotated[str | None, Query(description="boundary version in force on this date (YYYY-MM-DD) or "
                                                     "instant; default now")]
ClassificationStreet = Annotated[str | None, _code_query("streets", "only this street")]
ClassificationCommunity = Annotated[str | None, _code_query("communities", "only this community or village")]


def check_filters(principal: Principal, street: str | None, community: str | None) -> None:
    """403 when a street or community filter shares no land with the caller's jurisdiction."""
    for what, code in (("street", street), ("community", community)):
        if code and not principal.overlaps(code):
            ensure_covers(principal, code, f"{what} {code}")


@dataclass(frozen=True)
class ClassificationScope:
    """The query every classification view shares: level, street and community filters, boundary date."""

    level: str
    street: str | None
    community: str | None
    at: str | None

    def read(self, session: Session, principal: Principal, with_geometry: bool = False) -> tuple[dict, pd.DataFrame]:
        """(run, rows): the filters checked against the caller's jurisdiction, the up-to-date run in force at
        `at`, and its rows the caller may see (main grid's or community's code in the jurisdiction)."""
        check_filters(principal, self.street, self.community)
        conn = session.connection()
        run = gc.run_at(conn, self.level, self.at)
        rows = gc.read_results(conn, run["version"]["id"], self.level,
                               jurisdiction=None if principal.unrestricted else principal.jurisdiction_code,
                               street=self.street, community=self.community, with_geometry=with_geometry)
        return run, rows


def classification_scope(level: Level = "grid", street: ClassificationStreet = None,
                         community: ClassificationCommunity = None, at: BoundaryAt = None) -> ClassificationScope:
    """The shared query parameters of the classification table, summary and map."""
    return ClassificationScope(level, street, community, at)


ClassificationScopeDep = Annotated[ClassificationScope, Depends(classification_scope)]
