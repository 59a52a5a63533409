"""The domain's errors: each says what went wrong in words and names its problem (RFC 9457 `type` slug).

The domain knows nothing of HTTP. An error says which *kind* of failure it is (the input is invalid, the thing does
not exist, the caller may not, a precondition failed …); the HTTP layer maps kinds to status codes once
(`api.problems`), and the CLI prints the message. Raise a subclass of `DomainError` with a `slug`, a `kind` and,
where useful, extra members for the problem document (``raise PlanNotFound("…", plan_id=3)``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

#: What went wrong, independent of any protocol.
Kind = Literal[
    "invalid",                 # the input cannot be used as given (422)
    "bad-request",             # the request itself is malformed (400)
    "not-found",               # the thing named does not exist, or the caller may not know it does (404)
    "forbidden",               # the caller may not do this (403)
    "unauthenticated",         # the caller is not known (401)
    "conflict",                # the state of things forbids it now (409)
    "precondition-failed",     # the caller's version is stale (412)
    "precondition-required",   # the caller must say which version they change (428)
    "too-large",               # more than the limits allow (413)
    "too-many",                # slow down (429)
    "unsupported",             # a format or media type we do not read (415)
    "unavailable",             # a dependency (the database) is down; try again (503)
    "failed",                  # the operation broke off part-way and was rolled back (500)
]


class DomainError(Exception):
    """Base of the errors the domain raises on purpose: a message, a problem slug, a kind, extra members."""

    slug: ClassVar[str] = "domain-error"
    kind: ClassVar[Kind] = "invalid"
    #: A short human title for the problem document (the status phrase when None).
    title: ClassVar[str | None] = None

    def __init__(self, message: str, *, slug: str | None = None, kind: Kind | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        if slug is not None:
            self.slug = slug  # type: ignore[misc]  # an instance may refine its class's slug
        if kind is not None:
            self.kind = kind  # type: ignore[misc]
        self.extra = extra


class NotFound(DomainError):
    """The thing named does not exist (or lies where the caller may not know of it)."""

    slug = "not-found"
    kind = "not-found"


class OutOfJurisdiction(DomainError):
    """The caller's jurisdiction does not cover what they want to read or change."""

    slug = "out-of-jurisdiction"
    kind = "forbidden"


class Conflict(DomainError):
    """The current state of things forbids the change."""

    slug = "conflict"
    kind = "conflict"
