"""What the incident domain refuses (事件的拒绝): one `DomainError` subclass per problem the API answers.

The HTTP layer maps each `kind` to a status once (`api.problems`); the slugs are the problem types clients see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from geo.errors import DomainError, Kind, NotFound

if TYPE_CHECKING:
    from geo.incidents.closed_loop import Transition


class IncidentError(DomainError):
    """A request about incidents that cannot be carried out (nothing was written)."""

    slug = "invalid-incident"
    kind: ClassVar[Kind] = "invalid"


class InvalidIncident(IncidentError):
    """A report that cannot be recorded: coordinates, class, source or report time unusable."""


class OutsideDistrict(IncidentError):
    """A report whose location lies outside every street of the district."""

    slug = "outside-district"


class InvalidTransition(IncidentError):
    """A move along the closed loop that is missing something it needs (action, hours, time zone, score)."""

    slug = "invalid-transition"


class IllegalTransition(IncidentError):
    """A transition the state machine does not allow from the incident's current state (409, listing the allowed
    moves)."""

    slug = "illegal-transition"
    kind = "conflict"
    title = "Illegal transition"

    def __init__(self, state: str, attempted: str, allowed: list[Transition]):
        names = ", ".join(f"{t.action} → {t.to_state}" for t in allowed) or "none (the case is finished)"
        super().__init__(f"'{attempted}' is not allowed from state '{state}'; allowed: {names}", state=state,
                         attempted=attempted, allowed=[t.to_state for t in allowed],
                         allowed_actions=[{"action": t.action, "to": t.to_state, "name": t.name} for t in allowed])
        self.state = state
        self.attempted = attempted
        self.allowed = allowed


class InvalidQuery(IncidentError):
    """A listing, KPI or heatmap request that cannot be answered as asked (a period, filter or grouping)."""

    slug = "validation-error"
    title = "Invalid request"


class IncidentNotFound(NotFound):
    """No incident with this id."""
