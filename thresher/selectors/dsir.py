"""DSIR resampling: keep the budget's rows by importance, without replacement (Gumbel top-k).

Data Selection with Importance Resampling (Xie et al. 2023) draws ``k``
documents without replacement with probabilities proportional to their
importance weights ``w(x) = p_target(x) / p_raw(x)``. The ``dsir`` scorer
writes ``log w(x)``; this selector draws the sample by the Gumbel top-k
trick: add independent Gumbel(0, 1) noise ``g(x)`` to every log weight and
keep the ``k`` largest ``log w(x) + g(x)``, which is exactly a sample
without replacement with those probabilities (Kool, van Hoof and Welling
2019).

The noise of a row is a function of its id and the seed alone
(``g = -log(-log(u))`` with ``u`` the row's seeded 64-bit id priority,
:func:`thresher.keys.id_priority`, mapped into ``(0, 1)``), so the draw is
the same on every engine and partitioning, and a document keeps its noise
as the corpus grows. The ``k`` largest keys are found where the data is
(:func:`thresher.selectors.ranking.k_smallest`); ties (equal keys) go to
the earlier row in input order. A sum budget
(:class:`~thresher.selectors.base.SumBudget`, e.g. tokens) takes rows in
that Gumbel order and stops before the first row that would make the sum
exceed the total (per class with ``by_label``, the total split by the
classes' sums).

References
----------
Xie, Santurkar, Ma and Liang, "Data Selection for Language Models via
Importance Resampling", NeurIPS 2023. Kool, van Hoof and Welling, "Stochastic
Beams and Where to Find Them: The Gumbel-Top-k Trick for Sampling Sequences
Without Replacement", ICML 2019.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.selectors.allocation import LabelAllocation
from thresher.selectors.base import RandomState, hash_seed
from thresher.selectors.labels import LabelClasses
from thresher.selectors.ranked import RankedSelector, ScoreColumn
from thresher.selectors.ranking import (
    RankKey,
    class_groups,
    descending,
    finite_values,
    float_key,
    order_bits,
)


def gumbel_noise(ids: pa.Array | pa.ChunkedArray, seed: int) -> NDArray[np.float64]:
    """Standard Gumbel noise per id, a function of the id and the seed only.

    The id's 64-bit priority gives 53 bits ``m``; ``u = (m + 0.5) / 2**53``
    lies strictly inside ``(0, 1)``, and ``-log(-log(u))`` is Gumbel(0, 1).
    """
    from thresher.keys import id_priority

    mantissa = (id_priority(ids, seed) >> np.uint64(11)).astype(np.float64)
    uniform = (mantissa + 0.5) * 2.0**-53
    return -np.log(-np.log(uniform))


class GumbelKey:
    """Rank by ``log weight + Gumbel noise``, largest first; ties by input order; classes as groups."""

    def __init__(
        self, score: str, seed: int, classes: LabelClasses | None, selector: str = "dsir"
    ) -> None:
        self.score = score
        self.seed = seed
        self.classes = classes
        self.selector = selector

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.uint64]]:
        values = finite_values(table, self.score, self.selector)
        perturbed = values + gumbel_noise(table.column("id"), self.seed)
        order = np.asarray(table.column("thresher_order").to_numpy(zero_copy_only=False), np.int64)
        return (
            class_groups(table, self.classes),
            descending(float_key(perturbed)),
            order_bits(order),
        )


class DSIRSelector(ScoreColumn, RankedSelector):
    """Importance resampling by a ``dsir`` log-weight column (see module docstring).

    Parameters
    ----------
    score : str
        Column holding each row's log importance weight (the ``dsir`` scorer's).
    by_label : bool
        Resample within each class of the ``label`` column, the budget split
        across classes by ``label_allocation``.
    label_allocation : {"proportional", "equal"}
        ``proportional`` keeps the class frequencies; ``equal`` gives every
        class the same count.
    """

    name: ClassVar[str] = "dsir"

    def __init__(
        self,
        score: str = "dsir",
        by_label: bool = False,
        label_allocation: LabelAllocation = "proportional",
    ) -> None:
        self.score = score
        self.by_label = by_label
        self.label_allocation = label_allocation

    def rank_key(self, classes: LabelClasses | None, random_state: RandomState) -> RankKey:
        return GumbelKey(self.score, hash_seed(random_state), classes, selector=self.name)
