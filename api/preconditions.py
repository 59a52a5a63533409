"""Conditional requests (RFC 9110 §13): reading ``If-Match`` into the plain tokens the domain compares.

The domain knows entity-tag *values* (e.g. `geo.plans.etags`) and compares tokens (a tag without its quotes); the
header's syntax is read here: a comma-separated list of entity tags, each maybe weak (``W/"…"``); ``*`` or an
empty header is the same as none.

``If-Match`` uses the strong comparison (RFC 9110 §13.1.1): a weak tag never matches, so a write naming one is
refused with 412 (``weak-etag``). Writes that must name the version they change (plan edits, publishes, incident
transitions) call `required_if_match`: without the header (or with ``*``) they answer 428 (``precondition-required``)
and nothing is written.
"""

from __future__ import annotations

from api.problems import Problem


def _unquote(tag: str) -> str:
    return tag.strip().removeprefix("W/").strip('"')


def _refuse_weak(value: str) -> None:
    for tag in value.split(","):
        if tag.strip().startswith("W/"):
            raise Problem(412, f"If-Match {tag.strip()} is a weak entity tag; If-Match compares strong tags only "
                               "(send the ETag exactly as it was given)", type="weak-etag")


def if_match_token(value: str | None) -> str | None:
    """The one token an If-Match header names (strong, unquoted); None when absent, empty or ``*``;
    412 ``weak-etag`` for a weak tag."""
    if value is None or value.strip() in ("", "*"):
        return None
    _refuse_weak(value)
    return _unquote(value)


def if_match_tokens(value: str | None) -> list[str]:
    """The tokens of an If-Match list (strong, unquoted); none when absent, empty or ``*``; 412 ``weak-etag`` when
    one is weak."""
    if value is None or value.strip() in ("", "*"):
        return []
    _refuse_weak(value)
    return [_unquote(t) for t in value.split(",") if t.strip()]


def required_if_match(value: str | None, what: str) -> str:
    """The token of the If-Match a write must carry: 428 ``precondition-required`` when it is absent, empty or
    ``*`` (it must name the version being changed), 412 ``weak-etag`` when the tag is weak."""
    token = if_match_token(value)
    if token is None:
        raise Problem(428, f"{what} needs If-Match with the ETag of the version you change (read it first: the "
                           "ETag header of the last answer)", type="precondition-required")
    return token
