"""`gridatlas incidents …`: the city's class table, incidents with their history, trusted Open311 keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from cli.common import cli_actor, console, engine, err, friendly_errors

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

NAME = "incidents"
app = typer.Typer(help="Incidents (事件): class table, history import, Open311 trust.", no_args_is_help=True)
classes_app = typer.Typer(help="The incident class table (事件分类表).", no_args_is_help=True)
app.add_typer(classes_app, name="classes")


def _pairs(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"{v!r} is not SOURCE=TARGET (e.g. 违章搭建=F05)")
        k, target = v.split("=", 1)
        out[k.strip()] = target.strip()
    return out


def _keep_audited(session: Session, dry_run: bool, action: str, target_type: str, target: str, after: dict) -> None:
    """Roll back a dry run's writes; otherwise audit the import (as this machine's user) and commit it."""
    from geo.access import audit

    if dry_run:
        session.rollback()
        return
    audit.record(session, cli_actor(), action, target_type, target, None, after=after, request_info=audit.LOCAL)
    session.commit()


def _print_refused(refused: list[dict], limit: int = 30) -> None:
    for r in refused[:limit]:
        err.print(f"  record {r['record']}: {r['reason']}")
    if len(refused) > limit:
        err.print(f"  … and {len(refused) - limit} more")


@classes_app.command("import")
def import_classes(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a .csv (UTF-8 or GBK) or .xlsx table"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be added, changed, refused"),
    map: str | None = typer.Option(None, "--map", help="column mapping, e.g. code=分类代码,name=分类名称"),
    encoding: str | None = typer.Option(None, help="the CSV's encoding (default: detected)"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
) -> None:
    """Import a class table (code, name, parent, time limit, department): all records or none."""
    from sqlalchemy.orm import Session

    from geo.incidents.classes import ClassTableRefused, import_class_table

    with friendly_errors(), Session(engine()) as session:
        try:
            plan = import_class_table(session.connection(), file, dry_run=dry_run, encoding=encoding,
                                      mapping=map)
        except ClassTableRefused as exc:
            _print_refused(exc.extra["plan"]["refused"])
            raise
        out = plan.to_json()
        _keep_audited(session, dry_run, "incident_classes.import", "incident_classes", file.name,
                      {"counts": out["counts"]})
    if as_json:
        console.print_json(json.dumps(out, ensure_ascii=False, default=str))
        return
    for line in plan.columns_read:
        console.print(line)
    table = Table("code", "name", "parent", "hours", "department", "",
                  title=f"{file.name}{' (dry run: nothing written)' if dry_run else ''}")
    for a in plan.added:
        table.add_row(a["code"], a["name"], a["major_code"] or "", f"{a['time_limit_hours']:g}",
                      a["department"] or "", "added")
    for c in plan.changed:
        table.add_row(c["code"], "", "", "", "", "changed: " + ", ".join(
            f"{k} {v[0]!r} → {v[1]!r}" for k, v in c["changes"].items()))
    console.print(table)
    console.print(", ".join(f"{k} {v}" for k, v in out["counts"].items()))
    for note in plan.notes:
        console.print(f"note: {note}")
    if plan.refused:
        _print_refused(plan.refused)
        if dry_run:
            err.print("[yellow]records are refused: the import would write nothing[/yellow]")


@classes_app.command("list")
def list_classes() -> None:
    """The class table as loaded."""
    from geo.incidents.closed_loop import incident_classes

    with friendly_errors(), engine().connect() as conn:
        rows = incident_classes(conn)
    table = Table("code", "name", "parent", "hours", "department")
    for r in rows:
        table.add_row(r["code"], r["name"], r["major_code"] or "", f"{r['time_limit_hours']:g}",
                      r["department"] or "")
    console.print(table)


@app.command("import")
def import_incidents(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help=".csv, .xlsx or .geojson"),
    dry_run: bool = typer.Option(False, "--dry-run", help="map, check and attribute; write nothing"),
    category: list[str] = typer.Option(None, "--category", help="map a source category: 违章搭建=F05 (repeat)"),
    state: list[str] = typer.Option(None, "--state", help="map a source state: 已办结=closed (repeat)"),
    map: str | None = typer.Option(None, "--map", help="column mapping, e.g. category=问题分类"),
    crs: str | None = typer.Option(None, help="the file's CRS: EPSG code, PROJ string, gcj02 or bd09"),
    encoding: str | None = typer.Option(None, help="the CSV's encoding (default: detected)"),
    layer: str | None = typer.Option(None, help="sheet or layer"),
    skip_refused: bool = typer.Option(False, "--skip-refused", help="import the records that pass"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Import incidents with their report times, states and history, all or nothing."""
    from sqlalchemy.orm import Session

    from geo.incidents.importer import HistoryOptions, IncidentImportRefused, import_incident_history

    options = HistoryOptions(category_map=_pairs(category), state_map=_pairs(state), mapping=map, crs=crs,
                             encoding=encoding, source_layer=layer, dry_run=dry_run, skip_refused=skip_refused,
                             actor=cli_actor(), filename=file.name)
    with friendly_errors(), Session(engine()) as session:
        try:
            report = import_incident_history(session.connection(), file, options)
        except IncidentImportRefused as exc:
            rep = exc.extra["report"]
            for u in rep["unknown_categories"]:
                err.print(f"  unknown category {u['category']!r} ({u['records']} records): map it with "
                          f"--category '{u['category']}=<class code>'")
            for u in rep["unknown_states"]:
                err.print(f"  unknown state {u['state']!r} ({u['records']} records): --state '{u['state']}=…'")
            _print_refused(rep["problems"])
            raise
        out = report.to_json()
        _keep_audited(session, dry_run, "incident.import", "incidents", file.name,
                      {"counts": out["counts"], "by_state": out["by_state"]})
    if as_json:
        console.print_json(json.dumps(out, ensure_ascii=False, default=str))
        return
    for line in report.columns_read:
        console.print(line)
    mapped = Table("category", "class", "how", "records", title="categories")
    for m in report.category_mapping:
        mapped.add_row(m["category"], f"{m['class_code']} {m['class_name']}", m["how"], str(m["records"]))
    for u in report.unknown_categories:
        mapped.add_row(u["category"], "[red]unknown[/red]", u["reason"], str(u["records"]))
    console.print(mapped)
    for s in report.state_mapping:
        console.print(f"state {s['state']!r} → {s['to']} ({s['name']}), {s['records']} records")
    for u in report.unknown_states:
        console.print(f"[red]unknown state[/red] {u['state']!r}, {u['records']} records")
    console.print(", ".join(f"{k} {v}" for k, v in out["counts"].items()))
    console.print(f"by state: {out['by_state']}; attribution: {out['attribution']}; period: {out['period']}")
    for note in report.notes:
        console.print(f"note: {note}")
    _print_refused(report.problems)
    if dry_run:
        console.print("(dry run: nothing written)")


@app.command("trust-key")
def trust_key(
    key: str = typer.Argument(..., help="the API key's id, prefix or full value"),
    revoke: bool = typer.Option(False, "--revoke", help="stop trusting it"),
) -> None:
    """Trust an API key to state report times (Open311 requested_datetime), or stop trusting it."""
    from sqlalchemy.orm import Session

    from geo.access import audit
    from geo.incidents.open311 import set_key_trust

    with friendly_errors(), Session(engine()) as session:
        change = set_key_trust(session.connection(), key, not revoke)
        audit.record(session, cli_actor(), "api_key.trust", "api_key", change["id"], None,
                     before={"trusted": change["before"]}, after={"trusted": change["after"]},
                     request_info=audit.LOCAL)
        session.commit()
    console.print(f"key {change['prefix']} ({change['name']}): {'trusted' if not revoke else 'not trusted'}")
