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

from typing import ClassVar

from thresher.selectors.allocation import LabelAllocation
from thresher.selectors.base import RandomState
from thresher.selectors.labels import LabelClasses
from thresher.selectors.ranked import RankedSelector, ScoreColumn
from thresher.selectors.ranking import RankKey, ScoreKey


class TopKSelector(ScoreColumn, RankedSelector):
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

    def rank_key(self, classes: LabelClasses | None, random_state: RandomState) -> RankKey:
        return ScoreKey(self.score, self._descending, classes, selector=self.name)


class BottomKSelector(TopKSelector):
    """Keep the budget's rows with the lowest score (see :class:`TopKSelector`)."""

    name: ClassVar[str] = "bottomk"
    _descending: ClassVar[bool] = False
