"""`gridatlas serve`: bring up the database, migrate, load the demo when empty, create a first admin, serve."""

from __future__ import annotations

import typer

from cli.common import console, err, friendly_errors


def register(app: typer.Typer) -> None:
    """Add `serve` as a top-level command."""
    app.command()(serve)


def serve(
    host: str = typer.Option(None, help="address to bind (default from settings: 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default from settings: 8000)"),
    demo_scale: float = typer.Option(1.0, help="scale of the demo district loaded into an empty database"),
    demo: bool = typer.Option(True, help="load the demo district when the database is empty"),
) -> None:
    """Run the service: PostGIS up, migrations, demo data if empty, first admin, API and maps."""
    import uvicorn

    from demo.load import load_demo_if_empty
    from geo.access.users import ensure_first_admin
    from geo.settings import get_settings
    from geo.store import db

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    with friendly_errors():
        admin_url = db.admin_database_url(start_local=True)
        db.migrate(admin_url)
        db.ensure_service_login(admin_url, db.database_url())
        engine = db.get_engine()
        console.print(f"database: {engine.url.render_as_string(hide_password=True)}")
        if demo:
            with console.status(f"loading the demo district (scale {demo_scale}) into the empty database…"):
                # as the schema owner: replacing a district restarts the tables' sequences, which only it may do
                admin = db.make_engine(admin_url)
                loaded = load_demo_if_empty(admin, scale=demo_scale)
                admin.dispose()
            if loaded:
                console.print(f"demo district loaded: {loaded['counts']}")
        created = ensure_first_admin(engine)
        if created:
            err.print(
                f"[bold]first admin created[/bold]: user [cyan]{created[0]}[/cyan] password [cyan]{created[1]}[/cyan]"
                "  (shown once; change it with `gridatlas users reset-password admin`)"
            )
    from api.main import create_app

    console.print(f"[bold green]GridAtlas serving on http://{host}:{port}[/bold green]  "
                  f"(API docs http://{host}:{port}/docs, mobile page http://{host}:{port}/m)")
    from api.proxies import uvicorn_options

    uvicorn.run(create_app(engine), host=host, port=port, log_level="info", **uvicorn_options())
