"""The household band as an exact problem (网格户数区间的精确求解): proof of infeasibility, and a CP-SAT repair.

ReCom (geo/plans/suggest.py) is a local search: when it ends with grids outside the band we do not know whether the band
can be met at all. This module answers that with OR-Tools CP-SAT on the same atoms (whole compounds that fit, else
buildings) and the same Delaunay adjacency:

1. Packing, contiguity ignored: can the atoms be grouped into k grids of lo..hi households, for some k in
   [ceil(H/hi), floor(H/lo)]? First a counting argument that names the atoms ("A 460 and B 455 pairwise exceed 500,
   so each needs a grid of its own; the other 121 households cannot fill the third grid to 300"), then CP-SAT.
   If no k packs, the band is infeasible whatever the shapes, and the numbers say why.
2. Contiguous repair: the same assignment with every grid connected in the adjacency graph. Connectivity is a
   parent forest: every atom but one root per grid has a parent among its neighbours in the same grid at a smaller
   depth, so following parents reaches the root without leaving the grid. The objective is households moved from
   their current grid first, then cut adjacency edges (a boundary-length proxy for compactness). ReCom's partition
   is the hint.
3. When only contiguity fails and the packings are few, they are listed, each with the grid whose parts do not
   touch ("(A 131) and (B 344) would share a grid but are not adjacent").

Reproducible: one CP-SAT worker, a fixed ``random_seed`` and a *deterministic* time limit (CP-SAT's work units,
measured here at roughly a wall-clock second each), so the same input and seed give the same answer whatever the
load; a wall-clock limit a few times larger only guards against a pathological machine, and a search it cut is
recorded in a `Guard` the caller passes (the suggestion then says it is not reproducible).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
from ortools.sat.python import cp_model

#: the wall-clock guard, as a multiple of the deterministic budget (reached only on an overloaded machine)
WALL_GUARD = 4.0


@dataclass
class BandCheck:
    """The answer for one grid count k: "infeasible" (with `reason`), "feasible" or "unknown" (budget ran out)."""

    k: int
    status: str
    reason: str | None = None
    assign: np.ndarray | None = field(default=None, repr=False)


def _packing_model(hh, k: int, lo: int, hi: int):
    """CP-SAT model putting each atom in exactly one of k grids of lo..hi households: (model, x[atom][grid])."""
    n = len(hh)
    m = cp_model.CpModel()
    x = [[m.new_bool_var("") for _ in range(k)] for _ in range(n)]
    for i in range(n):
        m.add_exactly_one(x[i])
    loads = []
    for s in range(k):
        load = m.new_int_var(lo, hi, "")
        m.add(load == sum(int(hh[i]) * x[i][s] for i in range(n)))
        loads.append(load)
    # the grids are interchangeable: order them by households (fewer symmetric branches to refute)
    for s in range(k - 1):
        m.add(loads[s] <= loads[s + 1])
    return m, x


@dataclass
class Guard:
    """Whether the wall-clock guard (not the deterministic budget) cut any CP-SAT search of one suggestion."""

    hit: bool = False


def _solver(seed: int, budget: float) -> cp_model.CpSolver:
    s = cp_model.CpSolver()
    s.parameters.num_workers = 1
    s.parameters.random_seed = int(seed) % (2**31 - 1)
    s.parameters.max_deterministic_time = float(budget)
    s.parameters.max_time_in_seconds = float(budget) * WALL_GUARD + 1.0
    return s


def _note_guard(solver: cp_model.CpSolver, status: cp_model.CpSolverStatus, guard: Guard | None) -> None:
    # an unfinished search that stopped before its deterministic budget was spent was cut by the wall clock
    unfinished = status in (cp_model.UNKNOWN, cp_model.FEASIBLE)
    if guard is not None and unfinished and solver.deterministic_time < solver.parameters.max_deterministic_time:
        guard.hit = True


def _solve(solver: cp_model.CpSolver, model: cp_model.CpModel, guard: Guard | None) -> cp_model.CpSolverStatus:
    st = solver.solve(model)
    _note_guard(solver, st, guard)
    return st


def counting_certificate(hh: np.ndarray, names: list[str], k: int, lo: int, hi: int) -> str | None:
    """Why k grids of lo..hi cannot hold atoms of these sizes, by counting; None when counting cannot tell.

    The m largest atoms, when every two of them exceed `hi` together, need m different grids; the rest R must
    then fill those grids to `lo` and the other k - m grids to `lo` (need), and cannot exceed what is left up to
    `hi` (room). m = 0 is the plain count k·lo ≤ H ≤ k·hi. Of the m that prove it, the one with the widest
    margin is told (the most telling numbers)."""
    order = np.argsort(-hh, kind="stable")
    h = hh[order].astype(np.int64)
    total = int(h.sum())
    best, best_margin = None, 0
    for m in range(0, len(h) + 1):
        if m >= 2 and h[m - 1] + h[m - 2] <= hi:
            break  # the m largest are no longer pairwise incompatible
        big = h[:m]
        named = "、".join(f"{names[order[i]]} {int(big[i])} 户" for i in range(m))
        if m > k:
            return f"{named} 两两相加都超过 {hi} 户, 须各占一个网格, 至少要 {m} 个网格, 多于 {k} 个"
        rest = total - int(big.sum())
        need = int(np.maximum(lo - big, 0).sum()) + (k - m) * lo
        room = int((hi - big).sum()) + (k - m) * hi
        margin = max(need - rest, rest - room)
        if margin <= best_margin:
            continue
        best_margin = margin
        if m == 0:
            best = f"{total:,} 户分成 {k} 个网格: 至少要 {k * lo:,} 户, 至多容纳 {k * hi:,} 户"
            continue
        head = f"{named} 须在一个网格中" if m == 1 else f"{named} 两两相加都超过 {hi} 户, 须各占一个网格"
        these = "这些网格" if m > 1 else "它所在的网格"
        if rest < need:
            fill = int(np.maximum(lo - big, 0).sum())
            parts = ([f"把{these}补到 {lo} 户需 {fill:,} 户"] if fill else []) + (
                [f"另 {k - m} 个网格各需 {lo} 户"] if k > m else [])
            best = f"{head}; {', '.join(parts)}, 共需 {need:,} 户, 其余单元只有 {rest:,} 户"
        else:
            parts = [f"{these}最多还能放 {int((hi - big).sum()):,} 户"] + (
                [f"另 {k - m} 个网格最多 {(k - m) * hi:,} 户"] if k > m else [])
            best = f"{head}; {', '.join(parts)}, 共 {room:,} 户, 其余单元却有 {rest:,} 户"
    return best


def pack(hh: np.ndarray, k: int, lo: int, hi: int, seed: int = 0, budget: float = 0.5,
         guard: Guard | None = None) -> tuple[str, np.ndarray | None]:
    """Group atoms into k grids of lo..hi households ignoring contiguity (CP-SAT): (status, slot per atom)."""
    n = len(hh)
    if k <= 0 or n < k:
        return "infeasible", None
    m, x = _packing_model(hh, k, lo, hi)
    solver = _solver(seed, budget)
    st = _solve(solver, m, guard)
    if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "feasible", np.array([next(s for s in range(k) if solver.boolean_value(x[i][s])) for i in range(n)])
    return ("infeasible" if st == cp_model.INFEASIBLE else "unknown"), None


def check_band(hh: np.ndarray, names: list[str], lo: int, hi: int, seed: int = 0,
               budget: float = 1.0, guard: Guard | None = None) -> list[BandCheck]:
    """For every grid count the band allows, whether the atoms pack into it (contiguity ignored), with reasons."""
    total = int(hh.sum())
    kmin, kmax = math.ceil(total / hi), total // lo if lo > 0 else len(hh)
    ks = list(range(kmin, kmax + 1))
    out = []
    for k in ks:
        reason = counting_certificate(hh, names, k, lo, hi)
        if reason:
            out.append(BandCheck(k, "infeasible", reason))
            continue
        status, assign = pack(hh, k, lo, hi, seed, budget / max(len(ks), 1), guard)
        if status == "infeasible":
            big = np.sort(hh)[::-1][:4]
            reason = (f"{len(hh)} 个不可拆分单元 (最大 {'、'.join(str(int(v)) for v in big)} 户) 无论如何组合都凑不成 "
                      f"{k} 个 {lo}–{hi} 户的网格 (CP-SAT 穷尽证明)")
        out.append(BandCheck(k, status, reason, assign))
    return out


def contiguous_partition(g: nx.Graph, hh: np.ndarray, current: np.ndarray, k: int, lo: int, hi: int,
                         hint: np.ndarray | None = None, seed: int = 0, budget: float = 1.0,
                         guard: Guard | None = None) -> tuple[str, np.ndarray | None, dict]:
    """k connected grids of lo..hi households over the graph's nodes, fewest households moved from `current`, then
    fewest cut edges (CP-SAT): (status, label per node, stats). Labels are the current grid labels (the model
    chooses which survive when k is smaller) and new ones above them."""
    n = len(hh)
    now = sorted(set(int(c) for c in current if c >= 0))
    labels = now + [max(now, default=-1) + 1 + j for j in range(max(0, k - len(now)))]
    slots = len(labels)
    slot_of = {lab: s for s, lab in enumerate(labels)}
    m = cp_model.CpModel()
    x = [[m.new_bool_var("") for _ in range(slots)] for _ in range(n)]
    used = [m.new_bool_var("") for _ in range(slots)]
    for i in range(n):
        m.add_exactly_one(x[i])
    for s in range(slots):
        load = sum(int(hh[i]) * x[i][s] for i in range(n))
        m.add(load >= lo).only_enforce_if(used[s])
        m.add(load <= hi)
        for i in range(n):
            m.add_implication(x[i][s], used[s])
    m.add(sum(used) == k)
    for s in range(len(now), slots - 1):
        m.add_implication(used[s + 1], used[s])  # new grids are interchangeable: fill them in order
    # connectivity: a parent forest with one root per used grid
    depth = [m.new_int_var(0, max(n - 1, 0), "") for _ in range(n)]
    root = [[m.new_bool_var("") for _ in range(slots)] for _ in range(n)]
    same: dict[tuple[int, int], cp_model.IntVar] = {}
    parent: dict[tuple[int, int], cp_model.IntVar] = {}
    for u, v in g.edges:
        e = (min(u, v), max(u, v))
        same[e] = m.new_bool_var("")
        for s in range(slots):
            m.add(x[e[0]][s] == x[e[1]][s]).only_enforce_if(same[e])
        for a, b in (e, e[::-1]):
            p = m.new_bool_var("")
            parent[a, b] = p  # b is a's parent
            m.add_implication(p, same[e])
            m.add(depth[b] + 1 <= depth[a]).only_enforce_if(p)
    for i in range(n):
        for s in range(slots):
            m.add_implication(root[i][s], x[i][s])
        m.add(sum(root[i]) + sum(parent[i, j] for j in g.neighbors(i)) == 1)
    for s in range(slots):
        m.add(sum(root[i][s] for i in range(n)) == used[s])
    moved = sum(int(hh[i]) * (1 - x[i][slot_of[int(current[i])]]) if int(current[i]) in slot_of else int(hh[i])
                for i in range(n))
    cut = len(same) - sum(same.values())
    m.minimize(moved * (len(same) + 1) + cut)
    if hint is not None:
        for i in range(n):
            for s in range(slots):
                m.add_hint(x[i][s], int(hint[i]) == labels[s])
    solver = _solver(seed, budget)
    t0 = time.perf_counter()
    st = _solve(solver, m, guard)
    stats = {"k": k, "atoms": n, "edges": len(same), "status": solver.status_name(st),
             "deterministic_time": round(solver.deterministic_time, 3), "wall_s": round(time.perf_counter() - t0, 3)}
    if st in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        assign = np.array([labels[next(s for s in range(slots) if solver.boolean_value(x[i][s]))] for i in range(n)])
        stats["households_moved_atoms"] = int(sum(hh[i] for i in range(n) if assign[i] != current[i]))
        stats["cut_edges"] = int(sum(not solver.boolean_value(v) for v in same.values()))
        return ("optimal" if st == cp_model.OPTIMAL else "feasible"), assign, stats
    return ("infeasible" if st == cp_model.INFEASIBLE else "unknown"), None, stats


class _Collect(cp_model.CpSolverSolutionCallback):
    def __init__(self, x, cap):
        super().__init__()
        self.x, self.cap, self.found = x, cap, set()

    def on_solution_callback(self):
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(self.x):
            groups.setdefault(next(s for s, v in enumerate(row) if self.boolean_value(v)), []).append(i)
        self.found.add(frozenset(frozenset(b) for b in groups.values()))
        if len(self.found) > self.cap:
            self.stop_search()


def why_not_contiguous(g: nx.Graph, hh: np.ndarray, names: list[str], k: int, lo: int, hi: int, seed: int = 0,
                       budget: float = 0.5, cap: int = 12, guard: Guard | None = None) -> str | None:
    """When every packing of the atoms into k grids of the band has a grid that is not connected and there are few
    packings (≤ cap): how many, and for each the grid whose parts do not touch; None when there are more (or the
    budget ran out before all were listed)."""
    m, x = _packing_model(hh, k, lo, hi)
    solver = _solver(seed, budget)
    solver.parameters.enumerate_all_solutions = True
    cb = _Collect(x, cap)
    st = solver.solve(m, cb)
    if len(cb.found) <= cap:  # a search stopped at the cap is complete ("more than cap"), not cut by the clock
        _note_guard(solver, st, guard)
    if st != cp_model.OPTIMAL or not cb.found or len(cb.found) > cap:
        return None  # not a complete list (OPTIMAL here means the enumeration finished)

    def part(nodes):
        return " + ".join(f"{names[i]} {int(hh[i])} 户" for i in sorted(nodes))

    cases: dict[str, int] = {}  # what breaks contiguity → in how many packings
    for packing in sorted(cb.found, key=lambda p: sorted(sorted(b) for b in p)):
        broken = next((b for b in sorted(packing, key=sorted) if not nx.is_connected(g.subgraph(b))), None)
        if broken is None:
            return None  # a contiguous packing exists: nothing to explain
        comps = sorted((sorted(c) for c in nx.connected_components(g.subgraph(broken))), key=lambda c: c[0])
        case = f"须把 {' 与 '.join(f'({part(c)})' for c in comps)} 放在同一网格, 它们互不相邻"
        cases[case] = cases.get(case, 0) + 1
    told = [c + (f" ({v} 种组合如此)" if v > 1 else "") for c, v in cases.items()]
    return f"不考虑连片只有 {len(cb.found)} 种分成 {k} 个网格的组合, 每种都有网格不连片: " + "; ".join(told)
