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

from thresher.frame import Frame
from thresher.selectors.allocation import LabelAllocation, check_label_options
from thresher.selectors.base import Budget, FrameSelector, Marks, RandomState
from thresher.selectors.labels import label_classes
from thresher.selectors.ranking import CutMarks, ScoreKey, budget_cuts, kept_range


class TopKSelector(FrameSelector):
    """Keep the budget's rows with the highest score.

    Ties are broken by input order (earlier rows first), so the result is
    deterministic and needs no randomness. A sum budget
    (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens) takes rows
    from the highest score down and stops before the first row that would
    make the sum exceed the total (within each class with ``by_label``, the
    total split by the classes' sums).

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

    def score_columns(self) -> list[str]:
        return [self.score]

    def check_params(self) -> None:
        if not isinstance(self.score, str) or not self.score:
            raise ValueError(f"{self.name}: score must name a score column, got {self.score!r}")
        check_label_options(self.name, self.by_label, self.label_allocation)

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        classes = label_classes(rows, selector=self.name) if self.by_label else None
        key = ScoreKey(self.score, self._descending, classes, selector=self.name)
        cuts, _, sums = budget_cuts(rows, key, budget, classes, self.label_allocation, self.name)
        details: dict[str, Any] = {"score": self.score, "by_label": self.by_label, **sums}
        marks = CutMarks(key, cuts, details, self.by_label)
        low, high, _ = kept_range(rows, marks, self.score)
        if low is not None:
            details["kept_min"], details["kept_max"] = low, high
        if classes is not None:
            details["classes"] = classes.n_classes
        return marks


class BottomKSelector(TopKSelector):
    """Keep the budget's rows with the lowest score (see :class:`TopKSelector`)."""

    name: ClassVar[str] = "bottomk"
    _descending: ClassVar[bool] = False
