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
4. **Sampling**: uniform without replacement inside each stratum.

With ``by_label`` the budget is first split across classes, the cutoff is
applied within each class, strata edges are shared by all classes, and the
budget loop runs within each class.

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

from thresher.selectors._allocation import LabelAllocation, label_budgets
from thresher.selectors._partition import Partitionable
from thresher.selectors.base import (
    Budget,
    RandomState,
    Selection,
    Selector,
    check_random_state,
    label_codes,
    resolve_budget,
    score_values,
)

End = Literal["high", "low"]
#: Relative margin above the maximum for the top stratum edge.
EDGE_EPS = 1e-4


def strata_edges(values: NDArray[np.float64], n_strata: int) -> tuple[float, float]:
    """Lower edge and width of ``n_strata`` equal-width strata covering ``values``."""
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
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


class CCSSelector(Partitionable, Selector):
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

    def _check_params(self) -> None:
        if not (isinstance(self.beta, int | float) and 0.0 <= self.beta < 1.0):
            raise ValueError(f"ccs: beta must be in [0, 1), got {self.beta!r}")
        for name in ("hard", "cutoff_hard"):
            if getattr(self, name) not in ("high", "low"):
                raise ValueError(
                    f"ccs: {name} must be 'high' or 'low', got {getattr(self, name)!r}"
                )
        if not (isinstance(self.n_strata, int) and self.n_strata >= 1):
            raise ValueError(f"ccs: n_strata must be an int >= 1, got {self.n_strata!r}")

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        self._check_params()
        values = score_values(scores, self.score, selector=self.name)
        n = values.size
        k = resolve_budget(budget, n, selector=self.name)
        rng = check_random_state(random_state)
        if self.cutoff_score is None:
            hardness = values if self.hard == "high" else -values
        else:
            cutoff = score_values(scores, self.cutoff_score, selector=self.name)
            hardness = cutoff if self.cutoff_hard == "high" else -cutoff
        if self.by_label:
            codes, n_classes = label_codes(scores, selector=self.name)
        else:
            codes, n_classes = np.zeros(n, dtype=np.int64), 1
        class_budget = label_budgets(codes, n_classes, k, self.label_allocation)

        # 1. hard cutoff within each class (all rows form one class without by_label)
        cut = np.zeros(n, dtype=bool)
        for cls in range(n_classes):
            members = np.flatnonzero(codes == cls)
            n_cut = min(math.floor(self.beta * members.size), members.size - int(class_budget[cls]))
            # hardest first; among equal hardness the earlier row is cut first
            hardest = members[np.argsort(-hardness[members], kind="stable")[:n_cut]]
            cut[hardest] = True

        # 2. shared strata over the rows that survive the cutoff
        low, width = strata_edges(values[~cut], self.n_strata)
        stratum = stratum_of(values, low, width, self.n_strata)

        # 3-4. budget loop and uniform sampling, per class
        kept: list[NDArray[np.int64]] = []
        sizes = np.zeros(self.n_strata, dtype=np.int64)
        selected = np.zeros(self.n_strata, dtype=np.int64)
        for cls in range(n_classes):
            pool = np.flatnonzero((codes == cls) & ~cut)
            class_sizes = np.bincount(stratum[pool], minlength=self.n_strata)
            budgets = stratum_budgets(class_sizes, int(class_budget[cls]))
            for s in np.flatnonzero(budgets):
                members = pool[stratum[pool] == s]
                kept.append(rng.choice(members, size=int(budgets[s]), replace=False))
            sizes += class_sizes
            selected += budgets
        indices = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
        details: dict[str, Any] = {
            "score": self.score,
            "beta": self.beta,
            "cut": int(cut.sum()),
            "n_strata": self.n_strata,
            "strata": [
                {
                    "low": low + s * width,
                    "high": low + (s + 1) * width,
                    "size": int(sizes[s]),
                    "selected": int(selected[s]),
                }
                for s in range(self.n_strata)
            ],
        }
        if self.by_label:
            details["classes"] = n_classes
        return Selection.from_indices(indices, groups=stratum[indices], details=details)
