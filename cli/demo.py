"""`gridatlas demo …`: the deterministic synthetic district."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.common import admin_engine, console, friendly_errors

NAME = "demo"
app = typer.Typer(help="Synthetic demo district.", no_args_is_help=True)


@app.command()
def generate(
    scale: float = typer.Option(1.0, help="1 = seed-001 sized (977 compounds, 675 grids); 0.05 for tests"),
    seed: int = typer.Option(1, help="random seed: same seed, same district"),
    gpkg: Path | None = typer.Option(Path("data/demo.gpkg"), help="also write a GeoPackage here"),
    db: bool = typer.Option(True, help="write into the database"),
    replace: bool = typer.Option(False, help="delete the district already in the database first"),
) -> None:
    """Generate a district and write it into the database and a GeoPackage."""
    from demo.load import generate_and_load

    with friendly_errors():
        result = generate_and_load(admin_engine() if db else None, scale, seed, gpkg, replace)
    table = Table("layer", "rows", title=f"district scale={scale} seed={seed}")
    for layer, n in result["counts"].items():
        table.add_row(layer, f"{n:,}")
    console.print(table)
    console.print({k: round(v, 2) for k, v in result["timings"].items()})
    console.print(f"fingerprint {result['fingerprint']}")


@app.command()
def remove(
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be removed, remove nothing"),
) -> None:
    """Remove the demo district, keeping the real data imported beside it."""
    from demo.load import remove_demo

    with friendly_errors():
        result = remove_demo(admin_engine(), dry_run)
    table = Table("table", "rows", title="demo district " + ("(dry run: nothing removed)" if dry_run else "removed"))
    for name, n in result["removed"].items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    if result["kept_units"]:
        console.print(f"kept (they have boundaries of other versions too): {', '.join(result['kept_units'][:20])}")
