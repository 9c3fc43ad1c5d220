"""Exact ranks where the data is: the ``k`` smallest keys of every group, from histograms.

Every budgeted selector on scalar scores reduces to one question: in each
group (all rows; a class; a CCS stratum of a class), which ``k`` rows have
the smallest key? A key is 128 bits: a primary part (a score made sortable
by :func:`float_key`, descending by :func:`descending`, or a seeded hash
priority) and a secondary part that makes it unique (the row's input-order
key), so "the ``k`` smallest" is one well-defined set, whatever engine or
partitioning computes it.

:func:`k_smallest` finds it by radix selection over a :class:`~thresher.frame.Frame`:
each round, every row whose key still matches its group's known prefix
counts into a histogram of the next digit (an aggregate whose size is
groups x bins, never rows); the driver finds the digit where the group's
``k``-th key lies; a group is done when the rows it still needs are exactly
the rows of one bucket. Random priorities finish in two or three rounds,
scores with many ties in a few more (the secondary key breaks them). The
result (:class:`Cuts`) is a per-group prefix: a row is kept when its key's
prefix is at most the cut, a rule executors apply row by row.

A sum budget (:class:`~thresher.selectors.base.SumBudget`: tokens, bytes)
asks a different question of each group: how many rows, taken in key
order, fit in the group's total before the first row that would exceed it?
:func:`fitting_counts` answers it by the same descent with histograms of
(row count, size sum) per digit: the driver finds the digit whose bucket
the running sum crosses, and a group is done when that bucket holds one
row (the first that does not fit). The cut is then "every key whose
prefix is below that row's", the same :class:`Cuts` rule (:func:`sum_cuts`).
The driver sees sums per bucket, never a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.frame import Frame
from thresher.selectors.allocation import LabelAllocation, class_budgets, class_sum_budgets
from thresher.selectors.base import Budget, Marks, SumBudget, resolve_budget
from thresher.selectors.labels import LabelClasses

SIGN = np.uint64(1 << 63)
#: Most (group, digit) counters one round may use.
MAX_COUNTERS = 1 << 20
#: A key function: table -> (group of each row, -1 for none; primary; secondary).
RankKey = Callable[[pa.Table], tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]]


def float_key(values: NDArray[Any]) -> NDArray[np.uint64]:
    """Map finite float64 values to uint64 so that unsigned order is numeric order (-0.0 == 0.0)."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.uint64)
    return np.where(bits & SIGN, ~bits, bits | SIGN)


def descending(keys: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The reverse order (the largest value first)."""
    return ~np.asarray(keys, dtype=np.uint64)


def order_bits(order: NDArray[np.integer[Any]]) -> NDArray[np.uint64]:
    """Non-negative int64 input-order keys as uint64 secondary keys."""
    return np.asarray(order, dtype=np.int64).astype(np.uint64)


@dataclass(frozen=True)
class Cuts:
    """Which rows of each group :func:`k_smallest` keeps (see module docstring).

    Attributes
    ----------
    mode : ndarray of int8, shape (g,)
        0: none of the group; 1: all of it; 2: the rows at or below the cut.
    bits : ndarray of int64, shape (g,)
        Leading key bits the cut compares (1..128).
    high, low : ndarray of uint64, shape (g,)
        The cut's primary bits (its top ``min(bits, 64)`` bits as a number),
        and, when ``bits > 64``, the top ``bits - 64`` bits of the secondary.
    """

    mode: NDArray[np.int8]
    bits: NDArray[np.int64]
    high: NDArray[np.uint64]
    low: NDArray[np.uint64]

    def keep(
        self, group: NDArray[np.int64], primary: NDArray[np.uint64], secondary: NDArray[np.uint64]
    ) -> NDArray[np.bool_]:
        """True for the rows the cuts keep (a row of group -1 is never kept)."""
        group = np.asarray(group, dtype=np.int64)
        keep = np.zeros(group.size, dtype=bool)
        member = group >= 0
        if not member.any():
            return keep
        g = group[member]
        mode = self.mode[g]
        hi, lo = primary[member], secondary[member]
        bits = self.bits[g]
        chosen = mode == 1
        cut = mode == 2
        short = cut & (bits <= 64)
        if short.any():
            shift = (64 - bits[short]).astype(np.uint64)
            chosen[short] = (hi[short] >> shift) <= self.high[g[short]]
        long = cut & (bits > 64)
        if long.any():
            shift = (128 - bits[long]).astype(np.uint64)
            top = self.high[g[long]]
            chosen[long] = (hi[long] < top) | (
                (hi[long] == top) & ((lo[long] >> shift) <= self.low[g[long]])
            )
        keep[member] = chosen
        return keep


class _Histogram:
    """One round's partial: counts of (group, next digit) among rows still matching their prefix."""

    def __init__(
        self,
        key: RankKey,
        active: NDArray[np.int64],
        n_groups: int,
        prefix_bits: int,
        width: int,
        high: NDArray[np.uint64],
        low: NDArray[np.uint64],
    ) -> None:
        self.key = key
        self.slot = np.full(n_groups, -1, dtype=np.int64)
        self.slot[active] = np.arange(active.size)
        self.prefix_bits = prefix_bits
        self.width = width
        self.high = high
        self.low = low

    def __call__(self, table: pa.Table) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        group, hi, lo = self.key(table)
        group = np.asarray(group, dtype=np.int64)
        member = group >= 0
        slot = np.full(group.size, -1, dtype=np.int64)
        slot[member] = self.slot[group[member]]
        rows = np.flatnonzero(slot >= 0)
        slot, hi, lo = slot[rows], hi[rows], lo[rows]
        p, w = self.prefix_bits, self.width
        if p > 0:
            if p <= 64:
                match = (hi >> np.uint64(64 - p)) == self.high[slot]
            else:
                match = (hi == self.high[slot]) & ((lo >> np.uint64(128 - p)) == self.low[slot])
            slot, hi, lo = slot[match], hi[match], lo[match]
        mask = np.uint64((1 << w) - 1)
        if p + w <= 64:
            digit = (hi >> np.uint64(64 - p - w)) & mask
        else:
            digit = (lo >> np.uint64(128 - p - w)) & mask
        cell = slot * (1 << w) + digit.astype(np.int64)
        cells, counts = np.unique(cell, return_counts=True)
        return cells, counts.astype(np.int64)


def _merge(
    parts: list[tuple[NDArray[np.int64], NDArray[np.int64]]],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cells = np.concatenate([c for c, _ in parts])
    counts = np.concatenate([n for _, n in parts])
    unique, inverse = np.unique(cells, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=unique.size).astype(np.int64)


class _GroupSizes:
    def __init__(self, key: RankKey, n_groups: int) -> None:
        self.key = key
        self.n_groups = n_groups

    def __call__(self, table: pa.Table) -> NDArray[np.int64]:
        group = np.asarray(self.key(table)[0], dtype=np.int64)
        return np.bincount(group[group >= 0], minlength=self.n_groups).astype(np.int64)


def _sum_arrays(parts: list[NDArray[np.int64]]) -> NDArray[np.int64]:
    return np.sum(parts, axis=0) if parts else np.zeros(0, dtype=np.int64)


def group_sizes(frame: Frame, key: RankKey, n_groups: int) -> NDArray[np.int64]:
    """Rows of each group (one aggregate)."""
    sizes = frame.aggregate(_GroupSizes(key, n_groups), _sum_arrays)
    return sizes if sizes.size else np.zeros(n_groups, dtype=np.int64)


def k_smallest(
    frame: Frame,
    key: RankKey,
    targets: NDArray[np.integer[Any]],
    sizes: NDArray[np.integer[Any]] | None = None,
) -> Cuts:
    """The cuts keeping the ``targets[g]`` rows with the smallest keys of each group ``g``.

    ``sizes`` (rows per group) is counted when not given. Keys must be
    unique within a group (the secondary key is the input-order key).
    """
    targets = np.asarray(targets, dtype=np.int64)
    n_groups = targets.size
    sizes = group_sizes(frame, key, n_groups) if sizes is None else np.asarray(sizes, np.int64)
    mode = np.where(targets <= 0, 0, np.where(targets >= sizes, 1, 2)).astype(np.int8)
    need = np.where(mode == 2, targets, 0)
    bits = np.zeros(n_groups, dtype=np.int64)
    high = np.zeros(n_groups, dtype=np.uint64)
    low = np.zeros(n_groups, dtype=np.uint64)
    unresolved = np.flatnonzero(mode == 2)
    prefix = 0
    while unresolved.size:
        if prefix >= 128:
            raise ValueError("k_smallest: keys are not unique within a group")
        width = int(np.clip(math.floor(math.log2(MAX_COUNTERS / unresolved.size)), 4, 16))
        width = min(width, 64 - prefix) if prefix < 64 else min(width, 128 - prefix)
        partial = _Histogram(
            key, unresolved, n_groups, prefix, width, high[unresolved], low[unresolved]
        )
        cells, counts = frame.aggregate(partial, _merge)
        slot_of_cell = cells >> width
        digit_of_cell = cells & ((1 << width) - 1)
        still = []
        for slot, g in enumerate(unresolved.tolist()):
            mine = slot_of_cell == slot
            digits, found = digit_of_cell[mine], counts[mine]  # sorted by digit (np.unique)
            before = np.concatenate([[0], np.cumsum(found)[:-1]])
            at = int(np.searchsorted(np.cumsum(found), need[g]))
            if at >= found.size:
                raise AssertionError(f"k_smallest: group {g} has fewer rows than counted")
            need[g] -= int(before[at])
            digit = np.uint64(int(digits[at]))
            if prefix < 64:
                high[g] = (high[g] << np.uint64(width)) | digit if prefix else digit
            else:
                low[g] = (low[g] << np.uint64(width)) | digit if prefix > 64 else digit
            bits[g] = prefix + width
            if need[g] != int(found[at]):
                still.append(g)
        prefix += width
        unresolved = np.asarray(still, dtype=np.int64)
    return Cuts(mode, bits, high, low)


class _SizedHistogram(_Histogram):
    """A round's partial for :func:`fitting_counts`: rows and size sums per (group, digit)."""

    def __init__(self, column: str, *args: Any) -> None:
        super().__init__(*args)
        self.column = column

    def __call__(self, table: pa.Table) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        from thresher.selectors.base import count_values

        group, hi, lo = self.key(table)
        sizes = count_values(table, self.column)
        group = np.asarray(group, dtype=np.int64)
        member = group >= 0
        slot = np.full(group.size, -1, dtype=np.int64)
        slot[member] = self.slot[group[member]]
        rows = np.flatnonzero(slot >= 0)
        slot, hi, lo, sizes = slot[rows], hi[rows], lo[rows], sizes[rows]
        p, w = self.prefix_bits, self.width
        if p > 0:
            if p <= 64:
                match = (hi >> np.uint64(64 - p)) == self.high[slot]
            else:
                match = (hi == self.high[slot]) & ((lo >> np.uint64(128 - p)) == self.low[slot])
            slot, hi, lo, sizes = slot[match], hi[match], lo[match], sizes[match]
        mask = np.uint64((1 << w) - 1)
        if p + w <= 64:
            digit = (hi >> np.uint64(64 - p - w)) & mask
        else:
            digit = (lo >> np.uint64(128 - p - w)) & mask
        cell = slot * (1 << w) + digit.astype(np.int64)
        cells, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=sizes, minlength=cells.size)
        # exact: a cell's sum is below 2**53 whenever the corpus total is (checked by the caller)
        return cells, np.stack([counts.astype(np.int64), sums.astype(np.int64)], axis=1)


def _merge_sized(
    parts: list[tuple[NDArray[np.int64], NDArray[np.int64]]],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64)
    cells = np.concatenate([c for c, _ in parts])
    values = np.concatenate([v for _, v in parts])
    unique, inverse = np.unique(cells, return_inverse=True)
    merged = np.zeros((unique.size, 2), dtype=np.int64)
    np.add.at(merged, inverse, values)
    return unique, merged


class _GroupSums:
    def __init__(self, key: RankKey, column: str, n_groups: int) -> None:
        self.key = key
        self.column = column
        self.n_groups = n_groups

    def __call__(self, table: pa.Table) -> NDArray[np.int64]:
        from thresher.selectors.base import count_values

        group = np.asarray(self.key(table)[0], dtype=np.int64)
        sizes = count_values(table, self.column)
        member = group >= 0
        rows = np.bincount(group[member], minlength=self.n_groups)
        sums = np.zeros(self.n_groups, dtype=np.int64)
        np.add.at(sums, group[member], sizes[member])
        return np.stack([rows.astype(np.int64), sums])


def group_sums(
    frame: Frame, key: RankKey, column: str, n_groups: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows of each group and the sum of ``column`` over them (one aggregate)."""
    both = frame.aggregate(_GroupSums(key, column, n_groups), _sum_arrays)
    if both.size == 0:
        return np.zeros(n_groups, dtype=np.int64), np.zeros(n_groups, dtype=np.int64)
    if int(both[1].sum()) >= 2**53:
        raise ValueError(f"the sum of {column!r} is too large to count exactly (>= 2**53)")
    return both[0].astype(np.int64), both[1].astype(np.int64)


def fitting_counts(
    frame: Frame,
    key: RankKey,
    column: str,
    totals: NDArray[np.integer[Any]],
    sizes: NDArray[np.integer[Any]],
    sums: NDArray[np.integer[Any]],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per group: rows taken in key order before the first that would exceed ``totals[g]``.

    The counts and kept sums of :func:`sum_cuts` (see there).
    """
    _, counts, kept = sum_cuts(frame, key, column, totals, sizes, sums)
    return counts, kept


def sum_cuts(
    frame: Frame,
    key: RankKey,
    column: str,
    totals: NDArray[np.integer[Any]],
    sizes: NDArray[np.integer[Any]],
    sums: NDArray[np.integer[Any]],
) -> tuple[Cuts, NDArray[np.int64], NDArray[np.int64]]:
    """The cuts keeping, per group, the rows in key order before the first that would exceed.

    Parameters
    ----------
    frame : Frame
        The rows; ``column`` holds each row's size (whole, non-negative).
    key : RankKey
        The order (keys unique within a group).
    totals : ndarray of int, shape (g,)
        Each group's sum budget.
    sizes, sums : ndarray of int, shape (g,)
        Rows and size sum of each group (:func:`group_sums`).

    Returns
    -------
    cuts : Cuts
        Keeps exactly those rows: the keys whose prefix is below the prefix
        that isolates the first row that does not fit.
    counts, kept_sums : ndarray of int64, shape (g,)
        Rows kept per group and their sum (``<= totals``; the next row in
        key order, if any, would exceed).
    """
    totals = np.asarray(totals, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    sums = np.asarray(sums, dtype=np.int64)
    n_groups = totals.size
    everything = sums <= totals
    counts = np.where(everything, sizes, 0).astype(np.int64)
    kept = np.where(everything, sums, 0).astype(np.int64)
    need = np.where(everything, 0, totals).astype(np.int64)
    high = np.zeros(n_groups, dtype=np.uint64)
    low = np.zeros(n_groups, dtype=np.uint64)
    mode = np.where(everything, 1, 0).astype(np.int8)
    cut_bits = np.zeros(n_groups, dtype=np.int64)
    cut_high = np.zeros(n_groups, dtype=np.uint64)
    cut_low = np.zeros(n_groups, dtype=np.uint64)
    unresolved = np.flatnonzero(~everything)
    prefix = 0
    while unresolved.size:
        if prefix >= 128:
            raise ValueError("sum_cuts: keys are not unique within a group")
        width = int(np.clip(math.floor(math.log2(MAX_COUNTERS / unresolved.size)), 4, 16))
        width = min(width, 64 - prefix) if prefix < 64 else min(width, 128 - prefix)
        partial = _SizedHistogram(
            column, key, unresolved, n_groups, prefix, width, high[unresolved], low[unresolved]
        )
        cells, values = frame.aggregate(partial, _merge_sized)
        slot_of_cell = cells >> width
        digit_of_cell = cells & ((1 << width) - 1)
        still = []
        for slot, g in enumerate(unresolved.tolist()):
            mine = slot_of_cell == slot
            digits, found, summed = digit_of_cell[mine], values[mine, 0], values[mine, 1]
            running = np.cumsum(summed)
            at = int(np.searchsorted(running, need[g], side="right"))  # first bucket crossing
            if at >= found.size:
                raise AssertionError(f"sum_cuts: group {g} sums less than counted")
            counts[g] += int(found[:at].sum())
            kept[g] += int(summed[:at].sum())
            need[g] -= int(summed[:at].sum())
            if int(found[at]) == 1:  # that bucket's one row is the first that does not fit
                stop = (_prefix_value(high[g], low[g], prefix) << width) | int(digits[at])
                if stop > 0:  # keep the keys whose prefix is below the stopping row's
                    mode[g] = 2
                    cut_bits[g] = prefix + width
                    cut_high[g], cut_low[g] = _split_prefix(stop - 1, prefix + width)
                continue
            digit = np.uint64(int(digits[at]))
            if prefix < 64:
                high[g] = (high[g] << np.uint64(width)) | digit if prefix else digit
            else:
                low[g] = (low[g] << np.uint64(width)) | digit if prefix > 64 else digit
            still.append(g)
        prefix += width
        unresolved = np.asarray(still, dtype=np.int64)
    return Cuts(mode, cut_bits, cut_high, cut_low), counts, kept


def _prefix_value(high: np.uint64, low: np.uint64, bits: int) -> int:
    """A group's known key prefix of ``bits`` bits as one Python int (``high`` then ``low``)."""
    if bits <= 64:
        return int(high) if bits else 0
    return (int(high) << (bits - 64)) | int(low)


def _split_prefix(value: int, bits: int) -> tuple[np.uint64, np.uint64]:
    """A ``bits``-bit prefix as :class:`Cuts` stores it: top 64 bits, then the rest."""
    if bits <= 64:
        return np.uint64(value), np.uint64(0)
    rest = bits - 64
    return np.uint64(value >> rest), np.uint64(value & ((1 << rest) - 1))


# -- the keys selectors rank by ----------------------------------------------------------


def finite_values(table: pa.Table, column: str, selector: str) -> NDArray[np.float64]:
    """A score column as float64; ValueError on a missing column or a NaN/inf value."""
    from thresher.selectors.base import score_values

    return score_values(table, column, selector=selector)


class ScoreKey:
    """Rank by a score (ascending, or ``descending``), ties by input order; classes as groups."""

    def __init__(
        self,
        score: str,
        descending: bool,
        classes: LabelClasses | None = None,
        selector: str = "selector",
    ) -> None:
        self.score = score
        self.descending = descending
        self.classes = classes
        self.selector = selector

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        primary = float_key(finite_values(table, self.score, self.selector))
        if self.descending:
            primary = descending(primary)
        return class_groups(table, self.classes), primary, order_bits(_order(table))


class PriorityKey:
    """Rank by a seeded hash of the id (a uniform random order); classes as groups."""

    def __init__(self, seed: int, classes: LabelClasses | None = None) -> None:
        self.seed = seed
        self.classes = classes

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        from thresher.keys import id_priority

        priority = id_priority(table.column("id"), self.seed)
        return class_groups(table, self.classes), priority, order_bits(_order(table))


def class_groups(table: pa.Table, classes: LabelClasses | None) -> NDArray[np.int64]:
    """Each row's class (all rows in group 0 without classes)."""
    if classes is None:
        return np.zeros(table.num_rows, dtype=np.int64)
    return classes.codes(table.column("label"))


def _order(table: pa.Table) -> NDArray[np.int64]:
    return np.asarray(table.column("thresher_order").to_numpy(zero_copy_only=False), np.int64)


class CutMarks(Marks):
    """The rule "keep the rows the cuts keep" (groups: the key's groups, or none)."""

    def __init__(
        self, key: RankKey, cuts: Cuts, details: dict[str, Any], report_groups: bool
    ) -> None:
        self.key = key
        self.cuts = cuts
        self.details = details
        self.report_groups = report_groups

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        group, primary, secondary = self.key(table)
        keep = self.cuts.keep(group, primary, secondary)
        groups = group if self.report_groups else np.full(table.num_rows, -1, dtype=np.int64)
        return keep, np.ones(table.num_rows), np.asarray(groups, dtype=np.int64)


class _KeptRange:
    def __init__(self, marks: Any, score: str) -> None:
        self.marks = marks
        self.score = score

    def __call__(self, table: pa.Table) -> tuple[float, float, int]:
        keep = self.marks(table)[0]
        values = np.asarray(table.column(self.score).to_numpy(zero_copy_only=False), np.float64)
        chosen = values[keep]
        if chosen.size == 0:
            return math.inf, -math.inf, 0
        return float(chosen.min()), float(chosen.max()), int(chosen.size)


def _combine_range(parts: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return (
        min((p[0] for p in parts), default=math.inf),
        max((p[1] for p in parts), default=-math.inf),
        sum(p[2] for p in parts),
    )


def kept_range(frame: Frame, marks: Any, score: str) -> tuple[float | None, float | None, int]:
    """Smallest and largest ``score`` among the rows ``marks`` keeps, and how many (one aggregate)."""
    low, high, n = frame.aggregate(_KeptRange(marks, score), _combine_range)
    return (low, high, n) if n else (None, None, 0)


def budget_cuts(
    rows: Frame,
    key: RankKey,
    budget: Budget | None,
    classes: LabelClasses | None,
    allocation: LabelAllocation,
    selector: str,
) -> tuple[Cuts, NDArray[np.int64], dict[str, Any]]:
    """The cuts of a rank-order selector for any budget: rows or a column's sum.

    Groups are the key's classes (one group without ``classes``). A count
    or fraction is split across classes by :func:`class_budgets`; a
    :class:`SumBudget` by :func:`class_sum_budgets` (the classes' sums),
    each class then taking rows in key order until the next would exceed
    its share. Returns the cuts, the group sizes, and details for the
    report (``budget_sum``, ``requested_sum``, ``kept_sum`` for a sum budget).
    """
    n_groups = classes.n_classes if classes is not None else 1
    if isinstance(budget, SumBudget):
        sizes, sums = group_sums(rows, key, budget.column, n_groups)
        if classes is not None:
            totals = class_sum_budgets(sums, budget.total, allocation)
        else:
            totals = np.minimum(sums, budget.total)
        cuts, _, kept = sum_cuts(rows, key, budget.column, totals, sizes, sums)
        details = {
            "budget_sum": budget.column,
            "requested_sum": int(budget.total),
            "kept_sum": int(kept.sum()),
        }
        return cuts, sizes, details
    if classes is not None:
        sizes = classes.sizes
        k = resolve_budget(budget, int(sizes.sum()), selector=selector)
        targets = class_budgets(sizes, k, allocation)
    else:
        sizes = np.array([rows.count()], dtype=np.int64)
        targets = np.array([resolve_budget(budget, int(sizes[0]), selector=selector)])
    return k_smallest(rows, key, targets, sizes), sizes, {}
