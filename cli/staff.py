"""`gridatlas staff …` (the staff register) and `gridatlas coverage …` (coverage report, steward planning)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cli.common import cli_actor, console, engine, err, friendly_errors

staff_app = typer.Typer(help="Staff register (人员): import people and assignments.", no_args_is_help=True)
coverage_app = typer.Typer(help="Staff coverage (人员覆盖) and steward planning (管家分配).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the `staff` and `coverage` command groups."""
    app.add_typer(staff_app, name="staff")
    app.add_typer(coverage_app, name="coverage")


@staff_app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a .csv or .xlsx sheet (中文或英文表头)"),
    valid_from: str | None = typer.Option(None, help="start date for rows without one (default today)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check every row, write nothing"),
) -> None:
    """Import people and their assignments from a sheet: all rows or none."""
    from sqlalchemy.orm import Session

    from geo.access import audit
    from geo.staff import register as staff

    with friendly_errors():
        eng = engine()
        with Session(eng) as session:
            try:
                result = staff.import_staff(session, file, file.name, staff.as_date(valid_from))
            except staff.StaffImportError as exc:
                for p in exc.problems:
                    err.print(f"  {p}")
                raise
            if dry_run:
                session.rollback()
            else:
                audit.record(session, cli_actor(), "staff.import", "staff", file.name, None,
                             after=result.as_dict(), request_info=audit.LOCAL)
                session.commit()
    table = Table("", "count", title=f"{file.name}{' (dry run: nothing written)' if dry_run else ''}")
    for k, v in result.as_dict().items():
        table.add_row(k, f"{v:,}")
    console.print(table)


def _pct(v) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


@coverage_app.command("report")
def report(
    street: str | None = typer.Option(None, help="street code (9 digits)"),
    community: str | None = typer.Option(None, help="community code (12 digits)"),
    grid: str | None = typer.Option(None, help="grid code (15 digits)"),
    at: str | None = typer.Option(None, help="the day, YYYY-MM-DD (default today)"),
    gaps: Path | None = typer.Option(None, help="also write the gaps to this .csv or .xlsx file"),
    as_json: bool = typer.Option(False, "--json", help="print the totals as JSON"),
) -> None:
    """Coverage totals and status counts; optionally the gap list as CSV/XLSX for the community office."""
    from geo.staff import coverage as cov

    with friendly_errors():
        prefix = cov.scope_prefix(street, community, grid)
        with engine().connect() as conn:
            r = cov.coverage_report(conn, prefix, at)
        if gaps is not None:
            if gaps.suffix.lower() not in (".csv", ".xlsx"):
                raise ValueError("--gaps needs a .csv or .xlsx file name")
            gaps.write_bytes(cov.gaps_csv(r) if gaps.suffix.lower() == ".csv" else cov.gaps_xlsx(r))
    t = r.totals
    if as_json:
        console.print_json(json.dumps({"at": str(r.at), "scope": r.prefix, **t}, ensure_ascii=False))
        return
    table = Table("measure", "count", "of", "share", title=f"coverage {r.prefix or 'district'} on {r.at}")
    table.add_row("comprehensive grids with a full-time worker", f"{t['grids_with_fulltime_worker']:,}",
                  f"{t['comprehensive_grids']:,}",
                  _pct(t["share_grids_with_fulltime_worker"]))
    table.add_row("buildings with a head", f"{t['buildings_with_head']:,}", f"{t['buildings']:,}",
                  _pct(t["share_buildings_with_head"]))
    table.add_row("units with a head", f"{t['units_with_head']:,}", f"{t['units']:,}", _pct(t["share_units_with_head"]))
    table.add_row("households with a steward", f"{t['households_with_steward']:,}", f"{t['households']:,}",
                  _pct(t["share_households_with_steward"]))
    table.add_row(f"stewards over {t['steward_households_max']} households", f"{t['stewards_over']:,}",
                  f"{t['stewards']:,}", "")
    table.add_row(f"stewards under {t['steward_households_min']} households", f"{t['stewards_under']:,}",
                  f"{t['stewards']:,}", "")
    console.print(table)
    status = Table("level", *cov.STATUSES, title="status counts")
    for level, counts in t["status_counts"].items():
        status.add_row(level, *[f"{counts.get(s, 0):,}" if s in counts else "" for s in cov.STATUSES])
    console.print(status)
    if gaps is not None:
        console.print(f"gaps written to {gaps}")


@coverage_app.command("plan")
def plan(
    street: str | None = typer.Option(None, help="street code (9 digits)"),
    community: str | None = typer.Option(None, help="community code (12 digits)"),
    at: str | None = typer.Option(None, help="the plan's day (default today)"),
    allow_move: bool = typer.Option(False, "--allow-move", help="existing steward assignments may move"),
    release_over_capacity: bool = typer.Option(True, help="move a steward already over the maximum anyway"),
    time_limit: float = typer.Option(0.25, help="seconds per community searching the fewest unit splits"),
    processes: int = typer.Option(1, help="communities solved in parallel processes"),
    apply: bool = typer.Option(False, "--apply", help="write the plan (default: dry run)"),
    show: int = typer.Option(20, help="communities to list"),
) -> None:
    """Plan stewards community by community (5–15 households each, minimal walking distance); dry run by default."""
    from sqlalchemy.orm import Session

    from geo.access import audit
    from geo.staff import stewards
    from geo.staff.coverage import scope_prefix

    with friendly_errors():
        prefix = scope_prefix(street, community)
        eng = engine()
        with Session(eng) as session:
            conn = session.connection()
            p = stewards.plan_stewards(conn, prefix, at, allow_move, release_over_capacity, time_limit_s=time_limit,
                                       processes=processes)
            written = None
            if apply:
                written = stewards.apply_plan(conn, p)
                audit.record(session, cli_actor(), "coverage.plan.apply", "plan", prefix or "district", prefix or None,
                             before={"ended_ids": written["ended_ids"][:5000]},
                             after={"summary": p.summary(), "created_ids": written["created_ids"][:5000]},
                             request_info=audit.LOCAL)
                session.commit()
    table = Table("community", "households", "stewards", "feasible", "distance m", "greedy m", "gap", "splits",
                  "solve s", title=f"steward plan {prefix or 'district'} on {p.at}")
    for c in sorted(p.communities, key=lambda c: (c.feasible, c.code))[:show]:
        gap = c.gap_to_greedy
        table.add_row(f"{c.name} {c.code}", f"{c.households:,}", f"{c.stewards:,}", "yes" if c.feasible else "NO",
                      f"{c.distance_m:,.0f}", "" if c.greedy_distance_m is None else f"{c.greedy_distance_m:,.0f}",
                      "" if gap is None else f"{gap * 100:.1f}%", f"{c.splits:,}", f"{c.solve_s:.2f}")
    console.print(table)
    for c in p.communities:
        if not c.feasible:
            console.print(f"[yellow]{c.explanation}[/yellow]")
    console.print_json(json.dumps(p.summary(), ensure_ascii=False))
    if written is not None:
        console.print(f"written: {written['created']:,} assignments created, {written['ended']:,} ended")
    else:
        console.print("dry run: nothing written (add --apply to write)")
