"""Overlap resolution (重叠处理): each overlap between sibling units of an import gets a proposed owner, and the
import can apply the proposals (the other unit gives the overlapping part up).

The owner is the unit the user names for that pair, else the unit with the longer shared edge: the length of the
overlap's outline it shares with the rest of that unit (``boundary(A ∩ B) ∩ boundary(A − B)``, in metres on the
spheroid). A sliver poking into a neighbour is thus given to the neighbour that surrounds it. Ties go to the
smaller code.

Resolutions are applied all or nothing, inside the import's transaction (so a dry run shows their outcome and
writes nothing): only a unit of the file can give something up (a unit already in the database that the file does
not redraw keeps its boundary), and no unit may be left empty. One that cannot be applied refuses the import with
`OverlapNotResolvable` naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, text

from geo.errors import DomainError


class OverlapNotResolvable(DomainError, ValueError):
    """An overlap resolution cannot be applied (or was named wrongly): nothing was written."""

    slug = "overlap-not-resolvable"
    kind = "invalid"
    title = "Overlap cannot be resolved as asked"


@dataclass(frozen=True)
class Resolution:
    """One overlap and what to do with it: who keeps the overlapping part, and why."""

    codes: tuple[str, str]
    rows: tuple[int | None, int | None]  # staged row of each unit (None: not in the file)
    area_m2: float
    shared_edge_m: tuple[float, float]
    give_to: str
    rule: str  # 'longer-shared-edge' or 'named'

    @property
    def loser(self) -> int:
        """0 or 1: which of the pair gives the overlap up."""
        return 1 if self.give_to == self.codes[0] else 0

    @property
    def applicable(self) -> bool:
        """Whether the unit giving the overlap up is one of the file's (only those can change)."""
        return self.rows[self.loser] is not None

    def as_dict(self) -> dict:
        """The proposal as the report shows it."""
        a, b = self.codes
        return {"give_to": self.give_to, "take_from": self.codes[self.loser], "rule": self.rule,
                "shared_edge_m": {a: round(self.shared_edge_m[0], 2), b: round(self.shared_edge_m[1], 2)},
                "applicable": self.applicable}

    def describe(self) -> str:
        """In words, for the report."""
        why = ("as named" if self.rule == "named" else
               f"longer shared edge: {self.shared_edge_m[1 - self.loser]:.1f} m against "
               f"{self.shared_edge_m[self.loser]:.1f} m")
        return f"the {self.area_m2:.1f} m² overlap goes to {self.give_to} ({why})"


_PAIR = re.compile(r"^\s*([0-9]+)\s*[/+&]\s*([0-9]+)\s*=\s*([0-9]+)\s*$")


def parse_owners(value: str | dict[str, str] | None) -> dict[frozenset[str], str]:
    """Named owners, 'A/B=A,C/D=D' (or a dict 'A/B' → 'A'), as {frozenset({A, B}): A}."""
    if not value:
        return {}
    items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else value.split(",")
    owners: dict[frozenset[str], str] = {}
    for item in items:
        if not item.strip():
            continue
        m = _PAIR.match(item)
        if m is None:
            raise OverlapNotResolvable(f"overlap owner {item.strip()!r} is not of the form CODE/CODE=CODE "
                                       "(e.g. 310115001001001/310115001001002=310115001001001)")
        a, b, owner = m.groups()
        if owner not in (a, b):
            raise OverlapNotResolvable(f"overlap owner {item.strip()!r}: {owner} is neither {a} nor {b}")
        owners[frozenset((a, b))] = owner
    return owners


def propose(conn: Connection, result: str, tolerance_m2: float,
            owners: dict[frozenset[str], str] | None = None) -> list[Resolution]:
    """A resolution for every overlap above the tolerance between units of the resulting layer (table `result`:
    row_idx, code, geom), at least one of them imported."""
    owners = owners or {}
    rows = conn.execute(text(f"""
        WITH pairs AS (
            SELECT a.row_idx AS a_idx, b.row_idx AS b_idx, a.code AS a_code, b.code AS b_code, a.geom AS ag,
                   b.geom AS bg, ST_Intersection(a.geom, b.geom) AS o
            FROM {result} a JOIN {result} b
              ON a.code < b.code AND ST_Intersects(a.geom, b.geom) AND NOT ST_Touches(a.geom, b.geom)
            WHERE a.row_idx IS NOT NULL OR b.row_idx IS NOT NULL
        )
        SELECT a_idx, b_idx, a_code, b_code, ST_Area(o::geography) AS area,
               ST_Length(ST_Intersection(ST_Boundary(o), ST_Boundary(ST_Difference(ag, bg)))::geography) AS a_edge,
               ST_Length(ST_Intersection(ST_Boundary(o), ST_Boundary(ST_Difference(bg, ag)))::geography) AS b_edge
        FROM pairs ORDER BY a_code COLLATE "C", b_code COLLATE "C"
    """)).mappings().all()
    out = []
    for r in rows:
        if r["area"] is None or r["area"] <= tolerance_m2:
            continue
        a, b = r["a_code"], r["b_code"]
        edges = (float(r["a_edge"] or 0.0), float(r["b_edge"] or 0.0))
        named = owners.get(frozenset((a, b)))
        if named is not None:
            give_to, rule = named, "named"
        else:
            give_to, rule = (b if edges[1] > edges[0] else a), "longer-shared-edge"
        out.append(Resolution((a, b), (r["a_idx"], r["b_idx"]), float(r["area"]), edges, give_to, rule))
    return out


def unknown_owners(owners: dict[frozenset[str], str], proposals: list[Resolution]) -> list[str]:
    """Named pairs that do not overlap in this import (a typo, or an overlap below the tolerance)."""
    found = {frozenset(p.codes) for p in proposals}
    return sorted("/".join(sorted(pair)) for pair in owners if pair not in found)


def apply(conn: Connection, stage: str, result: str, proposals: list[Resolution]) -> None:
    """Give each overlap to its owner: the other unit's staged geometry (table `stage`) loses the owner's area (from
    `stage`, or `result` for units not in the file). All or nothing:
    `OverlapNotResolvable` when one cannot be applied (its loser is not in the file, or would be left empty)."""
    fixed = [p for p in proposals if not p.applicable]
    if fixed:
        raise OverlapNotResolvable(
            f"{len(fixed)} overlap(s) cannot be resolved as proposed: the unit that would give the overlap up is "
            "already in the database and not in this file (" + "; ".join(
                f"{p.codes[p.loser]} to {p.give_to}" for p in fixed[:5]) + "); name the file's unit as owner "
            "(overlap owners A/B=A) or redraw the other unit", overlaps=[p.as_dict() for p in fixed])
    if not proposals:
        return
    losers = [p.rows[p.loser] for p in proposals]
    winners = [p.give_to for p in proposals]
    emptied = conn.execute(text(f"""
        UPDATE {stage} s SET geom = ST_Multi(ST_CollectionExtract(ST_MakeValid(ST_Difference(s.geom, w.g)), 3))
        FROM (SELECT l.idx, ST_Union(k.geom) AS g
              FROM unnest(CAST(:losers AS int[]), CAST(:winners AS text[])) AS l(idx, code)
              JOIN (SELECT code, geom FROM {stage} WHERE NOT refused
                    UNION ALL SELECT code, geom FROM {result} WHERE row_idx IS NULL) k ON k.code = l.code
              GROUP BY l.idx) w
        WHERE s.row_idx = w.idx
        RETURNING s.code, ST_IsEmpty(s.geom) AS empty
    """), {"losers": losers, "winners": winners}).all()
    empty = [r.code for r in emptied if r.empty]
    if empty:
        raise OverlapNotResolvable(f"giving the overlaps away would leave nothing of {', '.join(empty)}: name "
                                   "owners for them instead", units=empty)
