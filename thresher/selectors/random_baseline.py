"""Uniform random selection: the baseline every comparison must include."""

from __future__ import annotations

from typing import ClassVar

from thresher.selectors.allocation import LabelAllocation
from thresher.selectors.base import RandomState, hash_seed
from thresher.selectors.labels import LabelClasses
from thresher.selectors.ranked import RankedSelector
from thresher.selectors.ranking import PriorityKey, RankKey


class RandomSelector(RankedSelector):
    """Keep a uniformly random subset of exactly the budget's size.

    The subset is the rows with the smallest seeded hash of their id (a
    uniform random order that depends on the id and the seed only), so the
    same document gets the same chance on every engine and in every run
    over a growing corpus. A sum budget
    (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens) takes rows in
    that hash order and stops before the first row that would make the sum
    exceed the total (per class with ``by_label``, the total split by the
    classes' sums).

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

    def rank_key(self, classes: LabelClasses | None, random_state: RandomState) -> RankKey:
        return PriorityKey(hash_seed(random_state), classes)
