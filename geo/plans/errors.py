"""What redrawing grids refuses (改划方案的拒绝): one `DomainError` subclass per answer the API gives.

A helper deep inside an operation raises a plain `PlanError`; the entry point the caller used decides what kind of
refusal it is (an operation refused, nothing to undo, a plan that cannot be published …) with `refused_as`, so the
same helper's error answers as that entry point's problem. Errors that already say more (a stale revision or stale
published boundaries, an unknown plan or scope) keep their own class.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar, ParamSpec, TypeVar

from geo.errors import DomainError, Kind, NotFound
from geo.plans.etags import etag_list, plan_etag, version_etag

P = ParamSpec("P")
R = TypeVar("R")


class PlanError(DomainError):
    """An operation or plan request that cannot be carried out (nothing was changed)."""

    slug: ClassVar[str] = "plan-error"
    kind: ClassVar[Kind] = "invalid"


class PlanScopeNotFound(PlanError):
    """No community or street with the code a new plan names."""

    kind = "not-found"


class PlanNotFound(NotFound):
    """No plan with that id."""


class OperationRefused(PlanError):
    """An operation that cannot be applied to the plan (the plan is unchanged)."""

    slug = "plan-operation"


class NothingToUndo(PlanError):
    """Undo found no operation to undo (or the plan is no longer a draft)."""

    slug = "nothing-to-undo"
    kind = "conflict"


class NotPublishable(PlanError):
    """The plan cannot be published (not a draft, validation errors, no free codes …)."""

    slug = "plan-not-publishable"
    kind = "conflict"


class SuggestionRefused(PlanError):
    """No suggestion can be made for the plan, or it cannot be applied."""

    slug = "plan-suggest"


class RollbackRefused(PlanError):
    """The version cannot be rolled back."""

    slug = "rollback"
    kind: ClassVar[Kind] = "conflict"


class VersionNotFound(RollbackRefused):
    """No boundary version with that id."""

    kind = "not-found"


class StaleRevision(PlanError):
    """The caller names an older revision of the plan; `changes` lists the operations since."""

    slug = "stale-plan"
    kind = "precondition-failed"

    def __init__(self, message: str, current: int, changes: list[dict], *, plan_id: int):
        super().__init__(message, current_revision=current, current_etag=plan_etag(plan_id, current),
                         changes=changes)
        self.current = current
        self.changes = changes


class StalePublished(PlanError):
    """The published boundaries changed since the plan (or the caller's expected version) was taken.

    `current` is the current token, `changes` the versions in between; `etags` (community code → current token)
    names every community whose token the caller must send (community rollback), and then the answer's
    ``current_etag`` is the whole list to send and ``current_etags`` names them per community."""

    slug = "stale-version"
    kind = "precondition-failed"

    def __init__(self, message: str, current: str, changes: list[dict], etags: dict[str, str] | None = None):
        if etags:
            super().__init__(message, current_etag=etag_list(list(etags.values())),
                             current_etags={code: version_etag(t) for code, t in etags.items()}, changes=changes)
        else:
            super().__init__(message, current_etag=version_etag(current), changes=changes)
        self.current = current
        self.changes = changes
        self.etags = etags


def refused_as(cls: type[PlanError]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator of an entry point: a plain `PlanError` raised inside answers as `cls` (subclasses pass)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def entry(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except PlanError as exc:
                if type(exc) is not PlanError:
                    raise
                raise cls(exc.message, **exc.extra) from exc

        return entry

    return decorate


class InvalidPlanGeometry(PlanError):
    """Geometry a plan may not take or publish: not valid GeoJSON, NaN or out-of-range coordinates, an unclosed
    ring, a self-crossing (bow-tie) ring, more vertices than allowed, or lying outside its community (nothing was
    written)."""

    slug = "plan-geometry"
