"""k-means shared by the k-means based selectors and by partitioned selection.

faiss fits the centroids; its sub-sampling and initialisation draw from
``seed`` only. Initial centroids come from AFK-MC2, a Markov-chain
approximation of k-means++ that avoids the poor local optima of a random
start at a fraction of k-means++'s cost (Bachem et al., "Fast and Provably
Good Seedings for k-Means", NeurIPS 2016). faiss's results do not depend on
the number of OpenMP threads (the test suite compares 1 and 4 threads; the
assignment is an exhaustive search and centroid updates are split by
centroid, not by point), so the same data and seed give the same
clustering in a driver and in a Spark executor. Small problems run on one
thread, where OpenMP's start-up and spinning cost more than the work.

Rows are assigned by faiss's float32 search, with near-ties re-ranked in
float64, and squared distances to the assigned centroid are recomputed in
float64 row by row: both are independent of how the rows were batched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Below this many multiply-adds per k-means iteration, faiss runs on one thread.
_SINGLE_THREAD_WORK = 1 << 25
_CHUNK_ROWS = 65536
_CHUNK_ENTRIES = 1 << 22
#: Two centroids closer than this (relative to the squared norms) are re-ranked in float64;
#: faiss's float32 distances are accurate to about 1e-6 of the same scale.
_TIE_TOLERANCE = 1e-5


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
    """Fit k-means with faiss and assign every row to its nearest centroid.

    Parameters
    ----------
    matrix : ndarray, shape (n, d)
        Rows to cluster (n >= 1).
    n_clusters : int
        Number of centroids; capped at n.
    seed : int
        Seed of faiss's sampling and initialisation (0 <= seed < 2**31).
    n_iter : int
        Lloyd iterations.
    spherical : bool
        Normalise centroids after each iteration (for unit-norm rows: cosine k-means).
    """
    import faiss

    x = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = x.shape
    if n == 0:
        raise ValueError("k-means needs at least one row")
    if n_clusters < 1 or n_iter < 1:
        raise ValueError(f"n_clusters and n_iter must be >= 1, got {n_clusters}, {n_iter}")
    k = min(int(n_clusters), n)
    with faiss_threads(float(n) * k * d):
        if k == 1:
            centroids = x.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)
            if spherical:
                centroids = normalize_rows(centroids)
        else:
            kmeans = faiss.Kmeans(
                d,
                k,
                niter=int(n_iter),
                seed=int(seed),
                spherical=bool(spherical),
                verbose=False,
                min_points_per_centroid=1,  # small inputs are fine: no warning on stderr
                **_seeding(),
            )
            kmeans.train(x)
            centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
        labels = nearest_centroid(x, centroids)
    return KMeansResult(centroids, labels, squared_distances(x, centroids, labels))


def _seeding() -> dict[str, Any]:
    """AFK-MC2 seeding (a fast k-means++ approximation) where faiss has it, else random."""
    import faiss

    method = getattr(faiss, "ClusteringInitMethod_AFK_MC2", None)
    return {} if method is None else {"init_method": method}


def nearest_centroid(
    matrix: NDArray[np.float32], centroids: NDArray[np.float32]
) -> NDArray[np.int64]:
    """Index of each row's nearest centroid (squared L2), ties to the lower index.

    faiss's float32 search ranks the two best centroids; a row whose two
    best distances lie within float32 rounding of each other is decided
    again in float64 row by row. The result therefore does not depend on how
    rows are batched (BLAS may round a batch differently from a single row).
    """
    import faiss

    x = np.ascontiguousarray(matrix, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    n, d = x.shape
    k = c.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    index = faiss.IndexFlatL2(d)
    index.add(c)
    with faiss_threads(float(n) * k * d):
        distances, labels = index.search(x, 2)
    scale = np.einsum("ij,ij->i", x, x, dtype=np.float64) + float(
        np.max(np.einsum("ij,ij->i", c, c, dtype=np.float64))
    )
    gap = distances[:, 1].astype(np.float64) - distances[:, 0]
    close = np.flatnonzero(gap <= _TIE_TOLERANCE * (scale + 1e-30))
    result = labels[:, 0].astype(np.int64)
    c64 = c.astype(np.float64)
    step = max(1, _CHUNK_ENTRIES // (k * d))
    for start in range(0, close.size, step):
        rows = close[start : start + step]
        # (x - c)^2 summed along a contiguous axis: the same numbers for a row in any batch
        exact = np.sum((x[rows].astype(np.float64)[:, None, :] - c64[None, :, :]) ** 2, axis=2)
        result[rows] = np.argmin(exact, axis=1)
    return result


def squared_distances(
    matrix: NDArray[np.float32], centroids: NDArray[np.float32], labels: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Squared Euclidean distance of each row to its assigned centroid, in float64."""
    out = np.empty(matrix.shape[0], dtype=np.float64)
    for start in range(0, matrix.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        diff = matrix[start:stop].astype(np.float64) - centroids[labels[start:stop]].astype(
            np.float64
        )
        out[start:stop] = np.einsum("ij,ij->i", diff, diff)
    return out


def seed_from(rng: np.random.Generator) -> int:
    """A faiss seed drawn from a numpy Generator."""
    return int(rng.integers(0, 2**31 - 1))
