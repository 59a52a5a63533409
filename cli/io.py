"""`gridatlas import LAYER FILE` and `gridatlas export LAYER FILE`: boundary data in and out (导入导出)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import common
from cli.common import cli_actor, console, err

LAYER_HELP = ("streets, communities, grids, micro_grids, compounds, buildings, units, staff, staff_assignments "
              "or incidents")


def _summary_table(report) -> Table:
    title = f"{report.layer} ← {report.source}" + (" (dry run: nothing written)" if report.dry_run else "")
    table = Table("features read", "imported", "repaired", "merged", "refused", title=title)
    s = report.summary()
    table.add_row(f"{s['features_read']:,}", f"[green]{s['imported']:,}[/green]", f"{s['repaired']:,}",
                  f"{s['merged']:,}", f"[red]{s['refused']:,}[/red]" if s["refused"] else "0")
    return table


def _problems_table(report, limit: int) -> Table:
    table = Table("kind", "action", "feature", "message", title=f"problems (first {limit} of {len(report.issues)})")
    for issue in report.issues[:limit]:
        table.add_row(issue.kind, issue.action, issue.feature or "", issue.message)
    return table


def _write_report(report, path: Path) -> list[Path]:
    """The report as JSON at `path`, and its problem locations as GeoJSON beside it."""
    path.write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    geo = path.with_suffix(".problems.geojson")
    geo.write_text(json.dumps(report.problems_geojson(), ensure_ascii=False), encoding="utf-8")
    return [path, geo]


def import_command(
    layer: str = typer.Argument(..., help=LAYER_HELP),
    file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                help=".geojson, .gpkg, .zip (Shapefile), .csv or .xlsx"),
    map_: str | None = typer.Option(None, "--map", help="field mapping, e.g. code=网格编码,name=网格名称"),
    crs: str | None = typer.Option(None, "--crs", help="the file's CRS: EPSG code, PROJ string, gcj02 or bd09"),
    source_layer: str | None = typer.Option(None, "--layer", help="GeoPackage layer, zipped Shapefile or sheet"),
    strict: bool = typer.Option(False, "--strict", help="refuse the whole import on any problem"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check and report without writing"),
    encoding: str | None = typer.Option(None, help="attribute encoding (default: .cpg, else detected)"),
    swap_axes: bool = typer.Option(False, "--swap-axes", help="the file is latitude first"),
    keep_axes: bool = typer.Option(False, "--keep-axes", help="do not check for swapped coordinates"),
    allow_outside_china: bool = typer.Option(False, "--allow-outside-china", help="accept features outside China"),
    valid_from: str | None = typer.Option(None, help="date the new boundaries take effect (default now)"),
    version: int | None = typer.Option(None, help="import boundaries into this existing version id"),
    label: str | None = typer.Option(None, help="label of the new boundary version"),
    tolerance: float = typer.Option(1.0, help="overlaps/gaps smaller than this many m² are ignored"),
    repair_tolerance: float = typer.Option(0.001, help="largest share of a feature's drawn area a geometry repair "
                                                       "may change (0.001 = 0.1 %)"),
    code_scheme: str | None = typer.Option(None, "--code-scheme", help="code scheme: a name in data/code_schemes "
                                                                         "(default, devzone …) or a .json file"),
    no_derive_parents: bool = typer.Option(False, "--no-derive-parents", help="refuse grids whose community (or "
                                           "communities whose street) is missing instead of creating it"),
    flag_repairs: bool = typer.Option(False, "--flag-repairs", help="import repairs beyond --repair-tolerance "
                                                                    "(flagged) instead of refusing them"),
    resolve_overlaps: bool = typer.Option(False, "--resolve-overlaps", help="give every overlap between siblings "
                                          "to one of the two (named owner, else the longer shared edge), all or "
                                          "nothing; try with --dry-run first"),
    overlap_owner: list[str] = typer.Option([], "--overlap-owner", help="who keeps an overlap: CODE/CODE=CODE "
                                            "(repeat the option for more pairs)"),
    report: Path | None = typer.Option(None, "--report", help="write the report (JSON) and problems (GeoJSON)"),
    show: int = typer.Option(20, help="problems listed on screen"),
) -> None:
    """Import one layer from a file in one transaction, with a validation report."""
    from geo.io import ImportOptions, ImportRefused, import_layer

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        options = ImportOptions(
            mapping=map_, crs=crs, source_layer=source_layer, encoding=encoding, strict=strict, dry_run=dry_run,
            axis_order="swap" if swap_axes else ("as-is" if keep_axes else "auto"),
            allow_outside_china=allow_outside_china, valid_from=valid_from, version_id=version, label=label,
            actor=cli_actor(), tolerance_m2=tolerance, progress=progress, repair_tolerance=repair_tolerance,
            repair_over_tolerance="flag" if flag_repairs else "refuse", code_scheme=code_scheme,
            derive_parents=not no_derive_parents, resolve_overlaps=resolve_overlaps,
            overlap_owners=",".join(overlap_owner) or None)
        with common.friendly_errors():
            try:
                result = import_layer(common.engine(), layer, file, options)
            except ImportRefused as exc:
                bar.stop()
                console.print(_summary_table(exc.report))
                console.print(_problems_table(exc.report, show))
                if report:
                    _write_report(exc.report, report)
                raise
    console.print(_summary_table(result))
    if result.issues:
        console.print(_problems_table(result, show))
    for note in result.notes:
        console.print(f"[dim]{note}[/dim]")
    if result.version_id:
        console.print(f"boundary version {result.version_id} from {result.valid_from:%Y-%m-%d %H:%M} "
                      f"({result.valid_from_source}): {result.created:,} unit(s) created, {result.imported:,} "
                      f"boundaries written, {result.boundaries_ended:,} ended")
    if report:
        written = _write_report(result, report)
        console.print(f"report: {', '.join(map(str, written))}")


def export_command(
    layer: str = typer.Argument(..., help=LAYER_HELP),
    file: Path = typer.Argument(..., dir_okay=False, help="output file (.geojson, .gpkg, .zip, .csv)"),
    format_: str | None = typer.Option(None, "--format", help="geojson, gpkg, shapefile or csv (default: from FILE)"),
    at: str | None = typer.Option(None, "--at", help="boundary version in force on this date (default now)"),
    encoding: str = typer.Option("utf-8", "--encoding", help="utf-8 or gbk (Shapefile and CSV)"),
    crs: str | None = typer.Option(None, "--crs", help="output CRS: EPSG code, PROJ string, WKT, gcj02 or bd09 "
                                                       "(default WGS-84)"),
    within: str | None = typer.Option(None, "--within", help="only this street, community or grid code"),
) -> None:
    """Export one layer at the current or a dated boundary version."""
    from geo.io import export_layer
    from geo.store.load import parse_at

    with common.friendly_errors():
        result = export_layer(common.engine(), layer, file, format_, parse_at(at), encoding, crs=crs, within=within)
    console.print(f"{result.count:,} {result.layer} written to {result.path} ({result.format}, {result.crs})")


def register(app: typer.Typer) -> None:
    """Add `import` and `export` as top-level commands."""
    app.command("import")(import_command)
    app.command("export")(export_command)
