"""The k-means selectors' shared part: their k-means parameters and the steps before clustering.

``kmeans_sensitivity``, ``prototypes``, ``semdedup`` and ``semdedup_rank``
all check the embeddings, resolve the budget into a row limit (and a sum
budget's sizes), make a Generator from ``random_state``, and fit k-means
with ``n_clusters`` and ``n_iter`` (:func:`thresher.selectors.kmeans.fit_kmeans`),
spherical on unit rows (cosine geometry) unless the selector says otherwise.
:class:`ClusteringSelector` does these steps once for all of them, in this
order, so the same seed draws the same k-means seed in each.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from thresher._params import Constraints, Integral, Interval
from thresher.selectors.base import (
    Budget,
    RandomState,
    Selector,
    check_embeddings,
    check_random_state,
    sum_limit,
)
from thresher.selectors.kmeans import KMeansResult, fit_kmeans, normalize_rows, seed_from
from thresher.selectors.partition import Partitionable


class ClusteringInputs(NamedTuple):
    """A k-means selector's checked inputs."""

    matrix: NDArray[np.float32]  #: the embeddings, (n, d) float32, finite
    limit: int  #: the most rows the selection may keep (all rows without a budget)
    sizes: NDArray[np.int64] | None  #: a sum budget's row sizes (None for a row budget)
    rng: np.random.Generator  #: the Generator of ``random_state``


class ClusteringSelector(Partitionable, Selector):
    """Base of the selectors that cluster the embeddings with k-means first.

    Subclasses declare their own parameters besides ``n_clusters`` and
    ``n_iter``; ``spherical`` and :meth:`unit_rows` say how rows are
    clustered (default: spherical k-means on L2-normalised rows).
    """

    requires_embeddings: ClassVar[bool] = True
    #: Normalise the centroids after each Lloyd iteration (cosine k-means).
    spherical: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, Constraints]] = {
        "n_clusters": [Interval(Integral, 1, None)],
        "n_iter": [Interval(Integral, 1, None)],
    }
    n_clusters: int
    n_iter: int

    def unit_rows(self) -> bool:
        """Whether rows are scaled to unit L2 norm before clustering."""
        return True

    def inputs(
        self,
        scores: pa.Table,
        embeddings: NDArray[np.floating[Any]] | None,
        budget: Budget | None,
        random_state: RandomState,
    ) -> ClusteringInputs:
        """Check the parameters (once) and the embeddings, resolve the budget, make the Generator."""
        self.validate_params()
        n = scores.num_rows
        matrix = check_embeddings(embeddings, n, selector=self.name)
        if self.requires_budget:
            limit, sizes = sum_limit(budget, scores, selector=self.name)
        else:
            limit, sizes = n, None
        return ClusteringInputs(matrix, limit, sizes, check_random_state(random_state))

    def cluster(
        self, matrix: NDArray[np.float32], rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], KMeansResult]:
        """The rows as clustered (unit rows unless :meth:`unit_rows` says no) and their k-means.

        Draws the k-means seed from ``rng``. Needs at least one row.
        """
        rows = normalize_rows(matrix) if self.unit_rows() else matrix
        clustering = fit_kmeans(
            rows, self.n_clusters, seed=seed_from(rng), n_iter=self.n_iter, spherical=self.spherical
        )
        return rows, clustering
