"""The `gridatlas` command (Typer): one sub-command group per concept, each in its own module, listed below."""

from __future__ import annotations

import typer

from cli import classify, db, demo, incidents, io, keys, retention, serve, sessions, staff, users

app = typer.Typer(help="GridAtlas: grid-mapping for community governance (网格化管理).", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)

#: Command groups (`gridatlas db …`); a group module defines `app` and `NAME`.
for group in (db, demo, incidents, keys, sessions, users):
    app.add_typer(group.app, name=group.NAME)
#: Top-level commands (`gridatlas serve`, `gridatlas import …`); such a module defines `register(app)`.
for module in (classify, io, retention, serve, staff):
    module.register(app)
