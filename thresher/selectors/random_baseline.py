"""Uniform random selection: the baseline every comparison must include."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.selectors.base import (
    Budget,
    RandomState,
    Selection,
    Selector,
    check_random_state,
    resolve_budget,
)


class RandomSelector(Selector):
    """Keep a uniformly random subset of exactly the budget's size."""

    name: ClassVar[str] = "random"

    def __init__(self) -> None:
        pass

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
        return Selection.from_indices(rng.choice(n_rows, size=k, replace=False))
