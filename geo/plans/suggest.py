"""Suggested comprehensive grids (网格划分建议) by spanning-tree recombination (ReCom, as in GerryChain).

Method and why: the atoms are compounds (小区) kept whole, or their buildings when a compound alone holds more
households than the band's maximum, plus buildings outside any compound. Atoms are joined by the Delaunay
triangulation of their points (the dual of their Voronoi cells, which is also how the suggested grid polygons are
drawn, so graph-contiguous means polygon-contiguous). A partition into k connected districts is improved by ReCom
steps: merge two adjacent districts, draw a random spanning tree of the merged part (networkx, random weights from
the seed), and cut the one tree edge that best splits it. Among the cuts we keep the best by, in order:
households outside the band, households moved from their current grid, then compactness (moment of inertia).
ReCom was chosen over max-p-regions (spopt) because max-p only enforces a floor (each region ≥ min households)
and maximises the number of regions, while the band has a ceiling too and we must honour "fewest households
moved"; and over a MILP because contiguity constraints make MILPs slow beyond ~100 atoms, while a spanning-tree
cut is connected by construction. Reproducible: every random draw comes from ``numpy.random.default_rng(seed)``.

A street plan is suggested community by community (a grid never crosses a community boundary): each community
gets its own partition, explanation and numbers, and the feasible ones apply together as one operation.

Reproducible means reproducible: the search ends after a fixed number of ReCom steps (or when every grid is in
the band with nothing moved), never by the clock; a wall-clock guard (``time_budget_s``, 30 s by default) only
stops a runaway search, and an answer it cut says so (``reproducible: false`` and a sentence in the explanation).
The same holds for the exact step below: its budget is CP-SAT work units, and a search its wall-clock guard cut is
reported the same way.

Infeasibility is explained in numbers: the households need between ceil(H/max) and floor(H/min) grids, and an
atom that cannot be split (one building) above the maximum is named.

When ReCom ends with grids outside the band, an exact step follows (`suggest_band`, OR-Tools CP-SAT on the same
atoms and adjacency): for every grid count the band allows it decides whether the atoms can be packed into grids of
the band at all (contiguity ignored); if none can, the explanation says why in numbers (which compounds need grids
of their own, how many households are left to fill the rest). Otherwise it searches a contiguous partition in the
band, fewest households moved first, ReCom's partition as the hint, with a deterministic budget so the seed still
reproduces the answer.
"""

from __future__ import annotations

import math
import time
from typing import Any

import networkx as nx
import numpy as np
import shapely
from sqlalchemy import Connection

from geo.plans.drafts import PlanState, apply_operation_plain, load_state, owner_of_points
from geo.plans.errors import PlanError, SuggestionRefused, refused_as
from geo.settings import get_settings

#: CP-SAT work units for the exact band step (deterministic: the same answer on a busy or a quiet machine).
REPAIR_BUDGET = 5.0


def atoms_for(buildings: dict, compounds: dict, hmax: int, metric) -> dict:
    """Atoms: whole compounds that fit the band's maximum, else single buildings; with households and points."""
    bid, cid, hh = buildings["id"], buildings["compound_id"], buildings["households"]
    comp_hh = {int(c): int(hh[cid == c].sum()) for c in np.unique(cid[cid >= 0])}
    whole = np.array([c >= 0 and comp_hh[int(c)] <= hmax for c in cid])
    label = np.where(whole, cid, -1 - np.arange(len(bid)))  # negative labels: a building on its own
    uniq, inv = np.unique(label, return_inverse=True)
    pts_m = shapely.point_on_surface(metric(buildings["geom"]))
    x, y = shapely.get_x(pts_m), shapely.get_y(pts_m)
    n = len(uniq)
    ahh = np.bincount(inv, weights=hh, minlength=n)
    w = np.maximum(np.bincount(inv, minlength=n), 1)
    ax, ay = np.bincount(inv, weights=x, minlength=n) / w, np.bincount(inv, weights=y, minlength=n) / w
    split = sorted(int(c) for c, v in comp_hh.items() if v > hmax)
    names = dict(zip(compounds["id"].tolist(), compounds["name"].tolist(), strict=True))
    return {"label": uniq, "of_building": inv, "households": ahh.astype(np.int64), "x": ax, "y": ay,
            "split_compounds": [{"compound_id": c, "name": names.get(c), "households": comp_hh[c]} for c in split],
            "compound_households": comp_hh, "names": names}


def adjacency(x: np.ndarray, y: np.ndarray) -> nx.Graph:
    """Delaunay adjacency of the atoms' points (a path for fewer than three, or collinear points)."""
    g = nx.Graph()
    n = len(x)
    g.add_nodes_from(range(n))
    if n < 2:
        return g
    pts = np.asarray(shapely.points(x + np.arange(n) * 1e-6, y))  # de-duplicate coincident points, not moving them
    tris = shapely.get_parts(shapely.delaunay_triangles(shapely.multipoints(pts)))
    if len(tris):
        tree = shapely.STRtree(pts)
        for t in tris:
            idx = tree.query(t, predicate="intersects")
            idx = idx[shapely.intersects(shapely.boundary(t), pts[idx])]
            for i in idx:
                for j in idx:
                    if i < j:
                        g.add_edge(int(i), int(j))
    if not nx.is_connected(g):
        order = np.argsort(x)
        for i, j in zip(order[:-1], order[1:], strict=True):
            g.add_edge(int(i), int(j))
    return g


class _Objective:
    def __init__(self, hh, x, y, current, lo, hi):
        self.hh, self.x, self.y, self.current, self.lo, self.hi = hh, x, y, current, lo, hi

    def violation(self, total: float) -> float:
        return max(0.0, self.lo - total) + max(0.0, total - self.hi)

    def district(self, nodes: np.ndarray, label: int) -> tuple[float, float, float]:
        h = self.hh[nodes]
        total = float(h.sum())
        moved = float(h[self.current[nodes] != label].sum())
        cx, cy = self.x[nodes].mean(), self.y[nodes].mean()
        inertia = float(((self.x[nodes] - cx) ** 2 + (self.y[nodes] - cy) ** 2).sum())
        return self.violation(total), moved, inertia


def _tree_cuts(tree: nx.Graph, nodes: list[int], hh: np.ndarray):
    """Every edge of a spanning tree with the node set on one side (subtree sums by one DFS)."""
    root = nodes[0]
    parent: dict[int, int] = {}
    seen = {root}
    order = [root]
    stack = [root]
    while stack:
        u = stack.pop()
        for v in tree.neighbors(u):
            if v not in seen:
                seen.add(v)
                parent[v] = u
                order.append(v)
                stack.append(v)
    children: dict[int, list[int]] = {u: [] for u in order}
    for u in order[1:]:
        children[parent[u]].append(u)
    sub: dict[int, list[int]] = {}
    for u in reversed(order):
        acc = [u]
        for c in children[u]:
            acc.extend(sub[c])
        sub[u] = acc
    for u in order[1:]:
        yield np.array(sub[u])


def _bisect(g: nx.Graph, nodes: list[int], k: int, obj: _Objective, rng, tries: int = 50) -> list[np.ndarray]:
    """Split `nodes` into k connected parts by recursive spanning-tree bisection (best balance found)."""
    if k == 1:
        return [np.array(nodes)]
    k1 = k // 2
    total = obj.hh[nodes].sum()
    best: np.ndarray | None = None
    best_score = math.inf
    sub = g.subgraph(nodes)
    for _ in range(tries):
        for u, v in sub.edges:
            sub.edges[u, v]["w"] = rng.random()
        tree = nx.minimum_spanning_tree(sub, weight="w")
        for side in _tree_cuts(tree, list(nodes), obj.hh):
            if len(side) < k1 or len(nodes) - len(side) < k - k1:
                continue  # each part needs at least one atom per grid
            a = obj.hh[side].sum()
            score = abs(a / k1 - (total - a) / (k - k1))
            for part_k, part in ((k1, a), (k - k1, total - a)):
                score += max(0, obj.lo * part_k - part) + max(0, part - obj.hi * part_k)
            if score < best_score:
                best_score, best = score, side
        if best_score < 1:
            break
    if best is None:
        raise PlanError(f"{len(nodes)} atoms cannot be split into {k} connected parts")
    rest = np.setdiff1d(np.asarray(nodes), best)
    return _bisect(g, best.tolist(), k1, obj, rng) + _bisect(g, rest.tolist(), k - k1, obj, rng)


def _match_labels(parts: list[np.ndarray], obj: _Objective, labels: list[int]) -> list[int]:
    """Give each part the current grid label holding most of its households (greedy), else a new label."""
    scores = []
    for pi, p in enumerate(parts):
        for lab in labels:
            scores.append((float(obj.hh[p][obj.current[p] == lab].sum()), pi, lab))
    matched: list[int | None] = [None] * len(parts)
    used: set[int] = set()
    for s, pi, lab in sorted(scores, reverse=True):
        if matched[pi] is None and lab not in used and s > 0:
            matched[pi], used = lab, used | {lab}
    nxt = max(labels, default=-1) + 1
    out = []
    for got in matched:
        if got is None:
            out.append(nxt)
            nxt += 1
        else:
            out.append(got)
    return out


def recom(g: nx.Graph, hh: np.ndarray, x: np.ndarray, y: np.ndarray, current: np.ndarray, k: int, lo: int, hi: int,
          seed: int = 0, steps: int = 300, time_budget_s: float = 30.0) -> tuple[np.ndarray, dict]:
    """Partition the graph's nodes into k connected districts in [lo, hi] households, fewest moved (labels =
    current grid labels where matched); `steps` ends the search, `time_budget_s` only guards against a runaway one
    (``stopped_by`` says which: a search the guard cut is not reproducible from its seed)."""
    rng = np.random.default_rng(seed)
    obj = _Objective(hh, x, y, current, lo, hi)
    labels_now = sorted(set(current[current >= 0].tolist()))
    assign = current.copy()
    start_ok = len(labels_now) == k and (current >= 0).all() and all(
        nx.is_connected(g.subgraph(np.flatnonzero(current == lab).tolist())) for lab in labels_now)
    if not start_ok:
        parts = _bisect(g, list(range(len(hh))), k, obj, rng)
        for p, lab in zip(parts, _match_labels(parts, obj, labels_now), strict=True):
            assign[p] = lab
    t0 = time.perf_counter()
    accepted = done = 0
    stopped_by = "steps"
    for _ in range(steps):
        if time.perf_counter() - t0 >= time_budget_s:
            stopped_by = "time"
            break
        done += 1
        labs = np.unique(assign)
        scores = {lab: obj.district(np.flatnonzero(assign == lab), lab) for lab in labs}
        if all(s[0] == 0 and s[1] == 0 for s in scores.values()):
            stopped_by = "converged"
            break
        # pick a district to improve: out of band first, else one with moved households
        bad = [lab for lab in labs if scores[lab][0] > 0] or [lab for lab in labs if scores[lab][1] > 0]
        a = bad[rng.integers(len(bad))]
        na = np.flatnonzero(assign == a)
        neigh = {int(assign[v]) for u in na for v in g.neighbors(int(u))} - {int(a)}
        if not neigh:
            continue
        b = sorted(neigh)[rng.integers(len(neigh))]
        nodes = np.flatnonzero((assign == a) | (assign == b))
        sub = g.subgraph(nodes.tolist())
        for u, v in sub.edges:
            sub.edges[u, v]["w"] = rng.random()
        tree = nx.minimum_spanning_tree(sub, weight="w")
        old = tuple(sum(v) for v in zip(scores[a], scores[b], strict=True))
        best, best_score = None, old
        for side in _tree_cuts(tree, nodes.tolist(), hh):
            other = np.setdiff1d(nodes, side)
            for la, lb in ((a, b), (b, a)):
                s1, s2 = obj.district(side, la), obj.district(other, lb)
                score = (s1[0] + s2[0], s1[1] + s2[1], s1[2] + s2[2])
                if score < best_score:
                    best_score, best = score, (side, other, la, lb)
        if best is not None:
            side, other, la, lb = best
            assign[side], assign[other] = la, lb
            accepted += 1
    totals = {int(lab): int(hh[assign == lab].sum()) for lab in np.unique(assign)}
    return assign, {"steps": done, "accepted": accepted, "households": totals, "stopped_by": stopped_by,
                    "elapsed_s": round(time.perf_counter() - t0, 3)}


def atom_names(a: dict, b: dict) -> list[str]:
    """A readable name per atom: the compound's name, else "楼栋 <id>" (a loose building or a split compound's)."""
    first = np.empty(len(a["label"]), dtype=np.int64)
    first[a["of_building"][::-1]] = b["id"][::-1]  # the first building of each atom
    return [str(a["names"].get(int(lab), f"小区 {int(lab)}")) if lab >= 0 else f"楼栋 {int(fb)}"
            for lab, fb in zip(a["label"], first, strict=True)]


def _repair(g: nx.Graph, a: dict, b: dict, cur: np.ndarray, n_now: int, best: tuple, lo: int, hi: int, seed: int,
            budget: float) -> dict:
    """When ReCom leaves grids out of band: for every grid count the band allows, whether the atoms can be packed
    at all (counting, then CP-SAT; contiguity ignored); then, for the packable counts nearest today's, a contiguous
    band-respecting partition by CP-SAT (fewest households moved, ReCom's partition as the hint). Budgets are
    deterministic (CP-SAT work units): a quarter for the packing checks, the rest for the contiguous search."""
    from geo.plans.suggest_band import Guard, check_band, contiguous_partition, why_not_contiguous

    hh = a["households"]
    names = atom_names(a, b)
    total = int(hh.sum())
    guard = Guard()
    checks = check_band(hh, names, lo, hi, seed, budget * 0.25, guard)
    reasons = [f"{c.k} 个网格: {c.reason}" for c in checks if c.status == "infeasible"]
    out: dict[str, Any] = {"assign": None, "k": None,
                           "band_checks": [{"k": c.k, "status": c.status, "reason": c.reason} for c in checks],
                           "contiguous": [], "reasons": reasons, "band_infeasible": False, "guard": guard}
    packable = sorted((c.k for c in checks if c.status != "infeasible"), key=lambda k: (abs(k - n_now), k))
    ks_all = [c.k for c in checks]
    if not packable:
        out["band_infeasible"] = True
        span = f"{ks_all[0]}" if len(ks_all) == 1 else f"{ks_all[0]}–{ks_all[-1]}"
        out["why"] = (f"户数区间无法满足 (与形状无关): 不拆分能放下的小区时, {total:,} 户只能分成 {span} 个网格, "
                      + "; ".join(reasons))
        return out
    left = budget * 0.75
    hint_k = best[2]["k"]
    for i, k in enumerate(packable):
        share = left / (len(packable) - i)
        status, assign, stats = contiguous_partition(g, hh, cur, k, lo, hi, best[1] if k == hint_k else None,
                                                     seed, share, guard)
        left -= min(stats["deterministic_time"], share)
        out["contiguous"].append(stats)
        if assign is not None:
            out.update(assign=assign, k=k)
            return out
    proven = all(s["status"] == "INFEASIBLE" for s in out["contiguous"])
    if proven and len(out["contiguous"]) == len(packable):
        # every count that packs fails only on contiguity: say, per count, which grids cannot be joined
        out["band_infeasible"] = True
        told = {c.k: c.reason for c in checks if c.status == "infeasible"}
        for k in packable:
            told[k] = why_not_contiguous(g, hh, names, k, lo, hi, seed, budget * 0.25, guard=guard) or (
                f"CP-SAT 证明 {len(hh)} 个单元按相邻关系无法连片地分成 {k} 个 {lo}–{hi} 户的网格")
        out["reasons"] = [f"{k} 个网格: {told[k]}" for k in sorted(told)]
        span = f"{ks_all[0]}" if len(ks_all) == 1 else f"{ks_all[0]}–{ks_all[-1]}"
        out["why"] = (f"户数区间在网格连片时无法满足: 不拆分能放下的小区时, {total:,} 户须分成 {span} 个网格, "
                      + "; ".join(out["reasons"]))
        return out
    out["why"] = (f"不考虑连片时可分成 {'、'.join(str(k) for k in sorted(packable))} 个网格, "
                  f"但在 {budget:.1f} 个时间单位内未找到连片且符合 {lo}–{hi} 户的划分")
    out["reasons"] = reasons + [out["why"]]
    return out


def suggest_state(state: PlanState, buildings: dict, compounds: dict, community, proj, seed: int = 0,
                  steps: int = 300, time_budget_s: float = 30.0, repair_budget: float | None = None) -> dict:
    """Suggest comprehensive grids for a plan's community (in memory); `time_budget_s` guards ReCom's search (see
    the module docstring), `repair_budget` (CP-SAT work units, default `REPAIR_BUDGET`) bounds the exact step that
    runs only when ReCom leaves grids out of band."""
    rules = get_settings().rules
    lo, hi = rules.grid_households_min, rules.grid_households_max
    comp = [r for r in state.live("grid") if (r.get("kind") or "comprehensive") == "comprehensive"]
    if not comp:
        raise PlanError("the plan has no comprehensive grid to redraw")
    area = shapely.union_all([r["geom"] for r in comp])
    pts = shapely.point_on_surface(buildings["geom"])
    inside = shapely.covers(area, pts) & (buildings["households"] > 0)
    b = {k: v[inside] for k, v in buildings.items()}
    a = atoms_for(b, compounds, hi, proj.metric)
    total = int(a["households"].sum())
    kmin, kmax = math.ceil(total / hi), total // lo if lo > 0 else len(a["label"])
    reasons = []
    if kmin > kmax:
        reasons.append(f"{total:,} 户需要 {kmin} 到 {kmax} 个网格 (每格 {lo}–{hi} 户), 无整数解")
    big = np.flatnonzero(a["households"] > hi)
    for i in big:
        first = int(b["id"][a["of_building"] == i][0])
        reasons.append(f"楼栋 {first} 单独就有 {int(a['households'][i])} 户, 超过上限 {hi}")
    out = {"method": "recom", "seed": seed, "households": total, "band": [lo, hi], "grids_needed": [kmin, kmax],
           "atoms": int(len(a["label"])), "split_compounds": a["split_compounds"],
           "explanation": (f"{total:,} 户需要 {kmin} 到 {kmax} 个综合网格" if kmin <= kmax else "")}
    if reasons:
        return {**out, "feasible": False, "reasons": reasons}
    owner = owner_of_points(shapely.point_on_surface(b["geom"]), comp)
    # an atom's current grid: where most of its households are now
    cur = np.full(len(a["label"]), -1)
    for ai in range(len(a["label"])):
        m = a["of_building"] == ai
        o, h = owner[m], b["households"][m]
        if (o >= 0).any():
            cur[ai] = int(np.bincount(o[o >= 0], weights=h[o >= 0]).argmax())
    g = adjacency(a["x"], a["y"])
    # the grid count closest to today's first (fewest moves), then the others the band allows
    ks = sorted(range(kmin, min(kmax, len(a["label"])) + 1), key=lambda k: (abs(k - len(comp)), k))[:4]
    if not ks:
        return {**out, "feasible": False,
                "reasons": [f"{len(a['label'])} 个不可拆分的小区/楼栋不够分成 {kmin} 个网格"]}
    best: tuple[float, np.ndarray, dict] | None = None
    guard_hit = False
    for k in ks:
        assign, stats = recom(g, a["households"], a["x"], a["y"], cur, k, lo, hi, seed, steps,
                              time_budget_s / len(ks))
        guard_hit |= stats["stopped_by"] == "time"
        totals = np.array(list(stats["households"].values()))
        score = float(np.maximum(lo - totals, 0).sum() + np.maximum(totals - hi, 0).sum())
        if best is None or score < best[0]:
            best = (score, assign, {**stats, "k": k})
        if score == 0:
            break
    assert best is not None  # ks is not empty
    repair = None
    if best[0] > 0:
        # ReCom ended outside the band: decide exactly (CP-SAT) whether the band can be met, and meet it if so
        repair = _repair(g, a, b, cur, len(comp), best, lo, hi, seed,
                         REPAIR_BUDGET if repair_budget is None else repair_budget)
        if repair["assign"] is not None:
            best = (0.0, repair["assign"], {**best[2], "k": repair["k"]})
            out["method"] = "recom+cp-sat"
    _, assign, stats = best
    if repair is not None:
        stats = {**stats, "repair": {k: v for k, v in repair.items() if k not in ("assign", "guard")}}
        cp_guard_hit = repair["guard"].hit
    else:
        cp_guard_hit = False
    bassign = assign[a["of_building"]]
    moved = int(b["households"][bassign != owner].sum())
    regions = []
    for lab in np.unique(assign):
        m = bassign == lab
        regions.append({"label": int(lab), "key": comp[lab]["key"] if 0 <= lab < len(comp) else None,
                        "households": int(b["households"][m].sum()), "building_ids": b["id"][m].tolist()})
    hh = np.array([r["households"] for r in regions])
    mid = (lo + hi) / 2
    split_fitting = sum(len(set(bassign[b["compound_id"] == c].tolist())) > 1
                        for c, v in a["compound_households"].items() if v <= hi)
    in_band = bool(((hh >= lo) & (hh <= hi)).all())
    if guard_hit:
        out["explanation"] += (f"; 搜索在 {time_budget_s:g} 秒的时间上限处截止 (而非 {steps} 步), "
                               f"同一种子在负载不同的机器上可能给出不同结果")
    if cp_guard_hit:
        out["explanation"] += ("; 精确求解 (CP-SAT) 在时间上限处截止 (而非确定性的工作量上限), "
                               "同一种子在负载不同的机器上可能给出不同结果")
    if not in_band:
        out["explanation"] += (f"; 整个小区不拆分时找到的最好方案仍有 {int(((hh < lo) | (hh > hi)).sum())} 个网格"
                               f"超出 {lo}–{hi} 户 (最小 {int(hh.min())}, 最大 {int(hh.max())})")
        if repair is not None:
            out["explanation"] += "; " + repair["why"]
            out["band_reasons"] = repair["reasons"]
            out["band_infeasible"] = repair["band_infeasible"]
    return {**out, "feasible": True, "in_band": in_band, "reproducible": not (guard_hit or cp_guard_hit),
            "grids": len(regions), "households_per_grid": hh.tolist(),
            "max_deviation_from_middle": float(np.abs(hh - mid).max()), "households_moved": moved,
            "compounds_split": len(a["split_compounds"]) + split_fitting, "fitting_compounds_split": split_fitting,
            "regions": regions, "search": stats, "area_wkb": shapely.to_wkb(area, hex=True),
            "building_points": {"id": b["id"].tolist()}}


def as_operation(suggestion: dict) -> dict:
    """The suggestion as a plan operation (``type: suggestion``): regions of building ids (a street suggestion:
    one part per community whose suggestion is feasible, applied as one operation)."""
    if suggestion.get("scope") == "street":
        return {"type": "suggestion", "seed": suggestion["seed"],
                "parts": [{"community": c["community"],
                           "regions": [{"key": r["key"], "building_ids": r["building_ids"]} for r in c["regions"]]}
                          for c in suggestion["per_community"] if c.get("feasible") and c.get("regions")]}
    return {"type": "suggestion", "seed": suggestion["seed"],
            "regions": [{"key": r["key"], "building_ids": r["building_ids"]} for r in suggestion["regions"]]}


@refused_as(SuggestionRefused)
def apply_suggestion(conn: Connection, plan_id: int, suggestion: dict, actor: str | None = None,
                     if_revision: int | None = None) -> dict:
    """Apply a suggestion to its plan as one operation (see `as_operation`); as `geo.plans.drafts.apply_operation`."""
    return apply_operation_plain(conn, plan_id, as_operation(suggestion), actor, if_revision)


@refused_as(SuggestionRefused)
def suggest_for_plan(conn: Connection, plan_id: int, seed: int = 0, steps: int = 300,
                     time_budget_s: float = 30.0) -> dict:
    """Suggest comprehensive grids for a stored plan: its community, or (a street plan) each community of the
    street on its own, since a grid never crosses a community boundary."""
    from geo.plans.validation import contexts_for

    state = load_state(conn, plan_id)
    ctxs = contexts_for(conn, list(state.communities))
    parts = []
    for cid, code in state.communities.items():
        sub, ctx = state.sub(cid), ctxs[cid]
        try:
            out = suggest_state(sub, ctx.buildings, ctx.compounds, ctx.community, ctx.proj, seed, steps,
                                time_budget_s / len(state.communities) if state.is_street else time_budget_s)
        except PlanError as exc:
            if not state.is_street:
                raise
            out = {"method": "recom", "seed": seed, "feasible": False, "reasons": [str(exc)]}
        out.pop("area_wkb", None)
        out.pop("building_points", None)
        parts.append({"community": code, **out})
    if not state.is_street:
        return {**parts[0], "plan_id": plan_id}
    feasible = [p for p in parts if p["feasible"]]
    return {"plan_id": plan_id, "scope": "street", "method": "recom", "seed": seed,
            "explanation": (f"按社区分别划分: 网格不跨社区, {len(feasible)}/{len(parts)} 个社区有可行方案"),
            "feasible": bool(feasible), "all_feasible": len(feasible) == len(parts),
            "households": int(sum(p.get("households", 0) for p in parts)),
            "households_moved": int(sum(p.get("households_moved", 0) for p in feasible)),
            "compounds_split": int(sum(p.get("compounds_split", 0) for p in feasible)),
            "per_community": parts}
