"""D2 Pruning: message passing on a kNN graph to balance diversity and difficulty.

1. **Hard cutoff** (optional, as in CCS): the ``beta`` fraction of hardest
   rows is never selected (likely mislabelled at high pruning rates).
2. **Graph**: each remaining row's ``n_neighbors`` nearest neighbours in
   the (L2-normalised) embedding space, found exactly with faiss; the edge
   from ``i`` to neighbour ``j`` at Euclidean distance ``d_ij`` has weight
   ``exp(-gamma d_ij)``.
3. **Forward message passing** (one round): every row's score becomes its
   own difficulty plus the weighted difficulties of its neighbours,
   ``s_i = u_i + sum_j exp(-gamma_forward d_ij) u_j``. A hard row in a dense
   hard region scores highest; an isolated hard row or an easy dense region
   less.
4. **Reverse message passing** while selecting: repeatedly take the
   unselected row of highest score ``s_i`` (ties: earlier row), then lower
   each of its neighbours' scores by ``exp(-gamma_reverse d_ij) s_i``, so
   that the next pick tends to lie elsewhere; stop at the budget. A sum
   budget (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens) takes
   rows in this pick order and stops before the first row that would make
   the sum exceed the total.

Difficulty ``u`` is the ``score`` column oriented by ``hard`` (the harder,
the larger) and min-max scaled to ``[0, 1]`` over the rows that survive
the cutoff, so that the balance between a row's own difficulty and its
neighbours' does not depend on the score's units (an AUM or a margin can
be negative).

Determinism: neighbours are searched in float32 by faiss with a few spare
candidates, and then re-ranked by float64 distances recomputed row by row
(ties by row position); a row whose candidates might miss a neighbour
(float32's error bound; duplicates, near-ties) is searched again with more,
so the result does not depend on faiss's thread count or on how rows were
batched. Nothing is random: ``random_state``
is accepted for the common interface only.

Cost: the exact kNN search is O(n^2 d) (run it per k-means partition for
large pools: ``partitions`` in the selector step), the selection
O((n + budget k) log n).

References
----------
Maharana, Yadav and Bansal, "D2 Pruning: Message Passing for Balancing
Diversity and Difficulty in Data Pruning", ICLR 2024.
"""

from __future__ import annotations

import heapq
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Bool, Constraints, Integral, Interval, Options, Real
from thresher.selectors.base import (
    Budget,
    RandomState,
    Selection,
    Selector,
    check_embeddings,
    fitting_prefix,
    score_values,
    sum_limit,
)
from thresher.selectors.kmeans import faiss_threads, normalize_rows
from thresher.selectors.partition import Partitionable
from thresher.selectors.ranked import ScoreColumn

End = Literal["high", "low"]
#: Extra neighbour candidates fetched in float32 before the float64 re-ranking.
_SPARE = 4
_CHUNK_ROWS = 4096


def knn_graph(
    matrix: NDArray[np.floating[Any]], n_neighbors: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Each row's nearest other rows and their Euclidean distances, nearest first.

    faiss fetches a few more candidates than asked in float32; they are
    re-ranked by float64 distances recomputed row by row (ties by row
    position). A row keeps its neighbours only when every row faiss did not
    fetch is provably farther than its last neighbour (float32's error
    bound, as in :func:`~thresher.selectors.kmeans.nearest_centroid`);
    otherwise it is searched again with four times the candidates, up to
    all rows. So the graph does not depend on faiss's threads or batches.

    Parameters
    ----------
    matrix : ndarray, shape (n, d)
        Row vectors.
    n_neighbors : int
        Neighbours per row (capped at ``n - 1``).

    Returns
    -------
    neighbors : ndarray of int64, shape (n, k)
    distances : ndarray of float64, shape (n, k)
        Recomputed in float64; ties are ordered by row position.
    """
    import faiss

    x = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = x.shape
    k = min(int(n_neighbors), n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0))
    index = faiss.IndexFlatL2(d)
    index.add(x)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    # faiss's |x|^2 + |y|^2 - 2 x.y errs by at most (gamma_d + 2u)(|x| + |y|)^2; twice that
    margin = 2.0 * (1.1 * d + 2.0) * 2.0**-24 * (norms + norms.max()) ** 2 + d * 2.0**-120
    neighbors = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float64)
    pending = np.arange(n)
    fetch = min(n, k + 1 + _SPARE)
    while pending.size:
        with faiss_threads(float(pending.size) * n * d):
            fetched, candidates = index.search(x[pending], fetch)
        unsure = []
        for start in range(0, pending.size, _CHUNK_ROWS):
            part = slice(start, start + _CHUNK_ROWS)
            rows = pending[part]
            found, squared = _rerank(x, rows, candidates[part].astype(np.int64), k)
            neighbors[rows] = found
            distances[rows] = np.sqrt(squared)
            if fetch < n:  # rows faiss left out are farther than the k-th neighbour by the margin
                last = fetched[part, -1].astype(np.float64)
                unsure.append(rows[squared[:, -1] >= last - margin[rows]])
        pending = np.concatenate(unsure) if unsure else pending[:0]
        fetch = min(n, 4 * fetch)
    return neighbors, distances


def _rerank(
    x: NDArray[np.float32], rows: NDArray[np.int64], found: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The k nearest of each row's candidates (itself excluded) by float64 squared distance."""
    found = np.where(found < 0, rows[:, None], found)  # faiss pads with -1
    diff = x[found].astype(np.float64) - x[rows].astype(np.float64)[:, None, :]
    sq = np.einsum("ijk,ijk->ij", diff, diff)
    sq[found == rows[:, None]] = np.inf  # never a row's own neighbour
    order = np.lexsort((found, sq), axis=1)
    return (
        np.take_along_axis(found, order, axis=1)[:, :k],
        np.take_along_axis(sq, order, axis=1)[:, :k],
    )


def forward_pass(
    difficulty: NDArray[np.float64],
    neighbors: NDArray[np.int64],
    distances: NDArray[np.float64],
    gamma: float,
) -> NDArray[np.float64]:
    """One round of forward message passing: ``u_i + sum_j exp(-gamma d_ij) u_j``."""
    if neighbors.shape[1] == 0:
        return difficulty.astype(np.float64).copy()
    messages = np.exp(-gamma * distances) * difficulty[neighbors]
    return difficulty + messages.sum(axis=1)


def reverse_selection(
    scores: NDArray[np.float64],
    neighbors: NDArray[np.int64],
    distances: NDArray[np.float64],
    gamma: float,
    k: int,
) -> NDArray[np.int64]:
    """Select ``k`` rows by reverse message passing (see module docstring); rows in pick order.

    After row ``i`` is taken, each neighbour ``j`` of ``i`` that is still
    unselected loses ``exp(-gamma d_ij) s_i`` (``s_i``: ``i``'s score when
    taken). A lazy max-heap keeps the pick ``O(log n)``.
    """
    current = np.asarray(scores, dtype=np.float64).copy()
    n = current.size
    k = min(int(k), n)
    heap = [(-float(value), i) for i, value in enumerate(current)]
    heapq.heapify(heap)
    selected = np.zeros(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    weights = np.exp(-gamma * distances)
    taken = 0
    while taken < k:
        negative, i = heapq.heappop(heap)
        if selected[i] or -negative != current[i]:
            continue  # stale entry: the row was taken or its score lowered since
        selected[i] = True
        order[taken] = i
        taken += 1
        for j, weight in zip(neighbors[i], weights[i], strict=True):
            if not selected[j]:
                current[j] -= weight * current[i]
                heapq.heappush(heap, (-float(current[j]), int(j)))
    return order


class D2Selector(Partitionable, ScoreColumn, Selector):
    """D2 Pruning (see module docstring).

    Parameters
    ----------
    score : str
        Difficulty column (e.g. ``el2n``, ``aum``).
    hard : {"high", "low"}
        Which end of the score is hard (``low`` for AUM or margins).
    n_neighbors : int
        Neighbours per row in the kNN graph (the paper: 5 to 20).
    gamma_forward, gamma_reverse : float
        Edge weight ``exp(-gamma d)`` in the forward and reverse passes
        (``d`` in ``[0, 2]`` on unit vectors). The paper tunes both; a
        larger ``gamma_reverse`` spreads the picks less.
    beta : float
        Fraction of the hardest rows excluded first, in ``[0, 1)``.
    normalize : bool
        Scale embeddings to unit L2 norm first (cosine geometry).
    """

    name: ClassVar[str] = "d2"
    requires_embeddings: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "hard": [Options("high", "low")],
        "n_neighbors": [Interval(Integral, 1, None)],
        "gamma_forward": [Interval(Real, 0, None)],
        "gamma_reverse": [Interval(Real, 0, None)],
        "beta": [Interval(Real, 0, 1, closed="left")],
        "normalize": [Bool()],
    }

    def __init__(
        self,
        score: str = "el2n",
        hard: End = "high",
        n_neighbors: int = 10,
        gamma_forward: float = 1.0,
        gamma_reverse: float = 1.0,
        beta: float = 0.0,
        normalize: bool = True,
    ) -> None:
        self.score = score
        self.hard = hard
        self.n_neighbors = n_neighbors
        self.gamma_forward = gamma_forward
        self.gamma_reverse = gamma_reverse
        self.beta = beta
        self.normalize = normalize

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        self.validate_params()
        n = scores.num_rows
        values = score_values(scores, self.score, selector=self.name)
        matrix = check_embeddings(embeddings, n, selector=self.name)
        k, sizes = sum_limit(budget, scores, selector=self.name)
        details: dict[str, Any] = {
            "n_neighbors": int(self.n_neighbors),
            "gamma_forward": float(self.gamma_forward),
            "gamma_reverse": float(self.gamma_reverse),
            "beta": float(self.beta),
        }
        if n == 0 or k == 0:
            return Selection.from_indices([], details=details)
        hardness = values if self.hard == "high" else -values
        # the hardest beta fraction (ties: later rows count as harder) is never selected
        n_cut = min(int(np.floor(self.beta * n)), n - k)
        by_hardness = np.lexsort((-np.arange(n), -hardness))
        survivors = np.sort(by_hardness[n_cut:])
        details["cut"] = int(n_cut)
        x = normalize_rows(matrix[survivors]) if self.normalize else matrix[survivors]
        neighbors, distances = knn_graph(x, self.n_neighbors)
        difficulty = _unit_interval(hardness[survivors])
        forward = forward_pass(difficulty, neighbors, distances, float(self.gamma_forward))
        picked = reverse_selection(forward, neighbors, distances, float(self.gamma_reverse), k)
        details["forward_min"] = float(forward.min())
        details["forward_max"] = float(forward.max())
        return Selection.from_indices(
            fitting_prefix(survivors[picked], sizes, budget), details=details
        )


def _unit_interval(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Min-max scaled to ``[0, 1]``; all equal: all ones (every row equally hard)."""
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.ones_like(values, dtype=np.float64)
    return (values - low) / (high - low)
