"""Steward assignment planning (管家分配): every household a steward, every steward 5–15 households, close to home.

Community by community, the planner gives each unit's (单元) households to stewards so that

1. every steward serves between the rule's minimum and maximum households (summed over all their assignments),
2. the total walking distance — households × straight-line metres between the centroid of the steward's home
   building and that of the household's building, in the district's UTM zone — is minimal, and
3. among the plans with that minimal distance, households of one unit are split between as few stewards as
   possible (a unit stays with one steward where possible),

keeping existing assignments unless the request allows moving them.

How it is solved, exactly:

- Distance is the same for every unit of a building, so step 2 is a transportation problem between stewards and
  buildings with bounds on each steward's load: an integral min-cost flow (OR-Tools), solved to optimality. Costs
  are whole centimetres per household, so "minimal" is exact to the centimetre.
- The shortest-path potentials of the optimal flow's residual network are optimal duals. By complementary
  slackness every distance-optimal plan sends nothing on an arc of positive reduced cost and fills every arc of
  negative reduced cost; only zero-reduced-cost arcs are free. Step 3 is a CP-SAT model over that optimal face at
  unit level, minimising the number of (steward, unit) pairs; the face falls apart into independent components
  (stewards and buildings joined by usable arcs), each solved on its own within a per-community time budget.
  Whether every component was proven optimal, and a lower bound on the splits, are reported; a component not
  finished keeps the best plan found (at worst the flow's own). Every plan returned has the minimal distance.
- When no plan exists the reason is given in numbers (too few stewards for the households, too many for the
  minimum, a kept assignment already over the maximum).

A greedy baseline from the same data — each unit in turn to the nearest stewards with room — is reported beside
the optimum.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pyproj import Transformer
from sqlalchemy import Connection, text

from geo.errors import DomainError, Kind
from geo.settings import Rules, get_settings
from geo.spatial.crs import STORAGE_SRID, utm_epsg
from geo.staff.coverage import ensure_statistics
from geo.staff.register import (
    ACTIVE_SQL,
    BUILDING_LOCATION_SQL,
    Allowed,
    Caller,
    as_date,
    end_of_day,
    people_in_reach,
    today,
)

#: Costs are integers for the flow solver: centimetres per household.
COST_SCALE = 100
#: Default CP-SAT budget per community for the fewest unit splits (the distance optimum does not depend on it).
DEFAULT_SPLIT_SECONDS = 0.25


class PlanError(DomainError, ValueError):
    """A planning request that cannot be run (bad scope, unknown people)."""

    slug: ClassVar[str] = "plan-invalid"
    kind: ClassVar[Kind] = "invalid"
    title: ClassVar[str | None] = "Invalid plan request"


# ---------------------------------------------------------------------------------------------------------------
# the exact solver on one instance (pure numpy; no database)


@dataclass
class Instance:
    """One community's planning problem in index form.

    `households[u]` of unit u, `unit_building[u]` its building index, `dist_m[s, b]` metres from steward s's
    home building to building b; `fixed` rows (s, u, h): kept households of unit u served by planned steward s
    (s = -1: by someone not planned here); `fixed_load[s]` everything steward s keeps, anywhere.
    """

    households: np.ndarray
    unit_building: np.ndarray
    dist_m: np.ndarray
    lo: int
    hi: int
    fixed: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    fixed_load: np.ndarray | None = None
    #: `fixed_load` as given, else summed from `fixed` (what the solver reads).
    kept_load: np.ndarray = field(init=False)

    def __post_init__(self):
        self.households = np.asarray(self.households, dtype=np.int64)
        self.unit_building = np.asarray(self.unit_building, dtype=np.int64)
        self.dist_m = np.asarray(self.dist_m, dtype=float)
        if self.dist_m.ndim != 2:
            raise ValueError("dist_m must be a (stewards × buildings) matrix")
        self.fixed = np.asarray(self.fixed, dtype=np.int64).reshape(-1, 3)
        if self.fixed_load is None:
            load = np.zeros(self.dist_m.shape[0], dtype=np.int64)
            own = self.fixed[self.fixed[:, 0] >= 0]
            np.add.at(load, own[:, 0], own[:, 2])
            self.fixed_load = load
        self.kept_load = self.fixed_load = np.asarray(self.fixed_load, dtype=np.int64)

    @property
    def n_stewards(self) -> int:
        return self.dist_m.shape[0]


@dataclass
class Result:
    """The plan for one instance: new (steward, unit, households) triples on top of the kept ones, and figures."""

    feasible: bool
    reason: str | None = None
    numbers: dict = field(default_factory=dict)
    new: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    distance_m: float = 0.0
    pairs: int = 0
    splits: int = 0
    flow_pairs: int = 0
    splits_optimal: bool = True
    splits_lower_bound: int = 0
    solve_s: float = 0.0
    greedy_distance_m: float | None = None
    greedy_unserved: int = 0
    greedy_stewards_under: int = 0
    greedy_stewards_over: int = 0


def check_feasibility(inst: Instance) -> tuple[str | None, dict]:
    """(reason, numbers) when no plan can exist, else (None, numbers)."""
    lo, hi = inst.lo, inst.hi
    demand = inst.households.copy()
    np.subtract.at(demand, inst.fixed[:, 1], inst.fixed[:, 2])
    kept = int(inst.fixed[:, 2].sum())
    total = int(inst.households.sum())
    n_s = inst.n_stewards
    cap = hi - inst.kept_load
    low = np.maximum(lo - inst.kept_load, 0)
    numbers: dict[str, Any] = {
        "households": total, "stewards": n_s, "kept_households": kept, "to_assign": int(demand.sum()),
        "max_servable": int(np.maximum(cap, 0).sum()) + kept, "min_needed": int(low.sum())}
    over = np.flatnonzero(cap < 0)
    if over.size:
        numbers["stewards_over_in_kept"] = over.tolist()
        numbers["kept_loads"] = inst.kept_load[over].tolist()
        return "kept_over_capacity", numbers
    overclaimed = np.flatnonzero(demand < 0)
    if overclaimed.size:
        numbers["units_overclaimed"] = overclaimed.tolist()
        return "unit_overclaimed", numbers
    if demand.sum() > cap.sum():
        short = int(demand.sum() - cap.sum())
        numbers["short_households"] = short
        numbers["stewards_needed"] = math.ceil(short / hi)
        return "too_few_stewards", numbers
    if low.sum() > demand.sum():
        excess = int(low.sum() - demand.sum())
        order = np.sort(low)[::-1]
        numbers["excess_minimum"] = excess
        numbers["stewards_too_many"] = int(np.searchsorted(np.cumsum(order), excess) + 1)
        return "too_many_stewards", numbers
    return None, numbers


def _bellman_ford(n: int, tails: np.ndarray, heads: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Shortest distances from a virtual root joined to every node at cost 0 (potentials); arcs may be negative."""
    d = np.zeros(n, dtype=np.int64)
    for _ in range(n + 1):
        cand = d[tails] + costs
        new = d.copy()
        np.minimum.at(new, heads, cand)
        if np.array_equal(new, d):
            return d
        d = new
    raise RuntimeError("negative cycle in the residual network: the flow is not optimal")


def _northwest(amounts: list[tuple[int, int]], demands: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Split stewards' amounts over units largest first (a plan with few pairs); returns (s, u, h)."""
    a = sorted(([s, h] for s, h in amounts if h > 0), key=lambda t: -t[1])
    d = sorted(([u, h] for u, h in demands if h > 0), key=lambda t: -t[1])
    out, i, j = [], 0, 0
    while i < len(a) and j < len(d):
        take = min(a[i][1], d[j][1])
        out.append((a[i][0], d[j][0], take))
        a[i][1] -= take
        d[j][1] -= take
        if a[i][1] == 0:
            i += 1
        if d[j][1] == 0:
            j += 1
    return out


def greedy(inst: Instance, demand: np.ndarray) -> tuple[np.ndarray, int]:
    """Baseline: units in order, each to the nearest stewards with room (up to the maximum); (triples, unserved)."""
    room = np.maximum(inst.hi - inst.kept_load, 0).astype(np.int64)
    out = []
    unserved = 0
    order = np.lexsort((np.arange(len(demand)), inst.unit_building))
    for u in order:
        need = int(demand[u])
        if need <= 0:
            continue
        for s in np.argsort(inst.dist_m[:, inst.unit_building[u]], kind="stable"):
            if need == 0:
                break
            take = min(need, int(room[s]))
            if take:
                out.append((s, u, take))
                room[s] -= take
                need -= take
        unserved += need
    return np.array(out, dtype=np.int64).reshape(-1, 3), unserved


def _distance(inst: Instance, triples: np.ndarray) -> float:
    own = triples[triples[:, 0] >= 0]
    return float((inst.dist_m[own[:, 0], inst.unit_building[own[:, 1]]] * own[:, 2]).sum())


def _cost(inst: Instance, triples: np.ndarray) -> int:
    own = triples[triples[:, 0] >= 0]
    c = np.rint(inst.dist_m * COST_SCALE).astype(np.int64)
    return int((c[own[:, 0], inst.unit_building[own[:, 1]]] * own[:, 2]).sum())


def _pairs(inst: Instance, new: np.ndarray) -> int:
    kept = {(int(s), int(u)) for s, u, h in inst.fixed if h > 0}
    pairs = kept | {(int(s), int(u)) for s, u, h in new if h > 0}
    return len(pairs)


def solve(inst: Instance, time_limit_s: float = DEFAULT_SPLIT_SECONDS, workers: int = 1,
          with_greedy: bool = True) -> Result:
    """Plan one instance exactly: minimal distance (min-cost flow), then fewest unit splits on the optimal face."""
    from ortools.graph.python import min_cost_flow

    t0 = time.perf_counter()
    reason, numbers = check_feasibility(inst)
    demand = inst.households.copy()
    np.subtract.at(demand, inst.fixed[:, 1], inst.fixed[:, 2])
    res = Result(feasible=reason is None, reason=reason, numbers=numbers)
    if with_greedy and reason not in ("kept_over_capacity", "unit_overclaimed"):
        g, unserved = greedy(inst, demand)
        res.greedy_distance_m = _distance(inst, np.vstack([inst.fixed, g]))
        res.greedy_unserved = unserved
        load = inst.kept_load.copy()
        np.add.at(load, g[:, 0], g[:, 2])
        res.greedy_stewards_under = int((load < inst.lo).sum())
        res.greedy_stewards_over = int((load > inst.hi).sum())
    if reason is not None:
        res.solve_s = time.perf_counter() - t0
        return res

    n_s = inst.n_stewards
    n_b = inst.dist_m.shape[1]
    bdem = np.zeros(n_b, dtype=np.int64)
    np.add.at(bdem, inst.unit_building, demand)
    blds = np.flatnonzero(bdem > 0)
    lo_s = np.maximum(inst.lo - inst.kept_load, 0)
    hi_s = inst.hi - inst.kept_load
    total = int(bdem.sum())
    new = np.zeros((0, 3), dtype=np.int64)
    if total > 0:
        # Nodes: stewards 0..S-1, buildings with demand S..S+B'-1, the pool S+B'.
        nb = len(blds)
        pool = n_s + nb
        cost = np.rint(inst.dist_m[:, blds] * COST_SCALE).astype(np.int64)
        s_idx, b_idx = np.meshgrid(np.arange(n_s), np.arange(nb), indexing="ij")
        cap = np.minimum(bdem[blds][None, :], hi_s[:, None])
        keep = cap.ravel() > 0
        tails = np.concatenate([s_idx.ravel()[keep], np.full(n_s, pool)])
        heads = np.concatenate([n_s + b_idx.ravel()[keep], np.arange(n_s)])
        caps = np.concatenate([cap.ravel()[keep], hi_s - lo_s])
        costs = np.concatenate([cost.ravel()[keep], np.zeros(n_s, dtype=np.int64)])
        supplies = np.concatenate([lo_s, -bdem[blds], [total - lo_s.sum()]])
        mcf = min_cost_flow.SimpleMinCostFlow()
        arcs = mcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
        mcf.set_nodes_supplies(np.arange(pool + 1), supplies)
        status = mcf.solve()
        if status != mcf.OPTIMAL:
            raise RuntimeError(f"min-cost flow returned status {status} on a feasible instance")
        flow = mcf.flows(arcs)
        # Potentials from the residual network, then the optimal face.
        fwd = flow < caps
        bwd = flow > 0
        pot = _bellman_ford(pool + 1, np.concatenate([tails[fwd], heads[bwd]]),
                            np.concatenate([heads[fwd], tails[bwd]]), np.concatenate([costs[fwd], -costs[bwd]]))
        reduced = costs + pot[tails] - pot[heads]
        n_sb = int(keep.sum())
        sb_s, sb_b = tails[:n_sb], heads[:n_sb] - n_s
        sb_flow, sb_red, sb_cap = flow[:n_sb], reduced[:n_sb], caps[:n_sb]
        pool_red = reduced[n_sb:]
        # The flow's own plan, split over units with few pairs: the hint and the fallback.
        units_of = {int(b): np.flatnonzero((inst.unit_building == blds[b]) & (demand > 0)) for b in range(nb)}
        flow_triples: list[tuple[int, int, int]] = []
        used = sb_flow > 0
        for b in np.unique(sb_b[used]):
            sel = used & (sb_b == b)
            flow_triples += _northwest(list(zip(sb_s[sel].tolist(), sb_flow[sel].tolist(), strict=True)),
                                       [(int(u), int(demand[u])) for u in units_of[int(b)]])
        flow_plan = np.array(flow_triples, dtype=np.int64).reshape(-1, 3)
        res.flow_pairs = _pairs(inst, flow_plan)
        new, res.splits_optimal, new_pairs_bound = _fewest_splits(
            inst, demand, blds, units_of, sb_s, sb_b, sb_cap, sb_red, pool_red, lo_s, hi_s, flow_plan,
            time_limit_s, workers)
        res.splits_lower_bound = _pairs(inst, np.zeros((0, 3), dtype=np.int64)) + new_pairs_bound - int(
            (inst.households > 0).sum())
        if _cost(inst, new) != _cost(inst, flow_plan):
            raise RuntimeError("the split-minimising plan left the optimal face")
    res.new = new
    res.distance_m = _distance(inst, np.vstack([inst.fixed, new]))
    res.pairs = _pairs(inst, new)
    res.splits = res.pairs - int((inst.households > 0).sum())
    res.splits_lower_bound = res.splits if res.splits_optimal else min(res.splits_lower_bound, res.splits)
    res.solve_s = time.perf_counter() - t0
    return res


def _fewest_splits(inst, demand, blds, units_of, sb_s, sb_b, sb_cap, sb_red, pool_red, lo_s, hi_s, flow_plan,
                   time_limit_s, workers) -> tuple[np.ndarray, bool, int]:
    """Fewest (steward, unit) pairs among distance-optimal plans: CP-SAT over the optimal face.

    Only arcs of non-positive reduced cost can carry households in an optimal plan, so the face falls apart into
    the connected components of those arcs (stewards and buildings); each is solved on its own, exactly.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    live = np.flatnonzero(sb_red <= 0)
    n_s = inst.n_stewards
    n_nodes = n_s + len(blds)
    graph = coo_matrix((np.ones(len(live)), (sb_s[live], n_s + sb_b[live])), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    arc_comp = label[sb_s[live]]
    kept_pairs = {(int(s), int(u)) for s, u, h in inst.fixed if h > 0}
    hint = {(int(s), int(u)): int(h) for s, u, h in flow_plan}
    by_comp: dict[int, list] = {}
    for (s, u), h in hint.items():
        by_comp.setdefault(int(label[s]), []).append((s, u, h))
    comps = np.unique(arc_comp)
    # Small components first: they are proven in milliseconds; a large one may use the rest of the budget.
    sizes = {int(c): int((arc_comp == c).sum()) for c in comps}
    deadline = time.perf_counter() + time_limit_s
    plans, proven, bound = [], True, 0
    for comp in sorted(sizes, key=lambda c: sizes[c]):
        arcs = live[arc_comp == comp]
        stewards = np.unique(sb_s[arcs])
        flow_here = by_comp.get(comp, [])
        units_here = {u for b in np.unique(sb_b[arcs]) for u in units_of[int(b)].tolist()}
        # One steward: every unit of the component is theirs, one pair each; nothing to choose.
        left = deadline - time.perf_counter()
        if len(stewards) == 1 or len(units_here) == 0:
            plans += flow_here
            bound += _pairs_of(flow_here, kept_pairs)
            continue
        plan, ok, lower = (None, False, 0) if left <= 0 else _component_model(
            arcs, stewards, units_of, demand, sb_s, sb_b, sb_cap, sb_red, pool_red, lo_s, hi_s, kept_pairs, hint,
            left, workers)
        if plan is None or _pairs_of(plan, kept_pairs) > _pairs_of(flow_here, kept_pairs):
            plan = flow_here
        plans += plan
        proven &= ok
        bound += lower if lower else _unit_bound(units_here, demand, arcs, sb_s, sb_b, sb_cap, units_of, kept_pairs)
    return np.array(plans, dtype=np.int64).reshape(-1, 3), proven, bound


def _unit_bound(units, demand, arcs, sb_s, sb_b, sb_cap, units_of, kept_pairs) -> int:
    """A lower bound on new pairs: each unit needs ceil(demand / largest share) stewards, less its kept pairs."""
    largest: dict[int, int] = {}
    for b, c in zip(sb_b[arcs].tolist(), sb_cap[arcs].tolist(), strict=True):
        largest[b] = max(largest.get(b, 0), c)
    kept_per_unit: dict[int, int] = {}
    for _, u in kept_pairs:
        kept_per_unit[u] = kept_per_unit.get(u, 0) + 1
    total = 0
    for b, cap in largest.items():
        for u in units_of[b].tolist():
            d = int(demand[u])
            if d > 0 and cap > 0:
                total += max(-(-d // min(d, cap)) - kept_per_unit.get(u, 0), 0)
    return total


def _pairs_of(plan, kept_pairs) -> int:
    return len({(s, u) for s, u, h in plan if h > 0} - kept_pairs)


def _component_model(arcs, stewards, units_of, demand, sb_s, sb_b, sb_cap, sb_red, pool_red, lo_s, hi_s,
                     kept_pairs, hint, time_limit_s, workers):
    """CP-SAT: fewest new (steward, unit) pairs on one component of the optimal face; (plan, proven, bound)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    z_terms = []
    load: dict[int, list] = {int(s): [] for s in stewards}
    by_unit: dict[int, list] = {}
    z_of_unit: dict[int, list] = {}
    ub_of_unit: dict[int, list] = {}
    for s, b, cap, red in zip(sb_s[arcs].tolist(), sb_b[arcs].tolist(), sb_cap[arcs].tolist(),
                              sb_red[arcs].tolist(), strict=True):
        terms = []
        for u in units_of[b].tolist():
            ub = min(int(demand[u]), cap)
            v = m.new_int_var(0, ub, "")
            x[(s, u)] = v
            terms.append(v)
            by_unit.setdefault(u, []).append(v)
            ub_of_unit.setdefault(u, []).append(ub)
            load[s].append(v)
            if (s, u) not in kept_pairs:
                z = m.new_bool_var("")
                m.add(v <= ub * z)
                m.add(v >= 1).only_enforce_if(z)
                m.add_hint(z, hint.get((s, u), 0) > 0)
                z_terms.append(z)
                z_of_unit.setdefault(u, []).append(z)
            else:
                z_of_unit.setdefault(u, []).append(None)
        if red < 0:
            m.add(sum(terms) == cap)  # at capacity in every optimal plan
        else:
            m.add(sum(terms) <= cap)
    for u, vs in by_unit.items():
        m.add(sum(vs) == int(demand[u]))
    for s, terms in load.items():
        if pool_red[s] > 0:
            m.add(sum(terms) == int(lo_s[s]))
        elif pool_red[s] < 0:
            m.add(sum(terms) == int(hi_s[s]))
        else:
            m.add_linear_constraint(sum(terms), int(lo_s[s]), int(hi_s[s]))
    # Each unit needs at least ceil(demand / largest possible share) stewards: a rounding cut the LP lacks.
    for u, vs in by_unit.items():
        zs = [z for z, _ in zip(z_of_unit[u], vs, strict=True) if z is not None]
        largest = max(ub_of_unit[u])
        need = -(-int(demand[u]) // max(largest, 1)) - (len(vs) - len(zs))
        if zs and need > 0:
            m.add(sum(zs) >= need)
    m.minimize(sum(z_terms))
    for key, v in x.items():
        m.add_hint(v, hint.get(key, 0))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.num_workers = int(workers)
    status = solver.solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, False, 0
    plan = [(s, u, int(solver.value(v))) for (s, u), v in x.items() if solver.value(v) > 0]
    return plan, status == cp_model.OPTIMAL, int(math.ceil(solver.best_objective_bound - 1e-6))


# ---------------------------------------------------------------------------------------------------------------
# the district: data from the database, community by community


@dataclass
class CommunityPlan:
    """One community's outcome, with everything the API, CLI and benchmark print."""

    community_id: int
    code: str
    name: str
    feasible: bool
    explanation: str | None
    households: int
    stewards: int
    kept_households: int
    assigned_households: int
    distance_m: float
    greedy_distance_m: float | None
    greedy_unserved: int
    greedy_stewards_under: int
    greedy_stewards_over: int
    pairs: int
    splits: int
    flow_pairs: int
    splits_optimal: bool
    splits_lower_bound: int
    solve_s: float
    released: int = 0
    numbers: dict = field(default_factory=dict)

    @property
    def gap_to_greedy(self) -> float | None:
        """(greedy − optimal) / greedy distance; positive when the optimum walks less."""
        if not self.feasible or not self.greedy_distance_m:
            return None
        return (self.greedy_distance_m - self.distance_m) / self.greedy_distance_m

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "numbers"}
        d["gap_to_greedy"] = self.gap_to_greedy
        d["numbers"] = self.numbers
        return d


@dataclass
class Plan:
    """A planning run: per-community outcomes, the assignments to end and to create, and totals."""

    at: dt.date
    prefix: str
    allow_move: bool
    communities: list[CommunityPlan]
    to_end: list[int]
    to_create: pd.DataFrame  # person_id, unit_id, households
    unchanged: int
    stewards_without_home: list[int]
    solve_s: float
    load_s: float

    def summary(self) -> dict:
        feas = [c for c in self.communities if c.feasible]
        dist = sum(c.distance_m for c in feas)
        greedy_d = sum(c.greedy_distance_m or 0.0 for c in feas)
        return {
            "at": str(self.at), "scope": self.prefix or "全区", "allow_move": self.allow_move,
            "communities": len(self.communities), "feasible": len(feas),
            "infeasible": len(self.communities) - len(feas),
            "households": sum(c.households for c in self.communities),
            "stewards": sum(c.stewards for c in self.communities),
            "distance_m": round(dist, 1), "greedy_distance_m": round(greedy_d, 1),
            "gap_to_greedy": round((greedy_d - dist) / greedy_d, 6) if greedy_d else None,
            "greedy_unserved": sum(c.greedy_unserved for c in feas),
            "greedy_stewards_under": sum(c.greedy_stewards_under for c in feas),
            "greedy_stewards_over": sum(c.greedy_stewards_over for c in feas),
            "splits": sum(c.splits for c in feas), "flow_splits": sum(c.flow_pairs for c in feas) - sum(
                c.pairs - c.splits for c in feas),
            "splits_lower_bound": sum(c.splits_lower_bound for c in feas),
            "splits_proven_optimal": all(c.splits_optimal for c in feas),
            "communities_splits_proven": sum(c.splits_optimal for c in feas),
            "to_end": len(self.to_end), "to_create": len(self.to_create), "unchanged": self.unchanged,
            "stewards_without_home": len(self.stewards_without_home),
            "solve_s": round(self.solve_s, 3), "load_s": round(self.load_s, 3),
        }


def explain(name: str, code: str, reason: str, numbers: dict, lo: int, hi: int, names: dict[int, str]) -> str:
    """The reason a community has no plan, in numbers."""
    where = f"community {name} ({code})"
    h, s = numbers["households"], numbers["stewards"]
    if reason == "too_few_stewards":
        return (f"{where} has {h:,} households and {s:,} stewards: at most {numbers['max_servable']:,} can be "
                f"served; {numbers['stewards_needed']:,} more stewards needed")
    if reason == "too_many_stewards":
        return (f"{where} has {h:,} households ({numbers['to_assign']:,} to assign) and {s:,} stewards who need "
                f"at least {numbers['min_needed']:,} more to reach {lo} each: "
                f"{numbers['stewards_too_many']:,} stewards too many")
    if reason == "kept_over_capacity":
        who = ", ".join(f"{names.get(p, p)} ({load} households)"
                        for p, load in zip(numbers["stewards_over_in_kept"], numbers["kept_loads"], strict=True))
        return f"{where}: kept assignments already give {who} more than {hi}; allow moving them"
    if reason == "unit_overclaimed":
        return f"{where}: kept assignments claim more households than {len(numbers['units_overclaimed'])} unit(s) have"
    return f"{where}: {reason}"


def _load(conn: Connection, prefix: str, d: dt.date, extra_stewards: list[int],
          allowed: Allowed | None = None) -> dict[str, pd.DataFrame]:
    # Extra stewards must be people the caller reaches (geo.staff.register.covers_person); one answer whether someone is
    # another community's or does not exist, so the request cannot probe the register.
    missing = sorted(set(extra_stewards) - set(people_in_reach(conn, extra_stewards, allowed)))
    if missing:
        where = "in your jurisdiction" if allowed is not None else "on the register"
        raise PlanError(f"no person {', '.join(map(str, missing))} {where}")
    params = {"ts": end_of_day(d), "d": d, "prefix": prefix}
    loc = pd.DataFrame(conn.execute(text(f"""
        SELECT b.id AS building_id, bc.id AS community_id, bc.code AS community_code, bc.name AS community_name,
               ST_X(ST_Centroid(b.geom)) AS lon, ST_Y(ST_Centroid(b.geom)) AS lat
        FROM buildings b {BUILDING_LOCATION_SQL}
    """), params).mappings().all(), columns=["building_id", "community_id", "community_code", "community_name",
                                             "lon", "lat"])
    units = pd.DataFrame(conn.execute(text("SELECT id AS unit_id, building_id, number, households FROM units "
                                           "WHERE households > 0")).mappings().all(),
                         columns=["unit_id", "building_id", "number", "households"])
    assignments = pd.DataFrame(conn.execute(text(f"""
        SELECT a.id, a.person_id, a.target_type, a.unit_id, coalesce(a.building_id, u.building_id) AS building_id,
               a.households AS raw_households,
               CASE WHEN a.target_type = 'unit' THEN coalesce(a.households, u.households)
                    ELSE coalesce(a.households, (SELECT sum(households) FROM units WHERE building_id = a.building_id))
               END AS households
        FROM staff_assignments a LEFT JOIN units u ON u.id = a.unit_id
        WHERE a.role = 'steward' AND a.target_type IN ('unit', 'building') AND {ACTIVE_SQL}
    """), params).mappings().all(), columns=["id", "person_id", "target_type", "unit_id", "building_id",
                                             "raw_households", "households"])
    ids = sorted(set(assignments["person_id"].astype(int).tolist()) | set(extra_stewards))
    people = pd.DataFrame(conn.execute(text("SELECT id AS person_id, name, home_building_id FROM people "
                                            "WHERE id = ANY(:ids)"), {"ids": ids}).mappings().all(),
                          columns=["person_id", "name", "home_building_id"])
    return {"loc": loc, "units": units, "assignments": assignments, "people": people}


def _building_pools_to_units(pools: pd.DataFrame, units: pd.DataFrame, unit_claims: pd.Series) -> pd.DataFrame:
    """Spread building-level steward households over the building's units unit by unit (as the coverage report)."""
    if pools.empty:
        return pd.DataFrame(columns=["id", "person_id", "unit_id", "households"])
    u = units.copy()
    u["remaining"] = (u["households"] - u["unit_id"].map(unit_claims).fillna(0)).clip(lower=0).astype(int)
    u = u.sort_values(["building_id", "number"])
    rows = []
    for bid, grp in pools.groupby("building_id", sort=False):
        rem = u.loc[u["building_id"] == bid, ["unit_id", "remaining"]].to_numpy().tolist()
        for a in grp.itertuples():
            left = int(a.households)
            for item in rem:
                take = min(left, item[1])
                if take > 0:
                    rows.append((a.id, a.person_id, item[0], take))
                    item[1] -= take
                    left -= take
                if left == 0:
                    break
    return pd.DataFrame(rows, columns=["id", "person_id", "unit_id", "households"])


#: The days a steward plan may be made for (a register's periods; the database and pandas cannot go much further).
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2200, 12, 31)


def plan_stewards(conn: Connection, prefix: str = "", at: str | dt.date | None = None, allow_move: bool = False,
                  release_over_capacity: bool = True, extra_stewards: list[int] | None = None,
                  rules: Rules | None = None, time_limit_s: float = DEFAULT_SPLIT_SECONDS, workers: int = 1,
                  processes: int = 1, caller: Caller | None = None) -> Plan:
    """Plan stewards for every community whose code starts with `prefix` (a street or community code, '' = all).

    `allow_move=False` keeps every steward assignment in force; with `release_over_capacity` the assignments of a
    steward already over the maximum, and of a unit claimed beyond its households, may still be moved (they cannot
    stay). `extra_stewards` adds people with no steward assignment yet; with a `caller` (an HTTP caller's
    `geo.access.users.Principal`) each must be a person the caller reaches, else PlanError "no person N in your
    jurisdiction" (the same for one who does not exist). `time_limit_s` bounds the search for fewest
    unit splits per community (the distance is exact regardless); `processes` > 1 solves communities in parallel.
    Nothing is written: see `apply_plan`.
    """
    rules = rules or get_settings().rules
    lo, hi = rules.steward_households_min, rules.steward_households_max
    if len(prefix) > 12:
        raise PlanError("stewards are planned community by community: give a street or community code")
    d = as_date(at) or today()
    if not FIRST_DAY <= d <= LAST_DAY:
        raise PlanError(f"the plan's day {d.isoformat()} lies outside {FIRST_DAY.isoformat()} to "
                        f"{LAST_DAY.isoformat()}")
    t0 = time.perf_counter()
    ensure_statistics(conn)
    data = _load(conn, prefix, d, list(extra_stewards or []), caller.covers if caller is not None else None)
    loc, units, assignments, people = data["loc"], data["units"], data["assignments"], data["people"]
    load_s = time.perf_counter() - t0

    units = units.merge(loc[["building_id", "community_id"]], on="building_id", how="left")
    # A building in no community cannot be planned.
    units = units[units["community_id"].notna()]
    # Kept or released: the whole register of steward assignments in force.
    a = assignments.copy()
    a["load"] = a.groupby("person_id")["households"].transform("sum")
    unit_claims = a[a["target_type"] == "unit"].groupby("unit_id")["households"].sum()
    unit_hh = units.set_index("unit_id")["households"]
    room = unit_hh.reindex(unit_claims.index).fillna(0).to_numpy()
    overclaimed = set(unit_claims.index[unit_claims.to_numpy() > room])
    people = people.merge(loc[["building_id", "community_id", "lon", "lat"]], left_on="home_building_id",
                          right_on="building_id", how="left").drop(columns="building_id")
    homeless = people[people["community_id"].isna()]["person_id"].astype(int).tolist()
    if allow_move:
        a["kept"] = False
    else:
        a["kept"] = True
        if release_over_capacity:
            a.loc[(a["load"] > hi) | a["unit_id"].isin(overclaimed), "kept"] = False
    # People who cannot be planned keep what they have.
    a.loc[a["person_id"].isin(homeless), "kept"] = True
    kept = a[a["kept"]]
    kept_units = kept[kept["target_type"] == "unit"][["id", "person_id", "unit_id", "households"]]
    kept_pools = kept[kept["target_type"] == "building"]
    claims = kept_units.groupby("unit_id")["households"].sum()
    kept_units = pd.concat([kept_units, _building_pools_to_units(kept_pools, units, claims)], ignore_index=True)
    kept_load = kept.groupby("person_id")["households"].sum()

    # Metric coordinates of building centroids (UTM zone of the district).
    if len(loc):
        epsg = utm_epsg(float(loc["lon"].mean()), float(loc["lat"].mean()))
        tr = Transformer.from_crs(STORAGE_SRID, epsg, always_xy=True)
        bx, by = tr.transform(loc["lon"].to_numpy(), loc["lat"].to_numpy())
    else:
        bx = by = np.zeros(0)
    xy = pd.DataFrame({"x": bx, "y": by}, index=loc["building_id"].to_numpy())
    names = dict(zip(people["person_id"].astype(int), people["name"], strict=True))

    communities = (loc[loc["community_code"].fillna("").str.startswith(prefix)]
                   [["community_id", "community_code", "community_name"]].drop_duplicates("community_id")
                   .sort_values("community_code"))
    planned = people[people["community_id"].notna()]
    units_by_c = {k: g.sort_values(["building_id", "number"]) for k, g in units.groupby("community_id")}
    stewards_by_c = {k: g.sort_values("person_id") for k, g in planned.groupby("community_id")}
    kept_by_unit = kept_units.assign(community_id=kept_units["unit_id"].map(units.set_index("unit_id")["community_id"]))
    kept_by_c = {k: g for k, g in kept_by_unit.groupby("community_id")}
    released_people = a.loc[~a["kept"], "person_id"]
    out: list[CommunityPlan] = []
    creates: list[pd.DataFrame] = []
    t1 = time.perf_counter()
    jobs = []
    for c in communities.itertuples():
        cu = units_by_c.get(c.community_id, units.iloc[:0])
        cs = stewards_by_c.get(c.community_id, planned.iloc[:0])
        bids = np.unique(cu["building_id"].to_numpy())
        b_index = {int(b): i for i, b in enumerate(bids)}
        s_index = {int(p): i for i, p in enumerate(cs["person_id"])}
        u_index = {int(u): i for i, u in enumerate(cu["unit_id"])}
        if len(bids) and len(cs):
            home = xy.loc[cs["home_building_id"].astype(int).to_numpy()].to_numpy()
            dest = xy.loc[bids].to_numpy()
            dist = np.hypot(home[:, None, 0] - dest[None, :, 0], home[:, None, 1] - dest[None, :, 1])
        else:
            dist = np.zeros((len(cs), len(bids)))
        fk = kept_by_c.get(c.community_id)
        fixed = np.column_stack([
            fk["person_id"].map(lambda p, index=s_index: index.get(int(p), -1)).to_numpy(dtype=np.int64),
            fk["unit_id"].map(u_index).to_numpy(dtype=np.int64),
            fk["households"].to_numpy(dtype=np.int64),
        ]) if fk is not None and len(fk) else np.zeros((0, 3), dtype=np.int64)
        fixed_load = kept_load.reindex(cs["person_id"]).fillna(0).to_numpy(dtype=np.int64)
        inst = Instance(households=cu["households"].to_numpy(), unit_building=cu["building_id"].map(b_index).to_numpy(),
                        dist_m=dist, lo=lo, hi=hi, fixed=fixed, fixed_load=fixed_load)
        jobs.append((c, cu, cs, s_index, fixed, inst))
    results = _solve_all([j[-1] for j in jobs], time_limit_s, workers, processes)
    for (c, cu, cs, s_index, fixed, _), r in zip(jobs, results, strict=True):
        numbers = _public_numbers(r.numbers, cs, cu)
        out.append(CommunityPlan(
            community_id=int(c.community_id), code=c.community_code, name=c.community_name, feasible=r.feasible,
            explanation=None if r.feasible else explain(c.community_name, c.community_code, r.reason or "", numbers,
                                                        lo, hi, names),
            households=int(cu["households"].sum()), stewards=len(cs), kept_households=int(fixed[:, 2].sum()),
            assigned_households=int(r.new[:, 2].sum()), distance_m=r.distance_m,
            greedy_distance_m=r.greedy_distance_m, greedy_unserved=r.greedy_unserved,
            greedy_stewards_under=r.greedy_stewards_under, greedy_stewards_over=r.greedy_stewards_over,
            pairs=r.pairs, splits=r.splits, flow_pairs=r.flow_pairs, splits_optimal=r.splits_optimal,
            splits_lower_bound=r.splits_lower_bound, solve_s=r.solve_s,
            released=int(released_people.isin(s_index).sum()), numbers=numbers,
        ))
        if r.feasible and len(r.new):
            pid = cs["person_id"].to_numpy()
            uid = cu["unit_id"].to_numpy()
            creates.append(pd.DataFrame({"person_id": pid[r.new[:, 0]], "unit_id": uid[r.new[:, 1]],
                                         "households": r.new[:, 2], "community_id": c.community_id}))
    solve_s = time.perf_counter() - t1
    new = (pd.concat(creates, ignore_index=True) if creates
           else pd.DataFrame({k: pd.Series(dtype="int64")
                              for k in ("person_id", "unit_id", "households", "community_id")}))
    # Released assignments of feasible communities end unless the plan recreates them exactly.
    feasible_ids = {c.community_id for c in out if c.feasible}
    unit_comm = units.set_index("unit_id")["community_id"]
    a["community_id"] = a["unit_id"].map(unit_comm)
    bcomm = loc.set_index("building_id")["community_id"]
    a.loc[a["community_id"].isna(), "community_id"] = a.loc[a["community_id"].isna(), "building_id"].map(bcomm)
    released = a[~a["kept"] & a["community_id"].isin(feasible_ids)]
    same = released[released["target_type"] == "unit"].merge(
        new.reset_index(), on=["person_id", "unit_id", "households"], how="inner").drop_duplicates("index")
    same = same.drop_duplicates("id")
    to_end = sorted(set(released["id"].astype(int)) - set(same["id"].astype(int)))
    to_create = new.drop(index=same["index"].to_numpy()).reset_index(drop=True)
    return Plan(at=d, prefix=prefix, allow_move=allow_move, communities=out, to_end=to_end, to_create=to_create,
                unchanged=len(same), stewards_without_home=homeless, solve_s=solve_s, load_s=load_s)


def _solve_one(args) -> Result:
    inst, time_limit_s, workers = args
    return solve(inst, time_limit_s=time_limit_s, workers=workers)


def _solve_all(instances: list[Instance], time_limit_s: float, workers: int, processes: int) -> list[Result]:
    """Solve communities one after another, or in `processes` worker processes (they are independent)."""
    args = [(inst, time_limit_s, workers) for inst in instances]
    if processes <= 1 or len(instances) < 2:
        return [_solve_one(a) for a in args]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(_solve_one, args, chunksize=4))


def _public_numbers(numbers: dict, stewards: pd.DataFrame, units: pd.DataFrame) -> dict:
    """The solver's numbers with indices turned into person and unit ids."""
    out = dict(numbers)
    if "stewards_over_in_kept" in out:
        out["stewards_over_in_kept"] = stewards["person_id"].to_numpy()[out["stewards_over_in_kept"]].tolist()
    if "units_overclaimed" in out:
        out["units_overclaimed"] = units["unit_id"].to_numpy()[out["units_overclaimed"]].tolist()
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}


def plan_changes(conn: Connection, plan: Plan, limit: int = 5000) -> dict:
    """What a plan would change, listed: the first `limit` assignments to create (with the steward's name) and to
    end, and whether more were left out (the summary counts them all)."""
    create = plan.to_create.head(limit)
    names: dict[int, str] = {}
    if len(create):
        ids = create["person_id"].astype(int).unique().tolist()
        names = {r.id: r.name for r in conn.execute(text("SELECT id, name FROM people WHERE id = ANY(:i)"), {"i": ids})}
    return {
        "to_create": [{"person_id": int(r.person_id), "person_name": names.get(int(r.person_id)),
                       "unit_id": int(r.unit_id), "households": int(r.households)} for r in create.itertuples()],
        "to_end": plan.to_end[:limit],
        "truncated": len(plan.to_create) > limit or len(plan.to_end) > limit,
    }


def apply_plan(conn: Connection, plan: Plan) -> dict:
    """Write a plan: end the moved assignments on the plan date and create the new ones (never deletes)."""
    ended = 0
    if plan.to_end:
        ended = conn.execute(text(
            "UPDATE staff_assignments SET valid_to = :d WHERE id = ANY(:ids) AND (valid_to IS NULL OR valid_to > :d)"
        ), {"d": plan.at, "ids": plan.to_end}).rowcount
    created: list[int] = []
    if len(plan.to_create):
        rows = [{"p": int(r.person_id), "u": int(r.unit_id), "h": int(r.households), "d": plan.at}
                for r in plan.to_create.itertuples()]
        result = conn.execute(text(
            "INSERT INTO staff_assignments (person_id, role, target_type, unit_id, households, valid_from) "
            "SELECT p, 'steward', 'unit', u, h, :d FROM unnest(CAST(:p AS int[]), CAST(:u AS int[]), "
            "CAST(:h AS int[])) AS t(p, u, h) RETURNING id"
        ), {"p": [r["p"] for r in rows], "u": [r["u"] for r in rows], "h": [r["h"] for r in rows], "d": plan.at})
        created = [int(x) for x in result.scalars()]
    return {"ended": ended, "created": len(created), "created_ids": created, "ended_ids": plan.to_end}
