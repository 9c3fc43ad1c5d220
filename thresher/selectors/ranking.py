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
from thresher.selectors.base import Marks
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


class KeptCount:
    """Partial of a check: rows the cuts keep in each group."""

    def __init__(self, key: RankKey, cuts: Cuts, n_groups: int) -> None:
        self.key = key
        self.cuts = cuts
        self.n_groups = n_groups

    def __call__(self, table: pa.Table) -> NDArray[np.int64]:
        group, hi, lo = self.key(table)
        kept = self.cuts.keep(group, hi, lo)
        return np.bincount(np.asarray(group)[kept], minlength=self.n_groups).astype(np.int64)


def kept_counts(frame: Frame, key: RankKey, cuts: Cuts, n_groups: int) -> NDArray[np.int64]:
    """Rows the cuts keep per group (one aggregate; used to check a selection's budget)."""
    counts = frame.aggregate(KeptCount(key, cuts, n_groups), _sum_arrays)
    return counts if counts.size else np.zeros(n_groups, dtype=np.int64)


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
