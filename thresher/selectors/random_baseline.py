"""Uniform random selection: the baseline every comparison must include."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.selectors._allocation import LabelAllocation, label_budgets
from thresher.selectors.base import (
    Budget,
    RandomState,
    Selection,
    Selector,
    check_random_state,
    label_codes,
    resolve_budget,
)


class RandomSelector(Selector):
    """Keep a uniformly random subset of exactly the budget's size.

    Parameters
    ----------
    by_label : bool
        Class-balanced variant: sample within each class of the ``label``
        column, the budget split across classes by ``label_allocation``
        (``proportional`` keeps the class frequencies, ``equal`` gives each
        class the same count).
    """

    name: ClassVar[str] = "random"

    def __init__(
        self, by_label: bool = False, label_allocation: LabelAllocation = "proportional"
    ) -> None:
        self.by_label = by_label
        self.label_allocation = label_allocation

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        n_rows = scores.num_rows
        k = resolve_budget(budget, n_rows, selector=self.name)
        rng = check_random_state(random_state)
        if not self.by_label:
            return Selection.from_indices(rng.choice(n_rows, size=k, replace=False))
        codes, n_classes = label_codes(scores, selector=self.name)
        budgets = label_budgets(codes, n_classes, k, self.label_allocation)
        kept = [
            rng.choice(np.flatnonzero(codes == cls), size=int(budgets[cls]), replace=False)
            for cls in range(n_classes)
        ]
        indices = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
        return Selection.from_indices(
            indices, groups=codes[indices], details={"classes": n_classes}
        )
