"""Uniform random selection: the baseline every comparison must include."""

from __future__ import annotations

from typing import ClassVar

from thresher.frame import Frame
from thresher.selectors.allocation import LabelAllocation, check_label_options
from thresher.selectors.base import Budget, FrameSelector, Marks, RandomState, hash_seed
from thresher.selectors.labels import label_classes
from thresher.selectors.ranking import CutMarks, PriorityKey, budget_cuts


class RandomSelector(FrameSelector):
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

    def check_params(self) -> None:
        check_label_options("random", self.by_label, self.label_allocation)

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        seed = hash_seed(random_state)
        classes = label_classes(rows, selector=self.name) if self.by_label else None
        key = PriorityKey(seed, classes)
        cuts, _, details = budget_cuts(rows, key, budget, classes, self.label_allocation, self.name)
        if classes is not None:
            details["classes"] = classes.n_classes
        return CutMarks(key, cuts, details, report_groups=self.by_label)
