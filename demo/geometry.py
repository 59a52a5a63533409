"""Vectorised geometry of the generator (shapely 2 over numpy arrays, metres): frame extents, half-planes, binary
space partition, coverage dissolve, multipolygons, building slots on a rotated lattice."""

from __future__ import annotations

import numpy as np
import shapely

from demo.arrays import group_minmax


def frame_extents(geoms: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Extents of each geometry along its frame axes u=(cos θ, sin θ) and v=(-sin θ, cos θ)."""
    xy, idx = shapely.get_coordinates(geoms, return_index=True)
    c, s = np.cos(theta)[idx], np.sin(theta)[idx]
    u = xy[:, 0] * c + xy[:, 1] * s
    v = -xy[:, 0] * s + xy[:, 1] * c
    umin, umax = group_minmax(u, idx, len(geoms))
    vmin, vmax = group_minmax(v, idx, len(geoms))
    return umin, umax, vmin, vmax


def halfplanes(
    cx: np.ndarray, cy: np.ndarray, ex: np.ndarray, ey: np.ndarray, big: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two half-planes either side of the line through (cx, cy) normal to (ex, ey), and that line."""
    dx, dy = -ey, ex
    p1 = np.stack([cx - big * dx, cy - big * dy], 1)
    p2 = np.stack([cx + big * dx, cy + big * dy], 1)
    e = np.stack([ex, ey], 1) * big[:, None]
    a = np.stack([p1, p2, p2 - e, p1 - e, p1], 1)
    b = np.stack([p1, p2, p2 + e, p1 + e, p1], 1)
    line = shapely.linestrings(np.stack([p1, p2], 1))
    return np.asarray(shapely.polygons(a)), np.asarray(shapely.polygons(b)), np.asarray(line)


def as_multi(geoms: np.ndarray) -> np.ndarray:
    """Polygons/multipolygons → MultiPolygons (polygonal parts only), one per input."""
    geoms = np.asarray(geoms, dtype=object)
    parts, idx = shapely.get_parts(geoms, return_index=True)
    keep = shapely.get_type_id(parts) == 3
    parts, idx = parts[keep], idx[keep]
    out = np.full(len(geoms), None, dtype=object)
    if len(parts):
        uniq = np.unique(idx)
        remap = np.searchsorted(uniq, idx)
        out[uniq] = shapely.multipolygons(parts, indices=remap)
    empty = shapely.is_missing(out)
    out[empty] = shapely.from_wkt("MULTIPOLYGON EMPTY")
    return out


def dissolve(geoms: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """Coverage union of polygons grouped by integer key 0..n-1 (the inputs must form a clean coverage).

    A group of one keeps its geometry as it is; the others are unioned in one call, a row per group padded with
    None (which the union skips)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    g = np.asarray(geoms, dtype=object)[order]
    out = np.full(n, None, dtype=object)
    if not len(k):
        return out
    start = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1]
    size = np.diff(np.r_[start, len(k)])
    one = size == 1
    out[k[start[one]]] = g[start[one]]
    many = np.flatnonzero(~one)
    if len(many):
        grp = np.repeat(np.arange(len(start)), size)
        row = np.full(len(start), -1)
        row[many] = np.arange(len(many))
        sel = row[grp] >= 0
        table = np.full((len(many), int(size[many].max())), None, dtype=object)
        table[row[grp[sel]], (np.arange(len(k)) - start[grp])[sel]] = g[sel]
        out[k[start[many]]] = shapely.coverage_union_all(table, axis=1)
    return out


def bsp(
    rng: np.random.Generator,
    geoms: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray,
    theta: np.ndarray,
    force: np.ndarray | None = None,
    want_cut: bool = False,
    jitter_deg: float = 6.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary space partition: split convex polygon i into counts[i] pieces with areas ∝ its slice of `weights`.

    Each cut goes across the longer frame axis (or, where `force`, along the first cut's axis).  Returns the
    leaves (weight order), their side of the first cut, and the first cut's line where it is near the middle
    (only with `want_cut`)."""
    geoms = np.asarray(geoms, dtype=object)
    counts = np.asarray(counts, dtype=np.int64)
    n = len(geoms)
    cw = np.r_[0.0, np.cumsum(weights)]
    leaves = np.empty(int(counts.sum()), dtype=object)
    side0 = np.zeros(int(counts.sum()), dtype=np.int8)
    cuts = np.full(n, None, dtype=object)
    axis0 = np.zeros(n, dtype=bool)
    g, item = geoms.copy(), np.arange(n)
    st, ct = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64), counts.copy()
    sd = np.zeros(n, dtype=np.int8)
    depth = 0
    while True:
        fin = ct <= 1
        leaves[st[fin]] = g[fin]
        side0[st[fin]] = sd[fin]
        g, item, st, ct, sd = g[~fin], item[~fin], st[~fin], ct[~fin], sd[~fin]
        if not len(g):
            break
        m = len(g)
        k1 = ct // 2 + ((ct % 2 == 1) & (rng.random(m) < 0.5))
        f = (cw[st + k1] - cw[st]) / (cw[st + ct] - cw[st])
        f = np.clip(f + rng.normal(0, 0.03, m), 0.15, 0.85)
        th = theta[item]
        umin, umax, vmin, vmax = frame_extents(g, th)
        across_u = (umax - umin) >= (vmax - vmin)
        if force is not None and depth > 0:
            across_u = np.where(force[item], axis0[item], across_u)
        if depth == 0:
            axis0[item] = across_u
        lo = np.where(across_u, umin, vmin)
        hi = np.where(across_u, umax, vmax)
        other = np.where(across_u, (vmin + vmax) / 2, (umin + umax) / 2)
        pos = lo + f * (hi - lo)
        cu = np.where(across_u, pos, other)
        cv = np.where(across_u, other, pos)
        c, s = np.cos(th), np.sin(th)
        cx, cy = cu * c - cv * s, cu * s + cv * c
        jit = np.deg2rad(rng.uniform(-jitter_deg, jitter_deg, m))
        if force is not None:
            jit = np.where(force[item], jit * 0.3, jit)
        ang = th + np.where(across_u, 0.0, np.pi / 2) + jit
        ex, ey = np.cos(ang), np.sin(ang)
        big = 2 * np.hypot(umax - umin, vmax - vmin) + 100.0
        area = shapely.area(g)
        for _ in range(2):  # Newton steps on the cut position: area share → f
            a_side, _, line = halfplanes(cx, cy, ex, ey, big)
            ra = shapely.area(shapely.intersection(g, a_side)) / area
            chord = np.maximum(shapely.length(shapely.intersection(g, line)), 1.0)
            shift = np.clip((f - ra) * area / chord, -0.2 * (hi - lo), 0.2 * (hi - lo))
            cx, cy = cx + shift * ex, cy + shift * ey
        a_side, b_side, line = halfplanes(cx, cy, ex, ey, big)
        ga, gb = shapely.intersection(g, a_side), shapely.intersection(g, b_side)
        if depth == 0:
            if want_cut:
                # only a cut near the middle becomes a road: a road beside a thin strip would eat it
                near = np.abs(f - 0.5) <= 0.22
                cuts[item[near]] = line[near]
            sda, sdb = np.zeros(m, np.int8), np.ones(m, np.int8)
        else:
            sda, sdb = sd, sd
        g = np.concatenate([ga, gb])
        item = np.concatenate([item, item])
        st = np.concatenate([st, st + k1])
        ct = np.concatenate([k1, ct - k1])
        sd = np.concatenate([sda, sdb])
        depth += 1
    return leaves, side0, cuts


def slots(
    region: np.ndarray,
    theta: np.ndarray,
    bw: np.ndarray,
    bd: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    phase: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate building rectangles on a rotated lattice inside each region: (region index, rectangle).

    The lattice is centred on the region's frame box, shifted by `phase` (fractions of a pitch)."""
    n = len(region)
    xy, idx = shapely.get_coordinates(region, return_index=True)
    c, s = np.cos(theta), np.sin(theta)
    u = xy[:, 0] * c[idx] + xy[:, 1] * s[idx]
    v = -xy[:, 0] * s[idx] + xy[:, 1] * c[idx]
    umin, umax = group_minmax(u, idx, n)
    vmin, vmax = group_minmax(v, idx, n)
    width = np.nan_to_num(umax - umin)
    height = np.nan_to_num(vmax - vmin)
    nx = np.clip(np.floor((width + gx) / (bw + gx)), 0, 60).astype(np.int64)
    ny = np.clip(np.floor((height + gy) / (bd + gy)), 0, 60).astype(np.int64)
    # a shifted lattice starts half a pitch earlier and has one more column / row
    u0 = np.nan_to_num(umin) + (width - (nx * (bw + gx) - gx)) / 2 - phase[0] * (bw + gx)
    v0 = np.nan_to_num(vmin) + (height - (ny * (bd + gy) - gy)) / 2 - phase[1] * (bd + gy)
    nx = nx + (phase[0] > 0)
    ny = ny + (phase[1] > 0)
    cnt = nx * ny
    lot = np.repeat(np.arange(n), cnt)
    if not len(lot):
        return lot, np.zeros(0, dtype=object)
    j = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    col, row = j % nx[lot], j // nx[lot]
    uc = u0[lot] + col * (bw + gx)[lot] + bw[lot] / 2
    vc = v0[lot] + row * (bd + gy)[lot] + bd[lot] / 2
    hw, hd = bw[lot] / 2, bd[lot] / 2
    cu = np.stack([uc - hw, uc + hw, uc + hw, uc - hw, uc - hw], 1)
    cv = np.stack([vc - hd, vc - hd, vc + hd, vc + hd, vc - hd], 1)
    cl, sl = c[lot][:, None], s[lot][:, None]
    rects = np.asarray(shapely.polygons(np.stack([cu * cl - cv * sl, cu * sl + cv * cl], -1)))
    shapely.prepare(region)
    inside = shapely.contains_properly(region[lot], rects)
    return lot[inside], rects[inside]
