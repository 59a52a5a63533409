"""Hot and cold spots (冷热点) of incident counts on the hexagon cells: Getis-Ord Gi*.

Gi* (esda.G_Local, star=True) over binary hexagon contiguity (the six neighbours, `hexagons.hex_neighbours`) with
conditional-permutation pseudo p-values: esda's `crand` scheme, vectorised in numpy (`conditional_permutation_p`)
because esda's own permutations need numba to be fast. Cells are classed −3 … 3 at 99/95/90 % confidence.
"""

from __future__ import annotations

import numpy as np

from geo.incidents.hexagons import hex_neighbours

#: Gi* significance classes: (confidence, p-value threshold), strictest first.
CONFIDENCE = ((99, 0.01), (95, 0.05), (90, 0.10))
HOTSPOT_LABELS = {3: "热点 (99%)", 2: "热点 (95%)", 1: "热点 (90%)", 0: "不显著",
                  -1: "冷点 (90%)", -2: "冷点 (95%)", -3: "冷点 (99%)"}


def hex_weights(q: np.ndarray, r: np.ndarray, neighbours: dict[int, list[int]] | None = None):
    """Binary contiguity weights between hexagons (six neighbours each), as a libpysal W."""
    from libpysal.weights import W  # imported on first use: libpysal takes a second to import

    return W(hex_neighbours(q, r) if neighbours is None else neighbours, silence_warnings=True)


def conditional_permutation_p(y: np.ndarray, neighbours: dict[int, list[int]], permutations: int,
                              seed: int | None = None, chunk: int = 500) -> np.ndarray:
    """Folded one-sided pseudo p-values of Gi* (binary weights, self included) by conditional randomisation.

    The scheme of esda's `crand`, vectorised with numpy instead of numba: cell i keeps its own value and its k_i
    neighbour values are replaced by k_i values drawn without replacement from the other n − 1 cells; one set of
    draws is shared by all cells (as in esda). p = (min(#sim ≥ obs, #sim < obs) + 1) / (permutations + 1).
    """
    n = len(y)
    y = np.asarray(y, dtype=np.float64)
    k = np.array([len(neighbours[i]) for i in range(n)], dtype=np.int64)
    kmax = int(k.max()) if n else 0
    if n < 2 or kmax == 0 or permutations <= 0:
        return np.full(n, np.nan)
    kmax = min(kmax, n - 1)
    rng = np.random.default_rng(seed)
    draws = np.empty((permutations, kmax), dtype=np.int64)
    for p in range(permutations):  # kmax distinct positions among the n − 1 others, per permutation
        draws[p] = rng.choice(n - 1, kmax, replace=False)
    obs = y + np.array([y[neighbours[i]].sum() for i in range(n)])
    out = np.empty(n)
    cols = np.arange(kmax)
    for lo in range(0, n, chunk):
        ids = np.arange(lo, min(n, lo + chunk))
        pos = draws[None, :, :] + (draws[None, :, :] >= ids[:, None, None])  # skip cell i itself
        mask = cols[None, None, :] < k[ids, None, None]
        sim = y[ids, None] + np.where(mask, y[pos], 0.0).sum(axis=2)
        larger = (sim >= obs[ids, None]).sum(axis=1)
        folded = np.minimum(larger, permutations - larger)
        out[ids] = (folded + 1.0) / (permutations + 1.0)
    return out


def getis_ord(counts: np.ndarray, q: np.ndarray, r: np.ndarray, permutations: int = 999,
              seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gi* z-scores (esda.G_Local), two-sided permutation pseudo p-values and classes (−3 … 3, HOTSPOT_LABELS)."""
    import esda

    n = len(counts)
    z = np.full(n, np.nan)
    p = np.full(n, np.nan)
    cls = np.zeros(n, dtype=np.int64)
    if n < 3 or counts.sum() == 0 or np.all(counts == counts[0]):
        return z, p, cls  # no variation: nothing can be hot or cold
    neighbours = hex_neighbours(q, r)
    w = hex_weights(q, r, neighbours)
    with np.errstate(invalid="ignore", divide="ignore"):
        # the statistic and its analytical z from esda; esda's own permutations need numba to be fast, so the
        # same conditional randomisation is done below in numpy
        g = esda.G_Local(counts.astype(np.float64), w, transform="B", permutations=0, star=True)
    z = np.asarray(g.Zs, dtype=np.float64)
    # A cell may be hot OR cold: the two-sided value is twice the folded one-sided one (at most 1).
    if permutations:
        p = np.minimum(1.0, 2.0 * conditional_permutation_p(counts, neighbours, permutations, seed))
    else:
        p = np.minimum(1.0, 2.0 * np.asarray(g.p_norm, dtype=np.float64))
    for level, (_, alpha) in zip((3, 2, 1), CONFIDENCE, strict=True):
        unset = cls == 0
        cls = np.where(unset & (p <= alpha) & (z > 0), level, cls)
        cls = np.where(unset & (p <= alpha) & (z < 0), -level, cls)
    return z, p, cls
