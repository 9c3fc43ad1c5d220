"""Score-ranked baselines: keep the highest (``topk``) or lowest (``bottomk``) rows.

These are the "prune easy" / "prune hard" baselines of the data-pruning
literature; at high pruning rates they are known to fall below random
(Zheng et al. 2023), which is why CCS exists.

References
----------
Paul, Ganguli and Dziugaite, "Deep Learning on a Data Diet: Finding Important
Examples Early in Training", NeurIPS 2021.
Zheng, Liu, Li and Prakash, "Coverage-centric Coreset Selection for High
Pruning Rates", ICLR 2023.
"""

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
    label_codes,
    resolve_budget,
    score_values,
)


class TopKSelector(Selector):
    """Keep the budget's rows with the highest score.

    Ties are broken by row position (earlier rows first), so the result is
    deterministic and needs no randomness.

    Parameters
    ----------
    score : str
        Score column to rank by.
    by_label : bool
        Rank within each class of the ``label`` column, the budget split
        across classes by ``label_allocation``.
    label_allocation : {"proportional", "equal"}
        ``proportional`` keeps the class frequencies; ``equal`` gives every
        class the same count (small classes give their rest to the others).
    """

    name: ClassVar[str] = "topk"
    _descending: ClassVar[bool] = True

    def __init__(
        self,
        score: str,
        by_label: bool = False,
        label_allocation: LabelAllocation = "proportional",
    ) -> None:
        self.score = score
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
        values = score_values(scores, self.score, selector=self.name)
        k = resolve_budget(budget, values.size, selector=self.name)
        key = -values if self._descending else values
        if not self.by_label:
            kept = np.argsort(key, kind="stable")[:k]
            groups = None
            budgets: list[int] = []
        else:
            codes, n_classes = label_codes(scores, selector=self.name)
            per_class = label_budgets(codes, n_classes, k, self.label_allocation)
            budgets = per_class.tolist()
            parts = []
            for cls in range(n_classes):
                members = np.flatnonzero(codes == cls)
                parts.append(members[np.argsort(key[members], kind="stable")[: per_class[cls]]])
            kept = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            groups = codes[kept]
        details: dict[str, Any] = {"score": self.score, "by_label": self.by_label}
        if k:
            details["kept_min"] = float(values[kept].min())
            details["kept_max"] = float(values[kept].max())
        if self.by_label:
            details["classes"] = len(budgets)
        return Selection.from_indices(kept, groups=groups, details=details)


class BottomKSelector(TopKSelector):
    """Keep the budget's rows with the lowest score (see :class:`TopKSelector`)."""

    name: ClassVar[str] = "bottomk"
    _descending: ClassVar[bool] = False
