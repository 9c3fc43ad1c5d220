"""IDEAL: the activation graph, reach on live edges, lazy greedy against plain greedy and brute force."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from thresher.io import schema as S
from thresher.selectors import make_selector
from thresher.selectors.base import SumBudget
from thresher.selectors.ideal import activation_graph, lazy_greedy, live_edges, spread


def test_activation_probabilities_are_cosines_normalised_over_each_rows_out_edges() -> None:
    # unit vectors at 0, 140, 180 and 215 degrees (no two neighbours tied); two out-edges each
    degrees = np.array([0.0, 140.0, 180.0, 215.0])
    x = np.stack([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], axis=1)
    neighbors, probabilities = activation_graph(3.0 * x.astype(np.float32), 2)  # any length
    assert neighbors.tolist() == [[1, 3], [2, 3], [3, 1], [2, 1]]

    def cos(a: float, b: float) -> float:
        return float(np.cos(np.radians(a - b)))

    expected = [
        [0.0, 0.0],  # both neighbours at negative cosine: row 0 activates nothing
        [cos(140, 180), cos(140, 215)],
        [cos(180, 215), cos(180, 140)],
        [cos(215, 180), cos(215, 140)],
    ]
    expected = [[a / (a + b), b / (a + b)] if a + b else [a, b] for a, b in expected]
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    np.testing.assert_allclose(probabilities[1:].sum(axis=1), 1.0)
    # an all-zero vector neither activates nor is activated
    zero = np.vstack([x, np.zeros((1, 2))]).astype(np.float32)
    neighbors, probabilities = activation_graph(zero, 4)
    assert probabilities[4].tolist() == [0.0] * 4
    assert np.all(probabilities[neighbors == 4] == 0.0)


def _hand_graph() -> tuple[np.ndarray, np.ndarray]:
    """0 -> 1 -> 2 -> 0 (a cycle), 2 -> 3 -> 4, 5 -> 4, 6 alone; padding edges have probability 0."""
    edges = {0: [1], 1: [2], 2: [0, 3], 3: [4], 4: [], 5: [4], 6: []}
    neighbors = np.zeros((7, 2), dtype=np.int64)
    probabilities = np.zeros((7, 2))
    for u, out in edges.items():
        neighbors[u] = [*out, u, u][:2]
        probabilities[u, : len(out)] = 1.0
    return neighbors, probabilities


def test_with_every_probability_one_the_reach_is_graph_reachability() -> None:
    neighbors, probabilities = _hand_graph()
    live = live_edges(probabilities, 4, random_state=0)
    assert live.sum() == 4 * 6  # every edge live in every sample, no padding edge
    reach = {0: 5, 1: 5, 2: 5, 3: 2, 4: 1, 5: 2, 6: 1}  # rows reachable, the seed included
    for seed, size in reach.items():
        assert spread([seed], neighbors, live) == 4 * size
    assert spread([3, 5], neighbors, live) == 4 * 3  # {3, 4, 5}: 4 counted once
    assert spread([0, 6], neighbors, live) == 4 * 6
    # greedy: the cycle first (its earliest row), then the two rows it cannot reach
    order, gains = lazy_greedy(neighbors, live, 7)
    assert order.tolist()[:3] == [0, 5, 6] and gains.tolist()[:3] == [20, 4, 4]
    assert order.tolist()[3:] == [1, 2, 3, 4] and gains.tolist()[3:] == [0, 0, 0, 0]


def _plain_greedy(neighbors: np.ndarray, live: np.ndarray, k: int) -> list[int]:
    """Greedy by recomputing the reach of S + {v} for every v at every step (ties: earlier row)."""
    chosen: list[int] = []
    rows = range(neighbors.shape[0])
    for _ in range(k):
        rest = [v for v in rows if v not in chosen]
        chosen.append(max(rest, key=lambda v: (spread([*chosen, v], neighbors, live), -v)))
    return chosen


def test_lazy_greedy_equals_plain_greedy_and_the_best_pair() -> None:
    x = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    neighbors, probabilities = activation_graph(x, 3)
    live = live_edges(probabilities, 10, random_state=0)
    order, gains = lazy_greedy(neighbors, live, 12)
    assert order.tolist() == _plain_greedy(neighbors, live, 12)
    assert sorted(order.tolist()) == list(range(12))
    assert np.all(np.diff(gains) <= 0)  # submodular on the fixed samples: gains never grow
    assert int(gains.sum()) == spread(range(12), neighbors, live) == 12 * 10
    # brute force over every pair, on the same samples: the best pair is unique, greedy finds it
    pairs = sorted(
        (spread(pair, neighbors, live), pair) for pair in itertools.combinations(range(12), 2)
    )
    (best, pair), runner_up = pairs[-1], pairs[-2][0]
    assert best > runner_up
    assert sorted(order[:2].tolist()) == list(pair) and int(gains[:2].sum()) == best


def _two_clusters(size: int = 15) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(0)
    first = np.array([1.0, 0.0, 0.0]) + 0.1 * rng.normal(size=(size, 3))
    second = np.array([0.0, 1.0, 0.0]) + 0.1 * rng.normal(size=(size, 3))
    embeddings = np.vstack([first, second]).astype(np.float32)
    return pa.table({"id": [f"r{i}" for i in range(2 * size)]}), embeddings


def test_two_separated_clusters_of_equal_size_get_one_pick_each() -> None:
    scores, embeddings = _two_clusters()
    ideal = make_selector("ideal", {"n_neighbors": 5})
    for seed in range(3):
        picked = ideal.select(scores, embeddings, 2, random_state=seed)
        assert (picked.indices < 15).sum() == 1, (seed, picked.indices)
        assert picked.details["influence"] > 2.0  # each pick reaches more than itself


def test_same_seed_same_rows_and_the_seed_draws_the_cascades() -> None:
    scores, embeddings = _two_clusters(40)
    ideal = make_selector("ideal", {"n_neighbors": 6, "n_simulations": 4})
    first = ideal.select(scores, embeddings, 10, random_state=3)
    again = ideal.select(scores, embeddings, 10, random_state=np.random.default_rng(3))
    assert first.indices.tolist() == again.indices.tolist()
    assert first.details == again.details
    picks = {tuple(ideal.select(scores, embeddings, 10, random_state=s).indices) for s in range(4)}
    assert len(picks) > 1  # other coins, other cascades


def test_a_token_budget_takes_the_pick_order_until_the_next_row_would_exceed() -> None:
    scores, embeddings = _two_clusters(20)
    sizes = np.arange(40) % 7 + 1
    scores = scores.append_column("token_count", pa.array(sizes, pa.int64()))
    neighbors, probabilities = activation_graph(embeddings, 4)
    order, _ = lazy_greedy(neighbors, live_edges(probabilities, 10, 5), 40)
    fits = np.cumsum(sizes[order]) <= 30
    expected = order[: int(np.argmin(fits))]  # the first pick that would exceed stops it
    picked = make_selector("ideal", {"n_neighbors": 4}).select(
        scores, embeddings, SumBudget("token_count", 30), random_state=5
    )
    assert picked.indices.tolist() == sorted(expected.tolist())


def test_same_rows_whatever_the_faiss_thread_count() -> None:
    import faiss

    rng = np.random.default_rng(2)
    n = 1500  # n^2 d above the single-thread threshold: faiss runs on every thread
    embeddings = (rng.normal(size=(n, 16)) + rng.integers(0, 5, size=(n, 1))).astype(np.float32)
    scores = pa.table({"id": [f"r{i}" for i in range(n)]})
    ideal = make_selector("ideal", {"n_neighbors": 8})
    before = faiss.omp_get_max_threads()
    results = []
    try:
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            results.append(ideal.select(scores, embeddings, 0.2, random_state=0).indices)
    finally:
        faiss.omp_set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.spark
def test_partitioned_ideal_selects_the_same_rows_on_spark_and_locally(spark_engine: Any) -> None:
    from tests.unit.test_partitioned_selection import _blobs, _job, partitioned

    table, embeddings = _blobs(5)
    table = table.set_column(
        table.schema.get_field_index("embedding"),
        "embedding",
        pa.array(list(embeddings), pa.list_(pa.float32())),
    )
    job = _job("ideal", {"n_neighbors": 6}, 150, 4)
    local = partitioned(job, table)
    spark = partitioned(job, table, spark_engine.from_table(table))
    assert local["indices"].tolist() == spark["indices"].tolist()
    assert len(local["indices"]) == 150
    assert local["details"]["partitions"] == 4
    assert S.ORDER in table.column_names
