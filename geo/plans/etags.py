"""Entity tags of plans and of published boundaries (版本标识): their values, not the HTTP header syntax.

A plan's entity tag names its revision (``"plan-3-r2"``); the published boundaries' entity tag is the
fingerprint of what a plan covers (``"c5-<md5>"`` for a community, ``"s1-<md5>"`` for a street; see
`geo.plans.drafts.community_token`). The domain compares *tokens* (the tag without its quotes); reading
``If-Match`` (weak ``W/`` tags, comma lists, ``*``) is the HTTP layer's job (``api.preconditions``).
"""

from __future__ import annotations


def plan_token(plan_id: int, revision: int) -> str:
    """The token naming a plan at a revision."""
    return f"plan-{plan_id}-r{revision}"


def plan_etag(plan_id: int, revision: int) -> str:
    """The entity tag of a plan at a revision (quoted token)."""
    return f'"{plan_token(plan_id, revision)}"'


def version_etag(token: str) -> str:
    """The entity tag of published boundaries (quoted token)."""
    return f'"{token}"'


def names_plan(token: str, plan_id: int) -> bool:
    """Whether a token is meant for this plan (it names one of its revisions, maybe malformed)."""
    return f"plan-{plan_id}-r" in token


def revision_in_token(token: str, plan_id: int) -> int | None:
    """The revision a token names; None when it is not a token of this plan."""
    prefix = f"plan-{plan_id}-r"
    if not token.startswith(prefix) or not token[len(prefix):].isdigit():
        return None
    return int(token[len(prefix):])


def etag_list(tokens: list[str]) -> str:
    """Tokens as a comma-separated list of entity tags (for messages)."""
    return ", ".join(version_etag(t) for t in tokens)
