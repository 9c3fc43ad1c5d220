"""Keep a band of the score distribution: lowest, middle or highest rows.

References
----------
Ankner et al., "Perplexed by Perplexity: Perplexity-Based Data Pruning With
Small Reference Models", 2024 (low, medium and high perplexity bands).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Options
from thresher.frame import Frame
from thresher.selectors.base import (
    Budget,
    FrameSelector,
    Marks,
    RandomState,
    SumBudget,
    resolve_budget,
)
from thresher.selectors.ranked import ScoreColumn
from thresher.selectors.ranking import (
    Cuts,
    ScoreKey,
    group_sums,
    k_smallest,
    kept_range,
    sum_cuts,
)

Band = Literal["low", "medium", "high"]


class QuantileBandSelector(ScoreColumn, FrameSelector):
    """Keep the budget's rows from the low end, the middle or the high end of a score.

    Rows are ranked by score, ties by input order; ``medium`` keeps the
    ranks centred on the median (``(n - k) // 2`` rows below the band).

    A sum budget (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens)
    takes rows in band order and stops before the first row that would make
    the sum exceed the total: ``low`` from the lowest score up, ``high``
    from the highest down, ``medium`` from the first row after the lowest
    rows that fit in half the excess (``(sum - total) // 2``) upwards.

    Parameters
    ----------
    score : str
        Score column to rank by.
    band : {"low", "medium", "high"}
        Which part of the ranking to keep.
    """

    name: ClassVar[str] = "quantile_band"

    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "band": [Options("low", "medium", "high")]
    }

    def __init__(self, score: str, band: Band = "medium") -> None:
        self.score = score
        self.band = band

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        self.validate_params()
        if isinstance(budget, SumBudget):
            return self._select_sum(rows, budget)
        n = rows.count()
        k = resolve_budget(budget, n, selector=self.name)
        start = {"low": 0, "medium": (n - k) // 2, "high": n - k}[self.band]
        key = ScoreKey(self.score, False, selector=self.name)
        sizes = np.array([n])
        below = k_smallest(rows, key, np.array([start]), sizes)
        upto = k_smallest(rows, key, np.array([start + k]), sizes)
        details: dict[str, Any] = {"score": self.score, "band": self.band}
        marks = _BandMarks(key, below, upto, details)
        low, high, _ = kept_range(rows, marks, self.score)
        details["kept_range"] = (low, high)
        return marks

    def _select_sum(self, rows: Frame, budget: SumBudget) -> Marks:
        key = ScoreKey(self.score, self.band == "high", selector=self.name)
        sizes, sums = group_sums(rows, key, budget.column, 1)
        total = min(int(sums[0]), budget.total)
        below, below_sum = (
            k_smallest(rows, key, np.zeros(1, np.int64), sizes),
            np.zeros(1, np.int64),
        )
        if self.band == "medium" and total < int(sums[0]):
            half = np.array([(int(sums[0]) - total) // 2])
            below, _, below_sum = sum_cuts(rows, key, budget.column, half, sizes, sums)
        upto, _, upto_sum = sum_cuts(rows, key, budget.column, below_sum + total, sizes, sums)
        details: dict[str, Any] = {
            "score": self.score,
            "band": self.band,
            "budget_sum": budget.column,
            "requested_sum": int(budget.total),
            "kept_sum": int(upto_sum[0] - below_sum[0]),
        }
        marks = _BandMarks(key, below, upto, details)
        low, high, _ = kept_range(rows, marks, self.score)
        details["kept_range"] = (low, high)
        return marks


class _BandMarks(Marks):
    """Keep the ranks in ``[start, start + k)``: below ``upto``'s cut and not below ``below``'s."""

    def __init__(self, key: ScoreKey, below: Cuts, upto: Cuts, details: dict[str, Any]) -> None:
        self.key = key
        self.below = below
        self.upto = upto
        self.details = details

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        group, primary, secondary = self.key(table)
        keep = self.upto.keep(group, primary, secondary) & ~self.below.keep(
            group, primary, secondary
        )
        return keep, np.ones(table.num_rows), np.full(table.num_rows, -1, dtype=np.int64)
