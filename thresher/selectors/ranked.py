"""What selectors on a score column share: the ``score`` parameter, class balance, rank-and-cut.

- :class:`ScoreColumn`: the ``score`` parameter (the column a selector reads),
  declared once, and :meth:`~ScoreColumn.score_columns`.
- :class:`ByLabel`: ``by_label`` and ``label_allocation`` (select within each
  class of the ``label`` column, the budget split across classes), declared
  once, and the classes of the rows when ``by_label`` is on.
- :class:`RankedSelector`: a frame selector that orders rows by a key
  (a score, a seeded priority, a perturbed score) and keeps the budget's
  first rows, per class with ``by_label`` (``topk``, ``bottomk``, ``random``,
  ``dsir``): a subclass says only which key.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from thresher._params import Bool, Constraints, Options, Text
from thresher.frame import Frame
from thresher.selectors.allocation import LABEL_ALLOCATIONS, LabelAllocation
from thresher.selectors.base import Budget, FrameSelector, Marks, RandomState
from thresher.selectors.labels import LabelClasses, label_classes
from thresher.selectors.ranking import CutMarks, RankKey, budget_cuts, kept_range


class ScoreColumn:
    """Mixin: the ``score`` parameter, a score column the selector reads."""

    _parameter_constraints: ClassVar[dict[str, Constraints]] = {"score": [Text()]}
    score: str

    def score_columns(self) -> list[str]:
        return [self.score]


class ByLabel:
    """Mixin: ``by_label`` and ``label_allocation`` (class-balanced selection)."""

    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "by_label": [Bool()],
        "label_allocation": [Options(*LABEL_ALLOCATIONS)],
    }
    name: ClassVar[str]
    by_label: bool
    label_allocation: LabelAllocation

    def classes(self, rows: Frame) -> LabelClasses | None:
        """The classes of the rows' ``label`` with ``by_label``, else None (one group)."""
        return label_classes(rows, selector=self.name) if self.by_label else None


class RankedSelector(ByLabel, FrameSelector):
    """Keep the budget's first rows in the order of :meth:`rank_key` (per class with ``by_label``).

    A sum budget takes rows in that order and stops before the first that
    would make the sum exceed the total (the total split by the classes'
    sums with ``by_label``). The details report the score column the
    selector reads, if any, and the range of it that was kept.
    """

    @abstractmethod
    def rank_key(self, classes: LabelClasses | None, random_state: RandomState) -> RankKey:
        """The key rows are ranked by, smallest first (classes as groups)."""

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        self.validate_params()
        classes = self.classes(rows)
        key = self.rank_key(classes, random_state)
        cuts, _, sums = budget_cuts(rows, key, budget, classes, self.label_allocation, self.name)
        score = next(iter(self.score_columns()), None)
        details: dict[str, Any] = (
            sums if score is None else {"score": score, "by_label": self.by_label, **sums}
        )
        marks = CutMarks(key, cuts, details, self.by_label)
        if score is not None:
            low, high, _ = kept_range(rows, marks, score)
            if low is not None:
                details["kept_min"], details["kept_max"] = low, high
        if classes is not None:
            details["classes"] = classes.n_classes
        return marks
