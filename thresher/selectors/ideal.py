"""IDEAL: the rows of greatest influence in a diffusion over a kNN graph of the embeddings.

1. **Graph**: every row ``u`` has a directed edge to each of its
   ``n_neighbors`` nearest other rows ``v`` in the (L2-normalised)
   embedding space, found exactly and deterministically by
   :func:`~thresher.selectors.d2.knn_graph`. The edge's activation
   probability is its cosine similarity normalised over ``u``'s out-edges,
   ``p_uv = cos(u, v) / sum_w cos(u, w)``, so a row's out-edges sum to one.
   A negative similarity counts as zero (the paper's embeddings never give
   one among nearest neighbours), and so does any similarity of an all-zero
   vector; a row whose neighbours are all at zero or negative similarity
   activates none of them.
2. **Influence** of a set ``S``: the expected number of rows an independent
   cascade seeded at ``S`` activates (``S`` included), where each newly
   activated row ``u`` gets one chance to activate each out-neighbour ``v``,
   with probability ``p_uv``. It is estimated on ``n_simulations``
   *live-edge* samples: in each, every edge is live with its probability,
   one coin per edge drawn once from ``random_state``, and the cascade from
   ``S`` reaches exactly the rows reachable from ``S`` along live edges.
   Every candidate set is measured on the same samples (common random
   numbers), so the estimate is a coverage function: monotone and
   submodular, and its gains are whole counts, compared exactly.
3. **Greedy** selection: repeatedly take the row whose addition reaches the
   most new rows (summed over the samples; ties: earlier row), up to the
   budget. Lazy evaluation (CELF: a priority queue of gains computed at an
   earlier step, which can only have shrunk since) re-evaluates a row only
   when its stale gain still leads the queue; it picks exactly the rows of
   plain greedy, ties included. Once every sample is fully reached, the
   remaining picks follow row order. A sum budget
   (:class:`~thresher.selectors.base.SumBudget`, e.g. tokens) takes rows in
   this pick order and stops before the first row that would make the sum
   exceed the total.

The authors' code starts from the row of largest out-degree (on a kNN graph
every row has ``k``: the first row) and measures each candidate on fresh
random cascades; here every pick, the first included, is greedy on one
fixed set of samples, which is what makes the selection reproducible and
the lazy evaluation exact.

Determinism: the graph does not depend on faiss's thread count or batches
(see :mod:`thresher.selectors.d2`), the coins come from ``random_state``
alone, and the greedy step compares integers.

Cost: the exact kNN search is O(n^2 d) (run it per k-means partition for
large pools: ``partitions`` in the selector step); the samples take
``n_simulations * n * n_neighbors`` bytes; the first greedy step measures
every row's reach on every sample, later steps few rows each.

References
----------
Zhang, Xia, Wang, Chen, Liu, Wu and Liu, "IDEAL: Influence-Driven
Selective Annotations Empower In-Context Learners in Large Language
Models", ICLR 2024.
Kempe, Kleinberg and Tardos, "Maximizing the Spread of Influence through a
Social Network", KDD 2003.
Leskovec, Krause, Guestrin, Faloutsos, VanBriesen and Glance,
"Cost-effective Outbreak Detection in Networks", KDD 2007 (CELF).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, ClassVar

import numba as nb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Integral, Interval
from thresher.selectors.base import (
    Budget,
    RandomState,
    Selection,
    Selector,
    check_embeddings,
    check_random_state,
    fitting_prefix,
    sum_limit,
)
from thresher.selectors.d2 import knn_graph
from thresher.selectors.kmeans import normalize_rows
from thresher.selectors.partition import Partitionable

_CHUNK_ROWS = 4096


def activation_graph(
    matrix: NDArray[np.floating[Any]], n_neighbors: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Each row's nearest other rows and the probability it activates each of them.

    Parameters
    ----------
    matrix : ndarray, shape (n, d)
        Row vectors (scaled to unit norm here; an all-zero row has cosine 0
        with every row).
    n_neighbors : int
        Out-edges per row (capped at ``n - 1``).

    Returns
    -------
    neighbors : ndarray of int64, shape (n, k)
        Nearest first, ties by row position.
    probabilities : ndarray of float64, shape (n, k)
        Cosine similarity (negative as zero) over the row's sum of them; a
        row's probabilities sum to one, or are all zero.
    """
    x = normalize_rows(matrix)
    neighbors, _ = knn_graph(x, n_neighbors)
    cosine = np.empty(neighbors.shape, dtype=np.float64)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        cosine[rows] = np.einsum(  # numpy's own sums: the same at any thread count
            "ij,ikj->ik", x[rows].astype(np.float64), x[neighbors[rows]].astype(np.float64)
        )
    similarity = np.maximum(cosine, 0.0)
    total = similarity.sum(axis=1, keepdims=True)
    probabilities = np.divide(similarity, total, out=np.zeros_like(similarity), where=total > 0)
    return neighbors, probabilities


def live_edges(
    probabilities: NDArray[np.float64], n_simulations: int, random_state: RandomState
) -> NDArray[np.bool_]:
    """Live-edge samples: edge ``(u, j)`` is live in sample ``s`` with probability ``p_uj``.

    One uniform draw per edge and sample, sample after sample, from
    ``random_state``.

    Returns
    -------
    ndarray of bool, shape (n_simulations, n, k)
    """
    rng = check_random_state(random_state)
    p = np.asarray(probabilities, dtype=np.float64)
    live = np.empty((int(n_simulations), *p.shape), dtype=bool)
    for s in range(live.shape[0]):
        live[s] = rng.random(p.shape) < p
    return live


@nb.njit(cache=True)
def _cascade(
    seed: int,
    neighbors: NDArray[np.int64],
    live: NDArray[np.bool_],
    covered: NDArray[np.bool_],
    seen: NDArray[np.bool_],
    queue: NDArray[np.int64],
    commit: bool,
) -> int:
    """Rows reached from ``seed`` along live edges and not yet ``covered``, summed over samples.

    ``seen`` is all False on entry and on return; ``commit`` marks the rows
    reached as covered.
    """
    total = 0
    for s in range(live.shape[0]):
        if covered[s, seed]:
            continue
        queue[0] = seed
        seen[seed] = True
        head, size = 0, 1
        while head < size:
            u = queue[head]
            head += 1
            for j in range(neighbors.shape[1]):
                if live[s, u, j]:
                    v = neighbors[u, j]
                    if not seen[v] and not covered[s, v]:
                        seen[v] = True
                        queue[size] = v
                        size += 1
        total += size
        for t in range(size):
            seen[queue[t]] = False
            if commit:
                covered[s, queue[t]] = True
    return total


@nb.njit(cache=True)
def _every_reach(
    neighbors: NDArray[np.int64], live: NDArray[np.bool_], covered: NDArray[np.bool_]
) -> NDArray[np.int64]:
    """:func:`_cascade` of every row (without committing)."""
    n = neighbors.shape[0]
    seen = np.zeros(n, dtype=np.bool_)
    queue = np.empty(n, dtype=np.int64)
    reach = np.empty(n, dtype=np.int64)
    for v in range(n):
        reach[v] = _cascade(v, neighbors, live, covered, seen, queue, False)
    return reach


class Cascades:
    """Live-edge samples of one graph, and the rows a seed set has reached in each.

    Parameters
    ----------
    neighbors : ndarray of int64, shape (n, k)
        Out-neighbours of each row.
    live : ndarray of bool, shape (n_simulations, n, k)
        Which edges are live in each sample (:func:`live_edges`).
    """

    def __init__(self, neighbors: NDArray[np.int64], live: NDArray[np.bool_]) -> None:
        self.neighbors = np.ascontiguousarray(neighbors, dtype=np.int64)
        self.live = np.ascontiguousarray(live, dtype=np.bool_)
        n = self.neighbors.shape[0]
        if self.live.shape[1:] != self.neighbors.shape:
            raise ValueError("live edges and neighbours must have the same (n, k) shape")
        self.covered = np.zeros((self.live.shape[0], n), dtype=np.bool_)
        self._seen = np.zeros(n, dtype=np.bool_)
        self._queue = np.empty(n, dtype=np.int64)

    def gain(self, row: int) -> int:
        """Rows ``row`` would newly reach, summed over the samples."""
        return int(self._run(row, commit=False))

    def add(self, row: int) -> int:
        """Seed ``row``: cover what it reaches; returns its gain."""
        return int(self._run(row, commit=True))

    def gains(self) -> NDArray[np.int64]:
        """:meth:`gain` of every row."""
        return np.asarray(_every_reach(self.neighbors, self.live, self.covered))

    def reached(self) -> int:
        """Rows reached by the seeds so far, summed over the samples."""
        return int(self.covered.sum())

    def _run(self, row: int, *, commit: bool) -> int:
        return int(
            _cascade(
                int(row), self.neighbors, self.live, self.covered, self._seen, self._queue, commit
            )
        )


def spread(
    seeds: Sequence[int] | NDArray[np.integer[Any]],
    neighbors: NDArray[np.int64],
    live: NDArray[np.bool_],
) -> int:
    """Rows reached from ``seeds`` along live edges, summed over the samples (``seeds`` included).

    Divided by the number of samples: the Monte-Carlo estimate of the
    influence of ``seeds``.
    """
    cascades = Cascades(neighbors, live)
    for row in seeds:
        cascades.add(int(row))
    return cascades.reached()


def lazy_greedy(
    neighbors: NDArray[np.int64], live: NDArray[np.bool_], k: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Greedy influence maximisation with lazy evaluation (CELF); see module docstring.

    Returns
    -------
    order : ndarray of int64, shape (min(k, n),)
        Rows in pick order.
    gains : ndarray of int64, shape (min(k, n),)
        Rows each pick newly reached, summed over the samples.
    """
    cascades = Cascades(neighbors, live)
    n = cascades.neighbors.shape[0]
    k = min(int(k), n)
    order = np.empty(k, dtype=np.int64)
    gains = np.empty(k, dtype=np.int64)
    if k == 0:
        return order, gains
    # (-gain, row, step it was computed at); a gain never grows, so a stale one is a bound
    heap = [(-int(g), row, 0) for row, g in enumerate(cascades.gains().tolist())]
    heapq.heapify(heap)
    taken = 0
    while taken < k:
        negative, row, step = heapq.heappop(heap)
        if step != taken and negative != 0:  # stale (a zero bound stays zero: exact)
            heapq.heappush(heap, (-cascades.gain(row), row, taken))
            continue
        order[taken] = row
        gains[taken] = cascades.add(row) if negative else 0
        taken += 1
    return order, gains


class IDEALSelector(Partitionable, Selector):
    """IDEAL influence-driven selection (see module docstring).

    Parameters
    ----------
    n_neighbors : int
        Out-edges per row in the kNN graph (the paper: 10).
    n_simulations : int
        Live-edge samples the influence is estimated on (the paper: 10
        cascades per estimate); more give a steadier estimate, at
        ``n * n_neighbors`` bytes each.
    """

    name: ClassVar[str] = "ideal"
    requires_embeddings: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "n_neighbors": [Interval(Integral, 1, None)],
        "n_simulations": [Interval(Integral, 1, None)],
    }

    def __init__(self, n_neighbors: int = 10, n_simulations: int = 10) -> None:
        self.n_neighbors = n_neighbors
        self.n_simulations = n_simulations

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
        matrix = check_embeddings(embeddings, n, selector=self.name)
        k, sizes = sum_limit(budget, scores, selector=self.name)
        details: dict[str, Any] = {
            "n_neighbors": int(self.n_neighbors),
            "n_simulations": int(self.n_simulations),
        }
        if n == 0 or k == 0:
            return Selection.from_indices([], details=details)
        neighbors, probabilities = activation_graph(matrix, self.n_neighbors)
        live = live_edges(probabilities, self.n_simulations, random_state)
        order, gains = lazy_greedy(neighbors, live, k)
        taken = fitting_prefix(order, sizes, budget)
        details["influence"] = float(gains[: taken.size].sum()) / int(self.n_simulations)
        return Selection.from_indices(taken, details=details)
