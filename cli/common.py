"""Shared helpers for CLI commands: the console, the engine, the audit name of the caller, and turning domain errors
into exit codes."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from geo.errors import DomainError

console = Console()
err = Console(stderr=True)


def cli_actor() -> str:
    """The audit name of whoever runs the command on this machine."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name in some containers
        return "cli"


def engine(start_local: bool = True):
    """An engine on the configured database, starting the local cluster when no DATABASE_URL is set."""
    from geo.store import db

    return db.make_engine(db.database_url(start_local=start_local))


def admin_engine():
    """An engine as the schema owner (demo loads, maintenance), starting the local cluster when needed."""
    from geo.store import db

    return db.make_engine(db.admin_database_url(start_local=True))


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Print a domain error (`geo.errors.DomainError`, or a plain value/lookup/runtime error) as one clear line and
    exit 1, instead of a traceback."""
    try:
        yield
    except (DomainError, ValueError, RuntimeError, LookupError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


def fail(message: str) -> typer.Exit:
    """Print `message` to stderr and return an Exit(1) to raise."""
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)
