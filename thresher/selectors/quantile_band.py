"""Keep a band of the score distribution: lowest, middle or highest rows.

References
----------
Ankner et al., "Perplexed by Perplexity: Perplexity-Based Data Pruning With
Small Reference Models", 2024 (low, medium and high perplexity bands).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher.selectors.base import (
    Budget,
    RandomState,
    Selection,
    Selector,
    resolve_budget,
    score_values,
)

Band = Literal["low", "medium", "high"]


class QuantileBandSelector(Selector):
    """Keep the budget's rows from the low end, the middle or the high end of a score.

    ``medium`` keeps the rows centred on the median. Ties are broken by row
    position, so the result is deterministic.

    Parameters
    ----------
    score : str
        Score column to rank by.
    band : {"low", "medium", "high"}
        Which part of the ranking to keep.
    """

    name: ClassVar[str] = "quantile_band"

    def __init__(self, score: str, band: Band = "medium") -> None:
        self.score = score
        self.band = band

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        if self.band not in ("low", "medium", "high"):
            raise ValueError(f"quantile_band: band must be low, medium or high, got {self.band!r}")
        values = score_values(scores, self.score, selector=self.name)
        k = resolve_budget(budget, values.size, selector=self.name)
        order = np.argsort(values, kind="stable")
        start = {"low": 0, "medium": (values.size - k) // 2, "high": values.size - k}[self.band]
        kept = order[start : start + k]
        bounds = (float(values[kept].min()), float(values[kept].max())) if k else (None, None)
        return Selection.from_indices(
            kept, details={"score": self.score, "band": self.band, "kept_range": bounds}
        )
