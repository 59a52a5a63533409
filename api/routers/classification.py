"""Compound-versus-grid classification (小区与网格对应关系): the table, the summary, one verdict explained.

Results are read from the store (computed first when missing or stale for the boundary version in force, see
geo.classify.classification.ensure_classification) and filtered to the caller's jurisdiction: a compound is visible when its
main grid's or its community's code lies in the jurisdiction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import orjson
import pandas as pd
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from sqlalchemy import text

from api.auth import CurrentUser, ensure_covers
from api.deps import SessionDep
from api.problems import Problem
from geo.classify import classification as gc
from geo.store.load import parse_at
from geo.access.users import Principal

router = APIRouter(tags=["classification"])

Level = Annotated[Literal["grid", "micro_grid"], Query(description="compare with grids (网格) or micro-grids (微网格)")]
At = Annotated[str | None, Query(description="boundary version in force on this date (YYYY-MM-DD) or instant; "
                                             "default now")]
Street = Annotated[str | None, Query(pattern=r"^[0-9]{9}$", description="only this street (9-digit code)")]
Community = Annotated[str | None, Query(pattern=r"^[0-9]{12}$", description="only this community (12-digit code)")]


def run_for(session, level: str, at: str | None) -> dict:
    """The up-to-date stored run for the version in force at `at`: 422 for a bad date, 404 with no version."""
    try:
        when = parse_at(at)
    except ValueError as exc:
        raise Problem(422, str(exc), type="validation-error", title="Invalid request")
    try:
        return gc.ensure_classification(session.connection(), level, when, gc.get_rules())
    except gc.ClassifyError as exc:
        raise Problem(404, str(exc), type="no-boundary-version")


def check_filters(principal: Principal, street: str | None, community: str | None) -> None:
    """403 when a street or community filter shares no land with the caller's jurisdiction."""
    for what, code in (("street", street), ("community", community)):
        if code and not principal.overlaps(code):
            ensure_covers(principal, code, f"{what} {code}")


def visible_rows(session, principal: Principal, run: dict, level: str, street: str | None = None,
                 community: str | None = None, with_geometry: bool = False) -> pd.DataFrame:
    """The stored rows of a run the caller may see, filtered by street and community."""
    return gc.read_results(session.connection(), run["version"]["id"], level,
                           jurisdiction=None if principal.unrestricted else principal.jurisdiction_code,
                           street=street, community=community, with_geometry=with_geometry)


@dataclass(frozen=True)
class Scope:
    """The query every classification view shares: level, street and community filters, boundary date."""

    level: str
    street: str | None
    community: str | None
    at: str | None

    def read(self, session, principal: Principal, with_geometry: bool = False) -> tuple[dict, pd.DataFrame]:
        """(run, rows): the filters checked against the caller's jurisdiction, the run, the rows it may see."""
        check_filters(principal, self.street, self.community)
        run = run_for(session, self.level, self.at)
        return run, visible_rows(session, principal, run, self.level, self.street, self.community, with_geometry)


def scope(level: Level = "grid", street: Street = None, community: Community = None, at: At = None) -> Scope:
    """The shared query parameters of the classification table, summary and map."""
    return Scope(level, street, community, at)


ScopeDep = Annotated[Scope, Depends(scope)]


def version_json(run: dict) -> dict:
    """The boundary version a run belongs to."""
    v = run["version"]
    return {"id": v["id"], "label": v["label"], "valid_from": v["valid_from"].isoformat()}


def run_json(run: dict, level: str) -> dict:
    """What a result depends on: level, version, thresholds, when and how it was computed."""
    return {"level": level, "version": version_json(run), "computed_at": run["computed_at"].isoformat(),
            "implementation": run["implementation"], "thresholds": run["thresholds"]}


@router.get("/v1/classification")
def classification(
    principal: CurrentUser,
    session: SessionDep,
    q: ScopeDep,
    format: Annotated[Literal["json", "csv", "geojson"], Query(description="json, csv or geojson")] = "json",
):
    """One row per compound in your jurisdiction: its class against its grid (or micro-grid) and the measures."""
    level = q.level
    run, rows = q.read(session, principal, with_geometry=format == "geojson")
    overlaps = gc.read_overlaps(session.connection(), run["version"]["id"], level, rows["compound_id"].tolist())
    items = gc.records(rows, overlaps, level)
    head = run_json(run, level)
    if format == "csv":
        name = f"classification-{level}-v{run['version']['id']}.csv"
        return Response(gc.to_csv(items), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    if format == "geojson":
        body = gc.to_geojson(items, rows["geom"].tolist() if len(rows) else [])
        return Response(orjson.dumps(body | {"metadata": head}), media_type="application/geo+json")
    counts = {c: sum(1 for it in items if it["class"] == c) for c in gc.CLASSES}
    return head | {"count": len(items), "counts": counts, "items": items}


@router.get("/v1/classification/summary")
def classification_summary(principal: CurrentUser, session: SessionDep, q: ScopeDep) -> dict:
    """Compounds per class, per street and community (seed 001's table), with how fragile each threshold is."""
    level = q.level
    run, rows = q.read(session, principal)
    table = gc.summary(rows)
    fragile = pd.Series([f for fs in rows["fragile"] for f in (fs or [])], dtype=object).value_counts()
    whole = principal.unrestricted and not q.street and not q.community
    sensitivity = []
    for entry in run["sensitivity"]:
        item = {"threshold": entry["threshold"], "label_zh": entry["label_zh"], "value": entry["value"],
                "step": gc.get_rules().sensitivity_step, "changed": int(fragile.get(entry["threshold"], 0))}
        if whole:  # the per-side detail is district-wide; shown only to whoever sees the whole district
            item |= {"minus": entry["minus"], "plus": entry["plus"]}
        sensitivity.append(item)
    labels = gc.CLASS_ZH if level == "grid" else gc.CLASS_ZH_MICRO
    return run_json(run, level) | {"classes": [{"class": c, "zh": labels[c], "en": gc.CLASS_EN[c]}
                                               for c in gc.CLASSES],
                                   **table, "sensitivity": sensitivity}


@router.get("/v1/compounds/{compound_id}/classification")
def compound_classification(
    principal: CurrentUser,
    session: SessionDep,
    compound_id: Annotated[int, Path(ge=1)],
    level: Level = "grid",
    at: At = None,
) -> dict:
    """Why one compound got its class, in words (Chinese and English) and numbers."""
    conn = session.connection()
    exists = conn.execute(text("SELECT c.code FROM compounds k LEFT JOIN communities c ON c.id = k.community_id "
                               "WHERE k.id = :i"), {"i": compound_id}).first()
    if exists is None:
        raise Problem(404, f"there is no compound {compound_id}", type="not-found")
    run = run_for(session, level, at)
    rows = gc.read_results(conn, run["version"]["id"], level, compound_id=compound_id)
    if rows.empty:  # the compound was added after the stored run; ensure_classification saw it, so unlikely
        raise Problem(404, f"compound {compound_id} has no classification in this version", type="not-found")
    row = rows.iloc[0].to_dict()
    if not (principal.covers(row["main_code"]) or principal.covers(row["community_code"])):
        ensure_covers(principal, gc.clean(row["main_code"]) or gc.clean(row["community_code"]),
                      f"compound {compound_id}")
    overlaps = gc.read_overlaps(conn, run["version"]["id"], level, [compound_id])
    rules = gc.get_rules()
    return run_json(run, level) | gc.row_record(row, level) | {
        "overlaps": [gc.overlap_record(o) for o in overlaps.to_dict("records")],
        "explanation": gc.explain(row, overlaps, rules, level),
        "sensitivity": gc.fragile_detail(row, overlaps, rules),
    }
