"""Conditional requests (RFC 9110 §13): reading ``If-Match`` into the plain tokens the domain compares.

The domain knows entity-tag *values* (e.g. `geo.plans.etags`) and compares tokens (a tag without its quotes); the
header's syntax is read here: a comma-separated list of entity tags, each maybe weak (``W/"…"``); ``*`` or an
empty header is the same as none.
"""

from __future__ import annotations


def _unquote(tag: str) -> str:
    return tag.strip().removeprefix("W/").strip('"')


def if_match_token(value: str | None) -> str | None:
    """The one token an If-Match header names (weak or strong, unquoted); None when absent, empty or ``*``."""
    if value is None or value.strip() in ("", "*"):
        return None
    return _unquote(value)


def if_match_tokens(value: str | None) -> list[str]:
    """The tokens of an If-Match list (weak or strong, unquoted); none when absent, empty or ``*``."""
    if value is None or value.strip() in ("", "*"):
        return []
    return [_unquote(t) for t in value.split(",") if t.strip()]
