"""Confident learning: which given labels are likely wrong, from out-of-fold probabilities.

Given labels ``y`` (class indices ``0..C-1``) and out-of-fold predicted
probabilities ``P`` (rows sum to 1), the steps are those of cleanlab 2.9's
``filter.find_label_issues`` with its defaults (``filter_by=
"prune_by_noise_rate"``, ``frac_noise=1``, ``min_examples_per_class=1``),
reproduced here so that thresher flags the same rows without depending on
cleanlab:

1. per-class thresholds ``t_j`` = mean of ``P[:, j]`` over rows labelled
   ``j`` (at least 2e-6; a class nobody carries gets 2, out of reach);
2. the confident joint ``C[i][j]``: rows labelled ``i`` whose ``P[:, j] >=
   t_j - 1e-6``, counted at the class ``j`` above threshold (the largest
   ``P`` when several are), with at least 1 on the diagonal;
3. calibrated so that row ``i`` sums to the count of label ``i`` and the
   whole to ``n``, then rounded preserving the row totals;
4. per given label ``i`` and other class ``j``, the ``C[i][j]`` rows
   labelled ``i`` with the largest margin ``P[:, j] - P[:, i]`` are flagged
   (after leaving at least one row per class on the diagonal);
5. a flagged row whose given label is (within 1e-6) the most probable
   class is cleared.

The flagged rows of a cell (``i``, ``j``) are those whose margin reaches the
smallest flagged margin of that cell; :func:`flag_by_cutoffs` applies these
cutoffs to rows outside the fitted set.

References
----------
Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Fuzzy equality of probabilities (cleanlab's FLOATING_POINT_COMPARISON).
TOLERANCE = 1e-6
#: Lower bound of a class threshold (cleanlab's CONFIDENT_THRESHOLDS_LOWER_BOUND).
THRESHOLD_FLOOR = 2 * TOLERANCE
#: Threshold of a class no row carries: no probability reaches it.
ABSENT_THRESHOLD = 2.0


@dataclass(frozen=True)
class LabelIssues:
    """What confident learning found on a fitted set.

    ``flagged`` marks each row; ``thresholds`` (C,), ``confident_joint``
    (C, C, calibrated, rows are given labels) and ``prune_counts`` (C, C:
    how many rows labelled ``i`` are flagged for class ``j``) explain it;
    ``cutoffs[i, j]`` is the smallest margin ``P_j - P_i`` flagged in that
    cell (NaN where none is).
    """

    flagged: NDArray[np.bool_]
    thresholds: NDArray[np.float64]
    confident_joint: NDArray[np.int64]
    prune_counts: NDArray[np.int64]
    cutoffs: NDArray[np.float64]


def class_thresholds(labels: NDArray[np.int64], probs: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean predicted probability of each class over the rows labelled with it."""
    n_classes = probs.shape[1]
    thresholds = np.full(n_classes, ABSENT_THRESHOLD)
    for j in range(n_classes):
        rows = labels == j
        if rows.any():
            thresholds[j] = probs[rows, j].mean()
    return np.maximum(thresholds, THRESHOLD_FLOOR)


def confident_classes(
    probs: NDArray[np.float64], thresholds: NDArray[np.float64]
) -> NDArray[np.int64]:
    """The class each row confidently belongs to (-1: no class reaches its threshold)."""
    above = probs >= thresholds - TOLERANCE
    count = above.sum(axis=1)
    guess = np.where(count > 1, probs.argmax(axis=1), above.argmax(axis=1))
    return np.where(count > 0, guess, -1).astype(np.int64)


def round_preserving_sum(values: NDArray[np.float64]) -> NDArray[np.int64]:
    """Round to integers keeping the (rounded) total: the largest remainders take the slack."""
    floats = np.asarray(values, dtype=np.float64)
    ints = floats.round()
    total = np.sum(floats).round()
    current = np.sum(ints).round()
    while abs(current - total) > TOLERANCE:
        difference = np.round(total - current)
        step = -1 if difference < 0 else 1
        changes = min(int(abs(difference)), len(floats))
        for i in np.argsort(floats - ints)[::-step][:changes]:
            ints[i] += step
        current = np.sum(ints).round()
    return ints.astype(np.int64)


def round_preserving_row_totals(matrix: NDArray[np.float64]) -> NDArray[np.int64]:
    """:func:`round_preserving_sum` on every row."""
    return np.stack([round_preserving_sum(row) for row in matrix]).astype(np.int64)


def confident_joint(
    labels: NDArray[np.int64], probs: NDArray[np.float64], thresholds: NDArray[np.float64]
) -> NDArray[np.int64]:
    """Calibrated confident joint: rows are given labels, columns confident classes."""
    n_classes = probs.shape[1]
    guess = confident_classes(probs, thresholds)
    confident = guess >= 0
    joint = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(joint, (labels[confident], guess[confident]), 1)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    label_counts = np.bincount(labels, minlength=n_classes)
    calibrated = (joint.T / np.clip(joint.sum(axis=1), 1e-100, None) * label_counts).T
    calibrated = calibrated / np.clip(calibrated.sum(), 1e-100, None) * label_counts.sum()
    return round_preserving_row_totals(calibrated)


def prune_counts(joint: NDArray[np.int64], keep_per_class: int = 1) -> NDArray[np.int64]:
    """How many rows to flag per (given label, class), leaving ``keep_per_class`` per class.

    The same numbers as cleanlab's ``_keep_at_least_n_per_class`` (whose
    matrix is the transpose of this one).
    """
    counts = joint.T.astype(np.float64)  # cleanlab's layout: columns are given labels
    diagonal = counts.diagonal().copy()
    raised = np.maximum(diagonal, keep_per_class)
    nonzero = np.maximum(np.count_nonzero(counts, axis=0) - 1.0, 1.0)
    adjusted = counts - (raised - diagonal) / nonzero
    adjusted[adjusted < 0] = 0
    np.fill_diagonal(adjusted, raised)
    adjusted = adjusted.astype(np.int64).astype(np.float64)  # cleanlab truncates, then rounds
    return round_preserving_row_totals(adjusted).T


def find_label_issues(labels: NDArray[np.int64], probs: NDArray[np.float64]) -> LabelIssues:
    """Flag likely label errors (see module docstring); every label must be in ``0..C-1``."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    thresholds = class_thresholds(labels, probs)
    joint = confident_joint(labels, probs, thresholds)
    prune = prune_counts(joint)
    flagged = np.zeros(labels.size, dtype=bool)
    cutoffs = np.full((n_classes, n_classes), np.nan)
    for i in range(n_classes):
        rows = np.flatnonzero(labels == i)
        if rows.size <= 1:
            continue
        for j in range(n_classes):
            count = int(prune[i, j])
            if i == j or count <= 0:
                continue
            margin = probs[rows, j] - probs[rows, i]
            chosen = np.argsort(-margin)[:count]  # cleanlab's order, ties included
            flagged[rows[chosen]] = True
            cutoffs[i, j] = margin[chosen].min()
    flagged &= ~agrees_with_label(labels, probs)
    return LabelIssues(flagged, thresholds, joint, prune, cutoffs)


def agrees_with_label(labels: NDArray[np.int64], probs: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Rows whose given label is the most probable class, within :data:`TOLERANCE`."""
    lifted = np.array(probs, dtype=np.float64, copy=True)
    lifted[np.arange(labels.size), labels] += TOLERANCE
    return np.asarray(lifted.argmax(axis=1) == labels)


def flag_by_cutoffs(
    labels: NDArray[np.int64], probs: NDArray[np.float64], cutoffs: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Flag rows outside the fitted set by the fitted cells' margin cutoffs.

    A row labelled ``i`` is flagged when, for some class ``j``, its margin
    ``P_j - P_i`` reaches ``cutoffs[i, j]`` (a fitted row is flagged by the
    same test, ties aside), and its label is not the most probable class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(labels.size)
    margins = probs - probs[rows, labels][:, None]
    limits = cutoffs[labels]  # (n, C)
    with np.errstate(invalid="ignore"):
        reached = np.where(np.isnan(limits), False, margins >= limits)
    return np.asarray(reached.any(axis=1) & ~agrees_with_label(labels, probs))
