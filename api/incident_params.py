"""Request parameters of incidents, shared by the incident, heatmap page and Open311 routers (not a router).

What a request's filters mean for the caller: reads see the caller's jurisdiction (`scope_of`), a filter naming a
unit must overlap it (`check_filter_codes`), and a heatmap request becomes a `HeatmapQuery` (`HeatmapQueryDep`).
A transition names the incident's revision in ``If-Match`` (`required_incident_revision`; ETag `incident_etag`).
Class tables and incident files arrive as uploads, saved to a temporary file within the upload limit
(`saved_upload`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Query, UploadFile

from api.auth import CurrentUser, ensure_covers
from api.deps import SettingsDep
from api.preconditions import required_if_match
from api.problems import Problem
from api.schemas.incidents import NO_NUL
from geo.access.users import Principal
from geo.incidents.closed_loop import incident_token, revision_in_token
from geo.incidents.heatmap import MAX_CELL_M, MIN_CELL_M, HeatmapQuery
from geo.incidents.periods import parse_period

#: Unit filters. A deployment's scheme may have 10-digit villages and 16-digit dedicated grids (data/code_schemes/).
StreetCode = Annotated[str | None, Query(pattern=r"^\d{9}$", description="street code")]
CommunityCode = Annotated[str | None, Query(pattern=r"^\d{10,12}$", description="community or village code")]
GridCode = Annotated[str | None, Query(pattern=r"^\d{15,16}$", description="grid code (16 digits: dedicated)")]

def scope_of(principal: Principal) -> str | None:
    """The jurisdiction code reads are limited to (None: the whole district)."""
    return None if principal.covers(None) else principal.jurisdiction_code


def check_filter_codes(principal: Principal, **codes: str | None) -> None:
    """403 unless every unit a filter names shares land with the caller's jurisdiction."""
    for name, code in codes.items():
        if code and not principal.overlaps(code):
            ensure_covers(principal, code, f"{name} {code}")


def incident_etag(incident_id: int, revision: int) -> str:
    """The ETag header of an incident at a revision (strong)."""
    return f'"{incident_token(incident_id, revision)}"'


def required_incident_revision(value: str | None, incident_id: int) -> int:
    """The incident revision a transition's If-Match names: 428 without it (or with ``*``), 412 when it is weak
    or not an ETag of this incident."""
    token = required_if_match(value, "an incident transition")
    revision = revision_in_token(token, incident_id)
    if revision is None:
        raise Problem(412, f"If-Match {value} is not an ETag of incident {incident_id}", type="stale-incident")
    return revision


def heatmap_query(
    principal: CurrentUser,
    settings: SettingsDep,
    start: Annotated[str | None, Query(alias="from", description="date, YYYY-MM or datetime; "
                                                                 "default: the last 12 months of data")] = None,
    end: Annotated[str | None, Query(alias="to", description="a date or month includes that day or month")] = None,
    class_code: Annotated[str | None, Query(alias="class", max_length=16, pattern=NO_NUL,
                                            description="class code; a major class includes its minor ones")] = None,
    street: StreetCode = None,
    community: CommunityCode = None,
    grid: GridCode = None,
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


_CHUNK = 1 << 20


def upload_name(name: str | None) -> str:
    """The upload's base name without control characters or folders (never a path to follow)."""
    clean = "".join(ch for ch in (name or "") if ch.isprintable()).replace("\\", "/")
    base = clean.rsplit("/", 1)[-1].strip()
    return base if base not in ("", ".", "..") else "upload"


@contextmanager
def saved_upload(file: UploadFile, limit: int) -> Iterator[Path]:
    """The upload copied to a temporary file (removed afterwards); 413 as soon as it passes `limit` bytes."""
    folder = Path(tempfile.mkdtemp(prefix="gridatlas-incidents-"))
    try:
        path = folder / upload_name(file.filename)
        size = 0
        with path.open("wb") as out:
            while chunk := file.file.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise Problem(413, f"the file is larger than the upload limit of {limit:,} bytes",
                                  type="too-large", max_upload_bytes=limit)
                out.write(chunk)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
