"""`gridatlas keys …`: API keys for integrations (shown once, stored hashed, revocable); audited."""

from __future__ import annotations

import typer
from rich.table import Table

from cli import common
from cli.common import cli_actor, console, friendly_errors

NAME = "keys"
app = typer.Typer(help="API keys for integrations (X-API-Key header).", no_args_is_help=True)


@app.command()
def create(
    name: str = typer.Argument(..., help="what the integration is, e.g. '12345 hotline bridge'"),
    user: str = typer.Option(..., "--user", "-u", help="the user the key acts as (role and jurisdiction)"),
) -> None:
    """Create a key; the full key is printed once (only its hash is stored)."""
    from geo.access import apikeys, audit
    from geo.access.users import get_user
    from geo.store.db import session_scope

    with friendly_errors(), session_scope(common.engine()) as session:
        owner = get_user(session, user)
        row, key = apikeys.create_key(session, owner, name)
        audit.record(session, cli_actor(), "apikey.create", "api_key", row.prefix, owner.jurisdiction_code,
                     after=apikeys.key_summary(row, owner.username), request_info=audit.LOCAL)
        key_id = row.id
    console.print(f"key {key_id} for [cyan]{user}[/cyan] ({name}):")
    console.print(f"[bold]{key}[/bold]")
    console.print("shown once: send it as the 'X-API-Key' header. Revoke with `gridatlas keys revoke "
                  f"{key_id}`.", highlight=False)


@app.command()
def revoke(key: str = typer.Argument(..., help="the key's id, prefix or full value")) -> None:
    """Revoke a key at once (the row stays on record)."""
    from geo.access import apikeys, audit
    from geo.store.db import session_scope

    with friendly_errors(), session_scope(common.engine()) as session:
        row = apikeys.find_key(session, key)
        before = apikeys.key_summary(row)
        changed = apikeys.revoke_key(session, row)
        owner = apikeys.key_owner(session, row)
        if changed:
            audit.record(session, cli_actor(), "apikey.revoke", "api_key", row.prefix, owner.jurisdiction_code,
                         before, apikeys.key_summary(row, owner.username), audit.LOCAL)
        prefix = row.prefix
    console.print(f"key {prefix} {'revoked' if changed else 'was already revoked'}")


@app.command("list")
def list_(user: str | None = typer.Option(None, "--user", "-u", help="only this user's keys")) -> None:
    """List keys: id, prefix, owner, state, last use (never the key itself)."""
    from geo.access import apikeys
    from geo.store.db import session_scope

    with friendly_errors(), session_scope(common.engine()) as session:
        rows = [apikeys.key_summary(row, name) for row, name in apikeys.list_keys(session, user)]
    table = Table("id", "prefix", "user", "name", "state", "created", "last used")
    for r in rows:
        table.add_row(str(r["id"]), r["prefix"], r["username"], r["name"],
                      "revoked" if r["revoked_at"] else "active", (r["created_at"] or "")[:19],
                      (r["last_used_at"] or "never")[:19])
    console.print(table)
