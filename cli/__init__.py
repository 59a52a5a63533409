"""The `gridatlas` command (Typer): one sub-command group per concept, discovered from this package."""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(help="GridAtlas: grid-mapping for community governance (网格化管理).", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)


def _register() -> None:
    """Each module here defines `app` (a Typer group named by NAME) or `register(app)` for top-level commands."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(app)
        elif hasattr(module, "app"):
            app.add_typer(module.app, name=getattr(module, "NAME", info.name))


_register()
