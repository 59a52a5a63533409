"""Parcels: superblocks cut by binary space partition into units, units into grid-level pieces, pieces into
parcels (the micro pieces); which grid and micro-grid (微网格) each parcel makes; buildable cores and road margins;
the faces of one noding of them all.

Campus superblocks are parcels as they are, one grid per campus cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import shapely

from demo.geometry import bsp
from demo.programme import CAMPUS, LARGER, NORMAL, SAME, STRAD, Units
from demo.streets_and_communities import Jurisdictions
from demo.superblocks import Blocks, Superblocks

log = logging.getLogger(__name__)

_ROAD_MIN_CELL = 140e3  # superblocks larger than this get an internal road at their first cut


@dataclass
class Parcels:
    """One row per parcel (metres): where it lies and what it belongs to."""

    geom: np.ndarray
    cell: np.ndarray  # superblock
    unit: np.ndarray  # unit of the deck, -1 on campuses
    kind: np.ndarray  # unit type, CAMPUS on campuses
    piece: np.ndarray  # grid-level piece within its unit
    grid: np.ndarray
    micro: np.ndarray  # micro-grid
    dedicated: np.ndarray  # dedicated type (units and campus clusters), else -1
    theta: np.ndarray  # orientation of its superblock
    comm: np.ndarray  # community


@dataclass
class GridPlan:
    """What each grid and micro-grid is before it has a shape."""

    n_grids: int
    kind: np.ndarray  # unit type of the grid's parcels
    dedicated: np.ndarray  # dedicated type, -1 for comprehensive grids
    comm: np.ndarray  # community
    comprehensive: np.ndarray  # comprehensive grid (综合网格), else dedicated (专属网格)
    n_micro: int
    micro_grid: np.ndarray  # grid of each micro-grid


@dataclass
class Cores:
    """Per parcel: its buildable core; and the road margin around the cores as polygon parts."""

    core: np.ndarray
    core_area: np.ndarray
    margin_parts: np.ndarray
    margin_parcel: np.ndarray  # parcel of each margin part


def split_units(
    rng: np.random.Generator, units: Units, sb: Superblocks, blocks: Blocks, jur: Jurisdictions
) -> tuple[Parcels, GridPlan, np.ndarray]:
    """Cut residential superblocks into units, units into grid-level pieces, exact grids into 2-4 micro pieces.

    Returns the parcels, the grid plan and per superblock the line of its first cut where a road may follow it."""
    nc = len(sb.geoms)
    res = np.flatnonzero(~sb.campus)
    cnt = np.bincount(units.cell, minlength=nc)[res]
    u_geom, _, cuts = bsp(rng, sb.geoms[res], cnt, units.area, sb.theta[res], want_cut=True)
    cell_cut = np.full(nc, None, dtype=object)
    cell_cut[res] = cuts
    nu = len(units.kind)
    ut = units.kind
    u_theta = sb.theta[units.cell]
    # units → grid-level pieces
    w2 = rng.uniform(0.85, 1.15, int(units.pieces.sum()))
    p_unit = np.repeat(np.arange(nu), units.pieces)
    p_idx = np.arange(len(p_unit)) - np.repeat(np.cumsum(units.pieces) - units.pieces, units.pieces)
    normal = ut[p_unit] == NORMAL
    w2[normal] = rng.uniform(0.6, 1.4, int(normal.sum()))
    p_geom, p_side, _ = bsp(rng, u_geom, units.pieces, w2, u_theta, force=ut == STRAD)
    # exact grids → 2-4 micro pieces
    p_exact = np.isin(ut[p_unit], [SAME, LARGER])
    n_p = len(p_geom)
    k3 = np.where(p_exact, 2 + (rng.random(n_p) < 0.22) + (rng.random(n_p) < 0.06), 1).astype(np.int64)
    q_geom, _, _ = bsp(rng, p_geom, k3, rng.uniform(0.7, 1.3, int(k3.sum())), u_theta[p_unit])
    q_piece = np.repeat(np.arange(n_p), k3)
    q_sub = np.arange(len(q_piece)) - np.repeat(np.cumsum(k3) - k3, k3)
    # global grid ids: unit-level grids, then campus clusters
    g_in_unit = np.select([ut[p_unit] == LARGER, ut[p_unit] == STRAD], [p_idx, p_idx // 2], 0)
    n_g_unit = np.select([ut == LARGER, ut == STRAD], [units.pieces, 2], 1)
    g_off = np.cumsum(n_g_unit) - n_g_unit
    p_grid = g_off[p_unit] + g_in_unit
    n_unit_grids = int(n_g_unit.sum())
    camp_cells = np.flatnonzero(sb.campus)
    ncl = len(blocks.cluster_dtype)
    # parcels = leaves + campus superblocks
    qu = p_unit[q_piece]
    ncamp = len(camp_cells)
    par_cell = np.concatenate([units.cell[qu], camp_cells])
    par_kind = np.concatenate([ut[qu], np.full(ncamp, CAMPUS)])
    par_grid = np.concatenate([p_grid[q_piece], n_unit_grids + blocks.cluster[camp_cells]])
    par_dtype = np.concatenate([units.dedicated[qu], blocks.cluster_dtype[blocks.cluster[camp_cells]]])
    n_grids = n_unit_grids + ncl
    # micro-grids: a compound-sized grid's pieces; two halves of a grid holding compounds, or one per piece
    mode_each = rng.random(nu) < 0.28
    sub = np.zeros(len(q_geom) + ncamp, dtype=np.int64)
    sub[: len(q_geom)] = np.select(
        [
            np.isin(ut[qu], [SAME, LARGER]),
            (ut[qu] == NORMAL) & ~mode_each[qu],
            (ut[qu] == NORMAL) & mode_each[qu],
            ut[qu] == STRAD,
        ],
        [q_sub, p_side[q_piece], p_idx[q_piece], p_idx[q_piece]],
        0,
    )
    _, par_micro = np.unique(par_grid * 16 + sub, return_inverse=True)
    n_micro = int(par_micro.max() + 1)
    parcels = Parcels(
        geom=np.concatenate([q_geom, sb.geoms[camp_cells]]),
        cell=par_cell,
        unit=np.concatenate([qu, np.full(ncamp, -1)]),
        kind=par_kind,
        piece=np.concatenate([p_idx[q_piece], np.zeros(ncamp, np.int64)]),
        grid=par_grid,
        micro=par_micro,
        dedicated=par_dtype,
        theta=sb.theta[par_cell],
        comm=jur.cell_comm[par_cell],
    )
    grid_kind = np.zeros(n_grids, dtype=np.int64)
    grid_kind[par_grid] = par_kind
    grid_dtype = np.full(n_grids, -1, dtype=np.int64)
    grid_dtype[par_grid] = par_dtype
    grid_cell = np.zeros(n_grids, dtype=np.int64)
    grid_cell[par_grid] = par_cell
    micro_grid = np.zeros(n_micro, dtype=np.int64)
    micro_grid[par_micro] = par_grid
    plan = GridPlan(
        n_grids=n_grids, kind=grid_kind, dedicated=grid_dtype, comm=jur.cell_comm[grid_cell],
        comprehensive=grid_kind <= NORMAL, n_micro=n_micro, micro_grid=micro_grid,
    )
    return parcels, plan, cell_cut


def cut_cores(rng: np.random.Generator, sb: Superblocks, cell_cut: np.ndarray, parcels: Parcels) -> Cores:
    """Pull each superblock in by half a road (9-18 m, a 15-20 m road along a large one's first cut); the rest
    of each parcel is its road margin."""
    nc = len(sb.geoms)
    h = rng.uniform(9.0, 18.0, nc)
    inner = shapely.buffer(sb.geoms, -h, join_style="mitre", mitre_limit=5.0)
    road_w = rng.uniform(15.0, 20.0, nc)
    has = ~shapely.is_missing(cell_cut) & (sb.area > _ROAD_MIN_CELL)
    if has.any():
        strips = shapely.buffer(cell_cut[has], road_w[has] / 2, cap_style="flat")
        inner[has] = shapely.difference(inner[has], strips)
    pc = parcels.cell
    core = np.asarray(shapely.intersection(parcels.geom, inner[pc]))
    marg = shapely.difference(parcels.geom, inner[pc])
    parts, idx = shapely.get_parts(marg, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0.01)
    return Cores(core=core, core_area=shapely.area(core), margin_parts=parts[keep], margin_parcel=idx[keep])


@dataclass
class Faces:
    """The noded faces of all cores and margin parts: each belongs to one parcel, as its core or its margin."""

    geom: np.ndarray
    parcel: np.ndarray
    margin: np.ndarray


def node_faces(cores: Cores) -> Faces:
    """Node every core and margin part once (snap-rounded to 1 cm) and polygonise, so that all partitions made of
    these faces share edges exactly; each face goes to the piece it lies in (the nearest where rounding moved it)."""
    core_ok = ~shapely.is_empty(cores.core) & (cores.core_area > 0.01)
    ci = np.flatnonzero(core_ok)
    pieces = np.concatenate([cores.core[ci], cores.margin_parts])
    piece_par = np.concatenate([ci, cores.margin_parcel])
    piece_marg = np.r_[np.zeros(len(ci), bool), np.ones(len(cores.margin_parts), bool)]
    noded = shapely.union_all(shapely.boundary(pieces), grid_size=0.01)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    faces = faces[shapely.area(faces) > 0]
    rep = shapely.point_on_surface(faces)
    tree = shapely.STRtree(pieces)
    fi, pi = tree.query(rep, predicate="within")
    o = np.lexsort((pi, fi))
    fi, pi = fi[o], pi[o]
    which = np.full(len(faces), -1, dtype=np.int64)
    u, first = np.unique(fi, return_index=True)
    which[u] = pi[first]
    miss = np.flatnonzero(which < 0)
    if len(miss):
        mi, mp = tree.query_nearest(rep[miss])
        _, f2 = np.unique(mi, return_index=True)
        which[miss[mi[f2]]] = mp[f2]
    log.debug("faces %d", len(faces))
    return Faces(geom=faces, parcel=piece_par[which], margin=piece_marg[which])
