"""Grouped numpy helpers of the generator: per-group extremes, ranks within groups, row-by-row numbering, picks."""

from __future__ import annotations

import numpy as np
import pandas as pd


def group_minmax(vals: np.ndarray, idx: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group min and max of `vals` grouped by sorted `idx` (NaN for empty groups)."""
    counts = np.bincount(idx, minlength=n)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    ok = counts > 0
    mn = np.full(n, np.nan)
    mx = np.full(n, np.nan)
    if ok.any():
        mn[ok] = np.minimum.reduceat(vals, starts[ok])
        mx[ok] = np.maximum.reduceat(vals, starts[ok])
    return mn, mx


def rank_within(groups: np.ndarray, key: np.ndarray) -> np.ndarray:
    """0-based rank of each row within its group, ordered by `key` (stable)."""
    return rank_in_order(groups, np.lexsort((key, groups)))


def row_order(groups: np.ndarray, x: np.ndarray, y: np.ndarray, row_h: float) -> np.ndarray:
    """Rank within each group: rows of height row_h from the group's north edge, then west→east."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    top = pd.Series(y).groupby(groups).transform("max").to_numpy()
    row = np.floor((top - y) / row_h).astype(np.int64)
    return rank_in_order(groups, np.lexsort((np.arange(n), x, row, groups)))


def rank_in_order(groups: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Position of each row within its group when the rows are visited in `order` (grouped by `groups`)."""
    n = len(order)
    g = groups[order]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    run = np.repeat(start, np.diff(np.r_[start, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - run
    return rank


def pick(lot: np.ndarray, want: np.ndarray, key: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
    """Indices of candidates to keep: per lot, ranks skip..skip+want-1 in random-key order."""
    if not len(lot):
        return np.zeros(0, dtype=np.int64)
    rank = rank_within(lot, key)
    lo = np.zeros(len(want), dtype=np.int64) if skip is None else skip
    return np.flatnonzero((rank >= lo[lot]) & (rank < lo[lot] + want[lot]))

