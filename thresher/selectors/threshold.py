"""Keep rows whose score lies in a closed range: the classic heuristic filter."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Interval, Real
from thresher.frame import Frame
from thresher.selectors.base import Budget, FrameSelector, Marks, RandomState
from thresher.selectors.ranked import ScoreColumn
from thresher.selectors.ranking import finite_values


class ThresholdSelector(ScoreColumn, FrameSelector):
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

    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "min": [Interval(Real, None, None), None],
        "max": [Interval(Real, None, None), None],
    }

    def __init__(self, score: str, min: float | None = None, max: float | None = None) -> None:
        self.score = score
        self.min = min
        self.max = max

    def _check_together(self) -> None:
        if self.min is None and self.max is None:
            raise ValueError("threshold: give `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"threshold: min ({self.min}) is above max ({self.max})")

    def select_frame(
        self, rows: Frame, budget: Budget | None = None, *, random_state: RandomState = None
    ) -> Marks:
        if budget is not None:
            raise ValueError("threshold keeps every row in range; leave its budget empty")
        self.validate_params()
        return _RangeMarks(self.score, self.min, self.max)


class _RangeMarks(Marks):
    def __init__(self, score: str, low: float | None, high: float | None) -> None:
        self.score = score
        self.low = low
        self.high = high
        self.details: dict[str, Any] = {"score": score, "min": low, "max": high}

    def __call__(
        self, table: pa.Table
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.int64]]:
        values = finite_values(table, self.score, "threshold")
        keep = np.ones(values.size, dtype=bool)
        if self.low is not None:
            keep &= values >= self.low
        if self.high is not None:
            keep &= values <= self.high
        return keep, np.ones(values.size), np.full(values.size, -1, dtype=np.int64)
