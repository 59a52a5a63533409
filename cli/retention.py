"""`gridatlas incidents retention|restore|partitions`: monthly partitions of the incidents, archiving and restoring."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.common import admin_engine, console, friendly_errors

NAME = "incidents"
app = typer.Typer(help="Incidents: monthly partitions, retention and archives (事件归档).", no_args_is_help=True)


@app.command()
def retention(
    archive_before: str = typer.Option(..., "--archive-before", help="archive every month before this one (YYYY-MM)"),
    to: Path | None = typer.Option(None, "--to", help="directory the month archives are written under"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be archived, change nothing"),
    ahead: int = typer.Option(3, help="also create the partitions of this many months ahead"),
    include_open: bool = typer.Option(False, "--include-open", help="archive months that still have open cases"),
) -> None:
    """Archive old months (gzip'd CSV + SHA-256 manifest per month) and drop their partitions."""
    from geo.incidents.retention import archive, ensure_partitions

    engine = admin_engine()
    with friendly_errors():
        done = archive(engine, archive_before, to, dry_run=dry_run, include_open=include_open)
        created = 0
        if not dry_run:
            with engine.begin() as conn:
                created = ensure_partitions(conn, months_ahead=ahead)
    title = f"months before {archive_before}" + (" (dry run: nothing changed)" if dry_run else " archived")
    table = Table("month", "rows per table", "partitions dropped", "archive", title=title)
    for m in done:
        where = f"{m.path} ({m.bytes:,} bytes)" if m.path else ("kept: " + m.skipped if m.skipped else "—")
        table.add_row(m.month, ", ".join(f"{t} {n:,}" for t, n in m.tables.items()), ", ".join(m.dropped), where)
    console.print(table)
    if not done:
        console.print("nothing to archive")
    if not dry_run:
        console.print(f"{created} partitions created ahead")


@app.command()
def restore(path: Path = typer.Argument(..., help="a month archive, or a directory of them")) -> None:
    """Load archived months back (their checksums verified first)."""
    from geo.incidents.retention import restore as restore_archive

    with friendly_errors():
        restored = restore_archive(admin_engine(), path)
    for table, n in restored.items():
        console.print(f"{table}: {n:,} rows restored")


@app.command()
def partitions(ahead: int = typer.Option(3, help="create the partitions of this many months ahead first")) -> None:
    """Create the monthly partitions ahead and list them with their row estimates."""
    from geo.incidents.retention import ensure_partitions
    from geo.incidents.retention import partitions as list_partitions

    engine = admin_engine()
    with friendly_errors(), engine.begin() as conn:
        created = ensure_partitions(conn, months_ahead=ahead)
        rows = list_partitions(conn)
    table = Table("table", "partition", "month", "rows (estimate)", title=f"{created} partitions created")
    for r in rows:
        table.add_row(r["table"], r["partition"], r["month"] or "default", f"{r['estimate']:,}")
    console.print(table)


def register(root: typer.Typer) -> None:
    """Add these commands to the `incidents` group, created here unless another module made it already."""
    for group in root.registered_groups:
        if group.name == NAME and group.typer_instance is not None:
            for command in app.registered_commands:
                group.typer_instance.registered_commands.append(command)
            return
    root.add_typer(app, name=NAME)
