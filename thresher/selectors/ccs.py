"""Coverage-centric coreset selection (CCS).

CCS keeps examples from the whole range of a difficulty score instead of
its hard end, which is what makes score-based pruning work at high pruning
rates:

1. **Hard cutoff**: drop the ``beta`` fraction of hardest rows, ranked by
   the score itself or by a separate mislabel score (e.g. AUM, where low
   means likely mislabelled). The cutoff never removes so many rows that
   the budget cannot be met: at most ``n - budget`` rows are cut.
2. **Strata**: split the remaining score range into ``n_strata`` equal-width
   strata; the top edge is ``max + 1e-4 * (max - min)``, so the maximum is
   inside the last stratum whatever the sign of the scores (the reference
   code's ``max * 1.0001`` drops it when the scores are negative).
3. **Budget**: visit strata from smallest to largest, each getting
   ``min(size, floor(remaining budget / strata left))``; any budget left by
   the rounding goes to strata with room (smallest first), so exactly the
   budget is kept.
4. **Sampling**: uniform without replacement inside each stratum: the rows
   with the smallest seeded hash of their id.

With ``by_label`` the budget is first split across classes, the cutoff is
applied within each class, strata edges are shared by all classes, and the
budget loop runs within each class.

A sum budget (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens)
runs the same steps on sums instead of row counts: classes share the total
by their sums, the cutoff removes at most the hardest rows whose sum leaves
the class's share reachable, the budget loop splits each class's share
across strata by the strata's sums, and each stratum takes rows in its
seeded hash order, stopping before the first row that would exceed its
share. What the strata leave of the class's share then goes to the rows
they left, in the same hash order across the class's strata, stopping
before the first row that would exceed it: never over the total, and each
class falls short of its share by less than one row.

Every step is an aggregate or an exact cut (:mod:`thresher.selectors.ranking`):
the statistics (class sizes, the score range, stratum sizes) are computed
where the rows are, the budget loop runs on the driver, and the sampling
is a rule executors apply.

References
----------
Zheng, Liu, Li and Prakash, "Coverage-centric Coreset Selection for High
Pruning Rates", ICLR 2023.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Integral, Interval, Options, Real, Text
from thresher.frame import Frame
from thresher.selectors.allocation import LabelAllocation, class_budgets, class_sum_budgets
from thresher.selectors.base import (
    Budget,
    FrameSelector,
    Marks,
    RandomState,
    SumBudget,
    hash_seed,
    resolve_budget,
)
from thresher.selectors.labels import LabelClasses
from thresher.selectors.partition import Partitionable
from thresher.selectors.ranked import ByLabel, ScoreColumn
from thresher.selectors.ranking import (
    Cuts,
    ScoreKey,
    finite_values,
    fitting_counts,
    group_sizes,
    group_sums,
    k_smallest,
    order_bits,
    sum_cuts,
)

End = Literal["high", "low"]
#: Relative margin above the maximum for the top stratum edge.
EDGE_EPS = 1e-4


def strata_edges(values: NDArray[np.float64], n_strata: int) -> tuple[float, float]:
    """Lower edge and width of ``n_strata`` equal-width strata covering ``values``."""
    if values.size == 0:
        return range_edges(None, None, n_strata)
    return range_edges(float(values.min()), float(values.max()), n_strata)


def range_edges(low: float | None, high: float | None, n_strata: int) -> tuple[float, float]:
    """Lower edge and width of ``n_strata`` equal-width strata covering ``[low, high]``."""
    if low is None or high is None:
        return 0.0, 1.0
    span = high - low
    if span == 0.0:
        return low, 1.0  # one value: everything lands in the first stratum
    return low, (high + EDGE_EPS * span - low) / n_strata


def stratum_of(
    values: NDArray[np.float64], low: float, width: float, n_strata: int
) -> NDArray[np.int64]:
    """Stratum index of each value (0 .. n_strata-1)."""
    index = np.floor((values - low) / width).astype(np.int64)
    return np.clip(index, 0, n_strata - 1)


def stratum_budgets(sizes: NDArray[np.int64], budget: int) -> NDArray[np.int64]:
    """CCS's smallest-first budget loop, with leftover budget given to strata with room.

    Parameters
    ----------
    sizes : ndarray of int64, shape (k,)
        Rows in each stratum (empty strata included).
    budget : int
        Rows to keep; at most ``sizes.sum()``.

    Returns
    -------
    ndarray of int64, shape (k,)
        Rows to draw from each stratum; sums to ``budget``.
    """
    if budget > int(sizes.sum()):
        raise ValueError(f"budget {budget} exceeds the {int(sizes.sum())} rows in the strata")
    order = np.argsort(sizes, kind="stable")  # smallest first, ties by stratum index
    result = np.zeros(sizes.size, dtype=np.int64)
    remaining = int(budget)
    for position, stratum in enumerate(order):
        take = min(int(sizes[stratum]), remaining // (sizes.size - position))
        result[stratum] = take
        remaining -= take
    for stratum in order:  # leftover from rounding (none when the loop is exact)
        if remaining == 0:
            break
        extra = min(int(sizes[stratum] - result[stratum]), remaining)
        result[stratum] += extra
        remaining -= extra
    return result


class _HardnessKey:
    """Hardest first (by the score or the cutoff score), ties by input order; classes as groups."""

    def __init__(self, column: str, hard: End, classes: LabelClasses | None) -> None:
        self.key = ScoreKey(column, hard == "high", classes, selector="ccs")

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        return self.key(table)


class _Survivors:
    """Rows the hard cutoff keeps, with their class and score (a shared row-wise helper)."""

    def __init__(self, score: str, hardness: _HardnessKey, cut: Cuts) -> None:
        self.score = score
        self.hardness = hardness
        self.cut = cut

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.int64], NDArray[np.float64]]:
        group, primary, secondary = self.hardness(table)
        survives = ~self.cut.keep(group, primary, secondary)
        return survives, group, finite_values(table, self.score, "ccs")


class _Range:
    def __init__(self, survivors: _Survivors) -> None:
        self.survivors = survivors

    def __call__(self, table: pa.Table) -> tuple[float, float]:
        survives, _, values = self.survivors(table)
        chosen = values[survives]
        if chosen.size == 0:
            return math.inf, -math.inf
        return float(chosen.min()), float(chosen.max())


def _combine_range(parts: list[tuple[float, float]]) -> tuple[float, float]:
    return min((p[0] for p in parts), default=math.inf), max(
        (p[1] for p in parts), default=-math.inf
    )


class _StratumKey:
    """Group = (class, stratum) of a row that survives the cutoff; rank = seeded id hash."""

    def __init__(
        self, survivors: _Survivors, low: float, width: float, n_strata: int, seed: int
    ) -> None:
        self.survivors = survivors
        self.low = low
        self.width = width
        self.n_strata = n_strata
        self.seed = seed

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        from thresher.keys import id_priority

        survives, cls, values = self.survivors(table)
        stratum = stratum_of(values, self.low, self.width, self.n_strata)
        group = np.where(survives, cls * self.n_strata + stratum, -1)
        order = order_bits(table.column("thresher_order").to_numpy(zero_copy_only=False))
        return group, id_priority(table.column("id"), self.seed), order


class _LeftoverKey:
    """A sum budget's second pass: a class's rows its strata left, in the same hash order."""

    def __init__(self, key: _StratumKey, first: Cuts) -> None:
        self.key = key
        self.first = first

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        group, primary, secondary = self.key(table)
        left = (group >= 0) & ~self.first.keep(group, primary, secondary)
        return np.where(left, group // self.key.n_strata, -1), primary, secondary


class _StrataMarks(Marks):
    def __init__(
        self,
        key: _StratumKey,
        cuts: Cuts,
        details: dict[str, Any],
        leftover: tuple[_LeftoverKey, Cuts] | None = None,
    ) -> None:
        self.key = key
        self.cuts = cuts
        self.details = details
        self.leftover = leftover

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        group, primary, secondary = self.key(table)
        keep = self.cuts.keep(group, primary, secondary)
        if self.leftover is not None:
            left_key, left_cuts = self.leftover
            keep |= left_cuts.keep(*left_key(table))
        stratum = np.where(group >= 0, group % self.key.n_strata, -1)
        return keep, np.ones(table.num_rows), stratum.astype(np.int64)


class _KeptPerStratum:
    def __init__(self, marks: _StrataMarks, n_strata: int) -> None:
        self.marks = marks
        self.n_strata = n_strata

    def __call__(self, table: pa.Table) -> NDArray[np.int64]:
        keep, _, stratum = self.marks(table)
        return np.bincount(stratum[keep & (stratum >= 0)], minlength=self.n_strata)


def _sum_counts(parts: list[NDArray[np.int64]]) -> NDArray[np.int64]:
    return np.sum(parts, axis=0).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


class CCSSelector(Partitionable, ScoreColumn, ByLabel, FrameSelector):
    """Coverage-centric coreset selection (see module docstring).

    Parameters
    ----------
    score : str
        Difficulty score whose range is stratified (e.g. EL2N, forgetting).
    beta : float
        Fraction of hardest rows cut before stratifying, in [0, 1). The paper
        tunes it per pruning rate (0.3 at 90% pruning on CIFAR10); 0 disables it.
    hard : {"high", "low"}
        Which end of ``score`` is hard (cut first). EL2N, GraNd, forgetting: high.
    cutoff_score : str or None
        Separate score ranking the cutoff instead of ``score`` (e.g. AUM).
    cutoff_hard : {"high", "low"}
        Which end of ``cutoff_score`` is hard. AUM: low (likely mislabelled).
    n_strata : int
        Number of equal-width strata (the paper: 50).
    by_label : bool
        Class-balanced variant (see module docstring).
    label_allocation : {"proportional", "equal"}
        How the budget is split across classes when ``by_label``.
    """

    name: ClassVar[str] = "ccs"
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "beta": [Interval(Real, 0, 1, closed="left")],
        "hard": [Options("high", "low")],
        "cutoff_score": [Text(), None],
        "cutoff_hard": [Options("high", "low")],
        "n_strata": [Interval(Integral, 1, None)],
    }

    def __init__(
        self,
        score: str,
        beta: float = 0.0,
        hard: End = "high",
        cutoff_score: str | None = None,
        cutoff_hard: End = "low",
        n_strata: int = 50,
        by_label: bool = False,
        label_allocation: LabelAllocation = "proportional",
    ) -> None:
        self.score = score
        self.beta = beta
        self.hard = hard
        self.cutoff_score = cutoff_score
        self.cutoff_hard = cutoff_hard
        self.n_strata = n_strata
        self.by_label = by_label
        self.label_allocation = label_allocation

    def score_columns(self) -> list[str]:
        return [self.score] + ([self.cutoff_score] if self.cutoff_score else [])

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        self.validate_params()
        seed = hash_seed(random_state)
        classes = self.classes(rows)
        if self.cutoff_score is None:
            hardness = _HardnessKey(self.score, self.hard, classes)
        else:
            hardness = _HardnessKey(self.cutoff_score, self.cutoff_hard, classes)
        n_groups = classes.n_classes if classes is not None else 1
        if isinstance(budget, SumBudget):
            sizes, sums = group_sums(rows, hardness, budget.column, n_groups)
            class_budget = class_sum_budgets(sums, budget.total, self.label_allocation)
            # cut at most the hardest rows whose sum leaves the class's share reachable
            room = sums - class_budget
            spare, _ = fitting_counts(rows, hardness, budget.column, room, sizes, sums)
            spare = np.where(room > 0, spare, 0)  # a share covering the class cuts nothing
        else:
            sizes = classes.sizes if classes is not None else np.array([rows.count()], np.int64)
            k = resolve_budget(budget, int(sizes.sum()), selector=self.name)
            class_budget = class_budgets(sizes, k, self.label_allocation)
            spare = sizes - class_budget
        n_classes = sizes.size

        # 1. hard cutoff within each class: the hardest first, the earlier row first on ties
        n_cut = np.minimum(np.floor(self.beta * sizes).astype(np.int64), spare)
        cut = k_smallest(rows, hardness, n_cut, sizes)
        survivors = _Survivors(self.score, hardness, cut)

        # 2. shared strata over the rows that survive the cutoff
        low, high = rows.aggregate(_Range(survivors), _combine_range)
        survived = int(sizes.sum() - n_cut.sum())
        low_edge, width = range_edges(
            low if survived else None, high if survived else None, self.n_strata
        )

        # 3-4. budget loop per class on the driver, uniform sampling where the rows are
        key = _StratumKey(survivors, low_edge, width, self.n_strata, seed)
        n_cells = n_classes * self.n_strata
        extra: dict[str, Any] = {}
        leftover: tuple[_LeftoverKey, Cuts] | None = None
        if isinstance(budget, SumBudget):
            flat, flat_sums = group_sums(rows, key, budget.column, n_cells)
            strata = flat.reshape(n_classes, self.n_strata)
            shares = np.stack(
                [
                    stratum_budgets(flat_sums.reshape(n_classes, -1)[c], int(class_budget[c]))
                    for c in range(n_classes)
                ]
            )
            cuts, counts, kept = sum_cuts(
                rows, key, budget.column, shares.reshape(-1), flat, flat_sums
            )
            # 5. what the strata left of each class's share, to the rows they left
            left_key = _LeftoverKey(key, cuts)
            left_rows, left_sums = group_sums(rows, left_key, budget.column, n_classes)
            remainder = class_budget - kept.reshape(n_classes, -1).sum(axis=1)
            left_cuts, _, left_kept = sum_cuts(
                rows, left_key, budget.column, remainder, left_rows, left_sums
            )
            leftover = (left_key, left_cuts)
            targets = counts.reshape(n_classes, self.n_strata)
            extra = {
                "budget_sum": budget.column,
                "requested_sum": int(budget.total),
                "kept_sum": int(kept.sum() + left_kept.sum()),
            }
        else:
            strata = group_sizes(rows, key, n_cells).reshape(n_classes, self.n_strata)
            targets = np.stack(
                [stratum_budgets(strata[c], int(class_budget[c])) for c in range(n_classes)]
            )
            cuts = k_smallest(rows, key, targets.reshape(-1), strata.reshape(-1))
        sizes_by_stratum = strata.sum(axis=0)
        selected = targets.sum(axis=0)
        details: dict[str, Any] = {
            "score": self.score,
            "beta": self.beta,
            "cut": int(n_cut.sum()),
            "n_strata": self.n_strata,
            "strata": [
                {
                    "low": low_edge + s * width,
                    "high": low_edge + (s + 1) * width,
                    "size": int(sizes_by_stratum[s]),
                    "selected": int(selected[s]),
                }
                for s in range(self.n_strata)
            ],
            **extra,
        }
        if classes is not None:
            details["classes"] = classes.n_classes
        marks = _StrataMarks(key, cuts, details, leftover)
        if leftover is not None:  # the second pass adds rows to strata: count them
            per_stratum = rows.aggregate(_KeptPerStratum(marks, self.n_strata), _sum_counts)
            for s, row in enumerate(details["strata"]):
                row["selected"] = int(per_stratum[s]) if per_stratum.size else 0
        return marks
