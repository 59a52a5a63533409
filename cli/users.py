"""`gridatlas users …`: add, list, disable/enable users and reset passwords; every change is audited."""

from __future__ import annotations

import typer
from rich.table import Table

from cli import common
from cli.common import cli_actor, console, friendly_errors

NAME = "users"
app = typer.Typer(help="Users: roles (admin, planner, leader, worker) and jurisdictions.", no_args_is_help=True)


def _read_password(ask: bool) -> tuple[str, bool]:
    """(password, generated?): typed twice when `ask`, else random."""
    from geo.access.users import generate_password

    if ask:
        return typer.prompt("password", hide_input=True, confirmation_prompt=True), False
    return generate_password(), True


@app.command()
def add(
    username: str = typer.Argument(..., help="login name"),
    role: str = typer.Option(..., "--role", "-r", help="admin, planner, leader or worker"),
    jurisdiction: str | None = typer.Option(None, "--jurisdiction", "-j",
                                            help="street (9 digits), community (12) or grid (15) code"),
    ask_password: bool = typer.Option(False, "--ask-password", help="type the password instead of generating one"),
) -> None:
    """Create a user; a random password is printed once unless --ask-password."""
    from geo.access import audit
    from geo.access.users import check_jurisdiction, check_password_policy, create_user, user_summary
    from geo.store.db import session_scope

    password, generated = _read_password(ask_password)
    with friendly_errors(), session_scope(common.engine()) as session:
        check_password_policy(password)
        check_jurisdiction(session, role, jurisdiction)
        user = create_user(session, username, password, role, jurisdiction)
        audit.record(session, cli_actor(), "user.create", "user", user.username, user.jurisdiction_code,
                     after=user_summary(user), request_info=audit.LOCAL)
    console.print(f"user [cyan]{username}[/cyan] created ({role}{', ' + jurisdiction if jurisdiction else ''})")
    if generated:
        console.print(f"password: [bold]{password}[/bold]  (shown once)")


@app.command("list")
def list_(within: str | None = typer.Option(None, help="only users whose jurisdiction lies in this code")) -> None:
    """List users with role, jurisdiction and state."""
    from geo.access.users import list_users, user_summary
    from geo.store.db import session_scope

    with friendly_errors(), session_scope(common.engine()) as session:
        rows = [user_summary(u) for u in list_users(session, within)]
    table = Table("username", "role", "jurisdiction", "state", "created")
    for row in rows:
        table.add_row(row["username"], row["role"], row["jurisdiction_code"] or "(whole district)",
                      "disabled" if row["disabled"] else "active", (row["created_at"] or "")[:19])
    console.print(table)


def _set_disabled(username: str, disabled: bool) -> None:
    from geo.access import audit
    from geo.access.users import get_user, set_disabled, user_summary
    from geo.store.db import session_scope

    with friendly_errors(), session_scope(common.engine()) as session:
        user = get_user(session, username)
        before = user_summary(user)
        set_disabled(session, user, disabled)
        audit.record(session, cli_actor(), "user.disable" if disabled else "user.enable", "user", username,
                     user.jurisdiction_code, before, user_summary(user), audit.LOCAL)


@app.command()
def disable(username: str = typer.Argument(...)) -> None:
    """Disable a user: their live tokens and API keys stop working at once."""
    _set_disabled(username, True)
    console.print(f"user [cyan]{username}[/cyan] disabled")


@app.command()
def enable(username: str = typer.Argument(...)) -> None:
    """Re-enable a disabled user (they log in again; old tokens stay invalid)."""
    _set_disabled(username, False)
    console.print(f"user [cyan]{username}[/cyan] enabled")


@app.command("reset-password")
def reset_password(
    username: str = typer.Argument(...),
    ask_password: bool = typer.Option(False, "--ask-password", help="type the password instead of generating one"),
) -> None:
    """Give a user a new password (random, printed once, unless --ask-password); their tokens stop working."""
    from geo.access import audit
    from geo.access.users import get_user, set_password
    from geo.store.db import session_scope

    password, generated = _read_password(ask_password)
    with friendly_errors(), session_scope(common.engine()) as session:
        user = get_user(session, username)
        set_password(session, user, password)
        audit.record(session, cli_actor(), "user.reset_password", "user", username, user.jurisdiction_code,
                     request_info=audit.LOCAL)
    console.print(f"password of [cyan]{username}[/cyan] reset")
    if generated:
        console.print(f"password: [bold]{password}[/bold]  (shown once)")


@app.command()
def unlock(
    username: str = typer.Argument(...),
    address: str | None = typer.Option(None, "--address", help="also forget this address's failed logins"),
) -> None:
    """Forget a user's failed logins, ending the login delay they built up (audited)."""
    from geo.access import audit, throttle
    from geo.access.users import get_user
    from geo.store.db import session_scope

    with friendly_errors(), session_scope(common.engine()) as session:
        user = get_user(session, username)
        cleared = throttle.unlock(session, user.username)
        if address:
            cleared += throttle.unlock(session, remote_addr=address)
        audit.record(session, cli_actor(), "user.unlock", "user", user.username, user.jurisdiction_code,
                     None, {"cleared": cleared, "address": address}, audit.LOCAL)
    console.print(f"[cyan]{username}[/cyan]: {cleared} failed login(s) forgotten")
