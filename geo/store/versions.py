"""Boundary versions: the one way to say "in force at time t" in SQL.

Boundaries, assignments and other versioned rows carry ``valid_from`` and ``valid_to`` (half-open: a row is in
force at t when ``valid_from <= t`` and ``valid_to`` is NULL or later than t). The database also has set-returning
functions for the boundary levels (``streets_at(ts)``, ``communities_at(ts)``, ``grids_at(ts)``,
``micro_grids_at(ts)``) and ``current_*`` views; use them for whole levels, and `in_force` where a query joins a
versioned table itself. `at_or_now` is the time a query reads at when the caller may leave it open.
"""

from __future__ import annotations


def in_force(alias: str, at: str = ":at") -> str:
    """SQL condition: the row `alias` is in force at the SQL expression `at` (half-open period)."""
    return f"({alias}.valid_from <= {at} AND ({alias}.valid_to IS NULL OR {alias}.valid_to > {at}))"


def at_or_now(param: str = ":at") -> str:
    """SQL expression: the bound timestamp `param`, or now() when it is NULL (read "at t, else now")."""
    return f"coalesce(CAST({param} AS timestamptz), now())"
