"""Keep rows whose score lies in a closed range: the classic heuristic filter."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.selectors.base import Budget, RandomState, Selection, Selector, score_values


class ThresholdSelector(Selector):
    """Keep rows with ``min <= score <= max`` (either bound may be omitted).

    Parameters
    ----------
    score : str
        Score column to test.
    min, max : float or None
        Inclusive bounds; ``None`` leaves that side open.
    """

    name: ClassVar[str] = "threshold"
    requires_budget: ClassVar[bool] = False

    def __init__(self, score: str, min: float | None = None, max: float | None = None) -> None:
        self.score = score
        self.min = min
        self.max = max

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        if budget is not None:
            raise ValueError("threshold keeps every row in range; leave its budget empty")
        if self.min is None and self.max is None:
            raise ValueError("threshold: give `min`, `max` or both")
        values = score_values(scores, self.score, selector=self.name)
        keep = np.ones(values.size, dtype=bool)
        if self.min is not None:
            keep &= values >= self.min
        if self.max is not None:
            keep &= values <= self.max
        return Selection.from_indices(
            np.flatnonzero(keep), details={"score": self.score, "min": self.min, "max": self.max}
        )
