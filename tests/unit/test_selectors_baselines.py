"""Known answers for budget allocation, top-k / bottom-k and class-balanced random selection."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.selectors import make_selector
from thresher.selectors.allocation import allocate, class_budgets


def test_allocate_largest_remainder_known_answer() -> None:
    # shares of 10 by 5:3:2 are exact; of 7 they are 3.5, 2.1, 1.4 -> 3, 2, 1 + one by remainder
    assert allocate(10, np.array([5.0, 3.0, 2.0]), np.array([10, 10, 10])).tolist() == [5, 3, 2]
    assert allocate(7, np.array([5.0, 3.0, 2.0]), np.array([10, 10, 10])).tolist() == [4, 2, 1]
    # ties in the remainder go to the earlier group
    assert allocate(1, np.array([1.0, 1.0]), np.array([5, 5])).tolist() == [1, 0]


def test_allocate_caps_and_redistributes() -> None:
    # group 0 wants 9 of 10 but holds 2: its rest goes to the others in proportion
    counts = allocate(10, np.array([9.0, 0.5, 0.5]), np.array([2, 100, 100]))
    assert counts.tolist() == [2, 4, 4]
    # zero-weight groups are used only once the others are full
    assert allocate(5, np.array([1.0, 0.0]), np.array([3, 10])).tolist() == [3, 2]
    with pytest.raises(ValueError, match="cannot allocate"):
        allocate(11, np.ones(2), np.array([5, 5]))


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=8),
    capacity=st.lists(st.integers(0, 30), min_size=8, max_size=8),
    fraction=st.floats(0.0, 1.0),
)
def test_allocate_properties(weights: list[float], capacity: list[int], fraction: float) -> None:
    cap = np.array(capacity[: len(weights)])
    total = int(fraction * cap.sum())
    counts = allocate(total, np.array(weights), cap)
    assert counts.sum() == total
    assert np.all(counts >= 0) and np.all(counts <= cap)


def test_class_budgets_proportional_and_equal() -> None:
    sizes = np.array([60, 30, 10])
    assert class_budgets(sizes, 10, "proportional").tolist() == [6, 3, 1]
    assert class_budgets(sizes, 30, "equal").tolist() == [10, 10, 10]
    # class 2 holds only 10: its rest goes equally to the others
    assert class_budgets(sizes, 50, "equal").tolist() == [20, 20, 10]


TABLE = pa.table(
    {
        "s": [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0, 9.0],
        "label": ["a", "a", "a", "a", "a", "b", "b", "b", "b", "b", "a"],
    }
)


def test_topk_and_bottomk_break_ties_by_position() -> None:
    top = make_selector("topk", {"score": "s"}).select(TABLE, None, 3)
    assert top.indices.tolist() == [2, 6, 10]  # 9 (row 2), 9 (row 10), 8 (row 6)
    top2 = make_selector("topk", {"score": "s"}).select(TABLE, None, 1)
    assert top2.indices.tolist() == [2]  # of the two 9s the earlier row wins
    bottom = make_selector("bottomk", {"score": "s"}).select(TABLE, None, 2)
    assert bottom.indices.tolist() == [1, 9]


def test_topk_by_label_keeps_the_best_of_each_class() -> None:
    # 6 rows of class a, 5 of class b: 4 rows split 2 + 2 (largest remainder, a first on ties)
    selection = make_selector("topk", {"score": "s", "by_label": True}).select(TABLE, None, 4)
    assert selection.indices.tolist() == [2, 6, 8, 10]  # a: 9, 9; b: 8, 6
    equal = make_selector(
        "bottomk", {"score": "s", "by_label": True, "label_allocation": "equal"}
    ).select(TABLE, None, 2)
    assert equal.indices.tolist() == [1, 9]  # the lowest of a (1.0) and of b (0.0)
    with pytest.raises(ValueError, match="label"):
        make_selector("topk", {"score": "s", "by_label": True}).select(
            TABLE.drop_columns(["label"]), None, 2
        )


def test_random_by_label_is_stratified_and_uniform_within_class() -> None:
    labels = np.array(["x"] * 80 + ["y"] * 20)
    table = pa.table({"label": labels})
    selector = make_selector("random", {"by_label": True})
    counts = np.zeros(100)
    for seed in range(400):
        selection = selector.select(table, None, 10, random_state=seed)
        chosen = labels[selection.indices]
        assert (chosen == "x").sum() == 8 and (chosen == "y").sum() == 2
        counts[selection.indices] += 1
    # each row is kept with probability 0.1: 40 of 400 draws, sd about 6
    assert np.all(np.abs(counts - 40) < 30)
    assert abs(counts[:80].mean() - 40) < 3 and abs(counts[80:].mean() - 40) < 5


@pytest.mark.parametrize(
    ("name", "params", "budget"),
    [
        ("topk", {"score": "s", "by_label": True}, 4),
        ("ccs", {"score": "s", "beta": 0.1}, 4),
        ("dpp", {"score": "s", "device": "cpu", "ridge": 0.0}, 6),
        ("kmeans_sensitivity", {"n_clusters": 3}, 4),
        ("prototypes", {"n_clusters": 3}, 4),
        ("semdedup", {"target_keep": 0.5, "n_clusters": 2}, None),
        ("semdedup_rank", {"n_clusters": 2}, 4),
    ],
)
def test_details_are_strict_json(name: str, params: dict[str, object], budget: int | None) -> None:
    import json

    embeddings = np.random.default_rng(0).normal(size=(TABLE.num_rows, 3)).astype(np.float32)
    selection = make_selector(name, params).select(TABLE, embeddings, budget, random_state=0)
    json.dumps(selection.details, allow_nan=False)
