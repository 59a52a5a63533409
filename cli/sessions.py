"""`gridatlas sessions …`: login sessions (登录会话), the phones' device sessions among them: list and revoke."""

from __future__ import annotations

import typer
from rich.table import Table

from cli import common
from cli.common import cli_actor, console, friendly_errors

NAME = "sessions"
app = typer.Typer(help="Login sessions: each phone (device) and API login; revoke a lost phone's.",
                  no_args_is_help=True)


def _stamp(value) -> str:
    return value.isoformat(timespec="minutes") if value else "—"


@app.command("list")
def list_(
    user: str | None = typer.Option(None, "--user", help="only this user's sessions"),
    all_: bool = typer.Option(False, "--all", help="also revoked and expired sessions"),
) -> None:
    """List login sessions, newest first (id, user, device, last used, expiry, state)."""
    from geo.access import sessions
    from geo.store.db import session_scope

    with friendly_errors(), session_scope(common.engine()) as session:
        rows = sessions.list_sessions(session, user, active_only=not all_)
        table = Table("id", "user", "device", "created", "last used", "expires", "state")
        for f in rows:
            state = f"revoked ({f.revoked_reason})" if f.revoked_at else "active"
            table.add_row(f.id, f.username, (f.device or "(API login)")[:60], _stamp(f.created_at),
                          _stamp(f.last_used_at), _stamp(f.expires_at), state)
    console.print(table)


@app.command()
def revoke(session_id: str = typer.Argument(..., help="the id `gridatlas sessions list` shows")) -> None:
    """End a login session at once: its tokens stop working; the phone logs in again (audited)."""
    from geo.access import audit, sessions
    from geo.store.db import session_scope

    with friendly_errors(), session_scope(common.engine()) as session:
        family = sessions.get_session(session, session_id)
        if family is None:
            console.print(f"[red]there is no login session {session_id}[/red]")
            raise typer.Exit(1)
        ended = sessions.revoke(session, session_id, f"revoked by {cli_actor()}"[:40])
        if ended:
            audit.record(session, cli_actor(), "auth.session_revoke", "user", family.username, None, None,
                         {"session": session_id, "device": family.device}, audit.LOCAL)
    console.print(f"{session_id}: " + ("revoked" if ended else "was already ended"))
