"""Superblocks (街区): jittered, twisted Voronoi cells; units dealt into them; campus superblocks in clusters.

Residential superblocks take units from the deck in radius order; the others are whole campuses (parks,
factories, colleges), merged with campus neighbours into clusters.  Blocks are what communities are grown
from: each residential superblock alone, each campus cluster as one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np
import shapely

from demo.programme import LARGER, NORMAL, SAME, STRAD, Units

log = logging.getLogger(__name__)

_CELL_SPACING = 480.0  # superblock lattice spacing
_CELL_JITTER = 0.2  # seed jitter as a fraction of the spacing
_CAMPUS_P = 0.4  # share of superblocks that are whole dedicated campuses (parks, factories, colleges)


@dataclass
class Superblocks:
    """The chosen superblocks with their orientation and adjacency (metres, around (0, 0))."""

    geoms: np.ndarray
    campus: np.ndarray  # whole dedicated campus, no units
    theta: np.ndarray  # street-grid orientation, radians
    area: np.ndarray
    xy: np.ndarray  # centroids
    pairs: tuple[np.ndarray, np.ndarray]  # neighbours sharing more than 1 m of edge, i < j
    nbrs: list[list[int]]  # the same as sorted lists
    radius: float  # radius of the residential disc


@dataclass
class Blocks:
    """Campus clusters and blocks (the pieces communities are made of)."""

    cluster: np.ndarray  # campus cluster of each superblock, -1 for residential ones
    cluster_dtype: np.ndarray  # dedicated type of each campus cluster
    block: np.ndarray  # block of each superblock: residential ones first, then the clusters
    n: int


def lay_superblocks(rng: np.random.Generator, units: Units) -> tuple[Superblocks, np.ndarray]:
    """Voronoi superblocks around (0, 0), packed with the deck's units in radius order; also each unit's superblock."""
    a_res = float(units.area.sum())
    radius = math.sqrt(a_res / (1 - _CAMPUS_P) / math.pi)
    spacing = _CELL_SPACING
    half = 2.2 * radius + 3 * spacing
    n = int(math.ceil(2 * half / spacing)) + 1
    g = (np.arange(n) - (n - 1) / 2) * spacing
    gx, gy = np.meshgrid(g, g)
    pts = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-_CELL_JITTER, _CELL_JITTER, (n * n, 2)) * spacing
    theta0 = rng.uniform(-0.35, 0.35)
    twist = rng.uniform(0.12, 0.3) * rng.choice([-1.0, 1.0])
    r = np.hypot(pts[:, 0], pts[:, 1])
    alpha = theta0 + twist * np.minimum(r / radius, 1.6)
    ca, sa = np.cos(alpha), np.sin(alpha)
    pts = np.column_stack([pts[:, 0] * ca - pts[:, 1] * sa, pts[:, 0] * sa + pts[:, 1] * ca])
    half = float(np.abs(pts).max()) + spacing
    bound = shapely.box(-half, -half, half, half)
    vor = shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=bound, ordered=True)
    cells = np.asarray(shapely.intersection(shapely.get_parts(vor), bound))
    cen = shapely.get_coordinates(shapely.centroid(cells))
    phi = np.arctan2(cen[:, 1], cen[:, 0])
    rc = np.hypot(cen[:, 0], cen[:, 1])
    wob = np.ones(len(cells))
    for kk, amp in ((2, 0.16), (3, 0.1), (5, 0.06)):
        wob = wob + amp * np.sin(kk * phi + rng.uniform(0, 2 * np.pi))
    reff = rc / wob
    campus = rng.random(len(cells)) < _CAMPUS_P * np.clip(0.4 + 0.9 * rc / radius, 0.4, 1.6)
    order = np.argsort(reff, kind="stable")
    area = shapely.area(cells)
    u_cell, sel = _pack(units, order, campus, area)
    geoms = cells[sel]
    tree = shapely.STRtree(geoms)
    i, j = tree.query(geoms, predicate="intersects")
    m = i < j
    i, j = i[m], j[m]
    shared = shapely.length(shapely.intersection(geoms[i], geoms[j]))
    m = shared > 1.0
    pairs = (i[m], j[m])
    sb = Superblocks(
        geoms=geoms, campus=campus[sel].copy(), theta=alpha[sel], area=area[sel], xy=cen[sel], pairs=pairs,
        nbrs=adjacency(len(sel), *pairs), radius=radius,
    )
    return sb, u_cell


def _pack(units: Units, order: np.ndarray, campus: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deal the shuffled units into residential superblocks in radius order, about one area's worth each.

    A superblock holding a grid-equals-compound unit also takes a grid able to absorb road margins.  Returns each
    unit's superblock (a position in the selection) and the selected cells."""
    ua, ug = units.area, units.n_grids
    absorb = np.isin(units.kind, [STRAD, NORMAL])
    exact = np.isin(units.kind, [SAME, LARGER])
    u_cell = np.full(len(ua), -1, dtype=np.int64)
    queue = list(range(len(ua)))
    fill = 0.84  # leaves room for the absorbing units added below, so units keep their nominal size
    sel: list[int] = []
    for c in order.tolist():
        if not queue:
            break
        pos = len(sel)
        sel.append(c)
        if campus[c]:
            continue
        taken: list[int] = []
        tot, grids = 0.0, 0
        while queue and (not taken or (tot + ua[queue[0]] / 2 <= fill * area[c] and grids + ug[queue[0]] <= 6)):
            i = queue.pop(0)
            taken.append(i)
            tot += ua[i]
            grids += ug[i]
        if exact[taken].any() and not absorb[taken].any():
            j = next((q for q in queue if absorb[q]), None)
            if j is not None:
                queue.remove(j)
                if grids + ug[j] > 7:
                    back = [t for t in taken if exact[t]][-1]
                    taken.remove(back)
                    queue.insert(0, back)
                taken.append(j)
        u_cell[taken] = pos
    if queue:
        raise RuntimeError("candidate superblocks ran out before every unit was placed")
    return u_cell, np.asarray(sel, dtype=np.int64)


def adjacency(n: int, a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    """Sorted neighbour lists of n nodes from undirected pairs (a[i], b[i])."""
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        nbrs[x].append(y)
        nbrs[y].append(x)
    return [sorted(x) for x in nbrs]


def deal_units(units: Units, u_cell: np.ndarray, sb: Superblocks) -> Units:
    """Repair superblocks whose units are all grid-equals-compound (nobody there could take the road margin);
    return the deck ordered by superblock, with each unit's superblock."""
    u_cell = u_cell.copy()
    kind, pieces = units.kind.copy(), units.pieces.copy()
    ngrids, area = units.n_grids, units.area
    nc = len(sb.geoms)
    absorb = np.isin(kind, [STRAD, NORMAL])
    exact = np.isin(kind, [SAME, LARGER])
    n_abs = np.bincount(u_cell[absorb], minlength=nc)
    n_ex = np.bincount(u_cell[exact], minlength=nc)
    ng_cell = np.bincount(u_cell, weights=ngrids, minlength=nc).astype(np.int64)
    swaps = 0
    for d in np.flatnonzero((n_ex > 0) & (n_abs == 0)):
        ex_d = np.flatnonzero((u_cell == d) & exact)
        e = ex_d[np.argmin(ngrids[ex_d])]
        cand = np.flatnonzero(absorb & (n_abs[u_cell] >= 2))
        cand = cand[ng_cell[u_cell[cand]] - ngrids[cand] + ngrids[e] <= 7]
        if not len(cand):
            continue
        # the nearest superblock, then the unit closest in size
        a = cand[np.lexsort((np.abs(area[cand] - area[e]), np.abs(u_cell[cand] - d)))[0]]
        dn = u_cell[a]
        u_cell[a], u_cell[e] = d, dn
        n_abs[dn] -= 1
        n_abs[d] += 1
        n_ex[d] -= 1
        n_ex[dn] += 1
        moved = ngrids[e] - ngrids[a]
        ng_cell[dn] += moved
        ng_cell[d] -= moved
        swaps += 1
    # last resort (end of the deck): a 'same' unit there and a grid-with-compounds unit elsewhere trade
    # roles, which keeps every count
    for d in np.flatnonzero((n_ex > 0) & (n_abs == 0)):
        same_d = np.flatnonzero((u_cell == d) & (kind == SAME))
        donor = np.flatnonzero((kind == NORMAL) & (n_abs[u_cell] >= 2) & (n_ex[u_cell] == 0))
        if not len(same_d) or not len(donor):
            continue
        e, a = same_d[0], donor[np.argmin(np.abs(u_cell[donor] - d))]
        kind[e], pieces[e] = NORMAL, 2
        kind[a], pieces[a] = SAME, 1
        n_abs[d] += 1
        n_ex[d] -= 1
        n_abs[u_cell[a]] -= 1
        n_ex[u_cell[a]] += 1
        swaps += 1
    log.debug("unit swaps %d, superblocks without absorber %d", swaps, int(((n_ex > 0) & (n_abs == 0)).sum()))
    order = np.lexsort((np.arange(len(u_cell)), u_cell))
    return replace(
        units, kind=kind[order], pieces=pieces[order], dedicated=units.dedicated[order], area=area[order],
        n_grids=ngrids[order], cell=u_cell[order],
    )


def cluster_campuses(rng: np.random.Generator, sb: Superblocks) -> Blocks:
    """Merge neighbouring campus superblocks into campus clusters (large parks, factories, colleges)."""
    nc = len(sb.geoms)
    cluster = np.full(nc, -1, dtype=np.int64)
    k = 0
    camp = sb.campus
    for c in np.flatnonzero(camp):
        if cluster[c] >= 0:
            continue
        size = int(rng.choice([1, 2, 3, 4, 5], p=[0.35, 0.25, 0.2, 0.12, 0.08]))
        cluster[c] = k
        members = 1
        frontier = sorted(x for x in sb.nbrs[c] if camp[x] and cluster[x] < 0)
        while members < size and frontier:
            x = frontier.pop(0)
            if cluster[x] >= 0:
                continue
            cluster[x] = k
            members += 1
            frontier = sorted(set(frontier) | {y for y in sb.nbrs[x] if camp[y] and cluster[y] < 0})
        k += 1
    sizes = np.bincount(cluster[cluster >= 0], minlength=k)
    small_p = [0.2, 0.15, 0.3, 0.2, 0.15]
    big_p = [0.15, 0.05, 0.45, 0.35, 0.0]
    r1, r2 = rng.choice(5, k, p=small_p), rng.choice(5, k, p=big_p)
    # blocks: each residential superblock alone, each campus cluster as one
    block = np.where(camp, -1, 0)
    res = np.flatnonzero(~camp)
    block[res] = np.arange(len(res))
    block[camp] = len(res) + cluster[camp]
    return Blocks(cluster=cluster, cluster_dtype=np.where(sizes >= 2, r2, r1), block=block, n=len(res) + k)
