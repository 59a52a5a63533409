"""`gridatlas db …`: the project-managed local PostGIS and the schema migrations."""

from __future__ import annotations

import json

import typer

from cli.common import console, friendly_errors

NAME = "db"
app = typer.Typer(help="Database: local PostGIS cluster and migrations.", no_args_is_help=True)


@app.command()
def up() -> None:
    """Start the local PostGIS cluster (or check DATABASE_URL), migrate, and print the URL."""
    from geo.store import db

    with friendly_errors():
        admin_url = db.admin_database_url(start_local=True)
        db.migrate(admin_url)
        url = db.database_url()
        db.ensure_service_login(admin_url, url)
    console.print(db.make_engine(url).url.render_as_string(hide_password=True))


@app.command()
def down() -> None:
    """Stop the local cluster (does nothing with DATABASE_URL)."""
    from geo.settings import get_settings
    from geo.store import db, localdb

    if get_settings().database_url:
        console.print("DATABASE_URL is set: no local cluster to stop")
        return
    with friendly_errors():
        stopped = localdb.down(db.local_cluster())
    console.print("stopped" if stopped else "not running")


@app.command()
def status() -> None:
    """Print whether the local cluster runs, its URL (password hidden) and the schema revision."""
    from geo.settings import get_settings
    from geo.store import db, localdb

    settings = get_settings()
    if settings.database_url:
        info = {"database_url": db.make_engine(db.database_url()).url.render_as_string(hide_password=True)}
    else:
        info = localdb.status(db.local_cluster())
    if info.get("running", True):
        try:
            heads, current = db.migration_heads(db.database_url())
            info["migrations"] = {"database": sorted(current), "code": sorted(heads)}
        except Exception as exc:  # status must report, not fail
            info["migrations"] = f"unavailable: {exc.__class__.__name__}"
    console.print_json(json.dumps(info, default=str))


@app.command()
def migrate(revision: str = typer.Argument("heads", help="target revision")) -> None:
    """Upgrade the schema (to all heads by default)."""
    from geo.store import db

    with friendly_errors():
        db.migrate(db.admin_database_url(start_local=True), revision)
    console.print(f"migrated to {revision}")


@app.command()
def downgrade(revision: str = typer.Argument(..., help="target revision, e.g. base or -1")) -> None:
    """Downgrade the schema."""
    from geo.store import db

    with friendly_errors():
        db.downgrade(db.admin_database_url(start_local=True), revision)
    console.print(f"downgraded to {revision}")
