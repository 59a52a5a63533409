"""Compound-versus-grid classification (小区与网格对应关系): the table, the summary, one verdict explained.

Results are read from the store (computed first when missing or stale for the boundary version in force, see
geo.classify.classification.ensure_classification) and filtered to the caller's jurisdiction: a compound is
visible when its main grid's or its community's code lies in the jurisdiction. A bad date or a missing boundary
version are the domain's errors (`geo.classify.classification.ClassifyError`), answered by `api.problems`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
import pandas as pd
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from api.auth import CurrentUser, ensure_covers
from api.deps import SessionDep
from api.problems import problem_responses
from api.schemas.classification import ClassificationSummary, ClassificationTable, CompoundVerdict, geojson_schema
from api.scopes import BoundaryAt, ClassificationScopeDep, Level
from geo.classify import classification as gc

router = APIRouter(tags=["classification"])


def version_json(run: dict) -> dict:
    """The boundary version a run belongs to."""
    v = run["version"]
    return {"id": v["id"], "label": v["label"], "valid_from": v["valid_from"].isoformat()}


def run_json(run: dict, level: str) -> dict:
    """What a result depends on: level, version, thresholds, when and how it was computed."""
    return {"level": level, "version": version_json(run), "computed_at": run["computed_at"].isoformat(),
            "implementation": run["implementation"], "thresholds": run["thresholds"]}


@router.get("/v1/classification", response_model=ClassificationTable,
            responses={200: {"description": "the table as JSON (default), CSV or GeoJSON (`format`)",
                             "content": {"text/csv": {"schema": {"type": "string"}},
                                         "application/geo+json": {"schema": geojson_schema()}}},
                       **problem_responses(401, 403, 404, 422)})
def classification(
    principal: CurrentUser,
    session: SessionDep,
    q: ClassificationScopeDep,
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


@router.get("/v1/classification/summary", response_model=ClassificationSummary, response_model_exclude_unset=True,
            responses=problem_responses(401, 403, 404, 422))
def classification_summary(principal: CurrentUser, session: SessionDep, q: ClassificationScopeDep) -> dict:
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


@router.get("/v1/compounds/{compound_id}/classification", response_model=CompoundVerdict,
            responses=problem_responses(401, 403, 404, 422))
def compound_classification(
    principal: CurrentUser,
    session: SessionDep,
    compound_id: Annotated[int, Path(ge=1)],
    level: Level = "grid",
    at: BoundaryAt = None,
) -> dict:
    """Why one compound got its class, in words (Chinese and English) and numbers."""
    rules = gc.get_rules()
    run, row, overlaps = gc.compound_verdict(session.connection(), compound_id, level, at, rules)
    if not (principal.covers(row["main_code"]) or principal.covers(row["community_code"])):
        ensure_covers(principal, gc.clean(row["main_code"]) or gc.clean(row["community_code"]),
                      f"compound {compound_id}")
    return run_json(run, level) | gc.row_record(row, level) | {
        "overlaps": [gc.overlap_record(o) for o in overlaps.to_dict("records")],
        "explanation": gc.explain(row, overlaps, rules, level),
        "sensitivity": gc.fragile_detail(row, overlaps, rules),
    }
