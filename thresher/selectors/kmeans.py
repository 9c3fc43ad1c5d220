"""k-means shared by the k-means based selectors and by partitioned selection.

The same data and seed give bit-identical centroids, labels and distances
at any thread count (OpenMP, BLAS, faiss, torch) and any batch size, so a
clustering fitted in a driver equals one fitted in a Spark executor.
(faiss's k-means, used before, assigns rows by the argmin of BLAS float32
distances, whose rounding depends on the thread count: a near-tie between
two centroids goes one way or the other, and Lloyd's iterations then drift
apart.) Here every decision is taken on numbers that do not depend on how
they were computed:

* **Assignment** (:func:`nearest_centroid`). A row's label is the centroid
  with the smallest squared distance computed in float64 element by element
  (:func:`squared_distances`; ties to the lower index). Computing that for
  every pair is slow, so rows are first ranked with a float32 matrix product
  (BLAS: fast, but its rounding depends on threads and blocking). The
  product's error has a proven bound (``gamma_d |x| |c|``, Higham,
  "Accuracy and Stability of Numerical Algorithms", 2002, section 3.1), so
  a centroid whose float32 distance is more than twice that bound above the
  best one cannot be nearest; a row with any other centroid inside that
  margin is decided again in float64 among those candidates. Rows far from
  any tie (all but a fraction of a percent) never leave float32.
* **Centroid updates** sum each dimension of a cluster's rows in float64,
  in row order (``np.bincount``), never split by thread.
* **Seeding** is AFK-MC2, a Markov-chain approximation of k-means++ that
  avoids the poor local optima of a random start at a fraction of
  k-means++'s cost (Bachem et al., "Fast and Provably Good Seedings for
  k-Means", NeurIPS 2016), on the float64 distances above. Training rows
  are sub-sampled to 256 per centroid, as faiss does; empty clusters are
  re-seeded by splitting a large one. All draws come from ``seed`` alone.

Lloyd's iterations stop early at a fixed point (labels unchanged and no
cluster empty), where further iterations would return the same centroids.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Below this many multiply-adds, faiss (the kNN graph of ``d2``) runs on one thread.
_SINGLE_THREAD_WORK = 1 << 25
#: Rows per chunk of the float64 distance computations.
_CHUNK_ROWS = 65536
#: Entries of one block of the float32 row-by-centroid distance matrix.
_CHUNK_ENTRIES = 1 << 22
#: Unit roundoff of float32.
_ROUNDOFF = 2.0**-24
#: Training rows kept per centroid (faiss's ``max_points_per_centroid``).
_ROWS_PER_CENTROID = 256
#: Proposals in each AFK-MC2 Markov chain (faiss's default).
_CHAIN_LENGTH = 50
#: AFK-MC2 chains whose proposals are ranked against the chosen centroids in one pass.
_CHAINS_AT_ONCE = 32
#: Relative perturbation of a split centroid (faiss's value).
_SPLIT = 1.0 / 1024.0


@dataclass(frozen=True)
class KMeansResult:
    """A fitted clustering of n rows.

    Attributes
    ----------
    centroids : ndarray of float32, shape (k, d)
    labels : ndarray of int64, shape (n,)
        Index of each row's nearest centroid.
    sq_distances : ndarray of float64, shape (n,)
        Squared Euclidean distance of each row to its centroid.
    """

    centroids: NDArray[np.float32]
    labels: NDArray[np.int64]
    sq_distances: NDArray[np.float64]

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def sizes(self) -> NDArray[np.int64]:
        """Number of rows in each cluster, shape (k,)."""
        return np.bincount(self.labels, minlength=self.n_clusters).astype(np.int64)


def normalize_rows(matrix: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm (float32); all-zero rows stay zero."""
    x = np.asarray(matrix, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return (x * scale[:, None].astype(np.float32)).astype(np.float32, copy=False)


@contextmanager
def faiss_threads(work: float) -> Iterator[None]:
    """Run faiss on one thread while the work is small; restore the setting after."""
    import faiss

    if work >= _SINGLE_THREAD_WORK:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def fit_kmeans(
    matrix: NDArray[np.floating[Any]],
    n_clusters: int,
    *,
    seed: int,
    n_iter: int = 20,
    spherical: bool = False,
) -> KMeansResult:
    """Fit k-means (Lloyd's iterations) and assign every row to its nearest centroid.

    Parameters
    ----------
    matrix : ndarray, shape (n, d)
        Rows to cluster (n >= 1, finite).
    n_clusters : int
        Number of centroids; capped at n.
    seed : int
        Seed of the sub-sampling, the seeding and the splits (0 <= seed < 2**31).
    n_iter : int
        Lloyd iterations (at most; they stop at a fixed point).
    spherical : bool
        Normalise centroids after each iteration (for unit-norm rows: cosine k-means).
    """
    x = np.ascontiguousarray(matrix, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one row")
    if n_clusters < 1 or n_iter < 1:
        raise ValueError(f"n_clusters and n_iter must be >= 1, got {n_clusters}, {n_iter}")
    if not np.isfinite(x).all():
        raise ValueError("k-means needs finite rows (no NaN or infinity)")
    k = min(int(n_clusters), n)
    if k == 1:
        centroids = x.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)
        if spherical:
            centroids = normalize_rows(centroids)
        labels = np.zeros(n, dtype=np.int64)
    else:
        train = _training_rows(x, k, np.random.default_rng([seed, 0]))
        centroids, train_labels = _lloyd(train, k, seed, int(n_iter), spherical)
        if train_labels is not None and train.shape[0] == n:
            labels = train_labels  # the fit stopped at a fixed point on every row
        else:
            labels = nearest_centroid(x, centroids)
    return KMeansResult(centroids, labels, squared_distances(x, centroids, labels))


def _training_rows(x: NDArray[np.float32], k: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """At most 256 rows per centroid, drawn without replacement, in input order."""
    limit = k * _ROWS_PER_CENTROID
    if x.shape[0] <= limit:
        return x
    return x[np.sort(rng.choice(x.shape[0], limit, replace=False))]


def _lloyd(
    x: NDArray[np.float32], k: int, seed: int, n_iter: int, spherical: bool
) -> tuple[NDArray[np.float32], NDArray[np.int64] | None]:
    """Centroids after ``n_iter`` Lloyd iterations, and the rows' labels if they are final."""
    n = x.shape[0]
    if n == k:
        return x.copy(), np.arange(n, dtype=np.int64)
    centroids = afk_mc2(x, k, np.random.default_rng([seed, 1]))
    split_rng = np.random.default_rng([seed, 2])
    columns = np.ascontiguousarray(x.T)
    previous: NDArray[np.int64] | None = None
    for _ in range(n_iter):
        labels = nearest_centroid(x, centroids)
        counts = np.bincount(labels, minlength=k)
        if previous is not None and np.array_equal(labels, previous) and counts.all():
            return centroids, labels  # a fixed point: every further iteration gives these
        centroids = _updated_centroids(columns, labels, counts, split_rng, spherical)
        previous = labels
    return centroids, None


def _updated_centroids(
    columns: NDArray[np.float32],
    labels: NDArray[np.int64],
    counts: NDArray[np.int64],
    rng: np.random.Generator,
    spherical: bool,
) -> NDArray[np.float32]:
    """Cluster means summed in float64 in row order; empty clusters split a large one.

    ``columns`` holds the rows transposed, shape (d, n): ``np.bincount`` adds
    each dimension's values to their cluster's sum one row after the other.
    """
    k, d = counts.size, columns.shape[0]
    sums = np.stack([np.bincount(labels, weights=dim, minlength=k) for dim in columns], axis=1)
    centroids = sums / np.maximum(counts, 1)[:, None]
    sizes = counts.astype(np.float64)
    sign = np.where(np.arange(d) % 2 == 0, _SPLIT, -_SPLIT)
    for empty in np.flatnonzero(counts == 0).tolist():
        spare = np.maximum(sizes - 1.0, 0.0)
        if spare.sum() <= 0:
            break
        cumulative = np.cumsum(spare)
        split = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        split = min(split, k - 1)
        centroids[empty] = centroids[split] * (1.0 + sign)
        centroids[split] = centroids[split] * (1.0 - sign)
        sizes[empty] = sizes[split] / 2.0
        sizes[split] -= sizes[empty]
    if spherical:
        norms = np.sqrt(np.einsum("ij,ij->i", centroids, centroids))
        centroids = centroids / np.where(norms > 0, norms, 1.0)[:, None]
    return centroids.astype(np.float32)


def afk_mc2(matrix: NDArray[np.float32], k: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """k seeding centroids (rows of ``matrix``) by AFK-MC2 with chains of 50 proposals.

    The proposal distribution mixes the squared distance to a first uniform
    centroid with the uniform distribution (half each); each further
    centroid is the last state of a Metropolis-Hastings chain whose target
    is the squared distance to the centroids chosen so far (k-means++'s).
    A row at distance 0 (a chosen row or its duplicate) is left for the
    first proposal at a positive distance.

    The chains of 32 centroids are drawn together, and their proposals'
    distances to the centroids chosen before them found in one pass; each
    chain then adds the distances to the centroids chosen since, one pair at
    a time. Both are the same float64 numbers a chain alone would compute.
    """
    x = matrix
    n = x.shape[0]
    first = int(rng.integers(n))
    to_first = _pair_sq_distances(x, np.broadcast_to(x[first], x.shape))
    total = float(to_first.sum())
    proposal = 0.5 / n + (to_first * (0.5 / total) if total > 0 else np.zeros(n))
    cumulative = np.cumsum(proposal)
    centroids = _Centroids(x.shape[1], k)
    centroids.add(x[first])
    steps = _CHAIN_LENGTH + 1
    while centroids.size < k:
        before = centroids.size
        chains = min(_CHAINS_AT_ONCE, k - before)
        draws = np.searchsorted(cumulative, rng.random((chains, steps)) * cumulative[-1], "right")
        draws = np.minimum(draws, n - 1)
        accept = rng.random((chains, _CHAIN_LENGTH)).tolist()
        rows = x[draws.ravel()]
        to_before = _pair_sq_distances(rows, centroids.rows[centroids.nearest(rows)])
        for chain in range(chains):
            mine = rows[chain * steps : (chain + 1) * steps]
            dist = to_before[chain * steps : (chain + 1) * steps]
            since = centroids.rows[before:]
            if since.shape[0]:
                pairs = _pair_sq_distances(
                    np.repeat(mine, since.shape[0], axis=0), np.tile(since, (steps, 1))
                )
                dist = np.minimum(dist, pairs.reshape(steps, -1).min(axis=1))
            state = _chain_state(dist.tolist(), proposal[draws[chain]].tolist(), accept[chain])
            centroids.add(mine[state])
    return centroids.rows


def _chain_state(dist: list[float], q: list[float], accept: list[float]) -> int:
    """Last state of a Metropolis-Hastings chain over proposals 0..m (0 is the start).

    A move from x to y is accepted with probability ``min(1, d(y) q(x) / (d(x) q(y)))``;
    a state at distance 0 moves to the first proposal at a positive distance.
    """
    state = 0
    for step in range(1, len(dist)):
        if dist[state] <= 0.0:
            move = dist[step] > 0.0
        else:
            move = accept[step - 1] * dist[state] * q[step] < dist[step] * q[state]
        if move:
            state = step
    return state


def nearest_centroid(
    matrix: NDArray[np.floating[Any]], centroids: NDArray[np.floating[Any]]
) -> NDArray[np.int64]:
    """Index of each row's nearest centroid, ties to the lower index.

    "Nearest" is decided on :func:`squared_distances` (float64, element by
    element), so the answer is the same for a row alone or in any batch and
    at any thread count; float32 BLAS only ranks the rows (module docstring).
    """
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    ranking = _Centroids(c.shape[1], c.shape[0])
    ranking.add(c)
    return ranking.nearest(matrix)


class _Centroids:
    """Centroids and the float32 data that rank rows against them (grows up to ``capacity``)."""

    def __init__(self, d: int, capacity: int) -> None:
        self._rows = np.empty((capacity, d), dtype=np.float32)
        self._minus_twice = np.empty((d, capacity), dtype=np.float32)  # -2 c^T, exact
        self._sq = np.empty(capacity, dtype=np.float32)  # |c|^2 rounded once
        self._norm = 0.0  # largest |c|
        self.size = 0

    @property
    def rows(self) -> NDArray[np.float32]:
        return self._rows[: self.size]

    def add(self, rows: NDArray[np.float32]) -> None:
        """Append one centroid (shape (d,)) or several (shape (m, d))."""
        rows = np.atleast_2d(rows)
        start, stop = self.size, self.size + rows.shape[0]
        sq = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        self._rows[start:stop] = rows
        self._minus_twice[:, start:stop] = (-2.0 * rows).T
        self._sq[start:stop] = sq
        self._norm = max(self._norm, float(np.sqrt(sq.max())))
        self.size = stop

    def nearest(self, matrix: NDArray[np.floating[Any]]) -> NDArray[np.int64]:
        """Nearest centroid of every row (see :func:`nearest_centroid`)."""
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        n, d = x.shape
        k = self.size
        if n == 0 or k == 1:
            return np.zeros(n, dtype=np.int64)
        margin = _tie_margin(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)), self._norm, d)
        labels = np.empty(n, dtype=np.int64)
        step = max(1, _CHUNK_ENTRIES // k)
        for start in range(0, n, step):
            stop = min(n, start + step)
            labels[start:stop] = self._nearest_block(x[start:stop], margin[start:stop])
        return labels

    def _nearest_block(
        self, x: NDArray[np.float32], margin: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        k = self.size
        scores = x @ self._minus_twice[:, :k]  # |c|^2 - 2 x.c ranks centroids as |x - c|^2
        scores += self._sq[:k]
        best = np.argmin(scores, axis=1)
        rows = np.arange(x.shape[0])
        lowest = scores[rows, best].astype(np.float64)
        scores[rows, best] = np.inf
        near = np.flatnonzero(scores.min(axis=1) - lowest <= margin)
        if near.size == 0:
            return best
        candidates = scores[near]
        candidates[np.arange(near.size), best[near]] = lowest[near]
        which, centroid = np.nonzero(candidates <= (lowest[near] + margin[near])[:, None])
        exact = _pair_sq_distances(x[near[which]], self._rows[centroid])
        order = np.lexsort((exact, which))  # by row, then distance; ties keep the lower centroid
        first = order[np.r_[True, which[order][1:] != which[order][:-1]]]
        best[near[which[first]]] = centroid[first]
        return best


def _tie_margin(x_norm: NDArray[np.float64], c_norm: float, d: int) -> NDArray[np.float64]:
    """Twice the largest error of ``|c|^2 - 2 x.c`` in float32, with a factor 2 to spare.

    The dot product errs by at most ``gamma_d |x| |c|`` in any summation order
    (``gamma_d = d u / (1 - d u) <= 1.1 d u`` for d below 10^6, u = 2^-24);
    rounding ``|c|^2`` and the sum adds ``u (2 |c|^2 + 2 |x| |c|)``. Two
    candidates err together by twice that. The last terms cover float64's
    own rounding of ``|x - c|^2`` (so a centroid left out is farther in
    float64 too) and underflow.
    """
    error = _ROUNDOFF * ((2.2 * d + 2.0) * x_norm * c_norm + 2.0 * c_norm * c_norm)
    float64 = (d + 2.0) * 2.0**-53 * (x_norm + c_norm) ** 2
    return 4.0 * (error + float64) + d * 2.0**-120


def _pair_sq_distances(
    rows: NDArray[np.floating[Any]], centroids: NDArray[np.floating[Any]]
) -> NDArray[np.float64]:
    """``sum((rows[i] - centroids[i])^2)`` in float64, one row at a time (batch independent)."""
    diff = np.subtract(rows, centroids, dtype=np.float64)  # exact casts, one pass
    return np.einsum("ij,ij->i", diff, diff)


def squared_distances(
    matrix: NDArray[np.floating[Any]],
    centroids: NDArray[np.floating[Any]],
    labels: NDArray[np.int64],
) -> NDArray[np.float64]:
    """Squared Euclidean distance of each row to its assigned centroid, in float64."""
    x = np.asarray(matrix, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        out[start:stop] = _pair_sq_distances(x[start:stop], c[labels[start:stop]])
    return out


def seed_from(rng: np.random.Generator) -> int:
    """A k-means seed drawn from a numpy Generator."""
    return int(rng.integers(0, 2**31 - 1))
