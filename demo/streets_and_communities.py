"""Communities (社区) grown from whole blocks and streets (街道) from whole communities; their codes, names, layers.

Both are contiguous regions grown greedily over the adjacency graph in a serpentine order (north→south,
alternating west→east and east→west), then too-light regions merged into their lightest neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from demo.arrays import row_order
from demo.district import DISTRICT_CODE, layer_frame
from demo.programme import Units
from demo.superblocks import Blocks, Superblocks, adjacency
from demo.vocabulary import PLACE_A, PLACE_B, STREET_BASE

_DIRECTIONS = ("新", "东", "西", "南", "北")


@dataclass
class Jurisdictions:
    """Which community each block and superblock belongs to, and which street each community."""

    block_comm: np.ndarray
    cell_comm: np.ndarray
    comm_street: np.ndarray

    @property
    def n_comm(self) -> int:
        """Number of communities."""
        return int(self.block_comm.max() + 1)

    @property
    def n_streets(self) -> int:
        """Number of streets."""
        return int(self.comm_street.max() + 1)


def group_jurisdictions(
    rng: np.random.Generator, sb: Superblocks, blocks: Blocks, units: Units, n_streets: int
) -> Jurisdictions:
    """Communities of 2-7 grids from whole blocks (at most three campus blocks each), then about `n_streets`
    streets of equal grid counts from whole communities."""
    nb = blocks.n
    cb = blocks.block
    cell_ngrids = np.bincount(units.cell, weights=units.n_grids, minlength=len(sb.geoms)).astype(np.int64)
    w = np.bincount(cb, weights=cell_ngrids, minlength=nb)
    area = np.bincount(cb, weights=sb.area, minlength=nb)
    xy = np.column_stack([np.bincount(cb, weights=sb.xy[:, i] * sb.area, minlength=nb) / area for i in (0, 1)])
    pa, pb = _region_pairs(cb, *sb.pairs)
    row = np.floor(-xy[:, 1] / 1200.0).astype(np.int64)
    serp = np.where(row % 2 == 0, xy[:, 0], -xy[:, 0])
    order = np.lexsort((np.arange(nb), serp, row))
    targets = rng.choice([2, 3, 4, 5, 6, 7], nb, p=[0.1, 0.22, 0.28, 0.2, 0.12, 0.08])
    lab = _grow_regions(nb, adjacency(nb, pa, pb), w, xy, order, targets, cap=7, max_zero=3, want_zero=1)
    lab = _merge_regions(lab, (pa, pb), w, min_w=2, cap=7)
    ncomm = lab.max() + 1
    cw = np.bincount(lab, weights=w, minlength=ncomm)
    carea = np.bincount(lab, weights=area, minlength=ncomm)
    cxy = np.column_stack([np.bincount(lab, weights=xy[:, i] * area, minlength=ncomm) / carea for i in (0, 1)])
    ca, cb2 = _region_pairs(lab, pa, pb)
    target = cw.sum() / n_streets
    rowh = math.sqrt(carea.sum() / n_streets)
    row = np.floor(-cxy[:, 1] / rowh).astype(np.int64)
    serp = np.where(row % 2 == 0, cxy[:, 0], -cxy[:, 0])
    order = np.lexsort((np.arange(ncomm), serp, row))
    slab = _grow_regions(ncomm, adjacency(ncomm, ca, cb2), cw, cxy, order, np.array([target]), cap=np.inf)
    slab = _merge_regions(slab, (ca, cb2), cw, min_w=0.45 * target, cap=1.6 * target, max_count=n_streets)
    return Jurisdictions(block_comm=lab, cell_comm=lab[cb], comm_street=slab)


def _region_pairs(label: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct neighbouring label pairs (low, high) from neighbouring member pairs (a, b)."""
    la, lb = label[a], label[b]
    m = la != lb
    pairs = np.unique(np.column_stack([np.minimum(la[m], lb[m]), np.maximum(la[m], lb[m])]), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _grow_regions(
    n: int,
    nbrs: list[list[int]],
    weight: np.ndarray,
    xy: np.ndarray,
    order: np.ndarray,
    targets: np.ndarray,
    cap: float,
    max_zero: int | None = None,
    want_zero: int = 0,
) -> np.ndarray:
    """Greedy contiguous regions over a graph: from each unassigned seed, add the nearest neighbours until
    the weight reaches the seed's target (never above cap), then up to `want_zero` weightless neighbours
    (campus blocks).  Returns labels 0..k-1."""
    label = np.full(n, -1, dtype=np.int64)
    k = 0

    def nearest_first(s: int, cand: set[int] | list[int]) -> list[int]:
        """Candidates by distance from seed s, then index."""
        return sorted(cand, key=lambda x: (float(np.hypot(*(xy[x] - xy[s]))), x))

    for s in order:
        if label[s] >= 0:
            continue
        target = targets[k % len(targets)]
        label[s] = k
        tot = weight[s]
        zeros = int(weight[s] == 0)
        frontier = {int(x) for x in nbrs[s] if label[x] < 0}
        while tot < target and frontier:
            added = False
            for x in nearest_first(s, frontier):
                frontier.discard(x)
                if label[x] >= 0:
                    continue
                if tot + weight[x] > cap or (max_zero is not None and weight[x] == 0 and zeros >= max_zero):
                    continue
                label[x] = k
                tot += weight[x]
                zeros += int(weight[x] == 0)
                frontier |= {int(y) for y in nbrs[x] if label[y] < 0}
                added = True
                break
            if not added:
                break
        members = np.flatnonzero(label == k) if want_zero and zeros < want_zero else np.zeros(0, dtype=np.int64)
        near = sorted({int(y) for x in members for y in nbrs[x] if label[y] < 0 and weight[y] == 0})
        for x in nearest_first(s, near)[: max(0, want_zero - zeros)]:
            label[x] = k
        k += 1
    return label


def _merge_regions(
    label: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    weight: np.ndarray,
    min_w: float,
    cap: float,
    max_count: int | None = None,
) -> np.ndarray:
    """Merge regions lighter than min_w (and, if max_count, the lightest while there are too many) into
    their lightest neighbour, preferring merges that stay within cap.  Returns compact labels."""
    label = label.copy()
    a, b = pairs
    while True:
        k = label.max() + 1
        tot = np.bincount(label, weights=weight, minlength=k)
        present = np.bincount(label, minlength=k) > 0
        small = np.flatnonzero(present & (tot < min_w))
        count = int(present.sum())
        if len(small):
            g = small[np.lexsort((small, tot[small]))][0]
        elif max_count is not None and count > max_count:
            alive = np.flatnonzero(present)
            g = alive[np.lexsort((alive, tot[alive]))][0]
        else:
            break
        la, lb = label[a], label[b]
        m = (la != lb) & ((la == g) | (lb == g))
        nb = np.unique(np.where(la[m] == g, lb[m], la[m]))
        if not len(nb):
            if len(small) and (max_count is None or count <= max_count):
                weight = weight.copy()
                weight[label == g] += min_w  # isolated: keep it as it is
                continue
            break
        fits = tot[nb] + tot[g] <= cap
        pool = nb[fits] if fits.any() else nb
        tgt = pool[np.lexsort((pool, tot[pool]))][0]
        label[label == g] = tgt
    _, compact = np.unique(label, return_inverse=True)
    return compact


def number_streets(rng: np.random.Generator, street_geom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Street codes (district code + 3 digits, north→south, west→east) and names (…街道)."""
    ns = len(street_geom)
    sxy = shapely.get_coordinates(shapely.point_on_surface(street_geom))
    s_rank = row_order(np.zeros(ns, np.int64), sxy[:, 0], sxy[:, 1], 2500.0)
    code = np.array([f"{DISTRICT_CODE}{r + 1:03d}" for r in s_rank], dtype=object)
    names = list(STREET_BASE)
    perm = rng.permutation(len(names))
    pool = [names[i] for i in perm] + [a + b for a in _DIRECTIONS for b in STREET_BASE]
    name = np.array([pool[r] + "街道" if r < len(pool) else f"第{r + 1}街道" for r in s_rank], dtype=object)
    return code, name


def number_communities(
    rng: np.random.Generator, comm_geom: np.ndarray, comm_street: np.ndarray, street_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Community codes (street code + 3 digits, north→south, west→east within the street) and names (…社区)."""
    nm = len(comm_geom)
    cxy = shapely.get_coordinates(shapely.point_on_surface(comm_geom))
    c_rank = row_order(comm_street, cxy[:, 0], cxy[:, 1], 800.0)
    code = np.char.add(street_code[comm_street].astype(str), np.char.zfill((c_rank + 1).astype(str), 3)).astype(object)
    pool = np.array([a + b for a in PLACE_A for b in PLACE_B], dtype=object)
    if nm > len(pool):
        pool = np.concatenate([pool, np.array([p + a for p in _DIRECTIONS for a in pool], dtype=object)])
    pick = rng.permutation(len(pool))[:nm]
    return code, (pool[pick] + "社区").astype(object)


def streets_frame(code: np.ndarray, name: np.ndarray, geom: np.ndarray) -> gpd.GeoDataFrame:
    """The streets layer, by code."""
    return layer_frame({"code": code, "name": name}, geom, np.argsort(code, kind="stable"))


def communities_frame(
    code: np.ndarray, name: np.ndarray, street_code: np.ndarray, geom: np.ndarray
) -> gpd.GeoDataFrame:
    """The communities layer, by code."""
    return layer_frame({"code": code, "name": name, "street_code": street_code}, geom, np.argsort(code, kind="stable"))
