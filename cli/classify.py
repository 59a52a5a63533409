"""`gridatlas classify`: classify every compound against its grids (or micro-grids), print the summary table
and write the full result (one row per compound with measures) to a file."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from cli.common import console, engine, fail, friendly_errors

LEVEL_CHOICES = ("grid", "micro_grid", "both")


def _write(path: Path, fmt: str, items: list[dict], head: dict) -> None:
    from geo.classify.classification import to_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        path.write_text(to_csv(items), encoding="utf-8")
    else:
        path.write_text(json.dumps(head | {"count": len(items), "items": items}, ensure_ascii=False, indent=1,
                                   default=str), encoding="utf-8")


def _head(run: dict, level: str) -> dict:
    version = run["version"]
    return {"level": level, "version": {"id": version["id"], "label": version["label"],
                                        "valid_from": version["valid_from"].isoformat()},
            "computed_at": run["computed_at"].isoformat(), "implementation": run["implementation"],
            "thresholds": run["thresholds"], "sensitivity": run["sensitivity"]}


def _summary_table(level: str, summary: dict, run: dict) -> Table:
    from geo.classify.classification import CLASS_ZH, CLASS_ZH_MICRO, CLASSES
    from geo.settings import get_settings

    labels = CLASS_ZH if level == "grid" else CLASS_ZH_MICRO
    version = run["version"]
    since = version["valid_from"].astimezone(ZoneInfo(get_settings().timezone))
    table = Table(title=f"小区对比{'网格' if level == 'grid' else '微网格'}分类 · 版本 {version['id']} "
                        f"{version['label']}（{since:%Y-%m-%d} 起）")
    table.add_column("街道 / 社区")
    for c in CLASSES:
        table.add_column(f"{labels[c]}\n{c}", justify="right")
    table.add_column("合计", justify="right")
    for street in summary["streets"]:
        table.add_row(f"[bold]{street['name']}[/bold] {street['code'] or ''}",
                      *[f"[bold]{street['counts'][c]}[/bold]" for c in CLASSES],
                      f"[bold]{street['counts']['total']}[/bold]")
        for com in street["communities"]:
            table.add_row(f"  {com['name']} {com['code'] or ''}", *[str(com["counts"][c]) for c in CLASSES],
                          str(com["counts"]["total"]))
    total = summary["counts"]
    table.add_section()
    table.add_row("[bold]合计[/bold]", *[f"[bold]{total[c]}[/bold]" for c in CLASSES], f"[bold]{total['total']}[/bold]")
    return table


def _sensitivity_table(run: dict) -> Table:
    table = Table(title=f"阈值敏感性（±{100 * run['step']:.0f}%）：改变结论的小区数")
    for col in ("阈值", "threshold", "值", "−5%", "+5%"):
        table.add_column(col, justify="right" if col in ("值", "−5%", "+5%") else "left")
    for e in run["sensitivity"]:
        table.add_row(e["label_zh"], e["threshold"], f"{e['value']:g}", str(e["minus"]["changed"]),
                      str(e["plus"]["changed"]))
    return table


def classify(
    level: str = typer.Option("both", help="grid, micro_grid or both"),
    at: str | None = typer.Option(None, help="boundaries in force on this date (YYYY-MM-DD); default now"),
    out: Path = typer.Option(Path("data/classification"), help="output path without extension "
                                                                 "(the level and format are appended)"),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    implementation: str | None = typer.Option(None, help="sql or shapely (default: the configured, faster one)"),
    recompute: bool = typer.Option(False, help="recompute even when stored results are up to date"),
) -> None:
    """Classify compounds against grids and micro-grids; print the summary and write the full table."""
    from geo.classify import classification as gc
    from geo.store.load import parse_at

    if level not in LEVEL_CHOICES:
        raise fail(f"--level must be one of {', '.join(LEVEL_CHOICES)}")
    if fmt not in ("csv", "json"):
        raise fail("--format must be csv or json")
    levels = list(gc.LEVELS) if level == "both" else [level]
    with friendly_errors():
        when = parse_at(at)
        eng = engine()
        for lvl in levels:
            with eng.begin() as conn:
                run = gc.ensure_classification(conn, lvl, when, gc.get_rules(), force=recompute,
                                               implementation=implementation)
                rows = gc.read_results(conn, run["version"]["id"], lvl)
                overlaps = gc.read_overlaps(conn, run["version"]["id"], lvl)
            items = gc.records(rows, overlaps, lvl)
            console.print(_summary_table(lvl, gc.summary(rows), run))
            console.print(_sensitivity_table(run | {"step": gc.get_rules().sensitivity_step}))
            path = out.with_name(f"{out.name}-{lvl}.{fmt}")
            _write(path, fmt, items, _head(run, lvl))
            how = (f"computed by {run['implementation']} in {run['elapsed_s']:.2f} s" if run["recomputed"]
                   else f"stored results up to date (computed {run['computed_at']:%Y-%m-%d %H:%M})")
            console.print(f"{len(items)} compounds, {how}; written {path}")


def register(app: typer.Typer) -> None:
    """Add `gridatlas classify`."""
    app.command("classify")(classify)
