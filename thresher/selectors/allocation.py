"""Split an integer budget across groups (classes, strata, clusters) exactly.

Every stratified selector needs the same step: turn real-valued shares into
integer counts that sum to the budget, never exceed a group's size, and do
not depend on anything but the inputs (no randomness, ties broken by group
order). :func:`allocate` does it by capped proportional allocation with the
largest-remainder (Hamilton) rounding.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

LabelAllocation = Literal["proportional", "equal"]
LABEL_ALLOCATIONS: tuple[str, ...] = ("proportional", "equal")


def allocate(
    total: int, weights: NDArray[np.floating[Any]], capacity: NDArray[np.integer[Any]]
) -> NDArray[np.int64]:
    """Integer counts proportional to ``weights``, capped by ``capacity``, summing to ``total``.

    Groups whose proportional share reaches their capacity get exactly their
    capacity and the rest is re-shared among the others (water filling);
    the remaining fractional shares are rounded by largest remainder, ties
    going to the earlier group. Groups with zero weight get a share only
    when every group with a positive weight is full.

    Parameters
    ----------
    total : int
        Budget to split; at most ``capacity.sum()``.
    weights : ndarray of float, shape (g,)
        Non-negative share of each group.
    capacity : ndarray of int, shape (g,)
        Most rows each group can give.

    Returns
    -------
    ndarray of int64, shape (g,)
        ``0 <= counts <= capacity`` and ``counts.sum() == total``.
    """
    w = np.asarray(weights, dtype=np.float64)
    cap = np.asarray(capacity, dtype=np.int64)
    if w.shape != cap.shape or w.ndim != 1:
        raise ValueError("weights and capacity must be 1-d arrays of the same length")
    if np.any(cap < 0) or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError("capacities and weights must be finite and non-negative")
    if total < 0 or total > int(cap.sum()):
        raise ValueError(f"cannot allocate {total} rows to groups holding {int(cap.sum())}")
    counts = np.zeros(w.size, dtype=np.int64)
    open_ = cap > 0
    remaining = int(total)
    while remaining > 0:
        share_w = np.where(open_, w, 0.0)
        if share_w.sum() <= 0.0:  # only zero-weight groups have room: share by capacity
            share_w = np.where(open_, (cap - counts).astype(np.float64), 0.0)
        quota = remaining * share_w / share_w.sum()
        room = cap - counts
        full = open_ & (quota >= room)
        if full.any():
            remaining -= int(room[full].sum())
            counts[full] = cap[full]
            open_ &= ~full
            continue
        base = np.floor(quota).astype(np.int64)
        counts += base
        left = remaining - int(base.sum())
        if left > 0:
            fraction = np.where(open_, quota - base, -1.0)
            # largest remainder first; stable sort keeps earlier groups first on ties
            order = np.argsort(-fraction, kind="stable")
            counts[order[:left]] += 1
        remaining = 0
    return counts


def class_budgets(
    sizes: NDArray[np.integer[Any]], budget: int, mode: LabelAllocation
) -> NDArray[np.int64]:
    """Per-class budgets for class-balanced selection, from the classes' sizes.

    ``proportional`` keeps the class frequencies of the input (stratified
    sampling); ``equal`` gives every class the same count, classes too small
    for their share giving their rest to the others.
    """
    if mode not in LABEL_ALLOCATIONS:
        raise ValueError(f"label_allocation must be 'proportional' or 'equal', got {mode!r}")
    sizes = np.asarray(sizes, dtype=np.int64)
    weights = sizes.astype(np.float64) if mode == "proportional" else np.ones(sizes.size)
    return allocate(budget, weights, sizes)


def class_sum_budgets(
    sums: NDArray[np.integer[Any]], total: int, mode: LabelAllocation
) -> NDArray[np.int64]:
    """Per-class shares of a sum budget (tokens), from the classes' sums.

    The sum counterpart of :func:`class_budgets`: ``proportional`` splits
    ``total`` in proportion to each class's sum (the classes keep their share
    of the tokens), ``equal`` gives every class the same share, classes
    whose sum is too small giving their rest to the others. A total above
    the classes' sum is capped at it.
    """
    if mode not in LABEL_ALLOCATIONS:
        raise ValueError(f"label_allocation must be 'proportional' or 'equal', got {mode!r}")
    sums = np.asarray(sums, dtype=np.int64)
    weights = sums.astype(np.float64) if mode == "proportional" else np.ones(sums.size)
    return allocate(min(int(total), int(sums.sum())), weights, sums)
