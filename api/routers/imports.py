"""Import and export over HTTP: `POST /v1/imports` (multipart, planners) and `GET /v1/exports/{layer}`.

An import runs inside the request's transaction (a savepoint): every feature it would write must lie in the
caller's jurisdiction, else 403 and nothing is written. Exports list only what lies in the caller's jurisdiction;
private phone numbers and reporters are left out unless the caller is a planner or admin.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api.auth import AuditDep, CurrentUser, Planner
from api.deps import ReadSessionDep, SessionDep, SettingsDep
from api.problems import Problem, problem_responses
from api.schemas.io import ImportReportOut, exported_layer_schemas
from geo.io import ImportOptions, export_layer, import_layer, layer_spec
from geo.io.exporter import EXPORT_FORMATS, MEDIA_TYPES, exportable_layer, format_for, suffix_for
from geo.store.load import parse_at

router = APIRouter(tags=["import and export"])
_CHUNK = 1 << 20


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the file is larger than the upload limit of {limit:,} bytes", type="too-large",
                   max_upload_bytes=limit)


def _clean_name(name: str | None) -> str:
    """The upload's base name without NUL bytes, control characters or folders (never a path to follow)."""
    text = "".join(ch for ch in (name or "") if ch.isprintable()).replace("\\", "/")
    base = text.rsplit("/", 1)[-1].strip()
    return base if base not in ("", ".", "..") else "upload"


async def _save_upload(file: UploadFile, limit: int, folder: Path) -> Path:
    """Copy the upload to a file, refusing it as soon as it passes the limit."""
    path = folder / _clean_name(file.filename)
    size = 0
    with path.open("wb") as out:
        while chunk := await file.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            out.write(chunk)
    return path


@router.post("/v1/imports", status_code=201, summary="Import a layer from an uploaded file",
             response_model=ImportReportOut, response_model_exclude_unset=True,
             responses={200: {"description": "a dry run: the report, nothing written", "model": ImportReportOut},
                        **problem_responses(401, 403, 404, 413, 422, 500)})
async def create_import(
    request: Request,
    response: Response,
    principal: Planner,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
    layer: Annotated[str, Form(description="streets, communities, grids, micro_grids, compounds, buildings, units, "
                                           "staff, staff_assignments or incidents")],
    file: Annotated[UploadFile, File(description=".geojson, .gpkg, .zip (Shapefile), .csv or .xlsx")],
    map: Annotated[str | None, Form(description="field mapping, e.g. code=网格编码,name=网格名称")] = None,
    crs: Annotated[str | None, Form(description="the file's CRS: EPSG code, PROJ string, gcj02 or bd09")] = None,
    source_layer: Annotated[str | None, Form(description="GeoPackage layer, Shapefile in the zip, or sheet")] = None,
    encoding: Annotated[str | None, Form(description="attribute encoding (default: .cpg, else detected)")] = None,
    strict: Annotated[bool, Form(description="refuse the whole import on any problem")] = False,
    dry_run: Annotated[bool, Form(description="check and report without writing")] = False,
    axis_order: Annotated[str, Form(pattern="^(auto|swap|as-is)$")] = "auto",
    allow_outside_china: Annotated[bool, Form()] = False,
    valid_from: Annotated[str | None, Form(description="date the new boundaries take effect (default now)")] = None,
    version_id: Annotated[int | None, Form(description="import boundaries into this existing version")] = None,
    tolerance_m2: Annotated[float, Form(ge=0)] = 1.0,
    repair_tolerance: Annotated[float, Form(ge=0, le=1, description="largest share of a feature's drawn area a "
                                                                    "geometry repair may change (0.001 = 0.1 %)")]
    = 0.001,
    code_scheme: Annotated[str | None, Form(pattern="^[A-Za-z0-9_-]{1,40}$", description="a code scheme of "
                                            "data/code_schemes (default, devzone …)")] = None,
    derive_parents: Annotated[bool, Form(description="create missing streets and communities from codes and a "
                                                     "所属社区 column (listed in parents_derived)")] = True,
    repair_over_tolerance: Annotated[str, Form(pattern="^(refuse|flag)$", description="a repair beyond the "
                                               "tolerance: refuse the feature, or import it repaired and flag it")]
    = "refuse",
    resolve_overlaps: Annotated[bool, Form(description="give every overlap between siblings to one of the two "
                                           "(the named owner, else the longer shared edge), all or nothing; "
                                           "try it with dry_run first")] = False,
    overlap_owners: Annotated[str | None, Form(max_length=20000, description="owners named per overlapping pair: "
                                               "CODE/CODE=CODE, comma-separated")] = None,
) -> dict:
    """Import one layer; 201 with the validation report (200 for a dry run), 422 when refused.

    Refusals answer problem+json: ``import-refused`` (strict mode; the report in ``report``),
    ``implausible-coordinates`` (``features``), ``unreadable-file``, ``unknown-layer``; 404 for an unknown
    version, 403 for a feature outside your jurisdiction, 500 ``import-failed`` when it broke off (rolled back).
    """
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _CHUNK:  # multipart framing adds a little
        raise _too_large(limit)
    spec = layer_spec(layer)
    if file.filename and not all(ch.isprintable() for ch in file.filename):
        raise Problem(422, "the file name holds NUL bytes or control characters", type="bad-filename")
    folder = Path(tempfile.mkdtemp(prefix="gridatlas-import-"))
    try:
        path = await _save_upload(file, limit, folder)

        def authorize(layer_name: str, codes: list[str | None]) -> None:
            for code in codes:
                if code is None and layer_name == "staff":
                    continue  # people without a home building are not placed anywhere
                principal.ensure_covers(code, f"a {layer_name} feature")

        def record(action, target_type, target_id, jurisdiction_code, after):
            audit(action, target_type, target_id, jurisdiction_code, after=after)

        options = ImportOptions(
            mapping=map, crs=crs, source_layer=source_layer, encoding=encoding, strict=strict, dry_run=dry_run,
            axis_order=axis_order, allow_outside_china=allow_outside_china, valid_from=valid_from,
            version_id=version_id, actor=principal.actor, tolerance_m2=tolerance_m2,
            filename=_clean_name(file.filename),
            repair_tolerance=repair_tolerance, repair_over_tolerance=repair_over_tolerance, code_scheme=code_scheme,
            derive_parents=derive_parents, resolve_overlaps=resolve_overlaps, overlap_owners=overlap_owners,
            authorize=authorize, audit=record)
        report = await run_in_threadpool(import_layer, session.connection(), spec.name, path, options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if report.dry_run:
        # Nothing was written, but the attempt is worth a trace (and is the request's audit entry).
        audit(f"import.{spec.name}.dry_run", spec.name, None,
              after={k: v for k, v in report.to_json().items() if k != "problems"})
        response.status_code = 200
    return report.as_answer()


@router.get("/v1/exports/{layer}", summary="Export a layer as GeoJSON, GeoPackage, zipped Shapefile or CSV",
            response_class=FileResponse,
            responses={200: {"description": "the layer as a file download (X-Feature-Count: features written)",
                             "content": exported_layer_schemas()},
                       **problem_responses(401, 404, 422)})
def export(
    layer: str,
    principal: CurrentUser,
    session: ReadSessionDep,  # lag-tolerant: the standby when one is configured
    format: Annotated[str, Query(description=", ".join(EXPORT_FORMATS))] = "geojson",
    at: Annotated[str | None, Query(description="boundary version in force on this date (default now)")] = None,
    encoding: Annotated[str, Query(description="utf-8 or gbk (Shapefile and CSV)")] = "utf-8",
    crs: Annotated[str | None, Query(max_length=2000, description="output CRS: an EPSG code (4547, EPSG:4490), a "
                                     "PROJ string (+proj=tmerc +lon_0=121.47 …), WKT, gcj02 or bd09 (default "
                                     "WGS-84)")] = None,
    within: Annotated[str | None, Query(pattern="^[0-9]{1,24}$", description="only this street, community or "
                                        "grid (its code), inside your jurisdiction")] = None,
) -> FileResponse:
    """The layer at `at`, inside your jurisdiction, as a file download (X-CRS: the output's CRS)."""
    spec = exportable_layer(layer)  # 404 unknown-layer
    fmt = format_for(Path("x"), format)  # 422 for an unknown format or date
    when = parse_at(at)
    folder = Path(tempfile.mkdtemp(prefix="gridatlas-export-"))
    name = f"{spec.name}{'_' + at if at else ''}{suffix_for(fmt)}"
    jurisdiction = None if principal.unrestricted else principal.jurisdiction_code
    try:
        result = export_layer(session.connection(), spec.name, folder / name, fmt, when, encoding, jurisdiction,
                              reveal_private=principal.role in ("admin", "planner"), crs=crs, within=within)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # the download's folder goes with it; here there is none
        raise
    return FileResponse(result.path, media_type=MEDIA_TYPES[fmt], filename=name,
                        headers={"X-Feature-Count": str(result.count),
                                 "X-CRS": result.crs.encode("ascii", "replace").decode()},
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
