"""Known answers for the day-one selectors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from thresher.selectors import make_selector
from thresher.selectors.base import resolve_budget

SCORES = pa.table(
    {"id": list("abcdefghij"), "s": [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0]}
)


@pytest.mark.parametrize(
    ("band", "expected_values"),
    [
        ("low", [0.0, 1.0, 2.0, 3.0]),
        ("medium", [3.0, 4.0, 5.0, 6.0]),
        ("high", [6.0, 7.0, 8.0, 9.0]),
    ],
)
def test_quantile_band(band: str, expected_values: list[float]) -> None:
    selection = make_selector("quantile_band", {"score": "s", "band": band}).select(SCORES, None, 4)
    kept = sorted(SCORES.column("s").to_numpy()[selection.indices])
    assert kept == expected_values


def test_quantile_band_breaks_ties_by_position() -> None:
    table = pa.table({"s": [1.0, 1.0, 1.0, 1.0]})
    selection = make_selector("quantile_band", {"score": "s", "band": "low"}).select(table, None, 2)
    assert selection.indices.tolist() == [0, 1]


def test_threshold_bounds_are_inclusive() -> None:
    selection = make_selector("threshold", {"score": "s", "min": 3, "max": 6}).select(SCORES, None)
    assert sorted(SCORES.column("s").to_numpy()[selection.indices]) == [3.0, 4.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="leave its budget empty"):
        make_selector("threshold", {"score": "s", "min": 3}).select(SCORES, None, 2)


def test_random_is_uniform() -> None:
    counts = np.zeros(10)
    for seed in range(2000):
        counts[make_selector("random").select(SCORES, None, 3, random_state=seed).indices] += 1
    # Each row is kept with probability 0.3: 600 of 2000 draws, sd about 20.
    assert np.all(np.abs(counts - 600) < 100)


def test_resolve_budget_rounds_half_up_and_caps() -> None:
    assert resolve_budget(0.5, 5) == 3
    assert resolve_budget(0.3, 10) == 3
    assert resolve_budget(1.0, 7) == 7
    assert resolve_budget(12, 7) == 7
    with pytest.raises(ValueError):
        resolve_budget(None, 3)
