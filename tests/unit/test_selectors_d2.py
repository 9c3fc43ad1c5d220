"""D2 Pruning: the kNN graph, both message-passing steps by hand, coverage and determinism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from thresher.io import schema as S
from thresher.selectors import make_selector
from thresher.selectors.d2 import forward_pass, knn_graph, reverse_selection

# Five points on a line: 0, 1, 3, 6, 10 (distances known by hand).
LINE = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]], dtype=np.float32)


def test_knn_graph_on_a_line() -> None:
    neighbors, distances = knn_graph(LINE, 2)
    assert neighbors.tolist() == [[1, 2], [0, 2], [1, 0], [2, 4], [3, 2]]
    np.testing.assert_allclose(distances, [[1, 3], [1, 2], [2, 3], [3, 4], [4, 7]])
    # ties go to the earlier row: 1 is equidistant from 0 and 2 on a regular line
    tied, _ = knn_graph(np.array([[0.0], [1.0], [2.0]], dtype=np.float32), 1)
    assert tied[1].tolist() == [0]
    # never a row's own neighbour, and k is capped at n - 1
    many, _ = knn_graph(LINE, 10)
    assert many.shape == (5, 4) and not (many == np.arange(5)[:, None]).any()


def test_forward_message_passing_by_hand() -> None:
    neighbors, distances = knn_graph(LINE, 2)
    difficulty = np.array([1.0, 0.5, 0.0, 1.0, 0.25])
    gamma = 0.5
    got = forward_pass(difficulty, neighbors, distances, gamma)
    e = np.exp
    expected = [
        1.0 + e(-0.5 * 1) * 0.5 + e(-0.5 * 3) * 0.0,  # row 0: neighbours 1, 2
        0.5 + e(-0.5 * 1) * 1.0 + e(-0.5 * 2) * 0.0,  # row 1: neighbours 0, 2
        0.0 + e(-0.5 * 2) * 0.5 + e(-0.5 * 3) * 1.0,  # row 2: neighbours 1, 0
        1.0 + e(-0.5 * 3) * 0.0 + e(-0.5 * 4) * 0.25,  # row 3: neighbours 2, 4
        0.25 + e(-0.5 * 4) * 1.0 + e(-0.5 * 7) * 0.0,  # row 4: neighbours 3, 2
    ]
    np.testing.assert_allclose(got, expected)


def test_reverse_message_passing_by_hand() -> None:
    neighbors, distances = knn_graph(LINE, 2)
    scores = np.array([1.3, 1.2, 0.9, 1.0, 0.5])
    gamma = 1.0
    # pick 0 (1.3): row 1 loses e^-1 * 1.3 -> 0.7218, row 2 loses e^-3 * 1.3 -> 0.8353
    # next best is row 3 (1.0): row 2 loses e^-3 * 1.0 -> 0.7855, row 4 loses e^-4 -> 0.4817
    # then row 2 (0.7855) beats row 1 (0.7218)
    assert reverse_selection(scores, neighbors, distances, gamma, 3).tolist() == [0, 3, 2]
    # without the reverse pass (gamma -> infinity) it is a plain top-k by score
    assert reverse_selection(scores, neighbors, distances, 1e9, 3).tolist() == [0, 1, 3]


def _two_clusters(size: int = 15) -> tuple[pa.Table, np.ndarray]:
    """A tight and a loose cluster of ``size`` rows each, every row equally hard."""
    rng = np.random.default_rng(0)
    tight = np.array([1.0, 0.0, 0.0]) + 0.02 * rng.normal(size=(size, 3))
    loose = np.array([0.0, 1.0, 0.0]) + 0.15 * rng.normal(size=(size, 3))
    embeddings = np.vstack([tight, loose]).astype(np.float32)
    n = 2 * size
    scores = pa.table({"id": [f"r{i}" for i in range(n)], "el2n": np.full(n, 0.5)})
    return scores, embeddings


def test_two_clusters_of_equal_difficulty_are_both_covered() -> None:
    scores, embeddings = _two_clusters()
    d2 = make_selector("d2", {"score": "el2n", "n_neighbors": 14})
    loose = [
        int((d2.select(scores, embeddings, k, random_state=0).indices >= 15).sum()) for k in (2, 10)
    ]
    assert loose[0] == 1  # one row of each cluster
    assert 3 <= loose[1] <= 7, loose
    # the forward pass alone ranks the tight cluster first: its top 10 lie there entirely
    unit = embeddings / np.linalg.norm(embeddings, axis=1)[:, None]
    neighbors, distances = knn_graph(unit, 14)
    forward = forward_pass(np.ones(30), neighbors, distances, 1.0)
    assert (np.argsort(-forward, kind="stable")[:10] < 15).all()


def test_hard_cutoff_and_orientation() -> None:
    n = 40
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(n, 4)).astype(np.float32)
    scores = pa.table({"id": [f"r{i}" for i in range(n)], "aum": np.arange(n, dtype=float)})
    # low AUM is hard: with beta 0.25 the ten lowest rows are never selected
    picked = make_selector("d2", {"score": "aum", "hard": "low", "beta": 0.25}).select(
        scores, embeddings, 20, random_state=0
    )
    assert picked.indices.min() >= 10 and len(picked) == 20
    # the cutoff never leaves fewer rows than the budget
    every = make_selector("d2", {"score": "aum", "beta": 0.9}).select(
        scores, embeddings, 30, random_state=0
    )
    assert len(every) == 30


def test_same_ids_whatever_the_faiss_thread_count() -> None:
    import faiss

    rng = np.random.default_rng(2)
    n = 3000  # n^2 d above the single-thread threshold: faiss runs on every thread
    embeddings = (rng.normal(size=(n, 16)) + rng.integers(0, 5, size=(n, 1))).astype(np.float32)
    scores = pa.table({"id": [f"r{i}" for i in range(n)], "el2n": rng.random(n)})
    d2 = make_selector("d2", {"score": "el2n", "n_neighbors": 8})
    before = faiss.omp_get_max_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            faiss.omp_set_num_threads(threads)
            results.append(d2.select(scores, embeddings, 0.3, random_state=0).indices)
    finally:
        faiss.omp_set_num_threads(before)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


@pytest.mark.spark
def test_partitioned_d2_selects_the_same_rows_on_spark_and_locally(spark_engine: Any) -> None:
    from tests.unit.test_partitioned_selection import _blobs, _job, partitioned

    table, embeddings = _blobs(5)
    table = table.set_column(
        table.schema.get_field_index("embedding"),
        "embedding",
        pa.array(list(embeddings), pa.list_(pa.float32())),
    )
    job = _job("d2", {"score": "word_count", "n_neighbors": 6}, 150, 4)
    local = partitioned(job, table)
    spark = partitioned(job, table, spark_engine.from_table(table))
    assert local["indices"].tolist() == spark["indices"].tolist()
    assert len(local["indices"]) == 150
    assert local["details"]["partitions"] == 4
    assert S.ORDER in table.column_names
