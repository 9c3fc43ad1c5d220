"""k-means sensitivity sampling with importance weights.

Cluster the embeddings with k-means; give each row the sensitivity
``s(x) = d(x, c(x))^2 / cost + 1 / |cluster(x)|`` (``cost`` is the k-means
cost, the sum of squared distances), and sample rows with probability
proportional to ``s``. Each kept row carries the importance weight that
makes the weighted sum of any per-row loss an unbiased estimate of the
full-data sum.

**Sampling scheme.** Drawing m rows with replacement and merging repeats
would not keep exactly m distinct rows, so the sample is a fixed-size
*probability-proportional-to-size* design without replacement:

* inclusion probabilities ``pi(x) = min(1, c * s(x))`` with ``c`` chosen so
  that ``sum(pi) = m`` (rows whose share would reach 1 are taken for
  certain and the rest re-scaled);
* systematic sampling in a random order: shuffle the rows, lay their
  ``pi`` end to end on ``[0, m)`` and take the rows under the points
  ``u, u + 1, ..., u + m - 1`` with ``u ~ U[0, 1)``. Every row is taken with
  probability exactly ``pi(x)`` and exactly m distinct rows are taken.

The weight is the Horvitz-Thompson weight ``1 / pi(x)``, which equals the
paper's ``1 / (m p(x))`` for every row that is not taken for certain
(``p = s / sum(s)``). ``sum_S w(x) f(x)`` is unbiased for ``sum_all f(x)``,
so ``sum_S w f / N`` is unbiased for the mean loss.

**Sum budgets.** With a sum budget (:class:`~thresher.selectors.base.SumBudget`,
e.g. tokens) the sample size is not known in advance, so the sampling
order is successive sampling proportional to ``s`` (the exponential race
of Efraimidis and Spirakis: rows ordered by ``E / s(x)``, ``E`` standard
exponential), and rows are taken in that order until the next would make
the sum exceed the total. The weights are the Horvitz-Thompson weights of
the fixed-size design above for the number of rows kept, an approximation
of the successive design's own inclusion probabilities.

References
----------
Axiotis, Cohen-Addad, Henzinger, Jerome, Mirrokni, Saulpic, Woodruff and
Wunder, "Data-Efficient Learning via Clustering-Based Sensitivity
Sampling: Foundation Models and Beyond", ICML 2024.
Horvitz and Thompson, "A Generalization of Sampling Without Replacement
from a Finite Universe", JASA 1952. Efraimidis and Spirakis, "Weighted
Random Sampling with a Reservoir", Information Processing Letters 2006.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Bool, Constraints
from thresher.selectors.base import Budget, RandomState, Selection, fitting_prefix
from thresher.selectors.clustered import ClusteringSelector
from thresher.selectors.kmeans import KMeansResult

#: A row whose share comes this close to 1 is taken for certain.
_CERTAIN = 1.0 - 1e-9


def sensitivities(clustering: KMeansResult) -> NDArray[np.float64]:
    """``d(x, c)^2 / cost + 1 / |cluster(x)|`` for every row (cost 0: the second term only)."""
    sizes = clustering.sizes()
    cost = math.fsum(clustering.sq_distances.tolist())
    spread = clustering.sq_distances / cost if cost > 0 else np.zeros(clustering.labels.size)
    return spread + 1.0 / sizes[clustering.labels]


def inclusion_probabilities(weights: NDArray[np.float64], m: int) -> NDArray[np.float64]:
    """``pi = min(1, c * weights)`` with ``sum(pi) == m`` (certain rows get exactly 1.0).

    Parameters
    ----------
    weights : ndarray of float64, shape (n,)
        Positive sampling weights.
    m : int
        Sample size, 0 <= m <= n.
    """
    n = weights.size
    if not 0 <= m <= n:
        raise ValueError(f"sample size {m} must be in [0, {n}]")
    if np.any(~np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError("sampling weights must be finite and positive")
    if m == n:
        return np.ones(n)
    pi = np.zeros(n)
    certain = np.zeros(n, dtype=bool)
    while True:
        rest = np.flatnonzero(~certain)
        m_rest = m - int(certain.sum())
        if m_rest == 0 or rest.size == 0:
            break
        share = m_rest * weights[rest] / weights[rest].sum()
        over = share >= _CERTAIN
        if not over.any():
            pi[rest] = share
            break
        certain[rest[over]] = True
    pi[certain] = 1.0
    return pi


def systematic_sample(pi: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.int64]:
    """Exactly ``round(sum(pi))`` distinct rows, row i taken with probability ``pi[i]``.

    Rows with ``pi == 1`` are taken; the others are shuffled and sampled
    systematically (see module docstring).
    """
    certain = np.flatnonzero(pi >= 1.0)
    rest = np.flatnonzero((pi > 0.0) & (pi < 1.0))
    m_rest = round(float(pi[rest].sum()))
    if m_rest == 0:
        return certain
    order = rng.permutation(rest)
    edges = np.cumsum(pi[order])
    edges *= m_rest / edges[-1]
    edges[-1] = m_rest
    points = rng.random() + np.arange(m_rest)
    taken = order[np.searchsorted(edges, points, side="right")]
    if np.unique(taken).size != m_rest:  # impossible while every pi < 1
        raise RuntimeError("systematic sampling drew a row twice")
    return np.concatenate([certain, taken])


class KMeansSensitivitySelector(ClusteringSelector):
    """Sensitivity sampling over k-means clusters (see module docstring).

    Weights go to :attr:`Selection.weights` (the pipeline writes them to the
    dataset's ``importance_weight`` column); groups are the clusters.

    Parameters
    ----------
    n_clusters : int
        k of k-means (capped at the number of rows).
    n_iter : int
        k-means iterations.
    normalize : bool
        Cluster L2-normalised embeddings (cosine geometry) instead of raw ones.
    """

    name: ClassVar[str] = "kmeans_sensitivity"
    defines_weights: ClassVar[bool] = True
    spherical: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {"normalize": [Bool()]}

    def __init__(self, n_clusters: int = 100, n_iter: int = 20, normalize: bool = False) -> None:
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.normalize = normalize

    def unit_rows(self) -> bool:
        return bool(self.normalize)

    def allocation_weights(
        self, rows: NDArray[np.int64], costs: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Total sensitivity of each partition: ``cost_p / cost + 1``.

        With the partitions as the clusters, the rows of partition p hold
        ``sum s(x) = cost_p / cost + 1`` of the sensitivity mass.
        """
        total = math.fsum(costs.tolist())
        spread = costs / total if total > 0 else np.zeros(costs.size)
        return np.where(rows > 0, spread + 1.0, 0.0)

    def select(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None = None,
        budget: Budget | None = None,
        *,
        random_state: RandomState = None,
    ) -> Selection:
        n = scores.num_rows
        matrix, m, sizes, rng = self.inputs(scores, embeddings, budget, random_state)
        if n == 0:
            return Selection.from_indices([], details={"n_clusters": 0, "clusters": []})
        _, clustering = self.cluster(matrix, rng)
        sensitivity = sensitivities(clustering)
        if sizes is None:
            pi = inclusion_probabilities(sensitivity, m)
            chosen = systematic_sample(pi, rng)
        else:
            race = rng.standard_exponential(n) / sensitivity
            chosen = fitting_prefix(np.argsort(race, kind="stable"), sizes, budget)
            pi = inclusion_probabilities(sensitivity, chosen.size)
        weights = 1.0 / pi[chosen]
        labels = clustering.labels
        sizes = clustering.sizes()
        picked = np.bincount(labels[chosen], minlength=clustering.n_clusters)
        weight_sum = np.bincount(labels[chosen], weights=weights, minlength=clustering.n_clusters)
        clusters = [
            {
                "cluster": c,
                "size": int(sizes[c]),
                "selected": int(picked[c]),
                "weight_mean": float(weight_sum[c] / picked[c]) if picked[c] else 0.0,
            }
            for c in range(clustering.n_clusters)
        ]
        return Selection.from_indices(
            chosen,
            weights=weights,
            groups=labels[chosen],
            details={
                "n_clusters": clustering.n_clusters,
                "cost": math.fsum(clustering.sq_distances.tolist()),
                "certain": int(np.count_nonzero(pi[chosen] >= 1.0)),
                "clusters": clusters,
            },
        )
